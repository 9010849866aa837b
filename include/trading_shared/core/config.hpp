#pragma once
/// @file
/// Typed configuration loading for the service layer: command-line flag > environment
/// variable > TOML file > default (docs/core.md, docs/services.md).
///
/// The library itself reads no environment and no files; its components take plain config
/// structs. This loader is the one piece of machinery that services use to fill those structs
/// at startup. Each setting is declared once, by its TOML key, and gets its flag and its
/// environment variable by derivation, so that the three spellings can never drift apart:
///
/// | TOML key             | flag                   | environment variable     |
/// |----------------------|------------------------|--------------------------|
/// | `postgres.dsn`       | `--postgres-dsn`       | `TS_POSTGRES_DSN`        |
/// | `redis.pool_size`    | `--redis-pool-size`    | `TS_REDIS_POOL_SIZE`     |
///
/// Bad configuration is reported as a `ConfigError` whose message is one line naming the
/// source and the setting; `load_or_exit_code` turns it into exit code 2.
///
/// @par Rules worth knowing
/// - An empty environment variable counts as unset (a `TS_X=${X}` template with `X` undefined
///   must not silently override the file). Use `--x=` or `x = ""` in the file to set empty.
/// - Every source that is present is validated, not only the winning one: a bad value in the
///   file is an error even when a flag overrides it, so that a latent typo cannot surface
///   later in another deployment.
/// - Unknown TOML keys and unknown flags are errors (with a "did you mean" hint).
/// - A repeated flag takes its last value.
/// - `--help` wins over everything else on the command line and reads neither the
///   environment nor the file, so that help works even when the configuration is broken.
///   `--version` prints `<program> <version>` (the library's `kVersion` unless `version()`
///   says otherwise) the same way; `--help-markdown` prints the settings as a Markdown table
///   (flag, environment variable, TOML key, default, meaning) for the documentation.
/// - With `env_namespace("RECORDER")` a program's own settings read `TS_RECORDER_<KEY>` (and
///   its file `TS_RECORDER_CONFIG`), while the shared tables (`postgres.*`, `redis.*`, `log.*`)
///   keep `TS_<KEY>`: one environment file can serve every service without one service's
///   `batch` leaking into another's.
/// - A secret setting (`SettingSpec::secret`) can also be read from a file: the environment
///   variable `<VAR>_FILE` or the flag `--<flag>-file` names it (systemd credentials, Docker
///   and Kubernetes secrets); trailing newlines are dropped. Giving both the value and its file
///   in one source is an error.
///
/// @code
/// PostgresConfig pg;  // defaults in the struct are the defaults of the flags
/// core::ConfigLoader loader("ts-recorder", "Records trades into PostgreSQL.");
/// loader.add(pg.dsn, {"postgres.dsn", "libpq connection string", true})
///       .add(pg.max_size, {"postgres.pool_size", "connections in the pool"});
/// if (auto code = core::load_or_exit_code(loader, argc, argv)) return *code;
/// @endcode

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

namespace trading_shared::core {

/// Exit code of a process whose configuration is invalid (docs/lifecycle.md).
inline constexpr int kExitBadConfig = 2;

/// Bad configuration supplied by the operator (not a programming error).
///
/// `what()` is always a single line (control characters are replaced by spaces) naming the
/// source and the setting, e.g. `invalid value "abc" for --postgres-pool-size (from
/// environment variable TS_POSTGRES_POOL_SIZE): expected an integer`. It never contains the
/// value of a secret setting.
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::string_view message);
};

/// Declaration of one setting.
struct SettingSpec {
  /// TOML dotted key, e.g. `postgres.dsn`: lower-case letters, digits, `_` and `-`, in
  /// segments separated by dots. The flag (`--postgres-dsn`) and the environment variable
  /// (`TS_POSTGRES_DSN`) are derived from it.
  std::string key;
  /// One sentence for `--help`.
  std::string help;
  /// A secret's value is never shown: `***` in help, summaries and error messages.
  bool secret = false;
};

