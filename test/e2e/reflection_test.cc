// End-to-end: gRPC server reflection v1 (grpc.reflection.v1.ServerReflection, which grpcurl and
// newer tools ask first) against a real `infrachatd` process, as a client that knows only the
// published reflection .proto sees it (wire data through grpc::GenericStub, grpc_wire.h):
//
//   - list_services names the public infrachat.v1 services, health and both reflection versions;
//   - file_containing_symbol finds the file of a service, a method, a message, a field and an
//     enum; for infrachat.v1.ChatService it is the real descriptor (Connect: bidi streaming
//     ClientFrame -> ServerFrame), and file_by_filename of that file gives the same;
//   - a file comes with its transitive dependencies;
//   - the reflection v1 service describes itself;
//   - unknown names (symbol, file, type, extension) give error_response NOT_FOUND (5);
//   - each response echoes valid_host and original_request; several requests on one stream are
//     answered one each, in order, in lock-step and when pipelined.
//
// Each test case has its own database and daemon.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/unknown_field_set.h>

#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <vector>

#include "daemon_process.h"
#include "grpc_wire.h"

namespace infrachat {
namespace {

using google::protobuf::FileDescriptorProto;
using google::protobuf::UnknownFieldSet;
using testing::CallStream;
using testing::CallStreamOnce;
using testing::DaemonProcess;
using testing::Encode;
using testing::Field;
using testing::TestDatabase;
using testing::VarintField;

constexpr const char* kInfo = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
constexpr const char* kChatFile = "infrachat/v1/infrachat.proto";

// ServerReflectionRequest field numbers (the published v1 protocol).
constexpr int kHost = 1;
constexpr int kFileByFilename = 3;
constexpr int kFileContainingSymbol = 4;
constexpr int kFileContainingExtension = 5;
constexpr int kAllExtensionNumbersOfType = 6;
constexpr int kListServices = 7;
// ServerReflectionResponse field numbers.
constexpr int kValidHost = 1;
constexpr int kOriginalRequest = 2;
constexpr int kFileDescriptorResponse = 4;
constexpr int kAllExtensionNumbersResponse = 5;
constexpr int kListServicesResponse = 6;
constexpr int kErrorResponse = 7;

std::string Request(int field, const std::string& value, const std::string& host = "") {
  UnknownFieldSet request;
  if (!host.empty()) request.AddLengthDelimited(kHost, host);
  request.AddLengthDelimited(field, value);
  return Encode(request);
}

// list_services_response (6) -> service (1) -> name (1).
std::set<std::string> ServiceNames(const std::string& response) {
  std::set<std::string> names;
  for (const auto& list : Field(response, kListServicesResponse)) {
    for (const auto& service : Field(list, 1)) {
      for (const auto& name : Field(service, 1)) names.insert(name);
    }
  }
  return names;
}

// file_descriptor_response (4) -> file_descriptor_proto (1), each parsed.
std::vector<FileDescriptorProto> Files(const std::string& response) {
  std::vector<FileDescriptorProto> files;
  for (const auto& list : Field(response, kFileDescriptorResponse)) {
    for (const auto& bytes : Field(list, 1)) {
      REQUIRE(files.emplace_back().ParseFromString(bytes));
    }
  }
  return files;
}

// The error_code of error_response (7), or -1 without one.
long ErrorCode(const std::string& response) {
  const auto errors = Field(response, kErrorResponse);
  if (errors.size() != 1) return -1;
  const auto codes = VarintField(errors[0], 1);
  return codes.size() == 1 ? static_cast<long>(codes[0]) : 0;  // proto3: 0 is not written
}

// Checks that `file` is infrachat.proto with Connect as a bidi stream ClientFrame -> ServerFrame.
void CheckChatFile(const FileDescriptorProto& file) {
  CHECK(file.name() == kChatFile);
  CHECK(file.package() == "infrachat.v1");
  bool found = false;
  for (const auto& service : file.service()) {
    if (service.name() != "ChatService") continue;
    for (const auto& method : service.method()) {
      if (method.name() != "Connect") continue;
      found = true;
      CHECK(method.client_streaming());
      CHECK(method.server_streaming());
      CHECK(method.input_type() == ".infrachat.v1.ClientFrame");
      CHECK(method.output_type() == ".infrachat.v1.ServerFrame");
    }
  }
  CHECK(found);
}

TEST_CASE("reflection v1 lists the services", "[e2e][reflection][grpc]") {
  TestDatabase db;
  DaemonProcess daemon(db);
  const std::string response = CallStreamOnce(daemon.address(), kInfo, Request(kListServices, ""));
  const std::set<std::string> names = ServiceNames(response);
  INFO("listed: " << fmt::format("{}", fmt::join(names, ", ")));
  for (const char* want :
       {"infrachat.v1.ChatService", "infrachat.v1.AuthService", "infrachat.v1.ChannelService",
        "infrachat.v1.RouterService", "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}) {
    CHECK(names.count(want) == 1);
  }
  CHECK(ErrorCode(response) == -1);
}

TEST_CASE("reflection v1 serves the descriptors of symbols and files", "[e2e][reflection][grpc]") {
  TestDatabase db;
  DaemonProcess daemon(db);

  {
    INFO("file_containing_symbol of ChatService is infrachat.proto with Connect");
    const auto files = Files(CallStreamOnce(
        daemon.address(), kInfo, Request(kFileContainingSymbol, "infrachat.v1.ChatService")));
    REQUIRE(files.size() == 1);  // infrachat.proto imports nothing
    CheckChatFile(files[0]);
  }

  {
    INFO("file_by_filename of that file gives the same descriptor");
    const auto files =
        Files(CallStreamOnce(daemon.address(), kInfo, Request(kFileByFilename, kChatFile)));
    REQUIRE(files.size() == 1);
    CheckChatFile(files[0]);
  }

  {
    INFO("methods, messages, fields and enums are symbols too");
    for (const char* symbol : {"infrachat.v1.ChatService.Connect", "infrachat.v1.ClientFrame",
                               "infrachat.v1.ClientFrame.send", "infrachat.v1.Visibility",
                               "infrachat.v1.AuthService.Login"}) {
      INFO(symbol);
      const auto files =
          Files(CallStreamOnce(daemon.address(), kInfo, Request(kFileContainingSymbol, symbol)));
      REQUIRE(files.size() == 1);
      CHECK(files[0].name() == kChatFile);
    }
  }

  {
    INFO("a file comes with its transitive dependencies, the file first");
    // api.proto imports source_context.proto and type.proto; type.proto imports any.proto.
    const auto files = Files(CallStreamOnce(daemon.address(), kInfo,
                                            Request(kFileByFilename, "google/protobuf/api.proto")));
    REQUIRE(!files.empty());
    CHECK(files[0].name() == "google/protobuf/api.proto");
    std::set<std::string> names;
    for (const auto& file : files) names.insert(file.name());
    CHECK(names.size() == files.size());  // each file once
    CHECK(names ==
          std::set<std::string>{"google/protobuf/api.proto", "google/protobuf/source_context.proto",
                                "google/protobuf/type.proto", "google/protobuf/any.proto"});
  }

  {
    INFO("the v1 reflection service describes itself");
    const auto files = Files(
        CallStreamOnce(daemon.address(), kInfo,
                       Request(kFileContainingSymbol, "grpc.reflection.v1.ServerReflection")));
    REQUIRE(files.size() == 1);
    CHECK(files[0].package() == "grpc.reflection.v1");
    REQUIRE(files[0].service_size() == 1);
    REQUIRE(files[0].service(0).method_size() == 1);
    const auto& method = files[0].service(0).method(0);
    CHECK(method.name() == "ServerReflectionInfo");
    CHECK(method.client_streaming());
    CHECK(method.server_streaming());
  }

  {
    INFO("all_extension_numbers_of_type names the type");
    const std::string response =
        CallStreamOnce(daemon.address(), kInfo,
                       Request(kAllExtensionNumbersOfType, "google.protobuf.MessageOptions"));
    const auto numbers = Field(response, kAllExtensionNumbersResponse);
    REQUIRE(numbers.size() == 1);
    CHECK(Field(numbers[0], 1) == std::vector<std::string>{"google.protobuf.MessageOptions"});
  }
}

TEST_CASE("reflection v1 answers unknown names with NOT_FOUND", "[e2e][reflection][grpc]") {
  TestDatabase db;
  DaemonProcess daemon(db);
  UnknownFieldSet extension;  // ExtensionRequest{containing_type, extension_number}
  extension.AddLengthDelimited(1, "infrachat.v1.ClientFrame");
  extension.AddVarint(2, 12345);
  for (const std::string& request :
       {Request(kFileContainingSymbol, "infrachat.v1.NoSuchService"),
        Request(kFileContainingSymbol, "infrachat.v1.ChatService.NoSuchMethod"),
        Request(kFileByFilename, "infrachat/v1/no_such.proto"),
        Request(kAllExtensionNumbersOfType, "infrachat.v1.NoSuchMessage"),
        Request(kFileContainingExtension, Encode(extension))}) {
    const std::string response = CallStreamOnce(daemon.address(), kInfo, request);
    CHECK(ErrorCode(response) == 5);  // NOT_FOUND
    CHECK(Field(response, kFileDescriptorResponse).empty());
    CHECK(Field(response, kOriginalRequest) == std::vector<std::string>{request});
  }
}

TEST_CASE("reflection v1 answers several requests on one stream in order",
          "[e2e][reflection][grpc]") {
  TestDatabase db;
  DaemonProcess daemon(db);
  const std::vector<std::string> requests = {
      Request(kListServices, "", "localhost"),
      Request(kFileContainingSymbol, "infrachat.v1.ChatService"),
      Request(kFileContainingSymbol, "no.such.Symbol", "other-host"),
      Request(kFileByFilename, kChatFile),
      Request(kListServices, "*"),
  };
  const bool pipelined = GENERATE(false, true);
  INFO((pipelined ? "pipelined" : "lock-step"));
  const auto responses = CallStream(daemon.address(), kInfo, requests, pipelined);
  REQUIRE(responses.size() == requests.size());
  for (std::size_t i = 0; i < responses.size(); ++i) {
    INFO("response " << i);
    CHECK(Field(responses[i], kOriginalRequest) == std::vector<std::string>{requests[i]});
  }
  CHECK(Field(responses[0], kValidHost) == std::vector<std::string>{"localhost"});
  CHECK(ServiceNames(responses[0]).count("infrachat.v1.ChatService") == 1);
  const auto chat = Files(responses[1]);
  REQUIRE(chat.size() == 1);
  CheckChatFile(chat[0]);
  CHECK(ErrorCode(responses[2]) == 5);
  CHECK(Field(responses[2], kValidHost) == std::vector<std::string>{"other-host"});
  const auto by_name = Files(responses[3]);
  REQUIRE(by_name.size() == 1);
  CheckChatFile(by_name[0]);
  CHECK(ServiceNames(responses[4]).count("grpc.reflection.v1.ServerReflection") == 1);
}

}  // namespace
}  // namespace infrachat
