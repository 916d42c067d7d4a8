"""Device handling: CUDA is asserted when asked for, and the CUDA engine agrees with the CPU one."""
import numpy as np
import pytest
import torch

from bltdata.device import resolve_device
from bltdata.entropy.engine import EntropyEngine
from bltdata.entropy.model import EntropyModel, tiny

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_requested_without_cuda_fails_loudly(tmp_path):
    from bltdata.pipelines.patch import EntropyModelHandler  # Beam: imported here so GPU machines without it collect

    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        EntropyModelHandler("default", device="cuda", batch_bytes=None).load_model()
    assert resolve_device("auto") == "cpu"


NO_CUDA_ERROR = "Error: --device cuda was asked for but CUDA is not available here"


@pytest.mark.parametrize("argv", [
    ["entropy", "score", "default", "--text", "hi", "--device", "cuda"],
    ["entropy", "train", "{corpus}", "-o", "{out}", "--preset", "tiny", "--steps", "2", "--device", "cuda"],
    ["train", "--data", "{corpus}", "-o", "{out}", "--preset", "debug", "--steps", "2", "--device", "cuda"],
], ids=["entropy-score", "entropy-train", "train"])
def test_cuda_asked_for_without_cuda_is_one_usage_line(argv, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from bltdata.cli.main import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("some text")
    argv = [a.format(corpus=tmp_path / "corpus", out=tmp_path / "out") for a in argv]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == NO_CUDA_ERROR
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


@pytest.mark.gpu
@needs_cuda
def test_cuda_bf16_engine_matches_cpu():
    model = EntropyModel(tiny())
    model.reset_parameters(seed=0)
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 256, size=int(n), dtype=np.uint8).tobytes() for n in rng.integers(0, 3000, size=40)]
    cpu = EntropyEngine(model, device="cpu", precision="fp32").score(docs)
    gpu = EntropyEngine(model, device="cuda").score(docs)
    assert len(gpu) == len(docs)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(cpu, gpu))
    assert worst < 0.1, worst  # bf16 autocast vs fp32
