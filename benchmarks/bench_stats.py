"""Benchmark `bltdata stats` on many small shards (default: 1,000 shards of 20 documents).

Generates a synthetic shard directory (with stored entropies) once, then times
`compute_stats` in-process (with and without --by-source) and the whole CLI command
`bltdata stats DIR --json` in a fresh process (interpreter start and imports included).

    python benchmarks/bench_stats.py                       # 1,000 shards in a temp dir
    python benchmarks/bench_stats.py --dir /tmp/bench_shards --shards 1000 --runs 3
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(directory: Path, shards: int, docs_per_shard: int) -> float:
    from bltdata.inspect.synthetic import write_synthetic_dir

    start = time.perf_counter()
    write_synthetic_dir(directory, shards=shards, docs_per_shard=docs_per_shard, words=(5, 60), sources=8,
                        row_group_bytes=1 << 20)
    return time.perf_counter() - start


def time_library(directory: Path, runs: int, by_source: bool) -> tuple[float, dict]:
    from bltdata.inspect.locate import list_shards
    from bltdata.inspect.stats import compute_stats

    best, result = float("inf"), {}
    for _ in range(runs):
        start = time.perf_counter()
        result = compute_stats(list_shards(directory), by_source=by_source)
        best = min(best, time.perf_counter() - start)
    return best, result


def time_cli(directory: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from bltdata.cli.main import main; main()", "stats", str(directory),
                    "--json"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="Shard directory to use (generated there if it has no manifest).")
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--docs-per-shard", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    tmp = None if args.dir else Path(tempfile.mkdtemp(prefix="bench_stats_"))
    directory = args.dir or tmp / "shards"
    try:
        generated = None
        if not (directory / "manifest.json").exists():
            generated = generate(directory, args.shards, args.docs_per_shard)
        stats_s, result = time_library(directory, args.runs, by_source=False)
        by_source_s, _ = time_library(directory, args.runs, by_source=True)
        report = {"shards": result["shards"], "documents": result["documents"], "bytes": result["bytes"],
                  "entropy_values": result["entropies"]["count"] if result["entropies"] else 0,
                  "generate_s": generated, "stats_s": round(stats_s, 3), "stats_by_source_s": round(by_source_s, 3),
                  "cli_stats_s": round(time_cli(directory), 3)}
        print(json.dumps(report, indent=1))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
