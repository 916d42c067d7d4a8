"""`bltdata blt import` / `export`: foreign BLT checkpoints to and from our run directories.

An imported model becomes a run directory that ``bltdata eval`` / ``generate`` read like a
trained one: ``run.json`` (the model config, the released patcher: entropy mode, its θ,
its max patch length; and where its entropy model is), ``checkpoints/step_00000000/
model.pt`` and ``entropy_model/`` (our entropy checkpoint, converted from the patcher
weights the release ships). Configs are translated field by field (``config_from_hf``,
``config_from_reference``); anything of theirs we cannot reproduce (grouped-query heads,
different encoder/decoder widths, cross-attention after every encoder layer, ...) is an
error naming the field, never a silent approximation. Tensor names: `bltdata/blt/interop.py`.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import torch

from bltdata import fs
from bltdata.blt import interop
from bltdata.blt.config import REFERENCE_WIRING, BLTConfig
from bltdata.blt.model import BLT
from bltdata.entropy.checkpoint import import_reference as import_entropy, load_checkpoint, save_checkpoint
from bltdata.entropy.hf import from_hf_patcher, prefix_patcher_state, split_patcher_state, to_hf_patcher
from bltdata.entropy.model import EntropyModel
from bltdata.nn.sizes import swiglu_hidden
from bltdata.patch_config import DEFAULT_THRESHOLD

log = logging.getLogger(__name__)

ENTROPY_DIR = "entropy_model"


def _sub(config: dict, name: str, source: str) -> dict:
    sub = config.get(name)
    if not isinstance(sub, dict):
        raise ValueError(f"{source}: no {name!r} section (a BltForCausalLM config.json has one per component)")
    return sub


def _theta(sub: dict) -> float:
    params = sub.get("rope_parameters") or {}
    return float(params.get("rope_theta", sub.get("rope_theta", 500000.0)))


def _same(values: dict, what: str, source: str):
    if len(set(values.values())) != 1:
        raise ValueError(f"{source}: {what} differs between components {values}; our BLT has one")
    return next(iter(values.values()))


def config_from_hf(config: dict, source: str = "config.json") -> BLTConfig:
    """Our config from a transformers ``BltConfig`` dict (its ``config.json``)."""
    enc, dec, glo = (_sub(config, n, source) for n in ("encoder_config", "decoder_config", "global_config"))
    parts = {"encoder_config": enc, "decoder_config": dec, "global_config": glo}
    for name, sub in parts.items():
        kv = sub.get("num_key_value_heads") or sub["num_attention_heads"]
        if kv != sub["num_attention_heads"]:
            raise ValueError(f"{source}: {name}.num_key_value_heads {kv} != num_attention_heads (no GQA here)")
    if enc.get("cross_attn_all_layers", False) or not dec.get("cross_attn_all_layers", True):
        raise ValueError(f"{source}: cross_attn_all_layers must be false for the encoder and true for the decoder")
    dim_local = _same({"encoder": enc["hidden_size"], "decoder": dec["hidden_size"]}, "hidden_size", source)
    heads = _same({"encoder": enc["num_attention_heads"], "decoder": dec["num_attention_heads"]}, "heads", source)
    multiple = interop.infer_multiple_of(
        [(sub["hidden_size"], sub["intermediate_size"]) for sub in parts.values()], source)
    wiring = {**REFERENCE_WIRING, "ffn_multiple_of": multiple,
              "rope_theta": _same({n: _theta(s) for n, s in parts.items()}, "RoPE θ", source)}
    window = config.get("local_attention_window_len", 512)
    return BLTConfig(
        dim_local=dim_local, n_layers_encoder=enc["num_hidden_layers"], n_layers_decoder=dec["num_hidden_layers"],
        n_heads_local=heads, n_heads_cross=heads, local_window=window if window else 1 << 20,
        dim_global=glo["hidden_size"], n_layers_global=glo["num_hidden_layers"],
        n_heads_global=glo["num_attention_heads"], cross_attn_k=config.get("cross_attn_k", 2),
        hash_ngram_sizes=tuple(config.get("encoder_hash_byte_group_size") or (3, 4, 5, 6, 7, 8)),
        hash_table_size=config.get("encoder_hash_byte_group_vocab", 500002),
        hash_functions=config.get("encoder_hash_byte_group_nb_functions", 1),
        norm_eps=_same({n: s.get("rms_norm_eps", 1e-5) for n, s in parts.items()}, "rms_norm_eps", source),
        max_seqlen=enc.get("max_position_embeddings", 8192), **wiring)


def _hf_component(config: BLTConfig, dim: int, heads: int, layers: int) -> dict:
    return {"hidden_size": dim, "num_attention_heads": heads, "num_key_value_heads": heads,
            "num_hidden_layers": layers, "rms_norm_eps": config.norm_eps, "hidden_act": "silu",
            "intermediate_size": swiglu_hidden(dim, config.ffn_multiple_of), "max_position_embeddings": config.max_seqlen,
            "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta}}


def config_to_hf(config: BLTConfig, patcher: dict | None = None, patching: dict | None = None) -> dict:
    """A transformers ``BltConfig`` dict; ``patcher``: its ``patcher_config`` (None: no patcher)."""
    interop.check_exportable(config)
    c = config
    if len(set(c.table_sizes)) != 1 or c.n_layers_encoder < 1 or c.n_layers_decoder < 1:
        raise ValueError("transformers' BLT needs one hash-table size for every n and >= 1 encoder/decoder layer")
    if c.cross_attn_window_encoder > 1 or c.cross_attn_window_decoder > 1:
        raise ValueError("transformers' BLT has no cross-attention windows (cross_attn_window_* must be 1)")
    local = {"cross_attn_k": c.cross_attn_k, "hidden_size_global": c.dim_global, "vocab_size": c.vocab_size}
    patching = patching or {}
    out = {
        "model_type": "blt", "architectures": ["BltForCausalLM"], "vocab_size": c.vocab_size,
        "max_position_embeddings": c.max_seqlen, "patch_in_forward": patcher is not None,
        "patching_mode": "entropy", "patch_size": 4,
        "patching_threshold": patching.get("threshold", DEFAULT_THRESHOLD),
        "max_patch_length": patching.get("max_patch_length"),
        "local_attention_window_len": c.local_window, "cross_attn_k": c.cross_attn_k,
        "encoder_hash_byte_group_size": list(c.hash_ngram_sizes),
        "encoder_hash_byte_group_vocab": c.table_sizes[0],
        "encoder_hash_byte_group_nb_functions": c.hash_functions,
        "encoder_config": {**_hf_component(c, c.dim_local, c.n_heads_local, c.n_layers_encoder), **local,
                           "cross_attn_all_layers": False, "sliding_window": c.local_window},
        "decoder_config": {**_hf_component(c, c.dim_local, c.n_heads_local, c.n_layers_decoder), **local,
                           "cross_attn_all_layers": True},
        "global_config": _hf_component(c, c.dim_global, c.n_heads_global, c.n_layers_global),
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    }
    if patcher is not None:
        out["patcher_config"] = patcher
    return out


def config_from_reference(params: dict, source: str = "params.json") -> BLTConfig:
    """Our config from the reference's ``params.json`` (its ``model`` / ``args`` section if present)."""
    section = params.get("model") if isinstance(params.get("model"), dict) else params.get("args", params)
    needed = ("dim_global", "dim_local_encoder", "dim_local_decoder", "n_layers_global", "n_layers_local_encoder",
              "n_layers_local_decoder", "n_heads_global", "n_heads_local_encoder", "n_heads_local_decoder")
    missing = [k for k in needed if k not in section]
    if missing:
        raise ValueError(f"{source}: lacks {missing}")
    s = section
    for name, value in (("n_kv_heads", s.get("n_kv_heads")), ("n_kv_heads_global", s.get("n_kv_heads_global"))):
        if value is not None:
            raise ValueError(f"{source}: {name} = {value} (grouped-query attention is not supported)")
    hf_like = {
        "cross_attn_k": s.get("cross_attn_k", 2), "local_attention_window_len": s.get("local_attention_window_len"),
        "encoder_hash_byte_group_size": s.get("encoder_hash_byte_group_size"),
        "encoder_hash_byte_group_vocab": s.get("encoder_hash_byte_group_vocab", 30000),
        "encoder_hash_byte_group_nb_functions": s.get("encoder_hash_byte_group_nb_functions", 3),
    }
    multiple = int(s.get("multiple_of", 256))
    for prefix, dim, layers, heads in (("encoder", "dim_local_encoder", "n_layers_local_encoder", "n_heads_local_encoder"),
                                       ("decoder", "dim_local_decoder", "n_layers_local_decoder", "n_heads_local_decoder"),
                                       ("global", "dim_global", "n_layers_global", "n_heads_global")):
        hf_like[f"{prefix}_config"] = {
            "hidden_size": s[dim], "num_hidden_layers": s[layers], "num_attention_heads": s[heads],
            "intermediate_size": swiglu_hidden(s[dim], multiple), "rms_norm_eps": s.get("norm_eps", 1e-5),
            "rope_theta": s.get("rope_theta", 10000.0), "max_position_embeddings": s.get("max_seqlen", 8192),
            "cross_attn_all_layers": s.get(f"cross_attn_all_layers_{prefix}", prefix == "decoder")}
    config = config_from_hf(hf_like, source)
    windows = {k: s.get(f"cross_attn_window_{k}") or 1 for k in ("encoder", "decoder")}
    if windows != {"encoder": 1, "decoder": 1}:
        config = replace(config, cross_attn_window_encoder=windows["encoder"],
                         cross_attn_window_decoder=windows["decoder"])
    return config


