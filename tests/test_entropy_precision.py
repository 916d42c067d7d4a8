"""Entropy scoring in fp32 / bf16 / int8: deterministic per precision, bounded against fp32,
recorded in the manifest, and detected from the hardware."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bltdata import device as device_mod
from bltdata.entropy.checkpoint import load_checkpoint
from bltdata.entropy.engine import EntropyEngine
from bltdata.entropy.precision import Int8Linear, convert_model

# |ΔH| of the bundled model against fp32 on the Python sources below (nats): measured
# bf16 max 0.058, mean 0.0027; int8 max 0.30, mean 0.0126 (on 150 KB of `short`: bf16 0.09 / 0.003,
# int8 0.32 / 0.013). The bounds leave ×3–4 room for other BLAS builds.
BOUNDS = {"bf16": (0.25, 0.01), "int8": (1.0, 0.04)}


@pytest.fixture(scope="module")
def model():
    return load_checkpoint("default")


@pytest.fixture(scope="module")
def source_docs():
    """Real text: slices of a few stdlib modules, 0 bytes to 6× the window (256) long."""
    import argparse
    import json as json_module
    import logging

    text = b"".join(Path(m.__file__).read_bytes() for m in (json_module, logging, argparse))
    rng = np.random.default_rng(0)
    lengths = [0, 1, 7, 255, 256, 257, 700, 1600] + rng.integers(10, 900, 24).tolist()
    starts = rng.integers(0, len(text) - 2000, len(lengths))
    return [text[s:s + n] for s, n in zip(starts, lengths)]


@pytest.fixture(scope="module")
def fp32_reference(model, source_docs):
    return EntropyEngine(model, precision="fp32", batch_bytes=1 << 20).score(source_docs)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_each_precision_is_bit_identical_across_batch_budgets(model, source_docs, precision):
    reference = EntropyEngine(model, precision=precision, batch_bytes=1 << 20).score(source_docs)
    rng = np.random.default_rng(1)
    compared = 0
    for budget in (64, 900, 5000):
        order = rng.permutation(len(source_docs))
        got = EntropyEngine(model, precision=precision, batch_bytes=budget).score([source_docs[i] for i in order])
        for position, index in enumerate(order):
            np.testing.assert_array_equal(got[position], reference[index])
            compared += got[position].size
    for doc, want in zip(source_docs[:6], reference[:6]):  # alone, default budget
        np.testing.assert_array_equal(EntropyEngine(model, precision=precision).score([doc])[0], want)
    assert compared > 3 * 10_000


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_stays_within_its_bound_of_fp32(model, source_docs, fp32_reference, precision):
    got = EntropyEngine(model, precision=precision).score(source_docs)
    diff = np.abs(np.concatenate(got) - np.concatenate(fp32_reference))
    max_bound, mean_bound = BOUNDS[precision]
    assert diff.size > 10_000
    assert diff.max() <= max_bound and diff.mean() <= mean_bound, (diff.max(), diff.mean())
    assert diff.max() > 0  # it really ran in another precision


def test_converted_models_really_use_the_precision(model):
    bf16 = convert_model(model, "bf16")
    int8 = convert_model(model, "int8")
    assert bf16.blocks[0].attn.qkv.weight.dtype == torch.bfloat16 and bf16.output.weight.dtype == torch.float32
    assert isinstance(int8.blocks[0].mlp.down, Int8Linear) and int8.blocks[0].mlp.down.weight_t.dtype == torch.int8
    assert model.blocks[0].attn.qkv.weight.dtype == torch.float32  # the original is left alone
    assert convert_model(model, "fp32") is model
    with pytest.raises(ValueError, match="precision"):
        convert_model(model, "fp16")


def test_int8_rows_do_not_depend_on_their_batch_mates():
    """One activation scale per row: a row's output is the same beside a row 1000× larger.
    torch.ao's dynamic quantisation (one scale per tensor) is what this replaces."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=False)
    small, big = torch.randn(20, 64), 1000 * torch.randn(20, 64)
    ours = Int8Linear(linear)
    alone, mixed = ours(small), ours(torch.cat([small, big]))[:20]
    assert torch.equal(alone, mixed)
    assert (alone - linear(small)).abs().max() < 0.05 * linear(small).abs().max()
    quantize_dynamic = pytest.importorskip("torch.ao.quantization").quantize_dynamic
    theirs = quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8)
    assert not torch.equal(theirs(small), theirs(torch.cat([small, big]))[:20])


