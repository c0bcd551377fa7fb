import pytest
import torch

from hpsearch.models import build_model
from hpsearch.trainers.config import TrainConfig
from hpsearch.trainers.lr_finder import LRFinderResult, find_lr, steepest_descent
from hpsearch.trainers.tasks import build_task
from hpsearch.trainers.trainer import Trainer, seed_everything


@pytest.fixture(scope="module")
def task():
    return build_task("synthetic_tokens", {"dataset_size": 1500, "seq_len": 16})


def small_model(task):
    seed_everything(0)
    return build_model("transformer_classifier", {"embed_dim": 32, "num_layers": 1}, task.data)


def test_suggestion_is_within_10x_of_the_best_fixed_lr_of_a_grid(task):
    result = find_lr(Trainer(small_model(task), task, TrainConfig(device="cpu")), start_lr=1e-7, end_lr=10, num_iter=100)
    grid = [1e-4, 1e-3, 1e-2, 3e-2, 1e-1]
    final = {lr: Trainer(small_model(task), task, TrainConfig(epochs=3, lr=lr)).fit().records[-1].val_loss for lr in grid}
    best = min(final, key=final.get)
    print(f"suggested {result.suggested:.3g}, best fixed LR {best:g}, val losses {final}")
    assert best / 10 <= result.suggested <= best * 10


def test_stops_at_divergence_and_restores_model_and_optimizer(task):
    model = small_model(task)
    trainer = Trainer(model, task, TrainConfig(device="cpu"))
    optimizer = trainer.optimizer
    model(task.train[0][:8]).sum().backward()
    optimizer.step()
    before_model = {k: v.clone() for k, v in model.state_dict().items()}
    before_optimizer = optimizer.state_dict()
    before_exp_avg = [s["exp_avg"].clone() for s in before_optimizer["state"].values()]

    result = find_lr(trainer, start_lr=1e-4, end_lr=1e4, num_iter=60)
    assert result.diverged and len(result.lrs) < 60
    assert result.diverged_at == pytest.approx(result.lrs[-1] * (1e4 / 1e-4) ** (1 / 59))  # the step after the last kept
    assert result.lrs == sorted(result.lrs) and result.lrs[0] == pytest.approx(1e-4)
    assert all(torch.equal(before_model[k], v) for k, v in model.state_dict().items())
    after_exp_avg = [s["exp_avg"] for s in optimizer.state_dict()["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(before_exp_avg, after_exp_avg))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_steepest_descent_picks_the_fastest_fall():
    lrs = [10.0 ** (-6 + i * 0.25) for i in range(25)]
    losses = [2.0] * 10 + [2.0 - 0.3 * k for k in range(1, 6)] + [0.5] * 10
    assert 10**-3.5 <= steepest_descent(lrs, losses) <= 10**-2.5


def test_a_fall_after_the_lowest_loss_is_a_recovery_not_the_suggestion():
    # A smoothed loss that falls a little, blows up, and falls back steeply towards a plateau.
    lrs = [10.0 ** (-6 + i * 0.25) for i in range(30)]
    losses = [2.3 - 0.02 * k for k in range(15)] + [9.0 - 0.4 * k for k in range(15)]
    assert steepest_descent(lrs, losses) <= lrs[14]


@pytest.mark.parametrize(
    "losses",
    [[2.0] * 25, [2.0 + 0.1 * k for k in range(25)], [1.0, 2.0, 3.0], []],
    ids=["flat", "rising", "too-short", "blew-up-at-once"],
)
def test_a_loss_that_never_falls_gives_no_suggestion(losses):
    """The range's first LR was suggested: a range that starts too high trained every trial with it."""
    lrs = [10.0 ** (-6 + i * 0.25) for i in range(len(losses))]
    assert steepest_descent(lrs, losses) is None
    assert "found no LR at which the loss falls" in LRFinderResult(lrs, losses, None, 0.5).no_suggestion()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_short_test_suggests_an_lr_from_before_the_loss_blew_up(task, precision):
    trainer = Trainer(small_model(task), task, TrainConfig(device="cpu", precision=precision))
    result = find_lr(trainer, start_lr=1e-7, end_lr=10, num_iter=50)
    assert result.diverged  # lr 10 blows up a transformer with AdamW
    lowest = result.lrs[min(range(len(result.losses)), key=result.losses.__getitem__)]
    assert result.suggested <= lowest < 10


def test_bad_ranges_are_refused(task):
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        find_lr(Trainer(small_model(task), task, TrainConfig(device="cpu")), start_lr=1.0, end_lr=0.1)
