#pragma once
/// @file
/// The guardian of a harness directory: a small process that outlives its test binary just
/// long enough to clean up after it.
///
/// PR_SET_PDEATHSIG kills each server's main process when the test binary dies, but not the
/// PostgreSQL backends (they call setsid() and have their own parent-death signal, which a
/// process stopped by pause() never acts on). So every harness directory gets a guardian: the
/// test binary re-executed (/proc/self/exe) in guardian mode, holding the read end of a pipe
/// whose write end only the test binary has. When the binary ends, however it ends, the pipe
/// reports EOF and the guardian SIGKILLs every process still working in the directory,
/// releases a killed PostgreSQL's shared memory and removes the directory.

#include <sys/types.h>

#include <string>

namespace trading_shared::testing::detail {

struct Guardian {
  pid_t pid = -1;
  int pipe_fd = -1;  ///< write end; closing it (or dying) triggers the guardian
};

/// Starts the guardian of `root` (a harness directory). Any thread may call it.
Guardian start_guardian(const std::string& root);

/// Triggers the guardian (closes the pipe) and reaps it; throws when it does not finish in
/// time or fails.
void finish_guardian(Guardian& guardian);

}  // namespace trading_shared::testing::detail
