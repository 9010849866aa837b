#pragma once
/// @file
/// Logging setup for services: spdlog to stderr, as text for people or as one JSON object per
/// line for log pipelines, with secrets redacted from every message.
///
/// Components log through `logger("pg")`, `logger("redis")`, ...: all of them share one sink,
/// so that `setup_logging` (called once at startup, before other threads log) reconfigures
/// loggers that were created earlier, e.g. by static initialisation or by a test.
///
/// JSON lines look like
/// @code{.json}
/// {"ts":"2026-05-01T12:34:56.789Z","level":"info","service":"ts-recorder","component":"pg","msg":"connected"}
/// @endcode
/// (`component` is absent for the default logger). Text lines look like
/// `2026-05-01T12:34:56.789Z info  ts-recorder [pg] connected`; control characters in
/// messages are escaped in both formats, so that one record is always one line.
///
/// Redaction is a safety net, not a licence to log secrets: code must still avoid passing
/// them, and DSNs should be shown through `redact_dsn`.

#include <trading_shared/core/build_config.hpp>  // the ODR guard

#include <spdlog/common.h>
#include <spdlog/formatter.h>
#include <spdlog/logger.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace trading_shared::core {

class ConfigLoader;

/// Output format of log records.
enum class LogFormat : std::uint8_t {
  text,  ///< human-readable, one line per record.
  json,  ///< one JSON object per line.
};

/// Logging configuration of a service.
struct LogConfig {
  /// Minimum level written; `off` disables logging.
  spdlog::level::level_enum level = spdlog::level::info;
  LogFormat format = LogFormat::text;
  /// The `service` field of JSON records (and the service column of text records).
  std::string service_name;
};

/// Parses `trace`, `debug`, `info`, `warn` (or `warning`), `error` (or `err`), `critical`,
/// `off`, case-insensitively.
/// @throws std::invalid_argument("expected one of trace, debug, ...") otherwise.
spdlog::level::level_enum parse_log_level(std::string_view text);
/// The canonical name of a level (`warn`, `error`, ...), as written in JSON records.
std::string_view log_level_name(spdlog::level::level_enum level) noexcept;

/// Parses `text` or `json` (case-insensitively). @throws std::invalid_argument otherwise.
LogFormat parse_log_format(std::string_view text);
std::string_view to_string(LogFormat format) noexcept;

/// Registers `log.level` and `log.format` (`--log-level`, `TS_LOG_LEVEL`, ...) bound to
/// `config`. The service name is not a setting: it is the program's name.
void add_log_settings(ConfigLoader& loader, LogConfig& config);

/// Configures the default logger and every component logger to write to stderr.
void setup_logging(const LogConfig& config);

/// Same, writing to `sink` instead of stderr (tests, files). The sink's formatter is replaced.
void setup_logging(const LogConfig& config, spdlog::sink_ptr sink);

/// The logger of a component (`pg`, `redis`, `ws`, ...), created on first use and shared;
/// it writes to the same sink as the default logger. An empty name returns the default logger.
/// Thread-safe.
std::shared_ptr<spdlog::logger> logger(std::string_view component);

/// The formatter `setup_logging` installs; exposed for services that add sinks of their own.
std::unique_ptr<spdlog::formatter> make_log_formatter(const LogConfig& config);

/// Masks secrets in free text, as a last line of defence on the logging path:
/// - libpq keyword passwords: `password=secret` -> `password=***`, also quoted
///   (`password='se cret'`), with spaces around `=`, and any key ending in `password`
///   (`PGPASSWORD=...`), case-insensitively;
/// - URI passwords: `postgresql://user:secret@host`, `redis://:secret@host` ->
///   `user:***@host`, `:***@host` (any scheme);
/// - Redis `AUTH <pass>` and `AUTH <user> <pass>` (also inside `HELLO ... AUTH`): both
///   arguments are masked, because `AUTH <pass> <more text>` cannot be told apart from
///   `AUTH <user> <pass>`; the RESP encoding (`AUTH\r\n$6\r\nsecret`) is handled too.
///
/// Text without any of the triggers (`password`, `://`, `auth`) is returned unchanged after a
/// single scan.
std::string redact_secrets(std::string_view text);

/// Appends `text`, redacted, to `out` (the allocation-free form used by the formatter).
void redact_secrets_to(std::string_view text, spdlog::memory_buf_t& out);

/// A DSN or URL made safe to show (alias of `redact_secrets`, named for intent).
inline std::string redact_dsn(std::string_view dsn) {
  return redact_secrets(dsn);
}

/// Escapes `text` as the contents of a JSON string (without the quotes): `"` and `\`,
/// control characters (`\n`, `\t`, `\u0001`, ...), and invalid UTF-8 as `\ufffd`.
std::string json_escape(std::string_view text);

}  // namespace trading_shared::core
