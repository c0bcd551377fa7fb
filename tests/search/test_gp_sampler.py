"""The default GP sampler: a Sobol design first, then a GP that keeps running trials in mind."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpsearch.search.gp_sampler import SobolStartGPSampler
from hpsearch.search.log_scale import LogScaled
from hpsearch.search.samplers import make_sampler

SPACE = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}


def bowl(params: dict[str, float]) -> float:
    """Lowest at (0.3, 0.6)."""
    return (params["x"] - 0.3) ** 2 + (params["y"] - 0.6) ** 2


def history() -> list[optuna.trial.FrozenTrial]:
    """Twelve complete trials on a 4 x 3 grid around the bowl's low point."""
    points = [{"x": x, "y": y} for x in (0.05, 0.35, 0.65, 0.95) for y in (0.1, 0.5, 0.9)]
    return [create_trial(params=p, distributions=SPACE, value=bowl(p)) for p in points]


def distance(a: dict[str, float], b: dict[str, float]) -> float:
    return math.dist((a["x"], a["y"]), (b["x"], b["y"]))


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def test_the_default_sampler_for_ranges_is_this_one_on_a_log_scale_for_wide_ranges():
    sampler = make_sampler("gp", 0)
    assert isinstance(sampler, LogScaled) and isinstance(sampler.sampler, SobolStartGPSampler)


def test_a_trial_started_while_another_runs_at_the_gps_choice_goes_elsewhere():
    # Without a running trial the GP goes back to the same spot: a trial that failed is not running.
    alone = optuna.create_study(sampler=SobolStartGPSampler(seed=1))
    alone.add_trials(history())
    first = alone.ask(SPACE)
    alone.tell(first, state=TrialState.FAIL)
    again = alone.ask(SPACE).params
    assert distance(first.params, again) < 0.01, "the test needs a GP that repeats its choice"

    # With the first trial still running there, the next workers' trials are sent elsewhere, and
    # apart (in this bowl the GP knows where the low point is: by a few hundredths, not far). A GP
    # that forgot running trials would send all three to the same point.
    study = optuna.create_study(sampler=SobolStartGPSampler(seed=1))
    study.add_trials(history())
    running = study.ask(SPACE)
    assert distance(running.params, first.params) < 0.01
    second = study.ask(SPACE).params
    third = study.ask(SPACE).params
    assert min(distance(running.params, second), distance(running.params, third), distance(second, third)) > 0.04


def test_the_first_trials_are_one_stratified_sobol_design_even_across_workers():
    # Two unseeded samplers, as two workers of one study would have: each of 8 equal slices of
    # each parameter gets exactly one of the 8 design points (7 after the random first trial,
    # which the design does not know). 8 random points do that with probability 8!/8^8 < 0.3%.
    study = optuna.create_study()
    workers = [SobolStartGPSampler(seed=None, startup=10), SobolStartGPSampler(seed=None, startup=10)]
    points = []
    for i in range(9):
        study.sampler = workers[i % 2]
        trial = study.ask(SPACE)
        points.append(trial.params)
        study.tell(trial, bowl(trial.params))
    design = points[1:]
    for name in SPACE:
        assert sorted(int(p[name] * 8) for p in design) == list(range(8)), name


def test_the_gp_takes_over_once_the_startup_trials_have_completed():
    sampler = SobolStartGPSampler(seed=0, startup=4)
    study = optuna.create_study(sampler=sampler)
    for _ in range(4):
        assert sampler.in_design(study)
        trial = study.ask(SPACE)
        study.tell(trial, bowl(trial.params))
    assert not sampler.in_design(study)


def test_the_gp_learns_from_a_pruned_trial_and_does_not_sample_its_point_again():
    # The GP's choice after the history, pruned there at a bad value: a GP that knew only complete
    # trials would go back to the same spot, as it does after a failed trial (the test above).
    study = optuna.create_study(sampler=SobolStartGPSampler(seed=1))
    study.add_trials(history())
    choice = study.ask(SPACE)
    study.tell(choice, state=TrialState.FAIL)
    study.add_trial(
        create_trial(params=choice.params, distributions=SPACE, state=TrialState.PRUNED, intermediate_values={3: 1.0})
    )
    again = study.ask(SPACE).params
    assert distance(choice.params, again) > 0.05


