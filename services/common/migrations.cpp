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

// Version 2: partition creation for a least-privilege recorder (docs/services.md, "What to
// provision"). ts_ensure_tick_partition runs with the rights of its owner, the role that
// applied the migrations and owns ticks (SECURITY DEFINER), so that a recorder role with only
// INSERT on ticks and EXECUTE on the function can create the partition of a day migrate did
// not create in advance; CREATE on the schema stays the owner's. Its search_path is fixed to
// the function's own schema, then pg_temp (last, so that no temporary object can stand in
// for ticks), so that a caller's search_path cannot substitute objects. EXECUTE is revoked
// from PUBLIC: only the roles granted it (the recorder's) and the owner may run it.
constexpr std::string_view kV2 = R"sql(
DO $$
DECLARE
  schema_name text;
BEGIN
  SELECT n.nspname INTO schema_name
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE p.oid = 'ts_ensure_tick_partition(date)'::regprocedure;
  EXECUTE format('ALTER FUNCTION %I.ts_ensure_tick_partition(date) SECURITY DEFINER '
                 'SET search_path = %I, pg_temp', schema_name, schema_name);
END $$;

REVOKE ALL ON FUNCTION ts_ensure_tick_partition(date) FROM PUBLIC;
)sql";

constexpr std::array kMigrations{
    Migration{1, "ticks, orders, fills", kV1},
    Migration{2, "ts_ensure_tick_partition runs as its owner", kV2},
};

}  // namespace

std::span<const Migration> migrations() {
  return kMigrations;
}

}  // namespace trading_shared::services
