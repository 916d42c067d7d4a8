"""Direct tests of `bltdata.blt.evaluate`: bits per byte of a model whose predictions are known
exactly equal a hand computation; BOS and padding targets do not count; a real tiny BLT is
evaluated deterministically and as its own logits say."""
import math

import pytest
import torch
import torch.nn.functional as F

from bltdata.blt.config import BLTConfig
from bltdata.blt.evaluate import evaluate
from bltdata.blt.model import build_model
from bltdata.ids import BOS_ID, EOS_ID, OFFSET, PAD_ID, VOCAB_SIZE

V = VOCAB_SIZE


class PlusOne(torch.nn.Module):
    """Gives token t + 1 probability 3/4 and every other token 1/(4 (V - 1)) after token t."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))  # so train()/eval() have something to hold
        self.calls = 0

    def forward(self, tokens, patch_lengths, doc_ids):
        self.calls += 1
        assert patch_lengths.sum(dim=1).tolist() == [tokens.shape[1]] * tokens.shape[0]
        logits = torch.zeros(*tokens.shape, V)
        logits.scatter_(2, ((tokens + 1) % V).unsqueeze(-1), math.log(3 * (V - 1)))
        return logits


HIT, MISS = math.log(4 / 3), math.log(4 * (V - 1))  # nats of a target that is / is not the token + 1


def batch(rows):
    tokens = torch.tensor(rows, dtype=torch.int64)
    patches = torch.zeros_like(tokens)
    patches[:, 0] = 1
    patches[:, 1] = tokens.shape[1] - 1
    return {"tokens": tokens, "patch_lengths": patches, "doc_ids": torch.zeros_like(tokens)}


b = OFFSET  # byte 0
BATCHES = [
    # 5 counted targets: b+1 after BOS miss (BOS + 1 is EOS), b+2 hit, b+4 miss, b+5 hit, EOS miss
    batch([[BOS_ID, b + 1, b + 2, b + 4, b + 5, EOS_ID]]),
    # row 0: b→b+1 hit, b+1→EOS miss, EOS→BOS not counted, BOS→b+3 miss (BOS + 1 = EOS here);
    # row 1: b+7→b+8 hit, then padding targets: not counted
    batch([[b + 0, b + 1, EOS_ID, BOS_ID, b + 3], [b + 7, b + 8, PAD_ID, PAD_ID, PAD_ID]]),
]
NATS_0 = 2 * HIT + 3 * MISS
NATS_1 = (HIT + MISS + MISS) + HIT


def test_bits_per_byte_equal_the_hand_computation():
    model = PlusOne()
    result = evaluate(model, BATCHES)
    assert result["bytes"] == 5 + 4 and result["batches"] == 2
    assert result["nats"] == pytest.approx(NATS_0 + NATS_1, rel=1e-6)
    assert result["bpb"] == pytest.approx((NATS_0 + NATS_1) / math.log(2) / 9, rel=1e-6)


def test_max_batches_stops_early_and_the_training_mode_is_restored():
    model = PlusOne()
    model.train()
    result = evaluate(model, iter(BATCHES), max_batches=1)
    assert model.calls == 1 and model.training
    assert result["bytes"] == 5 and result["batches"] == 1
    assert result["bpb"] == pytest.approx(NATS_0 / math.log(2) / 5, rel=1e-6)
    model.eval()
    evaluate(model, BATCHES)
    assert not model.training


def test_nothing_to_count_gives_nan():
    result = evaluate(PlusOne(), [])
    assert result["bytes"] == 0 and result["batches"] == 0 and math.isnan(result["bpb"])


def test_uniform_logits_give_log2_of_the_vocabulary():
    class Uniform(torch.nn.Module):
        def forward(self, tokens, patch_lengths, doc_ids):
            return torch.zeros(*tokens.shape, V)

    result = evaluate(Uniform(), BATCHES)
    assert result["bpb"] == pytest.approx(math.log2(V), rel=1e-6)


TINY = BLTConfig(dim_local=32, n_heads_local=2, n_heads_cross=2, dim_global=64, n_heads_global=2,
                 n_layers_global=1, n_layers_decoder=1, local_window=16, hash_table_size=257)


def test_a_tiny_blt_is_evaluated_deterministically_and_as_its_logits_say():
    torch.manual_seed(0)
    model = build_model(TINY)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(OFFSET, V, (2, 17), generator=g)
    tokens[:, 0] = BOS_ID
    patches = torch.tensor([[1, 4, 4, 4, 4], [1, 8, 8, 0, 0]])
    data = [{"tokens": tokens, "patch_lengths": patches, "doc_ids": torch.zeros_like(tokens)}]
    first, second = evaluate(model, data), evaluate(model, data)
    assert first == second
    with torch.no_grad():
        trimmed = torch.tensor([[1, 4, 4, 4, 3], [1, 8, 7, 0, 0]])
        logits = model.eval()(tokens[:, :-1], trimmed, torch.zeros_like(tokens[:, :-1]))
    nats = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="sum").item()
    assert first["bytes"] == 32  # every target is a byte
    assert first["nats"] == pytest.approx(nats, rel=1e-5)
    assert first["bpb"] == pytest.approx(nats / math.log(2) / 32, rel=1e-5)
    assert 6 < first["bpb"] < 10  # an untrained model: about log2(260) = 8.02