# --- the entropy model (patcher) inside an HF checkpoint ------------------------------------

def patcher_from_hf(patcher_config: dict, state: dict, source: str):
    """An ``EntropyModel`` from the ``patcher_config`` and the ``model.patcher.*`` tensors (prefix removed)."""
    config, converted = from_hf_patcher(patcher_config, state, source=source + " (patcher)")
    model = EntropyModel(config)
    model.load_state_dict(converted)
    return model.eval()


def patcher_to_hf(model) -> tuple[dict, dict]:
    """(``patcher_config``, ``model.patcher.*`` tensors without the prefix) of an ``EntropyModel``."""
    return to_hf_patcher(model.config, model.state_dict())


# --- files -----------------------------------------------------------------------------------

def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found ({what})")
    return path


def write_run(out_dir: str | os.PathLike, config: BLTConfig, state: dict, patching: dict, entropy_model,
              imported_from: dict) -> Path:
    """A run directory holding one checkpoint (step 0) that `bltdata eval` / `generate` can read."""
    from bltdata.blt.checkpoint import CHECKPOINTS, RUN_FILE, step_name
    from bltdata.blt.runs import BltTrainConfig

    out = Path(out_dir)
    model = BLT(config)
    model.load_state_dict(state)  # strict: proves every tensor is there with its shape
    step_dir = out / CHECKPOINTS / step_name(0)
    step_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), step_dir / "model.pt")
    fs.write_json_atomic(str(step_dir / "trainer.json"), {"step": 0, "world_size": 1, "imported": True})
    if entropy_model is not None:

        save_checkpoint(entropy_model, out / ENTROPY_DIR, name=f"{imported_from['path']}:patcher")
    train = asdict(BltTrainConfig(seq_len=min(config.max_seqlen, 8192)))
    run = {"model": config.to_dict(), "train": train, "imported_from": imported_from,
           "data": {"sources": [], "patcher": patching},
           "entropy_model": ENTROPY_DIR if entropy_model is not None else None}
    fs.write_json_atomic(str(out / RUN_FILE), run)
    (out / CHECKPOINTS / "latest").write_text(step_name(0) + "\n")
    log.info("imported %s into %s (%d parameters)", imported_from["path"], out, sum(p.numel() for p in model.parameters()))
    return out


