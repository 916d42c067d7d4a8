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
    # the nearest step of the mean-patch function: ties among a random model's entropies make steps of
    # several patches (fp32 here gave 3.969, bf16 4.000)
    mean = float(re.search(r"mean patch ([0-9.]+) bytes", result.stderr).group(1))
    assert abs(mean - 4.0) < 0.08, result.stderr


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
    longer = list(args)
    longer[longer.index("--steps") + 1] = "6"  # only --steps changes: the batch size is the run's shape
    result = invoke(*longer, "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stderr and "from step 4" in result.stderr
    assert "applied on resume: --steps 6 (the run had 4)" in result.stderr
    log = json.loads((out / "training.json").read_text())
    assert log["step"] == 6 and log["config"]["steps"] == 6 and "--steps 6" in log["command"]
    assert log["resumes"] == [{"step": 4, "changed": {"steps": [4, 6]}}]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_00000006"]
    finished = invoke(*longer, "--resume")
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


def test_calibrate_write_records_the_theta_score_then_uses(model_dir, corpus):
    result = invoke("entropy", "calibrate", model_dir, corpus, "--target-patch-size", "4", "--write")
    assert result.exit_code == 0, result.output
    theta = float(result.stdout)
    meta = json.loads(open(f"{model_dir}/config.json").read())
    assert meta["recommended_threshold"] == theta and meta["recommended_target_patch_size"] == 4.0
    scored = invoke("entropy", "score", model_dir, "--text", "some words and numbers", "--no-table")
    assert scored.exit_code == 0, scored.output
    assert f"θ = {theta:.6g} (recommended by {model_dir}'s config.json, calibrated for 4-byte patches)" in scored.output
    explicit = invoke("entropy", "score", model_dir, "--text", "some words", "--no-table", "--threshold", "2")
    assert "θ = 2 (--threshold)" in explicit.output
    bundled = invoke("entropy", "calibrate", "default", corpus, "--target-patch-size", "4", "--write")
    assert bundled.exit_code == 1 and "bundled model" in bundled.output


def test_theta_rule_precedence(model_dir):
    from bltdata.entropy.calibrate import choose_threshold
    from bltdata.entropy.checkpoint import record_threshold
    from bltdata.patching import DEFAULT_THRESHOLD

    assert choose_threshold(model_dir, "entropy").threshold == DEFAULT_THRESHOLD  # records none
    record_threshold(model_dir, 0.75, 4.5, "test")
    assert choose_threshold(model_dir, "entropy").threshold == 0.75
    assert choose_threshold(model_dir, "monotonic").threshold == DEFAULT_THRESHOLD  # an entropy-mode θ only
    assert choose_threshold(model_dir, "entropy", target_patch_size=3, calibrate=lambda: 0.5).threshold == 0.5
    assert choose_threshold(model_dir, "entropy", threshold=2.0, calibrate=lambda: 0.5).threshold == 2.0
    assert choose_threshold(model_dir, "entropy").mismatch(10.0) is not None
    assert choose_threshold(model_dir, "entropy").mismatch(5.0) is None


def _word_corpus(path, n_docs, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "the", "of", "and", "data", "byte", "patch", "x", "7"]
    with open(path, "w") as f:
        for i in range(n_docs):
            text = " ".join(words[j] for j in rng.integers(0, len(words), int(rng.integers(20, 80))))
            f.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")
    return str(path)


def _mean_patch(output):
    return float(re.search(r"mean patch\s+([0-9.]+) bytes", output).group(1))


def test_a_freshly_trained_model_patches_near_its_calibrated_mean_patch(tmp_path):
    from bltdata.entropy.checkpoint import record_threshold

    model = tmp_path / "mine"
    train = invoke("entropy", "train", _word_corpus(tmp_path / "train.jsonl", 120, 0), "-o", str(model),
                   "--preset", "tiny", "--steps", "40", "--seq-len", "128", "--batch-size", "8", "--lr", "1e-2",
                   "--eval-every", "20", "--eval-bytes", "4096", "--threads", "1")
    assert train.exit_code == 0, train.output
    meta = json.loads((model / "config.json").read_text())
    assert meta["recommended_target_patch_size"] == 4.5 and "θ = " in train.output
    fresh = _word_corpus(tmp_path / "fresh.jsonl", 60, 1)  # same kind of text, not seen in training
    patched = invoke("patch", fresh, "-o", str(tmp_path / "shards"), "--model", str(model), "--no-progress")
    assert patched.exit_code == 0, patched.output
    assert f"θ = {meta['recommended_threshold']:.6g} (recommended by" in patched.output
    assert 4.5 / 1.5 <= _mean_patch(patched.output) <= 4.5 * 1.5 and "WARNING" not in patched.output
    record_threshold(model, meta["recommended_threshold"], 20.0, "a θ recorded for other data")
    off = invoke("patch", fresh, "-o", str(tmp_path / "shards2"), "--model", str(model), "--no-progress")
    assert off.exit_code == 0 and "WARNING" in off.output and "far from the 20 bytes" in off.output


def test_show_preset_and_the_resolved_run_in_training_json(tmp_path, corpus):
    shown = invoke("entropy", "train", "--show-preset", "paper-100m", "--steps", "50")
    assert shown.exit_code == 0, shown.output
    run = json.loads(shown.output)
    assert run["preset"] == "paper-100m" and run["model"]["dim"] == 768
    assert run["train"]["seq_len"] == 8192 and run["train"]["steps"] == 50 and run["train"]["warmup_steps"] == 5
    assert run["train"]["batch_size"] == 16 and run["train"]["eval_every"] == 200  # the preset's
    assert "--show-preset" in invoke("entropy", "train", "--help").output

    out = tmp_path / "m"
    args = ["entropy", "train", corpus, "-o", str(out), "--preset", "tiny", "--steps", "2", "--batch-size", "2",
            "--eval-every", "2", "--eval-bytes", "1024"]
    assert invoke(*args).exit_code == 0
    config = json.loads((out / "training.json").read_text())["config"]
    assert config["preset"] == "tiny" and config["batch_size"] == 2 and config["steps"] == 2  # given
    assert config["seq_len"] == 256 and config["warmup_steps"] == 0 and config["lr"] == 3e-3  # resolved from tiny

    for extra, flag, stored in ((["--batch-size", "3"], "--batch-size 3", "2"), (["--preset", "small"],
                                "--preset small", "tiny"), (["--seed", "7"], "--seed 7", "0")):
        refused = invoke("entropy", "train", "-o", str(out), "--resume", "--steps", "4", *extra)
        assert refused.exit_code == 2, refused.output
        assert f"{flag} (the run has {stored})" in refused.output
    other_corpus = invoke("entropy", "train", "default", "-o", str(out), "--resume", "--steps", "4")
    assert other_corpus.exit_code == 2 and "INPUT... ['default']" in other_corpus.output
    assert json.loads((out / "training.json").read_text())["step"] == 2  # nothing ran
    longer = invoke("entropy", "train", "-o", str(out), "--resume", "--steps", "4")  # INPUT... from the run
    assert longer.exit_code == 0, longer.output
    assert json.loads((out / "training.json").read_text())["step"] == 4


def test_the_cli_preset_names_are_the_run_presets():
    from bltdata.cli.entropy import PRESET_NAMES
    from bltdata.entropy.model import PRESETS as MODEL_PRESETS
    from bltdata.entropy.runs import PRESETS

    assert PRESET_NAMES == tuple(PRESETS) == tuple(MODEL_PRESETS)


def test_train_help_shows_the_readme_command():
    """The first example of `entropy train --help` is the README's timed command, word for word."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    readme_command = next(line.split("#")[0].strip() for line in readme.splitlines()
                          if line.startswith("bltdata entropy train bltdata-demo/corpus/"))
    assert "--steps 300" in readme_command
    help_text = invoke("entropy", "train", "--help").output
    examples = help_text.split("Example", 1)[1].splitlines()
    first = next(line.strip() for line in examples if line.strip().startswith("bltdata "))
    assert first == readme_command
