"""The entropy engine on CUDA: exactness in fp32, bf16 close to fp32, compiled equal to eager.

Run on a GPU machine by ``benchmarks/gpu_check.sh`` (``pytest -m gpu``); skipped elsewhere.
Needs only torch and numpy besides bltdata, so it runs where Beam is not installed.
"""
import numpy as np
import pytest
import torch

from bltdata.entropy.engine import EntropyEngine
from bltdata.entropy.model import EntropyModel, small, tiny

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _docs(seed: int, lengths) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=int(n), dtype=np.uint8).tobytes() for n in lengths]


def _model(config) -> EntropyModel:
    model = EntropyModel(config)
    model.reset_parameters(seed=0)
    return model


def _worst(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert [len(x) for x in a] == [len(y) for y in b]
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def test_fp32_cuda_results_do_not_depend_on_batching_or_chunking():
    """docs/design.md §2's exactness bound (|ΔH| ≤ 1e-4 in fp32) holds on CUDA too, with a document 20× the window."""
    model = _model(small())
    window = model.config.window
    docs = _docs(1, [0, 1, 7, 255, 256, 257, 600, 1500, 20 * window, 3000, 90, 4 * window + 3])
    alone = EntropyEngine(model, device="cuda", dtype=torch.float32, batch_bytes=1, chunk_len=1 << 20)
    reference = [alone.score([d])[0] for d in docs]
    for batch_bytes, chunk_len in [(1 << 16, 512), (1 << 14, 1000), (1 << 20, 4096), (3000, window)]:
        engine = EntropyEngine(model, device="cuda", dtype=torch.float32, batch_bytes=batch_bytes, chunk_len=chunk_len)
        assert _worst(reference, engine.score(docs)) <= 1e-4, (batch_bytes, chunk_len)


def test_cuda_fp32_equals_cpu_and_bf16_stays_close():
    model = _model(small())
    docs = _docs(2, np.random.default_rng(3).integers(0, 3000, size=30))
    cpu = EntropyEngine(model, device="cpu", precision="fp32").score(docs)
    fp32 = EntropyEngine(model, device="cuda", dtype=torch.float32).score(docs)
    bf16 = EntropyEngine(model, device="cuda").score(docs)
    assert _worst(cpu, fp32) <= 1e-4
    assert _worst(cpu, bf16) < 0.1  # bf16 autocast: ~3 significant digits in the projections


def test_compiled_cuda_engine_matches_eager():
    model = _model(tiny())
    docs = _docs(4, [5, 60, 61, 300, 1200, 5000])
    eager = EntropyEngine(model, device="cuda", dtype=torch.float32).score(docs)
    compiled = EntropyEngine(model, device="cuda", dtype=torch.float32, compile=True).score(docs)
    assert _worst(eager, compiled) <= 1e-4
