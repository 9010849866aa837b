// Issue 18, for operators: every binary's --version and first log line, the environment
// namespace of a service's own settings, secrets read from files, the daemons' admin endpoint
// flag and the client settings checked at start. The binaries run as processes; PostgreSQL and
// Redis are the harness's.
#include <trading_shared/version.hpp>

#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"
#include "support/server_process.hpp"
#include "support/test_helpers.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#if !defined(TS_TSCTL) || !defined(TS_JANITOR) || !defined(TS_RECORDER) || \
    !defined(TS_EXECUTOR) || !defined(TS_RECEIVER) || !defined(TS_FEED_SIM)
#error "the paths of the service binaries must be defined by CMake"
#endif

namespace tt = trading_shared::testing;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

struct Program {
  const char* name;
  const char* path;
};
const std::vector<Program> kPrograms = {{"tsctl", TS_TSCTL},          {"ts-janitor", TS_JANITOR},
                                        {"ts-recorder", TS_RECORDER}, {"ts-executor", TS_EXECUTOR},
                                        {"ts-receiver", TS_RECEIVER}, {"ts-feed-sim", TS_FEED_SIM}};

const std::string& work_directory() {
  static const std::string dir = [] {
    std::string path = tt::Servers::instance().directory() + "/config-cli";
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
      throw std::runtime_error("mkdir " + path + ": " + std::strerror(errno));
    }
    return path;
  }();
  return dir;
}

std::string next_path(const std::string& stem) {
  static std::atomic<int> counter{0};
  return work_directory() + "/" + stem + "-" + std::to_string(counter++);
}

/// A file of the test's directory holding `content` (a secret file, say).
std::string write_file(const std::string& content) {
  const std::string path = next_path("file");
  std::ofstream(path, std::ios::binary) << content;
  ::chmod(path.c_str(), 0600);
  return path;
}

/// A running binary; killed and reaped when the object goes.
class Child {
 public:
  Child(const std::string& program, const std::vector<std::string>& args,
        const std::vector<std::string>& env)
      : log_(next_path("run") + ".log") {
    tt::detail::SpawnRequest request;
    request.argv.push_back(program);
    request.argv.insert(request.argv.end(), args.begin(), args.end());
    request.directory = work_directory();
    request.log_file = log_;
    request.user = tt::detail::ServerUser{};
    // Only what the test says: a stray TS_* of the caller must not change the runs.
    // (The first of two entries of one name wins: a default only where the test sets none.)
    request.extra_env = env;
    for (const std::string name : {"TS_LOG_LEVEL=", "TS_POSTGRES_DSN=", "TS_REDIS_URL="}) {
      const bool given = std::any_of(env.begin(), env.end(),
                                     [&](const std::string& e) { return e.starts_with(name); });
      if (!given) request.extra_env.push_back(name == "TS_LOG_LEVEL=" ? name + "info" : name);
    }
    pid_ = tt::detail::spawn_process(request);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      (void)tt::detail::wait_child(pid_, std::chrono::steady_clock::now() + 5s);
    }
  }
  std::string output() const {
    return tt::detail::file_size_or_zero(log_) > 0 ? tt::detail::read_text_file(log_) : "";
  }
  void signal(int sig) const { ::kill(pid_, sig); }
  /// The exit code (-1 when killed or not exited within `timeout`).
  int wait(std::chrono::milliseconds timeout) {
    auto status = tt::detail::wait_child(pid_, std::chrono::steady_clock::now() + timeout);
    if (!status) {
      ADD_FAILURE() << "child still running after " << timeout.count() << " ms: killed";
      ::kill(pid_, SIGKILL);
      status = tt::detail::wait_child(pid_, std::chrono::steady_clock::now() + 5s);
    }
    pid_ = -1;
    return status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
};

struct ToolRun {
  int code = -1;
  std::string output;
};

ToolRun run(const std::string& program, const std::vector<std::string>& args,
            const std::vector<std::string>& env = {}, std::chrono::milliseconds timeout = 20s) {
  Child child(program, args, env);
  ToolRun r;
  r.code = child.wait(timeout);
  r.output = child.output();
  return r;
}

/// Unreachable servers: a run that gets past its settings would fail to connect, not hang on.
const std::vector<std::string> kNowhere = {"TS_POSTGRES_DSN=host=127.0.0.1 port=1",
                                           "TS_REDIS_URL=redis://127.0.0.1:1"};

