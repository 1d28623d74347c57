// RouterApi: channel placement (the Switchboard).
#pragma once

#include <string_view>

#include "infrachat/core/result.h"
#include "infrachat/v1/infrachat.pb.h"

namespace infrachat {

// Thread-safe; non-blocking in the in-process implementation.
class RouterApi {
 public:
  virtual ~RouterApi() = default;
  // Where a channel lives. INVALID_ARGUMENT for a malformed channel name. Does not check that
  // the channel exists: placement is a pure function of the name and the healthy shards.
  virtual Result<v1::RouteResponse> Route(std::string_view channel) = 0;
};

}  // namespace infrachat
