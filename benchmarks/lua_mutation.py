"""Mutation testing of the state script (streamrec/state/apply_batch.lua), which Python mutation
tools do not reach: each mutant changes one operator, constant or call on one line of the
script's order, window, transition and watermark logic, in a scratch copy of the project,
and the state tests run against it (a real Redis and broker, started by their fixtures).
A mutant is killed when a test fails. Prints each survivor and writes JSON.

    python benchmarks/lua_mutation.py --out out/lua_mutation
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path("streamrec/state/apply_batch.lua")
TESTS = ["tests/integration/test_order_independence.py",
         "tests/integration/test_state_script.py"]
SWAPS = [(" < ", " <= "), (" <= ", " < "), (" > ", " >= "), (" >= ", " > "),
         (" == ", " ~= "), (" ~= ", " == "), (" + 1", " - 1"), (" - 1", " + 1"),
         (" and ", " or "), (" or ", " and "), ("-1)", "1)"), ("math.max", "math.min"),
         ("math.min", "math.max")]
# statements whose removal is a mutant (a call that writes, counts or corrects)
DROPPED = re.compile(r"^\s*(pair\(|add_transition\(|redis\.call\('(SET|SADD|ZREM|HDEL|HSET)'|"
                     r"evict\(|late = late \+ 1|u\.dirty = true|table\.insert)")


def mutants(lines: list[str], first: int, last: int) -> list[tuple[int, str, str]]:
    """(line number, description, mutated line) for lines first..last (1-based)."""
    out = []
    for number in range(first, last + 1):
        line = lines[number - 1]
        code = line.split("--", 1)[0]
        if not code.strip():
            continue
        for old, new in SWAPS:
            start = code.find(old)
            while start >= 0:
                mutated = line[:start] + new + line[start + len(old):]
                out.append((number, f"{old.strip()!r} -> {new.strip()!r}", mutated))
                start = code.find(old, start + 1)
        if DROPPED.match(code):
            out.append((number, "statement removed", ""))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="out/lua_mutation")
    p.add_argument("--from-marker", default="-- Each user's events are kept as a window",
                   help="mutate from the line holding this text to the end of the script")
    p.add_argument("--limit", type=int, help="run at most this many mutants")
    p.add_argument("--lines", type=int, nargs="+",
                   help="only the mutants of these script lines (survivors, again)")
    p.add_argument("--grep", help="only the mutants of lines matching this regex")
    args = p.parse_args()
    source = (ROOT / SCRIPT).read_text().splitlines(keepends=True)
    first = next(n for n, line in enumerate(source, 1) if args.from_marker in line)
    todo = [m for m in mutants(source, first, len(source))
            if (not args.lines or m[0] in args.lines)
            and (not args.grep or re.search(args.grep, source[m[0] - 1]))][: args.limit]
    scratch = Path(tempfile.mkdtemp(prefix="streamrec-lua-mutation-"))
    tree = scratch / "p"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".git", ".venv", "out", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache"))
    results: list[dict[str, object]] = []
    survivors: list[dict[str, object]] = []
    try:
        for k, (number, what, mutated) in enumerate(todo, 1):
            lines = list(source)
            lines[number - 1] = mutated
            (tree / SCRIPT).write_text("".join(lines))
            start = time.monotonic()
            run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p",
                                  "no:cacheprovider", *TESTS], cwd=tree, capture_output=True,
                                 text=True, timeout=600, check=False,
                                 env=dict(os.environ, PYTHONPATH=str(tree)))
            killed = run.returncode != 0
            result: dict[str, object] = {"line": number, "mutation": what, "killed": killed,
                                         "source": source[number - 1].strip(),
                                         "seconds": round(time.monotonic() - start, 1)}
            results.append(result)
            if not killed:
                survivors.append(result)
            print(f"[{k}/{len(todo)}] line {number} {what}: "
                  f"{'killed' if killed else 'SURVIVED'}  {source[number - 1].strip()}",
                  flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    n_killed = len(results) - len(survivors)
    summary = {"mutants": len(results), "killed": n_killed,
               "kill_rate": round(n_killed / max(1, len(results)), 3),
               "survivors": survivors, "results": results}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lua_mutation.json").write_text(json.dumps(summary, indent=2))
    print(f"killed {n_killed} of {len(results)} ({n_killed / max(1, len(results)):.1%}) -> "
          f"{out / 'lua_mutation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
