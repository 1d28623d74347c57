#include "prometheus_text.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sstream>
#include <stdexcept>

namespace infrachat::testing {

std::string UnusedLoopbackAddress() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                     ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);  // bound but never listening: until someone binds it, connections are refused
  if (!bound) throw std::runtime_error("cannot bind a loopback port");
  return "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
}

HttpResponse HttpGet(const std::string& address, const std::string& target) {
  HttpResponse out;
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) return out;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(std::stoi(address.substr(colon + 1))));
  if (::inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr) != 1) return out;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return out;
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string request =
        "GET " + target + " HTTP/1.0\r\nHost: " + address + "\r\nConnection: close\r\n\r\n";
    if (::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[8192];
      for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) response.append(buffer, n);
    }
  }
  ::close(fd);
  const auto body = response.find("\r\n\r\n");
  if (body == std::string::npos || response.rfind("HTTP/1.", 0) != 0) return out;
  const auto space = response.find(' ');
  try {
    out.status = std::stoi(response.substr(space + 1, 3));
  } catch (const std::exception&) {
    return out;
  }
  out.body = response.substr(body + 4);
  return out;
}

std::string Scrape(const std::string& address) {
  HttpResponse response = HttpGet(address, "/metrics");
  return response.status == 200 ? response.body : std::string();
}

double Sample(const std::string& text, const std::string& series) {
  std::size_t pos = 0;
  while ((pos = text.find(series + " ", pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') return std::stod(text.substr(pos + series.size() + 1));
    pos += series.size();
  }
  return -1;
}

double SampleSum(const std::string& text, const std::string& name,
                 const std::set<std::string>& matchers) {
  std::istringstream lines(text);
  double sum = 0;
  bool any = false;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#' || line.rfind(name, 0) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != '{' && next != ' ') continue;
    const auto value_at = line.rfind(' ');
    const std::string labels = next == '{' ? line.substr(name.size(), value_at - name.size()) : "";
    bool all = true;
    for (const auto& matcher : matchers) {
      // Whole label pairs only: preceded by '{' or ',' and followed by ',' or '}'.
      bool found = false;
      for (std::size_t at = labels.find(matcher); at != std::string::npos;
           at = labels.find(matcher, at + 1)) {
        const char before = at > 0 ? labels[at - 1] : '\0';
        const char after = at + matcher.size() < labels.size() ? labels[at + matcher.size()] : '\0';
        if ((before == '{' || before == ',') && (after == ',' || after == '}')) found = true;
      }
      all &= found;
    }
    if (!all) continue;
    sum += std::stod(line.substr(value_at + 1));
    any = true;
  }
  return any ? sum : -1;
}

std::set<std::string> SampleNames(const std::string& text) {
  std::set<std::string> names;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    names.insert(line.substr(0, line.find_first_of("{ ")));
  }
  return names;
}

}  // namespace infrachat::testing
