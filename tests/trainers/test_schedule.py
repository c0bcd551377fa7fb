import pytest

from hpsearch.trainers.schedule import LRSchedule


def test_warmup_rises_linearly_to_peak():
    schedule = LRSchedule(peak_lr=1e-2, total_steps=100, warmup_steps=10)
    assert schedule(0) == pytest.approx(1e-3)
    assert schedule(4) == pytest.approx(5e-3)
    assert schedule(9) == pytest.approx(1e-2)


def test_cosine_decays_from_peak_to_min_lr():
    schedule = LRSchedule(peak_lr=1e-2, total_steps=110, warmup_steps=10, min_lr=1e-4)
    assert schedule(10) == pytest.approx(1e-2)
    assert schedule(60) == pytest.approx(1e-4 + 0.5 * (1e-2 - 1e-4))
    assert schedule(110) == pytest.approx(1e-4)
    values = [schedule(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_no_warmup_starts_at_peak():
    schedule = LRSchedule(peak_lr=0.5, total_steps=4)
    assert schedule(0) == 0.5
    assert schedule(2) == pytest.approx(0.25)
    assert schedule(4) == pytest.approx(0.0, abs=1e-12)
