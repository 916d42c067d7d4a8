"""Corpus statistics over a shard directory (`bltdata stats`), computed with polars.

One lazy scan over every shard reads only the columns a figure needs (`num_bytes`,
`num_patches`, `patch_lengths`, `source`, and `entropies` when stored) and all queries run
in one `collect_all`, so the scan is shared and spread over the cores; thousands of small
shards take seconds. Definitions, so scripts can recompute any figure:

- bytes/doc and patches/doc: one value per document; bytes/patch: one value per patch
  (so its mean is total bytes / total patches); entropies: every stored value H[0..n] of
  every document, in nats (float16 as stored, widened exactly to float64).
- `std` is the population standard deviation (ddof = 0); quantiles interpolate linearly
  (numpy's default), keys `p1` … `p99`.
- Histograms: bins [edges[i], edges[i+1]); a value below the first edge counts in the
  first bin, one at or above the last in the last. Edges are fixed per quantity (powers
  of two for per-document counts; 1..16 then powers of two for patch lengths; 0.25 nats
  for entropies) and trailing empty bins are dropped.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
ENTROPY_BIN = 0.25
ENTROPY_MAX = 6.0   # above ln(260) ≈ 5.56, the largest entropy of a 260-way softmax


def quantile_key(q: float) -> str:
    return f"p{round(q * 100):g}"


def pow2_edges() -> list[float]:
    return [0.0] + [float(2 ** i) for i in range(63)]


def patch_length_edges() -> list[float]:
    return [float(i) for i in range(1, 17)] + [float(2 ** i) for i in range(5, 63)]


def entropy_edges() -> list[float]:
    return [i * ENTROPY_BIN for i in range(int(ENTROPY_MAX / ENTROPY_BIN) + 1)]


def _summary_exprs(pl, col):
    """Count, sum, mean, std, min, max and quantiles of one numeric expression."""
    exprs = [col.count().alias("count"), col.sum().cast(pl.Float64).alias("sum"), col.mean().alias("mean"),
             col.std(ddof=0).alias("std"), col.min().cast(pl.Float64).alias("min"),
             col.max().cast(pl.Float64).alias("max")]
    exprs.append(col.quantile(list(QUANTILES), interpolation="linear").alias("quantiles"))  # one sort for all
    return exprs


def _histogram_query(pl, frame, col, edges: list[float]):
    """Counts per bin index (0-based, clamped to the edges) of one numeric expression."""
    bins = (pl.lit(pl.Series(edges, dtype=pl.Float64)).search_sorted(col.cast(pl.Float64), side="right")
            .cast(pl.Int64) - 1).clip(0, len(edges) - 2)
    return frame.select(bins.alias("bin")).group_by("bin").agg(pl.len().alias("count"))


def _histogram(df, edges: list[float]) -> dict:
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    for b, c in zip(df["bin"].to_list(), df["count"].to_list()):
        counts[b] += c
    last = int(np.flatnonzero(counts)[-1]) + 1 if counts.any() else 0
    return {"edges": edges[:last + 1] if last else [], "counts": counts[:last].tolist()}


def _summary(df, hist_df, edges) -> dict:
    row = df.row(0, named=True)
    out = {"count": int(row["count"]), "sum": _num(row["sum"]), "mean": _num(row["mean"]),
           "std": _num(row["std"]), "min": _num(row["min"]), "max": _num(row["max"]),
           "quantiles": {quantile_key(q): _num(v) for q, v in zip(QUANTILES, row["quantiles"] or [None] * len(QUANTILES))}}
    out["histogram"] = _histogram(hist_df, edges)
    return out


def _num(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _has_entropies(shard: Path) -> bool:
    return "entropies" in pq.read_schema(shard).names


def _metric_queries(pl, frame, col, edges):
    return [frame.select(_summary_exprs(pl, col)), _histogram_query(pl, frame, col, edges)]


def _by_source_query(pl, docs):
    return (docs.group_by("source")
            .agg(pl.len().alias("documents"), pl.col("num_bytes").sum().alias("bytes"),
                 pl.col("num_patches").sum().alias("patches"),
                 pl.col("num_bytes").mean().alias("bytes_per_doc_mean"),
                 pl.col("num_bytes").quantile(0.5, interpolation="linear").alias("bytes_per_doc_p50"),
                 pl.col("num_patches").mean().alias("patches_per_doc_mean"))
            .sort("source"))


def _source_entropy_query(pl, ent_frame):
    return (ent_frame.explode("entropies").select("source", pl.col("entropies").cast(pl.Float64))
            .filter(pl.col("entropies").is_finite())
            .group_by("source").agg(pl.col("entropies").mean().alias("entropy_mean")))


def compute_stats(shards: list[Path], *, by_source: bool = False) -> dict:
    """Statistics of the given shards (see the module docstring for the definitions)."""
    import polars as pl

    files = [str(s) for s in shards]
    with_entropies = [str(s) for s in shards if _has_entropies(s)]
    docs = pl.scan_parquet(files).select("source", "num_bytes", "num_patches", "patch_lengths")
    lengths = docs.select(pl.col("patch_lengths").explode()).filter(pl.col("patch_lengths").is_not_null())
    queries = (_metric_queries(pl, docs, pl.col("num_bytes"), pow2_edges())
               + _metric_queries(pl, docs, pl.col("num_patches"), pow2_edges())
               + _metric_queries(pl, lengths, pl.col("patch_lengths"), patch_length_edges()))
    ent = None
    if with_entropies:
        ent = pl.scan_parquet(with_entropies).select("source", "entropies")
        values = (ent.select(pl.col("entropies").explode().cast(pl.Float64))
                  .filter(pl.col("entropies").is_not_null()))
        queries += _metric_queries(pl, values.filter(pl.col("entropies").is_finite()), pl.col("entropies"),
                                   entropy_edges())
        queries.append(values.select((~pl.col("entropies").is_finite()).sum().alias("non_finite")))
    if by_source:
        queries.append(_by_source_query(pl, docs))
        if ent is not None:
            queries.append(_source_entropy_query(pl, ent))
    results = pl.collect_all(queries)
    return _assemble(results, shards, with_entropies, by_source)


def _assemble(results, shards, with_entropies, by_source) -> dict:
    out = {"shards": len(shards), "shards_with_entropies": len(with_entropies)}
    out["bytes_per_doc"] = _summary(results[0], results[1], pow2_edges())
    out["patches_per_doc"] = _summary(results[2], results[3], pow2_edges())
    out["bytes_per_patch"] = _summary(results[4], results[5], patch_length_edges())
    out["documents"] = out["bytes_per_doc"]["count"]
    out["bytes"] = int(out["bytes_per_doc"]["sum"] or 0)
    out["patches"] = int(out["patches_per_doc"]["sum"] or 0)
    rest = results[6:]
    out["entropies"] = None
    if with_entropies:
        out["entropies"] = _summary(rest[0], rest[1], entropy_edges())
        out["entropies"]["non_finite"] = int(rest[2]["non_finite"][0] or 0)
        rest = rest[3:]
    if by_source:
        out["by_source"] = _sources(rest[0], rest[1] if len(rest) > 1 else None)
    return out


def _sources(df, ent_df) -> list[dict]:
    entropy_mean = dict(zip(ent_df["source"].to_list(), ent_df["entropy_mean"].to_list())) if ent_df is not None else {}
    rows = []
    for row in df.iter_rows(named=True):
        patches = int(row["patches"])
        rows.append({
            "source": row["source"], "documents": int(row["documents"]), "bytes": int(row["bytes"]),
            "patches": patches, "bytes_per_doc_mean": float(row["bytes_per_doc_mean"]),
            "bytes_per_doc_p50": float(row["bytes_per_doc_p50"]),
            "patches_per_doc_mean": float(row["patches_per_doc_mean"]),
            "bytes_per_patch_mean": row["bytes"] / patches if patches else None,
            "entropy_mean": _num(entropy_mean.get(row["source"])),
        })
    return rows


def patch_length_counts(shards: list[Path]) -> dict[int, int]:
    """Exact number of patches of each length over the shards (for the histogram plot)."""
    import polars as pl

    df = (pl.scan_parquet([str(s) for s in shards]).select(pl.col("patch_lengths").explode())
          .filter(pl.col("patch_lengths").is_not_null())
          .group_by("patch_lengths").agg(pl.len().alias("count")).sort("patch_lengths").collect())
    return dict(zip(df["patch_lengths"].to_list(), df["count"].to_list()))


def format_stats(stats: dict) -> str:
    """A human-readable report of `compute_stats`' result."""
    lines = [f"{stats['shards']} shards, {stats['documents']:,} documents, {stats['bytes']:,} bytes, "
             f"{stats['patches']:,} patches"]
    for key, title, unit in (("bytes_per_doc", "bytes/doc", ""), ("patches_per_doc", "patches/doc", ""),
                             ("bytes_per_patch", "bytes/patch", ""), ("entropies", "entropy", " nats")):
        if stats.get(key):
            lines += _format_metric(title, stats[key], unit)
    if stats.get("entropies") is None:
        lines.append("entropy: not stored (patch with --store-entropies to keep them)")
    if "by_source" in stats:
        lines += _format_sources(stats["by_source"])
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _format_metric(title: str, m: dict, unit: str) -> list[str]:
    q = m["quantiles"]
    lines = ["", f"{title}{unit}: n={m['count']:,} mean={_fmt(m['mean'])} std={_fmt(m['std'])} "
                 f"min={_fmt(m['min'])} max={_fmt(m['max'])}",
             "  quantiles: " + " ".join(f"{k}={_fmt(v)}" for k, v in q.items())]
    hist = m["histogram"]
    peak = max(hist["counts"], default=0)
    for lo, hi, count in zip(hist["edges"], hist["edges"][1:], hist["counts"]):
        bar = "#" * (round(40 * count / peak) if peak else 0)
        lines.append(f"  [{lo:>8g}, {hi:<8g}) {count:>12,} {bar}")
    return lines


def _format_sources(rows: list[dict]) -> list[str]:
    lines = ["", f"{'source':<40} {'docs':>10} {'bytes':>14} {'patches':>12} {'B/patch':>8} {'H mean':>7}"]
    for r in rows:
        lines.append(f"{r['source'][-40:]:<40} {r['documents']:>10,} {r['bytes']:>14,} {r['patches']:>12,} "
                     f"{_fmt(r['bytes_per_patch_mean']):>8} {_fmt(r['entropy_mean']):>7}")
    return lines
