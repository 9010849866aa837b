"""R1p anchor: redis-py asyncio (uvloop), one connection, pipeline(transaction=False) of 1000
XADD <stream> * f v (redis-benchmark's `XADD s '*' f v`), one pipeline in flight at a time.
The stream is deleted after the warm-up and at the end. Prints `BENCH <name> <entries/s>
entries/s`."""
import redis.asyncio as aioredis

import redis_anchor


async def main(args):
    client = aioredis.from_url(args.url, max_connections=1)
    stream = args.stream

    async def worker(_index, state):
        async with client.pipeline(transaction=False) as pipe:
            while not state["stop"]:
                for _ in range(args.batch):
                    pipe.xadd(stream, {"f": "v"})
                ids = await pipe.execute()
                if len(ids) != args.batch:
                    raise SystemExit(f"redispy_xadd_pipeline: {len(ids)} replies")
                if state["measuring"]:
                    state["count"] += len(ids)

    async def reset():
        await client.delete(stream)

    await reset()
    count, elapsed = await redis_anchor.timed_workers(worker, 1, args.warmup, args.seconds,
                                                      between=reset)
    length = await client.xlen(stream)
    await reset()
    await client.close()
    await client.connection_pool.disconnect()
    if length < count:
        raise SystemExit(f"redispy_xadd_pipeline: stream holds {length} entries, {count} counted")
    redis_anchor.report(args.name, count, elapsed, "entries/s")


if __name__ == "__main__":
    ARGS = redis_anchor.arguments("redispy_xadd_pipeline", batch=1000,
                                  stream="bench:r1:redispy")
    redis_anchor.run(main, ARGS)
