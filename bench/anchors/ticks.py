"""Tick rows for the PostgreSQL bulk benchmarks (P3, P4).

The same formula as `tick_*` in bench/pg_bench.cpp, so that ours and the anchors load
identical data: row i is (2024-01-01T00:00:00Z + i microseconds, SYMBOLS[i % 8],
100 + (i % 10000) * 0.01, 0.001 * (1 + i % 1000)), trade_id = i.
"""
import argparse
import datetime

SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "ADA-USD", "DOGE-USD", "AVAX-USD",
           "DOT-USD")
BASE = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def tick(i):
    """(ts, symbol, price, qty) of row i."""
    return (BASE + datetime.timedelta(microseconds=i), SYMBOLS[i % 8],
            100.0 + (i % 10000) * 0.01, 0.001 * (1 + i % 1000))


def ticks(n):
    return [tick(i) for i in range(n)]


def ticks_with_id(n):
    """(symbol, trade_id, ts, price, qty) rows for the insert benchmark."""
    out = []
    for i in range(n):
        ts, symbol, price, qty = tick(i)
        out.append((symbol, i, ts, price, qty))
    return out


def median(values):
    return sorted(values)[len(values) // 2]


def report_rows_per_second(name, runs):
    """The DETAIL and BENCH lines of a bulk figure (median of the runs)."""
    print(f"DETAIL {name} runs: {' '.join(f'{r:.0f}' for r in runs)} rows/s "
          "(median reported)")
    print(f"BENCH {name} {median(runs):.0f} rows/s", flush=True)


def bulk_arguments(name, rows):
    """Arguments shared by the bulk anchors: connection, --name, --rows, --repeat."""
    parser = argparse.ArgumentParser()
    add_connection_arguments(parser)
    parser.add_argument("--name", default=name)
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args()


def connect_args(args):
    return dict(host=args.host, port=args.port, user=args.user, database=args.database)


def add_connection_arguments(parser):
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--database", default="bench")
