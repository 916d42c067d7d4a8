"""The entropy model's config (everything needed to rebuild it from a checkpoint), presets and FLOPs.

Torch-free, so that command lines and manifests can name presets cheaply; the model is in
:mod:`bltdata.entropy.model`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bltdata.ids import VOCAB_SIZE
from bltdata.nn.flops import block_flops, mean_keys


@dataclass(frozen=True)
class EntropyModelConfig:
    """Shape of an entropy model; everything needed to rebuild it from a checkpoint."""

    dim: int
    n_layers: int
    n_heads: int
    ffn_hidden: int
    window: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    vocab_size: int = VOCAB_SIZE
    max_seqlen: int = 8192  # the training sequence length (informational: RoPE is computed per position)

    def __post_init__(self):
        for name in ("dim", "n_layers", "n_heads", "ffn_hidden", "window", "vocab_size", "max_seqlen"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"EntropyModelConfig.{name} must be a positive int, got {value!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")
        if self.vocab_size < VOCAB_SIZE:
            raise ValueError(f"vocab_size {self.vocab_size} is smaller than the byte vocabulary ({VOCAB_SIZE})")
        if not (self.rope_theta > 0 and self.norm_eps > 0):
            raise ValueError("rope_theta and norm_eps must be positive")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EntropyModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown entropy model config keys: {unknown}")
        return cls(**d)


def forward_flops(config: EntropyModelConfig, length: int) -> float:
    """Matrix-multiply FLOPs of scoring one document of ``length`` positions (2 per multiply-add).

    Counted as in :mod:`bltdata.nn.flops`: the projections, 4 · dim · (keys attended) per
    query and layer for attention (sliding window, keys averaged over the row) and the output
    head; embedding lookups, norms and softmax are not counted. Padding is not counted
    either: this is the useful work, the same whichever way the document is batched.
    """
    block = block_flops(config.dim, mean_keys(length, config.window), hidden=config.ffn_hidden)
    return length * (config.n_layers * block + 2 * config.dim * config.vocab_size)


def tiny() -> EntropyModelConfig:
    """For tests: 2 layers, dim 64, window 64 (~0.1 M parameters)."""
    return EntropyModelConfig(dim=64, n_layers=2, n_heads=2, ffn_hidden=192, window=64, max_seqlen=256)


def small() -> EntropyModelConfig:
    """The bundled default model: trains on a few CPU cores in minutes, ~1.2 M parameters."""
    return EntropyModelConfig(dim=192, n_layers=3, n_heads=3, ffn_hidden=512, window=256, max_seqlen=512)


def paper_100m() -> EntropyModelConfig:
    """The paper's entropy model: 14 layers, dim 768, 12 heads, SwiGLU 2048, window 512."""
    return EntropyModelConfig(dim=768, n_layers=14, n_heads=12, ffn_hidden=2048, window=512, max_seqlen=8192)


PRESETS = {"tiny": tiny, "small": small, "paper-100m": paper_100m}


def preset(name: str) -> EntropyModelConfig:
    """The config of a named preset; ValueError listing the choices otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown entropy model preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]()
