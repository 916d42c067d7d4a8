"""`bltdata entropy train | score | calibrate | import-reference | import-hf | export` through click."""
import json
import re

import pytest
import torch
from click.testing import CliRunner

from bltdata.cli.main import main
from bltdata.entropy.checkpoint import save_checkpoint
from bltdata.entropy.model import EntropyModel, tiny


@pytest.fixture
def model_dir(tmp_path):
    model = EntropyModel(tiny())
    model.reset_parameters(seed=0)
    return str(save_checkpoint(model, tmp_path / "tiny", preset="tiny"))


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    lines = [json.dumps({"id": i, "text": f"document {i}: " + "some words and numbers 12345. " * (i % 7 + 1)})
             for i in range(40)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("command", ["train", "score", "calibrate", "import-reference", "import-hf", "export"])
def test_every_command_has_help_with_an_example(command):
    result = invoke("entropy", command, "--help")
    assert result.exit_code == 0
    assert "Example:" in result.output


def test_score_prints_entropies_and_patches(model_dir):
    result = invoke("entropy", "score", model_dir, "--text", "héllo wörld", "--threshold", "5.0", "--no-color")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    table = [line for line in lines if re.match(r"\s+\d+\s", line)]
    assert len(table) == len("héllo wörld".encode()) and table[1].split()[1] == "\\xc3"
    assert "héllo wörld" in result.output
    assert "13 bytes" in lines[-1] and "θ = 5" in lines[-1]
    assert "\x1b[" not in result.output


def test_score_target_patch_size_and_colour(model_dir, tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"def f(x):\n    return x * 2\n" * 4)
    result = invoke("entropy", "score", model_dir, "--file", str(path), "--target-patch-size", "3",
                    "--no-table", "--color")
    assert result.exit_code == 0, result.output
    summary = result.output.splitlines()[-1]
    mean = float(summary.split("mean ")[1].split(" ")[0])
    assert 2.0 < mean < 4.0
    assert "\x1b[" in result.output


def test_score_usage_errors(model_dir, tmp_path):
    assert invoke("entropy", "score", model_dir).exit_code == 2
    assert invoke("entropy", "score", model_dir, "--text", "a", "--threshold", "1", "--target-patch-size", "2").exit_code == 2
    missing = invoke("entropy", "score", str(tmp_path / "nope"), "--text", "a")
    assert missing.exit_code == 1 and "config.json" in missing.output


def test_calibrate_prints_theta(model_dir, corpus):
    result = invoke("entropy", "calibrate", model_dir, corpus, "--target-patch-size", "4")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1  # θ alone on stdout, for scripts
    theta = float(result.stdout)
    assert 0.0 < theta < 6.0
    assert "mean patch 4.0" in result.stderr


def test_train_command_writes_a_resumable_model(tmp_path, corpus):
    out = tmp_path / "trained"
    args = ["entropy", "train", corpus, "-o", str(out), "--preset", "tiny", "--steps", "4", "--seq-len", "64",
            "--batch-size", "4", "--eval-every", "2", "--eval-bytes", "2048"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "held-out" in result.output
    log = json.loads((out / "training.json").read_text())
    assert log["command"].startswith("bltdata entropy train ") and "--steps 4" in log["command"]
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "checkpoints", "training.json"}
    assert (out / "checkpoints" / "step_00000004" / "train_state.pt").is_file()
    result = invoke(*[a if a != "4" else "6" for a in args], "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stderr and "from step 4" in result.stderr
    assert json.loads((out / "training.json").read_text())["step"] == 6
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_00000006"]
    finished = invoke(*[a if a != "4" else "6" for a in args], "--resume")
    assert finished.exit_code == 1 and "already trained 6 steps" in finished.output


def test_train_resume_on_an_empty_directory_fails_clearly(tmp_path, corpus):
    (tmp_path / "empty").mkdir()
    result = invoke("entropy", "train", corpus, "-o", str(tmp_path / "empty"), "--preset", "tiny", "--resume")
    assert result.exit_code == 1 and "nothing to resume from" in result.output


def test_sigint_during_train_then_resume_equals_an_uninterrupted_run(tmp_path, corpus):
    from test_blt_cli import _interrupt_when_logged

    def args(out):
        return ["entropy", "train", corpus, "-o", str(out), "--preset", "tiny", "--steps", "300", "--seq-len", "64",
                "--batch-size", "4", "--eval-every", "5", "--eval-bytes", "1024", "--threads", "1"]

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert invoke(*args(straight)).exit_code == 0
    rc, _, err = _interrupt_when_logged(args(stopped), stopped / "checkpoints" / "latest", 1)
    assert rc == 130 and "interrupted by SIGINT" in err and "--resume" in err.splitlines()[-1]
    step = json.loads((stopped / "training.json").read_text())["step"]
    assert 5 <= step < 300
    resumed = invoke(*args(stopped), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert f"from step {step} " in resumed.stderr
    for name in ("model.safetensors", "checkpoints/step_00000300/model.safetensors"):
        assert (straight / name).read_bytes() == (stopped / name).read_bytes(), name
    logs = [json.loads((d / "training.json").read_text()) for d in (straight, stopped)]
    assert len(logs[0]["history"]) == 60 and logs[0]["history"] == logs[1]["history"]


def test_import_reference_command(tmp_path):
    state = {"tok_embeddings.weight": torch.randn(260, 64), "norm.weight": torch.ones(64),
             "output.weight": torch.randn(260, 64)}
    for w in ("wq", "wk", "wv", "wo"):
        state[f"layers.0.attention.{w}.weight"] = torch.randn(64, 64)
    for w, shape in (("w1", (256, 64)), ("w3", (256, 64)), ("w2", (64, 256))):
        state[f"layers.0.feed_forward.{w}.weight"] = torch.randn(*shape)
    state["layers.0.attention_norm.weight"] = state["layers.0.ffn_norm.weight"] = torch.ones(64)
    src = _write_reference(tmp_path / "ref", state)
    result = invoke("entropy", "import-reference", str(src), "-o", str(tmp_path / "ours"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ours" / "model.safetensors").is_file()
    del state["norm.weight"]
    bad = _write_reference(tmp_path / "bad", state)
    result = invoke("entropy", "import-reference", str(bad), "-o", str(tmp_path / "x"))
    assert result.exit_code == 1 and "missing keys ['norm.weight']" in result.output


def _write_reference(directory, state):
    directory.mkdir()
    params = {"dim": 64, "n_layers": 1, "n_heads": 2, "max_seqlen": 256, "ffn_dim_multiplier": 1.0, "vocab_size": 260}
    (directory / "params.json").write_text(json.dumps({"entropy_model": params}))
    torch.save({"model": state}, directory / "consolidated.pth")
    return directory
