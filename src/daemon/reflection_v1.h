// gRPC server reflection v1 (grpc.reflection.v1.ServerReflection) for infrachatd.
//
// Debian's gRPC 1.51 serves reflection only as grpc.reflection.v1alpha (the builder plugin the
// daemon enables as well); grpcurl and newer tools ask v1 first, some ask only v1. This service
// answers v1 from google::protobuf::DescriptorPool::generated_pool(), as the v1alpha plugin does:
//   list_services                  the names given to the constructor;
//   file_by_filename,
//   file_containing_symbol,
//   file_containing_extension      the file and its transitive dependencies, each a serialized
//                                  FileDescriptorProto;
//   all_extension_numbers_of_type  the numbers of the known extensions of the type;
// and error_response {NOT_FOUND} for a name the pool does not know (UNIMPLEMENTED for a request
// with none of these set). Each response echoes the request (original_request) and its host
// (valid_host), and responses come in the order of the requests.
//
// Thread-safety: the service is immutable after construction; each stream has its own reactor,
// which runs one request at a time (one read or one write in flight) on gRPC's threads and never
// blocks (descriptor lookups only). DescriptorPool lookups are thread-safe.
// Lifetime: like every gRPC service, it must outlive the grpc::Server it is registered with
// (Server::Shutdown/Wait returns once every stream's reactor is done). A reactor deletes itself
// in OnDone.
//
// When gRPC itself gains a v1 reflection service (gRPC >= 1.57 does), this one and
// proto/grpc/reflection/v1 must go: both would define the same protobuf symbols.
#pragma once

#include <string>
#include <vector>

#include "grpc/reflection/v1/reflection.grpc.pb.h"

namespace infrachat {

class ReflectionV1Service final : public grpc::reflection::v1::ServerReflection::CallbackService {
 public:
  // `services`: the full names of the services the server serves ("infrachat.v1.ChatService"),
  // listed in this order by list_services.
  explicit ReflectionV1Service(std::vector<std::string> services);

  grpc::ServerBidiReactor<grpc::reflection::v1::ServerReflectionRequest,
                          grpc::reflection::v1::ServerReflectionResponse>*
  ServerReflectionInfo(grpc::CallbackServerContext* context) override;

 private:
  const std::vector<std::string> services_;
};

}  // namespace infrachat
