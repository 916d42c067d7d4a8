"""Model configurations and presets for the BLT and the plain byte-level baseline.

Configs hold architecture only (no device, rank or data paths); each is validated in
``__post_init__`` and round-trips through ``to_dict``/``from_dict`` (JSON in a run
directory). The model shapes of the presets are plain functions returning a config, listed in
``PRESETS``; the run presets (shape + training settings) are in `runs.py`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from bltdata.ids import VOCAB_SIZE

POOLINGS = ("max", "mean")
DECODER_SOURCES = ("next_byte", "previous_patch")
POOL_PROJECTIONS = ("auto", "always")

# Fields added after the first checkpoints were written, with the value that reproduces those
# checkpoints' behaviour: a saved config that lacks one of them gets this value, not the new default.
LEGACY_BLT_FIELDS = {"decoder_source": "previous_patch", "pool_projection": "always"}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class BLTConfig:
    """A Byte Latent Transformer: local encoder, latent global transformer, local decoder.

    ``local_window``: sliding-window size (keys incl. self) of the byte-level layers;
    ``cross_attn_k``: patch queries per patch in the encoder pooling and key/value tokens per
    patch state in the decoder; ``hash_table_size`` 0 disables the hash n-gram embeddings, a
    tuple gives one table size per n-gram size; ``hash_functions`` hash functions per n.

    Wiring options (the reference BLT's choices where it has one):

    - ``decoder_source``: which global state byte t (predicting byte t+1) reads.
      ``"next_byte"`` (the reference's): patch(t+1) − 1 — at a patch-final byte that is its
      own patch (causal: byte t+1 opens a new one); ``"previous_patch"``: patch(t) − 1 (the
      first wiring here; kept so old checkpoints load with their behaviour).
    - ``cross_attn_double_residual``: the reference's cross-attention returns ``x + out`` and
      its caller adds ``x`` again (2x + out); off = x + out. Set by the importers.
    - ``cross_attn_window_encoder`` / ``_decoder``: a patch's queries read the bytes of the
      last w patches (encoder); a byte reads the states of the last w patches up to its
      source (decoder); 1 = only its own / its source patch.
    - ``pool_projection``: ``"auto"`` has a k·dim_local → dim_global projection only when
      the widths differ (the reference's ``token_embedding_projection``); ``"always"`` too
      when they are equal (the first wiring here).
    - ``global_norm``: an RMSNorm after the global transformer (the reference has none);
      ``decoder_start``: a learned state read where no earlier patch of the document exists
      (without it such bytes read nothing: a zero state gives a zero cross-attention output).
    - ``ffn_multiple_of``: SwiGLU width = 2/3·4·dim rounded up to this (reference: 256).
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
    hash_table_size: int | tuple[int, ...] = 4096
    hash_functions: int = 1
    vocab_size: int = VOCAB_SIZE
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    max_seqlen: int = 1024
    decoder_source: str = "next_byte"
    cross_attn_double_residual: bool = False
    cross_attn_window_encoder: int = 1
    cross_attn_window_decoder: int = 1
    pool_projection: str = "auto"
    global_norm: bool = True
    decoder_start: bool = True
    ffn_multiple_of: int = 64

    kind = "blt"

    def __post_init__(self):
        self.hash_ngram_sizes = tuple(int(n) for n in self.hash_ngram_sizes)
        if isinstance(self.hash_table_size, (list, tuple)):
            self.hash_table_size = tuple(int(v) for v in self.hash_table_size)
            _check(len(self.hash_table_size) == len(self.hash_ngram_sizes),
                   f"hash_table_size: {len(self.hash_table_size)} sizes for {len(self.hash_ngram_sizes)} n-gram sizes")
        for name in ("dim_local", "n_heads_local", "local_window", "dim_global", "n_layers_global",
                     "n_heads_global", "cross_attn_k", "n_heads_cross", "hash_functions", "max_seqlen",
                     "cross_attn_window_encoder", "cross_attn_window_decoder", "ffn_multiple_of"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _check(self.n_layers_encoder >= 0 and self.n_layers_decoder >= 0, "layer counts must be >= 0")
        _check(self.dim_local % self.n_heads_local == 0, "dim_local must be divisible by n_heads_local")
        _check(self.dim_local % self.n_heads_cross == 0, "dim_local must be divisible by n_heads_cross")
        _check(self.dim_global % self.n_heads_global == 0, "dim_global must be divisible by n_heads_global")
        _check((self.dim_local // self.n_heads_local) % 2 == 0, "local head dim must be even (RoPE)")
        _check((self.dim_global // self.n_heads_global) % 2 == 0, "global head dim must be even (RoPE)")
        _check(self.patch_pooling in POOLINGS, f"patch_pooling must be one of {POOLINGS}")
        _check(min(self.table_sizes, default=0) >= 0, "hash_table_size must be >= 0")
        _check(all(n >= 2 for n in self.hash_ngram_sizes), "hash n-gram sizes must be >= 2")
        _check(self.vocab_size == VOCAB_SIZE, f"vocab_size must be {VOCAB_SIZE} (docs/design.md §1)")
        _check(self.decoder_source in DECODER_SOURCES, f"decoder_source must be one of {DECODER_SOURCES}")
        _check(self.pool_projection in POOL_PROJECTIONS, f"pool_projection must be one of {POOL_PROJECTIONS}")
        _check(self.decoder_start or self.decoder_source == "next_byte",
               "decoder_source 'previous_patch' needs decoder_start (patch 0 has no previous patch)")
        _check(self.has_pool_projection or self.cross_attn_k * self.dim_local == self.dim_global,
               "without a pooling projection cross_attn_k * dim_local must equal dim_global")

    @property
    def table_sizes(self) -> tuple[int, ...]:
        """One hash-table size per n-gram size (all 0: no hash embeddings)."""
        if isinstance(self.hash_table_size, tuple):
            return self.hash_table_size
        return (self.hash_table_size,) * len(self.hash_ngram_sizes)

    @property
    def has_pool_projection(self) -> bool:
        return self.pool_projection == "always" or self.cross_attn_k * self.dim_local != self.dim_global

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "BLTConfig":
        """Rebuild a saved config; fields it predates take their legacy value (``LEGACY_BLT_FIELDS``)."""
        known = {f.name for f in fields(cls)}
        return cls(**{**LEGACY_BLT_FIELDS, **{k: v for k, v in d.items() if k in known}})


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
    ffn_multiple_of: int = 64

    kind = "byte"

    def __post_init__(self):
        self.hash_ngram_sizes = tuple(int(n) for n in self.hash_ngram_sizes)
        _check(self.dim >= 1 and self.n_layers >= 1 and self.n_heads >= 1, "dim, n_layers, n_heads must be >= 1")
        _check(self.dim % self.n_heads == 0 and (self.dim // self.n_heads) % 2 == 0,
               "dim must be divisible by n_heads into an even head dim")
        _check(self.window is None or self.window >= 1, "window must be None or >= 1")
        _check(self.hash_table_size >= 0, "hash_table_size must be >= 0")
        _check(self.vocab_size == VOCAB_SIZE, f"vocab_size must be {VOCAB_SIZE} (docs/design.md §1)")

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


REFERENCE_WIRING = dict(decoder_source="next_byte", cross_attn_double_residual=True, pool_projection="auto",
                        global_norm=False, decoder_start=False, ffn_multiple_of=256, rope_theta=500_000.0)


def blt_1b() -> BLTConfig:
    """The released BLT-1B (= transformers' ``BltConfig()`` defaults): encoder 1024 × 1 layer,
    decoder 1024 × 9, global 2048 × 25, 16 heads, k = 2, hash tables 500002 × 1 function for
    n = 3..8, SwiGLU 2816 / 5632, RoPE θ 500000, local window 512, reference wiring."""
    return BLTConfig(
        dim_local=1024, n_layers_encoder=1, n_layers_decoder=9, n_heads_local=16, local_window=512,
        dim_global=2048, n_layers_global=25, n_heads_global=16, cross_attn_k=2, n_heads_cross=16,
        hash_table_size=500_002, max_seqlen=8192, **REFERENCE_WIRING,
    )


def blt_7b() -> BLTConfig:
    """The released BLT-7B shape, from the paper's architecture table (global 4096 × 32 layers,
    32 heads; local 1280, encoder 1 layer, decoder 6 layers, 20 heads; k = 2, so 2·1280 ≠ 4096
    and the pooling projection is present); hashes, θ, window and wiring as the 1B."""
    return BLTConfig(
        dim_local=1280, n_layers_encoder=1, n_layers_decoder=6, n_heads_local=20, local_window=512,
        dim_global=4096, n_layers_global=32, n_heads_global=32, cross_attn_k=2, n_heads_cross=20,
        hash_table_size=500_002, max_seqlen=8192, **REFERENCE_WIRING,
    )


def byte_debug() -> ByteTransformerConfig:
    """A tiny plain byte transformer (the baseline's CPU size)."""
    return ByteTransformerConfig()


PRESETS = {"debug": debug, "blt-1b": blt_1b, "blt-7b": blt_7b, "byte-debug": byte_debug}


def preset(name: str) -> BLTConfig | ByteTransformerConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]()
