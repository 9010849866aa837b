"""P3 anchor: asyncpg copy_records_to_table of 1 M tick rows (the rows of ticks.py), into
ticks_copy, truncated before each run. Prints DETAIL (every run) and BENCH (median)."""
import argparse
import asyncio
import time

import asyncpg
import uvloop

import ticks

COLUMNS = ["ts", "symbol", "price", "qty"]


async def main(args):
    rows = ticks.ticks(args.rows)
    conn = await asyncpg.connect(**ticks.connect_args(args))
    await conn.execute("CREATE TABLE IF NOT EXISTS ticks_copy "
                       "(ts timestamptz, symbol text, price float8, qty float8)")
    runs = []
    for _ in range(args.repeat):
        await conn.execute("TRUNCATE ticks_copy")
        start = time.perf_counter()
        status = await conn.copy_records_to_table("ticks_copy", records=rows, columns=COLUMNS)
        elapsed = time.perf_counter() - start
        if status != f"COPY {args.rows}":
            raise SystemExit(f"asyncpg_copy: unexpected status {status!r}")
        runs.append(args.rows / elapsed)
    count = await conn.fetchval("SELECT count(*) FROM ticks_copy")
    if count != args.rows:
        raise SystemExit(f"asyncpg_copy: ticks_copy holds {count} rows")
    await conn.execute("TRUNCATE ticks_copy")
    await conn.close()
    print(f"DETAIL {args.name} runs: {' '.join(f'{r:.0f}' for r in runs)} rows/s "
          "(median reported)")
    print(f"BENCH {args.name} {ticks.median(runs):.0f} rows/s", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    ticks.add_connection_arguments(parser)
    parser.add_argument("--name", default="asyncpg_copy_records")
    parser.add_argument("--rows", type=int, default=1000000)
    parser.add_argument("--repeat", type=int, default=3)
    uvloop.install()
    asyncio.run(main(parser.parse_args()))
