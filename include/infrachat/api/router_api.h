// RouterApi: channel placement (the Switchboard).
#pragma once

#include <string>
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

// The shard placement of a process whose shards run elsewhere (the edge's routed shard client):
// which shard process serves a channel now, by the region's live leases. The router module
// answers Route with it, so that Route names the shard the gateway really sends to.
// Thread-safe; non-blocking (answers from the last lease refresh).
class ShardPlacement {
 public:
  virtual ~ShardPlacement() = default;
  // The shard id of the channel's owner in its home region (its address while its lease is not
  // known yet); empty when the home region has no shard.
  virtual std::string OwnerOf(std::string_view channel) const = 0;
};

}  // namespace infrachat
