"""Training loop for the BLT (and the byte baseline): AdamW, warmup + cosine, clipping.

``train`` runs on one process or under ``torchrun`` (the caller initialises the process
group and passes ``Runtime(rank, world_size, device)``); with world_size > 1 the model is
wrapped in DDP, or sharded with FSDP2 ``fully_shard`` per transformer block when
``BltTrainConfig.sharding == "fsdp"``. Each rank reads its own loader (built by the caller
for its rank), so the global batch is ``batch_size × world_size`` rows.

The loss of a step is the mean cross-entropy over all counted targets of the *global*
batch (`loss.py`): each rank scales its sum by world_size / global count, so that the
gradient average DDP/FSDP take equals the single-process gradient of the same rows.

Checkpoints are written every ``checkpoint_every`` steps, every ``checkpoint_minutes`` of
wall time, at the last step, and when ``should_stop()`` turns true (the CLI sets it on
SIGINT/SIGTERM): then the loop saves and raises :class:`bltdata.interrupt.TrainingInterrupted`.
Exact resume: a checkpoint holds model, optimizer, step (the schedule is a function of
it), every rank's RNG states and every rank's loader state; on CPU a resumed run
reproduces the uninterrupted loss curve bit for bit. A resume may change only the settings
of ``RESUME_APPLIES`` (more steps, cadences, sharding; ``run.json`` then records them and
when), any other differing setting is refused (`bltdata.runs`). Progress goes to ``on_step``
callbacks (the CLI draws the progress bar) and to ``metrics.jsonl``.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, Iterable, Protocol

import torch

from bltdata import fs, runs
from bltdata.blt import checkpoint as ckpt
from bltdata.blt.distributed import Runtime, all_reduce_sum, autocast
from bltdata.blt.evaluate import evaluate
from bltdata.blt.flops import flops_per_byte
from bltdata.blt.layers import TransformerBlock
from bltdata.blt.loss import forward_sums, split_batch, target_mask
from bltdata.blt.model import build_model, count_parameters
from bltdata.blt.runs import RESUME_APPLIES, BltTrainConfig
from bltdata.interrupt import CheckpointClock, TrainingInterrupted
from bltdata.optim import adamw, set_lr

log = logging.getLogger(__name__)


class BatchSource(Protocol):
    """What the loop needs from a loader: iteration plus a resumable position."""

    def __iter__(self): ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def wrap_model(model: torch.nn.Module, cfg: BltTrainConfig, rt: Runtime) -> torch.nn.Module:
    """DDP or FSDP2 for world_size > 1; the model unchanged otherwise."""
    if rt.world_size == 1:
        return model
    if cfg.sharding == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():
            if isinstance(module, TransformerBlock):
                fully_shard(module)
        return fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [torch.device(rt.device).index] if torch.device(rt.device).type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def train_step(model, optimizer, batch: dict, step: int, cfg: BltTrainConfig, rt: Runtime) -> dict:
    """One optimizer step on this rank's rows; returns global metrics of the step."""
    inputs = split_batch(batch, rt.device)
    local_counts = [float(target_mask(inputs.targets).sum()), float((inputs.patch_lengths > 0).sum())]
    count, patches = all_reduce_sum(local_counts, rt)
    lr = cfg.schedule().lr_at(step)
    set_lr(optimizer, lr)
    with autocast(rt.device):
        nats, _ = forward_sums(model, inputs)
    (nats * (rt.world_size / max(count, 1.0))).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    (total_nats,) = all_reduce_sum([float(nats.detach())], rt)
    loss = total_nats / max(count, 1.0)
    return {"step": step + 1, "loss": loss, "bpb": loss / math.log(2), "lr": lr,
            "grad_norm": float(grad_norm), "bytes": int(count), "patches": int(patches)}


