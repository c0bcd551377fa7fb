"""The multiplication task: digit tokens in, the product's digits out."""

from __future__ import annotations

import pytest
import torch

from hpsearch.models import build_model
from hpsearch.trainers.arithmetic import EQUALS, TIMES, to_digits
from hpsearch.trainers.metrics import MetricSet
from hpsearch.trainers.tasks import build_task


def from_digits(digits: torch.Tensor) -> torch.Tensor:
    powers = torch.tensor([10**k for k in reversed(range(digits.shape[1]))])
    return (digits * powers).sum(dim=1)


@pytest.mark.parametrize("digits", [1, 2, 3, 9])
def test_targets_are_the_products_of_the_operands(digits: int) -> None:
    task = build_task("multiplication", {"digits": digits, "dataset_size": 100})
    data = task.data
    assert data.kind == "token_sequence" and data.seq_len == 2 * digits + 2 and data.output_len == 2 * digits
    assert data.vocab_size == 12 and data.num_outputs == 10
    for tokens, product in (task.train, task.val):
        assert tokens.shape[1] == 2 * digits + 2 and product.shape[1] == 2 * digits
        assert (tokens[:, digits] == TIMES).all() and (tokens[:, -1] == EQUALS).all()
        a, b = from_digits(tokens[:, :digits]), from_digits(tokens[:, digits + 1 : -1])
        assert torch.equal(from_digits(product), a * b)
        assert int(product.max()) <= 9 and int(tokens[:, :digits].max()) <= 9
    assert len(task.train[0]) == 80 and len(task.val[0]) == 20 and task.test is None


def test_to_digits_pads_with_zeros_most_significant_first() -> None:
    assert to_digits(torch.tensor([7, 1234]), 4).tolist() == [[0, 0, 0, 7], [1, 2, 3, 4]]


def test_pairs_are_distinct_and_seeded() -> None:
    task = build_task("multiplication", {"digits": 2, "dataset_size": 5000})
    everything = torch.cat([task.train[0], task.val[0]])
    assert len(everything.unique(dim=0)) == 5000  # no pair in both training and validation
    again = build_task("multiplication", {"digits": 2, "dataset_size": 5000})
    assert torch.equal(again.train[0], task.train[0])
    other = build_task("multiplication", {"digits": 2, "dataset_size": 5000, "data_seed": 1})
    assert not torch.equal(other.train[0], task.train[0])


def test_loss_and_metrics_score_every_digit() -> None:
    task = build_task("multiplication", {"dataset_size": 10})
    targets = torch.tensor([[0, 1, 4, 1], [9, 8, 0, 1]])
    perfect = torch.nn.functional.one_hot(targets, 10).float() * 20
    assert task.loss(perfect, targets, 0.0).item() < 1e-6
    assert task.loss(perfect, targets, 0.1).item() > 0.1  # label smoothing reaches the loss
    one_wrong = perfect.clone()
    one_wrong[1, 2] = one_wrong[1, 2].roll(1)
    metrics = MetricSet(task.metrics, torch.device("cpu"))
    metrics.update(one_wrong, targets)
    computed = metrics.compute()
    assert computed["val_digit_acc"] == pytest.approx((1.0 + 0.75) / 2)
    assert computed["val_exact_match"] == pytest.approx(1 / 2)
    assert task.directions() == {"val_digit_acc": "maximize", "val_exact_match": "maximize"}


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="more than the 100 distinct pairs of 1-digit numbers"):
        build_task("multiplication", {"digits": 1, "dataset_size": 101})
    with pytest.raises(ValueError, match="maximum"):
        build_task("multiplication", {"digits": 10})


@pytest.mark.parametrize(
    "model", ["tfn_classifier", "transformer_classifier", "lstm_classifier", "cnn_classifier", "tfn_regressor"]
)
def test_models_that_answer_one_value_refuse_the_task(model: str) -> None:
    task = build_task("multiplication", {"dataset_size": 10})
    with pytest.raises(ValueError, match=r"takes \w+ input, but the task gives token_sequence"):
        build_model(model, {}, task.data)
