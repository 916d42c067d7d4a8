"""The Hugging Face transformers layout of the entropy model (``BltPatcher``).

In transformers (≥ 5) the BLT entropy model is ``BltPatcher``, the ``patcher`` sub-module of
``BltModel``; ``BltForCausalLM`` holds ``BltModel`` as ``model``. Its tensors therefore sit
in a checkpoint under these prefixes:

- ``model.patcher.`` in a ``BltForCausalLM`` state dict / ``model.safetensors``
  (:data:`CAUSAL_LM_PREFIX`; e.g. ``model.patcher.layers.0.self_attn.q_proj.weight``);
- ``patcher.`` in a ``BltModel`` one (:data:`MODEL_PREFIX`);
- no prefix for a ``BltPatcher`` saved on its own (``BltPatcher.save_pretrained``;
  ``BltPatcher.from_pretrained`` loads such a directory — its ``config.json`` has
  ``"model_type": "blt_patcher"``).

The config is ``config.json``'s ``patcher_config`` section (a ``BltPatcherConfig``) for a
whole BLT, or the whole ``config.json`` for a standalone patcher.

:func:`from_hf_patcher` / :func:`to_hf_patcher` convert a config + un-prefixed state dict
in both directions; :func:`split_patcher_state` / :func:`prefix_patcher_state` cut a full
BLT state dict into the patcher part and back. Every key is mapped explicitly and every
shape checked; a missing, unexpected or misshapen key is a ``ValueError`` naming it.
``q/k/v_proj`` are stacked into our fused ``qkv`` and ``gate/up_proj`` into ``gate_up``.

Architecture (transformers 5.24, ``modeling_blt.py``, checked against ours and the
reference, docs/design.md §4): pre-norm blocks with RMSNorm (``rms_norm_eps``, default 1e-5,
computed in float32), SwiGLU of width ``intermediate_size`` (default 2048), untied
``lm_head`` (``tie_word_embeddings`` is forced to False), RoPE θ from ``rope_parameters``
(default 10000: ``BltPatcherConfig`` keeps the mixin's default, unlike the BLT's other
sub-configs at 500000) applied to interleaved pairs (``repeat_interleave`` + even/odd
``rotate_half``: the reference's and our layout, so no permutation), and sliding-window
attention with ``sliding_window`` (default 512) keys including the query itself
(``kv_idx > q_idx - sliding_window``), i.e. exactly our ``window``. So with its defaults
the HF patcher is the reference's entropy model; the points where a config can differ
are handled in :func:`config_from_hf`.

transformers itself is not needed here (only by the tests that use it as an oracle).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from bltdata.entropy.checkpoint import layout_key_map
from bltdata.entropy.model import EntropyModel, EntropyModelConfig

logger = logging.getLogger(__name__)

CAUSAL_LM_PREFIX = "model.patcher."  # BltForCausalLM
MODEL_PREFIX = "patcher."  # BltModel
PATCHER_MODEL_TYPE = "blt_patcher"
BLT_MODEL_TYPE = "blt"
CONFIG_FILE, WEIGHTS_FILE, WEIGHTS_INDEX = "config.json", "model.safetensors", "model.safetensors.index.json"
# transformers' conversion script copies every tensor of the reference entropy model's state
# dict under patcher., so the reference's derived RoPE buffer may come along; it is recomputed
# here (transformers reports it as unexpected and drops it).
IGNORED_HF_KEYS = ("rope_embeddings.freqs_cis",)
# BltPatcherConfig defaults (transformers 5.24), used where a config omits a field.
HF_DEFAULTS = {"vocab_size": 260, "hidden_size": 768, "num_hidden_layers": 14, "num_attention_heads": 12,
               "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "intermediate_size": 2048,
               "sliding_window": 512, "rope_theta": 10000.0}


# --- configs --------------------------------------------------------------------------------

def _hf_rope_theta(patcher_config: dict) -> float:
    """RoPE θ as transformers reads it: ``rope_parameters`` (v5), else a legacy ``rope_theta``."""
    params = {**(patcher_config.get("rope_scaling") or {}), **(patcher_config.get("rope_parameters") or {})}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"patcher_config: RoPE type {rope_type!r} is not supported (only plain 'default' RoPE)")
    return float(params.get("rope_theta", patcher_config.get("rope_theta", HF_DEFAULTS["rope_theta"])))


def _hf_get(patcher_config: dict, key: str):
    value = patcher_config.get(key)
    return HF_DEFAULTS[key] if value is None else value


def config_from_hf(patcher_config: dict) -> EntropyModelConfig:
    """Our config from a ``BltPatcherConfig`` dict, reading fields as transformers does.

    Omitted fields take ``BltPatcherConfig``'s defaults (those of the reference model).
    Refused: grouped-query attention (``num_key_value_heads`` ≠ heads), an activation other
    than SiLU, a RoPE type other than ``default``. ``sliding_window: null`` (full causal
    attention in transformers) becomes window = ``max_position_embeddings``, which equals it
    on sequences up to that length (a warning says so). A legacy ``norm_eps`` key (written by
    transformers' conversion script) is ignored, as transformers ignores it.
    """
    model_type = patcher_config.get("model_type", PATCHER_MODEL_TYPE)
    if model_type != PATCHER_MODEL_TYPE:
        raise ValueError(f"patcher_config: model_type {model_type!r}, expected {PATCHER_MODEL_TYPE!r}")
    heads = int(_hf_get(patcher_config, "num_attention_heads"))
    kv_heads = patcher_config.get("num_key_value_heads")
    if kv_heads is not None and int(kv_heads) != heads:
        raise ValueError(f"patcher_config: num_key_value_heads {kv_heads} ≠ num_attention_heads {heads} "
                         "(grouped-query attention is not supported by our entropy model)")
    if patcher_config.get("hidden_act", "silu") != "silu":
        raise ValueError(f"patcher_config: hidden_act {patcher_config['hidden_act']!r}, only 'silu' is supported")
    dim = int(_hf_get(patcher_config, "hidden_size"))
    max_seqlen = int(_hf_get(patcher_config, "max_position_embeddings"))
    eps = float(_hf_get(patcher_config, "rms_norm_eps"))
    if "norm_eps" in patcher_config and float(patcher_config["norm_eps"]) != eps:
        logger.warning("patcher_config: norm_eps %s is ignored by transformers; using rms_norm_eps %s",
                       patcher_config["norm_eps"], eps)
    window = patcher_config.get("sliding_window", HF_DEFAULTS["sliding_window"])
    if window is None:
        logger.warning("patcher_config: sliding_window is null (full causal attention); imported with window = "
                       "max_position_embeddings = %d, equal on sequences up to that length "
                       "(the reference entropy model uses 512)", max_seqlen)
        window = max_seqlen
    # BltPatcherConfig: an omitted width is 2048, an explicit null one int(8·dim/3)
    hidden = int(patcher_config.get("intermediate_size", HF_DEFAULTS["intermediate_size"]) or int(8 * dim / 3))
    return EntropyModelConfig(dim=dim, n_layers=int(_hf_get(patcher_config, "num_hidden_layers")), n_heads=heads,
                              ffn_hidden=hidden, window=int(window), rope_theta=_hf_rope_theta(patcher_config),
                              norm_eps=eps, vocab_size=int(_hf_get(patcher_config, "vocab_size")),
                              max_seqlen=max_seqlen)


def config_to_hf(config: EntropyModelConfig) -> dict:
    """The ``BltPatcherConfig`` dict of our config: every field spelled out, nothing left to defaults."""
    return {"model_type": PATCHER_MODEL_TYPE, "vocab_size": config.vocab_size, "hidden_size": config.dim,
            "num_hidden_layers": config.n_layers, "num_attention_heads": config.n_heads,
            "num_key_value_heads": config.n_heads, "head_dim": config.head_dim,
            "intermediate_size": config.ffn_hidden, "max_position_embeddings": config.max_seqlen,
            "rms_norm_eps": config.norm_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": float(config.rope_theta)},
            "sliding_window": config.window, "hidden_act": "silu", "tie_word_embeddings": False,
            "dropout": 0.0, "initializer_range": 0.02}


# --- state dicts ----------------------------------------------------------------------------

HF_TOP = {"embed.weight": ["embed_tokens.weight"], "final_norm.weight": ["norm.weight"],
          "output.weight": ["lm_head.weight"]}
HF_LAYER = {
    "attn_norm.weight": ["input_layernorm.weight"],
    "attn.qkv.weight": [f"self_attn.{w}_proj.weight" for w in ("q", "k", "v")],
    "attn.proj.weight": ["self_attn.o_proj.weight"],
    "mlp_norm.weight": ["post_attention_layernorm.weight"],
    "mlp.gate_up.weight": [f"mlp.{w}_proj.weight" for w in ("gate", "up")],
    "mlp.down.weight": ["mlp.down_proj.weight"],
}


def hf_key_map(config: EntropyModelConfig) -> dict[str, list[str]]:
    """Our state-dict key → the (un-prefixed) ``BltPatcher`` keys concatenated along dim 0 to form it."""
    return layout_key_map(config, HF_TOP, HF_LAYER)


def _our_shapes(config: EntropyModelConfig) -> dict[str, tuple]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in EntropyModel(config).state_dict().items()}


def _check_keys(present, wanted, what: str, source: str) -> None:
    missing, extra = sorted(set(wanted) - set(present)), sorted(set(present) - set(wanted))
    if missing or extra:
        raise ValueError(f"{source}: {what} does not match its config: missing keys {missing}, "
                         f"unexpected keys {extra}")


def from_hf_patcher(patcher_config: dict, state_dict: dict[str, torch.Tensor], *,
                    source: str = "BltPatcher state dict") -> tuple[EntropyModelConfig, dict[str, torch.Tensor]]:
    """(our config, our state dict) from a ``BltPatcherConfig`` dict and the patcher's tensors.

    ``state_dict`` holds the patcher's keys with the prefix stripped (``layers.0.mlp.up_proj.weight``,
    not ``model.patcher.layers.0...``; see :func:`split_patcher_state`). Every key is mapped
    and every shape checked; missing or unexpected keys raise ``ValueError`` naming them.
    """
    config = config_from_hf(patcher_config)
    shapes, mapping = _our_shapes(config), hf_key_map(config)
    present = [k for k in state_dict if k not in IGNORED_HF_KEYS]
    _check_keys(present, [k for keys in mapping.values() for k in keys], "BltPatcher state dict", source)
    converted = {}
    for ours, keys in mapping.items():
        for key in keys:
            want = (shapes[ours][0] // len(keys), *shapes[ours][1:])
            if tuple(state_dict[key].shape) != want:
                raise ValueError(f"{source}: {key} has shape {tuple(state_dict[key].shape)}, expected {want} "
                                 f"(for our {ours} {shapes[ours]})")
        tensors = [state_dict[k] for k in keys]
        converted[ours] = torch.cat(tensors, dim=0) if len(tensors) > 1 else tensors[0].clone()
    return config, converted


def to_hf_patcher(config: EntropyModelConfig, state_dict: dict[str, torch.Tensor], *,
                  source: str = "entropy model state dict") -> tuple[dict, dict[str, torch.Tensor]]:
    """(``BltPatcherConfig`` dict, un-prefixed ``BltPatcher`` state dict) of our model.

    Prefix the tensors with :data:`CAUSAL_LM_PREFIX` (:func:`prefix_patcher_state`) to embed
    them in a ``BltForCausalLM`` checkpoint, whose ``config.json`` takes the dict as
    ``patcher_config``.
    """
    shapes, mapping = _our_shapes(config), hf_key_map(config)
    _check_keys(list(state_dict), list(mapping), "entropy model state dict", source)
    out = {}
    for ours, keys in mapping.items():
        tensor = state_dict[ours]
        if tuple(tensor.shape) != shapes[ours]:
            raise ValueError(f"{source}: {ours} has shape {tuple(tensor.shape)}, expected {shapes[ours]}")
        for key, part in zip(keys, tensor.chunk(len(keys), dim=0)):
            out[key] = part.detach().clone().contiguous()  # own storage: safetensors refuses shared tensors
    return config_to_hf(config), out


def split_patcher_state(state_dict: dict[str, torch.Tensor], prefix: str = CAUSAL_LM_PREFIX
                        ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the patcher's tensors with ``prefix`` stripped, every other tensor as it was)."""
    patcher = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    rest = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
    return patcher, rest


