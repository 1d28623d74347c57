// The process's Prometheus metrics (docs/adr/0010-observability.md).
//
// One registry per process. Each module registers its own families in Start, named
// infrachat_<module>_<what>_<unit>, with labels that never carry user-controlled values (no
// channel or user names), so cardinality stays bounded by code and configuration. The daemon
// serves the registry on metrics.listen_address when that is set; without it, counting still
// happens (cheap: prometheus-cpp counters are atomics) and nothing is served.
#pragma once

#include <prometheus/registry.h>

#include <memory>

namespace infrachat {

// The registry of this process. Thread-safe (prometheus-cpp's own locking); lives until exit.
prometheus::Registry& MetricsRegistry();
// The same registry, for the exposer (which holds a weak reference to it).
std::shared_ptr<prometheus::Registry> SharedMetricsRegistry();

}  // namespace infrachat
