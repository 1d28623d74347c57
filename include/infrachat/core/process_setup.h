// Process-wide settings every InfraChat program that uses gRPC applies first thing in main().
#pragma once

namespace infrachat {

// Turns off Abseil's mutex deadlock detection. Debian builds Abseil without NDEBUG, which leaves
// the detector on: every absl::Mutex lock inside gRPC then also takes one process-wide lock to
// update a lock-order graph (absl GraphCycles), which serializes gRPC's threads. A profile of
// fanout showed it (docs/PERFORMANCE.md). Call before any thread starts; not thread-safe.
void DisableMutexDeadlockDetection();

}  // namespace infrachat
