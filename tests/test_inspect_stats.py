"""`bltdata stats`: every --json figure equals a direct numpy computation over the rows."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from bltdata.cli.main import main
from bltdata.inspect.stats import QUANTILES, entropy_edges, patch_length_edges, pow2_edges, quantile_key
from bltdata.inspect.synthetic import write_synthetic_dir
from bltdata.shards import iter_rows, shard_files


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("stats") / "shards"
    write_synthetic_dir(out, shards=3, docs_per_shard=25, invalid_every=9, seed=3)
    return out


def rows_of(directory):
    return [row for shard in shard_files(directory) for row in iter_rows(shard)]


def direct_histogram(values: np.ndarray, edges: list[float]) -> dict:
    bins = np.clip(np.searchsorted(np.asarray(edges), values, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(bins, minlength=len(edges) - 1)
    last = int(np.flatnonzero(counts)[-1]) + 1
    return {"edges": edges[:last + 1], "counts": counts[:last].tolist()}


def assert_metric(figures: dict, values: np.ndarray, edges: list[float]) -> None:
    assert figures["count"] == len(values) > 0
    assert figures["sum"] == pytest.approx(values.sum(dtype=np.float64))
    assert figures["mean"] == pytest.approx(values.mean(dtype=np.float64), rel=1e-9)
    assert figures["std"] == pytest.approx(values.std(dtype=np.float64), rel=1e-6)
    assert figures["min"] == pytest.approx(values.min()) and figures["max"] == pytest.approx(values.max())
    for q in QUANTILES:
        assert figures["quantiles"][quantile_key(q)] == pytest.approx(np.quantile(values.astype(np.float64), q),
                                                                      rel=1e-6, abs=1e-9)
    assert figures["histogram"] == direct_histogram(values, edges)


def test_stats_json_equals_direct_computation(shards_dir):
    result = CliRunner().invoke(main, ["stats", str(shards_dir), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    rows = rows_of(shards_dir)
    num_bytes = np.array([len(r["bytes"]) for r in rows], np.int64)
    num_patches = np.array([len(r["patch_lengths"]) for r in rows], np.int64)
    lengths = np.concatenate([r["patch_lengths"] for r in rows]).astype(np.int64)
    entropies = np.concatenate([np.asarray(r["entropies"], np.float16) for r in rows]).astype(np.float32)
    assert (stats["shards"], stats["documents"], stats["bytes"], stats["patches"]) == (
        3, len(rows), num_bytes.sum(), num_patches.sum())
    assert_metric(stats["bytes_per_doc"], num_bytes, pow2_edges())
    assert_metric(stats["patches_per_doc"], num_patches, pow2_edges())
    assert_metric(stats["bytes_per_patch"], lengths, patch_length_edges())
    assert_metric(stats["entropies"], entropies, entropy_edges())
    assert stats["bytes_per_patch"]["mean"] == pytest.approx(num_bytes.sum() / num_patches.sum())
    assert stats["entropies"]["non_finite"] == 0


def test_stats_by_source(shards_dir):
    result = CliRunner().invoke(main, ["stats", str(shards_dir), "--json", "--by-source"])
    assert result.exit_code == 0, result.output
    by_source = json.loads(result.output)["by_source"]
    rows = rows_of(shards_dir)
    sources = sorted({r["source"] for r in rows})
    assert [s["source"] for s in by_source] == sources and len(sources) == 3
    for entry in by_source:
        mine = [r for r in rows if r["source"] == entry["source"]]
        n = np.array([len(r["bytes"]) for r in mine])
        h = np.concatenate([np.asarray(r["entropies"], np.float16) for r in mine]).astype(np.float32)
        assert entry["documents"] == len(mine) and entry["bytes"] == n.sum()
        assert entry["patches"] == sum(len(r["patch_lengths"]) for r in mine)
        assert entry["bytes_per_doc_p50"] == pytest.approx(np.quantile(n, 0.5))
        assert entry["entropy_mean"] == pytest.approx(h.mean(dtype=np.float64), rel=1e-5)


def test_stats_text_report_and_no_entropies(tmp_path):
    write_synthetic_dir(tmp_path / "plain", shards=2, docs_per_shard=5, store_entropies=False)
    result = CliRunner().invoke(main, ["stats", str(tmp_path / "plain"), "--by-source"])
    assert result.exit_code == 0, result.output
    assert "2 shards, 10 documents" in result.output and "bytes/patch" in result.output
    assert "entropy: not stored" in result.output
    figures = json.loads(CliRunner().invoke(main, ["stats", str(tmp_path / "plain"), "--json"]).output)
    assert figures["entropies"] is None and figures["documents"] == 10


def test_stats_sample_shards_and_missing_dir(shards_dir, tmp_path):
    result = CliRunner().invoke(main, ["stats", str(shards_dir), "--json", "--sample-shards", "1"])
    assert result.exit_code == 0 and json.loads(result.output)["shards"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["stats", str(empty)])
    assert result.exit_code == 1 and str(empty) in result.output
