import math

import pytest
import torch
from torch import nn

from hpsearch.trainers.config import TrainConfig
from hpsearch.trainers.records import EpochRecord, format_epoch_line
from hpsearch.trainers.tasks import build_task
from hpsearch.trainers.trainer import DivergenceError, Trainer, seed_everything


class PositionalBag(nn.Module):
    """Embeddings plus learned positions, mean-pooled: small and able to learn the task."""

    def __init__(self, vocab: int = 32, seq_len: int = 32, classes: int = 4, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.randn(seq_len, dim) * 0.5)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(0.1), nn.Linear(dim, classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        return self.head((torch.tanh(h + self.position) * h).mean(dim=1))


@pytest.fixture(scope="module")
def task():
    return build_task("synthetic_tokens", {"dataset_size": 1000})


def fit(task, config, callbacks=(), model_seed=0):
    seed_everything(model_seed)
    return Trainer(PositionalBag(), task, config, callbacks).fit()


def test_callbacks_get_one_record_per_epoch(task):
    seen: list[EpochRecord] = []
    result = fit(task, TrainConfig(epochs=3), [seen.append])
    assert [r.epoch for r in seen] == [1, 2, 3] == [r.epoch for r in result.records]
    for record in seen:
        assert math.isfinite(record.train_loss) and math.isfinite(record.val_loss)
        assert 0.0 <= record.metrics["val_acc"] <= 1.0
        assert record.grad_norm_max >= record.grad_norm_mean > 0
        assert record.epoch_seconds > 0 and record.samples_per_second > 0 and record.peak_memory_bytes > 0
    assert result.epochs_run == 3 and result.lr_history == [r.lr for r in seen]


def test_same_seed_same_values_on_cpu(task):
    first = fit(task, TrainConfig(epochs=2, seed=3))
    second = fit(task, TrainConfig(epochs=2, seed=3))
    assert [(r.train_loss, r.val_loss, r.metrics) for r in first.records] == [
        (r.train_loss, r.val_loss, r.metrics) for r in second.records
    ]
    other = fit(task, TrainConfig(epochs=2, seed=4))
    assert other.records[-1].train_loss != first.records[-1].train_loss


def test_learns_the_task_beyond_what_token_counts_allow():
    # Token counts alone cap accuracy near 50% on this task (see trainers.tasks).
    task = build_task("synthetic_tokens", {"dataset_size": 2000})
    result = fit(task, TrainConfig(epochs=6, lr=1e-2))
    assert result.records[-1].val_loss < result.records[0].val_loss
    assert result.records[-1].metrics["val_acc"] > 0.65


def test_lr_follows_warmup_then_cosine(task):
    steps_per_epoch = math.ceil(800 / 100)
    result = fit(task, TrainConfig(epochs=4, batch_size=100, lr=0.01, warmup_epochs=1, min_lr=0.001))
    lrs = result.lr_history
    assert lrs[0] == pytest.approx(0.01)  # the last warmup step reaches the peak
    assert lrs[1] > lrs[2] > lrs[3]
    assert lrs[3] == pytest.approx(0.001 + 0.5 * 0.009 * (1 + math.cos(math.pi * (3 * steps_per_epoch - 1) / (3 * steps_per_epoch))))


def test_gradient_clipping_is_counted(task):
    clipped = fit(task, TrainConfig(epochs=1, grad_clip=1e-6)).records[0]
    assert clipped.clipped_steps == math.ceil(800 / 64)
    free = fit(task, TrainConfig(epochs=1, grad_clip=0)).records[0]
    assert free.clipped_steps == 0


def test_a_raising_callback_stops_training(task):
    class Stop(Exception):
        pass

    seen = []

    def stop_after_two(record):
        seen.append(record.epoch)
        if record.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(task, TrainConfig(epochs=5), [stop_after_two])
    assert seen == [1, 2]


def test_nonfinite_loss_stops_with_where_it_happened(task):
    model = PositionalBag()
    with torch.no_grad():
        model.head[3].bias.fill_(float("nan"))
    with pytest.raises(DivergenceError, match=r"diverged: loss=nan at epoch 1 step 1"):
        Trainer(model, task, TrainConfig(epochs=2)).fit()


def test_epoch_line_matches_the_seed_format():
    record = EpochRecord(epoch=1, lr=0.001, train_loss=0.70251, val_loss=0.69138, metrics={"val_acc": 0.53125})
    assert format_epoch_line(record) == "Epoch 01 | Train Loss: 0.7025 | Val Loss: 0.6914 | Val Acc: 0.5312 | LR: 0.001000"


def losses(records):
    return [(r.epoch, r.lr, r.train_loss, r.val_loss, r.metrics) for r in records]


def test_resumed_run_matches_the_uninterrupted_one_exactly(task, tmp_path):
    config = TrainConfig(epochs=4, checkpoint_dir=str(tmp_path / "whole"))
    whole = fit(task, config)

    class Interrupt(Exception):
        pass

    def interrupt_after_two(record):
        if record.epoch == 2:
            raise Interrupt

    interrupted = TrainConfig(epochs=4, checkpoint_dir=str(tmp_path / "parts"))
    with pytest.raises(Interrupt):
        fit(task, interrupted, [interrupt_after_two])
    seen = []
    # A fresh process would build the model from another seed; the checkpoint must win.
    seed_everything(123)
    trainer = Trainer(PositionalBag(), task, interrupted, [seen.append])
    resumed = trainer.fit(resume_from=tmp_path / "parts" / "last.pt")
    assert [r.epoch for r in seen] == [3, 4]
    assert losses(resumed.records) == losses(whole.records)
    assert resumed.checkpoint == str(tmp_path / "parts" / "last.pt")


def test_reduce_lr_restores_the_last_good_state_and_halves_the_lr(task):
    config = TrainConfig(epochs=2, lr=1.0, grad_clip=0, warmup_epochs=0, divergence_factor=3)
    with pytest.raises(DivergenceError, match="at epoch 1 step"):
        fit(task, config)
    result = fit(task, config.with_overrides({"on_divergence": "reduce-lr", "max_lr_reductions": 5}))
    reductions = len(result.lr_reductions)
    assert result.epochs_run == 2 and 1 <= reductions <= 5
    assert all(r.startswith("diverged: loss=") and r.endswith("lr halved") for r in result.lr_reductions)
    # Halvings compound: the epoch-1 LR is the cosine value at the end of epoch 1 times 0.5**reductions.
    steps = math.ceil(800 / 64)
    cosine_end_of_epoch_1 = 0.5 * (1 + math.cos(math.pi * (steps - 1) / (2 * steps)))
    assert result.records[0].lr == pytest.approx(0.5**reductions * cosine_end_of_epoch_1)


def test_reduce_lr_gives_up_after_the_set_number_of_reductions(task):
    config = TrainConfig(epochs=2, lr=10.0, grad_clip=0, warmup_epochs=0, divergence_factor=3, on_divergence="reduce-lr", max_lr_reductions=2)
    with pytest.raises(DivergenceError, match=r"\(after 2 LR reductions\)") as stopped:
        fit(task, config)
    # What it tried is kept for the trial's lr_reductions attribute, as a finished trial's.
    assert len(stopped.value.lr_reductions) == 2 and all(r.endswith("lr halved") for r in stopped.value.lr_reductions)


def test_early_stopping_after_patience_epochs_without_improvement(task):
    # A zero learning rate never improves after the first epoch.
    result = fit(task, TrainConfig(epochs=10, lr=0.0, early_stopping_patience=2))
    assert result.stopped_early and result.epochs_run == 3


def test_gradient_accumulation_matches_the_large_batch_step(task):
    big = fit(task, TrainConfig(epochs=1, batch_size=200, grad_clip=0))
    small = fit(task, TrainConfig(epochs=1, batch_size=100, grad_accum_steps=2, grad_clip=0))
    assert small.records[0].lr == big.records[0].lr
    assert small.records[0].val_loss == pytest.approx(big.records[0].val_loss, rel=0.05)


def test_bf16_final_loss_is_close_to_fp32(task):
    # bf16 keeps 8 bits of mantissa; after 3 epochs the validation loss stays within 5%.
    fp32 = fit(task, TrainConfig(epochs=3, precision="fp32"))
    bf16 = fit(task, TrainConfig(epochs=3, precision="bf16"))
    assert bf16.precision == "bf16"
    assert bf16.records[-1].val_loss == pytest.approx(fp32.records[-1].val_loss, rel=0.05)
