#include "grpc_wire.h"

#include <grpcpp/generic/generic_stub.h>

#include <catch2/catch.hpp>

namespace infrachat::testing {

namespace {

// Waits for the one operation in flight on `cq`.
void Await(grpc::CompletionQueue& cq, void* want, bool want_ok = true) {
  void* tag = nullptr;
  bool ok = false;
  REQUIRE(cq.Next(&tag, &ok));  // the call's deadline bounds the wait
  REQUIRE(tag == want);
  REQUIRE(ok == want_ok);
}

std::chrono::system_clock::time_point After(std::chrono::milliseconds deadline) {
  return std::chrono::system_clock::now() + deadline;
}

}  // namespace

std::string ToBytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return {};
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

grpc::ByteBuffer FromBytes(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string Encode(const google::protobuf::UnknownFieldSet& fields) {
  std::string out;
  REQUIRE(fields.SerializeToString(&out));
  return out;
}

std::vector<std::string> Field(const std::string& message, int number) {
  google::protobuf::UnknownFieldSet fields;
  REQUIRE(fields.ParseFromString(message));
  std::vector<std::string> out;
  for (int i = 0; i < fields.field_count(); ++i) {
    const auto& f = fields.field(i);
    if (f.number() == number && f.type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      out.push_back(f.length_delimited());
    }
  }
  return out;
}

std::vector<std::uint64_t> VarintField(const std::string& message, int number) {
  google::protobuf::UnknownFieldSet fields;
  REQUIRE(fields.ParseFromString(message));
  std::vector<std::uint64_t> out;
  for (int i = 0; i < fields.field_count(); ++i) {
    const auto& f = fields.field(i);
    if (f.number() == number && f.type() == google::protobuf::UnknownField::TYPE_VARINT) {
      out.push_back(f.varint());
    }
  }
  return out;
}

std::string CallUnary(const std::string& address, const std::string& method,
                      const std::string& request, grpc::Status& status,
                      std::chrono::milliseconds deadline) {
  return CallUnary(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()), method,
                   request, status, deadline);
}

std::string CallUnary(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                      const std::string& request, grpc::Status& status,
                      std::chrono::milliseconds deadline) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(After(deadline));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&context, method, FromBytes(request), &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  call->Finish(&response, &status, &response);
  Await(cq, &response);
  return status.ok() ? ToBytes(response) : std::string();
}

std::vector<std::string> CallStream(
    const std::string& address, const std::string& method, const std::vector<std::string>& requests,
    bool pipelined, std::chrono::milliseconds deadline,
    const std::vector<std::pair<std::string, std::string>>& metadata) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(After(deadline));
  for (const auto& [key, value] : metadata) context.AddMetadata(key, value);
  grpc::CompletionQueue cq;
  int start = 0, write = 0, writes_done = 0, read = 0, finish = 0;  // tags
  auto call = stub.PrepareCall(&context, method, &cq);
  call->StartCall(&start);
  Await(cq, &start);
  std::vector<std::string> responses;
  auto read_one = [&] {
    grpc::ByteBuffer response;
    call->Read(&response, &read);
    Await(cq, &read);
    responses.push_back(ToBytes(response));
  };
  for (const auto& request : requests) {
    call->Write(FromBytes(request), &write);
    Await(cq, &write);
    if (!pipelined) read_one();
  }
  call->WritesDone(&writes_done);
  Await(cq, &writes_done);
  if (pipelined) {
    for (std::size_t i = 0; i < requests.size(); ++i) read_one();
  }
  grpc::ByteBuffer none;
  call->Read(&none, &read);
  Await(cq, &read, /*want_ok=*/false);  // the server ends the stream after our half-close
  grpc::Status status;
  call->Finish(&status, &finish);
  Await(cq, &finish);
  INFO(status.error_message());
  REQUIRE(status.ok());
  return responses;
}

std::string CallStreamOnce(const std::string& address, const std::string& method,
                           const std::string& request, std::chrono::milliseconds deadline) {
  return CallStream(address, method, {request}, /*pipelined=*/false, deadline).front();
}

}  // namespace infrachat::testing
