// The usage block of docs/postgres.md as a program: every call of that block, against a database
// given as the first argument (a libpq connection string), in tables of its own
// (example_ticks, example_orders, example_fills; created if missing).
//
//   postgres_usage 'host=127.0.0.1 port=5432 dbname=trading user=app'
#include <trading_shared/pg/postgres_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace asio = boost::asio;
namespace core = trading_shared::core;
namespace pg = trading_shared::pg;

namespace {

void use(const std::string& symbol, double price) {
  std::cout << symbol << ' ' << price << '\n';
}

asio::awaitable<void> usage(asio::io_context& io, std::string dsn) {
  pg::PostgresConfig config;
  config.dsn = dsn;  // or postgresql://...
  pg::PostgresClient client(io.get_executor(), config);
  co_await client.start();  // services: ResourceScope does start/close

  co_await client.execute(
      "CREATE TABLE IF NOT EXISTS example_ticks (ts timestamptz, symbol text, price float8, "
      "qty float8, PRIMARY KEY (symbol, ts))");
  co_await client.execute(
      "CREATE TABLE IF NOT EXISTS example_orders (id int8 PRIMARY KEY, symbol text)");
  co_await client.execute("CREATE TABLE IF NOT EXISTS example_fills (order_id int8, qty float8)");

  std::int64_t n = co_await client.query_value<std::int64_t>("SELECT count(*) FROM example_ticks");
  pg::Result rows =
      co_await client.query("SELECT symbol, price FROM example_ticks WHERE price > $1", 10.0);
  for (pg::Row row : rows) use(row.get<std::string>("symbol"), row.get<double>(1));
  const std::int64_t id = n + 1;
  std::optional<pg::OwnedRow> one =
      co_await client.query_one("SELECT id, symbol FROM example_orders WHERE id = $1", id);
  std::int64_t changed =
      co_await client.execute("UPDATE example_orders SET symbol = symbol WHERE id = $1", id);
  std::cout << n << " ticks, order " << id << (one ? " found" : " not found") << ", " << changed
            << " updated\n";

  // A transaction: BEGIN ... COMMIT on a connection of its own. (docs/postgres.md passes the
  // options as `{.isolation = ..., .idempotent = ...}`; a local here: GCC 12 cannot keep a braced
  // temporary inside a co_await expression, and -Wextra warns about the members left out.)
  pg::TransactionOptions serializable;
  serializable.isolation = pg::IsolationLevel::serializable;
  serializable.idempotent = core::Idempotent::yes;
  co_await client.transaction(
      [&](pg::Transaction& tx) -> asio::awaitable<void> {
        co_await tx.execute(
            "INSERT INTO example_orders VALUES ($1, 'BTCUSDT') ON CONFLICT DO NOTHING", id);
        co_await tx.execute("INSERT INTO example_fills VALUES ($1, 0.5)", id);
      },
      serializable);

  // Retries in exactly one place, with the idempotency the caller states.
  auto v = co_await client.execute_resiliently(
      [](pg::PostgresClient& c) {
        return c.query_value<std::int64_t>("SELECT count(*) FROM example_fills");
      },
      core::Idempotent::yes);
  std::cout << v << " fills\n";

  // Bulk paths.
  using Tick = std::tuple<std::chrono::system_clock::time_point, std::string, double, double>;
  const auto now =
      std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
  std::vector<Tick> rows_of_tuples{{now, "BTCUSDT", 64000.5, 0.1}, {now, "ETHUSDT", 3400.25, 2.0}};
  const std::vector<std::string_view> columns{"ts", "symbol", "price", "qty"};
  co_await client.copy_in("example_ticks", columns, rows_of_tuples);  // COPY BINARY
  // Idempotent bulk insert: COPY into a staging table, then merge, in one transaction.
  co_await client.transaction([&](pg::Transaction& tx) -> asio::awaitable<void> {
    co_await tx.execute("CREATE TEMP TABLE stage (LIKE example_ticks) ON COMMIT DROP");
    co_await tx.copy_in("stage", columns, rows_of_tuples);
    co_await tx.execute("INSERT INTO example_ticks SELECT * FROM stage ON CONFLICT DO NOTHING");
  });
  pg::Pipeline batch;
  const std::int64_t a = id, b = id + 1;
  batch.add("INSERT INTO example_orders VALUES ($1, 'A') ON CONFLICT DO NOTHING", a)
      .add("INSERT INTO example_orders VALUES ($1, 'B') ON CONFLICT DO NOTHING", b);
  auto results = co_await client.pipeline(batch);  // one round trip
  std::cout << results.size() << " statements in one round trip\n";

  co_await client.close();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: postgres_usage <libpq connection string>\n";
    return 2;
  }
  asio::io_context io;
  std::exception_ptr failure;
  asio::co_spawn(io, usage(io, argv[1]), [&](std::exception_ptr e) { failure = e; });
  io.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      std::cerr << "postgres_usage: " << e.what() << '\n';
      return 1;
    }
  }
  return 0;
}
