#pragma once
/// @file
/// Warnings of the configuration loader that are not errors: a secret setting's value given
/// on the command line, where every local user sees it in `ps` (F66); a URL or a libpq DSN
/// only when it holds a password (what `redact_secrets` masks: a URL's `user:password@`,
/// `password=`), any other secret (an API key) always. `ConfigLoader::load`
/// records them; the program logs them once at start, once logging is set up (the services'
/// `log_start`, tsctl's main), naming the flag and never the value.

#include <string>
#include <vector>

namespace trading_shared::core {

/// The warnings recorded since the last call (in order), and forgets them. Thread-safe.
std::vector<std::string> take_config_warnings();

}  // namespace trading_shared::core
