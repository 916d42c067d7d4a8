"""Entropy model checkpoints: a directory with ``config.json`` + ``model.safetensors``.

Loading never unpickles anything: the weights are safetensors and the config is JSON.
``load_checkpoint("default")`` loads the model bundled with the package
(:data:`DEFAULT_MODEL_DIR`), trained on the embedded default corpus.

``import_reference`` converts the released reference checkpoint layout (``params.json`` +
``consolidated.pth`` holding an ``LMTransformer`` state dict) into ours. The reference file
is read with ``torch.load(weights_only=True)``; every key is mapped explicitly and every
shape checked, and missing or unexpected keys fail with their names. The reference applies
RoPE to interleaved pairs (dimensions 2j, 2j+1), which is also our layout, so ``wq``/``wk``
are copied without any permutation; ``wq``/``wk``/``wv`` are stacked into our fused ``qkv``
and ``w1``/``w3`` (gate/up) into our fused ``gate_up``.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from bltdata import fs
from bltdata.entropy.model import EntropyModel, EntropyModelConfig

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
FORMAT = "bltdata-entropy-model"
FORMAT_VERSION = 1


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """``"default"`` → the bundled model's directory; anything else as a path."""
    return DEFAULT_MODEL_DIR if str(path) == "default" else Path(path)


def save_checkpoint(model: EntropyModel, directory: str | os.PathLike, *, preset: str | None = None,
                    name: str | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (each atomically); returns the directory.

    ``dtype`` (e.g. ``torch.bfloat16``) stores the weights in that type; default: as they are.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if dtype is not None else v).detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    os.chmod(tmp, 0o644)  # safetensors creates the file owner-only; weights are meant to be shared
    os.replace(tmp, directory / WEIGHTS_FILE)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": name or directory.resolve().name,
            "preset": preset, "dtype": str(next(iter(tensors.values())).dtype).removeprefix("torch."),
            "model": model.config.to_dict()}
    fs.write_json_atomic(str(directory / CONFIG_FILE), meta)
    return directory


