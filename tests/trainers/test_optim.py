"""Optimizers by name, weight decay only on matrices, and every LR schedule's shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hpsearch.trainers import LRSchedule, register_optimizer
from hpsearch.trainers.optim import build_optimizer, optimizer_names, param_groups


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))


@pytest.mark.parametrize(("name", "cls"), [("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD), ("rmsprop", torch.optim.RMSprop), ("adam", torch.optim.Adam)])
def test_each_name_builds_its_torch_optimizer(name: str, cls: type) -> None:
    optimizer = build_optimizer(name, model(), lr=0.1, weight_decay=0.01, momentum=0.8, beta2=0.99, eps=1e-7)
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.1
    if name == "sgd":
        assert group["momentum"] == 0.8
    if name.startswith("adam"):
        assert group["betas"] == (0.8, 0.99) and group["eps"] == 1e-7


def test_biases_and_norm_weights_get_no_weight_decay() -> None:
    groups = param_groups(model(), 0.05)
    decayed = {tuple(p.shape) for p in groups[0]["params"]}
    undecayed = {tuple(p.shape) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert decayed == {(8, 4), (2, 8)} and undecayed == {(8,), (2,)}


def test_a_registered_optimizer_is_built_by_name_and_a_rerun_replaces_it() -> None:
    def lion_like(groups, *, lr, **_):
        return torch.optim.SGD(groups, lr=lr)

    register_optimizer("test_sgd_alias", lion_like)
    register_optimizer("test_sgd_alias", lion_like)  # a re-run cell: same code, replaced
    assert "test_sgd_alias" in optimizer_names()
    assert isinstance(build_optimizer("test_sgd_alias", model(), lr=0.1, weight_decay=0.0, momentum=0.9, beta2=0.999, eps=1e-8), torch.optim.SGD)
    with pytest.raises(ValueError, match="already registered"):
        register_optimizer("test_sgd_alias", lambda groups, **_: None)


def test_schedules_warm_up_then_take_their_shape() -> None:
    peak, total, warmup = 1.0, 100, 10
    make = lambda kind, **kw: LRSchedule(peak, total, warmup, min_lr=0.1, kind=kind, **kw)  # noqa: E731
    assert make("cosine")(9) == make("linear")(9) == make("constant")(9) == pytest.approx(1.0)
    assert make("cosine")(99) == pytest.approx(0.1, abs=1e-3) and make("linear")(99) == pytest.approx(0.1, abs=0.01)
    assert make("linear")(55) == pytest.approx(0.55)
    assert make("constant")(80) == 1.0
    assert make("step", gamma=0.5, step_every=30)(10) == 1.0 and make("step", gamma=0.5, step_every=30)(45) == 0.5
    onecycle = make("onecycle")
    assert onecycle(0) < 0.1 and onecycle(9) == pytest.approx(1.0) and onecycle(99) == pytest.approx(0.1, abs=1e-3)
