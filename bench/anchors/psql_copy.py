"""P3 secondary anchor: `psql -c "\\copy ticks_copy FROM file CSV"` of the same 1 M tick rows
(ticks.py) as a CSV file; wall time of the psql process (its connection set-up included, a
few ms). Prints DETAIL and BENCH (median)."""
import os
import subprocess
import tempfile
import time

import ticks


def psql(args, sql, timeout=120):
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", args.host, "-p",
                    str(args.port), "-U", args.user, "-d", args.database, "-c", sql],
                   check=True, timeout=timeout, stdout=subprocess.DEVNULL)


def main(args):
    with tempfile.TemporaryDirectory(prefix="ts-bench-csv-") as directory:
        path = os.path.join(directory, "ticks.csv")
        with open(path, "w") as out:
            for ts, symbol, price, qty in ticks.ticks(args.rows):
                out.write(f"{ts.isoformat()},{symbol},{price!r},{qty!r}\n")
        psql(args, "CREATE TABLE IF NOT EXISTS ticks_copy "
                   "(ts timestamptz, symbol text, price float8, qty float8)")
        runs = []
        for _ in range(args.repeat):
            psql(args, "TRUNCATE ticks_copy")
            start = time.perf_counter()
            psql(args, f"\\copy ticks_copy (ts, symbol, price, qty) FROM '{path}' CSV")
            runs.append(args.rows / (time.perf_counter() - start))
        psql(args, "TRUNCATE ticks_copy")
    ticks.report_rows_per_second(args.name, runs)


if __name__ == "__main__":
    args = ticks.bulk_arguments("psql_copy_csv", 1000000)
    main(args)
