// Fuzzes core::ConfigLoader (src/core/config.cpp): the TOML file, the environment and the
// command line, into settings of every supported type, plus the custom ones the services use
// (log level and format) and the shared service settings (postgres.*, redis.*).
//
// Input: the TOML file, optionally followed by NUL-separated items: an item `TS_NAME=value`
// is an environment variable, any other item a command-line argument. The loader only reads
// files by name, so the TOML text goes into a memfd read through /proc/self/fd/N (in memory,
// no disk I/O, one per process).
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/pg/config.hpp>
#include <trading_shared/redis/config.hpp>

#include "common/settings.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace core = trading_shared::core;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_config: %s\n", what);
  std::abort();
}

/// The memfd holding the TOML text, and its path.
struct MemFile {
  int fd = -1;
  std::string path;
};

const MemFile& mem_file() {
  static const MemFile file = [] {
    MemFile f;
    f.fd = ::memfd_create("fuzz_config.toml", MFD_CLOEXEC);
    if (f.fd < 0) fail("memfd_create failed");
    f.path = "/proc/self/fd/" + std::to_string(f.fd);
    return f;
  }();
  return file;
}

void write_file(std::string_view text) {
  const MemFile& f = mem_file();
  if (::ftruncate(f.fd, 0) != 0) fail("ftruncate failed");
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n =
        ::pwrite(f.fd, text.data() + done, text.size() - done, static_cast<off_t>(done));
    if (n <= 0) fail("pwrite failed");
    done += static_cast<std::size_t>(n);
  }
}

/// Every setting type the loader supports, with keys in nested tables, as services use them.
struct Settings {
  std::string name = "fuzz";
  std::optional<std::string> summary_file;
  bool dry_run = false;
  int retries = 3;
  std::int64_t offset = -1;
  std::uint16_t port = 8080;
  std::uint32_t batch = 100;
  std::uint64_t max_bytes = 1 << 20;
  double rate = 1.5;
  std::chrono::milliseconds idle_timeout{5000};
  std::vector<std::string> symbols{"BTCUSDT", "ETHUSDT"};
  std::string overflow = "drop_oldest";
  std::string token;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  const std::string_view toml = input.substr(0, nul);
  write_file(toml);

  const std::string& path = mem_file().path;
  std::vector<std::string> args{"ts-fuzz"};
  std::map<std::string, std::string> env{{"TS_CONFIG", path}};
  if (nul != std::string_view::npos) {
    std::string_view rest = input.substr(nul + 1);
    while (true) {
      const std::size_t end = rest.find('\0');
      const std::string_view item = rest.substr(0, end);
      const std::size_t eq = item.find('=');
      if (item.starts_with("TS_") && eq != std::string_view::npos) {
        env[std::string(item.substr(0, eq))] = std::string(item.substr(eq + 1));
      } else {
        args.emplace_back(item);
      }
      if (end == std::string_view::npos || args.size() > 64) break;
      rest.remove_prefix(end + 1);
    }
  }
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  const core::EnvLookup lookup = [&env](const std::string& name) -> std::optional<std::string> {
    const auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };

  Settings s;
  trading_shared::pg::PostgresConfig pg;
  trading_shared::redis::RedisConfig redis;
  core::LogConfig log;
  core::ConfigLoader loader("ts-fuzz", "Fuzzed configuration.");
  trading_shared::services::add_postgres_settings(loader, pg);
  trading_shared::services::add_redis_settings(loader, redis);
  core::add_log_settings(loader, log);
  loader.add(s.name, {"name", "a string"})
      .add(s.summary_file, {"summary_file", "an optional string"})
      .add(s.dry_run, {"dry_run", "a boolean"})
      .add(s.retries, {"feed.retries", "an int"})
      .add(s.offset, {"feed.offset", "an int64"})
      .add(s.port, {"feed.http.port", "a uint16"})
      .add(s.batch, {"batch", "a uint32"})
      .add(s.max_bytes, {"feed.max-bytes", "a uint64"})
      .add(s.rate, {"rate", "a double"})
      .add(s.idle_timeout, {"feed.idle_timeout", "a duration"})
      .add(s.symbols, {"symbols", "a list"})
      .add(s.overflow, {"feed.overflow", "an enum as a string"})
      .add(s.token, {"feed.token", "a secret", true});

  try {
    const core::LoadResult result =
        loader.load(static_cast<int>(argv.size() - 1), argv.data(), lookup);
    if (result.help_requested) {
      if (result.help_text.empty()) fail("empty help");
      return 0;
    }
  } catch (const core::ConfigError& e) {
    // The documented contract: one line, never a secret's value.
    const std::string_view what = e.what();
    for (const char c : what) {
      if (static_cast<unsigned char>(c) < 0x20) fail("ConfigError message is not one line");
    }
    return 0;
  }

  // Loaded: render it as the services do, and run the library's own checks on it.
  for (const auto& setting : loader.effective_config()) {
    const bool secret =
        setting.key == "feed.token" || setting.key == "postgres.dsn" || setting.key == "redis.url";
    if (secret && setting.value != "***" && setting.value != "\"\"") fail("a secret is shown");
  }
  const std::string summary = loader.effective_config_summary();
  if (summary.find('\n') != std::string::npos) fail("summary is not one line");
  (void)loader.help_text();
  if (s.rate != s.rate) fail("a NaN double was accepted");
  try {
    trading_shared::redis::validate(redis);
    const auto endpoint = trading_shared::redis::parse_redis_url(redis.url);
    (void)endpoint.describe();
  } catch (const trading_shared::Error&) {
    // A bad URL or value is reported by validate(): expected.
  }
  return 0;
}
