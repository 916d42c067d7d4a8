"""Synthetic shard directories for tests and benchmarks of the inspection tools.

Documents are random words (plus, on request, a few bytes that are not valid UTF-8) with
made-up entropies: high at the start of each word, decaying inside it — enough structure
for entropy patching to find word-like patches. Entropies are rounded to float16 before
patching, so patching the stored values again reproduces the stored boundaries exactly.
Everything is written through `ShardWriter` / `write_manifest`, like the pipeline.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bltdata.patching import PatcherConfig, patch_lengths
from bltdata.shards import DATA_DIR, ShardInfo, ShardWriter, staging_path, write_manifest

WORDS = ("the", "byte", "latent", "transformer", "patch", "entropy", "model", "données", "naïve",
         "日本語", "α-β", "x|y", "a\\b", "tab\there", "line\nbreak", "ok")
SYNTHETIC_MODEL = {"name": "synthetic", "preset": None, "sha256": None}


def synthetic_document(rng: np.random.Generator, num_words: int, invalid_utf8: bool = False) -> bytes:
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), size=num_words)]
    data = " ".join(words).encode("utf-8")
    if invalid_utf8:
        cut = int(rng.integers(0, len(data) + 1))
        data = data[:cut] + b"\xff\xc3(" + data[cut:]
    return data


def synthetic_entropies(rng: np.random.Generator, data: bytes) -> np.ndarray:
    """n + 1 float16-exact float32 values: spikes after spaces, decay inside words."""
    n = len(data)
    h = np.empty(n + 1, dtype=np.float32)
    level = 3.0
    for k in range(n + 1):
        if k == 0 or data[k - 1] == 0x20:
            level = 2.0 + 2.0 * float(rng.random())
        h[k] = level * float(rng.uniform(0.6, 1.0))
        level *= 0.55
    return h.astype(np.float16).astype(np.float32)


def write_synthetic_dir(out_dir: str | os.PathLike, *, shards: int = 2, docs_per_shard: int = 20,
                        words: tuple[int, int] = (0, 40), store_entropies: bool = True,
                        patcher: PatcherConfig | None = None, seed: int = 0, sources: int = 3,
                        invalid_every: int = 0, row_group_bytes: int = 1 << 12) -> list[ShardInfo]:
    """Write `shards` shards + manifest; every `invalid_every`-th document holds invalid UTF-8."""
    patcher = patcher or PatcherConfig(threshold=1.5)
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    infos, index = [], 0
    for s in range(shards):
        writer = ShardWriter(out / DATA_DIR / f"shard-{s:05d}.parquet", patcher=patcher.to_dict(),
                             entropy_model=SYNTHETIC_MODEL, store_entropies=store_entropies,
                             row_group_bytes=row_group_bytes, staging_dir=staging_path(out))
        for _ in range(docs_per_shard):
            invalid = invalid_every > 0 and index % invalid_every == invalid_every - 1
            data = synthetic_document(rng, int(rng.integers(words[0], words[1] + 1)), invalid)
            h = synthetic_entropies(rng, data)
            lengths = patch_lengths(patcher, data, h)
            writer.add(f"doc-{index}", f"src/part-{index % sources}.jsonl", data, lengths,
                       h if store_entropies else None)
            index += 1
        infos.append(writer.close())
    write_manifest(out, {"synthetic": True, "seed": seed}, infos, 0, data_dir=DATA_DIR, patcher=patcher.to_dict(),
                   entropy_model=SYNTHETIC_MODEL)
    return infos
