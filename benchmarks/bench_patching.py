"""Throughput of the numba patcher against plain-torch versions of the same rules, one core.

Documents get log-normal lengths (median ~2 KB, a tail past 100 KB), exponential float32
entropies scaled so that the default θ gives ~4.5 bytes per patch, and text-like bytes
(letters, spaces, punctuation, some UTF-8) for ``space`` mode. For each mode, with and
without ``max_patch_length``, it first checks that all implementations return identical
lengths, then times them after a warm-up (numba compilation excluded) and prints MB of
document bytes per second (best of ``--repeats``). Time is this thread's CPU time by
default, so that other load on a shared machine does not count (``--clock wall`` for
elapsed time); everything runs on one thread.

The torch baselines are what a user would write on CPU with ``torch.set_num_threads(1)``:
``torch-loop`` builds the boundary mask with vectorised comparisons and then, per
document, takes ``nonzero`` and ``diff`` (and splits long patches, vectorised);
``torch-flat`` does that last step on the whole batch at once (forced starts make patches
stop at document ends), a more careful vectorised version with no Python loop.

    python benchmarks/bench_patching.py --mb 64 --repeats 3
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np
import torch

from bltdata.patching import DEFAULT_THRESHOLD, PatcherConfig, patch_batch


def make_corpus(total_mb: float, median_bytes: int, seed: int):
    """Flat entropies, bytes and offsets of synthetic documents (about total_mb MB)."""
    rng = np.random.default_rng(seed)
    target = int(total_mb * 1e6)
    sizes = rng.lognormal(np.log(median_bytes), 1.3, size=target // median_bytes * 2)
    sizes = np.clip(sizes, 1, 2_000_000).astype(np.int64)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), target)) + 1]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    total = int(offsets[-1])
    scale = DEFAULT_THRESHOLD / np.log(4.5)  # P(H > θ) = 1 / 4.5 at the default θ
    entropies = rng.exponential(scale, total).astype(np.float32)
    text_bytes = b"etaoinshrdlucmfwypvbgkqjxz" + b" " * 6 + b".,\n" + b"\xc3\xa9"
    alphabet = np.frombuffer(text_bytes, np.uint8)
    weights = np.concatenate([np.linspace(2.0, 0.2, 26), [2.0] * 6, [0.3] * 3, [0.1, 0.1]])
    data = rng.choice(alphabet, total, p=weights / weights.sum())
    return entropies, data, offsets


# ---------------------------------------------------------------------------------------
# torch baselines

_SPACE_LIKE = torch.tensor(
    [b >= 0xC0 or (b < 0x80 and not chr(b).isalnum()) for b in range(256)], dtype=torch.bool)


def torch_boundaries(config: PatcherConfig, offsets: torch.Tensor, h: torch.Tensor,
                     data: torch.Tensor) -> torch.Tensor:
    """Flat boolean mask of patch starts, with each document's first bytes fixed up."""
    starts = offsets[:-1][offsets[1:] > offsets[:-1]]        # first byte of non-empty docs
    second = starts + 1
    second = second[second < offsets[1:][offsets[1:] > offsets[:-1]]]  # docs of >= 2 bytes
    mask = torch.zeros(h.shape[0] if config.needs_entropies else data.shape[0], dtype=torch.bool)
    if config.mode == "entropy" and config.threshold_add is None:
        mask = h > config.threshold  # torch casts the Python float to float32
    elif config.mode == "entropy":
        mask[1:] = (h[1:] > config.threshold) & ((h[1:] - h[:-1]) > config.threshold_add)
        mask[second] = True
    elif config.mode == "monotonic":
        mask[1:] = (h[1:] - h[:-1]) > config.threshold
        mask[second] = True
    elif config.mode == "space":
        space = _SPACE_LIKE[data.long()]
        mask[2:] = space[1:-1] & ~space[:-2]
        mask[second] = False  # BOS stands before byte 0 and is space-like
    mask[starts] = True
    return mask


def torch_split(lengths: torch.Tensor, max_len: int | None) -> torch.Tensor:
    """Split every length > max_len into max_len, ..., remainder (vectorised)."""
    if max_len is None:
        return lengths
    pieces = (lengths - 1) // max_len + 1
    out = torch.full((int(pieces.sum()),), max_len, dtype=lengths.dtype)
    out[torch.cumsum(pieces, 0) - 1] = lengths - (pieces - 1) * max_len
    return out


