"""Checkpoints: bit-exact round trip, metadata, the bundled model, importing the reference layout."""
import hashlib
import json
import math

import pytest
import torch

from bltdata.entropy.checkpoint import (
    DEFAULT_MODEL_DIR,
    checkpoint_metadata,
    import_reference,
    load_checkpoint,
    reference_ffn_hidden,
    save_checkpoint,
)
from bltdata.entropy.model import EntropyModel, tiny


def test_round_trip_is_bit_exact(tmp_path):
    model = EntropyModel(tiny())
    save_checkpoint(model, tmp_path / "m", preset="tiny", name="unit")
    loaded = load_checkpoint(tmp_path / "m")
    original, restored = model.state_dict(), loaded.state_dict()
    assert list(original) == list(restored) and len(original) > 0
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    tokens = torch.randint(0, 260, (2, 40))
    assert torch.equal(model.eval()(tokens), loaded(tokens))
    assert not loaded.training


def test_metadata(tmp_path):
    out = save_checkpoint(EntropyModel(tiny()), tmp_path / "mine", preset="tiny")
    meta = checkpoint_metadata(out)
    weights = (out / "model.safetensors").read_bytes()
    assert meta == {"name": "mine", "preset": "tiny", "sha256": hashlib.sha256(weights).hexdigest()}
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


def test_bfloat16_storage_halves_the_file(tmp_path):
    model = EntropyModel(tiny())
    full = save_checkpoint(model, tmp_path / "f32")
    half = save_checkpoint(model, tmp_path / "bf16", dtype=torch.bfloat16)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    loaded = load_checkpoint(half)
    assert loaded.embed.weight.dtype == torch.float32
    assert torch.equal(loaded.embed.weight, model.embed.weight.to(torch.bfloat16).float())


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(tmp_path)
    out = save_checkpoint(EntropyModel(tiny()), tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    config["model"]["n_layers"] = 3
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"missing \['blocks\.2\."):
        load_checkpoint(out)


def test_bundled_default_model():
    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size <= 10 * 2**20
    model = load_checkpoint("default")
    meta = checkpoint_metadata("default")
    assert meta["preset"] == "small" and len(meta["sha256"]) == 64
    training = json.loads((DEFAULT_MODEL_DIR / "training.json").read_text())
    assert training["command"].startswith("bltdata entropy train default")
    assert training["heldout_bpb"] < 4.0
    assert model.num_params() > 0


# --- the reference layout ------------------------------------------------------------------

REF_PARAMS = {"dim": 64, "n_layers": 2, "n_heads": 4, "max_seqlen": 1024, "ffn_dim_multiplier": 1.0,
              "vocab_size": 260, "sliding_window": 512, "attn_impl": "xformers"}


def _reference_state(params: dict, seed: int = 0) -> dict:
    """A random state dict under the reference LMTransformer's key names and shapes."""
    g = torch.Generator().manual_seed(seed)
    dim, hidden, vocab = params["dim"], reference_ffn_hidden(params["dim"], params["ffn_dim_multiplier"]), params["vocab_size"]

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    state = {"tok_embeddings.weight": rand(vocab, dim), "norm.weight": 1 + rand(dim), "output.weight": rand(vocab, dim)}
    for i in range(params["n_layers"]):
        p = f"layers.{i}."
        for w in ("wq", "wk", "wv", "wo"):
            state[p + f"attention.{w}.weight"] = rand(dim, dim)
        state[p + "feed_forward.w1.weight"] = rand(hidden, dim)
        state[p + "feed_forward.w3.weight"] = rand(hidden, dim)
        state[p + "feed_forward.w2.weight"] = rand(dim, hidden)
        state[p + "attention_norm.weight"] = 1 + rand(dim)
        state[p + "ffn_norm.weight"] = 1 + rand(dim)
    return state


def _write_reference(directory, state, params=REF_PARAMS):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "params.json").write_text(json.dumps({"entropy_model": params, "other": {"dim": 1}}))
    torch.save({"model": state, "optim": None}, directory / "consolidated.pth")
    return directory