/// A setting of a type the loader does not know (an enum, a log level, ...), described by a
/// parse function. From the TOML file it accepts a string.
struct CustomSetting {
  /// Placeholder shown in help, e.g. `trace|debug|info|warn|error|critical|off`.
  std::string type_name;
  /// Parses and stores a value. Throws `std::invalid_argument` whose `what()` says what was
  /// expected (e.g. "expected one of trace, debug, ..."); the loader adds the source.
  std::function<void(std::string_view)> parse;
  /// Renders the current value (for help defaults and summaries).
  std::function<std::string()> format;
};

/// Where a setting's effective value came from.
enum class ConfigSource : std::uint8_t {
  default_value,  ///< nothing set it; the target kept its initial value.
  config_file,    ///< the TOML file.
  environment,    ///< an environment variable.
  command_line,   ///< a command-line flag.
};
std::string_view to_string(ConfigSource source) noexcept;

/// One line of the effective configuration, secrets already redacted.
struct EffectiveSetting {
  std::string key;
  std::string value;  ///< rendered like in help; `***` for non-empty secrets.
  ConfigSource source = ConfigSource::default_value;
};

/// Looks up an environment variable; `std::nullopt` when unset. Injectable for tests.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

/// The process environment (`::getenv`). Not thread-safe against concurrent `setenv`, like
/// `getenv` itself: load configuration at startup, before spawning threads.
EnvLookup process_env();

/// What `ConfigLoader::load` did.
struct LoadResult {
  /// `--help`, `--help-markdown` or `--version` was given: nothing was loaded, `help_text`
  /// should be printed to stdout and the process should exit with 0.
  bool help_requested = false;
  std::string help_text;
  /// The TOML file that was read (from `--config` or `<prefix>CONFIG`), if any.
  std::optional<std::string> config_file;
  /// Positional arguments (only when `allow_positional` was called; an error otherwise).
  std::vector<std::string> positional;
};

namespace detail {
template <class T, class... Ts>
inline constexpr bool kIsOneOf = (std::is_same_v<T, Ts> || ...);
}  // namespace detail

/// Binds settings to the fields of config structs and fills them from the command line, the
/// environment and an optional TOML file.
///
/// The initial value of each bound field is its default (shown by `--help`). The loader keeps
/// pointers to the bound fields: they must outlive it. Not thread-safe; use at startup.
class ConfigLoader {
 public:
  /// @param program name used in help and in error lines (`<program>: configuration error`).
  /// @param description one paragraph for `--help`.
  ConfigLoader(std::string program, std::string description);

  /// Prefix of derived environment variables (default `TS_`), including of `<prefix>CONFIG`.
  ConfigLoader& env_prefix(std::string prefix);

  /// Namespaces the environment variables of this program's own settings: with `name`
  /// "RECORDER", key `batch` reads `TS_RECORDER_BATCH` and the file is named by
  /// `TS_RECORDER_CONFIG`; keys whose first segment is one of `shared_tables` keep
  /// `TS_<KEY>` (`postgres.dsn` -> `TS_POSTGRES_DSN`). Flags and TOML keys do not change.
  /// `name`: upper-case letters, digits and `_`. @throws std::invalid_argument otherwise.
  ConfigLoader& env_namespace(std::string name, std::vector<std::string> shared_tables = {
                                                    "postgres", "redis", "log"});

  /// What `--version` prints after the program name (default: the library's `kVersion`).
  ConfigLoader& version(std::string version);

  /// Accept positional arguments (returned in `LoadResult::positional`), e.g. the sub-command
  /// of a CLI tool. Without this call they are errors. `name` is shown in the usage line.
  ConfigLoader& allow_positional(std::string name);

