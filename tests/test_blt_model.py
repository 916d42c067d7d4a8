"""BLT model: causality, document isolation, attention masks, hash n-gram ids, FLOP counts."""
import numpy as np
import pytest
import torch

from bltdata.blt import attention, masks
from dataclasses import replace

from bltdata.blt.config import LEGACY_BLT_FIELDS, BLTConfig, ByteTransformerConfig, blt_1b, debug, preset
from bltdata.blt.flops import block_flops, flops_per_byte, mean_keys
from bltdata.blt.hash_embeddings import HASH_PRIMES, reference_hash_id, rolling_hash_ids
from bltdata.blt.loss import split_batch, trim_last_patch
from bltdata.blt.model import BLT, ByteTransformer, count_parameters

SMALL = dict(dim_local=32, n_heads_local=2, n_heads_cross=2, dim_global=64, n_heads_global=2,
             local_window=8, hash_table_size=97)


def small_blt(**overrides) -> BLT:
    torch.manual_seed(0)
    return BLT(BLTConfig(**{**SMALL, **overrides})).eval()


def packed_row():
    """Two rows: row 0 = two documents (BOS patches at 0 and 21), row 1 = one document."""
    tokens = torch.randint(4, 260, (2, 40))
    tokens[:, 0] = 1
    tokens[0, 21] = 1
    doc_ids = torch.zeros(2, 40, dtype=torch.int64)
    doc_ids[0, 21:] = 1
    patch_lengths = torch.tensor([[1, 3, 5, 2, 6, 4, 1, 7, 9, 2, 0], [1, 2, 2, 2, 3, 3, 3, 4, 4, 8, 8]])
    return tokens, patch_lengths, doc_ids


@pytest.mark.parametrize("model_fn", [small_blt, lambda: small_blt(patch_pooling="mean", cross_attn_k=1),
                                      lambda: small_blt(decoder_source="previous_patch", pool_projection="always"),
                                      lambda: small_blt(cross_attn_window_encoder=2, cross_attn_window_decoder=3,
                                                        cross_attn_double_residual=True, global_norm=False,
                                                        decoder_start=False),
                                      lambda: ByteTransformer(ByteTransformerConfig(dim=32, n_layers=2, n_heads=2,
                                                                                     hash_table_size=97)).eval()])
@torch.no_grad()
def test_changing_byte_t_never_changes_earlier_logits(model_fn):
    model = model_fn()
    tokens, patch_lengths, doc_ids = packed_row()
    base = model(tokens, patch_lengths, doc_ids)
    checked = 0
    for t in range(1, 40):  # every position: patch starts, patch middles, document starts
        changed = tokens.clone()
        changed[:, t] = 4 + (changed[:, t] + 50) % 256
        diff = (model(changed, patch_lengths, doc_ids) - base).abs().amax(-1)  # (B, T)
        assert diff[:, :t].max() == 0, f"position < {t} changed"
        assert diff[:, t].max() > 0  # the change is visible at t itself
        checked += 1
    assert checked == 39


@torch.no_grad()
def test_documents_in_a_packed_row_do_not_see_each_other():
    model = small_blt()
    tokens, patch_lengths, doc_ids = packed_row()
    packed = model(tokens[:1], patch_lengths[:1], doc_ids[:1])
    second_doc = tokens[:1, 21:]
    alone = model(second_doc, torch.tensor([[1, 7, 9, 2]]), None)
    torch.testing.assert_close(packed[:, 21:], alone, atol=1e-5, rtol=1e-4)
    changed = tokens[:1].clone()
    changed[0, 1:21] = 4 + (changed[0, 1:21] + 9) % 256  # rewrite all of the first document
    after = model(changed, patch_lengths[:1], doc_ids[:1])
    assert torch.equal(after[:, 21:], packed[:, 21:])


def test_patch_ids_and_documents_on_a_hand_made_layout():
    lengths = torch.tensor([[1, 3, 2, 1, 2, 0]])
    doc_ids = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 1]])
    patch_ids = masks.patch_ids_from_lengths(lengths, 9)
    assert patch_ids.tolist() == [[0, 1, 1, 1, 2, 2, 3, 4, 4]]
    assert masks.patch_documents(lengths, doc_ids).tolist() == [[0, 0, 0, 1, 1, -1]]


