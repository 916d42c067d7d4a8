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
   cross-attends to the global output of the patch *before* the byte's own patch (a
   learned start state for a row's or document's first patch, e.g. a BOS patch), then
   runs a sliding-window causal byte layer; logits over the 260 ids.

Byte t's logits therefore depend only on bytes <= t, given the patch boundaries; with
entropy patching the boundary before byte t is itself a function of bytes < t.

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


class ByteEmbedding(nn.Module):
    """Byte-id embedding plus (optionally) the hash n-gram embeddings."""

    def __init__(self, vocab_size: int, dim: int, ngram_sizes, table_size: int, functions: int):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.hashes = HashNgramEmbedding(dim, ngram_sizes, table_size, functions) if table_size else None

    def forward(self, tokens: torch.Tensor, doc_ids: torch.Tensor) -> torch.Tensor:
        h = self.tokens(tokens)
        return h if self.hashes is None else h + self.hashes(tokens, doc_ids)


class PatchPooling(nn.Module):
    """Cross-attention pooling of byte states into one global-width vector per patch."""

    def __init__(self, config: BLTConfig):
        super().__init__()
        self.k = config.cross_attn_k
        self.pooling = config.patch_pooling
        self.query_init = nn.Linear(config.dim_local, self.k * config.dim_local, bias=False)
        self.cross = CrossAttentionBlock(config.dim_local, config.n_heads_cross, config.norm_eps)
        self.to_global = nn.Linear(self.k * config.dim_local, config.dim_global, bias=False)

    def forward(self, h: torch.Tensor, patch_ids: torch.Tensor, patch_lengths: torch.Tensor) -> torch.Tensor:
        batch, n_patches = patch_lengths.shape
        pooled = pool_bytes(h, patch_ids, n_patches, self.pooling)  # (B, P, dl)
        queries = self.query_init(pooled).view(batch, n_patches * self.k, -1)  # (B, P*k, dl)
        queries = self.cross(queries, h, attention.pool_into_patches(patch_ids, n_patches, self.k))
        return self.to_global(queries.view(batch, n_patches, -1))  # (B, P, dg)


def pool_bytes(h: torch.Tensor, patch_ids: torch.Tensor, n_patches: int, mode: str) -> torch.Tensor:
    """Max or mean of the byte states of each patch, (B, P, D); zeros for empty patches."""
    batch, _, dim = h.shape
    out = h.new_zeros(batch, n_patches, dim)
    index = patch_ids.clamp(max=n_patches - 1).unsqueeze(-1).expand(-1, -1, dim)
    reduce = "amax" if mode == "max" else "mean"
    return out.scatter_reduce(1, index, h, reduce=reduce, include_self=False)


class LocalDecoder(nn.Module):
    def __init__(self, config: BLTConfig):
        super().__init__()
        c = config
        self.k = c.cross_attn_k
        self.window = c.local_window
        self.start = nn.Parameter(torch.zeros(c.dim_global))
        self.from_global = nn.Linear(c.dim_global, self.k * c.dim_local, bias=False)
        self.cross = nn.ModuleList(
            CrossAttentionBlock(c.dim_local, c.n_heads_cross, c.norm_eps) for _ in range(c.n_layers_decoder)
        )
        self.stack = Stack(c.dim_local, c.n_layers_decoder, c.n_heads_local, c.norm_eps, c.rope_theta)
        self.norm = nn.RMSNorm(c.dim_local, eps=c.norm_eps)
        self.output = nn.Linear(c.dim_local, c.vocab_size, bias=False)

    def forward(self, h: torch.Tensor, global_out: torch.Tensor, sources: torch.Tensor, local: attention.Attend):
        batch, n_patches, _ = global_out.shape
        states = torch.cat([self.start.expand(batch, 1, -1).to(global_out.dtype), global_out], dim=1)
        context = self.from_global(states).view(batch, (n_patches + 1) * self.k, -1)  # (B, (P+1)*k, dl)
        read = attention.read_source_patch(sources, self.k)
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
        self.encoder = Stack(c.dim_local, c.n_layers_encoder, c.n_heads_local, c.norm_eps, c.rope_theta)
        self.pooling = PatchPooling(c)
        self.global_stack = Stack(c.dim_global, c.n_layers_global, c.n_heads_global, c.norm_eps, c.rope_theta)
        self.global_norm = nn.RMSNorm(c.dim_global, eps=c.norm_eps)
        self.decoder = LocalDecoder(c)
        init_weights(self, c.n_layers_encoder + c.n_layers_global + c.n_layers_decoder)

    def forward(self, tokens: torch.Tensor, patch_lengths: torch.Tensor, doc_ids: torch.Tensor | None = None):
        batch, seq_len = tokens.shape
        doc_ids = torch.zeros_like(tokens) if doc_ids is None else doc_ids
        patch_ids = masks.patch_ids_from_lengths(patch_lengths, seq_len)  # (B, T)
        patch_docs = masks.patch_documents(patch_lengths, doc_ids)  # (B, P)
        local = attention.sliding_window(doc_ids, self.config.local_window)

        h = self.encoder(self.embed(tokens, doc_ids), local)  # (B, T, dl)
        patches = self.pooling(h, patch_ids, patch_lengths)  # (B, P, dg)
        global_out = self.global_norm(self.global_stack(patches, attention.masked(masks.global_mask(patch_docs))))
        sources = masks.decoder_source_patches(patch_ids, patch_docs, doc_ids)
        return self.decoder(h, global_out, sources, local)  # (B, T, V)


class ByteTransformer(nn.Module):
    """Baseline: a causal transformer over bytes (documents isolated, optional window)."""

    def __init__(self, config: ByteTransformerConfig):
        super().__init__()
        c = self.config = config
        self.embed = ByteEmbedding(c.vocab_size, c.dim, c.hash_ngram_sizes, c.hash_table_size, c.hash_functions)
        self.stack = Stack(c.dim, c.n_layers, c.n_heads, c.norm_eps, c.rope_theta)
        self.norm = nn.RMSNorm(c.dim, eps=c.norm_eps)
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
