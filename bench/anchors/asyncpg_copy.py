"""P3 anchor: asyncpg copy_records_to_table of 1 M tick rows (the rows of ticks.py), into
ticks_copy, truncated before each run. Prints DETAIL (every run) and BENCH (median)."""
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
    ticks.report_rows_per_second(args.name, runs)


if __name__ == "__main__":
    args = ticks.bulk_arguments("asyncpg_copy_records", 1000000)
    uvloop.install()
    asyncio.run(main(args))
