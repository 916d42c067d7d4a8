"""Model configurations and presets for the BLT and the plain byte-level baseline.

Configs hold architecture only (no device, rank or data paths); each is validated in
``__post_init__`` and round-trips through ``to_dict``/``from_dict`` (JSON in a run
directory). Presets are plain functions returning a config, listed in ``PRESETS``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from bltdata.ids import VOCAB_SIZE

POOLINGS = ("max", "mean")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def swiglu_hidden(dim: int, multiple_of: int = 64) -> int:
    """SwiGLU hidden size: 2/3 of 4*dim, rounded up to a multiple (the Llama convention)."""
    hidden = int(2 * 4 * dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass
class BLTConfig:
    """A Byte Latent Transformer: local encoder, latent global transformer, local decoder.

    ``local_window``: sliding-window size (keys incl. self) of the byte-level layers;
    ``cross_attn_k``: patch queries per patch in the encoder pooling and key/value tokens per
    patch state in the decoder; ``hash_table_size`` 0 disables the hash n-gram embeddings.
    """

    dim_local: int = 64
    n_layers_encoder: int = 1
    n_layers_decoder: int = 2
    n_heads_local: int = 4
    local_window: int = 128
    dim_global: int = 128
    n_layers_global: int = 2
    n_heads_global: int = 4
    cross_attn_k: int = 2
    n_heads_cross: int = 4
    patch_pooling: str = "max"
    hash_ngram_sizes: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
    hash_table_size: int = 4096
    hash_functions: int = 1
    vocab_size: int = VOCAB_SIZE
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    max_seqlen: int = 1024

    kind = "blt"

    def __post_init__(self):
        self.hash_ngram_sizes = tuple(int(n) for n in self.hash_ngram_sizes)
        for name in ("dim_local", "n_heads_local", "local_window", "dim_global", "n_layers_global",
                     "n_heads_global", "cross_attn_k", "n_heads_cross", "hash_functions", "max_seqlen"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _check(self.n_layers_encoder >= 0 and self.n_layers_decoder >= 0, "layer counts must be >= 0")
        _check(self.dim_local % self.n_heads_local == 0, "dim_local must be divisible by n_heads_local")
        _check(self.dim_local % self.n_heads_cross == 0, "dim_local must be divisible by n_heads_cross")
        _check(self.dim_global % self.n_heads_global == 0, "dim_global must be divisible by n_heads_global")
        _check((self.dim_local // self.n_heads_local) % 2 == 0, "local head dim must be even (RoPE)")
        _check((self.dim_global // self.n_heads_global) % 2 == 0, "global head dim must be even (RoPE)")
        _check(self.patch_pooling in POOLINGS, f"patch_pooling must be one of {POOLINGS}")
        _check(self.hash_table_size >= 0, "hash_table_size must be >= 0")
        _check(all(n >= 2 for n in self.hash_ngram_sizes), "hash n-gram sizes must be >= 2")
        _check(self.vocab_size == VOCAB_SIZE, f"vocab_size must be {VOCAB_SIZE} (DESIGN §1)")

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "BLTConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class ByteTransformerConfig:
    """A plain causal byte-level transformer (the baseline BLT is compared against).

    ``window`` None attends to the whole document (causal); hash embeddings are off by default.
    """

    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    window: int | None = None
    hash_ngram_sizes: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
    hash_table_size: int = 0
    hash_functions: int = 1
    vocab_size: int = VOCAB_SIZE
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    max_seqlen: int = 1024

    kind = "byte"

    def __post_init__(self):
        self.hash_ngram_sizes = tuple(int(n) for n in self.hash_ngram_sizes)
        _check(self.dim >= 1 and self.n_layers >= 1 and self.n_heads >= 1, "dim, n_layers, n_heads must be >= 1")
        _check(self.dim % self.n_heads == 0 and (self.dim // self.n_heads) % 2 == 0,
               "dim must be divisible by n_heads into an even head dim")
        _check(self.window is None or self.window >= 1, "window must be None or >= 1")
        _check(self.hash_table_size >= 0, "hash_table_size must be >= 0")
        _check(self.vocab_size == VOCAB_SIZE, f"vocab_size must be {VOCAB_SIZE} (DESIGN §1)")

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "ByteTransformerConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def config_from_dict(d: dict) -> BLTConfig | ByteTransformerConfig:
    """Rebuild a config saved with ``to_dict`` (dispatching on its ``kind``)."""
    kinds = {"blt": BLTConfig, "byte": ByteTransformerConfig}
    kind = d.get("kind", "blt")
    if kind not in kinds:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind].from_dict(d)


def debug() -> BLTConfig:
    """A tiny BLT that trains on a laptop CPU in minutes (2.3M parameters, 0.7M outside embedding tables)."""
    return BLTConfig()


def blt_1b() -> BLTConfig:
    """Shaped like the paper's 1B BLT (global 2048 × 25, local 1024, encoder 1, decoder 9 layers)."""
    return BLTConfig(
        dim_local=1024, n_layers_encoder=1, n_layers_decoder=9, n_heads_local=16, local_window=512,
        dim_global=2048, n_layers_global=25, n_heads_global=16, cross_attn_k=2, n_heads_cross=16,
        hash_table_size=500_002, max_seqlen=8192,
    )


def byte_debug() -> ByteTransformerConfig:
    """A tiny plain byte transformer (the baseline's CPU size)."""
    return ByteTransformerConfig()


PRESETS = {"debug": debug, "blt-1b": blt_1b, "byte-debug": byte_debug}


def preset(name: str) -> BLTConfig | ByteTransformerConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]()