def test_encoder_cross_mask_each_patch_sees_exactly_its_bytes():
    lengths = torch.tensor([[1, 3, 2, 0]])
    patch_ids = masks.patch_ids_from_lengths(lengths, 6)
    mask = masks.encoder_cross_mask(patch_ids, lengths, k=2)[0, 0].int()  # (P*k, T)
    expected = [[1, 0, 0, 0, 0, 0]] * 2 + [[0, 1, 1, 1, 0, 0]] * 2 + [[0, 0, 0, 0, 1, 1]] * 2 + [[1] * 6] * 2
    assert mask.tolist() == expected  # the empty padding patch may look anywhere (output unused)


def test_decoder_reads_the_previous_patch_of_its_own_document():
    # doc 0: BOS | a b c | d e ; doc 1: BOS | f g
    lengths = torch.tensor([[1, 3, 2, 1, 2]])
    doc_ids = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 1]])
    patch_ids = masks.patch_ids_from_lengths(lengths, 9)
    sources = masks.decoder_source_patches(patch_ids, masks.patch_documents(lengths, doc_ids), doc_ids)
    # index 0 = learned start state, index j = global output of patch j - 1
    assert sources.tolist() == [[0, 1, 1, 1, 2, 2, 0, 4, 4]]
    mask = masks.decoder_cross_mask(sources, n_patches=5, k=2)[0, 0].int()  # (T, (P+1)*k)
    assert mask.sum(-1).tolist() == [2] * 9
    assert mask[4].tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    # no byte reads a patch that ends after it
    ends = torch.cat([torch.zeros(1, 1, dtype=torch.int64), lengths.cumsum(1)], 1)  # end of state s-1 at ends[s]
    assert all(int(ends[0, s]) <= t for t, s in enumerate(sources[0].tolist()) if s > 0)


def test_decoder_next_byte_rule_reads_the_patch_the_next_byte_implies():
    # doc 0: BOS | a b c | d e ; doc 1: BOS | f g   (positions 0..8)
    lengths = torch.tensor([[1, 3, 2, 1, 2]])
    doc_ids = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 1]])
    patch_ids = masks.patch_ids_from_lengths(lengths, 9)
    patch_docs = masks.patch_documents(lengths, doc_ids)
    sources = masks.decoder_next_byte_sources(patch_ids, patch_docs, doc_ids)
    # byte t reads patch(t+1) - 1 (index = patch + 1): BOS reads itself, c (patch-final) reads its own
    # patch 1, e (end of doc 0) its own patch 2, the last byte g continues its patch (reads patch 3)
    assert sources.tolist() == [[1, 1, 1, 2, 2, 3, 4, 4, 4]]
    old = masks.decoder_source_patches(patch_ids, patch_docs, doc_ids)
    # the old rule differs exactly at the patch-final bytes (not at the row's last byte)
    assert (sources != old)[0].nonzero().flatten().tolist() == [0, 3, 5, 6]
    # a row that starts inside a document: bytes before its first patch end have no source (start state)
    mid = masks.decoder_next_byte_sources(*(lambda l, d: (masks.patch_ids_from_lengths(l, 4),
                                                          masks.patch_documents(l, d), d))(
        torch.tensor([[3, 1]]), torch.zeros(1, 4, dtype=torch.int64)))
    assert mid.tolist() == [[0, 0, 1, 1]]
    # windows of 1 are the one-patch masks
    dense = masks.decoder_window_mask(sources, patch_docs, doc_ids, 1, 2)
    assert torch.equal(dense, masks.decoder_cross_mask(sources, 5, 2))
    enc = masks.encoder_window_mask(patch_ids, lengths, patch_docs, doc_ids, 1, 2)
    assert torch.equal(enc, masks.encoder_cross_mask(patch_ids, lengths, 2) | (lengths == 0).repeat_interleave(2, 1)[:, None, :, None])
    wide = masks.decoder_window_mask(sources, patch_docs, doc_ids, 2, 1)[0, 0].int()
    assert wide[5].tolist() == [0, 0, 1, 1, 0, 0] and wide[6].tolist() == [0, 0, 0, 0, 1, 0]  # never across documents


def test_saved_configs_without_the_new_fields_keep_their_old_wiring():
    torch.manual_seed(0)
    new = BLTConfig(**SMALL)
    saved = {k: v for k, v in new.to_dict().items() if k not in LEGACY_BLT_FIELDS}
    old = BLTConfig.from_dict(saved)
    assert (old.decoder_source, old.pool_projection) == ("previous_patch", "always")
    assert BLTConfig.from_dict(new.to_dict()) == new and new.decoder_source == "next_byte"
    old_model = BLT(old)  # an old checkpoint (pooling projection present, start state) loads strictly
    assert "pooling.to_global.weight" in old_model.state_dict() and "decoder.start" in old_model.state_dict()
    tokens, patch_lengths, doc_ids = packed_row()
    BLT(old).load_state_dict(old_model.state_dict())
    rewired = BLT(replace(old, decoder_source="next_byte"))
    rewired.load_state_dict(old_model.state_dict())
    with torch.no_grad():
        assert (old_model(tokens, patch_lengths, doc_ids) - rewired(tokens, patch_lengths, doc_ids)).abs().max() > 1e-4


