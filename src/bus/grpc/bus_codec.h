// The wire form of a BusEvent (internal.v1.BusEvent) for the event stream between processes.
#pragma once

#include <optional>

#include "infrachat/bus/event_bus.h"
#include "infrachat/internal/v1/internal.pb.h"

namespace infrachat::bus_grpc {

// Every BusEvent kind has a oneof case; the conversion is lossless.
internal::v1::BusEvent ToProto(const BusEvent& event);

// nullopt when the oneof is empty (a peer of another build, or a corrupt message): the caller
// rejects it (INVALID_ARGUMENT) or skips it.
std::optional<BusEvent> FromProto(const internal::v1::BusEvent& proto);

}  // namespace infrachat::bus_grpc
