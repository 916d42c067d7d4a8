"""`bltdata train / eval / generate` on small shard sets written in the test (real loader)."""
import json
import shutil

import pytest
from click.testing import CliRunner

from bltdata import shards
from bltdata.cli.main import main
from bltdata.patching import PatcherConfig, patch_lengths

SPACE = PatcherConfig(mode="space", max_patch_length=8)
WORDS = b"the byte latent transformer reads patches of bytes and predicts the next byte".split()


def write_shards(out, n_docs, seed, patcher=SPACE):
    import numpy as np

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    writer = shards.ShardWriter(out / "part-00000.parquet", patcher=patcher.to_dict(), row_group_bytes=2000)
    for i in range(n_docs):
        data = b" ".join(WORDS[j] for j in rng.integers(0, len(WORDS), size=int(rng.integers(4, 40))))
        writer.add(f"doc-{i}", "synthetic", data, patch_lengths(SPACE, data))
    shards.write_manifest(out, {"test": True}, [writer.close()], 0, data_dir="", patcher=patcher.to_dict())
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("blt_cli")
    return write_shards(root / "train", 300, 0), write_shards(root / "heldout", 40, 1), root


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def train_args(corpus, run, steps=6, *extra):
    train_dir, heldout, _ = corpus
    return ["train", "--data", train_dir, "--eval-data", heldout, "-o", run, "--preset", "debug",
            "--steps", steps, "--seq-len", 65, "--batch-size", 2, "--checkpoint-every", 3, "--eval-batches", 2,
            "--device", "cpu", *extra]


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_eval_generate_and_resume(corpus, tmp_path):
    run = tmp_path / "run"
    result = invoke(*train_args(corpus, run))
    assert result.exit_code == 0, result.output
    assert "FLOPs/byte" in result.output and "held-out" in result.output
    full = metrics(run)
    assert [r["step"] for r in full] == [1, 2, 3, 4, 5, 6] and full[-1]["eval"]["bytes"] > 0

    # resume from step 3 (drop the last checkpoint): the loss curve continues identically
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_00000006")
    (resumed / "checkpoints" / "latest").write_text("step_00000003\n")
    assert invoke("train", "-o", resumed, "--resume").exit_code == 0
    assert [r["loss"] for r in metrics(resumed)] == [r["loss"] for r in full]  # records 4-6 replaced
    again = invoke(*train_args(corpus, run))
    assert again.exit_code == 1 and "already holds a training run" in again.output

    out = invoke("eval", run, "--data", corpus[1], "--json", "--device", "cpu")
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["bytes"] > 0 and 0 < report["bpb"] < 9 and report["eos_counted"] is True

    gen = invoke("generate", run, "--prompt", "the byte", "--max-bytes", 5, "--device", "cpu")
    assert gen.exit_code == 0, gen.output
    assert gen.output.startswith("the byte") and "bytes generated" in gen.output


def test_errors_name_the_problem(corpus, tmp_path):
    missing = invoke("train", "--data", tmp_path / "nope", "-o", tmp_path / "r", "--steps", 1)
    assert missing.exit_code == 1 and "nope" in missing.output
    assert invoke("train", "-o", tmp_path / "r2").exit_code == 2  # --data is required
    not_a_run = invoke("eval", tmp_path, "--data", corpus[1])
    assert not_a_run.exit_code == 1 and "run.json" in not_a_run.output


def test_every_command_has_an_example_and_presets_match():
    from bltdata.blt.config import PRESETS
    from bltdata.blt.runs import PRESETS as RUN_PRESETS
    from bltdata.cli.train import COMMANDS

    assert tuple(PRESETS) == tuple(RUN_PRESETS)  # every model shape has its run
    assert all(make().model == PRESETS[name]() for name, make in RUN_PRESETS.items())
    assert len(COMMANDS) == 3 and all("Example:" in c.help for c in COMMANDS)


