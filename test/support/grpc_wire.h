// gRPC calls made as protobuf wire data, for services whose .proto Debian does not ship as
// generated C++ (grpc.health.v1, grpc.reflection.*): grpc::GenericStub with messages built as
// google::protobuf::UnknownFieldSet and read field by field. A client that knows nothing but the
// published .proto files sees the same.
//
// Each call opens its own channel and completion queue and runs one operation at a time; a
// failed step fails the test (Catch2 REQUIRE). Waits are bounded by the call's deadline.
#pragma once

#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace infrachat::testing {

constexpr std::chrono::milliseconds kWireDeadline = std::chrono::seconds(15);

std::string ToBytes(const grpc::ByteBuffer& buffer);
grpc::ByteBuffer FromBytes(const std::string& bytes);
// The serialized message.
std::string Encode(const google::protobuf::UnknownFieldSet& fields);

// The fields numbered `number` of a message, each as its length-delimited payload.
std::vector<std::string> Field(const std::string& message, int number);
// The varint fields numbered `number` of a message.
std::vector<std::uint64_t> VarintField(const std::string& message, int number);

// A unary call; returns the response bytes (empty when the status is not OK).
std::string CallUnary(const std::string& address, const std::string& method,
                      const std::string& request, grpc::Status& status,
                      std::chrono::milliseconds deadline = kWireDeadline);
// The same on a given channel (e.g. one with TLS credentials).
std::string CallUnary(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                      const std::string& request, grpc::Status& status,
                      std::chrono::milliseconds deadline = kWireDeadline);

// A bidirectional stream that sends `requests` and expects exactly one response to each, then
// half-closes and requires the end of the stream with status OK. Returns the responses in the
// order received. Lock-step (write one, read its answer) unless `pipelined`: then every request
// is written, then the stream half-closed, before the first read. `metadata` is sent with the
// call (e.g. authorization).
std::vector<std::string> CallStream(
    const std::string& address, const std::string& method, const std::vector<std::string>& requests,
    bool pipelined = false, std::chrono::milliseconds deadline = kWireDeadline,
    const std::vector<std::pair<std::string, std::string>>& metadata = {});

// One request and its one response on a bidirectional stream.
std::string CallStreamOnce(const std::string& address, const std::string& method,
                           const std::string& request,
                           std::chrono::milliseconds deadline = kWireDeadline);

}  // namespace infrachat::testing