def test_the_design_goes_on_until_its_points_have_completed_not_been_pruned():
    sampler = SobolStartGPSampler(seed=0, startup=4)
    study = optuna.create_study(sampler=sampler)
    for i in range(4):
        point = {"x": 0.1 + 0.2 * i, "y": 0.5}
        study.add_trial(
            create_trial(params=point, distributions=SPACE, state=TrialState.PRUNED, intermediate_values={1: 2.0})
        )
    assert sampler.in_design(study)
    for i in range(4):
        assert sampler.in_design(study)
        study.add_trial(create_trial(params={"x": 0.2 * i, "y": 0.1}, distributions=SPACE, value=1.0))
    assert not sampler.in_design(study)


def started(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """A trial a worker starts now, as the sampler sees it."""
    number = study.ask(SPACE).number
    return study.get_trials(deepcopy=False)[number]


def test_a_worker_that_finds_every_design_point_taken_goes_to_the_gp():
    # Startup 4: three points complete and one pruned, so the GP has four trials to learn from.
    def study_with(running: int) -> tuple[optuna.Study, SobolStartGPSampler]:
        sampler = SobolStartGPSampler(seed=0, startup=4)
        study = optuna.create_study(sampler=sampler)
        for i in range(3):
            point = {"x": 0.2 * i, "y": 0.1}
            study.add_trial(create_trial(params=point, distributions=SPACE, value=bowl(point)))
        study.add_trial(
            create_trial(
                params={"x": 0.9, "y": 0.9}, distributions=SPACE, state=TrialState.PRUNED, intermediate_values={1: 2.0}
            )
        )
        for _ in range(running):
            study.ask(SPACE)  # another worker's trial, still running
        return study, sampler

    # One worker: nothing else runs, and the design goes on until its fourth point completes.
    alone, sampler = study_with(running=0)
    assert sampler.in_design(alone, started(alone))
    # Another worker runs the fourth point: every design point is taken, so the GP takes this one.
    shared, sampler = study_with(running=1)
    assert not sampler.in_design(shared, started(shared))


def test_the_design_fills_in_until_the_gp_has_startup_trials_to_learn_from():
    # Four workers started at once: every design point is taken, but nothing has ended.
    sampler = SobolStartGPSampler(seed=0, startup=4)
    study = optuna.create_study(sampler=sampler)
    for _ in range(4):
        study.ask(SPACE)
    assert sampler.in_design(study, started(study))


def test_workers_drawing_design_points_at_once_each_draw_their_own_trials_point():
    # Optuna's QMCSampler counts its points in the study, read and then written: two workers asking
    # at once drew the same point. Each trial now takes the point its number names, in any order.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1), n_trials=1)
    study.ask(), study.ask()  # trials 1 and 2, running on two workers
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)}

    def draw(number: int) -> dict:
        worker = SobolStartGPSampler(seed=3)  # each worker process has a sampler of its own
        return worker.sample_relative(study, frozen[number], worker.infer_relative_search_space(study, frozen[number]))

    second_first = {2: draw(2), 1: draw(1)}
    assert second_first[1] != second_first[2]
    assert second_first == {1: draw(1), 2: draw(2)}
    assert not any(key.startswith("qmc:") for key in study._storage.get_study_system_attrs(study._study_id))  # no count to race on


def test_a_retry_takes_a_trial_number_but_no_design_point():
    # An interrupted search queued its trial again; the design's points, numbered by trial, then
    # skipped the one the retry's number named: a new user's uninterrupted best was never drawn.
    def design(retry_after: int | None) -> list[dict[str, float]]:
        study = optuna.create_study(sampler=SobolStartGPSampler(seed=3, startup=10))
        drawn = []
        for number in range(6):
            trial = study.ask(SPACE)
            if number == retry_after:  # stopped: failed, and queued again with its parameters
                study.tell(trial, state=TrialState.FAIL)
                study.enqueue_trial(trial.params)
                retried = study.ask(SPACE)
                study.tell(retried, bowl(retried.params))
            else:
                study.tell(trial, bowl(trial.params))
            drawn.append(trial.params)
        return drawn

    assert design(retry_after=2) == design(retry_after=None)