def _interrupt_when_logged(args, log_file, min_lines, timeout=120):
    """Run `bltdata ARGS` in a subprocess; SIGINT it once ``log_file`` has ``min_lines`` lines (it has started)."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", "from bltdata.cli.main import main; main()", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if log_file.is_file() and len(log_file.read_text().splitlines()) >= min_lines:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_sigint_saves_a_checkpoint_and_resume_continues_the_same_curve(corpus, tmp_path):
    steps = 60
    full = tmp_path / "full"
    assert invoke(*train_args(corpus, full, steps, "--checkpoint-every", 0)).exit_code == 0
    run = tmp_path / "interrupted"
    rc, _, err = _interrupt_when_logged(train_args(corpus, run, steps, "--checkpoint-every", 0),
                                        run / "metrics.jsonl", 2)
    assert rc == 130 and "interrupted by SIGINT" in err and f"bltdata train -o {run} --resume" in err
    from bltdata.blt.checkpoint import resume_point

    _, stopped = resume_point(run)
    assert 2 <= stopped < steps  # saved where it stopped, not only at the (never reached) end
    resumed = invoke("train", "-o", run, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming {run} from step {stopped} of {steps}" in resumed.stderr
    losses = [r["loss"] for r in metrics(run)]
    assert len(losses) == steps and losses == [r["loss"] for r in metrics(full)]  # bit for bit on CPU

    finished = invoke("train", "-o", run, "--resume")
    assert finished.exit_code == 1 and "already finished (step 60 of 60)" in finished.output
    fewer_steps = invoke("train", "-o", run, "--resume", "--steps", 30)  # applied, so: nothing left to do
    assert fewer_steps.exit_code == 1 and "already finished (step 60 of 30)" in fewer_steps.output


def test_resume_without_a_checkpoint_fails_clearly(corpus, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("train", "-o", empty, "--resume")
    assert result.exit_code == 1 and "not a training run directory" in result.output
    started = tmp_path / "started"  # run.json written, killed before its first checkpoint
    started.mkdir()
    (started / "run.json").write_text(json.dumps({"model": {}, "train": {}, "data": {"sources": []}}))
    result = invoke("train", "-o", started, "--resume")
    assert result.exit_code == 1 and "nothing to resume from" in result.output


def test_show_preset_prints_the_resolved_run_with_the_options_given():
    shown = invoke("train", "--show-preset", "blt-1b")
    assert shown.exit_code == 0, shown.output
    run = json.loads(shown.output)
    assert run["preset"] == "blt-1b" and run["train"]["sharding"] == "fsdp"  # parallelism is part of the preset
    assert run["model"]["dim_global"] == 2048 and run["train"]["eval_batches"] == 16
    debug = json.loads(invoke("train", "--show-preset", "debug", "--eval-batches", 3, "--sharding", "fsdp").output)
    assert debug["train"]["eval_batches"] == 3 and debug["train"]["sharding"] == "fsdp"
    assert debug["train"]["lr"] == 3e-3 and debug["train"]["steps"] == 200  # not given: the preset's
    help_text = invoke("train", "--help").output
    assert "--show-preset" in help_text and "REFUSES" in help_text and "APPLIES" in help_text


def test_the_resolved_run_is_recorded_and_resume_applies_steps_refuses_shape(corpus, tmp_path):
    run = tmp_path / "run"
    assert invoke(*train_args(corpus, run)).exit_code == 0
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["preset"] == "debug" and recorded["data"]["eval_data"] == str(corpus[1])
    assert recorded["train"]["eval_batches"] == 2 and recorded["train"]["seq_len"] == 65  # given
    assert recorded["train"]["lr"] == 3e-3 and recorded["train"]["warmup_steps"] == 20  # the preset's

    for flag, value, stored in (("--batch-size", 4, "2"), ("--preset", "byte-debug", "debug"),
                                ("--seed", 1, "0"), ("--data", corpus[1], str(corpus[0]))):
        refused = invoke("train", "-o", run, "--resume", "--steps", 9, flag, value)
        assert refused.exit_code == 2, (flag, refused.output)
        assert f"{flag} " in refused.output and f"(the run has {stored}" in refused.output.replace("['", "")
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4, 5, 6]  # nothing ran

    longer = invoke("train", "-o", run, "--resume", "--steps", 9, "--checkpoint-every", 0, "--batch-size", 2)
    assert longer.exit_code == 0, longer.output
    assert f"resuming {run} from step 6 of 9" in longer.stderr
    assert "applied on resume: --steps 9 (the run had 6)" in longer.stderr
    assert "--checkpoint-every 0 (the run had 3)" in longer.stderr and "--batch-size" not in longer.stderr
    assert [r["step"] for r in metrics(run)] == list(range(1, 10)) and "eval" in metrics(run)[-1]
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["train"]["steps"] == 9 and recorded["train"]["checkpoint_every"] == 0
    assert recorded["resumes"] == [{"step": 6, "changed": {"steps": [6, 9], "checkpoint_every": [3, 0]}}]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000009"