def _patching_from_hf(config: dict) -> dict:
    mode = config.get("patching_mode") or "entropy"
    return {"mode": mode, "threshold": float(config.get("patching_threshold") or DEFAULT_THRESHOLD),
            "threshold_add": None, "max_patch_length": config.get("max_patch_length"),
            "patch_size": int(config.get("patch_size") or 4)}


def import_hf(src_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """A transformers ``BltForCausalLM`` directory (config.json + model.safetensors) → a run directory."""
    from safetensors.torch import load_file

    src = Path(src_dir)
    hf_config = json.loads(_need(src / "config.json", "a transformers BLT has config.json + model.safetensors").read_text())
    weights = _need(src / "model.safetensors", "a transformers BLT has config.json + model.safetensors")
    tensors = load_file(str(weights))
    config = config_from_hf(hf_config, str(src / "config.json"))
    patcher_state, tensors = split_patcher_state(tensors)
    state = interop.convert(tensors, interop.hf_key_groups(config), interop.our_shapes(config),
                            to_ours=True, source=str(weights))
    entropy_model = None
    if patcher_state:
        if "patcher_config" not in hf_config:
            raise ValueError(f"{src / 'config.json'}: model.patcher.* tensors but no patcher_config")
        entropy_model = patcher_from_hf(hf_config["patcher_config"], patcher_state, str(weights))
    return write_run(out_dir, config, state, _patching_from_hf(hf_config), entropy_model,
                     {"format": "hf", "path": str(src)})


def import_reference(src_dir: str | os.PathLike, out_dir: str | os.PathLike,
                     entropy_dir: str | os.PathLike | None = None, threshold: float = DEFAULT_THRESHOLD) -> Path:
    """A reference checkpoint (params.json + consolidated.pth; its entropy model beside it) → a run directory."""
    src = Path(src_dir)
    what = "a reference checkpoint has params.json + consolidated.pth"
    params = json.loads(_need(src / "params.json", what).read_text())
    weights = _need(src / "consolidated.pth", what)
    loaded = torch.load(weights, map_location="cpu", weights_only=True)
    state = loaded["model"] if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict) else loaded
    if not isinstance(state, dict):
        raise ValueError(f"{weights}: expected a state dict (or {{'model': state dict}}), got {type(state).__name__}")
    config = config_from_reference(params, str(src / "params.json"))
    ours = interop.convert(state, interop.reference_key_groups(config), interop.our_shapes(config),
                           to_ours=True, source=str(weights))
    entropy_model = None
    if entropy_dir is not None:
        with tempfile.TemporaryDirectory() as tmp:
            entropy_model = load_checkpoint(import_entropy(entropy_dir, Path(tmp) / "entropy"))
    patching = {"mode": "entropy", "threshold": threshold, "threshold_add": None, "max_patch_length": None,
                "patch_size": 4}
    return write_run(out_dir, config, ours, patching, entropy_model, {"format": "reference", "path": str(src)})


def export_hf(run_dir: str | os.PathLike, out_dir: str | os.PathLike, checkpoint: str | None = None) -> Path:
    """A run directory → a transformers ``BltForCausalLM`` directory (with the run's entropy model, if any)."""
    from safetensors.torch import save_file

    from bltdata.blt.checkpoint import load_model

    model, run = load_model(run_dir, "cpu", checkpoint)
    if not isinstance(model, BLT):
        raise ValueError(f"{run_dir}: a {run['model'].get('kind')} model; only a BLT exports to transformers")
    config = model.config
    tensors = interop.convert(model.state_dict(), interop.hf_key_groups(config), interop.hf_shapes(config),
                              to_ours=False, source=f"{run_dir} model.pt")
    patcher = None
    entropy_dir = run.get("entropy_model")
    if entropy_dir:
        patcher, patcher_state = patcher_to_hf(load_checkpoint(Path(run_dir) / entropy_dir))
        tensors.update(prefix_patcher_state(patcher_state))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    hf_config = config_to_hf(config, patcher, (run.get("data") or {}).get("patcher"))
    fs.write_json_atomic(str(out / "config.json"), hf_config)
    return out
