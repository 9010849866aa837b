"""P5 anchor workload, run under callgrind by bench/run-bench: one asyncpg connection (uvloop),
a warm-up, then N sequential fetchval("SELECT 1"). The driver runs it with two N and takes
the difference, which removes the start-up costs."""
import argparse
import asyncio

import asyncpg
import uvloop

import ticks


async def main(args):
    conn = await asyncpg.connect(**ticks.connect_args(args))
    total = 0
    for _ in range(args.warmup_queries):
        total += await conn.fetchval("SELECT 1")
    for _ in range(args.queries):
        total += await conn.fetchval("SELECT 1")
    await conn.close()
    if total != args.warmup_queries + args.queries:
        raise SystemExit("asyncpg_fetchval_loop: SELECT 1 returned garbage")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    ticks.add_connection_arguments(parser)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--warmup-queries", type=int, default=100)
    uvloop.install()
    asyncio.run(main(parser.parse_args()))