std::vector<std::string> with(std::vector<std::string> env, const std::vector<std::string>& more) {
  env.insert(env.end(), more.begin(), more.end());
  return env;
}

void expect_config_error(const ToolRun& r, const std::string& mentions, const std::string& what) {
  EXPECT_EQ(r.code, 2) << what << ": " << r.output;
  EXPECT_THAT(r.output, HasSubstr("configuration error")) << what;
  EXPECT_THAT(r.output, HasSubstr(mentions)) << what << ": " << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << what << ": " << r.output;
}

TEST(ServicesConfigCli, EveryBinaryPrintsItsVersion) {
  for (const Program& p : kPrograms) {
    // Neither the environment nor a broken file is read for --version.
    const ToolRun r =
        run(p.path, {"--version", "--config=/nonexistent.toml"}, {"TS_POSTGRES_POOL_SIZE=broken"});
    EXPECT_EQ(r.code, 0) << p.name << ": " << r.output;
    EXPECT_EQ(r.output, std::string(p.name) + " " + std::string(trading_shared::kVersion) + "\n");
  }
}

TEST(ServicesConfigCli, AServicesOwnSettingsAreNamespacedTheSharedOnesAreNot) {
  // TS_BATCH is no longer read (another service's batch must not leak in): the recorder
  // gets past --batch and stops at its own TS_RECORDER_MAX_DELIVERIES.
  expect_config_error(
      run(TS_RECORDER, {}, with(kNowhere, {"TS_BATCH=0", "TS_RECORDER_MAX_DELIVERIES=0"})),
      "--max-deliveries", "TS_BATCH ignored");
  expect_config_error(run(TS_RECORDER, {}, with(kNowhere, {"TS_RECORDER_BATCH=0"})), "--batch",
                      "TS_RECORDER_BATCH");
  expect_config_error(run(TS_EXECUTOR, {}, with(kNowhere, {"TS_EXECUTOR_BATCH=0"})), "--batch",
                      "TS_EXECUTOR_BATCH");
  expect_config_error(run(TS_RECEIVER, {}, with(kNowhere, {"TS_RECEIVER_SYMBOLS=bad-symbol"})),
                      "--symbols", "TS_RECEIVER_SYMBOLS");
  expect_config_error(run(TS_JANITOR, {}, with(kNowhere, {"TS_JANITOR_DELETE_BATCH=0"})),
                      "--delete-batch", "TS_JANITOR_DELETE_BATCH");
  // The shared tables keep TS_*.
  expect_config_error(run(TS_RECORDER, {}, with(kNowhere, {"TS_POSTGRES_POOL_SIZE=0"})),
                      "--postgres-pool-size", "TS_POSTGRES_POOL_SIZE");
  // The TOML file of a service is named by its own variable.
  const std::string toml = write_file("batch = 0\n");
  expect_config_error(run(TS_RECORDER, {}, with(kNowhere, {"TS_RECORDER_CONFIG=" + toml})),
                      "--batch", "TS_RECORDER_CONFIG");
  for (const Program& p : kPrograms) {
    const ToolRun help = run(p.path, {"--help"});
    EXPECT_EQ(help.code, 0) << p.name;
    const std::string name = p.name;
    if (name == "ts-feed-sim") continue;  // no client of its own
    EXPECT_THAT(help.output, HasSubstr("env: TS_REDIS_URL or TS_REDIS_URL_FILE")) << p.name;
    if (name != "ts-receiver") {
      EXPECT_THAT(help.output, HasSubstr("env: TS_POSTGRES_DSN or TS_POSTGRES_DSN_FILE")) << p.name;
    }
  }
}

TEST(ServicesConfigCli, SecretsAreReadFromFiles) {
  auto& servers = tt::Servers::instance();
  const std::string dsn = servers.postgres_dsn(servers.create_database("config_cli_secret"));
  const std::string dsn_file = write_file(dsn + "\n");
  const ToolRun migrated = run(TS_TSCTL, {"migrate"}, {"TS_POSTGRES_DSN_FILE=" + dsn_file}, 60s);
  EXPECT_EQ(migrated.code, 0) << migrated.output;
  EXPECT_THAT(migrated.output, HasSubstr("schema at version"));
  const ToolRun by_flag = run(TS_TSCTL, {"migrate", "--postgres-dsn-file", dsn_file}, {}, 60s);
  EXPECT_EQ(by_flag.code, 0) << by_flag.output;

  expect_config_error(run(TS_RECORDER, {}, {"TS_POSTGRES_DSN_FILE=/nonexistent/dsn"}),
                      "secret file /nonexistent/dsn (from environment variable "
                      "TS_POSTGRES_DSN_FILE): cannot open",
                      "missing secret file");
  const ToolRun both =
      run(TS_RECORDER, {"--postgres-dsn-file", dsn_file},
          {"TS_POSTGRES_DSN=host=x password=hunter2", "TS_POSTGRES_DSN_FILE=" + dsn_file});
  expect_config_error(both, "give either TS_POSTGRES_DSN or TS_POSTGRES_DSN_FILE", "both");
  EXPECT_THAT(both.output, Not(HasSubstr("hunter2")));
}

