// ConfigLoader for operators: environment namespaces, secrets from files, --version and the
// Markdown table of the settings (docs/operations.md).
#include <trading_shared/core/config.hpp>
#include <trading_shared/version.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace trading_shared::core {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::Not;

class Args {
 public:
  Args(std::initializer_list<std::string> args) : storage_{"prog"} {
    storage_.insert(storage_.end(), args.begin(), args.end());
    for (const auto& s : storage_) {
      pointers_.push_back(s.c_str());
    }
    pointers_.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(storage_.size()); }
  const char* const* argv() const { return pointers_.data(); }

 private:
  std::vector<std::string> storage_;
  std::vector<const char*> pointers_;
};

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) {
      return std::nullopt;
    }
    return it->second;
  };
}

class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    static std::atomic<int> counter{0};
    path_ = ::testing::TempDir() + "ts_config_ops_test_" + std::to_string(::getpid()) + "_" +
            std::to_string(counter++);
    std::ofstream out(path_, std::ios::binary);
    out << content;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string load_error(ConfigLoader& loader, const Args& args, const EnvLookup& env) {
  try {
    loader.load(args.argc(), args.argv(), env);
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError";
  return {};
}

class ConfigOpsTest : public ::testing::Test {
 protected:
  ConfigOpsTest() {
    loader_.env_namespace("RECORDER")
        .add(dsn_, {"postgres.dsn", "PostgreSQL connection string.", true})
        .add(pool_, {"postgres.pool_size", "Connections."})
        .add(level_, {"log.level", "Log level."})
        .add(batch_, {"batch", "Entries at a time."})
        .add(listen_, {"admin.listen", "Admin endpoint."})
        .add(api_key_, {"rest.api_key", "REST key.", true});
  }
  std::string dsn_;
  std::uint64_t pool_ = 2;
  std::string level_ = "info";
  std::int64_t batch_ = 100;
  std::string listen_;
  std::string api_key_;
  ConfigLoader loader_{"ts-recorder", "Records."};
};

TEST_F(ConfigOpsTest, OwnSettingsAreNamespacedSharedTablesAreNot) {
  EXPECT_EQ(loader_.env_var_for("batch"), "TS_RECORDER_BATCH");
  EXPECT_EQ(loader_.env_var_for("admin.listen"), "TS_RECORDER_ADMIN_LISTEN");
  EXPECT_EQ(loader_.env_var_for("postgres.dsn"), "TS_POSTGRES_DSN");
  EXPECT_EQ(loader_.env_var_for("redis.url"), "TS_REDIS_URL");
  EXPECT_EQ(loader_.env_var_for("log.level"), "TS_LOG_LEVEL");
  EXPECT_EQ(loader_.config_env_var(), "TS_RECORDER_CONFIG");
  EXPECT_EQ(ConfigLoader::flag_for("batch"), "--batch");  // flags do not change

  const Args none{};
  loader_.load(none.argc(), none.argv(),
               env_of({{"TS_BATCH", "7"},  // another service's (or an old) name: not read
                       {"TS_RECORDER_BATCH", "42"},
                       {"TS_POSTGRES_POOL_SIZE", "5"},
                       {"TS_LOG_LEVEL", "debug"},
                       {"TS_CONFIG", "/nonexistent.toml"}}));
  EXPECT_EQ(batch_, 42);
  EXPECT_EQ(pool_, 5U);
  EXPECT_EQ(level_, "debug");

  TempFile file("batch = 9\n");
  loader_.load(none.argc(), none.argv(), env_of({{"TS_RECORDER_CONFIG", file.path()}}));
  EXPECT_EQ(batch_, 9);
  const std::string help = loader_.help_text();
  EXPECT_THAT(help, HasSubstr("env: TS_RECORDER_CONFIG\n"));
  EXPECT_THAT(help, HasSubstr("env: TS_RECORDER_BATCH | file: batch | default: 100\n"));
}

TEST_F(ConfigOpsTest, BadNamespaceIsAProgrammingError) {
  ConfigLoader loader("x", "");
  EXPECT_THROW(loader.env_namespace("recorder"), std::invalid_argument);
  EXPECT_THROW(loader.env_namespace(""), std::invalid_argument);
}

TEST_F(ConfigOpsTest, SecretFromFileByEnvironmentOrFlag) {
  TempFile secret("host=db password=from-file\n");
  const Args none{};
  loader_.load(none.argc(), none.argv(), env_of({{"TS_POSTGRES_DSN_FILE", secret.path()}}));
  EXPECT_EQ(dsn_, "host=db password=from-file");  // trailing newline dropped

  TempFile key("k3y\r\n");
  const Args flag{"--rest-api-key-file", key.path()};
  loader_.load(flag.argc(), flag.argv(), env_of({}));
  EXPECT_EQ(api_key_, "k3y");
  // The flag beats the environment, as for the value itself.
  const Args both_sources{"--postgres-dsn-file=" + key.path()};
  loader_.load(both_sources.argc(), both_sources.argv(), env_of({{"TS_POSTGRES_DSN", "host=env"}}));
  EXPECT_EQ(dsn_, "k3y");
  EXPECT_THAT(loader_.effective_config_summary(), Not(HasSubstr("k3y")));
  // A namespaced secret has a namespaced _FILE.
  loader_.load(none.argc(), none.argv(), env_of({{"TS_RECORDER_REST_API_KEY_FILE", key.path()}}));
  EXPECT_EQ(api_key_, "k3y");
}

TEST_F(ConfigOpsTest, SecretFileErrorsNameTheSourceNotTheSecret) {
  TempFile secret("password=hunter2\n");
  EXPECT_EQ(load_error(loader_, Args{},
                       env_of({{"TS_POSTGRES_DSN", "x"}, {"TS_POSTGRES_DSN_FILE", secret.path()}})),
            "give either TS_POSTGRES_DSN or TS_POSTGRES_DSN_FILE, not both");
  EXPECT_EQ(load_error(loader_, Args{"--postgres-dsn=x", "--postgres-dsn-file", secret.path()},
                       env_of({})),
            "give either --postgres-dsn or --postgres-dsn-file, not both");
  const std::string missing =
      load_error(loader_, Args{}, env_of({{"TS_POSTGRES_DSN_FILE", "/nonexistent/dsn"}}));
  EXPECT_THAT(missing, HasSubstr("secret file /nonexistent/dsn (from environment variable "
                                 "TS_POSTGRES_DSN_FILE): cannot open"));
  EXPECT_THAT(load_error(loader_, Args{"--postgres-dsn-file="}, env_of({})),
              HasSubstr("--postgres-dsn-file requires a file name"));
  // Only secrets have a -file flag.
  EXPECT_THAT(load_error(loader_, Args{"--batch-file=x"}, env_of({})),
              HasSubstr("unknown option --batch-file"));
  TempFile big(std::string(70 * 1024, 'x'));
  EXPECT_THAT(load_error(loader_, Args{"--postgres-dsn-file", big.path()}, env_of({})),
              HasSubstr("larger than 65536 bytes"));
}

TEST_F(ConfigOpsTest, FileFlagMayNotClashWithAnotherSetting) {
  std::string a;
  std::string b;
  ConfigLoader loader("x", "");
  loader.add(a, {"token", "", true});
  EXPECT_THROW(loader.add(b, {"token_file", ""}), std::invalid_argument);
  ConfigLoader other("x", "");
  other.add(b, {"token_file", ""});
  EXPECT_THROW(other.add(a, {"token", "", true}), std::invalid_argument);
}

TEST_F(ConfigOpsTest, VersionPrintsProgramAndVersionAndReadsNothing) {
  const EnvLookup exploding = [](const std::string& name) -> std::optional<std::string> {
    ADD_FAILURE() << "environment read: " << name;
    return std::nullopt;
  };
  const Args args{"--version", "--config=/nonexistent.toml"};
  const LoadResult result = loader_.load(args.argc(), args.argv(), exploding);
  EXPECT_TRUE(result.help_requested);
  EXPECT_EQ(result.help_text, "ts-recorder " + std::string(kVersion) + "\n");
  loader_.version("9.8.7");
  EXPECT_EQ(loader_.load(args.argc(), args.argv(), exploding).help_text, "ts-recorder 9.8.7\n");
  // --help wins over --version.
  const Args both{"--version", "--help"};
  EXPECT_EQ(loader_.load(both.argc(), both.argv(), exploding).help_text, loader_.help_text());
  std::string v;
  EXPECT_THROW(loader_.add(v, {"version", ""}), std::invalid_argument);
}

TEST_F(ConfigOpsTest, MarkdownTableHasOneRowPerSetting) {
  dsn_ = "host=db password=never-shown";
  ConfigLoader loader("ts-recorder", "Records.");
  loader.env_namespace("RECORDER")
      .add(dsn_, {"postgres.dsn", "PostgreSQL connection string.", true})
      .add(batch_, {"batch", "Entries at a time (a|b)."})
      .add(listen_, {"admin.listen", "Admin endpoint."});
  const Args args{"--help-markdown"};
  const LoadResult result = loader.load(args.argc(), args.argv(), env_of({}));
  EXPECT_TRUE(result.help_requested);
  EXPECT_EQ(result.help_text, loader.help_markdown());
  EXPECT_EQ(result.help_text,
            "| ts-recorder flag | environment | TOML key | default | meaning |\n"
            "|---|---|---|---|---|\n"
            "| `--config` | `TS_RECORDER_CONFIG` | | | TOML configuration file |\n"
            "| `--postgres-dsn`, `--postgres-dsn-file` | `TS_POSTGRES_DSN`, "
            "`TS_POSTGRES_DSN_FILE` | `postgres.dsn` | `***` | PostgreSQL connection string. "
            "(secret) |\n"
            "| `--batch` | `TS_RECORDER_BATCH` | `batch` | `100` | Entries at a time (a\\|b). |\n"
            "| `--admin-listen` | `TS_RECORDER_ADMIN_LISTEN` | `admin.listen` | | Admin "
            "endpoint. |\n");
}

}  // namespace
}  // namespace trading_shared::core
