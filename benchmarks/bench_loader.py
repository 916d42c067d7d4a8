"""Benchmark of the bltdata DataLoader against what users would otherwise write.

Writes (once, cached) a synthetic shard directory of random-word text with `space`-mode
patches through `bltdata.shards`, then measures, each in a fresh subprocess so that peak RSS
is the reader's own:

- `bltdata`: `PatchedDataset` in one process (= one DataLoader worker): packed document bytes
  delivered per second over one epoch, time to the first batch, peak RSS;
- `bltdata resume@90%`: time to the first batch after loading the state saved at 90 % of that
  epoch (target: no slower than 1.5x a fresh start);
- `bltdata 1/4 data`: the same on a quarter of the shards (RSS must not grow with data size);
- `bltdata DataLoader(num_workers=2)`: the real multi-process path (bytes/s per worker);
- `pyarrow.dataset + per-row Python`: `to_batches` and a per-document packer a user would write;
- `HF datasets (streaming)`: `load_dataset("parquet", streaming=True)` rows through the same
  packer (skipped with a message if `datasets` is not installed).

Usage:
    python benchmarks/bench_loader.py                       # 128 MB, seq_len 8192, batch 8
    python benchmarks/bench_loader.py --size-mb 256 --data-dir /tmp/bench-256
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np

PATCHER_MODE = "space"


# ----------------------------------------------------------------------------- data


def random_text(rng: np.random.Generator, n_bytes: int, vocab: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """About n_bytes of Zipf-distributed random words, each followed by a space (uint8)."""
    flat, offsets = vocab
    lengths = np.diff(offsets)
    probs = 1.0 / np.arange(1, len(lengths) + 1) ** 1.1
    probs /= probs.sum()
    count = int(n_bytes / float((lengths * probs).sum())) + 1
    ids = rng.choice(len(lengths), size=count, p=probs)
    out_lengths = lengths[ids]
    out_starts = np.concatenate([[0], np.cumsum(out_lengths)[:-1]])
    index = np.repeat(offsets[:-1][ids] - out_starts, out_lengths) + np.arange(int(out_lengths.sum()))
    return flat[index][:n_bytes]


def make_vocab(rng: np.random.Generator, size: int = 30000) -> tuple[np.ndarray, np.ndarray]:
    letters = np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", dtype=np.uint8)
    lengths = np.minimum(rng.geometric(0.22, size=size), 14)
    words = [bytes(rng.choice(letters, size=n)) + b" " for n in lengths]
    for i, punct in enumerate([b", ", b". ", b".\n", b"; ", b"(", b") ", b"1 ", b"2024 "]):
        words[5 + 7 * i] = punct
    flat = np.frombuffer(b"".join(words), dtype=np.uint8)
    return flat, np.concatenate([[0], np.cumsum([len(w) for w in words])]).astype(np.int64)


def write_dataset(out: Path, size_mb: int, *, shard_mb: int = 32, seed: int = 0) -> None:
    """Write ~size_mb MB of documents (log-normal lengths, mean ~4 KB) as shards + manifest."""
    from bltdata import shards
    from bltdata.patching import PatcherConfig, patch_batch

    rng = np.random.default_rng(seed)
    vocab = make_vocab(rng)
    patcher = PatcherConfig(mode=PATCHER_MODE)
    out.mkdir(parents=True, exist_ok=True)
    infos = []
    n_shards = max(1, size_mb // shard_mb)
    for s in range(n_shards):
        data = random_text(rng, shard_mb << 20, vocab)
        doc_lengths = np.maximum(1, rng.lognormal(7.8, 1.0, size=len(data) // 1000)).astype(np.int64)
        ends = np.cumsum(doc_lengths)
        offsets = np.concatenate([[0], ends[ends < len(data)], [len(data)]]).astype(np.int64)
        lengths, patch_offsets = patch_batch(patcher, offsets, data=data)
        writer = shards.ShardWriter(out / f"shard-{s:05d}.parquet", patcher=patcher.to_dict())
        raw = data.tobytes()
        for d in range(len(offsets) - 1):
            writer.add(f"bench-{s}-{d}", "synthetic", raw[offsets[d]:offsets[d + 1]],
                       lengths[patch_offsets[d]:patch_offsets[d + 1]])
        infos.append(writer.close())
    shards.write_manifest(out, {"benchmark": True, "size_mb": size_mb, "seed": seed}, infos, 0,
                          data_dir="", patcher=patcher.to_dict())  # shards beside the manifest


def subset_dataset(full: Path, out: Path, fraction: float) -> None:
    """A shard directory holding the first `fraction` of `full`'s shards (symlinks + own manifest)."""
    from bltdata import shards

    manifest = shards.read_manifest(full)
    keep = manifest.shards[:max(1, int(len(manifest.shards) * fraction))]
    out.mkdir(parents=True, exist_ok=True)
    for info in keep:
        link = out / info.file
        if not link.exists():
            link.symlink_to(manifest.shard_path(info).resolve())
    shards.write_manifest(out, manifest.params, keep, 0, data_dir="", patcher=manifest.patcher)


