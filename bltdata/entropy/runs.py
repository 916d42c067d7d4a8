"""Entropy-model training runs: the settings (:class:`EntropyTrainConfig`) and the run presets.

A preset is one function returning a whole :class:`EntropyRun`: the model shape (from
`model.py`) and every training setting (schedule, batch, sequence, evaluation and
checkpoint cadence, held-out share, θ target). `bltdata entropy train` resolves a preset
and replaces only the settings its options name (:func:`resolve`); the resolved settings
are what ``training.json`` records. Two defaults follow other settings and are fixed when a
run is resolved, so that a later ``--resume --steps N`` does not move them: the sequence
length is the model's ``max_seqlen`` and the warmup is ``min(200, steps // 10)``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from bltdata import runs
from bltdata.entropy import model as model_configs


@dataclass
class EntropyTrainConfig:
    """Settings of a training run (saved in ``training.json``; ``--resume`` checks them against it)."""

    inputs: list[str] = field(default_factory=list)
    out_dir: str = ""
    preset: str = "small"
    steps: int = 1000
    seq_len: int | None = None       # default: the preset's max_seqlen
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None  # default: min(200, steps // 10)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_bytes: int = 131072         # held-out bytes scored per evaluation
    heldout_percent: float = 2.0     # share of corpus bytes held out (documents by content hash)
    heldout_min_docs: int = 16       # ... and at least this many documents (fewer only in tiny corpora)
    checkpoint_minutes: float = 10.0  # wall minutes between resumable checkpoints (0: only at evaluations)
    target_patch_size: float = 4.5   # mean patch θ is calibrated for at the end (on held-out documents)
    max_bytes: int | None = None     # cap on the corpus read
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("steps, batch_size and eval_every must be >= 1")
        if not 0 < self.heldout_percent < 100:
            raise ValueError(f"heldout_percent must be in (0, 100), got {self.heldout_percent}")
        if self.heldout_min_docs < 1 or self.checkpoint_minutes < 0 or self.target_patch_size < 1:
            raise ValueError("heldout_min_docs must be >= 1, checkpoint_minutes >= 0, target_patch_size >= 1")
        if not (self.lr > 0 and 0 <= self.min_lr_ratio <= 1):
            raise ValueError("lr must be > 0 and min_lr_ratio in [0, 1]")
        model_configs.preset(self.preset)  # fails early on an unknown preset

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else min(200, self.steps // 10)

    def schedule(self):
        """The learning-rate schedule of the run (`bltdata.optim`)."""
        from bltdata.optim import Schedule

        return Schedule(self.lr, self.warmup, self.steps, self.min_lr_ratio)

    def resolved(self) -> "EntropyTrainConfig":
        """The same run with the derived defaults (sequence length, warmup) written out."""
        seq_len = self.seq_len or model_configs.preset(self.preset).max_seqlen
        return dataclasses.replace(self, seq_len=seq_len, warmup_steps=self.warmup)


# Settings `--resume` may change (applied and reported); every other one is the run's shape.
RESUME_APPLIES = frozenset({"steps", "eval_every", "checkpoint_minutes", "target_patch_size"})


@dataclass(frozen=True)
class EntropyRun:
    """A whole run: the model shape and the training settings (whose ``preset`` names the shape)."""

    model: model_configs.EntropyModelConfig
    train: EntropyTrainConfig

    def to_dict(self) -> dict:
        return {"preset": self.train.preset, "model": dataclasses.asdict(self.model),
                "train": dataclasses.asdict(self.train)}


def _run(name: str, **settings) -> EntropyRun:
    return EntropyRun(model_configs.preset(name), EntropyTrainConfig(preset=name, **settings))


def tiny() -> EntropyRun:
    """For tests and demos: 1000 steps of 16 × 256 bytes (the model's context), peak lr 3e-3."""
    return _run("tiny")


def small() -> EntropyRun:
    """The bundled default model's run: 1000 steps of 16 × 512 bytes, peak lr 3e-3."""
    return _run("small")


def paper_100m() -> EntropyRun:
    """The paper's entropy model shape, with the same settings (sequences of its 8192-byte context)."""
    return _run("paper-100m")


PRESETS = {"tiny": tiny, "small": small, "paper-100m": paper_100m}


def preset(name: str) -> EntropyRun:
    if name not in PRESETS:
        raise ValueError(f"unknown entropy model preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]()


def resolve(name: str, overrides: dict) -> EntropyRun:
    """The preset's run with the given settings replaced (None: the preset's value), derived defaults fixed."""
    run = preset(name)
    return EntropyRun(run.model, runs.override(run.train, overrides).resolved())
