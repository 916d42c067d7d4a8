"""The Byte Latent Transformer (arXiv 2412.09871) and a plain byte-level baseline.

BLT forward pass over a row of T bytes cut into P patches:

1. local encoder: byte embedding + hash n-gram embeddings, sliding-window causal byte
   layers (within each document), then cross-attention pooling: each patch gets
   ``cross_attn_k`` queries initialised from the max (or mean) of its bytes' states, which
   attend only to the bytes of that patch; the k outputs are concatenated and projected
   to the global width;
2. latent global transformer over the P patch vectors, causal over patches and reset at
   document boundaries;
3. local decoder: starting from the encoder's byte states, each layer first
   cross-attends to a patch's global output, then runs a sliding-window causal byte layer;
   logits over the 260 ids. Byte t (predicting byte t+1) reads patch(t+1) − 1, the
   reference's choice (``decoder_source="next_byte"``): at a patch-final byte its own
   patch, else the previous one; where the document has no such patch, a start state.
   ``"previous_patch"`` (patch(t) − 1) is the first wiring here, kept for old checkpoints.

Byte t's logits therefore depend only on bytes <= t, given the patch boundaries up to byte
t+1's; with entropy patching the boundary before byte t+1 is itself a function of bytes <= t.

Attention patterns are built once per forward from the patch layout (`masks.py`) and
computed at the cost their sparsity allows (`attention.py`).

Both models share one call signature, ``model(tokens, patch_lengths, doc_ids)``: tokens
(B, T) int64, patch_lengths (B, P) zero-padded rows summing to T (ignored by the
baseline), doc_ids (B, T) (None = one document per row). Returns logits (B, T, 260).
"""
from __future__ import annotations

import torch
from torch import nn

from bltdata.blt import attention, masks
from bltdata.blt.config import BLTConfig, ByteTransformerConfig
from bltdata.blt.hash_embeddings import HashNgramEmbedding
from bltdata.blt.layers import CrossAttentionBlock, Stack, init_weights
from bltdata.nn.layers import RMSNorm


class ByteEmbedding(nn.Module):
    """Byte-id embedding plus (optionally) the hash n-gram embeddings."""

    def __init__(self, vocab_size: int, dim: int, ngram_sizes, table_size, functions: int):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        has_tables = any(table_size) if isinstance(table_size, (tuple, list)) else table_size > 0
        self.hashes = HashNgramEmbedding(dim, ngram_sizes, table_size, functions) if has_tables else None

    def forward(self, tokens: torch.Tensor, doc_ids: torch.Tensor) -> torch.Tensor:
        h = self.tokens(tokens)
        return h if self.hashes is None else h + self.hashes(tokens, doc_ids)


class PatchPooling(nn.Module):
    """Cross-attention pooling of byte states into one global-width vector per patch."""

    def __init__(self, config: BLTConfig):
        super().__init__()
        c = config
        self.k, self.pooling, self.window = c.cross_attn_k, c.patch_pooling, c.cross_attn_window_encoder
        self.query_init = nn.Linear(c.dim_local, self.k * c.dim_local, bias=False)
        self.cross = CrossAttentionBlock(c.dim_local, c.n_heads_cross, c.norm_eps, c.cross_attn_double_residual)
        self.to_global = nn.Linear(self.k * c.dim_local, c.dim_global, bias=False) if c.has_pool_projection else None

    def forward(self, h: torch.Tensor, layout: "PatchLayout") -> torch.Tensor:
        batch, n_patches = layout.patch_lengths.shape
        pooled = pool_bytes(h, layout.patch_ids, n_patches, self.pooling)  # (B, P, dl)
        queries = self.query_init(pooled).view(batch, n_patches * self.k, -1)  # (B, P*k, dl)
        if self.window == 1:
            attend = attention.pool_into_patches(layout.patch_ids, n_patches, self.k)
        else:
            attend = attention.masked(masks.encoder_window_mask(
                layout.patch_ids, layout.patch_lengths, layout.patch_docs, layout.doc_ids, self.window, self.k))
        queries = self.cross(queries, h, attend).view(batch, n_patches, -1)  # (B, P, k*dl)
        return queries if self.to_global is None else self.to_global(queries)  # (B, P, dg)


