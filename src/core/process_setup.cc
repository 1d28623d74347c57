#include "infrachat/core/process_setup.h"

#include <absl/synchronization/mutex.h>

namespace infrachat {

void DisableMutexDeadlockDetection() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

}  // namespace infrachat
