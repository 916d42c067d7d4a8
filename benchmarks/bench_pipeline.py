"""End-to-end `bltdata patch` throughput beside the bare inference engine, same docs and model.

Builds a corpus of `--mb` MB from the embedded default corpus (repeated with varied ids when
the slice is smaller than asked), then, in one run:
  1. the bare engine: read the documents in Python and `EntropyEngine.score` them;
  2. the Beam pipeline with 1 worker (FnApiRunner), entropy mode, default options;
  3. the Beam pipeline with 2 workers (multi-processing), on the corpus split in 4 files.
Prints bytes/s of each, the pipeline/engine ratio (target ≥ 0.9 at 1 worker), the pipeline's
own time split (the workers' timing counters, as `bltdata patch` prints it) and the 2-worker
speed-up. Engine and pipeline run in the same `--precision` (default: the hardware's). Usage:

    python benchmarks/bench_pipeline.py --mb 20 [--model default|tiny-random|DIR] [--batch-bytes 65536] [--precision bf16]

With `--runner DaskRunner` it instead compares runners on the same corpus: FnApiRunner at 1 and 2
workers beside DaskRunner on LocalClusters of 1 and 2 worker processes (started before the
timed run; start-up printed apart), in model-free `space` mode and with `--model`, checks the
shards are identical, and times many one-document files to give the scheduler overhead per file:

    python benchmarks/bench_pipeline.py --runner DaskRunner --mb 2 --model tiny-random

`tiny-random` is a randomly initialised `tiny` preset (fast enough to push 20 MB through three
runs on a laptop CPU; θ is calibrated to 4.5-byte patches so the patch count is realistic).
The bundled default model scores ~15 kB/s per core, so 20 MB with it takes hours on a CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def build_corpus(directory: Path, total_bytes: int, files: int) -> tuple[list[Path], int]:
    from bltdata.corpus import default_corpus_files

    items = default_corpus_files()
    docs, size, round_ = [], 0, 0
    while size < total_bytes:
        for source, data in items:
            text = data.decode("utf-8")
            docs.append(json.dumps({"id": f"{round_}:{source}", "text": text}))
            size += len(data)
            if size >= total_bytes:
                break
        round_ += 1
    paths = []
    for i in range(files):
        path = directory / f"part-{i}.jsonl"
        path.write_text("\n".join(docs[i::files]) + "\n")
        paths.append(path)
    return paths, size


def materialize_model(name: str, directory: Path) -> str:
    if name != "tiny-random":
        return name
    import torch

    from bltdata.entropy.checkpoint import save_checkpoint
    from bltdata.entropy.model import EntropyModel, tiny

    torch.manual_seed(0)
    model = EntropyModel(tiny())
    model.reset_parameters(seed=0)
    return str(save_checkpoint(model, directory / "tiny-random", preset="tiny", name="tiny-random"))


def bench_engine(paths, model: str, batch_bytes: int, precision: str) -> float:
    from bltdata import readers
    from bltdata.entropy.checkpoint import load_checkpoint
    from bltdata.entropy.engine import EntropyEngine

    engine = EntropyEngine(load_checkpoint(model), batch_bytes=batch_bytes, precision=precision)
    started = time.perf_counter()
    total = 0
    for f in readers.list_inputs([str(p) for p in paths]):
        docs = [r.data for r in readers.read_input(f) if isinstance(r, readers.Document)]
        engine.score(docs)
        total += sum(len(d) for d in docs)
    return total / (time.perf_counter() - started)


def bench_pipeline(paths, out: Path, model: str, batch_bytes: int, workers: int, precision: str,
                   runner: str = "FnApiRunner", dask_address: str | None = None, mode: str = "entropy",
                   threads: int | None = None) -> tuple[float, str, float]:
    """(document bytes/s, time split, wall seconds) of one pipeline run."""
    from bltdata.patch_job import PatchJob, prepare
    from bltdata.pipelines import patch as pipeline

    # set here, not by run_job: the Dask cluster given by address is local too (started by this benchmark)
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    job = PatchJob(inputs=[str(p) for p in paths], output=str(out), model=model, batch_bytes=batch_bytes,
                   target_patch_size=4.5 if mode == "entropy" else None, threads=threads,
                   precision=precision, mode=mode)
    prepared = prepare(job)
    started = time.perf_counter()
    result, _ = pipeline.run_job(job, workers=workers, prepared=prepared, runner=runner, dask_address=dask_address)
    elapsed = time.perf_counter() - started
    from bltdata.cli.patch import _time_split

    counters = pipeline.metric_totals(result, prepared)
    return counters["bytes"] / elapsed, _time_split(counters, elapsed, prepared.seconds), elapsed


def shard_bytes_of(out: Path) -> list[bytes]:
    return sorted(p.read_bytes() for p in out.glob("*.parquet"))


def bench_runners(paths, work: Path, args, precision: str) -> None:
    """FnApiRunner 1/2 workers beside DaskRunner 1/2 worker processes, space mode and the model."""
    from distributed import LocalCluster

    rows = []
    small = build_small_files(work / "small", 40)
    for workers in (1, 2):
        started = time.perf_counter()
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
            startup = time.perf_counter() - started
            for mode, model in (("space", "default"), ("entropy", args.model)):
                for runner in ("FnApiRunner", "DaskRunner"):
                    out = work / f"{runner}-{workers}-{mode}"
                    speed, _, wall = bench_pipeline(paths, out, model, args.batch_bytes, workers, precision,
                                                    runner=runner, dask_address=c.scheduler_address, mode=mode,
                                                    threads=args.threads)
                    rows.append((mode, runner, workers, speed, wall, out))
            per_file = {runner: bench_pipeline(small, work / f"small-{runner}-{workers}", "default", args.batch_bytes,
                                               workers, precision, runner=runner,
                                               dask_address=c.scheduler_address, mode="space")[2] / len(small)
                        for runner in ("FnApiRunner", "DaskRunner")}
        print(f"LocalCluster of {workers}: start-up {startup:.1f} s; {len(small)} one-document files, wall per file: "
              f"FnApiRunner {per_file['FnApiRunner'] * 1000:.0f} ms, DaskRunner {per_file['DaskRunner'] * 1000:.0f} ms "
              f"(Dask scheduler overhead {(per_file['DaskRunner'] - per_file['FnApiRunner']) * 1000:+.0f} ms/file)")
    print(f"{'mode':<9}{'runner':<13}{'workers':>8}{'MB/s':>10}{'wall s':>9}  identical to FnApiRunner, 1 worker")
    for mode, runner, workers, speed, wall, out in rows:
        reference = next(r[5] for r in rows if r[0] == mode and r[1] == "FnApiRunner" and r[2] == 1)
        print(f"{mode:<9}{runner:<13}{workers:>8}{speed / 1e6:>10.3f}{wall:>9.1f}  "
              f"{shard_bytes_of(out) == shard_bytes_of(reference)}")


def build_small_files(directory: Path, count: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = directory / f"small-{i:03d}.jsonl"
        path.write_text(json.dumps({"id": f"s{i}", "text": f"document {i}: a few words to patch"}) + "\n")
        paths.append(path)
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch-bytes", type=int, default=4096, help="Engine tokens per forward pass.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory.")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default="auto")
    parser.add_argument("--threads", type=int, help="torch threads per worker (DaskRunner comparison) [CPUs / workers]")
    parser.add_argument("--runner", choices=["FnApiRunner", "DaskRunner"], default="FnApiRunner",
                        help="DaskRunner: compare FnApiRunner and DaskRunner at 1 and 2 workers instead.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bltdata-bench-"))
    try:
        paths, size = build_corpus(work, int(args.mb * 1e6), files=4)
        args.model = materialize_model(args.model, work)
        print(f"corpus: {size / 1e6:.1f} MB in {len(paths)} files; model {args.model}; "
              f"batch {args.batch_bytes} tokens; {os.cpu_count()} CPUs")
        from bltdata.device import job_precision

        precision = job_precision(args.precision, "cpu")
        print(f"precision {precision}")
        if args.runner == "DaskRunner":
            bench_runners(paths, work, args, precision)
            return
        engine = bench_engine(paths, args.model, args.batch_bytes, precision)
        one, split_one, _ = bench_pipeline(paths, work / "out1", args.model, args.batch_bytes, 1, precision)
        two, split_two, _ = bench_pipeline(paths, work / "out2", args.model, args.batch_bytes, 2, precision)
        same = sorted(p.read_bytes() for p in (work / "out1").glob("*.parquet")) == \
            sorted(p.read_bytes() for p in (work / "out2").glob("*.parquet"))
        print(f"{'what':<28}{'MB/s':>10}")
        print(f"{'bare engine':<28}{engine / 1e6:>10.3f}")
        print(f"{'bltdata patch, 1 worker':<28}{one / 1e6:>10.3f}   ({one / engine:.0%} of the engine)")
        print(f"{'bltdata patch, 2 workers':<28}{two / 1e6:>10.3f}   ({two / one:.2f}x 1 worker)")
        print(f"shards identical between 1 and 2 workers: {same}")
        print(f"1 worker:  {split_one}\n2 workers: {split_two} (summed over workers)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