class MetricsLog:
    """Appends JSON lines to metrics.jsonl (rank 0 only)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.path = Path(run_dir) / ckpt.METRICS_FILE
        self.enabled = enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def truncate(self, step: int) -> None:
        """Drop records after ``step`` (written by a run that crashed after its last checkpoint)."""
        if self.enabled and self.path.is_file():
            lines = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= step]
            fs.write_text_atomic(str(self.path), "".join(line + "\n" for line in lines))


def write_run_file(run_dir: Path, model_config, cfg: BltTrainConfig, data: dict, rt: Runtime,
                   preset: str | None = None) -> None:
    """Start a run directory (refusing one that already holds a run)."""
    if (run_dir / ckpt.RUN_FILE).exists():
        raise FileExistsError(f"{run_dir}: already holds a training run; resume it or choose another directory")
    if rt.world_size > 1:
        torch.distributed.barrier()  # every rank has checked before rank 0 writes
    if rt.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        record = {"preset": preset, "model": model_config.to_dict(), "train": cfg.to_dict(), "data": data}
        fs.write_json_atomic(str(run_dir / ckpt.RUN_FILE), record)
    if rt.world_size > 1:
        torch.distributed.barrier()


def resume_changes(run_dir: Path, cfg: BltTrainConfig) -> dict:
    """{setting: (stored, new)} of ``cfg`` against the run's ``run.json``; ResumeConflict (a
    ValueError) when a setting outside ``RESUME_APPLIES`` differs from the stored one."""
    stored = BltTrainConfig(**ckpt.read_run(run_dir)["train"])
    return runs.resume_with(stored, cfg.to_dict(), RESUME_APPLIES)[1]


def record_resume(run_dir: Path, cfg: BltTrainConfig, step: int, changed: dict) -> None:
    """Rewrite ``run.json`` with the settings a resume changed, and append what changed at which step."""
    run = ckpt.read_run(run_dir)
    run["train"] = cfg.to_dict()
    run.setdefault("resumes", []).append({"step": step, "changed": {k: list(v) for k, v in changed.items()}})
    fs.write_json_atomic(str(run_dir / ckpt.RUN_FILE), run)
    log.info("%s: resumed at step %d with %s", run_dir, step,
             ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()))


def _resume(run_dir: Path, model, optimizer, train_data: BatchSource, rt: Runtime) -> int:
    """Restore the newest checkpoint; returns the number of steps already done.

    Same world size: each rank takes back its own loader and RNG state. Another world size:
    every rank gets the list of all saved loader states (the shard loader merges them so no
    token is lost or repeated) and a fresh RNG stream. No checkpoint: FileNotFoundError.
    """
    path, _ = ckpt.resume_point(run_dir)
    trainer, rank_states = ckpt.load_training_state(path, model, optimizer)
    if len(rank_states) == rt.world_size:
        train_data.load_state_dict(rank_states[rt.rank]["loader"])
        ckpt.set_rng_state(rank_states[rt.rank]["rng"])
    else:
        log.warning("%s: saved by %d ranks, resuming on %d (elastic: loader states merged)",
                    path, len(rank_states), rt.world_size)
        train_data.load_state_dict([state["loader"] for state in rank_states])
    log.info("resumed from %s (step %d)", path, trainer["step"])
    return int(trainer["step"])


def _save(run_dir: Path, step: int, model, optimizer, train_data: BatchSource, rt: Runtime) -> Path:
    rank_state = {"loader": train_data.state_dict(), "rng": ckpt.rng_state()}
    return ckpt.save_checkpoint(run_dir, step, model, optimizer, {"step": step}, rank_state, rt.rank, rt.world_size)


def train(model_config, cfg: BltTrainConfig, train_data: BatchSource, run_dir: str | Path, rt: Runtime = Runtime(),
          *, eval_data: Callable[[], Iterable[dict]] | None = None, resume: bool = False,
          on_step: Callable[[dict], None] | None = None, data_info: dict | None = None,
          mean_patch: float = 4.5, should_stop: Callable[[], bool] | None = None,
          preset: str | None = None) -> list[dict]:
    """Train for ``cfg.steps`` steps (continuing a saved run with ``resume``); returns the logged records.

    ``eval_data`` makes a fresh iterable of this rank's held-out batches each time it is
    called; ``on_step`` receives every step's metrics (on every rank). When ``should_stop()``
    is true on any rank after a step, every rank saves a checkpoint and raises
    ``TrainingInterrupted``. ``preset`` (the run preset's name) is recorded in ``run.json``. Resuming a finished run raises ValueError, and so does resuming
    with a setting outside ``RESUME_APPLIES`` changed (``bltdata.runs.ResumeConflict``).
    """
    run_dir = Path(run_dir)
    if resume:
        changed = resume_changes(run_dir, cfg)
    else:
        write_run_file(run_dir, model_config, cfg, data_info or {}, rt, preset)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = wrap_model(build_model(model_config).to(rt.device), cfg, rt)
    optimizer = adamw(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2))
    log.info("%s", describe_model(model_config, cfg.seq_len, mean_patch))
    torch.manual_seed(cfg.seed + 1 + rt.rank)  # per-rank stream (replaced by the saved one on resume)
    start = _resume(run_dir, model, optimizer, train_data, rt) if resume else 0
    if start >= cfg.steps:
        raise ValueError(f"{run_dir}: the run is already finished (step {start} of {cfg.steps}); nothing to resume "
                         f"(pass a larger --steps to train longer)")
    if resume and changed and rt.rank == 0:
        record_resume(run_dir, cfg, start, changed)
    metrics, records = MetricsLog(run_dir, rt.rank == 0), []
    metrics.truncate(start)
    clock, batches = CheckpointClock(cfg.checkpoint_every, cfg.checkpoint_minutes), iter(train_data)
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        model.train()
        record = {**train_step(model, optimizer, next(batches), step, cfg, rt), "seconds": time.perf_counter() - t0}
        if eval_data is not None and _due(step + 1, cfg.eval_every, cfg.steps):
            record["eval"] = evaluate(model, eval_data(), rt.device, cfg.eval_batches, world_size=rt.world_size)
        if (step + 1) % cfg.log_every == 0 or "eval" in record or step + 1 == cfg.steps:
            metrics.write(record)
            records.append(record)
        if on_step:
            on_step(record)
        save, stop = (flag > 0 for flag in all_reduce_sum(  # every rank takes the same decision
            [float(clock.due(step + 1)), float(bool(should_stop and should_stop()))], rt))
        if save or stop or step + 1 == cfg.steps:
            path = _save(run_dir, step + 1, model, optimizer, train_data, rt)
            clock.saved()
        if stop and step + 1 < cfg.steps:
            raise TrainingInterrupted(step + 1, path, getattr(should_stop, "signum", None) or 2)
    return records


def _due(done: int, every: int, total: int) -> bool:
    return done == total or (every > 0 and done % every == 0)


def describe_model(model_config, seq_len: int, mean_patch: float = 4.5) -> str:
    """One line: parameter counts and FLOPs per byte (printed at the start of training)."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(model_config)
    flops = flops_per_byte(model_config, seq_len - 1, mean_patch)
    return (f"model {model.config.kind}: {count_parameters(model) / 1e6:.2f}M parameters "
            f"({count_parameters(model, embeddings=False) / 1e6:.2f}M without embedding tables); "
            f"{flops.summary()}" + (f" at mean patch {mean_patch:.2f}" if model.config.kind == "blt" else ""))
