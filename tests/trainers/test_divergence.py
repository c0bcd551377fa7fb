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
        assert guard.check(100.0 if step == 2 else 1.0, 1.0, 1, step) is None  # spikes in warmup pass
    for step in range(4, 60):
        assert guard.check(1.0, 1.0, 1, step) is None
    assert guard.check(9.0, 1.0, 1, 60) is None
    reason = guard.check(11.0, 1.0, 2, 61)
    assert reason is not None and reason.startswith("diverged: loss=11 above 10x") and reason.endswith("at epoch 2 step 61")


def test_factor_zero_turns_the_explosion_check_off_and_state_round_trips():
    guard = DivergenceGuard(factor=0)
    assert guard.check(1.0, 1.0, 1, 1) is None and guard.check(1e9, 1.0, 1, 2) is None
    other = DivergenceGuard()
    other.load_state_dict(guard.state_dict())
    assert other.state_dict() == guard.state_dict()