def _reference_forward(state: dict, params: dict, tokens: torch.Tensor, window: int = 512) -> torch.Tensor:
    """The reference architecture written out independently: separate projections, RoPE on
    complex numbers over interleaved pairs, explicit softmax attention."""
    dim, heads, eps = params["dim"], params["n_heads"], 1e-5
    hd, T = dim // heads, tokens.shape[0]

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    freqs = 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    cis = torch.polar(torch.ones(T, hd // 2, dtype=torch.float64), torch.arange(T)[:, None] * freqs).to(torch.complex64)

    def rope(x):  # (T, H, hd)
        return torch.view_as_real(torch.view_as_complex(x.reshape(T, heads, hd // 2, 2)) * cis[:, None]).reshape(T, heads, hd)

    pos = torch.arange(T)
    allowed = (pos[None, :] <= pos[:, None]) & (pos[:, None] - pos[None, :] < window)
    h = state["tok_embeddings.weight"][tokens]
    for i in range(params["n_layers"]):
        p = f"layers.{i}."
        x = rms(h, state[p + "attention_norm.weight"])
        q = rope((x @ state[p + "attention.wq.weight"].T).view(T, heads, hd))
        k = rope((x @ state[p + "attention.wk.weight"].T).view(T, heads, hd))
        v = (x @ state[p + "attention.wv.weight"].T).view(T, heads, hd)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
        attn = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        h = h + torch.einsum("hqk,khd->qhd", attn, v).reshape(T, dim) @ state[p + "attention.wo.weight"].T
        x = rms(h, state[p + "ffn_norm.weight"])
        gate, up = x @ state[p + "feed_forward.w1.weight"].T, x @ state[p + "feed_forward.w3.weight"].T
        h = h + (torch.nn.functional.silu(gate) * up) @ state[p + "feed_forward.w2.weight"].T
    return rms(h, state["norm.weight"]) @ state["output.weight"].T


def test_reference_ffn_hidden():
    assert reference_ffn_hidden(768, 1.0) == 2048  # the paper's entropy model
    assert reference_ffn_hidden(768, None) == 2048
    assert reference_ffn_hidden(64, 1.0) == 256


def test_import_maps_every_key(tmp_path):
    state = _reference_state(REF_PARAMS)
    out = import_reference(_write_reference(tmp_path / "ref", state), tmp_path / "ours")
    model = load_checkpoint(out)
    config = model.config
    assert (config.dim, config.n_layers, config.n_heads, config.ffn_hidden) == (64, 2, 4, 256)
    assert (config.window, config.rope_theta, config.norm_eps, config.max_seqlen) == (512, 10000.0, 1e-5, 1024)
    ours = model.state_dict()
    placed = {"tok_embeddings.weight": ours["embed.weight"], "norm.weight": ours["final_norm.weight"],
              "output.weight": ours["output.weight"]}
    for i in range(2):
        b, p = f"blocks.{i}.", f"layers.{i}."
        q, k, v = ours[b + "attn.qkv.weight"].chunk(3)
        gate, up = ours[b + "mlp.gate_up.weight"].chunk(2)
        placed.update({p + "attention.wq.weight": q, p + "attention.wk.weight": k, p + "attention.wv.weight": v,
                       p + "attention.wo.weight": ours[b + "attn.proj.weight"],
                       p + "feed_forward.w1.weight": gate, p + "feed_forward.w3.weight": up,
                       p + "feed_forward.w2.weight": ours[b + "mlp.down.weight"],
                       p + "attention_norm.weight": ours[b + "attn_norm.weight"],
                       p + "ffn_norm.weight": ours[b + "mlp_norm.weight"]})
    assert set(placed) == set(state) and len(state) == 3 + 2 * 9
    for key, tensor in state.items():
        assert torch.equal(placed[key], tensor), key
    assert sum(t.numel() for t in state.values()) == model.num_params()


def test_imported_model_computes_the_reference_function(tmp_path):
    """Same logits as the reference architecture (RoPE convention included), past the window too."""
    state = _reference_state(REF_PARAMS, seed=3)
    model = load_checkpoint(import_reference(_write_reference(tmp_path / "ref", state), tmp_path / "ours"))
    tokens = torch.randint(0, 260, (600,), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = model(tokens[None])[0]
    want = _reference_forward(state, REF_PARAMS, tokens)
    assert (ours - want).abs().max() < 1e-3


def test_import_keeps_bfloat16(tmp_path):
    state = {k: v.to(torch.bfloat16) for k, v in _reference_state(REF_PARAMS).items()}
    out = import_reference(_write_reference(tmp_path / "ref", state), tmp_path / "ours")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


@pytest.mark.parametrize("change,message", [
    (lambda s: s.pop("layers.1.feed_forward.w3.weight"), r"missing keys \['layers\.1\.feed_forward\.w3\.weight'\]"),
    (lambda s: s.update({"layers.2.attention.wq.weight": torch.zeros(64, 64)}),
     r"unexpected keys \['layers\.2\.attention\.wq\.weight'\]"),
    (lambda s: s.update({"output.weight": torch.zeros(259, 64)}), r"output\.weight .*\(259, 64\)"),
])
def test_import_fails_clearly(tmp_path, change, message):
    state = _reference_state(REF_PARAMS)
    change(state)
    with pytest.raises(ValueError, match=message):
        import_reference(_write_reference(tmp_path / "ref", state), tmp_path / "ours")
    assert not (tmp_path / "ours" / "model.safetensors").exists()


def test_import_ignores_the_rope_buffer_and_needs_both_files(tmp_path):
    state = _reference_state(REF_PARAMS)
    state["rope_embeddings.freqs_cis"] = torch.zeros(1024, 8, 2, 2)
    assert import_reference(_write_reference(tmp_path / "ref", state), tmp_path / "ours").is_dir()
    (tmp_path / "ref" / "consolidated.pth").unlink()
    with pytest.raises(FileNotFoundError, match="consolidated.pth"):
        import_reference(tmp_path / "ref", tmp_path / "again")
