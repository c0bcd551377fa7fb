"""Custom steps: the trainer keeps FLOPs, the guard, accumulation and the step's logs around them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hpsearch.models import HyperParam
from hpsearch.trainers import DivergenceError, Step, StepOutput, Task, TrainConfig, Trainer, seed_everything
from hpsearch.trainers.flops import FlopsMeter


def data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (n,), generator=g)
    return torch.randn(n, 4, generator=g) + labels[:, None].float(), labels


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.main, self.aux = nn.Linear(8, 2), nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = torch.relu(self.body(x))
        return {"logits": self.main(hidden), "aux": self.aux(hidden).squeeze(-1)}


seen_weights: list[float] = []


def aux_step(model, batch, hparams) -> StepOutput:
    x, y = batch
    out = model(x)
    main = F.cross_entropy(out["logits"], y)
    aux = F.binary_cross_entropy_with_logits(out["aux"], y.float())
    seen_weights.append(hparams["aux_weight"])
    return StepOutput(main + hparams["aux_weight"] * aux, out["logits"], y, {"aux_loss": aux.detach()})


STEP = Step(aux_step, params=[HyperParam("aux_weight", "float", 0.5, "weight of the auxiliary loss", low=0.0)])


def two_head_task() -> Task:
    x, y = data()
    return Task(name="two_heads", train=(x[:48], y[:48]), val=(x[48:], y[48:]), step=STEP)


def test_a_custom_step_trial_counts_its_training_forward_passes_and_logs_its_values() -> None:
    seed_everything(0)
    model = TwoHeads()
    meter = FlopsMeter(model)
    seen_weights.clear()
    records = Trainer(model, two_head_task(), TrainConfig(epochs=2, batch_size=16, device="cpu"), flops_meter=meter,
                      hparams={"aux_weight": 2.0}).fit().records
    stats = meter.stats()
    assert stats.training_passes == 2 * 3 and stats.forward_passes == 2 * 3 + 2 * 1
    assert stats.train_step_total > stats.total > 0
    # Body 4x8, heads 8x2 and 8x1: 26 multiply-adds each example, 2 FLOPs apiece.
    assert stats.per_sample_forward == pytest.approx(2 * (32 + 16 + 8))
    assert set(seen_weights) == {2.0}
    assert {"train_aux_loss", "val_aux_loss"} <= set(records[-1].metrics)
    assert all(math.isfinite(r.metrics["train_aux_loss"]) for r in records)


def test_the_steps_defaults_fill_in_what_the_trial_does_not_set() -> None:
    seed_everything(0)
    seen_weights.clear()
    Trainer(TwoHeads(), two_head_task(), TrainConfig(epochs=1, batch_size=16, device="cpu")).fit()
    assert set(seen_weights) == {0.5}


def test_the_divergence_guard_stops_a_custom_step_in_its_first_epoch() -> None:
    seed_everything(0)
    with pytest.raises(DivergenceError, match="at epoch 1 step"):
        Trainer(TwoHeads(), two_head_task(), TrainConfig(epochs=3, batch_size=8, lr=1e4, warmup_epochs=0, grad_clip=0, device="cpu")).fit()


def test_accumulation_sees_the_same_gradients_through_a_custom_step() -> None:
    results = []
    for batch_size, accumulate in ((16, 1), (8, 2)):
        seed_everything(0)
        model = TwoHeads()
        config = TrainConfig(epochs=1, batch_size=batch_size, grad_accum_steps=accumulate, device="cpu", warmup_epochs=0)
        Trainer(model, two_head_task(), config).fit()
        results.append(model.body.weight.detach().clone())
    assert torch.allclose(results[0], results[1], atol=1e-5)
