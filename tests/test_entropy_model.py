"""The entropy model: config validation, presets, sliding window, incremental decoding."""
import pytest
import torch

from bltdata.entropy.model import (
    PRESETS,
    EntropyModel,
    EntropyModelConfig,
    KVCache,
    packed_positions_and_layout,
    preset,
    tiny,
)


def _model(**overrides) -> EntropyModel:
    config = EntropyModelConfig(**{**tiny().to_dict(), **overrides})
    model = EntropyModel(config).eval()
    model.reset_parameters(seed=0)
    return model


@pytest.mark.parametrize("bad", [{"dim": 0}, {"dim": 65}, {"n_heads": 3}, {"window": 0}, {"vocab_size": 100},
                                 {"n_layers": 1.5}, {"rope_theta": -1.0}, {"dim": 6, "n_heads": 2}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        EntropyModelConfig(**{**tiny().to_dict(), **bad})


def test_config_round_trips_and_rejects_unknown_keys():
    config = tiny()
    assert EntropyModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        EntropyModelConfig.from_dict({**config.to_dict(), "dropout": 0.1})


def test_presets():
    assert set(PRESETS) == {"tiny", "small", "paper-100m"}
    paper = preset("paper-100m")
    assert (paper.n_layers, paper.dim, paper.n_heads, paper.ffn_hidden, paper.window) == (14, 768, 12, 2048, 512)
    with torch.device("meta"):
        params = EntropyModel(paper).num_params()
    assert 95e6 < params < 105e6
    small_params = sum(p.numel() for p in EntropyModel(preset("small")).parameters())
    assert small_params * 4 <= 10 * 2**20  # fits the 10 MB package budget in float32
    with pytest.raises(ValueError, match="paper-100m"):
        preset("huge")


def test_forward_shapes_and_distribution():
    model = _model()
    tokens = torch.randint(0, 260, (3, 50))
    logits = model(tokens)
    assert logits.shape == (3, 50, 260)
    assert torch.isfinite(logits).all()


def test_sliding_window_sees_exactly_window_positions():
    """One layer: the output at i depends on i - window + 1 .. i and nothing earlier."""
    window = 16
    model = _model(n_layers=1, window=window)
    tokens = torch.randint(4, 260, (1, 64))
    base = model(tokens)[0, 40]
    outside, inside = tokens.clone(), tokens.clone()
    outside[0, 40 - window] = (outside[0, 40 - window] + 1) % 260
    inside[0, 40 - window + 1] = (inside[0, 40 - window + 1] + 1) % 260
    assert torch.equal(model(outside)[0, 40], base)
    assert not torch.allclose(model(inside)[0, 40], base)


@pytest.mark.parametrize("chunk", [1, 5, 63, 64, 65, 200])
def test_incremental_decoding_equals_full_forward(chunk):
    model = _model()
    tokens = torch.randint(0, 260, (2, 300))
    with torch.inference_mode():
        full = model(tokens)
        cache, pieces = KVCache.empty(model.config.n_layers), []
        for start in range(0, tokens.shape[1], chunk):
            pieces.append(model(tokens[:, start:start + chunk], start_pos=start, cache=cache))
    assert cache.length == model.config.window - 1
    assert (torch.cat(pieces, dim=1) - full).abs().max() < 1e-4


def test_cache_position_mismatch_is_an_error():
    model = _model()
    cache = KVCache.empty(model.config.n_layers)
    model(torch.randint(0, 260, (1, 10)), start_pos=0, cache=cache)
    with pytest.raises(ValueError, match="starts at 12"):
        model(torch.randint(0, 260, (1, 10)), start_pos=12, cache=cache)


def test_packed_rows_equal_documents_run_alone():
    """Training rows pack documents; attention and positions restart at each one."""
    model = _model()
    first, second = torch.randint(4, 260, (1, 30)), torch.randint(4, 260, (1, 45))
    doc_ids = torch.tensor([[0] * 30 + [1] * 45])
    packed = model(torch.cat([first, second], dim=1), doc_ids=doc_ids)
    assert (packed[:, :30] - model(first)).abs().max() < 1e-5
    assert (packed[:, 30:] - model(second)).abs().max() < 1e-5


def test_packed_positions_restart_per_document():
    positions, layout = packed_positions_and_layout(torch.tensor([[0, 0, 1, 1, 1, 2]]), window=4)
    assert positions.tolist() == [[0, 1, 0, 1, 2, 0]]
    assert layout.block == 0 and layout.mask.shape == (1, 1, 6, 6)
    assert layout.mask[0, 0, 4].tolist() == [False, False, True, True, True, False]


@pytest.mark.parametrize("packed", [False, True])
def test_local_block_attention_equals_dense(monkeypatch, packed):
    """Long sequences attend block by block (cost ∝ T·window); same function as the dense mask."""
    model = _model(window=16)
    tokens = torch.randint(0, 260, (2, 150))
    doc_ids = torch.tensor([[0] * 40 + [1] * 70 + [2] * 40, [0] * 150]) if packed else None
    local = model(tokens, doc_ids=doc_ids)
    monkeypatch.setattr("bltdata.entropy.model.use_local_blocks", lambda *args: False)
    dense = model(tokens, doc_ids=doc_ids)
    assert (local - dense).abs().max() < 1e-5


@pytest.mark.parametrize("first", [0, 5, 15, 40])
def test_every_local_attention_path_equals_dense(monkeypatch, first):
    """A long chunk after no cache (first block causal, the rest banded), a short cache (one
    mask per block) or a full one (banded): all equal the dense-mask forward."""
    import bltdata.entropy.model as entropy_model

    model = _model(window=16)
    tokens = torch.randint(0, 260, (3, first + 150))
    calls = {"banded": 0}
    banded = entropy_model.banded_attention

    def counting(*args):
        calls["banded"] += 1
        return banded(*args)

    monkeypatch.setattr(entropy_model, "banded_attention", counting)
    with torch.inference_mode():
        cache = KVCache.empty(model.config.n_layers)
        pieces = [model(tokens[:, :first], start_pos=0, cache=cache)] if first else []
        pieces.append(model(tokens[:, first:], start_pos=first, cache=cache))
        assert calls["banded"] == (0 if first == 5 else model.config.n_layers)
        monkeypatch.setattr(entropy_model, "use_local_blocks", lambda *args: False)
        dense = model(tokens)
    assert (torch.cat(pieces, dim=1) - dense).abs().max() < 1e-5


def test_rope_keeps_precision_far_out():
    """Attention depends on relative positions only, even a million bytes into a document."""
    model = _model(n_layers=1)
    tokens = torch.randint(4, 260, (1, 40))
    near = model(tokens, start_pos=0, cache=KVCache.empty(1))
    far = model(tokens, start_pos=1_000_003, cache=KVCache.empty(1))
    assert (near - far).abs().max() < 1e-4
