#include "common/migrations.hpp"

#include <array>

namespace trading_shared::services {

namespace {

// Version 1: ticks (partitioned by day), orders, fills.
// - ticks' primary key is (symbol, trade_id, trade_time): a partitioned table's key must
//   contain the partition key; trade_time is a function of the trade id (the exchange's T),
//   so a redelivered trade hits the same key and `ON CONFLICT DO NOTHING` makes it a no-op.
// - ts_ensure_tick_partition(day) creates the day's partition if missing, tolerating a
//   concurrent creator; ts-recorder calls it once per new day it sees.
// - orders holds exactly one row per client order id, in a terminal state.
constexpr std::string_view kV1 = R"sql(
CREATE TABLE ticks (
  symbol          text        NOT NULL,
  trade_id        bigint      NOT NULL,
  price           numeric     NOT NULL,
  qty             numeric     NOT NULL,
  trade_time      timestamptz NOT NULL,
  event_time      timestamptz,
  buyer_is_maker  boolean     NOT NULL,
  received_at     timestamptz,
  recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (symbol, trade_id, trade_time)
) PARTITION BY RANGE (trade_time);

CREATE FUNCTION ts_ensure_tick_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  name text := format('ticks_%s', to_char(day, 'YYYYMMDD'));
BEGIN
  IF to_regclass(name) IS NOT NULL THEN
    RETURN false;
  END IF;
  EXECUTE format('CREATE TABLE %I PARTITION OF ticks FOR VALUES FROM (%L) TO (%L)',
                 name, day::timestamptz, (day + 1)::timestamptz);
  RETURN true;
EXCEPTION WHEN duplicate_table OR unique_violation THEN
  RETURN false;
END $$;

SELECT ts_ensure_tick_partition((current_date + d)::date) FROM generate_series(-1, 2) AS d;

CREATE TABLE orders (
  client_order_id text        PRIMARY KEY,
  symbol          text        NOT NULL,
  side            text        NOT NULL,
  type            text        NOT NULL,
  qty             numeric,
  limit_price     numeric,
  status          text        NOT NULL CHECK (status IN ('filled', 'rejected')),
  reject_reason   text,
  submitted_at    timestamptz,
  decided_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
  CHECK ((status = 'rejected') = (reject_reason IS NOT NULL))
);

CREATE TABLE fills (
  fill_id         bigserial   PRIMARY KEY,
  client_order_id text        NOT NULL UNIQUE REFERENCES orders (client_order_id),
  symbol          text        NOT NULL,
  side            text        NOT NULL,
  qty             numeric     NOT NULL,
  price           numeric     NOT NULL,
  filled_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
)sql";

constexpr std::array kMigrations{
    Migration{1, "ticks, orders, fills", kV1},
};

}  // namespace

std::span<const Migration> migrations() {
  return kMigrations;
}

}  // namespace trading_shared::services