# ----------------------------------------------------------------------------- baselines


class NaivePacker:
    """The per-document packer a user would write: numpy per row, Python lists of patches."""

    def __init__(self, seq_len: int, batch_size: int):
        self.seq_len, self.batch_size = seq_len, batch_size
        self.tokens: list[np.ndarray] = []
        self.patches: deque[int] = deque()
        self.count = 0
        self.rows: list[tuple[np.ndarray, list[int]]] = []

    def add(self, data: bytes, patch_lengths: list[int]):
        ids = np.frombuffer(data, dtype=np.uint8).astype(np.int64) + 4
        self.tokens += [np.array([1]), ids, np.array([2])]
        patches = [1] + list(patch_lengths)
        if patch_lengths:
            patches[-1] += 1
        else:
            patches.append(1)
        self.patches.extend(patches)
        self.count += len(data) + 2
        while self.count >= self.seq_len:
            self._cut()
        if len(self.rows) >= self.batch_size:
            rows, self.rows = self.rows[:self.batch_size], self.rows[self.batch_size:]
            width = max(len(p) for _, p in rows)
            return {"tokens": np.stack([t for t, _ in rows]),
                    "patch_lengths": np.array([p + [0] * (width - len(p)) for _, p in rows])}
        return None

    def _cut(self):
        flat = np.concatenate(self.tokens)
        row, self.tokens = flat[:self.seq_len], [flat[self.seq_len:]]
        self.count -= self.seq_len
        taken, total = [], 0
        while total < self.seq_len:
            p = self.patches.popleft()
            if total + p > self.seq_len:  # split the patch at the sequence end
                self.patches.appendleft(total + p - self.seq_len)
                p = self.seq_len - total
            taken.append(p)
            total += p
        self.rows.append((row, taken))


# ----------------------------------------------------------------------------- measurements


