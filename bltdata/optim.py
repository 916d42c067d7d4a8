"""The optimizer and learning-rate schedule both trainers use (the BLT's and the entropy model's).

AdamW with two parameter groups: weight decay on matrices, none on vectors (norms,
biases) and on embedding tables (the rows of rare bytes and hashes would otherwise decay
toward zero between their updates). The schedule is a linear warmup to ``lr`` over
``warmup_steps`` steps, then a cosine decay to ``min_lr_ratio · lr`` at ``total_steps``;
it is a pure function of the step, so a resumed run continues it exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedule:
    """Warmup + cosine: the learning rate of each (0-based) step."""

    lr: float
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.1

    def __post_init__(self):
        if not (self.lr > 0 and self.warmup_steps >= 0 and self.total_steps >= 1 and 0 <= self.min_lr_ratio <= 1):
            raise ValueError(f"invalid schedule {self}: need lr > 0, warmup_steps >= 0, total_steps >= 1 and "
                             f"min_lr_ratio in [0, 1]")

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        floor = self.min_lr_ratio
        return self.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """[decayed, not decayed], each in ``model.parameters()`` order (optimizer states are saved by position)."""
    embedding_params = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.dim() >= 2 and id(p) not in embedding_params else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(model: torch.nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.95),
          eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (not fused: the same arithmetic on CPU and CUDA runs)."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=False)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every group (called before each step with the schedule's value)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
