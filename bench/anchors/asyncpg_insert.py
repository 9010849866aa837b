"""P4 anchor: asyncpg executemany of an idempotent INSERT ... ON CONFLICT DO NOTHING of 100 k
tick rows into ticks_ins (primary key (symbol, trade_id)), truncated before each run.
asyncpg >= 0.22 runs executemany as one pipelined, atomic batch. Prints DETAIL and BENCH."""
import argparse
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
    print(f"DETAIL {args.name} runs: {' '.join(f'{r:.0f}' for r in runs)} rows/s "
          "(median reported)")
    print(f"BENCH {args.name} {ticks.median(runs):.0f} rows/s", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    ticks.add_connection_arguments(parser)
    parser.add_argument("--name", default="asyncpg_executemany")
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--repeat", type=int, default=3)
    uvloop.install()
    asyncio.run(main(parser.parse_args()))
