"""The transformers ``BltPatcher`` layout: key mapping, and transformers' own classes as the oracle.

The oracle tests build a tiny random ``BltPatcher`` (seeded, CPU, fp32) with a sliding
window shorter than the inputs, so the window is part of what is compared.
"""
import json

import numpy as np
import pytest
import torch

from bltdata.entropy.checkpoint import load_checkpoint, save_checkpoint
from bltdata.entropy.engine import EntropyEngine
from bltdata.entropy.hf import (
    CAUSAL_LM_PREFIX,
    config_from_hf,
    config_to_hf,
    export_hf,
    from_hf_patcher,
    import_hf,
    prefix_patcher_state,
    split_patcher_state,
    to_hf_patcher,
)
from bltdata.entropy.model import EntropyModel, EntropyModelConfig
from bltdata.patching import DEFAULT_THRESHOLD, PatcherConfig, patch_lengths

CONFIG = EntropyModelConfig(dim=32, n_layers=2, n_heads=2, ffn_hidden=96, window=16, rope_theta=500.0,
                            norm_eps=1e-6, max_seqlen=256)
HF_PATCHER = {"vocab_size": 260, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 96, "max_position_embeddings": 256, "sliding_window": 16}
TEXTS = [b"The quick brown fox jumps over the lazy dog. " * 2, b"def f(x):\n    return x * 2  # 42\n",
         "h\u00e9llo w\u00f6rld \u2014 bytes, not characters".encode()]


def _our_model(config=CONFIG, seed=0) -> EntropyModel:
    model = EntropyModel(config)
    model.reset_parameters(seed=seed)
    with torch.no_grad():  # norms away from 1 so a swapped norm would show
        g = torch.Generator().manual_seed(seed + 1)
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def _tokens(text: bytes) -> torch.Tensor:
    return torch.tensor([[1] + [b + 4 for b in text]])


# --- the mapping (no transformers needed) ----------------------------------------------------

def test_round_trip_is_bit_exact():
    model = _our_model()
    patcher_config, hf_state = to_hf_patcher(CONFIG, model.state_dict())
    assert len(hf_state) == 3 + 9 * CONFIG.n_layers
    assert hf_state["layers.1.self_attn.k_proj.weight"].shape == (32, 32)
    assert hf_state["layers.0.mlp.up_proj.weight"].shape == (96, 32)
    # the RoPE buffer that transformers' conversion of the released checkpoint carries along is skipped
    hf_state["rope_embeddings.freqs_cis"] = torch.zeros(256, 8, 2)
    config, state = from_hf_patcher(json.loads(json.dumps(patcher_config)), hf_state)
    assert config == CONFIG
    original = model.state_dict()
    assert set(state) == set(original) and len(state) > 0
    for key in original:
        assert torch.equal(state[key], original[key]), key


def test_hf_config_spells_out_the_architecture():
    hf = config_to_hf(CONFIG)
    assert hf["model_type"] == "blt_patcher" and hf["sliding_window"] == 16
    assert hf["rope_parameters"] == {"rope_type": "default", "rope_theta": 500.0}
    assert (hf["rms_norm_eps"], hf["intermediate_size"], hf["num_key_value_heads"]) == (1e-6, 96, 2)
    assert hf["tie_word_embeddings"] is False and hf["hidden_act"] == "silu"


def test_config_from_hf_reads_fields_as_transformers_does(caplog):
    # omitted fields: BltPatcherConfig's defaults, the reference's entropy model
    paper = config_from_hf({})
    assert (paper.dim, paper.n_layers, paper.n_heads, paper.ffn_hidden) == (768, 14, 12, 2048)
    assert (paper.window, paper.rope_theta, paper.norm_eps, paper.vocab_size, paper.max_seqlen) == (
        512, 10000.0, 1e-5, 260, 8192)
    # the keys transformers' conversion script writes: legacy rope_theta read, norm_eps ignored
    legacy = config_from_hf({**HF_PATCHER, "rope_theta": 2000.0, "norm_eps": 1e-6, "num_key_value_heads": None})
    assert (legacy.rope_theta, legacy.norm_eps) == (2000.0, 1e-5)
    assert "norm_eps" in caplog.text
    assert config_from_hf({**HF_PATCHER, "intermediate_size": None}).ffn_hidden == int(8 * 32 / 3)
    assert config_from_hf({**HF_PATCHER, "sliding_window": None}).window == 256
    assert "full causal" in caplog.text


