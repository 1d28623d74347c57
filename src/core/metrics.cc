#include "infrachat/core/metrics.h"

namespace infrachat {

std::shared_ptr<prometheus::Registry> SharedMetricsRegistry() {
  // Never destroyed before exit: modules keep references to its metrics.
  static const auto registry = std::make_shared<prometheus::Registry>();
  return registry;
}

prometheus::Registry& MetricsRegistry() { return *SharedMetricsRegistry(); }

}  // namespace infrachat
