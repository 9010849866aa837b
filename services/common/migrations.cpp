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

// Version 3: the janitor's work for a least-privilege janitor role (docs/services.md, "What to
// provision"): dropping an old partition of ticks and deleting old rows from one, each through
// a function that runs as its owner (SECURITY DEFINER, search_path pinned to the schema of
// ticks, then pg_temp) and acts on a partition of ticks only: anything else is refused with
// 42501, like a missing privilege. ts_drop_tick_partition drops only a range partition whose
// upper bound is past (never a DEFAULT partition, never today's); it returns false when its
// argument is NULL (the caller's to_regclass found no such table: DROP TABLE IF EXISTS).
// ts_delete_old_ticks deletes at most max_rows rows older than `before` (never in the future)
// by a ctid scan, the janitor's batched DELETE, and returns how many it deleted. EXECUTE is
// revoked from PUBLIC: only the janitor's role (tsctl migrate --roles-create) and the owner.
constexpr std::string_view kV3 = R"sql(
CREATE FUNCTION ts_drop_tick_partition(p regclass) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  upper_bound timestamptz;
BEGIN
  IF p IS NULL THEN
    RETURN false;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = p AND inhparent = 'ticks'::regclass) THEN
    RAISE EXCEPTION 'ts_drop_tick_partition: % is not a partition of ticks', p
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  SELECT substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz
    INTO upper_bound FROM pg_class c WHERE c.oid = p;
  IF upper_bound IS NULL OR upper_bound > clock_timestamp() THEN
    RAISE EXCEPTION 'ts_drop_tick_partition: partition % is not entirely in the past', p
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  EXECUTE format('DROP TABLE %s', p);
  RETURN true;
END $$;

CREATE FUNCTION ts_delete_old_ticks(p regclass, before timestamptz, max_rows bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  deleted bigint;
BEGIN
  IF p IS NULL THEN
    RETURN 0;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = p AND inhparent = 'ticks'::regclass) THEN
    RAISE EXCEPTION 'ts_delete_old_ticks: % is not a partition of ticks', p
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF before IS NULL OR before > clock_timestamp() THEN
    RAISE EXCEPTION 'ts_delete_old_ticks: the cut-off % is in the future', before
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  EXECUTE format('DELETE FROM %1$s WHERE ctid = ANY (ARRAY(SELECT ctid FROM %1$s '
                 'WHERE trade_time < $1 LIMIT $2))', p)
    USING before, max_rows;
  GET DIAGNOSTICS deleted = ROW_COUNT;
  RETURN deleted;
END $$;

DO $$
DECLARE
  schema_name text;
BEGIN
  SELECT n.nspname INTO schema_name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid = 'ticks'::regclass;
  EXECUTE format('ALTER FUNCTION ts_drop_tick_partition(regclass) SECURITY DEFINER '
                 'SET search_path = %I, pg_temp', schema_name);
  EXECUTE format('ALTER FUNCTION ts_delete_old_ticks(regclass, timestamptz, bigint) '
                 'SECURITY DEFINER SET search_path = %I, pg_temp', schema_name);
END $$;

REVOKE ALL ON FUNCTION ts_drop_tick_partition(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION ts_delete_old_ticks(regclass, timestamptz, bigint) FROM PUBLIC;
)sql";

constexpr std::array kMigrations{
    Migration{1, "ticks, orders, fills", kV1},
    Migration{2, "ts_ensure_tick_partition runs as its owner", kV2},
    Migration{3, "the janitor's partition functions run as their owner", kV3},
};

}  // namespace

std::span<const Migration> migrations() {
  return kMigrations;
}

}  // namespace trading_shared::services
