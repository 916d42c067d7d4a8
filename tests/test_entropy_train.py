"""Training: held-out split, packing, schedule, BPB going down, exact resume."""
import json
import math

import numpy as np
import pytest
import torch

from bltdata.entropy.model import EntropyModel, tiny
from bltdata.entropy.runs import EntropyTrainConfig
from bltdata.entropy.train import (
    PackedStream,
    evaluate_bpb,
    load_documents,
    split_heldout,
    train_entropy_model,
)
from bltdata.ids import BOS_ID, EOS_ID


def _corpus(tmp_path, n_docs=120, seed=0):
    """A jsonl corpus of small, very regular documents (a model learns them in a few steps)."""
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "the", "of", "and", "data", "byte", "patch"]
    path = tmp_path / "corpus.jsonl"
    with open(path, "w") as f:
        for i in range(n_docs):
            text = " ".join(words[j] for j in rng.integers(0, len(words), int(rng.integers(20, 60)))) + "."
            f.write(json.dumps({"id": f"doc{i}", "text": text}) + "\n")
    return path


def _config(tmp_path, corpus, **kw):
    settings = dict(inputs=[str(corpus)], out_dir=str(tmp_path / "model"), preset="tiny", steps=40,
                    seq_len=128, batch_size=8, lr=1e-2, eval_every=20, eval_bytes=4096, heldout_percent=10.0)
    return EntropyTrainConfig(**{**settings, **kw})


def test_load_documents_and_split(tmp_path):
    docs = load_documents([str(_corpus(tmp_path))])
    assert len(docs) == 120 and all(isinstance(d, bytes) and d for d in docs)
    train, heldout = split_heldout(docs, 10.0)
    assert len(train) + len(heldout) == len(docs) and 0 < len(heldout) < 40
    assert not set(train) & set(heldout)
    train2, heldout2 = split_heldout(list(reversed(docs)), 10.0)
    assert sorted(heldout2) == sorted(heldout)  # by content hash, not by position


def test_heldout_is_a_share_of_the_bytes_with_a_minimum_of_documents(tmp_path):
    docs = load_documents([str(_corpus(tmp_path))])
    total = sum(map(len, docs))
    _, heldout = split_heldout(docs, 10.0, min_docs=3)
    held = sum(map(len, heldout))
    assert len(heldout) > 3 and 0.10 * total <= held < 0.10 * total + max(map(len, docs))
    _, few = split_heldout(docs, 1.0, min_docs=16)
    assert len(few) == 16  # 1 % of these bytes is fewer documents than the minimum
    same = [b"the same document"] * 10 + docs[:5]
    train, heldout = split_heldout(same, 10.0, min_docs=1)
    assert len(train) + len(heldout) == 15 and not set(train) & set(heldout)  # duplicates stay together


def test_the_best_checkpoint_by_heldout_bpb_is_kept(tmp_path, monkeypatch):
    import bltdata.entropy.train as entropy_train

    scores = iter([3.0, 2.0, 2.5])  # held-out BPB at steps 2, 4, 6: the best is step 4's model
    monkeypatch.setattr(entropy_train, "evaluate_bpb", lambda *a, **k: next(scores))
    out = tmp_path / "model"
    snapshot = {}

    def on_step(step, metrics):
        if step == 4:
            snapshot["best"] = (out / "model.safetensors").read_bytes()

    result = train_entropy_model(_config(tmp_path, _corpus(tmp_path), steps=6, eval_every=2), on_step=on_step)
    assert result["best_step"] == 4 and result["best_heldout_bpb"] == 2.0 and result["heldout_bpb"] == 2.5
    assert (out / "model.safetensors").read_bytes() == snapshot["best"]
    assert (out / "checkpoints" / "step_00000006" / "model.safetensors").read_bytes() != snapshot["best"]
    assert json.loads((out / "training.json").read_text())["best"] == {"step": 4, "heldout_bpb": 2.0}


