"""BLT training loop: schedule, exact resume, DDP/FSDP2 equivalence and resume (gloo, 2 processes), learning."""
import json

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from bltdata.blt.config import BLTConfig, debug
from bltdata.blt.distributed import Runtime
from bltdata.blt.synthetic import InMemoryBatches, static_patches
from bltdata.blt.runs import BltTrainConfig
from bltdata.blt.train import train
from bltdata.patching import PatcherConfig, patch_lengths

TINY = BLTConfig(dim_local=32, n_heads_local=2, n_heads_cross=2, dim_global=64, n_heads_global=2,
                 n_layers_global=1, n_layers_decoder=1, local_window=16, hash_table_size=257)


def text_docs(count: int, seed: int = 0) -> list[tuple[bytes, list[int]]]:
    rng = np.random.default_rng(seed)
    words = [b"byte", b"latent", b"patch", b"entropy", b"the", b"of", b"model", b"data"]
    docs = []
    for _ in range(count):
        data = b" ".join(words[i] for i in rng.integers(0, len(words), size=int(rng.integers(3, 30))))
        docs.append((data, static_patches(len(data), 3)))
    return docs


def run_records(tmp_path, name, steps=6, batch_size=2, rt=Runtime(), crash_at=None, resume=False, **kw):
    cfg = BltTrainConfig(steps=steps, batch_size=batch_size, seq_len=33, lr=1e-2, warmup_steps=2,
                         checkpoint_every=3, **kw)
    source = InMemoryBatches(text_docs(40), 33, batch_size, rank=rt.rank, world_size=rt.world_size)

    def on_step(record):
        if record["step"] == crash_at:
            raise KeyboardInterrupt("simulated crash")

    try:
        return train(TINY, cfg, source, tmp_path / name, rt, resume=resume, on_step=on_step)
    except KeyboardInterrupt:
        return None


def test_schedule_warms_up_then_decays_to_the_floor():
    lr_at = BltTrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1).schedule().lr_at
    assert lr_at(0) == pytest.approx(0.1) and lr_at(9) == pytest.approx(1.0)
    assert lr_at(55) == pytest.approx(0.55)
    assert lr_at(99) == pytest.approx(0.1, abs=1e-3)
    rates = [lr_at(s) for s in range(10, 100)]
    assert len(rates) == 90 and all(a >= b for a, b in zip(rates, rates[1:]))
    with pytest.raises(ValueError, match="lr > 0"):
        BltTrainConfig(lr=0)


def test_resume_reproduces_the_uninterrupted_loss_curve(tmp_path):
    full = run_records(tmp_path, "full")
    assert run_records(tmp_path, "split", crash_at=5) is None  # checkpoint at 3, crash during 5
    resumed = run_records(tmp_path, "split", resume=True)
    assert [r["step"] for r in resumed] == [4, 5, 6]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full[3:]]  # bit for bit on CPU
    assert (tmp_path / "split" / "checkpoints" / "latest").read_text().strip() == "step_00000006"
    split_lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in split_lines] == [1, 2, 3, 4, 5, 6]  # the crashed 4 is gone
    lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5, 6]


def _distributed_worker(rank, world_size, tmp_path, sharding):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=rank,
                                         world_size=world_size)
    torch.set_num_threads(1)
    records = run_records(tmp_path, sharding, steps=3, batch_size=2, rt=Runtime(rank, world_size, "cpu"),
                          sharding=sharding)
    resumed = run_records(tmp_path, sharding, steps=4, batch_size=2, rt=Runtime(rank, world_size, "cpu"),
                          sharding=sharding, resume=True)  # loads the step-3 checkpoint into the wrapped model
    if rank == 0:
        (tmp_path / "losses.json").write_text(json.dumps([r["loss"] for r in records]))
        (tmp_path / "resumed.json").write_text(json.dumps([r["step"] for r in resumed]))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path, sharding):
    single = run_records(tmp_path, "single", steps=3, batch_size=4)  # rows 0..3 of each global batch
    mp.spawn(_distributed_worker, args=(2, tmp_path, sharding), nprocs=2, join=True)  # rank r: rows r, r + 2
    distributed = json.loads((tmp_path / "losses.json").read_text())
    assert len(distributed) == 3
    np.testing.assert_allclose(distributed, [r["loss"] for r in single], rtol=1e-5)
    assert distributed[2] < distributed[0]  # the updates were applied (steps 2 and 3 see trained weights)
    assert (tmp_path / sharding / "checkpoints" / "step_00000003" / "model.pt").is_file()
    assert json.loads((tmp_path / "resumed.json").read_text()) == [4]  # resumed from step 3 under DDP/FSDP2


def corpus_split(max_bytes: int):
    """Space-patched documents of the embedded corpus: (train, held-out) by document parity."""
    from bltdata.corpus import default_corpus_files

    config = PatcherConfig(mode="space", max_patch_length=12)
    docs = [(data, patch_lengths(config, data).tolist()) for _, data in default_corpus_files(max_bytes)]
    return [d for i, d in enumerate(docs) if i % 8], docs[::8]


@pytest.mark.slow
def test_debug_preset_learns_well_below_uniform_bpb(tmp_path):
    train_docs, held_out = corpus_split(400_000)
    cfg = BltTrainConfig(steps=200, batch_size=8, seq_len=257, lr=3e-3, warmup_steps=20)
    held = lambda: InMemoryBatches(held_out, 257, 8, shuffle=False)  # noqa: E731
    records = train(debug(), cfg, InMemoryBatches(train_docs, 257, 8), tmp_path / "run", eval_data=held)
    final = records[-1]["eval"]["bpb"]
    # uniform over 256 bytes is 8 bits; measured 2.19 (after 50 steps: 3.36, 100: 2.60, 150: 2.26)
    assert final < 2.5, final


def test_resume_extends_steps_and_refuses_another_batch_size(tmp_path):
    from bltdata.runs import ResumeConflict

    full = run_records(tmp_path, "long", steps=8)
    assert [r["step"] for r in run_records(tmp_path, "run", steps=6)] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ResumeConflict, match="batch_size 3"):
        run_records(tmp_path, "run", steps=8, batch_size=3, resume=True)
    resumed = run_records(tmp_path, "run", steps=8, resume=True)
    assert [r["step"] for r in resumed] == [7, 8]
    assert resumed[-1]["lr"] == full[-1]["lr"]  # the schedule now ends at step 8
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["train"]["steps"] == 8 and run["resumes"] == [{"step": 6, "changed": {"steps": [6, 8]}}]
