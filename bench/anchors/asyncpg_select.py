"""P1a anchor: asyncpg + uvloop, pool min_size=max_size=2, 50 tasks, fetchval of pgbench's
select-only statement with a random aid. Prints `BENCH <name> <queries/s> queries/s`."""
import argparse
import asyncio
import random
import time

import asyncpg
import uvloop

import ticks

SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"


async def main(args):
    pool = await asyncpg.create_pool(min_size=args.pool, max_size=args.pool,
                                     **ticks.connect_args(args))
    accounts = 100000 * args.scale
    state = {"stop": False, "measuring": False, "count": 0}

    async def worker(seed):
        rng = random.Random(seed)
        while not state["stop"]:
            await pool.fetchval(SQL, rng.randint(1, accounts))
            if state["measuring"]:
                state["count"] += 1

    tasks = [asyncio.create_task(worker(i)) for i in range(args.tasks)]
    await asyncio.sleep(args.warmup)
    state["measuring"] = True
    start = time.perf_counter()
    await asyncio.sleep(args.seconds)
    state["measuring"] = False
    elapsed = time.perf_counter() - start
    count = state["count"]
    state["stop"] = True
    await asyncio.gather(*tasks)
    await pool.close()
    print(f"BENCH {args.name} {count / elapsed:.0f} queries/s", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    ticks.add_connection_arguments(parser)
    parser.add_argument("--name", default="asyncpg_pool2_t50")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument("--scale", type=int, default=10)
    uvloop.install()
    asyncio.run(main(parser.parse_args()))
