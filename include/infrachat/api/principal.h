#pragma once

#include <cstdint>
#include <string>

namespace infrachat {

// The authenticated caller of a request, taken from a verified access token.
struct Principal {
  std::uint64_t user_id = 0;
  std::string username;
  std::string session_id;            // the login session the token belongs to (JWT `sid`)
  std::int64_t expires_at_unix = 0;  // JWT `exp`
};

}  // namespace infrachat
