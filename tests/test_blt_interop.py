"""BLT import/export against transformers' own BltForCausalLM (the oracle; CPU, fp32, tiny, seeded).

ours → export → transformers, and transformers → import → ours: logits equal within 1e-4 on
unpacked rows and on packed batches (rows of different patch counts, zero-padded patch
lengths; and several documents in one of our rows against transformers on each alone), with
patches from the model's own entropy model. Also: the reference key layout, key and shape
errors, and the legacy config rule.
"""
import json

import numpy as np
import pytest
import torch

from bltdata.blt import interop
from bltdata.convert import blt_checkpoint
from bltdata.blt.checkpoint import load_model
from bltdata.blt.config import BLTConfig, REFERENCE_WIRING
from bltdata.blt.model import BLT

transformers = pytest.importorskip("transformers")

ATOL = 1e-4


def hf_tiny_config(dim_global: int = 48):
    rope = {"rope_type": "default", "rope_theta": 500000.0}
    local = dict(hidden_size=32, num_attention_heads=2, intermediate_size=96, rope_parameters=rope,
                 cross_attn_k=2, hidden_size_global=dim_global, max_position_embeddings=256)
    return transformers.BltConfig(
        vocab_size=260, cross_attn_k=2, encoder_hash_byte_group_size=[3, 4, 5], encoder_hash_byte_group_vocab=101,
        encoder_hash_byte_group_nb_functions=2, local_attention_window_len=8, patching_threshold=1.335442066192627,
        patcher_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                            sliding_window=16, max_position_embeddings=256),
        encoder_config=dict(num_hidden_layers=1, **local),
        decoder_config=dict(num_hidden_layers=2, **local),
        global_config=dict(hidden_size=dim_global, num_attention_heads=2, num_hidden_layers=2,
                           intermediate_size=swiglu(dim_global), rope_parameters=rope, max_position_embeddings=256),
    )


def swiglu(dim):
    return 32 * ((int(8 * dim / 3) + 31) // 32)


def hf_model(dim_global=48, seed=0):
    torch.manual_seed(seed)
    model = transformers.BltForCausalLM(hf_tiny_config(dim_global)).eval()
    with torch.no_grad():  # norms away from 1, so a wrongly mapped norm shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.3 * torch.randn_like(p))
    return model


def rows(seed=0, n=2, length=41):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, 260, (n, length), generator=g)
    tokens[:, 0] = 1
    return tokens


def entropy_patches(engine, tokens, threshold):
    """Patch lengths over [BOS] + bytes from the entropy model (BOS its own patch)."""
    from bltdata.patching import PatcherConfig, patch_lengths

    data = bytes((tokens[1:] - 4).tolist())
    entropies = engine.score([data])[0]
    lengths = patch_lengths(PatcherConfig(mode="entropy", threshold=threshold), data, entropies)
    return [1] + [int(x) for x in lengths], entropies


def padded(lists):
    width = max(len(x) for x in lists)
    return torch.tensor([x + [0] * (width - len(x)) for x in lists], dtype=torch.int64)


@torch.no_grad()
def hf_logits(model, tokens, patch_lengths):
    return model(input_ids=tokens, patch_lengths=patch_lengths, use_cache=False).logits


@pytest.fixture(scope="module", params=[48, 64], ids=["with-projection", "no-projection"])
def imported(request, tmp_path_factory):
    """A tiny random transformers BLT saved to disk and imported into a run directory."""
    tmp = tmp_path_factory.mktemp(f"hf{request.param}")
    model = hf_model(request.param)
    model.save_pretrained(tmp / "hf", safe_serialization=True)
    run = blt_checkpoint.import_hf(tmp / "hf", tmp / "run")
    ours, meta = load_model(run)
    return model, ours, meta, run


def test_import_keeps_the_released_wiring_and_patcher(imported):
    _, ours, meta, run = imported
    c = ours.config
    assert (c.decoder_source, c.cross_attn_double_residual, c.global_norm, c.decoder_start) == \
        ("next_byte", True, False, False)
    assert c.rope_theta == 500000.0 and c.ffn_multiple_of == 32 and c.table_sizes == (101, 101, 101)
    assert c.has_pool_projection == (c.dim_global != 64)
    assert meta["data"]["patcher"]["threshold"] == pytest.approx(1.335442066192627)
    assert (run / "entropy_model" / "model.safetensors").is_file()


