"""Generation with on-the-fly patches: consistency with a full forward pass, entropy patching."""
import numpy as np
import pytest
import torch

from bltdata.blt.config import BLTConfig
from bltdata.blt.generate import GenerationConfig, generate, make_patcher, next_byte_logits
from bltdata.blt.model import BLT
from bltdata.ids import BOS_ID, OFFSET
from bltdata.patching import PatcherConfig, patch_lengths

CONFIG = BLTConfig(dim_local=32, n_heads_local=2, n_heads_cross=2, dim_global=64, n_heads_global=2,
                   n_layers_global=1, n_layers_decoder=1, local_window=16, hash_table_size=257)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return BLT(CONFIG).eval()


@pytest.fixture(scope="module")
def engine():
    from bltdata.entropy.engine import EntropyEngine
    from bltdata.entropy.model import EntropyModel, tiny

    torch.manual_seed(1)
    return EntropyEngine(EntropyModel(tiny()).eval())


@torch.no_grad()
def test_step_by_step_logits_equal_one_forward_over_the_whole_text(model):
    text = b"the patch, the byte; a model."
    patcher = make_patcher(PatcherConfig(mode="space"))
    full_lengths = patcher(text + b"\x00")  # + a placeholder: the last byte's next boundary is known
    tokens = torch.tensor([[BOS_ID, *(b + OFFSET for b in text + b"\x00")]])
    full = model(tokens, torch.tensor([[1, *full_lengths]]), None)[0]
    for k in range(len(text) + 1):  # after reading k bytes: patches re-formed on the prefix
        step = next_byte_logits(model, text[:k], patcher(text[:k] + b"\x00"), "cpu")
        torch.testing.assert_close(step, full[k], atol=1e-5, rtol=1e-4)
    assert len(full_lengths) > 5


@torch.no_grad()
def test_the_last_byte_reads_its_own_patch_when_the_next_byte_opens_one(model):
    """Without the placeholder, a prompt ending at a patch end would read the previous patch."""
    text = b"the patch "
    patcher = make_patcher(PatcherConfig(mode="space"))
    tokens = torch.tensor([[BOS_ID, *(b + OFFSET for b in text)]])
    own = next_byte_logits(model, text, patcher(text + b"\x00"), "cpu")
    assumed_continuing = model(tokens, torch.tensor([[1, *patcher(text)]]), None)[0, -1]
    assert len(patcher(text + b"\x00")) == len(patcher(text)) + 1  # the next byte opens a patch
    assert (own - assumed_continuing).abs().max() > 1e-3


@torch.no_grad()
def test_entropy_patches_of_a_prefix_are_a_prefix_of_the_patches(engine):
    text = b"def main():\n    return sum(range(10))\n"
    threshold = float(np.median(engine.score([text])[0]))  # a random model: entropies near ln 260
    patcher = make_patcher(PatcherConfig(mode="entropy", threshold=threshold), engine)
    full = np.cumsum(patcher(text))
    checked = 0
    for k in range(1, len(text)):
        ends = np.cumsum(patcher(text[:k]))
        assert set(ends[:-1]) <= set(full), k  # every closed patch of the prefix is a patch of the text
        checked += 1
    assert checked == len(text) - 1 and 1 < len(full) < len(text)


def test_generate_greedy_is_deterministic_and_respects_max_bytes(model, engine):
    threshold = float(np.median(engine.score([b"abcdefgh"])[0]))
    patcher = make_patcher(PatcherConfig(mode="entropy", threshold=threshold), engine)
    seen = []
    first = generate(model, b"abc", patcher, GenerationConfig(max_bytes=12), on_byte=seen.append)
    second = generate(model, b"abc", patcher, GenerationConfig(max_bytes=12))
    assert first.text == second.text and bytes(seen) == first.text
    assert first.stop == "eos" or len(first.text) == 12
    assert int(first.patch_lengths.sum()) == 3 + len(first.text)
    sampled = generate(model, b"", patcher, GenerationConfig(max_bytes=8, temperature=1.0, top_k=5, seed=3))
    assert len(sampled.text) <= 8


def test_entropy_patching_needs_a_model():
    with pytest.raises(ValueError, match="needs an entropy model"):
        make_patcher(PatcherConfig(mode="entropy"))
    assert patch_lengths(PatcherConfig(mode="space"), b"a b").tolist() == [2, 1]