def prefix_patcher_state(state_dict: dict[str, torch.Tensor], prefix: str = CAUSAL_LM_PREFIX
                         ) -> dict[str, torch.Tensor]:
    """The patcher's tensors under ``prefix`` (the inverse of :func:`split_patcher_state`)."""
    return {prefix + k: v for k, v in state_dict.items()}


# --- checkpoint directories -----------------------------------------------------------------

def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found (an HF checkpoint has {CONFIG_FILE} + {WEIGHTS_FILE})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from None


def _weight_files(directory: Path) -> list[Path]:
    """The safetensors file(s) of an HF checkpoint: one file, or the shards its index names."""
    if (directory / WEIGHTS_FILE).is_file():
        return [directory / WEIGHTS_FILE]
    if (directory / WEIGHTS_INDEX).is_file():
        shards = sorted(set(_read_json(directory / WEIGHTS_INDEX).get("weight_map", {}).values()))
        if not shards:
            raise ValueError(f"{directory / WEIGHTS_INDEX}: empty weight_map")
        return [directory / s for s in shards]
    raise FileNotFoundError(f"{directory}: neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX}")


def read_hf_patcher(directory: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], str]:
    """(patcher config dict, un-prefixed patcher tensors, description) of an HF checkpoint directory.

    ``directory`` holds a ``BltForCausalLM`` / ``BltModel`` (``model_type`` ``blt``: the
    ``patcher_config`` section, tensors under ``model.patcher.`` or ``patcher.``) or a
    standalone ``BltPatcher`` (``model_type`` ``blt_patcher``, no prefix). Only the
    patcher's tensors are read from the safetensors file(s), so a 7B checkpoint costs the
    entropy model's memory only.
    """
    from safetensors import safe_open

    directory = Path(directory)
    config = _read_json(directory / CONFIG_FILE)
    model_type = config.get("model_type")
    if model_type not in (BLT_MODEL_TYPE, PATCHER_MODEL_TYPE):
        raise ValueError(f"{directory / CONFIG_FILE}: model_type {model_type!r}; expected {BLT_MODEL_TYPE!r} "
                         f"(BltForCausalLM) or {PATCHER_MODEL_TYPE!r} (BltPatcher)")
    files = _weight_files(directory)
    keys = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            keys.update({k: path for k in f.keys()})
    if model_type == PATCHER_MODEL_TYPE:
        prefix, patcher_config = "", config
    else:
        if not config.get("patcher_config"):
            raise ValueError(f"{directory / CONFIG_FILE}: a BLT config without patcher_config")
        patcher_config = config["patcher_config"]
        prefix = CAUSAL_LM_PREFIX if any(k.startswith(CAUSAL_LM_PREFIX) for k in keys) else MODEL_PREFIX
        if not any(k.startswith(prefix) for k in keys):
            raise ValueError(f"{files[0]}: no patcher tensors (no key starts with {CAUSAL_LM_PREFIX!r} "
                             f"or {MODEL_PREFIX!r}); was the model saved with patch_in_forward=False?")
    state = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key.startswith(prefix):
                    state[key[len(prefix):]] = f.get_tensor(key)
    where = f"{files[0] if len(files) == 1 else directory} (tensors under {prefix!r})" if prefix else str(files[0])
    return patcher_config, state, where


