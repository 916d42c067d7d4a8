"""The shared optimizer and schedule: the values the two trainers' former copies gave.

The literals were computed with the code before it was merged into `bltdata.optim`
(`blt.train.lr_at` / `make_optimizer` and `entropy.train.learning_rate` / `make_optimizer`).
"""
import pytest
import torch

from bltdata.blt.config import byte_debug, debug
from bltdata.blt.model import build_model
from bltdata.blt.runs import BltTrainConfig
from bltdata.entropy.model import EntropyModel, small, tiny
from bltdata.entropy.runs import EntropyTrainConfig
from bltdata.optim import Schedule, adamw, param_groups, set_lr


def test_blt_schedule_equals_the_former_lr_at():
    schedule = BltTrainConfig(steps=100, lr=3e-3, warmup_steps=20, min_lr_ratio=0.1).schedule()
    steps = (0, 19, 20, 50, 99, 150)
    expected = [0.00015000000000000001, 0.003, 0.003, 0.002166622633692871, 0.0003010408010750241,
                0.00030000000000000003]
    assert [schedule.lr_at(s) for s in steps] == expected
    no_warmup = BltTrainConfig(steps=7, lr=1e-2, warmup_steps=0, min_lr_ratio=0.0).schedule()
    assert [no_warmup.lr_at(s) for s in (0, 3, 6)] == [0.01, 0.006112604669781572, 0.0004951556604879049]


def test_entropy_schedule_equals_the_former_learning_rate():
    config = EntropyTrainConfig(inputs=["x"], out_dir="x", steps=1000, lr=3e-3)  # warmup min(200, steps // 10)
    assert config.schedule().warmup_steps == 100
    expected = [3e-05, 0.003, 0.003, 0.0016500000000000002, 0.000300008224661983]
    assert [config.schedule().lr_at(s) for s in (0, 99, 100, 550, 999)] == expected
    other = EntropyTrainConfig(inputs=["x"], out_dir="x", steps=40, lr=1e-2, warmup_steps=3, min_lr_ratio=0.2)
    expected = [0.0033333333333333335, 0.01, 0.01, 0.006508071278987515, 0.002014410045829894]
    assert [other.schedule().lr_at(s) for s in (0, 2, 3, 20, 39)] == expected


def _group_shapes(optimizer):
    return ([len(g["params"]) for g in optimizer.param_groups],
            [sum(p.numel() for p in g["params"]) for g in optimizer.param_groups])


@pytest.mark.parametrize("make, shapes", [
    (lambda: build_model(debug()), ([32, 26], [676096, 1591104])),
    (lambda: build_model(byte_debug()), ([17, 10], [885248, 34432])),
    (lambda: EntropyModel(tiny()), ([9, 6], [123136, 16960])),
    (lambda: EntropyModel(small()), ([13, 8], [1377024, 51264])),
])
def test_param_groups_equal_the_former_optimizers(make, shapes):
    model = make()
    optimizer = adamw(model, lr=1e-3, weight_decay=0.1)
    assert _group_shapes(optimizer) == shapes  # decay on matrices; none on vectors and embedding tables
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert optimizer.defaults["betas"] == (0.9, 0.95) and optimizer.defaults["eps"] == 1e-8
    embeddings = [p for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()]
    assert embeddings and all(any(p is q for q in optimizer.param_groups[1]["params"]) for p in embeddings)


def test_param_groups_keep_parameter_order_and_set_lr():
    model = torch.nn.Sequential(torch.nn.Embedding(4, 3), torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    decay, no_decay = param_groups(model, 0.5)
    assert decay["params"] == [model[1].weight]
    assert no_decay["params"] == [model[0].weight, model[1].bias, model[2].weight, model[2].bias]
    optimizer = adamw(model, lr=1.0, weight_decay=0.5)
    set_lr(optimizer, 0.25)
    assert [g["lr"] for g in optimizer.param_groups] == [0.25, 0.25]


def test_schedule_validates():
    with pytest.raises(ValueError, match="lr > 0"):
        Schedule(0.0, 1, 10)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        Schedule(1.0, 1, 10, min_lr_ratio=1.5)