def pool_bytes(h: torch.Tensor, patch_ids: torch.Tensor, n_patches: int, mode: str) -> torch.Tensor:
    """Max or mean of the byte states of each patch, (B, P, D); zeros for empty patches."""
    batch, _, dim = h.shape
    out = h.new_zeros(batch, n_patches, dim)
    index = patch_ids.clamp(max=n_patches - 1).unsqueeze(-1).expand(-1, -1, dim)
    reduce = "amax" if mode == "max" else "mean"
    return out.scatter_reduce(1, index, h, reduce=reduce, include_self=False)


class PatchLayout:
    """The patch structure of a batch, derived once per forward."""

    def __init__(self, patch_lengths: torch.Tensor, doc_ids: torch.Tensor):
        self.patch_lengths, self.doc_ids = patch_lengths, doc_ids
        self.patch_ids = masks.patch_ids_from_lengths(patch_lengths, doc_ids.shape[1])  # (B, T)
        self.patch_docs = masks.patch_documents(patch_lengths, doc_ids)  # (B, P)

    def decoder_sources(self, rule: str) -> torch.Tensor:
        """Index into ``[start] + global_states`` read by each byte, (B, T)."""
        if rule == "next_byte":
            return masks.decoder_next_byte_sources(self.patch_ids, self.patch_docs, self.doc_ids)
        return masks.decoder_source_patches(self.patch_ids, self.patch_docs, self.doc_ids)


class LocalDecoder(nn.Module):
    """Cross-attention to patch states then a byte layer, ``n_layers_decoder`` times; logits.

    The states read are ``[start] + global_out``: the start state is learned
    (``decoder_start``) or zero (a zero state gives a zero cross-attention output).
    """

    def __init__(self, config: BLTConfig):
        super().__init__()
        c = self.config = config
        self.k = c.cross_attn_k
        self.start = nn.Parameter(torch.zeros(c.dim_global)) if c.decoder_start else None
        self.from_global = nn.Linear(c.dim_global, self.k * c.dim_local, bias=False)
        self.cross = nn.ModuleList(
            CrossAttentionBlock(c.dim_local, c.n_heads_cross, c.norm_eps, c.cross_attn_double_residual)
            for _ in range(c.n_layers_decoder)
        )
        self.stack = Stack(c.dim_local, c.n_layers_decoder, c.n_heads_local, c.norm_eps, c.rope_theta,
                           c.ffn_multiple_of)
        self.norm = RMSNorm(c.dim_local, c.norm_eps, upcast=False)
        self.output = nn.Linear(c.dim_local, c.vocab_size, bias=False)

    def forward(self, h: torch.Tensor, global_out: torch.Tensor, layout: PatchLayout, local: attention.Attend):
        batch, n_patches, dim = global_out.shape
        start = global_out.new_zeros(batch, 1, dim) if self.start is None else \
            self.start.expand(batch, 1, -1).to(global_out.dtype)
        context = self.from_global(torch.cat([start, global_out], dim=1)).view(batch, (n_patches + 1) * self.k, -1)
        sources = layout.decoder_sources(self.config.decoder_source)
        window = self.config.cross_attn_window_decoder
        read = attention.read_source_patch(sources, self.k) if window == 1 else attention.masked(
            masks.decoder_window_mask(sources, layout.patch_docs, layout.doc_ids, window, self.k))
        rope = self.stack.rope(h.shape[1], h.device)
        for cross, layer in zip(self.cross, self.stack.layers):
            h = cross(h, context, read)
            h = layer(h, local, rope)
        return self.output(self.norm(h))  # (B, T, V)