def import_hf(src_dir: str | os.PathLike, out_dir: str | os.PathLike, *, dtype: torch.dtype | None = None,
              name: str | None = None) -> Path:
    """Convert the entropy model of an HF BLT (or standalone ``BltPatcher``) checkpoint to ours."""
    from bltdata.entropy.checkpoint import save_checkpoint

    patcher_config, state, where = read_hf_patcher(src_dir)
    config, converted = from_hf_patcher(patcher_config, state, source=where)
    with torch.device("meta"):
        model = EntropyModel(config)
    model.load_state_dict(converted, assign=True)
    dtype = dtype or converted["embed.weight"].dtype
    logger.info("imported %s: %d layers, dim %d, window %d, %d parameters", where, config.n_layers, config.dim,
                config.window, model.num_params())
    return save_checkpoint(model, out_dir, preset=None, name=name or f"hf:{Path(src_dir).resolve().name}",
                           dtype=dtype)


def export_hf(model_dir: str | os.PathLike, out_dir: str | os.PathLike, *, dtype: torch.dtype | None = None) -> Path:
    """Write our checkpoint as a standalone ``BltPatcher`` (``BltPatcher.from_pretrained`` loads it).

    ``config.json`` is the patcher config of :func:`to_hf_patcher` plus ``architectures``
    and ``dtype``; ``model.safetensors`` holds the un-prefixed tensors — the same config and
    tensors a BLT export embeds as ``patcher_config`` and ``model.patcher.*``.
    """
    from safetensors.torch import save_file

    from bltdata import fs
    from bltdata.entropy.checkpoint import load_checkpoint, read_config

    dtype = dtype or getattr(torch, read_config(model_dir).get("dtype", "float32"))  # default: as stored
    model = load_checkpoint(model_dir, dtype=dtype)
    patcher_config, state = to_hf_patcher(model.config, model.state_dict(), source=str(model_dir))
    stored = str(next(iter(state.values())).dtype).removeprefix("torch.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})  # transformers reads "pt" files
    os.chmod(tmp, 0o644)
    os.replace(tmp, out_dir / WEIGHTS_FILE)
    fs.write_json_atomic(str(out_dir / CONFIG_FILE), {"architectures": ["BltPatcher"], **patcher_config,
                                                      "dtype": stored})
    return out_dir