def test_engine_precision_arguments(model):
    assert EntropyEngine(model, precision="fp32").dtype == torch.float32
    assert EntropyEngine(model, dtype=torch.float32).precision == "fp32"
    assert EntropyEngine(model, dtype=torch.bfloat16).precision == "bf16"
    assert EntropyEngine(model).precision == device_mod.default_precision("cpu")
    with pytest.raises(ValueError, match="precision"):
        EntropyEngine(model, precision="fp8")
    with pytest.raises(ValueError, match="contradicts"):
        EntropyEngine(model, precision="int8", dtype=torch.float32)


def test_bf16_detection_from_cpu_flags(tmp_path):
    assert device_mod.cpu_has_fast_bf16({"avx512f", "avx512_bf16"})
    assert device_mod.cpu_has_fast_bf16({"amx_bf16", "amx_tile"})
    assert not device_mod.cpu_has_fast_bf16({"avx512f", "avx512_vnni", "avx2"})
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert device_mod.cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512f", "avx512_bf16"}
    assert device_mod.cpu_flags(tmp_path / "missing") == set()
    with pytest.raises(ValueError, match="unknown precision"):
        device_mod.resolve_precision("half", "cpu")
    assert device_mod.resolve_precision("int8", "cpu") == "int8"


def test_default_precision_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda flags=None: False)
    assert device_mod.default_precision("cpu") == "fp32" and device_mod.job_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda flags=None: True)
    assert device_mod.default_precision("cpu") == "bf16" and device_mod.job_precision(None, "cpu") == "bf16"
    if not torch.cuda.is_available():  # a launcher for GPU workers records what the workers will run
        assert device_mod.job_precision("auto", "cuda") == "bf16"


def test_emulated_precisions_name_the_missing_units():
    assert device_mod.emulated_precisions({"avx2", "fma"}) == {
        "bf16": "avx512_bf16 / amx_bf16", "int8": "avx512_vnni / avx_vnni / amx_int8"}
    assert device_mod.emulated_precisions({"avx512f", "avx512_vnni"}) == {"bf16": "avx512_bf16 / amx_bf16"}
    assert device_mod.emulated_precisions({"avx_vnni"}).keys() == {"bf16"}
    assert device_mod.emulated_precisions({"amx_bf16", "amx_int8"}) == {}


def test_an_emulated_precision_warns_once_per_process(model, monkeypatch, caplog):
    import bltdata.entropy.engine as engine_mod

    monkeypatch.setattr(device_mod, "emulated_precisions", lambda flags=None: {"int8": "avx512_vnni / avx_vnni"})
    monkeypatch.setattr(engine_mod, "_WARNED", set())
    with caplog.at_level("WARNING", logger="bltdata.entropy.engine"):
        EntropyEngine(model, precision="fp32")
        EntropyEngine(model, precision="bf16")
        assert not caplog.records  # fp32 never asks; bf16 has its unit in this stand-in
        EntropyEngine(model, precision="int8")
        EntropyEngine(model, precision="int8")
    assert len(caplog.records) == 1
    assert "no int8 unit (none of avx512_vnni / avx_vnni)" in caplog.records[0].getMessage()


def test_manifest_records_the_precision_and_refuses_to_mix_them(tmp_path):
    pytest.importorskip("apache_beam")  # GPU machines without Beam still collect this file
    from bltdata import jobs
    from bltdata.patch_job import PatchJob, prepare
    from bltdata.pipelines import patch as pipeline

    corpus = tmp_path / "in.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": f"document {i} " * (i + 1)}) for i in range(5)) + "\n")
    out = tmp_path / "out"
    result, _ = pipeline.run_job(PatchJob(inputs=[str(corpus)], output=str(out), precision="int8"))
    assert pipeline.metric_totals(result)["documents"] == 5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["precision"] == "int8"
    with pytest.raises(jobs.JobMismatch, match="precision"):
        prepare(PatchJob(inputs=[str(corpus)], output=str(out), precision="fp32"))
    auto = prepare(PatchJob(inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / "o2")))
    assert auto.params["precision"] == auto.job.precision == device_mod.job_precision("auto", "auto")
    space = prepare(PatchJob(inputs=[str(corpus)], output=str(tmp_path / "o3"), mode="space"))
    assert "precision" not in space.params  # no model, nothing to record