@torch.no_grad()
def test_transformers_to_ours_logits_match_on_entropy_patches(imported):
    from bltdata.entropy.checkpoint import load_checkpoint
    from bltdata.entropy.engine import EntropyEngine

    model, ours, _, run = imported
    engine = EntropyEngine(load_checkpoint(run / "entropy_model"), precision="fp32")
    tokens = rows(1, n=3, length=41)
    # our entropies equal transformers' patcher's: same entropy model after import
    hf_entropies = model.model.patcher(input_ids=tokens[:1])[0][0]
    lists, ours_entropies = [], None
    for row, quantile in zip(tokens, (0.3, 0.5, 0.8)):  # thresholds chosen for different patch counts
        _, ours_entropies = entropy_patches(engine, row, 0.0)
        threshold = float(np.quantile(ours_entropies, quantile))
        lists.append(entropy_patches(engine, row, threshold)[0])
    _, first_entropies = entropy_patches(engine, tokens[0], 0.0)
    np.testing.assert_allclose(first_entropies[:40], hf_entropies[:40].numpy(), atol=ATOL)
    assert 3 < len(lists[0]) < 40  # real patches, neither one per byte nor one in all
    checked = 0
    for i in range(3):  # unpacked: one row alone
        pl = torch.tensor([lists[i]])
        torch.testing.assert_close(ours(tokens[i:i + 1], pl), hf_logits(model, tokens[i:i + 1], pl), atol=ATOL, rtol=0)
        checked += 1
    pl = padded(lists)  # packed batch: rows of different patch counts
    assert len(set(len(x) for x in lists)) > 1
    assert_batch_matches(ours(tokens, pl), hf_logits(model, tokens, pl), lists, model, tokens)
    assert checked == 3


def assert_batch_matches(ours_logits, hf_batch, lists, hf, tokens):
    """Equal everywhere but at the last byte of a row with padding patches: there transformers
    reads a padding patch (its decoder patch ids come from cumsum(patch_lengths[:, 1:]), whose
    padding entries equal T-1), so its answer depends on the padding — it differs from its own
    answer for that row alone, which is what ours gives (checked here)."""
    torch.testing.assert_close(ours_logits[:, :-1], hf_batch[:, :-1], atol=ATOL, rtol=0)
    width, padded_rows = max(len(x) for x in lists), 0
    for i, lengths in enumerate(lists):
        alone = hf_logits(hf, tokens[i:i + 1], torch.tensor([lengths]))[0, -1]
        torch.testing.assert_close(ours_logits[i, -1], alone, atol=ATOL, rtol=0)
        if len(lengths) == width:
            torch.testing.assert_close(hf_batch[i, -1], alone, atol=ATOL, rtol=0)
        else:
            assert (hf_batch[i, -1] - alone).abs().max() > 1e-2  # transformers' padding dependence
            padded_rows += 1
    assert padded_rows > 0