def read_config(directory: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a checkpoint, checked for our format."""
    path = resolve_model_dir(directory) / CONFIG_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no entropy model config here (expected {CONFIG_FILE} + {WEIGHTS_FILE})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from None
    if meta.get("format") != FORMAT or "model" not in meta:
        raise ValueError(f"{path}: not a bltdata entropy model config (format {meta.get('format')!r})")
    return meta


def record_threshold(directory: str | os.PathLike, threshold: float, target_patch_size: float | None,
                     note: str) -> None:
    """Store the recommended entropy-mode θ (and the mean patch it was calibrated for) in config.json."""
    directory = resolve_model_dir(directory)
    if directory.resolve() == DEFAULT_MODEL_DIR.resolve():
        raise ValueError(f"{directory}: the bundled model is part of the package; copy it to write a θ")
    meta = read_config(directory)
    meta.update(recommended_threshold=float(threshold), recommended_target_patch_size=target_patch_size,
                recommended_threshold_note=note)
    fs.write_json_atomic(str(directory / CONFIG_FILE), meta)


def load_checkpoint(directory: str | os.PathLike = "default", device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> EntropyModel:
    """The model of a checkpoint directory (or ``"default"``), in eval mode, weights cast to ``dtype``."""
    from safetensors.torch import load_file

    directory = resolve_model_dir(directory)
    meta = read_config(directory)
    config = EntropyModelConfig.from_dict(meta["model"])
    with torch.device("meta"):  # no init work: every tensor comes from the file
        model = EntropyModel(config)
    state = load_file(str(directory / WEIGHTS_FILE), device="cpu")
    _check_state_keys(model, state, directory / WEIGHTS_FILE)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    return model.to(device=device).eval()


def checkpoint_metadata(directory: str | os.PathLike) -> dict:
    """``{"name", "preset", "sha256"}`` of a checkpoint (sha256 of its weights file)."""
    directory = resolve_model_dir(directory)
    meta = read_config(directory)
    return {"name": meta.get("name") or directory.name, "preset": meta.get("preset"),
            "sha256": fs.sha256_file(directory / WEIGHTS_FILE)}


def _check_state_keys(model: torch.nn.Module, state: dict, source: Path) -> None:
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"{source}: weights do not match the config: missing {missing}, unexpected {extra}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(f"{source}: {key} has shape {tuple(tensor.shape)}, "
                             f"expected {tuple(expected[key].shape)}")


# --- the reference checkpoint layout -------------------------------------------------------

REFERENCE_PARAMS = ("dim", "n_layers", "n_heads", "max_seqlen", "ffn_dim_multiplier", "vocab_size")
IGNORED_REFERENCE_KEYS = ("rope_embeddings.freqs_cis",)  # a derived buffer, recomputed here


def reference_ffn_hidden(dim: int, ffn_dim_multiplier: float | None, multiple_of: int = 256) -> int:
    """The reference's SwiGLU width: 2/3 · 4·dim, times the multiplier, rounded up to 256."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def reference_config(params: dict) -> EntropyModelConfig:
    """Our config from a reference ``params.json`` (its ``entropy_model`` section if present).

    Only dim, n_layers, n_heads, max_seqlen, ffn_dim_multiplier and vocab_size are read; like
    the reference loader we fix RoPE θ 10000, norm eps 1e-5 and window 512 (docs/design.md §4).
    """
    section = params.get("entropy_model", params)
    missing = [k for k in REFERENCE_PARAMS if k not in section and k != "ffn_dim_multiplier"]
    if missing:
        raise ValueError(f"params.json lacks {missing} (read: {list(REFERENCE_PARAMS)})")
    dim = int(section["dim"])
    return EntropyModelConfig(
        dim=dim, n_layers=int(section["n_layers"]), n_heads=int(section["n_heads"]),
        ffn_hidden=reference_ffn_hidden(dim, section.get("ffn_dim_multiplier")),
        window=512, rope_theta=10000.0, norm_eps=1e-5,
        vocab_size=int(section["vocab_size"]), max_seqlen=int(section["max_seqlen"]))


def layout_key_map(config: EntropyModelConfig, top: dict[str, list[str]], per_layer: dict[str, list[str]],
                   layer_prefix: str = "layers.") -> dict[str, list[str]]:
    """Our state-dict key → another layout's keys concatenated (along dim 0) to form it.

    ``top`` maps our non-layer keys, ``per_layer`` our block keys (without ``blocks.{i}.``) to
    that layout's names (without ``{layer_prefix}{i}.``)."""
    mapping = dict(top)
    for i in range(config.n_layers):
        for ours, theirs in per_layer.items():
            mapping[f"blocks.{i}.{ours}"] = [f"{layer_prefix}{i}.{name}" for name in theirs]
    return mapping


REFERENCE_TOP = {"embed.weight": ["tok_embeddings.weight"], "final_norm.weight": ["norm.weight"],
                 "output.weight": ["output.weight"]}
REFERENCE_LAYER = {
    "attn_norm.weight": ["attention_norm.weight"],
    "attn.qkv.weight": [f"attention.{w}.weight" for w in ("wq", "wk", "wv")],
    "attn.proj.weight": ["attention.wo.weight"],
    "mlp_norm.weight": ["ffn_norm.weight"],
    "mlp.gate_up.weight": [f"feed_forward.{w}.weight" for w in ("w1", "w3")],
    "mlp.down.weight": ["feed_forward.w2.weight"],
}


def reference_key_map(config: EntropyModelConfig) -> dict[str, list[str]]:
    """Our state-dict key → the reference keys concatenated (along dim 0) to form it."""
    return layout_key_map(config, REFERENCE_TOP, REFERENCE_LAYER)


def convert_reference_state(state: dict, config: EntropyModelConfig, source: str = "state dict") -> dict:
    """Our state dict from a reference ``LMTransformer`` one; every key and shape checked."""
    with torch.device("meta"):
        model_shapes = {k: tuple(v.shape) for k, v in EntropyModel(config).state_dict().items()}
    mapping = reference_key_map(config)
    wanted = {ref for refs in mapping.values() for ref in refs}
    present = {k for k in state if k not in IGNORED_REFERENCE_KEYS}
    missing, extra = sorted(wanted - present), sorted(present - wanted)
    if missing or extra:
        raise ValueError(f"{source}: reference state dict does not match params.json "
                         f"({config.n_layers} layers): missing keys {missing}, unexpected keys {extra}")
    converted = {}
    for ours, refs in mapping.items():
        tensor = torch.cat([state[r] for r in refs], dim=0) if len(refs) > 1 else state[refs[0]]
        if tuple(tensor.shape) != model_shapes[ours]:
            shapes = {r: tuple(state[r].shape) for r in refs}
            raise ValueError(f"{source}: {', '.join(refs)} have shapes {shapes}; {ours} needs {model_shapes[ours]}")
        converted[ours] = tensor.clone() if len(refs) == 1 else tensor  # own storage: no tensor sharing on save
    return converted


def import_reference(src_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                     dtype: torch.dtype | None = None, name: str | None = None) -> Path:
    """Convert a reference checkpoint (``params.json`` + ``consolidated.pth``) to our layout."""
    src_dir = Path(src_dir)
    params_path, weights_path = src_dir / "params.json", src_dir / "consolidated.pth"
    for path in (params_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (a reference checkpoint has params.json + consolidated.pth)")
    config = reference_config(json.loads(params_path.read_text()))
    loaded = torch.load(weights_path, map_location="cpu", weights_only=True)
    state = loaded["model"] if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict) else loaded
    if not isinstance(state, dict):
        raise ValueError(f"{weights_path}: expected a state dict (or {{'model': state dict}}), got {type(state).__name__}")
    converted = convert_reference_state(state, config, str(weights_path))
    with torch.device("meta"):
        model = EntropyModel(config)
    model.load_state_dict(converted, assign=True)
    dtype = dtype or converted["embed.weight"].dtype
    logger.info("imported %s: %d layers, dim %d, %d parameters", src_dir, config.n_layers, config.dim, model.num_params())
    return save_checkpoint(model, out_dir, preset=None, name=name or f"reference:{src_dir.resolve().name}", dtype=dtype)
