#include "local_event_bus.h"

namespace infrachat {

const std::string& EventChannel(const BusEvent& event) {
  return std::visit(
      [](const auto& e) -> const std::string& {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, MembershipChanged> || std::is_same_v<T, PresenceChanged>) {
          return e.channel;
        } else {
          return e.channel();
        }
      },
      event);
}

LocalEventBus::LocalEventBus() : thread_([this] { Run(); }) {}

LocalEventBus::~LocalEventBus() {
  {
    std::lock_guard lock(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  thread_.join();
}

void LocalEventBus::Publish(BusEvent event) {
  {
    std::lock_guard lock(queue_mu_);
    queue_.push_back(Item(std::in_place_type<Delivery>, Delivery{std::move(event), CurrentSpan()}));
    ++published_;
  }
  queue_cv_.notify_one();
}

EventBus::SubscriptionId LocalEventBus::Subscribe(Handler handler) {
  std::unique_lock lock(handlers_mu_);
  const SubscriptionId id = next_id_++;
  handlers_.emplace(id, std::move(handler));
  return id;
}

void LocalEventBus::Unsubscribe(SubscriptionId id) {
  std::unique_lock lock(handlers_mu_);  // waits for a running dispatch to finish
  handlers_.erase(id);
}

void LocalEventBus::Drain() {
  std::unique_lock lock(queue_mu_);
  const std::uint64_t target = published_;
  drained_cv_.wait(lock, [&] { return handled_ >= target || stopping_; });
}

std::size_t LocalEventBus::queued() const {
  std::lock_guard lock(queue_mu_);
  return queue_.size();
}

void LocalEventBus::Watch(const std::string& /*channel*/, Ready ready) {
  {
    std::lock_guard lock(queue_mu_);
    queue_.push_back(std::move(ready));
    ++published_;
  }
  queue_cv_.notify_one();
}

void LocalEventBus::Unwatch(const std::string& /*channel*/) {}

void LocalEventBus::Run() {
  for (;;) {
    Item item;
    {
      std::unique_lock lock(queue_mu_);
      queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) {
        drained_cv_.notify_all();
        return;
      }
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    if (auto* ready = std::get_if<Ready>(&item)) {
      if (*ready) (*ready)();
    } else {
      const Delivery& delivery = std::get<Delivery>(item);
      SpanScope scope(delivery.trace);
      std::shared_lock lock(handlers_mu_);
      for (auto& [id, handler] : handlers_) handler(delivery.event);
    }
    {
      std::lock_guard lock(queue_mu_);
      ++handled_;
    }
    drained_cv_.notify_all();
  }
}

}  // namespace infrachat