def _rss_mb() -> float:
    """Peak RSS of this process (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _doc_bytes(batch) -> int:
    tokens = np.asarray(batch["tokens"])
    return int((tokens >= 4).sum())


def measure_bltdata(args) -> dict:
    from bltdata.data import DataConfig, PatchedDataset

    # The throughput run reads several epochs (start-up amortised as in training); the
    # first-batch runs and the 90 % state refer to the first epoch.
    epochs = 1 if args.first_only else args.worker_epochs
    config = DataConfig(seq_len=args.seq_len, batch_size=args.batch_size, epochs=epochs, even_batches=False)
    t0, c0 = time.perf_counter(), time.process_time()
    ds = PatchedDataset(args.data, config)
    if args.state:
        ds.load_state_dict(json.loads(Path(args.state).read_text()))
    it = iter(ds)
    first = next(it)
    t_first = time.perf_counter() - t0
    if args.first_only:
        return {"first_batch_s": t_first, "rss_mb": _rss_mb()}
    save_at = int(0.9 * ds.tokens_per_epoch // (args.seq_len * args.batch_size))
    nbytes, batches = _doc_bytes(first), 1
    for batch in it:
        nbytes += _doc_bytes(batch)
        batches += 1
        if batches == save_at and args.save_state:
            Path(args.save_state).write_text(json.dumps(ds.state_dict()))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"bytes_per_s": nbytes / elapsed, "bytes_per_cpu_s": nbytes / cpu, "bytes": nbytes, "batches": batches,
            "seconds": elapsed, "first_batch_s": t_first, "rss_mb": _rss_mb(), "workers": 1}


def measure_bltdata_workers(args) -> dict:
    from torch.utils.data import DataLoader

    from bltdata.data import DataConfig, PatchedDataset

    # Several epochs, so that worker start-up (fork, opening shards) is amortised as in training.
    config = DataConfig(seq_len=args.seq_len, batch_size=args.batch_size, epochs=args.worker_epochs,
                        even_batches=False)
    t0 = time.perf_counter()
    loader = DataLoader(PatchedDataset(args.data, config), batch_size=None, num_workers=args.workers)
    it = iter(loader)
    first = next(it)
    t_first = time.perf_counter() - t0
    nbytes = _doc_bytes(first) + sum(_doc_bytes(b) for b in it)
    elapsed = time.perf_counter() - t0
    del it, loader  # workers exit: their CPU time shows up in RUSAGE_CHILDREN
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = children.ru_utime + children.ru_stime
    worker_rss = children.ru_maxrss / 1024.0
    return {"bytes_per_s": nbytes / elapsed / args.workers,
            "bytes_per_cpu_s": nbytes / worker_cpu if worker_cpu else None,
            "bytes": nbytes, "seconds": elapsed, "first_batch_s": t_first, "rss_mb": max(_rss_mb(), worker_rss),
            "workers": args.workers}


def _pack_rows(rows, args) -> dict:
    packer = NaivePacker(args.seq_len, args.batch_size)
    t0, c0 = time.perf_counter(), time.process_time()
    t_first, nbytes = None, 0
    for data, patches in rows:
        batch = packer.add(data, patches)
        if batch is not None:
            nbytes += _doc_bytes(batch)
            if t_first is None:
                t_first = time.perf_counter() - t0
            if time.perf_counter() - t0 > args.max_seconds:
                break
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"bytes_per_s": nbytes / elapsed, "bytes_per_cpu_s": nbytes / cpu, "bytes": nbytes, "seconds": elapsed,
            "first_batch_s": t_first, "rss_mb": _rss_mb(), "workers": 1}


def _shard_paths(data: str) -> list[str]:
    from bltdata import shards

    return [str(p) for p in shards.shard_files(data)]


def measure_pyarrow(args) -> dict:
    import pyarrow.dataset as pads

    def rows():
        dataset = pads.dataset(_shard_paths(args.data), format="parquet")
        for record_batch in dataset.to_batches(columns=["bytes", "patch_lengths"]):
            for row in record_batch.to_pylist():
                yield row["bytes"], row["patch_lengths"]
    return _pack_rows(rows(), args)


def measure_hf(args) -> dict:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        return {"skipped": "HF datasets is not installed (pip install datasets)"}
    datasets.disable_progress_bars()

    def rows():
        stream = datasets.load_dataset("parquet", data_files=_shard_paths(args.data), split="train", streaming=True)
        for row in stream.select_columns(["bytes", "patch_lengths"]):
            yield row["bytes"], row["patch_lengths"]
    return _pack_rows(rows(), args)


def measure_imports(args) -> dict:
    """Peak RSS of the interpreter with torch, pyarrow and bltdata imported: the floor of every row."""
    import pyarrow.parquet  # noqa: F401
    import torch  # noqa: F401

    import bltdata.data  # noqa: F401
    return {"rss_mb": _rss_mb()}


MEASURES = {"bltdata": measure_bltdata, "bltdata-workers": measure_bltdata_workers,
            "pyarrow": measure_pyarrow, "hf": measure_hf, "imports": measure_imports}


def run_measure(kind: str, args, **extra) -> dict:
    cmd = [sys.executable, __file__, "--measure", kind, "--data", str(extra.pop("data", args.data)),
           "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size),
           "--max-seconds", str(args.max_seconds), "--workers", str(args.workers),
           "--worker-epochs", str(args.worker_epochs)]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_first_batch(args, repeats: int, **extra) -> dict:
    """Time to first batch, median of `repeats` fresh processes (single runs vary 3-5x here)."""
    runs = [run_measure("bltdata", args, first_only=True, **extra) for _ in range(repeats)]
    if any("error" in r for r in runs):
        return next(r for r in runs if "error" in r)
    runs.sort(key=lambda r: r["first_batch_s"])
    return runs[len(runs) // 2]


def _row(name: str, r: dict) -> str:
    if "skipped" in r or "error" in r:
        return f"| {name} | {r.get('skipped') or r.get('error')} | | | | |"
    rate = f"{r['bytes_per_s'] / 1e6:.1f}" if "bytes_per_s" in r else "—"
    cpu_rate = f"{r['bytes_per_cpu_s'] / 1e6:.1f}" if r.get("bytes_per_cpu_s") else "—"
    first = f"{r['first_batch_s']:.3f}" if r.get("first_batch_s") is not None else "—"
    delivered = f"{r['bytes'] / 1e6:.0f}" if "bytes" in r else "—"
    return f"| {name} | {rate} | {cpu_rate} | {first} | {r['rss_mb']:.0f} | {delivered} |"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=128)
    parser.add_argument("--data-dir", default=None, help="where the synthetic shards are cached")
    parser.add_argument("--seq-len", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the multi-process rows (1..N)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time cap of each baseline")
    parser.add_argument("--repeats", type=int, default=5, help="processes per first-batch timing (median)")
    parser.add_argument("--worker-epochs", type=int, default=3, help="epochs read by the throughput rows")
    parser.add_argument("--measure", choices=sorted(MEASURES), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--save-state", help=argparse.SUPPRESS)
    parser.add_argument("--first-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(MEASURES[args.measure](args)))
        return
    data = Path(args.data_dir or Path(tempfile.gettempdir()) / f"bltdata-bench-loader-{args.size_mb}mb")
    if not (data / "manifest.json").exists():
        print(f"writing {args.size_mb} MB of synthetic shards to {data} ...", file=sys.stderr)
        write_dataset(data, args.size_mb)
    quarter = data.parent / (data.name + "-quarter")
    subset_dataset(data, quarter, 0.25)
    args.data = str(data)
    state = data.parent / (data.name + "-state90.json")
    results = [
        ("bltdata, in-process (= 1 worker)", run_measure("bltdata", args, save_state=state)),
        (f"bltdata, fresh start (first batch, median of {args.repeats})", median_first_batch(args, args.repeats)),
        (f"bltdata, resume at 90 % (first batch, median of {args.repeats})",
         median_first_batch(args, args.repeats, state=state)),
        ("bltdata, 1/4 of the data", run_measure("bltdata", args, data=quarter)),
    ]
    for workers in sorted({1, args.workers}):
        args.workers = workers
        row = run_measure("bltdata-workers", args)
        results.append((f"bltdata, DataLoader num_workers={workers} (per worker)", row))
    results += [
        ("pyarrow.dataset + per-row Python packing", run_measure("pyarrow", args)),
        ("HF datasets streaming + per-row packing", run_measure("hf", args)),
        ("(imports only: torch + pyarrow + bltdata)", run_measure("imports", args)),
    ]
    print(f"\ndata: {data} ({args.size_mb} MB), seq_len {args.seq_len}, batch {args.batch_size}\n")
    print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end "
          "(MB per CPU-second = throughput of one worker that has a core to itself)\n")
    print("| reader | packed MB/s per worker (wall) | MB per CPU-second | first batch (s) | peak RSS (MB) "
          "| MB delivered |")
    print("|---|---|---|---|---|---|")
    for name, r in results:
        print(_row(name, r))
    fresh, resumed = results[1][1], results[2][1]
    if "first_batch_s" in fresh and "first_batch_s" in resumed:
        print(f"\nresume@90% / fresh start first-batch time: {resumed['first_batch_s'] / fresh['first_batch_s']:.2f}x")


if __name__ == "__main__":
    main()