@pytest.mark.parametrize("change,message", [
    ({"num_key_value_heads": 1}, "grouped-query"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0}}, "RoPE type 'linear'"),
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "RoPE type 'dynamic'"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({"model_type": "llama"}, "model_type 'llama'"),
])
def test_config_from_hf_refuses_what_we_cannot_represent(change, message):
    with pytest.raises(ValueError, match=message):
        config_from_hf({**HF_PATCHER, **change})


@pytest.mark.parametrize("change,message", [
    (lambda s: s.pop("layers.1.mlp.up_proj.weight"), r"missing keys \['layers\.1\.mlp\.up_proj\.weight'\]"),
    (lambda s: s.update({"layers.2.self_attn.q_proj.weight": torch.zeros(32, 32)}),
     r"unexpected keys \['layers\.2\.self_attn\.q_proj\.weight'\]"),
    (lambda s: s.update({"lm_head.weight": torch.zeros(259, 32)}), r"lm_head\.weight has shape \(259, 32\)"),
    (lambda s: s.update({"layers.0.self_attn.v_proj.weight": torch.zeros(16, 32)}),
     r"layers\.0\.self_attn\.v_proj\.weight has shape \(16, 32\), expected \(32, 32\)"),
])
def test_from_hf_fails_clearly(change, message):
    _, hf_state = to_hf_patcher(CONFIG, _our_model().state_dict())
    change(hf_state)
    with pytest.raises(ValueError, match=message):
        from_hf_patcher(HF_PATCHER, hf_state)


def test_to_hf_fails_clearly():
    state = _our_model().state_dict()
    state.pop("blocks.0.mlp.down.weight")
    with pytest.raises(ValueError, match=r"missing keys \['blocks\.0\.mlp\.down\.weight'\]"):
        to_hf_patcher(CONFIG, state)


def test_split_and_prefix_are_inverse():
    _, hf_state = to_hf_patcher(CONFIG, _our_model().state_dict())
    full = {**prefix_patcher_state(hf_state), "lm_head.weight": torch.zeros(1), "model.local_encoder.x": torch.zeros(1)}
    assert all(k.startswith("model.patcher.") for k in prefix_patcher_state(hf_state))
    patcher, rest = split_patcher_state(full)
    assert set(patcher) == set(hf_state) and set(rest) == {"lm_head.weight", "model.local_encoder.x"}


# --- transformers as the oracle --------------------------------------------------------------

@pytest.fixture(scope="module")
def blt():
    pytest.importorskip("transformers")
    from transformers.models.blt import modeling_blt

    return modeling_blt


def _hf_patcher(blt, seed=0, lm_head_scale=1.0, **overrides):
    from transformers import BltPatcherConfig

    torch.manual_seed(seed)
    patcher = blt.BltPatcher(BltPatcherConfig(**{**HF_PATCHER, **overrides})).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        for name, p in patcher.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
        patcher.lm_head.weight.mul_(lm_head_scale)
    return patcher


def _tiny_blt_config(patcher_config: dict):
    from transformers import BltConfig

    local = {"hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1, "hidden_size_global": 64,
             "intermediate_size": 64}
    return BltConfig(patcher_config=patcher_config, encoder_config=local, decoder_config=local,
                     global_config={"hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1,
                                    "intermediate_size": 128},
                     encoder_hash_byte_group_vocab=64, max_position_embeddings=256)