  /// Binds `target` to a setting.
  ///
  /// Supported types and their syntax on the command line and in the environment:
  /// - `std::string`, `std::optional<std::string>` (set by any source, even to "");
  /// - `bool`: `true/false`, `1/0`, `yes/no`, `on/off`; a bare `--flag` means true;
  /// - `int`, `std::int64_t`, `std::uint16_t`, `std::uint32_t`, `std::uint64_t`/`std::size_t`:
  ///   decimal, range-checked;
  /// - `double`: finite decimal number;
  /// - `std::chrono::milliseconds`: `250ms`, `2s`, `1m`, `1h`, or a plain integer of ms;
  /// - `std::vector<std::string>`: comma-separated, items trimmed, empty items dropped.
  ///
  /// In the TOML file values are typed: strings, booleans, integers (floats or integers for
  /// `double`), arrays of strings for lists, and integers (ms) or unit strings for durations.
  ///
  /// @throws std::invalid_argument for a malformed or duplicate key (a programming error).
  template <class T>
  ConfigLoader& add(T& target, SettingSpec spec) {
    static_assert(std::is_same_v<std::size_t, std::uint64_t>,
                  "size_t settings are bound as uint64_t on this platform");
    static_assert(detail::kIsOneOf<T, std::string, bool, int, std::int64_t, std::uint16_t,
                                   std::uint32_t, std::uint64_t, double, std::chrono::milliseconds,
                                   std::vector<std::string>, std::optional<std::string>>,
                  "unsupported setting type (use add_custom)");
    return add_target(Target{std::in_place_type<T*>, &target}, std::move(spec));
  }

  /// Binds a setting of a custom type (see `CustomSetting`).
  ConfigLoader& add_custom(SettingSpec spec, CustomSetting custom);

  /// Reads the command line, then the TOML file named by `--config` or `<prefix>CONFIG` (if
  /// any), then the environment, and stores every setting's effective value.
  ///
  /// May be called again (e.g. by tests); each call starts from the bound fields' current
  /// values. On error the bound fields may be partly updated: the caller is expected to exit.
  /// @throws ConfigError on any bad configuration.
  LoadResult load(int argc, const char* const* argv, const EnvLookup& env = process_env());

  /// The `--help` text.
  std::string help_text() const;

  /// The `--help-markdown` text: one Markdown table row per setting, `| flag | environment
  /// variable | TOML key | default | meaning |`, after a header (`--config` included).
  std::string help_markdown() const;

  /// Every setting with its current value (secrets as `***`) and where it came from.
  std::vector<EffectiveSetting> effective_config() const;

  /// One line `key=value key=value ...` (secrets as `***`, values quoted when needed), meant
  /// to be logged once at startup.
  std::string effective_config_summary() const;

  const std::string& program() const noexcept { return program_; }
  /// The flag of a key (`postgres.dsn` -> `--postgres-dsn`).
  static std::string flag_for(std::string_view key);
  /// The environment variable of a key under this loader's prefix (and namespace).
  std::string env_var_for(std::string_view key) const;
  /// The environment variable naming the TOML file (`TS_CONFIG`, `TS_RECORDER_CONFIG`).
  std::string config_env_var() const;

 private:
  using Target =
      std::variant<std::string*, bool*, int*, std::int64_t*, std::uint16_t*, std::uint32_t*,
                   std::uint64_t*, double*, std::chrono::milliseconds*, std::vector<std::string>*,
                   std::optional<std::string>*, CustomSetting>;
  struct Setting {
    SettingSpec spec;
    std::string flag;  ///< without the leading dashes.
    Target target;
    std::string default_text;
    ConfigSource source = ConfigSource::default_value;
  };

  ConfigLoader& add_target(Target target, SettingSpec spec);
  std::string render(const Setting& setting) const;

  std::string program_;
  std::string description_;
  std::string env_prefix_ = "TS_";
  std::string env_namespace_;
  std::vector<std::string> shared_tables_;
  std::string version_;
  std::optional<std::string> positional_name_;
  std::vector<Setting> settings_;
};

/// The usual startup sequence: load, print help or the error, and tell the caller whether
/// and how to exit.
///
/// @return `std::nullopt` when the configuration was loaded and the service should run;
/// `0` after printing help to `out`; `kExitBadConfig` after printing exactly one line
/// `<program>: configuration error: <message>` to `err`.
std::optional<int> load_or_exit_code(ConfigLoader& loader, int argc, const char* const* argv,
                                     std::ostream& err = std::cerr, std::ostream& out = std::cout,
                                     const EnvLookup& env = process_env());

}  // namespace trading_shared::core
