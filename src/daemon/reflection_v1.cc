#include "reflection_v1.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include <set>
#include <utility>

namespace infrachat {

namespace {

namespace pb = google::protobuf;
using Request = grpc::reflection::v1::ServerReflectionRequest;
using Response = grpc::reflection::v1::ServerReflectionResponse;

// Adds `file` and then, depth first, each of its dependencies not yet in `seen`.
void AddFile(const pb::FileDescriptor* file, std::set<std::string>& seen,
             grpc::reflection::v1::FileDescriptorResponse& out) {
  if (!seen.insert(file->name()).second) return;
  pb::FileDescriptorProto proto;
  file->CopyTo(&proto);
  proto.SerializeToString(out.add_file_descriptor_proto());
  for (int i = 0; i < file->dependency_count(); ++i) AddFile(file->dependency(i), seen, out);
}

void SetError(Response& response, grpc::StatusCode code, const std::string& message) {
  auto* error = response.mutable_error_response();
  error->set_error_code(code);
  error->set_error_message(message);
}

// The answer to one request; a pure function of the request and the generated pool.
void Answer(const std::vector<std::string>& services, const Request& request, Response& response) {
  const pb::DescriptorPool* pool = pb::DescriptorPool::generated_pool();
  response.Clear();
  response.set_valid_host(request.host());
  *response.mutable_original_request() = request;
  const pb::FileDescriptor* file = nullptr;
  std::string missing;  // the error message when `file` stays null
  switch (request.message_request_case()) {
    case Request::kListServices: {
      auto* list = response.mutable_list_services_response();
      for (const auto& name : services) list->add_service()->set_name(name);
      return;
    }
    case Request::kFileByFilename:
      file = pool->FindFileByName(request.file_by_filename());
      missing = "file not found: " + request.file_by_filename();
      break;
    case Request::kFileContainingSymbol:
      file = pool->FindFileContainingSymbol(request.file_containing_symbol());
      missing = "symbol not found: " + request.file_containing_symbol();
      break;
    case Request::kFileContainingExtension: {
      const auto& wanted = request.file_containing_extension();
      const pb::Descriptor* type = pool->FindMessageTypeByName(wanted.containing_type());
      const pb::FieldDescriptor* extension =
          type == nullptr ? nullptr : pool->FindExtensionByNumber(type, wanted.extension_number());
      if (extension != nullptr) file = extension->file();
      missing = "extension not found: " + wanted.containing_type() + " " +
                std::to_string(wanted.extension_number());
      break;
    }
    case Request::kAllExtensionNumbersOfType: {
      const pb::Descriptor* type =
          pool->FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr) {
        SetError(response, grpc::StatusCode::NOT_FOUND,
                 "type not found: " + request.all_extension_numbers_of_type());
        return;
      }
      std::vector<const pb::FieldDescriptor*> extensions;
      pool->FindAllExtensions(type, &extensions);
      auto* numbers = response.mutable_all_extension_numbers_response();
      numbers->set_base_type_name(type->full_name());
      for (const auto* extension : extensions) numbers->add_extension_number(extension->number());
      return;
    }
    case Request::MESSAGE_REQUEST_NOT_SET:
      SetError(response, grpc::StatusCode::UNIMPLEMENTED, "no known message_request is set");
      return;
  }
  if (file == nullptr) {
    SetError(response, grpc::StatusCode::NOT_FOUND, missing);
    return;
  }
  std::set<std::string> seen;
  AddFile(file, seen, *response.mutable_file_descriptor_response());
}

// One reflection stream: read a request, write its answer, read the next. So at most one read or
// one write is in flight, `response_` stays untouched until OnWriteDone, and answers keep the
// order of the requests. Reactions only look descriptors up: nothing blocks.
class Stream final : public grpc::ServerBidiReactor<Request, Response> {
 public:
  Stream(grpc::CallbackServerContext* context, const std::vector<std::string>& services)
      : context_(context), services_(services) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client half-closed (the end of its session), cancelled, or sent a request that
      // could not be parsed (gRPC does not tell the last apart from a half-close).
      Finish(context_->IsCancelled() ? grpc::Status::CANCELLED : grpc::Status::OK);
      return;
    }
    Answer(services_, request_, response_);
    StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::CANCELLED);  // the stream is broken: nobody reads the answers
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  grpc::CallbackServerContext* const context_;
  const std::vector<std::string>& services_;  // owned by the service, which outlives the server
  Request request_;
  Response response_;
};

}  // namespace

ReflectionV1Service::ReflectionV1Service(std::vector<std::string> services)
    : services_(std::move(services)) {}

grpc::ServerBidiReactor<Request, Response>* ReflectionV1Service::ServerReflectionInfo(
    grpc::CallbackServerContext* context) {
  return new Stream(context, services_);
}

}  // namespace infrachat