TEST(ServicesConfigCli, TheFirstLogLineNamesTheVersionAndNoSecret) {
  auto& servers = tt::Servers::instance();
  const std::string key_file = write_file("rest-key-never-logged\n");
  // The receiver's REST API key is a secret (it was logged in clear before issue 18).
  Child receiver(TS_RECEIVER,
                 {"--feed-url", "ws://127.0.0.1:1/ws", "--rest-api-key-file", key_file,
                  "--admin-listen", "127.0.0.1:0"},
                 {"TS_REDIS_URL=" + servers.redis_url() + "/9"});
  const std::string first =
      std::string("ts-receiver ") + std::string(trading_shared::kVersion) + " starting: ";
  EXPECT_TRUE(
      tt::poll_until([&] { return receiver.output().find(first) != std::string::npos; }, 15s))
      << receiver.output();
  receiver.signal(SIGTERM);
  EXPECT_EQ(receiver.wait(30s), 0) << receiver.output();
  const std::string log = receiver.output();
  EXPECT_THAT(log, Not(HasSubstr("rest-key-never-logged")));
  EXPECT_THAT(log, HasSubstr("rest.api_key=***"));
  EXPECT_THAT(log, HasSubstr("admin.listen=127.0.0.1:0"));
  // The first line of the service's log is that one.
  EXPECT_THAT(log.substr(0, log.find('\n')), HasSubstr(first)) << log;
}

TEST(ServicesConfigCli, DaemonsTakeAnAdminEndpointAndCheckIt) {
  const std::vector<std::pair<const char*, const char*>> daemons = {
      {TS_RECEIVER, "TS_RECEIVER_ADMIN_LISTEN"},
      {TS_RECORDER, "TS_RECORDER_ADMIN_LISTEN"},
      {TS_EXECUTOR, "TS_EXECUTOR_ADMIN_LISTEN"}};
  for (const auto& [path, var] : daemons) {
    const ToolRun help = run(path, {"--help"});
    EXPECT_THAT(help.output, HasSubstr("--admin-listen TEXT")) << path;
    EXPECT_THAT(help.output, HasSubstr(std::string("env: ") + var + " | file: admin.listen"));
    EXPECT_THAT(help.output, HasSubstr("--admin-check-interval DURATION")) << path;
    expect_config_error(run(path, {"--admin-listen", "localhost"}, kNowhere), "--admin-listen",
                        path);
    expect_config_error(run(path, {}, with(kNowhere, {std::string(var) + "=127.0.0.1:99999"})),
                        "--admin-listen", var);
    expect_config_error(run(path, {"--admin-check-interval", "0"}, kNowhere),
                        "--admin-check-interval", path);
  }
}

TEST(ServicesConfigCli, ClientSettingsAreCheckedAtStartNamingTheirFlags) {
  expect_config_error(run(TS_RECORDER, {"--postgres-statement-cache-size", "8"}, kNowhere),
                      "--postgres-statement-cache-size needs "
                      "--postgres-pgbouncer-transaction-mode=false",
                      "statement cache behind PgBouncer");
  expect_config_error(run(TS_EXECUTOR, {"--redis-breaker-failure-rate", "2"}, kNowhere),
                      "--redis-breaker-failure-rate", "breaker rate");
  expect_config_error(run(TS_JANITOR, {"--postgres-acquire-timeout", "0"}, kNowhere),
                      "--postgres-acquire-timeout", "acquire timeout");
  // A close timeout the stop budget cannot hold is refused (F54), naming the flag.
  expect_config_error(run(TS_RECORDER, {"--postgres-close-timeout", "30s"}, kNowhere),
                      "--postgres-close-timeout", "close timeout vs budget");
}

}  // namespace
