"""The shared transformer parts: each convention parameter, and the block-local kernels against dense SDPA."""
import pytest
import torch
import torch.nn.functional as F

from bltdata.nn.attention import (
    band_mask,
    banded_attention,
    blockwise_attention,
    document_local_mask,
    document_window_mask,
    fold_blocks,
    local_window_mask,
    window_mask,
)
from bltdata.nn.flops import block_flops, mean_keys
from bltdata.nn.layers import RMSNorm, SwiGLU
from bltdata.nn.rope import apply_rope, rope_tables
from bltdata.nn.sizes import swiglu_hidden


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
def test_rmsnorm_without_upcast_is_torch_rmsnorm():
    torch.manual_seed(0)
    ours, theirs = RMSNorm(16, 1e-5, upcast=False), torch.nn.RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 5, 16)
    assert list(ours.state_dict()) == ["weight"]
    assert torch.equal(ours(x), theirs(x))
    assert ours(x.bfloat16()).dtype == torch.bfloat16  # the input's dtype, as torch's


def test_rmsnorm_with_upcast_computes_in_float32_and_returns_the_gain_dtype():
    norm = RMSNorm(16, 1e-5).to(torch.bfloat16)
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    expected = F.rms_norm(x.float(), (16,), norm.weight.float(), 1e-5).to(torch.bfloat16)
    assert norm(x).dtype == torch.bfloat16 and torch.equal(norm(x), expected)
    assert RMSNorm(16, 1e-5)(x).dtype == torch.float32  # a float32 gain keeps float32


@pytest.mark.parametrize("prefix, names", [("", ["gate_up.weight", "down.weight"]),
                                           ("w_", ["w_gate_up.weight", "w_down.weight"])])
def test_swiglu_names_its_projections_and_computes_the_same(prefix, names):
    torch.manual_seed(0)
    ffn = SwiGLU(8, 24, prefix=prefix)
    assert list(ffn.state_dict()) == names
    gate_up, down = (ffn.state_dict()[n] for n in names)
    x = torch.randn(2, 8)
    gate, up = (x @ gate_up.T).chunk(2, dim=-1)
    assert torch.allclose(ffn(x), (F.silu(gate) * up) @ down.T, atol=1e-6)
    assert swiglu_hidden(8, 24) == 24 and swiglu_hidden(64) == 192


def test_apply_rope_rotates_interleaved_pairs_as_complex_numbers():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 3, 8)  # (B, T, H, hd)
    cos, sin = rope_tables(torch.arange(7), 8, 10000.0, exact=True)
    rotated = apply_rope(x, cos[:, None], sin[:, None])
    expected = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * torch.polar(
        torch.ones_like(cos), torch.atan2(sin, cos))[:, None]).flatten(-2)
    assert torch.allclose(rotated, expected, atol=1e-6)
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-5)  # a rotation keeps lengths


