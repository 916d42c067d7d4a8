"""Direct tests of `bltdata.blt.checkpoint`: names, save/load round trip, the `latest` pointer and
atomic saves, pruning to the newest N, RNG states, and what it refuses."""
import json
import random

import numpy as np
import pytest
import torch

from bltdata.blt import checkpoint as ckpt
from bltdata.blt.config import BLTConfig
from bltdata.blt.model import build_model

TINY = BLTConfig(dim_local=32, n_heads_local=2, n_heads_cross=2, dim_global=64, n_heads_global=2,
                 n_layers_global=1, n_layers_decoder=1, local_window=16, hash_table_size=257)


def trained(seed: int, width: int = 4):
    """A small model and an AdamW that has taken one step (so its state holds moments)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.Linear(width, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(5, 3)).square().sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    return model, optimizer


def save(run_dir, step, model, optimizer, keep=ckpt.KEEP_CHECKPOINTS, rank_state=None):
    return ckpt.save_checkpoint(run_dir, step, model, optimizer, {"step": step, "tokens": 10 * step},
                                rank_state or {"loader": {"position": step}}, rank=0, world_size=1, keep=keep)


def test_names():
    assert ckpt.step_name(200) == "step_00000200"
    assert ckpt.rank_file(3) == "rank_00003.pt"


def test_save_then_load_restores_model_optimizer_trainer_and_rank_states(tmp_path):
    model, optimizer = trained(0)
    path = save(tmp_path, 7, model, optimizer, rank_state={"loader": {"position": 123}, "rng": ckpt.rng_state()})
    assert path == tmp_path / "checkpoints" / "step_00000007"
    assert sorted(p.name for p in path.iterdir()) == ["model.pt", "optimizer.pt", "rank_00000.pt", "trainer.json"]
    other, other_optimizer = trained(1)
    assert not torch.equal(other[0].weight, model[0].weight)
    trainer, rank_states = ckpt.load_training_state(path, other, other_optimizer)
    assert trainer == {"step": 7, "tokens": 70, "world_size": 1}
    assert len(rank_states) == 1 and rank_states[0]["loader"] == {"position": 123}
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(model.parameters(), other.parameters()):
        sa, sb = optimizer.state[a], other_optimizer.state[b]
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
        assert float(sa["step"]) == float(sb["step"]) == 1.0
    # the restored pair continues exactly as the saved one does
    for m, o in ((model, optimizer), (other, other_optimizer)):
        m(torch.full((2, 3), 0.5)).sum().backward()
        o.step()
    assert torch.equal(model[1].weight, other[1].weight)


def test_latest_names_the_newest_and_only_the_newest_n_are_kept(tmp_path):
    model, optimizer = trained(0)
    for step in (1, 2, 3):
        save(tmp_path, step, model, optimizer, keep=2)
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_00000002", "step_00000003"]
    assert (checkpoints / "latest").read_text() == "step_00000003\n"
    assert ckpt.latest_checkpoint(tmp_path) == checkpoints / "step_00000003"
    save(tmp_path, 10, model, optimizer, keep=1)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_00000010"]
    for step in (11, 12):
        save(tmp_path, step, model, optimizer, keep=0)  # 0: keep every one
    assert sorted(p.name for p in checkpoints.glob("step_*")) == ["step_00000010", "step_00000011", "step_00000012"]


def test_a_crash_while_saving_leaves_the_previous_checkpoint_newest(tmp_path, monkeypatch):
    model, optimizer = trained(0)
    save(tmp_path, 1, model, optimizer)
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if str(f).endswith("optimizer.pt"):
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, 2, model, optimizer)
    monkeypatch.setattr(torch, "save", real_save)
    checkpoints = tmp_path / "checkpoints"
    assert not (checkpoints / "step_00000002").exists()  # only its staging directory was written
    assert (checkpoints / ".step_00000002.tmp").is_dir()
    assert ckpt.latest_checkpoint(tmp_path) == checkpoints / "step_00000001"
    (tmp_path / ckpt.RUN_FILE).write_text(json.dumps({"model": {}}))
    assert ckpt.resume_point(tmp_path) == (checkpoints / "step_00000001", 1)
    save(tmp_path, 2, model, optimizer)  # saving again replaces the stale staging directory
    assert not (checkpoints / ".step_00000002.tmp").exists()
    assert ckpt.resume_point(tmp_path) == (checkpoints / "step_00000002", 2)


def test_resume_point_and_latest_say_why_there_is_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a training run directory"):
        ckpt.resume_point(tmp_path)
    (tmp_path / ckpt.RUN_FILE).write_text("{}")
    assert ckpt.latest_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="nothing to resume from"):
        ckpt.resume_point(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("step_00000005\n")
    with pytest.raises(FileNotFoundError, match="names step_00000005, which is missing or incomplete"):
        ckpt.latest_checkpoint(tmp_path)
    (tmp_path / "checkpoints" / "step_00000005").mkdir()  # there, but without trainer.json
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        ckpt.resume_point(tmp_path)


def test_loading_refuses_missing_ranks_other_shapes_and_corrupt_files(tmp_path):
    model, optimizer = trained(0)
    path = save(tmp_path, 4, model, optimizer)
    trainer = json.loads((path / "trainer.json").read_text())
    (path / "trainer.json").write_text(json.dumps({**trainer, "world_size": 2}))
    with pytest.raises(FileNotFoundError, match="rank_00001.pt: missing .* saved by 2 ranks"):
        ckpt.load_training_state(path, *trained(1))
    (path / "trainer.json").write_text(json.dumps(trainer))
    wider, wider_optimizer = trained(1, width=5)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(RuntimeError, match="model.pt: does not fit this model, nothing was loaded: size mismatch "
                                           r"for 0.weight: saved \(4, 3\), model \(5, 3\)"):
        ckpt.load_training_state(path, wider, wider_optimizer)
    assert all(torch.equal(before[k], v) for k, v in wider.state_dict().items())  # not partly overwritten
    raw = (path / "model.pt").read_bytes()
    (path / "model.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RuntimeError):
        ckpt.load_training_state(path, *trained(1))


def test_rng_state_round_trip():
    state = ckpt.rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_load_model_rebuilds_the_run_model_at_its_latest_or_a_named_checkpoint(tmp_path):
    (tmp_path / ckpt.RUN_FILE).write_text(json.dumps({"model": TINY.to_dict(), "train": {}}))
    with pytest.raises(FileNotFoundError, match="no checkpoint yet"):
        ckpt.load_model(tmp_path)
    torch.manual_seed(0)
    model = build_model(TINY)
    optimizer = torch.optim.AdamW(model.parameters())
    save(tmp_path, 1, model, optimizer)
    at_step_1 = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    save(tmp_path, 2, model, optimizer)
    loaded, run = ckpt.load_model(tmp_path)
    assert BLTConfig.from_dict(run["model"]) == TINY and not loaded.training
    state = model.state_dict()
    assert len(state) > 0 and loaded.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    first, _ = ckpt.load_model(tmp_path, checkpoint="step_00000001")
    assert all(torch.equal(v, at_step_1[k]) for k, v in first.state_dict().items())
    assert not torch.equal(next(first.parameters()), next(loaded.parameters()))
