"""``--precision auto`` per model: the decision from step timings, what is timed, and what is left alone."""

import pytest
import torch
from torch import nn

from hpsearch.trainers import step_speed
from hpsearch.trainers.config import TrainConfig
from hpsearch.trainers.step_speed import StepTiming, decide_precision, measure_step_speed
from hpsearch.trainers.tasks import build_task

CONFIG = TrainConfig(device="cpu", batch_size=16)


@pytest.fixture(scope="module")
def task():
    return build_task("synthetic_tokens", {"dataset_size": 64})


def tiny_model(task) -> nn.Module:
    torch.manual_seed(0)
    data = task.data
    return nn.Sequential(
        nn.Embedding(data.vocab_size, 8), nn.Flatten(), nn.Dropout(0.1), nn.Linear(8 * data.seq_len, data.num_outputs)
    )


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Timings are kept between searches in the cache directory: each test starts with its own, empty."""
    monkeypatch.setenv("HPSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def machine_says(monkeypatch):
    """Make the machine's matmul measurement pick ``precision`` for auto (explicit ones pass through)."""

    def pick(precision: str) -> None:
        def choose(requested: str, device: torch.device) -> str:
            return precision if requested == "auto" else requested

        monkeypatch.setattr(step_speed, "choose_precision", choose)

    return pick


@pytest.fixture
def calls(machine_says, monkeypatch) -> list[str]:
    """auto as where the machine says bf16, and the lower precision of each step timing that ran, in order."""
    machine_says("bf16")
    timed: list[str] = []

    def counted(*args, **kwargs):
        timed.append(args[-1])
        return measure_step_speed(*args, **kwargs)

    monkeypatch.setattr(step_speed, "measure_step_speed", counted)
    return timed


@pytest.fixture
def no_timing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a step timing ran where none was needed")

    monkeypatch.setattr(step_speed, "measure_step_speed", refuse)


def test_the_lower_precision_is_kept_only_where_its_steps_are_clearly_faster():
    slower = StepTiming("bf16", (1.0, 1.0, 1.0), (1.6, 1.2, 1.5))
    assert slower.speedup == pytest.approx(1 / 1.5) and slower.chosen == "fp32"
    marginal = StepTiming("bf16", (1.1, 1.1, 1.1), (1.0, 1.0, 1.0))
    assert marginal.chosen == "fp32"
    faster = StepTiming("bf16", (2.0, 2.0, 9.0), (1.0, 1.0, 1.0))  # one disturbed round does not decide
    assert faster.speedup == 2.0 and faster.chosen == "bf16"
    assert StepTiming("fp16", (3.0,), (1.0,)).chosen == "fp16"


def test_an_explicit_precision_is_never_overridden_and_nothing_is_timed(task, machine_says, no_timing):
    machine_says("bf16")
    timings: dict = {}
    for precision in ("fp32", "bf16", "fp16"):
        config = CONFIG.with_overrides({"precision": precision})
        assert decide_precision(tiny_model(task), task, config, {}, timings, "key") == (precision, None)
    assert timings == {}


def test_auto_is_fp32_without_timing_where_the_machine_says_fp32(task, machine_says, no_timing):
    machine_says("fp32")
    timings: dict = {}
    assert decide_precision(tiny_model(task), task, CONFIG, {}, timings, "key") == ("fp32", None)
    assert timings == {}


def test_auto_times_a_key_once_and_decides_from_its_steps(task, calls):
    timings: dict = {}
    precision, timing = decide_precision(tiny_model(task), task, CONFIG, {}, timings, "a")
    assert calls == ["bf16"] and timings == {"a": timing}
    assert precision == timing.chosen == ("bf16" if timing.speedup >= step_speed.SPEEDUP else "fp32")
    # Timing stops once more than half of the rounds agree: 3 to 5 of them.
    assert len(timing.fp32_seconds) == len(timing.lower_seconds) in range(step_speed.ROUNDS // 2 + 1, step_speed.ROUNDS + 1)
    assert all(seconds > 0 for seconds in (*timing.fp32_seconds, *timing.lower_seconds))
    assert decide_precision(tiny_model(task), task, CONFIG, {}, timings, "a") == (precision, timing)
    assert calls == ["bf16"]  # the same key: from the timings, not timed again
    decide_precision(tiny_model(task), task, CONFIG, {}, timings, "b")
    assert calls == ["bf16", "bf16"] and set(timings) == {"a", "b"}


def test_timing_leaves_the_model_and_torchs_rng_as_they_were(task):
    model = tiny_model(task)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    measure_step_speed(model, task, CONFIG, {}, "bf16", rounds=1)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())


def test_timing_stops_once_most_rounds_agree_as_the_median_of_all_would():
    bar = step_speed.SPEEDUP
    slower, faster = (1.0, 1.0), (bar * 1.1, 1.0)  # (fp32 seconds, lower seconds) of one round
    for rounds, decided in ([slower] * 2, False), ([slower] * 3, True), ([faster, slower, faster], False), \
                           ([faster, slower, faster, faster], True), ([slower, faster, slower, faster, slower], True):
        fp32, lower = [r[0] for r in rounds], [r[1] for r in rounds]
        assert step_speed._decided(fp32, lower, 5) is decided, rounds


def test_a_later_search_reads_the_timing_a_search_stored_and_times_only_what_differs(task, calls, own_cache):
    _, first = decide_precision(tiny_model(task), task, CONFIG, {}, {}, "a")
    assert calls == ["bf16"] and (own_cache / step_speed.STEP_TIMINGS_CACHE).exists()
    _, again = decide_precision(tiny_model(task), task, CONFIG, {}, {}, "a")  # a new search: nothing in memory
    assert calls == ["bf16"] and (again.fp32_seconds, again.lower_seconds) == (first.fp32_seconds, first.lower_seconds)
    assert first.kept_from == "" and again.kept_from.startswith("20")  # when it was taken, for the trial's line
    longer = build_task("synthetic_tokens", {"dataset_size": 64, "seq_len": task.data.seq_len * 2})
    decide_precision(tiny_model(longer), longer, CONFIG, {}, {}, "a")  # other shapes: other steps
    wider = nn.Sequential(
        nn.Embedding(task.data.vocab_size, 4), nn.Flatten(), nn.Linear(4 * task.data.seq_len, task.data.num_outputs)
    )

    class Other(nn.Module):  # other code for the same key
        def __init__(self) -> None:
            super().__init__()
            self.net = wider

        def forward(self, x):
            return self.net(x)

    decide_precision(Other(), task, CONFIG, {}, {}, "a")
    assert calls == ["bf16", "bf16", "bf16"]
    # An edited builder of torch's own modules: no class code of the user's, but another module tree.
    decide_precision(wider, task, CONFIG, {}, {}, "a")
    assert calls == ["bf16"] * 4
    assert step_speed.kept_step_timings(torch.device("cpu")) == 4
    assert step_speed.forget_step_timings(torch.device("cpu")) == 4
    decide_precision(tiny_model(task), task, CONFIG, {}, {}, "a")
    assert calls == ["bf16"] * 5