@pytest.mark.parametrize("patcher_config", [
    {},
    {**HF_PATCHER, "rope_parameters": {"rope_type": "default", "rope_theta": 321.0}, "rms_norm_eps": 1e-6},
    # as transformers' conversion script writes it
    {**HF_PATCHER, "num_key_value_heads": None, "norm_eps": 1e-6, "rope_theta": 2000.0, "dropout": 0.0,
     "attn_impl": "sdpa", "attn_bias_type": "causal"},
    {**HF_PATCHER, "rope_scaling": {"rope_type": "default"}, "rope_theta": 777.0},
], ids=["defaults", "v5", "converted", "legacy-scaling"])
def test_config_read_as_transformers_reads_it(blt, patcher_config):
    from transformers import BltPatcherConfig

    hf, ours = BltPatcherConfig(**patcher_config), config_from_hf(patcher_config)
    assert (ours.dim, ours.n_layers, ours.n_heads, ours.ffn_hidden, ours.vocab_size) == (
        hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads, hf.intermediate_size, hf.vocab_size)
    assert (ours.window, ours.rope_theta, ours.norm_eps, ours.max_seqlen) == (
        hf.sliding_window, hf.rope_parameters["rope_theta"], hf.rms_norm_eps, hf.max_position_embeddings)
    assert hf.rope_parameters["rope_type"] == "default" and hf.tie_word_embeddings is False


@pytest.mark.parametrize("text", [TEXTS[0][:40], TEXTS[0] * 2], ids=["dense-mask", "block-local"])
def test_hf_patcher_imports_to_the_same_logits_and_entropies(blt, text):
    hf = _hf_patcher(blt, rope_parameters={"rope_type": "default", "rope_theta": 500.0}, rms_norm_eps=1e-3)
    config, state = from_hf_patcher(hf.config.to_dict(), hf.state_dict())
    assert (config.window, config.rope_theta, config.norm_eps) == (16, 500.0, 1e-3)
    model = EntropyModel(config)
    model.load_state_dict(state)
    tokens = _tokens(text)
    assert tokens.shape[1] > 2 * config.window
    with torch.inference_mode():
        hf_entropies, _, hf_logits = hf(tokens)
        ours = model.eval()(tokens)
    assert (ours - hf_logits).abs().max() < 1e-4
    engine_entropies = EntropyEngine(model, precision="fp32").score([text])[0]
    assert engine_entropies.shape == (len(text) + 1,)
    assert np.abs(engine_entropies - hf_entropies[0].numpy()).max() < 1e-4


def test_the_window_is_what_makes_them_equal(blt):
    """Control: transformers without its sliding window differs past the window."""
    windowed, full = _hf_patcher(blt), _hf_patcher(blt, sliding_window=None)
    assert torch.equal(windowed.lm_head.weight, full.lm_head.weight)
    tokens = _tokens(TEXTS[0])
    with torch.inference_mode():
        a, b = windowed(tokens)[2][0], full(tokens)[2][0]
    assert (a[:16] - b[:16]).abs().max() < 1e-5
    assert (a[16:] - b[16:]).abs().max() > 1e-2


def test_exported_model_loads_in_transformers_with_the_same_logits(blt, tmp_path):
    model = _our_model()
    out = export_hf(save_checkpoint(model, tmp_path / "ours"), tmp_path / "hf")
    hf = blt.BltPatcher.from_pretrained(str(out)).eval()
    assert hf.config.sliding_window == 16 and hf.config.rope_parameters["rope_theta"] == 500.0
    assert hf.config.rms_norm_eps == 1e-6
    tokens = _tokens(TEXTS[0] * 2)
    with torch.inference_mode():
        hf_entropies, _, hf_logits = hf(tokens)
        ours = model(tokens)
    assert (ours - hf_logits).abs().max() < 1e-4
    assert np.abs(EntropyEngine(model, precision="fp32").score([TEXTS[0] * 2])[0] - hf_entropies[0].numpy()).max() < 1e-4


def test_exported_patcher_embeds_in_blt_for_causal_lm(blt):
    """The layout the BLT export embeds: patcher_config + tensors under model.patcher."""
    model = _our_model()
    patcher_config, state = to_hf_patcher(CONFIG, model.state_dict())
    blt_model = blt.BltForCausalLM(_tiny_blt_config(patcher_config)).eval()
    result = blt_model.load_state_dict(prefix_patcher_state(state), strict=False)
    assert result.unexpected_keys == []
    patcher_keys = [k for k in blt_model.state_dict() if k.startswith(CAUSAL_LM_PREFIX)]
    assert len(patcher_keys) == len(state) and not set(patcher_keys) & set(result.missing_keys)
    tokens = _tokens(TEXTS[1])
    with torch.inference_mode():
        assert (blt_model.model.patcher(tokens)[2] - model(tokens)).abs().max() < 1e-4


