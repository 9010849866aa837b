"""Shared pieces of the redis-py anchors (R1p, R2p): arguments, the timed loop, reporting.

Every anchor runs its workers for a warm-up, then counts completed operations for a fixed
duration (as ts_redis_bench does) and prints `BENCH <name> <value> <unit>`."""
import argparse
import asyncio
import time

import uvloop

# redis-benchmark's GET reads a 3-byte value (its default -d 3): ours and the anchors do too.
VALUE = b"xxx"


def arguments(name, **extra):
    """--url, --name, --seconds, --warmup, plus `extra` integer options (name=default)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="redis://host:port")
    parser.add_argument("--name", default=name)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    for key, default in extra.items():
        parser.add_argument("--" + key.replace("_", "-"), type=type(default), default=default)
    return parser.parse_args()


async def timed_workers(make_worker, tasks, warmup, seconds, between=None):
    """Runs `tasks` workers, each `make_worker(index, state)` looping while not state["stop"]
    and adding what it completed to state["count"] while state["measuring"]. `between` (a
    coroutine function) runs after the warm-up, before the clock starts (workers paused).
    Returns (count, elapsed seconds) of the measured window."""
    state = {"stop": False, "measuring": False, "count": 0}
    if between is not None:
        # Warm-up as its own phase, so that `between` runs with no worker in flight.
        state_warm = {"stop": False, "measuring": False, "count": 0}
        warm = [asyncio.create_task(make_worker(i, state_warm)) for i in range(tasks)]
        await asyncio.sleep(warmup)
        state_warm["stop"] = True
        await asyncio.gather(*warm)
        await between()
        workers = [asyncio.create_task(make_worker(i, state)) for i in range(tasks)]
    else:
        workers = [asyncio.create_task(make_worker(i, state)) for i in range(tasks)]
        await asyncio.sleep(warmup)
    state["measuring"] = True
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    state["measuring"] = False
    elapsed = time.perf_counter() - start
    count = state["count"]
    state["stop"] = True
    await asyncio.gather(*workers)
    return count, elapsed


def report(name, count, elapsed, unit):
    print(f"BENCH {name} {count / elapsed:.0f} {unit}", flush=True)


def run(main, args):
    uvloop.install()
    asyncio.run(main(args))