def test_reference_presets_match_the_release_shapes():
    one, seven = preset("blt-1b"), preset("blt-7b")
    with torch.device("meta"):
        model = BLT(one)
    assert model.encoder.layers[0].ffn.w_down.in_features == 2816
    assert model.global_stack.layers[0].ffn.w_down.in_features == 5632
    assert model.pooling.to_global is None and isinstance(model.global_norm, torch.nn.Identity)
    assert model.decoder.start is None and one.rope_theta == 500000.0 and one.table_sizes == (500002,) * 6
    assert seven.has_pool_projection and seven.dim_global == 4096


def test_global_mask_is_causal_within_documents():
    patch_docs = torch.tensor([[0, 0, 1, 1, -1]])
    mask = masks.global_mask(patch_docs)[0, 0].int().tolist()
    assert mask == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]


def test_local_mask_window_and_documents():
    doc_ids = torch.tensor([[0, 0, 0, 0, 1, 1]])
    mask = masks.local_mask(doc_ids, window=2)[0, 0].int().tolist()
    assert mask == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0],
                    [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 1]]


def _qkv(batch, heads, queries, keys, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, queries, dim, generator=g), torch.randn(batch, heads, keys, dim, generator=g),
            torch.randn(batch, heads, keys, dim, generator=g))


def _sdpa(mask):
    return lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("seq_len,window", [(37, 8), (40, 10), (12, 5), (9, None)])
def test_sliding_window_attention_equals_sdpa_with_the_local_mask(seq_len, window):
    doc_ids = torch.zeros(2, seq_len, dtype=torch.int64)
    doc_ids[0, seq_len // 3:] = 1
    doc_ids[0, seq_len // 2:] = 2
    q, k, v = _qkv(2, 3, seq_len, seq_len)
    expected = _sdpa(masks.local_mask(doc_ids, window))(q, k, v)
    torch.testing.assert_close(attention.sliding_window(doc_ids, window)(q, k, v), expected)


def test_patch_pooling_attention_equals_sdpa_with_the_encoder_mask():
    lengths = torch.tensor([[1, 3, 2, 4, 0, 0], [1, 1, 5, 1, 1, 1]])
    patch_ids = masks.patch_ids_from_lengths(lengths, 10)
    k = 2
    q, keys, values = _qkv(2, 3, 6 * k, 10)
    expected = _sdpa(masks.encoder_cross_mask(patch_ids, lengths, k))(q, keys, values)
    got = attention.pool_into_patches(patch_ids, 6, k)(q, keys, values)
    real = (lengths > 0).repeat_interleave(k, dim=1)  # (B, P*k): queries of non-empty patches
    torch.testing.assert_close(got.transpose(1, 2)[real], expected.transpose(1, 2)[real])
    assert int(real.sum()) == 20 and got.transpose(1, 2)[~real].abs().max() == 0


def test_source_patch_attention_equals_sdpa_with_the_decoder_mask():
    lengths = torch.tensor([[1, 3, 2, 1, 2]])
    doc_ids = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 1]])
    patch_ids = masks.patch_ids_from_lengths(lengths, 9)
    sources = masks.decoder_source_patches(patch_ids, masks.patch_documents(lengths, doc_ids), doc_ids)
    q, keys, values = _qkv(1, 2, 9, 6 * 3)
    expected = _sdpa(masks.decoder_cross_mask(sources, 5, 3))(q, keys, values)
    torch.testing.assert_close(attention.read_source_patch(sources, 3)(q, keys, values), expected)


def test_hash_ids_match_plain_python_and_stay_in_range():
    rng = np.random.default_rng(0)
    ids = torch.tensor(rng.integers(0, 260, size=(3, 50)), dtype=torch.int64)
    ids[:, 0] = 1
    checked = 0
    for function in (0, 3, 10):
        for n in (3, 5, 8):
            for table in (500_002, 97):
                got = rolling_hash_ids(ids, n, table, function)
                assert torch.equal(got, rolling_hash_ids(ids.clone(), n, table, function))  # deterministic
                assert int(got.min()) >= 0 and int(got.max()) < table
                row = ids[1].tolist()
                for j in range(50):
                    window = ([0] * n + row)[j + 1:j + n + 1]  # left-padded with zeros, oldest first
                    assert int(got[1, j]) == reference_hash_id(window, table, function)
                    checked += 1
    assert checked == 3 * 3 * 2 * 50
    assert HASH_PRIMES[0] == 1000000007


