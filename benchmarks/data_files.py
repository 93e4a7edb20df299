"""Your own files stream through ``streamrec produce`` with flat memory.

Generates e-commerce CSVs of the ``event_time,event_type,product_id,...,user_id,
user_session`` layout (one bad row in 10,000), then publishes each with
``streamrec produce FILE --preset ecommerce`` to an embedded stack, in a fresh process per
file, and reports that process's peak RSS, its time and its rate. Memory must not grow
with the file: the peak at N rows is compared with the peak at N / 10, side by side.

    .venv/bin/python benchmarks/data_files.py --rows 5000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.stack import Stack, free_port  # noqa: E402
from streamrec.kernel.settings import settings_env  # noqa: E402

HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id," \
         "user_session\n"
TYPES = ("view",) * 14 + ("cart",) * 4 + ("remove_from_cart", "purchase")
# runs the CLI, then reports the process's own peak RSS
PRODUCE = ("import resource, sys\n"
           "from streamrec.app.cli import main\n"
           "code = main(sys.argv[1:])\n"
           "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
           " file=sys.stderr)\n"
           "sys.exit(code)\n")


def write_csv(path: Path, rows: int, seed: int = 1) -> int:
    """``rows`` data rows, written as they are made; returns the bad rows written."""
    rng = random.Random(seed)
    start = int(datetime(2019, 10, 1, tzinfo=UTC).timestamp())
    bad = 0
    with path.open("w") as fh:
        fh.write(HEADER)
        lines = []
        for k in range(rows):
            ts = datetime.fromtimestamp(start + k // 20, UTC).strftime("%Y-%m-%d %H:%M:%S")
            user = rng.randrange(200_000)
            if k % 10_000 == 9_999:
                lines.append(f"{ts} UTC,view,{rng.randrange(50_000)},1,,,1.0,,\n")  # no user
                bad += 1
            else:
                lines.append(f"{ts} UTC,{rng.choice(TYPES)},{rng.randrange(50_000)},"
                             f"2053013555631882655,electronics.smartphone,acme,"
                             f"{rng.randrange(1, 900)}.99,{user},s-{user}-{k // 72_000}\n")
            if len(lines) >= 10_000:
                fh.writelines(lines)
                lines.clear()
        fh.writelines(lines)
    return bad


def produce(path: Path, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PRODUCE, "produce", str(path), "--preset",
                           "ecommerce", "--quiet"], env=env, capture_output=True, text=True,
                          check=False, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"produce failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak_kb = int(next(line.split()[1] for line in done.stderr.splitlines()
                       if line.startswith("PEAK_RSS_KB")))
    published = int(done.stdout.split("published ")[1].split()[0])
    bad = int(done.stderr.split(" bad row(s)")[0].rsplit(" ", 1)[1]) \
        if " bad row(s)" in done.stderr else 0
    return {"published": published, "bad_rows_reported": bad, "seconds": round(seconds, 1),
            "events_per_s": round(published / seconds), "peak_rss_mb": round(peak_kb / 1024, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=5_000_000)
    p.add_argument("--out", default="out/data_files")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="streamrec-files-"))
    stack = Stack(work / "stack")
    stack.up(kafka_port=free_port(), redis_port=free_port())
    try:
        env = dict(os.environ, PYTHONPATH=str(ROOT), **settings_env({
            "kafka": {"bootstrap": f"127.0.0.1:{stack.service('kafka').port}"},
            "topics": {"view": "files.view", "click": "files.click",
                       "purchase": "files.purchase"}}))
        runs = []
        for rows in (args.rows // 10, args.rows):
            path = work / f"events-{rows}.csv"
            written_bad = write_csv(path, rows)
            size_mb = path.stat().st_size / 2**20
            row = {"rows": rows, "file_mb": round(size_mb, 1), "bad_rows_written": written_bad,
                   **produce(path, env)}
            path.unlink()
            runs.append(row)
            print(f"{rows:>9,} rows ({size_mb:,.0f} MB): published {row['published']:,}, bad "
                  f"rows reported {row['bad_rows_reported']} of {written_bad}, "
                  f"{row['seconds']:.0f} s ({row['events_per_s']:,}/s), peak RSS "
                  f"{row['peak_rss_mb']:.0f} MB", flush=True)
    finally:
        stack.down()
    small, large = runs
    result = {"runs": runs, "peak_rss_ratio_large_to_small":
              round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
              "python": sys.version.split()[0]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_files.json").write_text(json.dumps(result, indent=2))
    print(f"peak RSS at {large['rows']:,} rows / at {small['rows']:,}: "
          f"{result['peak_rss_ratio_large_to_small']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