@torch.no_grad()
def test_our_packed_row_matches_transformers_on_each_document_alone(imported):
    model, ours, _, _ = imported
    docs = rows(2, n=2, length=23)
    lengths = [[1, 3, 2, 5, 4, 1, 7], [1, 2, 2, 6, 3, 4, 5]]
    tokens = torch.cat([docs[0], docs[1]])[None]
    doc_ids = torch.tensor([[0] * 23 + [1] * 23])
    packed = ours(tokens, torch.tensor([lengths[0] + lengths[1]]), doc_ids)
    for d in range(2):
        alone = hf_logits(model, docs[d:d + 1], torch.tensor([lengths[d]]))
        # the last byte of a document reads its own patch in the packed row (the next byte opens a
        # new document) but, alone, has no next byte: compare all positions but that one
        torch.testing.assert_close(packed[:, 23 * d:23 * d + 22], alone[:, :22], atol=ATOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("dim_global", [48, 64])
def test_ours_exported_runs_in_transformers_with_equal_logits(tmp_path, dim_global):
    from bltdata.entropy.model import EntropyModel, EntropyModelConfig

    torch.manual_seed(3)
    config = BLTConfig(dim_local=32, n_heads_local=2, n_heads_cross=2, dim_global=dim_global, n_heads_global=2,
                       n_layers_encoder=1, n_layers_decoder=2, n_layers_global=2, local_window=8,
                       hash_ngram_sizes=(3, 4, 5), hash_table_size=101, hash_functions=2, max_seqlen=256,
                       **{**REFERENCE_WIRING, "ffn_multiple_of": 32})
    ours = BLT(config).eval()
    for p in ours.parameters():  # weights of order 1, norms away from 1
        p.data.copy_(1 + 0.3 * torch.randn_like(p) if p.dim() == 1 else torch.randn_like(p) * p.shape[-1] ** -0.5)
    entropy = EntropyModel(EntropyModelConfig(dim=32, n_layers=2, n_heads=2, ffn_hidden=96, window=16)).eval()
    patching = {"mode": "entropy", "threshold": 1.335442066192627, "threshold_add": None,
                "max_patch_length": None, "patch_size": 4}
    run = blt_checkpoint.write_run(tmp_path / "run", config, ours.state_dict(), patching, entropy,
                             {"format": "test", "path": "memory"})
    out = blt_checkpoint.export_hf(run, tmp_path / "hf")
    hf, info = transformers.BltForCausalLM.from_pretrained(out, output_loading_info=True)
    hf.eval()
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    tokens = rows(4, n=2, length=30)
    lists = [[1, 4, 1, 6, 3, 8, 7], [1, 2, 9, 5, 4, 2, 3, 3, 1]]
    for i in range(2):
        pl = torch.tensor([lists[i]])
        torch.testing.assert_close(ours(tokens[i:i + 1], pl), hf_logits(hf, tokens[i:i + 1], pl), atol=ATOL, rtol=0)
    pl = padded(lists)
    assert_batch_matches(ours(tokens, pl), hf_logits(hf, tokens, pl), lists, hf, tokens)
    # the exported patcher is our entropy model
    logits = entropy(tokens[:1])
    torch.testing.assert_close(hf.model.patcher(input_ids=tokens[:1])[2], logits, atol=ATOL, rtol=0)


def test_reference_layout_round_trip_and_key_errors(tmp_path):
    torch.manual_seed(5)
    hf = hf_model(48, seed=5)
    config = blt_checkpoint.config_from_hf(hf.config.to_dict())
    ours = interop.convert({k: v for k, v in hf.state_dict().items() if not k.startswith("model.patcher.")},
                           interop.hf_key_groups(config), interop.our_shapes(config), to_ours=True, source="hf")
    ref_state = interop.convert(ours, interop.reference_key_groups(config),
                                {k: tuple(v.shape) for k, v in _reference_shapes(config, ours).items()},
                                to_ours=False, source="ours")
    assert "local_encoder.layers.0.attention.wq.weight" in ref_state and "encoder_hash_tok_embedding.5.weight" in ref_state
    src = tmp_path / "ref"
    src.mkdir()
    params = {"model": {"dim_global": 48, "dim_local_encoder": 32, "dim_local_decoder": 32, "n_layers_global": 2,
                        "n_layers_local_encoder": 1, "n_layers_local_decoder": 2, "n_heads_global": 2,
                        "n_heads_local_encoder": 2, "n_heads_local_decoder": 2, "cross_attn_k": 2,
                        "encoder_hash_byte_group_size": [3, 4, 5], "encoder_hash_byte_group_vocab": 101,
                        "encoder_hash_byte_group_nb_functions": 2, "multiple_of": 32, "rope_theta": 500000.0,
                        "local_attention_window_len": 8, "cross_attn_all_layers_decoder": True, "max_seqlen": 256}}
    (src / "params.json").write_text(json.dumps(params))
    torch.save({"model": ref_state}, src / "consolidated.pth")
    run = blt_checkpoint.import_reference(src, tmp_path / "run")
    model, _ = load_model(run)
    tokens, pl = rows(6, n=1, length=20), torch.tensor([[1, 3, 5, 2, 9]])
    torch.testing.assert_close(model(tokens, pl), hf_logits(hf, tokens, pl), atol=ATOL, rtol=0)
    # a missing key, an extra key, a wrong shape: each named
    broken = dict(ref_state)
    broken.pop("local_decoder.norm.weight")
    broken["local_decoder.extra.weight"] = torch.zeros(1)
    torch.save({"model": broken}, src / "consolidated.pth")
    with pytest.raises(ValueError, match=r"missing keys \['local_decoder.norm.weight'\].*local_decoder.extra.weight"):
        blt_checkpoint.import_reference(src, tmp_path / "run2")
    bad_shape = dict(ref_state)
    bad_shape["local_encoder.layers.0.attention.wk.weight"] = torch.zeros(31, 32)
    torch.save({"model": bad_shape}, src / "consolidated.pth")
    with pytest.raises(ValueError, match="attention.wk.weight"):
        blt_checkpoint.import_reference(src, tmp_path / "run3")


def _reference_shapes(config, ours):
    shapes = {}
    for group in interop.reference_key_groups(config):
        total = sum(ours[k].shape[0] for k in group.ours)
        for key in group.theirs:
            shapes[key] = torch.empty(total // len(group.theirs), *ours[group.ours[0]].shape[1:])
    return shapes


def test_our_extras_refuse_to_export():
    with pytest.raises(ValueError, match="global_norm.*decoder_start"):
        interop.hf_key_groups(BLTConfig())


def test_eval_and_generate_run_on_an_imported_release_with_its_own_entropy_model(imported, tmp_path):
    """`bltdata eval` / `generate` on the imported run: shards patched by its own entropy model at θ 1.3354."""
    from click.testing import CliRunner

    from bltdata import shards
    from bltdata.cli.main import main
    from bltdata.entropy.checkpoint import load_checkpoint
    from bltdata.entropy.engine import EntropyEngine
    from bltdata.patching import PatcherConfig, patch_lengths

    _, _, meta, run = imported
    patcher = PatcherConfig.from_dict(meta["data"]["patcher"])
    assert patcher.mode == "entropy" and patcher.threshold == pytest.approx(1.3354, abs=1e-4)
    engine = EntropyEngine(load_checkpoint(run / "entropy_model"), precision="fp32")
    out = tmp_path / "heldout"
    out.mkdir()
    writer = shards.ShardWriter(out / "part-00000.parquet", patcher=patcher.to_dict(), row_group_bytes=2000)
    docs = [b"the byte latent transformer %d reads patches" % i for i in range(12)]
    for i, data in enumerate(docs):
        writer.add(f"doc-{i}", "synthetic", data, patch_lengths(patcher, data, engine.score([data])[0]))
    shards.write_manifest(out, {"test": True}, [writer.close()], 0, data_dir="", patcher=patcher.to_dict())
    runner = CliRunner()
    result = runner.invoke(main, ["eval", str(run), "--data", str(out), "--seq-len", "48", "--batch-size", "2",
                                  "--json", "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["bytes"] > 0 and 0 < report["bpb"] < 20
    result = runner.invoke(main, ["generate", str(run), "--prompt", "the ", "--max-bytes", "6", "--device", "cpu"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "bytes generated" in result.output
    from bltdata.cli.train import _run_entropy_model

    assert _run_entropy_model(str(run), meta) == str(run / "entropy_model")  # generate's default: its own


def test_cli_import_export_round_trip_and_errors(imported, tmp_path):
    from click.testing import CliRunner

    from bltdata.cli.main import main

    hf, ours, _, run = imported
    runner = CliRunner()
    result = runner.invoke(main, ["blt", "export", str(run), "--format", "hf", "-o", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    again = blt_checkpoint.import_hf(tmp_path / "hf", tmp_path / "again")
    reloaded, _ = load_model(again)
    for key, value in ours.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    assert len(ours.state_dict()) > 20
    result = runner.invoke(main, ["blt", "import", str(tmp_path / "again"), "-o", str(tmp_path / "x")])
    assert result.exit_code != 0 and "config.json: not found" in result.output
    result = runner.invoke(main, ["blt", "params", "--preset", "blt-1b", "--json"])
    counts = json.loads(result.output)["blt-1b"]
    assert counts["global transformer"] == 1_284_608_000 and counts["hash embeddings"] == 6 * 500_002 * 1024