def test_hash_ids_reset_at_document_starts():
    ids = torch.tensor([[1, 10, 11, 12, 1, 10, 11]])
    doc_ids = torch.tensor([[0, 0, 0, 0, 1, 1, 1]])
    got = rolling_hash_ids(ids, 4, 1000, 0, doc_ids)
    assert got[0, 4:].tolist() == got[0, :3].tolist()  # the second document hashes as if alone
    assert got[0, 4:].tolist() != rolling_hash_ids(ids, 4, 1000, 0)[0, 4:].tolist()


def test_trim_last_patch_and_split_batch():
    lengths = torch.tensor([[1, 3, 2, 0], [1, 4, 1, 0]])
    assert trim_last_patch(lengths).tolist() == [[1, 3, 1, 0], [1, 4, 0, 0]]
    batch = {"tokens": torch.arange(6).expand(2, 6) + 4, "patch_lengths": lengths, "doc_ids": torch.zeros(2, 6)}
    inputs = split_batch(batch)
    assert inputs.tokens.shape == (2, 5) and torch.equal(inputs.targets, batch["tokens"][:, 1:])
    assert inputs.patch_lengths.tolist() == [[1, 3, 1, 0], [1, 4, 0, 0]]
    with pytest.raises(ValueError, match="row 1: patch lengths sum to 7, expected 6"):
        split_batch({"tokens": batch["tokens"], "patch_lengths": torch.tensor([[1, 5], [1, 6]])})


def test_configs_validate_and_round_trip():
    for name in ("debug", "blt-1b", "blt-7b", "byte-debug"):
        config = preset(name)
        assert type(config).from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="dim_local must be divisible by n_heads_local"):
        BLTConfig(dim_local=30, n_heads_local=4)
    with pytest.raises(ValueError, match="patch_pooling"):
        BLTConfig(patch_pooling="min")
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_1b_preset_is_about_a_billion_parameters():
    with torch.device("meta"):
        model = BLT(blt_1b())
    non_embedding = count_parameters(model, embeddings=False)
    assert 0.8e9 < non_embedding < 1.6e9, non_embedding


def test_flop_formula_matches_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    config = ByteTransformerConfig(dim=32, n_layers=2, n_heads=2)
    model = ByteTransformer(config)
    seq_len = 16
    with FlopCounterMode(display=False) as counter:
        model(torch.randint(4, 260, (1, seq_len)))
    # projections, feed-forward and output head; attention scores are checked via mean_keys
    # (the counter does not charge SDPA's CPU kernel)
    counts = counter.get_flop_counts()["Global"]
    matmuls = sum(v for op, v in counts.items() if "scaled_dot_product" not in str(op))
    assert matmuls == seq_len * (config.n_layers * block_flops(config.dim, keys=0) + 2 * config.dim * 260)
    assert mean_keys(4, None) == 2.5 and mean_keys(4, 2) == 1.75


def test_blt_flops_fall_with_longer_patches():
    config = debug()
    short, long = flops_per_byte(config, 512, 2.0), flops_per_byte(config, 512, 8.0)
    assert long.inference_per_byte < short.inference_per_byte
    assert long.training_per_byte == 3 * long.inference_per_byte
    assert set(long.components) == {"encoder", "pooling", "global", "decoder", "output"}


def test_per_n_hash_table_sizes_and_several_functions():
    model = small_blt(hash_ngram_sizes=(3, 4, 5), hash_table_size=(11, 13, 17), hash_functions=2)
    sizes = [t.num_embeddings for t in model.embed.hashes.tables]
    assert sizes == [11, 13, 17, 11, 13, 17]  # function-major, n inner (the reference's order)
    tokens, patch_lengths, doc_ids = packed_row()
    assert torch.isfinite(model(tokens, patch_lengths, doc_ids)).all()
    assert BLTConfig.from_dict(model.config.to_dict()).table_sizes == (11, 13, 17)
    with pytest.raises(ValueError, match="3 sizes for 6 n-gram sizes"):
        BLTConfig(hash_table_size=(1, 2, 3))
