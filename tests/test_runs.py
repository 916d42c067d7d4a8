"""Run presets as whole runs, overrides, and what a resume may change (`bltdata.runs` and the two registries)."""
import pytest

from bltdata import runs
from bltdata.blt import runs as blt_runs
from bltdata.blt.config import blt_1b
from bltdata.entropy import runs as entropy_runs


def test_override_replaces_only_given_settings_and_validates():
    base = blt_runs.BltTrainConfig()
    changed = runs.override(base, {"steps": 50, "lr": None, "sharding": "fsdp"})
    assert (changed.steps, changed.lr, changed.sharding) == (50, base.lr, "fsdp")
    with pytest.raises(ValueError, match="no setting warmup"):
        runs.override(base, {"warmup": 3})
    with pytest.raises(ValueError, match="batch_size >= 1"):
        runs.override(base, {"batch_size": 0})


def test_resume_with_applies_listed_settings_and_refuses_the_others():
    stored = blt_runs.BltTrainConfig(steps=100, batch_size=4)
    same = {"steps": 100, "batch_size": 4, "seed": None}  # equal values are accepted whatever the setting
    assert runs.resume_with(stored, same, blt_runs.RESUME_APPLIES) == (stored, {})
    resumed, changed = runs.resume_with(stored, {"steps": 300, "checkpoint_every": 0}, blt_runs.RESUME_APPLIES)
    assert (resumed.steps, resumed.checkpoint_every, resumed.batch_size) == (300, 0, 4)
    assert changed == {"steps": (100, 300), "checkpoint_every": (100, 0)}
    with pytest.raises(runs.ResumeConflict) as refused:
        runs.resume_with(stored, {"steps": 300, "batch_size": 8, "lr": 1.0}, blt_runs.RESUME_APPLIES)
    assert refused.value.conflicts == [("batch_size", 8, 4), ("lr", 1.0, 3e-3)]
    assert "batch_size 8 (the run has 4)" in str(refused.value)
    flags = refused.value.describe(lambda name: "--" + name.replace("_", "-"))
    assert flags.endswith("--batch-size 8 (the run has 4); --lr 1.0 (the run has 0.003)")


def test_blt_presets_are_whole_runs():
    assert set(blt_runs.PRESETS) == {"debug", "blt-1b", "blt-7b", "byte-debug"}
    one = blt_runs.preset("blt-1b")
    assert one.model == blt_1b() and one.train.sharding == "fsdp"
    assert blt_runs.preset("debug").train.sharding == "ddp" and blt_runs.preset("debug").train.eval_batches == 16
    resolved = blt_runs.resolve("blt-1b", {"steps": 7, "sharding": None})
    assert resolved.train.steps == 7 and resolved.train.sharding == "fsdp" and resolved.to_dict()["preset"] == "blt-1b"
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        blt_runs.preset("huge")


def test_entropy_presets_fix_their_derived_defaults():
    run = entropy_runs.resolve("tiny", {"steps": 300})
    assert run.model.max_seqlen == 256 and run.train.seq_len == 256  # the model's context
    assert run.train.warmup_steps == 30 and run.train.steps == 300  # min(200, steps // 10), then fixed
    assert entropy_runs.resolve("small", {}).train.warmup_steps == 100
    assert entropy_runs.resolve("small", {"warmup_steps": 0, "seq_len": 64}).train.seq_len == 64
    stored = run.train
    resumed, changed = runs.resume_with(stored, {"steps": 3000}, entropy_runs.RESUME_APPLIES)
    assert resumed.warmup_steps == 30 and changed == {"steps": (300, 3000)}  # a longer run keeps its warmup
    with pytest.raises(runs.ResumeConflict, match="preset 'small'"):
        runs.resume_with(stored, {"preset": "small"}, entropy_runs.RESUME_APPLIES)
