import math

from hpsearch.trainers.divergence import DivergenceGuard


def test_nonfinite_loss_or_gradient_is_divergence_with_where():
    guard = DivergenceGuard()
    assert guard.check(1.0, 0.5, epoch=1, step=1) is None
    assert guard.check(math.nan, None, epoch=3, step=41) == "diverged: loss=nan at epoch 3 step 41"
    assert guard.check(1.0, math.inf, epoch=2, step=7) == "diverged: grad_norm=inf at epoch 2 step 7"


def test_exploding_loss_is_divergence_only_after_warmup():
    guard = DivergenceGuard(factor=10.0, warmup_steps=3)
    for step in range(1, 4):
        assert guard.check(1000.0 if step == 2 else 1.0, 1.0, 1, step) is None  # spikes in warmup pass
    for step in range(4, 200):
        assert guard.check(1.0, 1.0, 1, step) is None
    assert guard.check(5.0, 1.0, 1, 200) is None
    reason = guard.check(200.0, 1.0, 2, 201)
    assert reason is not None and reason.startswith("diverged: loss=200 (running ") and reason.endswith("at epoch 2 step 201")
    assert "above 10x the best running loss" in reason


def test_one_noisy_batch_is_not_divergence_but_a_sustained_rise_is():
    # Found by benchmarks/pruning_efficiency.py: a converged lr=0.01 run's batch loss of 0.20
    # against a best running loss of 0.018 pruned a trial that went on to finish well.
    guard = DivergenceGuard(factor=10.0)
    for step in range(1, 300):
        assert guard.check(max(0.018, 1.4 * 0.97**step), 1.0, 1, step) is None
    assert guard.check(0.2031, 1.0, 7, 300) is None
    assert guard.check(0.02, 1.0, 7, 301) is None
    rising = [guard.check(1.4, 1.0, 8, step) for step in range(302, 330)]
    assert any(reason is not None for reason in rising)  # back to chance level: it diverged


def test_factor_zero_turns_the_explosion_check_off_and_state_round_trips():
    guard = DivergenceGuard(factor=0)
    assert guard.check(1.0, 1.0, 1, 1) is None and guard.check(1e9, 1.0, 1, 2) is None
    other = DivergenceGuard()
    other.load_state_dict(guard.state_dict())
    assert other.state_dict() == guard.state_dict()


def test_noise_of_a_converged_run_is_not_divergence():
    # Found by benchmarks/pruning_efficiency.py: near zero loss, one batch at 10x the best
    # smoothed loss is noise, not divergence.
    guard = DivergenceGuard(factor=10.0)
    assert guard.check(1.4, 1.0, 1, 1) is None
    for step in range(2, 200):
        assert guard.check(max(1e-3, 1.4 * 0.95**step), 1.0, 2, step) is None
    assert guard.check(0.0149, 1.0, 9, 200) is None
    assert guard.check(0.02, 1.0, 9, 201) is None  # a running loss of 0.0016 is 10x its best, not 10x the floor
    rising = [guard.check(0.2, 1.0, 9, step) for step in range(202, 230)]
    assert any(reason is not None for reason in rising)  # 10x the 1%-of-start floor (0.014)


def test_reading_step_values_in_batches_keeps_every_verdict_and_value():
    """On a GPU the trainer reads losses back every 16 steps; the verdicts must be those of every step."""
    from hpsearch.models import build_model
    from hpsearch.trainers import DivergenceError, TrainConfig, Trainer, build_task, seed_everything

    task = build_task("synthetic_tokens", {"dataset_size": 400, "seq_len": 16})

    def fit(lr: float, sync_every: int):
        seed_everything(0)
        trainer = Trainer(build_model("transformer_classifier", {"embed_dim": 16, "num_layers": 1}, task.data), task,
                          TrainConfig(epochs=2, lr=lr, batch_size=32, device="cpu"))
        trainer.sync_every = sync_every
        try:
            return [(r.train_loss, r.grad_norm_mean, r.clipped_steps) for r in trainer.fit().records]
        except DivergenceError as error:
            return error.reason

    assert fit(1e-3, 1) == fit(1e-3, 5)
    diverged = fit(10.0, 1)
    assert isinstance(diverged, str) and "at epoch 1 step" in diverged
    assert fit(10.0, 5) == diverged
