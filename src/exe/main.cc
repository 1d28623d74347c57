// infrachatd: everything lives in the daemon library; main only prepares signal handling.
#include <signal.h>

#include "daemon/daemon.h"
#include "infrachat/core/process_setup.h"

int main(int argc, char** argv) {
  infrachat::DisableMutexDeadlockDetection();
  // Blocked before any thread starts, so every thread inherits the mask and only the main
  // thread's sigwait receives SIGINT/SIGTERM.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return infrachat::RunDaemon(argc, argv);
}
