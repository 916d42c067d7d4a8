"""Import and export of BLT weights: the reference layout and the transformers layout.

Two foreign layouts hold the same tensors under other names:

- **reference** (``params.json`` + ``consolidated.pth``, the reference BLT's
  ``ByteLatentTransformer`` state dict): ``local_encoder.layers.0.attention.wq.weight``,
  ``feed_forward.w1/w3/w2``, ``cross_attn_norm_q/kv``, one ``encoder_hash_tok_embedding.{i}``
  table per (hash function, n), ``local_decoder.output``; its weights are read with
  ``torch.load(weights_only=True)``.
- **hf** (``config.json`` + ``model.safetensors`` of transformers' ``BltForCausalLM``):
  ``model.local_encoder.layers.0.self_attn.q_proj.weight``, ``mlp.gate_proj/up_proj/
  down_proj``, ``q_norm/k_norm``, all hash tables stacked in one
  ``model.encoder_hash_tok_embedding`` (function-major, n inner: our table order),
  ``lm_head``; plus the entropy model under ``model.patcher.``.

Both are described by one list of *groups* (``key_groups``): our keys and their keys whose
concatenations along dim 0 are the same tensor (a fused ``wqkv`` = ``q_proj ; k_proj ;
v_proj``; the stacked hash table = our tables). Every key of a file must be in a group and
every group's keys present, and every shape must match, or the conversion fails naming the
key. RoPE: both use interleaved pairs, as we do, so no permutation.

The entropy model inside an HF checkpoint (``model.patcher.*``) is a separate group: it is
converted by ``bltdata.entropy.hf.from_hf_patcher`` / ``to_hf_patcher``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from bltdata.blt.config import BLTConfig
from bltdata.nn.sizes import swiglu_hidden

log = logging.getLogger(__name__)

# transformers' names → the reference's (the rename the transformers converter applies, inverted)
HF_TO_REFERENCE = (
    (".self_attn.", ".attention."), (".mlp.", ".feed_forward."), (".input_layernorm.", ".attention_norm."),
    (".post_attention_layernorm.", ".ffn_norm."), (".embed_tokens.", ".tok_embeddings."),
    (".q_norm.", ".cross_attn_norm_q."), (".k_norm.", ".cross_attn_norm_kv."), (".gate_proj.", ".w1."),
    (".down_proj.", ".w2."), (".up_proj.", ".w3."), (".q_proj.", ".wq."), (".k_proj.", ".wk."),
    (".v_proj.", ".wv."), (".o_proj.", ".wo."),
)


@dataclass(frozen=True)
class Group:
    ours: tuple[str, ...]
    theirs: tuple[str, ...]


def _block_groups(ours: str, theirs: str) -> list[Group]:
    """One transformer block (pre-norm attention + SwiGLU), HF names."""
    return [
        Group((ours + "attn_norm.weight",), (theirs + "input_layernorm.weight",)),
        Group((ours + "attn.wqkv.weight",), tuple(theirs + f"self_attn.{p}_proj.weight" for p in "qkv")),
        Group((ours + "attn.wo.weight",), (theirs + "self_attn.o_proj.weight",)),
        Group((ours + "ffn_norm.weight",), (theirs + "post_attention_layernorm.weight",)),
        Group((ours + "ffn.w_gate_up.weight",), (theirs + "mlp.gate_proj.weight", theirs + "mlp.up_proj.weight")),
        Group((ours + "ffn.w_down.weight",), (theirs + "mlp.down_proj.weight",)),
    ]


def _cross_groups(ours: str, theirs: str) -> list[Group]:
    return [
        Group((ours + "query_norm.weight",), (theirs + "q_norm.weight",)),
        Group((ours + "context_norm.weight",), (theirs + "k_norm.weight",)),
        Group((ours + "attn.wq.weight",), (theirs + "q_proj.weight",)),
        Group((ours + "attn.wkv.weight",), (theirs + "k_proj.weight", theirs + "v_proj.weight")),
        Group((ours + "attn.wo.weight",), (theirs + "o_proj.weight",)),
    ]


def hf_key_groups(config: BLTConfig) -> list[Group]:
    """Every tensor of ``BLT(config)`` beside its ``BltForCausalLM`` keys (patcher excluded)."""
    check_exportable(config)
    c, enc, glo, dec = config, "model.local_encoder.", "model.global_transformer.", "model.local_decoder."
    n_tables = c.hash_functions * len(c.hash_ngram_sizes)
    groups = [Group(("embed.tokens.weight",), (enc + "embed_tokens.weight",)),
              Group(tuple(f"embed.hashes.tables.{i}.weight" for i in range(n_tables)),
                    ("model.encoder_hash_tok_embedding.weight",)),
              Group(("pooling.query_init.weight",), (enc + "patch_embedding_projection.weight",)),
              Group(("decoder.from_global.weight",), (dec + "patch_embedding_projection.weight",)),
              Group(("decoder.norm.weight",), (dec + "norm.weight",)),
              Group(("decoder.output.weight",), ("lm_head.weight",))]
    groups += _cross_groups("pooling.cross.", enc + "cross_attn_layers.0.")
    if c.has_pool_projection:
        groups.append(Group(("pooling.to_global.weight",), (glo + "token_embedding_projection.weight",)))
    for i in range(c.n_layers_encoder):
        groups += _block_groups(f"encoder.layers.{i}.", f"{enc}layers.{i}.")
    for i in range(c.n_layers_global):
        groups += _block_groups(f"global_stack.layers.{i}.", f"{glo}layers.{i}.")
    for i in range(c.n_layers_decoder):
        groups += _block_groups(f"decoder.stack.layers.{i}.", f"{dec}layers.{i}.")
        groups += _cross_groups(f"decoder.cross.{i}.", f"{dec}cross_attn_layers.{i}.")
    return groups


def rename_hf_to_reference(key: str) -> str:
    """Module names only (``self_attn.q_proj`` → ``attention.wq``), prefixes kept."""
    key = "." + key
    for hf, ref in HF_TO_REFERENCE:
        key = key.replace(hf, ref)
    return key[1:]


def rename_reference_to_hf(key: str) -> str:
    key = "." + key
    for hf, ref in HF_TO_REFERENCE:
        key = key.replace(ref, hf)
    return key[1:]


def hf_to_reference_key(key: str) -> str:
    """A BLT key of ``BltForCausalLM`` → the reference's."""
    if key == "lm_head.weight":
        return "local_decoder.output.weight"
    return rename_hf_to_reference(key.removeprefix("model."))