def torch_loop(config, offsets, h, data):
    """Mask via comparisons, then per document: nonzero, diff, split."""
    mask = torch_boundaries(config, offsets, h, data)
    bounds = offsets.tolist()
    all_lengths, counts = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        starts = torch.nonzero(mask[lo:hi]).flatten()
        lengths = torch.diff(starts, append=torch.tensor([hi - lo]))
        lengths = torch_split(lengths, config.max_patch_length)
        all_lengths.append(lengths)
        counts.append(lengths.shape[0])
    patch_offsets = torch.cumsum(torch.tensor([0] + counts), 0)
    return torch.cat(all_lengths).to(torch.int32), patch_offsets


def torch_flat(config, offsets, h, data):
    """Mask via comparisons, then nonzero/diff over the whole batch at once."""
    mask = torch_boundaries(config, offsets, h, data)
    starts = torch.nonzero(mask).flatten()
    lengths = torch.diff(starts, append=offsets[-1:])
    pieces = (lengths - 1) // config.max_patch_length + 1 if config.max_patch_length else None
    lengths = torch_split(lengths, config.max_patch_length)
    doc_first = torch.searchsorted(starts, offsets)  # patch index of each document's start
    if pieces is not None:
        first_piece = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(pieces, 0)])
        doc_first = first_piece[doc_first]
    return lengths.to(torch.int32), doc_first


# ---------------------------------------------------------------------------------------


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}


def best_seconds(fn, repeats: int, clock) -> float:
    fn()  # warm-up: numba compilation / torch allocator
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return min(times)


def bench_config(config, corpus, torch_corpus, repeats: int, run_loop: bool, clock) -> dict:
    entropies, data, offsets = corpus
    implementations = {
        "numba": lambda: patch_batch(config, offsets, entropies=entropies, data=data),
        "torch-flat": lambda: torch_flat(config, *torch_corpus),
    }
    if run_loop:
        implementations["torch-loop"] = lambda: torch_loop(config, *torch_corpus)
    expected_lengths, expected_offsets = implementations["numba"]()
    for name, fn in implementations.items():
        lengths, patch_offsets = fn()
        if not (np.array_equal(np.asarray(lengths), expected_lengths)
                and np.array_equal(np.asarray(patch_offsets), expected_offsets)):
            raise AssertionError(f"{name} disagrees with numba for {config}")
    megabytes = offsets[-1] / 1e6
    row = {name: megabytes / best_seconds(fn, repeats, clock)
           for name, fn in implementations.items()}
    row["mean_patch"] = offsets[-1] / expected_lengths.size
    return row


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=64.0, help="document bytes to patch (MB)")
    parser.add_argument("--median-doc-bytes", type=int, default=2048)
    parser.add_argument("--modes", default="entropy,monotonic,space")
    parser.add_argument("--max-patch-length", type=int, default=8,
                        help="also run each mode with this max_patch_length (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-loop", action="store_true",
                        help="skip the slow per-document torch loop")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: CPU time of this thread (robust on a shared machine); "
                             "wall: elapsed time")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def describe(offsets: np.ndarray, clock: str, repeats: int) -> str:
    sizes = np.diff(offsets)
    return (f"{offsets[-1] / 1e6:.1f} MB in {sizes.size} documents: median "
            f"{int(np.median(sizes))} B, max {sizes.max()} B, {int((sizes >= 100_000).sum())} "
            f"of >= 100 KB; one core; MB/s = 1e6 document bytes per {clock} second, "
            f"best of {repeats}")


def table_line(cells: list) -> str:
    return f"{cells[0]:<10}" + "".join(f"{cell:>12}" for cell in cells[1:])


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    numba.set_num_threads(1)  # the patcher never runs parallel code; make that explicit
    corpus = make_corpus(args.mb, args.median_doc_bytes, args.seed)
    entropies, data, offsets = corpus
    print(describe(offsets, args.clock, args.repeats))
    torch_corpus = (torch.from_numpy(offsets), torch.from_numpy(entropies), torch.from_numpy(data))
    limits = [None] + ([args.max_patch_length] if args.max_patch_length > 0 else [])
    baselines = ["torch-flat"] + ([] if args.no_loop else ["torch-loop"])
    print(table_line(["mode", "max_len", "bytes/patch", "numba", *baselines,
                      *[f"vs {name[6:]}" for name in baselines]]))
    for mode in args.modes.split(","):
        for max_len in limits:
            config = PatcherConfig(mode=mode, max_patch_length=max_len)
            row = bench_config(config, corpus, torch_corpus, args.repeats, not args.no_loop,
                               CLOCKS[args.clock])
            print(table_line([mode, str(max_len or "-"), f"{row['mean_patch']:.2f}",
                              f"{row['numba']:.0f}", *[f"{row[b]:.0f}" for b in baselines],
                              *[f"{row['numba'] / row[b]:.1f}x" for b in baselines]]),
                  flush=True)


if __name__ == "__main__":
    main()
