"""FLOP accounting per byte for BLT and byte-level transformer configs.

Counts the matrix multiplications of one forward pass as :mod:`bltdata.nn.flops` does
(hash-table lookups are not counted either), over a ``seq_len`` row. BLT costs split into per-byte terms
(encoder, decoder, output head) and per-patch terms (pooling, global transformer), the
latter divided by the mean patch length. Training costs 3 × the forward pass (backward
≈ 2 × forward); inference per byte is the forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bltdata.blt.config import BLTConfig, ByteTransformerConfig
from bltdata.nn.flops import block_flops, cross_attention_flops, mean_keys
from bltdata.nn.sizes import swiglu_hidden

__all__ = ["FlopsReport", "blt_flops", "block_flops", "byte_transformer_flops", "cross_attention_flops",
           "flops_per_byte", "mean_keys"]


@dataclass(frozen=True)
class FlopsReport:
    inference_per_byte: float
    training_per_byte: float
    components: dict[str, float] = field(default_factory=dict)  # forward FLOPs per byte, by part

    def summary(self) -> str:
        parts = ", ".join(f"{name} {value / 1e6:.2f}M" for name, value in self.components.items())
        return (f"FLOPs/byte: inference {self.inference_per_byte / 1e6:.2f}M, "
                f"training {self.training_per_byte / 1e6:.2f}M ({parts})")


def blt_flops(config: BLTConfig, seq_len: int, mean_patch: float) -> FlopsReport:
    c, dl, dg, k = config, config.dim_local, config.dim_global, config.cross_attn_k
    byte_keys = mean_keys(seq_len, c.local_window)
    patch_keys = mean_keys(max(1, round(seq_len / mean_patch)), None)
    per_patch = 1.0 / mean_patch
    hidden_local, hidden_global = swiglu_hidden(dl, c.ffn_multiple_of), swiglu_hidden(dg, c.ffn_multiple_of)
    parts = {
        "encoder": c.n_layers_encoder * block_flops(dl, byte_keys, hidden_local),
        "pooling": per_patch * 2 * dl * k * dl  # query init
        + cross_attention_flops(dl, k * per_patch, 1.0, mean_patch * c.cross_attn_window_encoder)
        + (per_patch * 2 * k * dl * dg if c.has_pool_projection else 0.0),  # to the global width
        "global": per_patch * c.n_layers_global * block_flops(dg, patch_keys, hidden_global),
        "decoder": per_patch * 2 * dg * k * dl  # global states to k tokens
        + c.n_layers_decoder * (cross_attention_flops(dl, 1.0, k * per_patch, k * c.cross_attn_window_decoder)
                                + block_flops(dl, byte_keys, hidden_local)),
        "output": 2 * dl * c.vocab_size,
    }
    forward = sum(parts.values())
    return FlopsReport(forward, 3 * forward, parts)


def byte_transformer_flops(config: ByteTransformerConfig, seq_len: int) -> FlopsReport:
    keys = mean_keys(seq_len, config.window)
    hidden = swiglu_hidden(config.dim, config.ffn_multiple_of)
    parts = {"layers": config.n_layers * block_flops(config.dim, keys, hidden), "output": 2 * config.dim * config.vocab_size}
    forward = sum(parts.values())
    return FlopsReport(forward, 3 * forward, parts)


def flops_per_byte(config, seq_len: int, mean_patch: float = 4.5) -> FlopsReport:
    """FLOPs per byte of any model config (``mean_patch`` is ignored by the byte baseline)."""
    if isinstance(config, BLTConfig):
        return blt_flops(config, seq_len, mean_patch)
    if isinstance(config, ByteTransformerConfig):
        return byte_transformer_flops(config, seq_len)
    raise TypeError(f"no FLOP model for {type(config).__name__}")