def test_packed_stream_windows(tmp_path):
    docs = [b"abc", b"", b"defgh"]
    stream = PackedStream(docs)
    assert len(stream) == sum(len(d) + 2 for d in docs)
    assert stream.tokens[0] == BOS_ID and stream.tokens[4] == EOS_ID
    inputs, targets, doc_ids = stream.sample(16, 6, torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == doc_ids.shape == (16, 6)
    crossing = doc_ids[:, 1:] != doc_ids[:, :-1]
    assert crossing.any()
    assert (targets[:, :-1][crossing] == -100).all()  # no target across a document boundary
    assert (doc_ids[:, 1:] >= doc_ids[:, :-1]).all()
    assert ((targets == -100) | (targets != BOS_ID)).all()


def test_learning_rate_schedule(tmp_path):
    config = _config(tmp_path, "x", steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    rates = [config.schedule().lr_at(s) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)


def test_training_lowers_heldout_bpb(tmp_path):
    corpus = _corpus(tmp_path)
    config = _config(tmp_path, corpus)
    _, heldout = split_heldout(load_documents([str(corpus)]), config.heldout_percent)
    untrained = EntropyModel(tiny())
    untrained.reset_parameters(seed=config.seed)
    before = evaluate_bpb(untrained, heldout, max_bytes=config.eval_bytes)
    assert before > 6.0  # about log2(260) for a fresh model
    seen = []
    result = train_entropy_model(config, on_step=lambda step, m: seen.append((step, m)))
    assert [s for s, _ in seen] == list(range(1, 41))
    assert result["heldout_bpb"] < before - 3.0
    log = json.loads((tmp_path / "model" / "training.json").read_text())
    assert [h["step"] for h in log["history"]] == [20, 40]
    assert log["heldout_bpb"] == pytest.approx(result["heldout_bpb"])
    # θ is calibrated on held-out documents for the 4.5-byte target and recorded beside the model
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert meta["recommended_threshold"] == result["threshold"]["threshold"] > 0
    assert meta["recommended_target_patch_size"] == 4.5
    assert log["threshold"]["mean_patch"] == pytest.approx(4.5, abs=0.25) and log["threshold"]["bytes"] > 0


def test_resume_equals_uninterrupted(tmp_path):
    corpus = _corpus(tmp_path)
    straight = _config(tmp_path, corpus, out_dir=str(tmp_path / "a"), steps=6, eval_every=3)
    train_entropy_model(straight)

    class Stop(Exception):
        pass

    def stop_at_3(step, metrics):
        if step == 3:
            raise Stop

    resumed = _config(tmp_path, corpus, out_dir=str(tmp_path / "b"), steps=6, eval_every=3)
    with pytest.raises(Stop):
        train_entropy_model(resumed, on_step=stop_at_3)
    result = train_entropy_model(resumed, resume=True)
    assert result["step"] == 6
    for name in ("model.safetensors", "checkpoints/step_00000006/model.safetensors"):  # best and last
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_resume_refuses_other_preset_and_missing_state(tmp_path):
    corpus = _corpus(tmp_path, n_docs=20)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_entropy_model(_config(tmp_path, corpus), resume=True)
    train_entropy_model(_config(tmp_path, corpus, steps=2, eval_every=2))
    with pytest.raises(ValueError, match="preset 'tiny'"):
        train_entropy_model(_config(tmp_path, corpus, preset="small"), resume=True)


def test_config_validation(tmp_path):
    with pytest.raises(ValueError):
        _config(tmp_path, "x", steps=0)
    with pytest.raises(ValueError):
        _config(tmp_path, "x", preset="giant")
    with pytest.raises(ValueError):
        _config(tmp_path, "x", heldout_percent=0)
    assert math.isclose(_config(tmp_path, "x", steps=50).warmup, 5)


def test_resume_applies_steps_and_refuses_another_batch_size(tmp_path):
    from bltdata.runs import ResumeConflict

    corpus = _corpus(tmp_path, n_docs=20)
    train_entropy_model(_config(tmp_path, corpus, steps=2, eval_every=2))
    with pytest.raises(ResumeConflict, match="batch_size 4"):
        train_entropy_model(_config(tmp_path, corpus, steps=4, eval_every=2, batch_size=4), resume=True)
    result = train_entropy_model(_config(tmp_path, corpus, steps=4, eval_every=2), resume=True)
    log = json.loads((tmp_path / "model" / "training.json").read_text())
    assert result["step"] == 4 and log["config"]["steps"] == 4 and log["config"]["warmup_steps"] == 0
    assert log["resumes"] == [{"step": 2, "changed": {"steps": [2, 4]}}]
