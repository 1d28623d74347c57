#include "otlp_receiver.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace infrachat::testing {

namespace {

std::string Lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

}  // namespace

OtlpReceiver::OtlpReceiver() : OtlpReceiver(Options{}) {}

OtlpReceiver::OtlpReceiver(Options options) : options_(options) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t size = sizeof(address);
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), size) != 0 ||
      ::listen(listen_fd_, 16) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &size) != 0 ||
      ::pipe2(wake_, O_CLOEXEC) != 0) {
    throw std::runtime_error("OtlpReceiver: cannot listen on 127.0.0.1");
  }
  port_ = ntohs(address.sin_port);
  thread_ = std::thread([this] { Run(); });
}

OtlpReceiver::~OtlpReceiver() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  const char byte = 0;
  (void)!::write(wake_[1], &byte, 1);
  thread_.join();
  std::vector<std::thread> connections;
  {
    std::lock_guard lock(mu_);
    connections.swap(connections_);
  }
  for (std::thread& connection : connections) connection.join();
  for (int fd : {listen_fd_, wake_[0], wake_[1]}) ::close(fd);
}

std::string OtlpReceiver::url() const {
  return "http://127.0.0.1:" + std::to_string(port_) + "/v1/traces";
}

void OtlpReceiver::Run() {
  while (!stopping_) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents != 0) return;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard lock(mu_);
    connections_.emplace_back([this, fd] {
      Serve(fd);
      ::close(fd);
    });
  }
}

// Requests on one connection until the client closes it or the receiver stops.
void OtlpReceiver::Serve(int fd) {
  std::string buffer;
  for (;;) {
    // Headers.
    std::size_t header_end;
    while ((header_end = buffer.find("\r\n\r\n")) == std::string::npos) {
      pollfd fds[2] = {{fd, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0 || fds[1].revents != 0) return;
      char chunk[16384];
      const ssize_t n = ::read(fd, chunk, sizeof(chunk));
      if (n <= 0) return;
      buffer.append(chunk, static_cast<std::size_t>(n));
    }
    const std::string head = buffer.substr(0, header_end);
    buffer.erase(0, header_end + 4);
    const std::string target =
        head.substr(head.find(' ') + 1, head.find(' ', head.find(' ') + 1) - head.find(' ') - 1);
    std::size_t length = 0;
    std::string content_type;
    for (std::size_t pos = head.find("\r\n"); pos != std::string::npos;) {
      const std::size_t next = head.find("\r\n", pos + 2);
      const std::string line =
          head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
      const std::size_t colon = line.find(':');
      if (colon != std::string::npos) {
        const std::string name = Lower(line.substr(0, colon));
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        if (name == "content-length") length = std::stoul(value);
        if (name == "content-type") content_type = value;
      }
      pos = next;
    }
    // Body.
    while (buffer.size() < length) {
      pollfd fds[2] = {{fd, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0 || fds[1].revents != 0) return;
      char chunk[65536];
      const ssize_t n = ::read(fd, chunk, sizeof(chunk));
      if (n <= 0) return;
      buffer.append(chunk, static_cast<std::size_t>(n));
    }
    const std::string body = buffer.substr(0, length);
    buffer.erase(0, length);
    nlohmann::json parsed = nlohmann::json::parse(body, nullptr, false);
    if (parsed.is_discarded()) parsed = body;
    {
      std::lock_guard lock(mu_);
      requests_.push_back(std::move(parsed));
      paths_.push_back(target);
      content_types_.push_back(content_type);
    }
    if (options_.delay.count() > 0) {
      std::unique_lock lock(stop_mu_);
      stop_cv_.wait_for(lock, options_.delay, [&] { return stopping_.load(); });
    }
    if (stopping_) return;
    const std::string answer =
        "HTTP/1.1 " + std::to_string(options_.status) +
        " X\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    if (::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL) < 0) return;
  }
}

std::vector<nlohmann::json> OtlpReceiver::Requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

std::vector<std::string> OtlpReceiver::Paths() const {
  std::lock_guard lock(mu_);
  return paths_;
}

std::vector<std::string> OtlpReceiver::ContentTypes() const {
  std::lock_guard lock(mu_);
  return content_types_;
}

std::vector<nlohmann::json> OtlpReceiver::Spans() const {
  std::vector<nlohmann::json> spans;
  for (const nlohmann::json& request : Requests()) {
    if (!request.is_object() || !request.contains("resourceSpans")) continue;
    for (const nlohmann::json& resource_spans : request["resourceSpans"]) {
      nlohmann::json resource = nlohmann::json::object();
      for (const nlohmann::json& a : resource_spans["resource"]["attributes"]) {
        resource[a["key"].get<std::string>()] = a["value"].value("stringValue", "");
      }
      for (const nlohmann::json& scope : resource_spans["scopeSpans"]) {
        for (nlohmann::json span : scope["spans"]) {
          span["resource"] = resource;
          spans.push_back(std::move(span));
        }
      }
    }
  }
  return spans;
}

std::vector<nlohmann::json> OtlpReceiver::WaitForSpans(
    const std::function<bool(const std::vector<nlohmann::json>&)>& done,
    std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::vector<nlohmann::json> spans = Spans();
    if (done(spans) || std::chrono::steady_clock::now() >= deadline) return spans;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string OtlpAttribute(const nlohmann::json& attributes, const std::string& key) {
  for (const nlohmann::json& a : attributes) {
    if (a.value("key", "") != key) continue;
    const nlohmann::json& value = a["value"];
    if (value.contains("stringValue")) return value["stringValue"].get<std::string>();
    if (value.contains("intValue")) return value["intValue"].get<std::string>();
    if (value.contains("boolValue")) return value["boolValue"].get<bool>() ? "true" : "false";
  }
  return {};
}

}  // namespace infrachat::testing