def reference_key_groups(config: BLTConfig) -> list[Group]:
    """As :func:`hf_key_groups`, with the reference's names and one key per hash table."""
    groups = []
    for group in hf_key_groups(config):
        if group.theirs == ("model.encoder_hash_tok_embedding.weight",):
            groups += [Group((ours,), (f"encoder_hash_tok_embedding.{i}.weight",)) for i, ours in enumerate(group.ours)]
        else:
            groups.append(Group(group.ours, tuple(hf_to_reference_key(k) for k in group.theirs)))
    return groups


def check_exportable(config: BLTConfig) -> None:
    """The foreign layouts have no place for our extras: refuse what they cannot hold."""
    extras = [name for name, bad in (
        ("global_norm", config.global_norm), ("decoder_start", config.decoder_start),
        ("patch_pooling != 'max'", config.patch_pooling != "max"),
        ("n_heads_cross != n_heads_local", config.n_heads_cross != config.n_heads_local),
        ("decoder_source != 'next_byte'", config.decoder_source != "next_byte"),
        ("cross_attn_double_residual off", not config.cross_attn_double_residual),
        ("no hash embeddings", not any(config.table_sizes)),
    ) if bad]
    if extras:
        raise ValueError(f"this BLT cannot be expressed in the reference/transformers layout: {', '.join(extras)}")


def convert(state: dict, groups: list[Group], target_shapes: dict, *, to_ours: bool, source: str) -> dict:
    """Map ``state`` through ``groups`` (in either direction), checking every key and shape."""
    have = "theirs" if to_ours else "ours"
    wanted = {k for g in groups for k in getattr(g, have)}
    missing, extra = sorted(wanted - set(state)), sorted(set(state) - wanted)
    if missing or extra:
        raise ValueError(f"{source}: missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
                         f"unexpected keys {extra[:10]}{' ...' if len(extra) > 10 else ''}")
    out = {}
    for group in groups:
        src, dst = (group.theirs, group.ours) if to_ours else (group.ours, group.theirs)
        whole = torch.cat([state[k] for k in src], dim=0) if len(src) > 1 else state[src[0]]
        sizes = [target_shapes[k][0] for k in dst]
        expected = (sum(sizes), *target_shapes[dst[0]][1:])
        if tuple(whole.shape) != expected:
            shapes = {k: tuple(state[k].shape) for k in src}
            raise ValueError(f"{source}: {', '.join(src)} have shapes {shapes}; {', '.join(dst)} need {expected}")
        for key, part in zip(dst, whole.split(sizes, dim=0)):
            out[key] = part.clone().contiguous()
    return out


def hf_shapes(config: BLTConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of every BLT tensor of the HF layout (derived from ours through the groups)."""
    from bltdata.blt.model import BLT

    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in BLT(config).state_dict().items()}
    shapes = {}
    for group in hf_key_groups(config):
        total = sum(ours[k][0] for k in group.ours)
        rest = ours[group.ours[0]][1:]
        for key in group.theirs:
            shapes[key] = (total // len(group.theirs), *rest)
    return shapes


def our_shapes(config: BLTConfig) -> dict[str, tuple[int, ...]]:
    from bltdata.blt.model import BLT

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in BLT(config).state_dict().items()}


def infer_multiple_of(pairs: list[tuple[int, int]], source: str) -> int:
    """The SwiGLU rounding multiple that gives every (dim, hidden) pair, largest first."""
    for multiple in (256, 128, 64, 32, 16, 8, 4, 2, 1):
        if all(swiglu_hidden(dim, multiple) == hidden for dim, hidden in pairs):
            return multiple
    raise ValueError(f"{source}: SwiGLU widths {pairs} (dim, hidden) follow no common rounding of 2/3·4·dim")
