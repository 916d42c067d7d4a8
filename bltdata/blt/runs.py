"""BLT training runs: the training settings (:class:`BltTrainConfig`) and the run presets.

A preset is one function returning a whole :class:`BltRun`: the model shape (from
`config.py`), the optimizer and schedule, the data settings (batch, sequence, held-out
batches, checkpoint cadence) and the parallelism default (FSDP for the released sizes,
which do not fit one GPU's memory with DDP's full replicas). `bltdata train` resolves a
preset and replaces only the settings its options name (:func:`resolve`); the resolved run
is what `run.json` records. Nothing here imports torch, so the CLI can read it at once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from bltdata import runs
from bltdata.blt import config as model_configs
from bltdata.blt.config import BLTConfig, ByteTransformerConfig

SHARDINGS = ("ddp", "fsdp")


@dataclass
class BltTrainConfig:
    steps: int = 200
    batch_size: int = 8  # rows per rank per step
    seq_len: int = 512  # tokens per row; the model reads seq_len - 1 of them
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 0  # 0: evaluate only at the end (when eval data is given)
    eval_batches: int = 16  # held-out batches per evaluation (per rank)
    checkpoint_every: int = 100  # steps between checkpoints (0: none by steps); the last step always saves
    checkpoint_minutes: float = 10.0  # wall minutes between checkpoints (0: none by time)
    log_every: int = 1
    seed: int = 0
    sharding: str = "ddp"

    def __post_init__(self):
        checks = {
            "steps >= 1": self.steps >= 1, "batch_size >= 1": self.batch_size >= 1,
            "seq_len >= 2": self.seq_len >= 2, "lr > 0": self.lr > 0,
            "0 <= min_lr_ratio <= 1": 0 <= self.min_lr_ratio <= 1, "warmup_steps >= 0": self.warmup_steps >= 0,
            "grad_clip >= 0": self.grad_clip >= 0, "eval_every >= 0": self.eval_every >= 0,
            "eval_batches >= 1": self.eval_batches >= 1, "checkpoint_every >= 0": self.checkpoint_every >= 0,
            "checkpoint_minutes >= 0": self.checkpoint_minutes >= 0, "log_every >= 1": self.log_every >= 1,
            f"sharding in {SHARDINGS}": self.sharding in SHARDINGS,
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid BltTrainConfig: need {', '.join(failed)}")

    def to_dict(self) -> dict:
        return asdict(self)

    def schedule(self):
        """The learning-rate schedule of the run (`bltdata.optim`)."""
        from bltdata.optim import Schedule  # torch: only when training

        return Schedule(self.lr, self.warmup_steps, self.steps, self.min_lr_ratio)


# Settings `--resume` may change (applied and reported); every other one is the run's shape.
RESUME_APPLIES = frozenset({"steps", "eval_every", "checkpoint_every", "checkpoint_minutes", "log_every",
                            "sharding"})


@dataclass(frozen=True)
class BltRun:
    """A whole run: which preset, the model shape and the training settings."""

    preset: str
    model: BLTConfig | ByteTransformerConfig
    train: BltTrainConfig

    def to_dict(self) -> dict:
        return {"preset": self.preset, "model": self.model.to_dict(), "train": self.train.to_dict()}


def debug() -> BltRun:
    """The tiny BLT on a laptop CPU: 200 steps of 8 × 512 tokens, peak lr 3e-3."""
    return BltRun("debug", model_configs.debug(), BltTrainConfig())


def blt_1b() -> BltRun:
    """The released BLT-1B shape; FSDP2 under torchrun."""
    return BltRun("blt-1b", model_configs.blt_1b(), BltTrainConfig(sharding="fsdp"))


def blt_7b() -> BltRun:
    """The released BLT-7B shape; FSDP2 under torchrun."""
    return BltRun("blt-7b", model_configs.blt_7b(), BltTrainConfig(sharding="fsdp"))


def byte_debug() -> BltRun:
    """The plain byte-level baseline at the debug BLT's size and settings."""
    return BltRun("byte-debug", model_configs.byte_debug(), BltTrainConfig())


PRESETS = {"debug": debug, "blt-1b": blt_1b, "blt-7b": blt_7b, "byte-debug": byte_debug}


def preset(name: str) -> BltRun:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]()


def resolve(name: str, overrides: dict) -> BltRun:
    """The preset's run with the given training settings replaced (None: the preset's value)."""
    run = preset(name)
    return BltRun(run.preset, run.model, runs.override(run.train, overrides))
