"""P4 anchor: asyncpg executemany of an idempotent INSERT ... ON CONFLICT DO NOTHING of 100 k
tick rows into ticks_ins (primary key (symbol, trade_id)), truncated before each run.
asyncpg >= 0.22 runs executemany as one pipelined, atomic batch. Prints DETAIL and BENCH."""
import asyncio
import time

import asyncpg
import uvloop

import ticks

SQL = ("INSERT INTO ticks_ins (symbol, trade_id, ts, price, qty) VALUES ($1, $2, $3, $4, $5) "
       "ON CONFLICT DO NOTHING")


async def main(args):
    rows = ticks.ticks_with_id(args.rows)
    conn = await asyncpg.connect(**ticks.connect_args(args))
    await conn.execute("CREATE TABLE IF NOT EXISTS ticks_ins (symbol text, trade_id int8, "
                       "ts timestamptz, price float8, qty float8, "
                       "PRIMARY KEY (symbol, trade_id))")
    runs = []
    for _ in range(args.repeat):
        await conn.execute("TRUNCATE ticks_ins")
        start = time.perf_counter()
        await conn.executemany(SQL, rows)
        elapsed = time.perf_counter() - start
        runs.append(args.rows / elapsed)
    count = await conn.fetchval("SELECT count(*) FROM ticks_ins")
    if count != args.rows:
        raise SystemExit(f"asyncpg_insert: ticks_ins holds {count} rows")
    await conn.execute("TRUNCATE ticks_ins")
    await conn.close()
    ticks.report_rows_per_second(args.name, runs)


if __name__ == "__main__":
    args = ticks.bulk_arguments("asyncpg_executemany", 100000)
    uvloop.install()
    asyncio.run(main(args))
