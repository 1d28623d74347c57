#include "bus_codec.h"

#include <type_traits>

namespace infrachat::bus_grpc {

internal::v1::BusEvent ToProto(const BusEvent& event) {
  internal::v1::BusEvent out;
  std::visit(
      [&out](const auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, v1::ChatMessage>) {
          *out.mutable_message() = e;
        } else if constexpr (std::is_same_v<T, v1::TypingEvent>) {
          *out.mutable_typing() = e;
        } else if constexpr (std::is_same_v<T, v1::Receipt>) {
          *out.mutable_receipt() = e;
        } else if constexpr (std::is_same_v<T, MembershipChanged>) {
          auto* m = out.mutable_membership();
          m->set_channel(e.channel);
          m->set_user_id(e.user_id);
          m->set_username(e.username);
          m->set_joined(e.joined);
        } else {
          static_assert(std::is_same_v<T, PresenceChanged>);
          auto* p = out.mutable_presence();
          p->set_channel(e.channel);
          p->set_user_id(e.user_id);
          p->set_username(e.username);
          p->set_online(e.online);
          p->set_origin(e.origin);
        }
      },
      event);
  return out;
}

std::optional<BusEvent> FromProto(const internal::v1::BusEvent& proto) {
  using P = internal::v1::BusEvent;
  switch (proto.event_case()) {
    case P::kMessage:
      return BusEvent(proto.message());
    case P::kTyping:
      return BusEvent(proto.typing());
    case P::kReceipt:
      return BusEvent(proto.receipt());
    case P::kMembership: {
      const auto& m = proto.membership();
      return BusEvent(MembershipChanged{m.channel(), m.user_id(), m.username(), m.joined()});
    }
    case P::kPresence: {
      const auto& p = proto.presence();
      return BusEvent(
          PresenceChanged{p.channel(), p.user_id(), p.username(), p.online(), p.origin()});
    }
    case P::EVENT_NOT_SET:
      break;
  }
  return std::nullopt;
}

}  // namespace infrachat::bus_grpc
