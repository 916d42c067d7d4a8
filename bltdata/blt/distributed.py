"""Where training runs: the runtime record, process-group setup, and precision policy.

The library never reads environment variables on its own: the CLI calls
``runtime_from_env`` once (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK) and passes the
resulting ``Runtime`` down explicitly.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Runtime:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"


def runtime_from_env(device: str | None = None, environ=None) -> Runtime:
    """Read torchrun's variables once, start the process group if world size > 1.

    Device: ``device`` if given, else ``cuda:LOCAL_RANK`` when CUDA is available, else cpu.
    Backend: nccl on CUDA, gloo on CPU.
    """
    env = os.environ if environ is None else environ
    rank, world_size = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
    local_rank = int(env.get("LOCAL_RANK", 0))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
    if world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, rank=rank, world_size=world_size)
    return Runtime(rank, world_size, device)


def all_reduce_sum(values: list[float], rt: Runtime) -> list[float]:
    """Sum a few scalars over ranks (float64); identity on one process."""
    if rt.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=rt.device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def autocast(device: str | torch.device):
    """bf16 autocast on CUDA; full precision elsewhere (CPU runs stay exact and reproducible)."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