class BLT(nn.Module):
    def __init__(self, config: BLTConfig):
        super().__init__()
        c = self.config = config
        self.embed = ByteEmbedding(c.vocab_size, c.dim_local, c.hash_ngram_sizes, c.hash_table_size, c.hash_functions)
        self.encoder = Stack(c.dim_local, c.n_layers_encoder, c.n_heads_local, c.norm_eps, c.rope_theta,
                             c.ffn_multiple_of)
        self.pooling = PatchPooling(c)
        self.global_stack = Stack(c.dim_global, c.n_layers_global, c.n_heads_global, c.norm_eps, c.rope_theta,
                                  c.ffn_multiple_of)
        self.global_norm = RMSNorm(c.dim_global, c.norm_eps, upcast=False) if c.global_norm else nn.Identity()
        self.decoder = LocalDecoder(c)
        init_weights(self, c.n_layers_encoder + c.n_layers_global + c.n_layers_decoder)

    def forward(self, tokens: torch.Tensor, patch_lengths: torch.Tensor, doc_ids: torch.Tensor | None = None):
        doc_ids = torch.zeros_like(tokens) if doc_ids is None else doc_ids
        layout = PatchLayout(patch_lengths, doc_ids)
        local = attention.sliding_window(doc_ids, self.config.local_window)

        h = self.encoder(self.embed(tokens, doc_ids), local)  # (B, T, dl)
        patches = self.pooling(h, layout)  # (B, P, dg)
        global_attend = attention.masked(masks.global_mask(layout.patch_docs))
        global_out = self.global_norm(self.global_stack(patches, global_attend))
        return self.decoder(h, global_out, layout, local)  # (B, T, V)


class ByteTransformer(nn.Module):
    """Baseline: a causal transformer over bytes (documents isolated, optional window)."""

    def __init__(self, config: ByteTransformerConfig):
        super().__init__()
        c = self.config = config
        self.embed = ByteEmbedding(c.vocab_size, c.dim, c.hash_ngram_sizes, c.hash_table_size, c.hash_functions)
        self.stack = Stack(c.dim, c.n_layers, c.n_heads, c.norm_eps, c.rope_theta, c.ffn_multiple_of)
        self.norm = RMSNorm(c.dim, c.norm_eps, upcast=False)
        self.output = nn.Linear(c.dim, c.vocab_size, bias=False)
        init_weights(self, c.n_layers)

    def forward(self, tokens: torch.Tensor, patch_lengths: torch.Tensor | None = None, doc_ids=None):
        doc_ids = torch.zeros_like(tokens) if doc_ids is None else doc_ids
        h = self.stack(self.embed(tokens, doc_ids), attention.sliding_window(doc_ids, self.config.window))
        return self.output(self.norm(h))


def build_model(config: BLTConfig | ByteTransformerConfig) -> nn.Module:
    return BLT(config) if isinstance(config, BLTConfig) else ByteTransformer(config)


def count_parameters(model: nn.Module, *, embeddings: bool = True) -> int:
    """Parameters, optionally leaving out the (lookup-only) embedding tables."""
    total = 0
    for module in model.modules():
        if not embeddings and isinstance(module, nn.Embedding):
            continue
        total += sum(p.numel() for p in module.parameters(recurse=False))
    return total


BLT_COMPONENTS = (  # (component, our state-dict key prefixes)
    ("byte embedding", ("embed.tokens.",)), ("hash embeddings", ("embed.hashes.",)),
    ("local encoder", ("encoder.",)), ("patch pooling", ("pooling.",)),
    ("global transformer", ("global_stack.", "global_norm.")),
    ("local decoder", ("decoder.start", "decoder.from_global.", "decoder.cross.", "decoder.stack.", "decoder.norm.")),
    ("output head", ("decoder.output.",)),
)


def parameter_breakdown(model: BLT) -> dict[str, int]:
    """Parameters per BLT component (``BLT_COMPONENTS``); every parameter counted once."""
    counts = {name: 0 for name, _ in BLT_COMPONENTS}
    for key, param in model.named_parameters():
        name = next((n for n, prefixes in BLT_COMPONENTS if key.startswith(prefixes)), None)
        if name is None:
            raise ValueError(f"parameter {key} belongs to no component of BLT_COMPONENTS")
        counts[name] += param.numel()
    return counts
