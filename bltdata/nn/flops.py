"""Matrix-multiply FLOPs of the transformer parts, 2 FLOPs per multiply-add.

Embedding lookups, norms, softmax and activations are not counted, as is usual. Attention
scores and the weighted sum cost 4 · d · (keys attended) per query; for causal
self-attention the keys attended are averaged over the positions of a row
(min(position + 1, window)), i.e. the cost of a row holding one document (packing several
documents per row only lowers it). Model-level counts: :func:`bltdata.entropy.config.forward_flops`
and :mod:`bltdata.blt.flops`.
"""
from __future__ import annotations

from bltdata.nn.sizes import swiglu_hidden


def mean_keys(length: int, window: int | None) -> float:
    """Mean number of keys a causal (windowed) query attends to over a row of ``length``."""
    w = length if window is None else min(window, length)
    # positions 0..w-1 see 1..w keys, the remaining ones see w each
    return (w * (w + 1) / 2 + (length - w) * w) / length


def block_flops(dim: int, keys: float, hidden: int | None = None) -> float:
    """Forward FLOPs per token of one pre-norm self-attention + SwiGLU block
    (SwiGLU width ``hidden``, by default the Llama convention :func:`swiglu_hidden`)."""
    projections = 2 * 4 * dim * dim  # q, k, v, o
    ffn = 2 * 3 * dim * (swiglu_hidden(dim) if hidden is None else hidden)
    return projections + ffn + 4 * dim * keys


def cross_attention_flops(dim: int, n_queries: float, n_context: float, keys_per_query: float) -> float:
    """Forward FLOPs of one cross-attention (q, o on queries; k, v on the context)."""
    return n_queries * (2 * 2 * dim * dim + 4 * dim * keys_per_query) + n_context * 2 * 2 * dim * dim