def _rope_by_parts(x, cos, sin):
    """The rotation written over real and imaginary parts (what ``torch.compile`` runs)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    return torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1).flatten(-2).type_as(x)


@pytest.mark.parametrize("layout", ["qkv slice", "odd offset", "contiguous, odd offset", "transposed", "bf16"])
def test_apply_rope_equals_the_formula_by_parts_bit_for_bit(layout):
    """The complex-multiply kernel rounds as the by-parts formula does (products, then sum), on
    the views the models hand it: the entropy model's q/k slice of its fused qkv, views whose
    offset is odd (copied first, a contiguous one too), a transposed one and bf16 input."""
    torch.manual_seed(0)
    T, H, hd = 37, 3, 64
    cos, sin = rope_tables(torch.arange(1000, 1000 + T), hd, 10000.0, exact=True)
    cos, sin = cos[:, None, None], sin[:, None, None]  # (T, 1, 1, hd/2)
    if layout == "qkv slice":
        x = torch.randn(2, T, 3, H, hd)[:, :, :2]
    elif layout == "odd offset":
        x = torch.randn(2, T, 2, H, hd + 1)[..., 1:]
        assert x.storage_offset() % 2 == 1
    elif layout == "contiguous, odd offset":
        x = torch.randn(2 * T * 2 * H * hd + 1)[1:].view(2, T, 2, H, hd)
        assert x.is_contiguous() and x.storage_offset() == 1
    elif layout == "transposed":
        x = torch.randn(2, 2, H, T, hd).permute(0, 3, 1, 2, 4)
    else:
        x = torch.randn(2, T, 2, H, hd).to(torch.bfloat16)
    rotated = apply_rope(x, cos, sin)
    assert rotated.dtype == x.dtype and rotated.shape == x.shape
    assert torch.equal(rotated, _rope_by_parts(x, cos, sin))


def test_exact_rope_angles_keep_their_precision_far_out():
    """float64 angles: tables at position p equal a float64 reference; float32 ones drift."""
    positions = torch.tensor([30_000_001])
    reference = (positions.double()[:, None] * 10000.0 ** (-torch.arange(0, 8, 2).double() / 8)).cos()
    exact, _ = rope_tables(positions, 8, 10000.0, exact=True)
    fast, _ = rope_tables(positions, 8, 10000.0)
    assert (exact.double() - reference).abs().max() < 1e-6
    assert (fast.double() - reference).abs().max() > 1e-3


def _dense(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("past, T", [(0, 50), (3, 50), (7, 64), (7, 5)])
def test_blockwise_attention_equals_the_dense_window_mask(past, T):
    torch.manual_seed(0)
    window = 8
    q = torch.randn(2, 3, T, 4)
    k, v = torch.randn(2, 3, past + T, 4), torch.randn(2, 3, past + T, 4)
    local = local_window_mask(past, T, past, window, "cpu")
    expected = _dense(q, k, v, window_mask(past, T, past, window, "cpu"))
    assert (blockwise_attention(q, k, v, window, window, local) - expected).abs().max() < 1e-5
    if past == window - 1:
        assert (banded_attention(q, k, v, window, band_mask(window, "cpu")) - expected).abs().max() < 1e-5


def test_blockwise_attention_keeps_documents_apart():
    torch.manual_seed(0)
    doc_ids = torch.tensor([[0] * 20 + [1] * 30 + [2] * 3, [0] * 53])
    q, k, v = (torch.randn(2, 2, 53, 4) for _ in range(3))
    expected = _dense(q, k, v, document_window_mask(doc_ids, 8))
    local = document_local_mask(doc_ids, 8)
    assert local.shape == (2, 1, 7, 8, 15)
    for mask in (local, fold_blocks(local, 2)):  # per row, or folded once by the caller
        assert (blockwise_attention(q, k, v, 8, 8, mask) - expected).abs().max() < 1e-5
    # a query never sees another document, nor a key more than a window back
    assert not document_window_mask(doc_ids, 8)[0, 0, 20, :20].any()
    assert document_window_mask(doc_ids, 8)[1, 0, 30].nonzero().flatten().tolist() == list(range(23, 31))


def test_fold_blocks_layouts():
    per_block = torch.rand(3, 4, 7) > 0.5
    assert torch.equal(fold_blocks(per_block, 2)[4, 0], per_block[1])  # row 1, block 1
    per_row = torch.rand(2, 1, 3, 4, 7) > 0.5
    assert torch.equal(fold_blocks(per_row, 2)[4, 0], per_row[1, 0, 1])
    band = band_mask(4, "cpu")
    assert fold_blocks(band, 2) is band and band.sum(dim=1).tolist() == [4, 4, 4, 4]


def test_flops_of_a_block():
    assert mean_keys(4, None) == 2.5 and mean_keys(4, 2) == 1.75 and mean_keys(10, 100) == 5.5
    assert block_flops(64, keys=0, hidden=100) == 2 * 4 * 64 * 64 + 2 * 3 * 64 * 100
    assert block_flops(64, keys=3) - block_flops(64, keys=0) == 4 * 64 * 3
