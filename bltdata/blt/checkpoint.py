"""Run directories and training checkpoints.

A run directory holds::

    run.json                      model config, training config, data paths
    metrics.jsonl                 one JSON object per logged step / evaluation (rank 0)
    checkpoints/latest            name of the newest complete checkpoint
    checkpoints/step_00000200/    (only the newest KEEP_CHECKPOINTS are kept)
        model.pt                  full (unsharded) model state dict
        optimizer.pt              full optimizer state dict (FQN keyed)
        trainer.json              step, schedule position, world size
        rank_00000.pt ...         per rank: loader state and RNG states

Model and optimizer states are gathered to full state dicts with
``torch.distributed.checkpoint.state_dict``, so one format serves a single process, DDP and
FSDP2. A checkpoint directory is written under a temporary name and renamed, and
``latest`` is updated last, so a crash never leaves a half checkpoint as the newest.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from bltdata import fs
from bltdata.blt.config import config_from_dict
from bltdata.blt.model import build_model

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2  # periodic checkpoints are on by default: do not fill the disk with them


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def rank_file(rank: int) -> str:
    return f"rank_{rank:05d}.pt"


def read_run(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a training run directory (no {RUN_FILE})")
    return json.loads(path.read_text())


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    pointer = Path(run_dir) / CHECKPOINTS / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not (path / "trainer.json").is_file():
        raise FileNotFoundError(f"{pointer}: names {path.name}, which is missing or incomplete")
    return path


def resume_point(run_dir: str | os.PathLike) -> tuple[Path, int]:
    """(newest checkpoint, its step) of a run; FileNotFoundError saying why when there is none."""
    read_run(run_dir)
    path = latest_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir}: nothing to resume from: the run has no checkpoint yet "
                                f"({CHECKPOINTS}/latest is missing; it stopped before its first one). "
                                f"Start it again in a new (or emptied) directory")
    return path, int(json.loads((path / "trainer.json").read_text())["step"])


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def full_states(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts (collective under DDP/FSDP: call on every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_checkpoint(run_dir: Path, step: int, model, optimizer, trainer: dict, rank_state: dict,
                    rank: int, world_size: int, keep: int = KEEP_CHECKPOINTS) -> Path:
    """Write checkpoint ``step`` (every rank calls this; rank 0 writes the shared files).

    Only the newest ``keep`` checkpoints are kept (older step directories are removed).
    """
    model_state, optim_state = full_states(model, optimizer)
    final = Path(run_dir) / CHECKPOINTS / step_name(step)
    staging = final.with_name(f".{final.name}.tmp")
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    _barrier(world_size)
    torch.save(rank_state, staging / rank_file(rank))
    if rank == 0:
        torch.save(model_state, staging / "model.pt")
        torch.save(optim_state, staging / "optimizer.pt")
        fs.write_json_atomic(str(staging / "trainer.json"), {**trainer, "world_size": world_size})
    _barrier(world_size)
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        (final.parent / "latest.tmp").write_text(final.name + "\n")
        os.replace(final.parent / "latest.tmp", final.parent / "latest")
        _prune(final.parent, keep)
        log.info("saved checkpoint %s", final)
    _barrier(world_size)
    return final


def _prune(checkpoints: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` step directories (after ``latest`` names the newest)."""
    steps = sorted(p for p in checkpoints.glob("step_*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def load_training_state(path: Path, model, optimizer) -> tuple[dict, list[dict]]:
    """Restore model and optimizer in place; returns (trainer.json, every saved rank's state)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    model_state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    optim_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    check_fits(model_state, model, path / "model.pt")
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                   options=StateDictOptions(full_state_dict=True))
    trainer = json.loads((path / "trainer.json").read_text())
    rank_states = []
    for rank in range(int(trainer["world_size"])):
        file = path / rank_file(rank)
        if not file.is_file():
            raise FileNotFoundError(f"{file}: missing (the checkpoint was saved by {trainer['world_size']} ranks)")
        rank_states.append(torch.load(file, map_location="cpu", weights_only=False))
    return trainer, rank_states


def check_fits(state: dict, model: torch.nn.Module, source: str | os.PathLike) -> None:
    """Refuse a saved state dict whose keys or shapes differ from ``model``'s, before anything is
    copied (``load_state_dict`` copies the tensors that fit before it raises on one that does not)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    expected = get_model_state_dict(model)  # canonical names (no DDP prefix), global shapes under FSDP2
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [f"size mismatch for {k}: saved {tuple(v.shape)}, model {tuple(expected[k].shape)}"
                 for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise RuntimeError(f"{source}: does not fit this model, nothing was loaded: {'; '.join(problems[:3])}{more}")


def load_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu", checkpoint: str | None = None):
    """The model of a run at its latest (or the named) checkpoint, in eval mode; and run.json."""
    run = read_run(run_dir)
    path = Path(run_dir) / CHECKPOINTS / checkpoint if checkpoint else latest_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint yet (checkpoints/latest is missing)")
    model = build_model(config_from_dict(run["model"]))
    state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    check_fits(state, model, path / "model.pt")
    model.load_state_dict(state)
    return model.to(device).eval(), run


def _barrier(world_size: int) -> None:
    if world_size > 1:
        torch.distributed.barrier()