@pytest.mark.parametrize("shard", [False, True], ids=["one-file", "sharded"])
def test_import_hf_reads_a_blt_for_causal_lm_checkpoint(blt, tmp_path, shard):
    blt_model = blt.BltForCausalLM(_tiny_blt_config(HF_PATCHER)).eval()
    with torch.no_grad():
        blt_model.model.patcher.norm.weight.mul_(1.5)
    blt_model.save_pretrained(str(tmp_path / "blt"), **({"max_shard_size": "100KB"} if shard else {}))
    assert (tmp_path / "blt" / "model.safetensors.index.json").exists() == shard
    model = load_checkpoint(import_hf(tmp_path / "blt", tmp_path / "ours"))
    tokens = _tokens(TEXTS[2])
    with torch.inference_mode():
        assert (model(tokens) - blt_model.model.patcher(tokens)[2]).abs().max() < 1e-4


@pytest.mark.parametrize("max_patch_length", [None, 3])
def test_patch_boundaries_match_transformers(blt, max_patch_length):
    """θ = 1.3354: transformers' own patching vs bltdata.patching on our imported model."""
    hf = _hf_patcher(blt, lm_head_scale=5.0)  # peaked logits: entropies on both sides of θ
    config, state = from_hf_patcher(hf.config.to_dict(), hf.state_dict())
    model = EntropyModel(config)
    model.load_state_dict(state)
    engine = EntropyEngine(model, precision="fp32")
    patcher = PatcherConfig(mode="entropy", threshold=DEFAULT_THRESHOLD, max_patch_length=max_patch_length)
    starts = positions = zero_ends = 0
    for text in TEXTS:
        with torch.inference_mode():
            _, hf_lengths, _ = hf(_tokens(text), patch_size=4, threshold=DEFAULT_THRESHOLD,
                                  max_patch_length=max_patch_length)
        entropies = engine.score([text])[0]
        ours = patch_lengths(patcher, text, entropies)
        hf_lengths = hf_lengths[0].tolist()
        # transformers' first patch is BOS alone; H[n] > θ (after the last byte) opens a patch
        # past the end: a zero-length last patch, which its max_patch_length split drops
        trailing_zero = bool(entropies[-1] > DEFAULT_THRESHOLD) and max_patch_length is None
        zero_ends += bool(entropies[-1] > DEFAULT_THRESHOLD)
        assert hf_lengths == [1] + ours.tolist() + [0] * trailing_zero
        starts, positions = starts + len(ours), positions + len(text)
    assert 0.2 * positions < starts < 0.9 * positions
    assert 0 < zero_ends < len(TEXTS)


# --- the CLI ---------------------------------------------------------------------------------

def _invoke(*args):
    from click.testing import CliRunner

    from bltdata.cli.main import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_export_then_import_hf(blt, tmp_path):
    model = _our_model(seed=4)
    src = save_checkpoint(model, tmp_path / "ours")
    result = _invoke("entropy", "export", str(src), "-o", str(tmp_path / "hf"), "--format", "hf")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["BltPatcher"] and config["dtype"] == "float32"
    hf = blt.BltPatcher.from_pretrained(str(tmp_path / "hf")).eval()
    tokens = _tokens(TEXTS[1])
    with torch.inference_mode():
        assert (hf(tokens)[2] - model(tokens)).abs().max() < 1e-4
    # a standalone BltPatcher directory imports back bit for bit
    result = _invoke("entropy", "import-hf", str(tmp_path / "hf"), "-o", str(tmp_path / "back"))
    assert result.exit_code == 0, result.output
    back = load_checkpoint(tmp_path / "back")
    assert back.config == CONFIG
    original = model.state_dict()
    assert len(original) > 0 and all(torch.equal(back.state_dict()[k], v) for k, v in original.items())


def test_cli_import_hf_errors_name_the_file(tmp_path):
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    result = _invoke("entropy", "import-hf", str(tmp_path / "llama"), "-o", str(tmp_path / "x"))
    assert result.exit_code == 1 and "config.json: model_type 'llama'" in result.output
    (tmp_path / "empty").mkdir()
    result = _invoke("entropy", "import-hf", str(tmp_path / "empty"), "-o", str(tmp_path / "x"))
    assert result.exit_code == 1 and "config.json: not found" in result.output
