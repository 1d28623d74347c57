#include "ha_database.h"

#include <filesystem>
#include <sstream>

namespace infrachat::testing {

std::vector<pid_t> ProcessTree(pid_t pid) {
  std::vector<pid_t> out = {pid};
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::istringstream stat(testing::ReadFile(entry.path().string() + "/stat"));
    std::string comm_and_rest((std::istreambuf_iterator<char>(stat)), {});
    const auto close = comm_and_rest.rfind(')');  // comm may hold spaces
    if (close == std::string::npos) continue;
    std::istringstream fields(comm_and_rest.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    fields >> state >> ppid;
    if (ppid == pid) out.push_back(static_cast<pid_t>(std::stoi(name)));
  }
  return out;
}

}  // namespace infrachat::testing
