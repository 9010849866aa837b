"""R2p anchor: redis-py asyncio (uvloop), 50 tasks doing GET of one key (3-byte value) through
a 50-connection pool. Prints `BENCH <name> <ops/s> ops/s`."""
import redis.asyncio as aioredis

import redis_anchor


async def main(args):
    pool = aioredis.ConnectionPool.from_url(args.url, max_connections=args.pool)
    client = aioredis.Redis(connection_pool=pool)
    key = args.key
    await client.set(key, redis_anchor.VALUE)

    async def worker(_index, state):
        while not state["stop"]:
            value = await client.get(key)
            if value != redis_anchor.VALUE:
                raise SystemExit(f"redispy_get_pool: GET returned {value!r}")
            if state["measuring"]:
                state["count"] += 1

    count, elapsed = await redis_anchor.timed_workers(worker, args.tasks, args.warmup,
                                                      args.seconds)
    await client.delete(key)
    await client.close()
    await pool.disconnect()
    redis_anchor.report(args.name, count, elapsed, "ops/s")


if __name__ == "__main__":
    ARGS = redis_anchor.arguments("redispy_get_pool", tasks=50, pool=50, key="bench:r2:redispy")
    redis_anchor.run(main, ARGS)
