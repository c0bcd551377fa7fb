"""--pruner halving: a grid's points wait at each rung for the others, the best third go on, in any order."""

from __future__ import annotations

import itertools
import random
import subprocess

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.search.audit import audit_epochs
from hpsearch.search.halving import halving_trials_left, survivors
from hpsearch.search.replay import StoredCurves, replay, stored_curves
from hpsearch.search.samplers import auto_pruner, make_pruner
from hpsearch.storage.attributes import HALVING_ATTR, PRUNE_REASON_ATTR, RETRY_OF_ATTR
from tests.search.conftest import hpsearch_command

STUDY = "tfn_classifier-synthetic_tokens"
# 9 points x 7 epochs: with the LR warmup's one epoch, the rungs are epochs 2 and 6, where 3 and then 1 go on.
GRID = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:8,16,32", "lr:1e-3,3e-3,1e-2", "--epochs", "7",
        "--dataset-size", "120", "--seq-len", "16", "--no-progress", "--quiet",
        # Every run must train alike: auto decides bf16 or fp32 from timings, which vary between runs.
        "--precision", "fp32"]


def test_a_third_go_on_at_each_rung_until_one_is_left():
    assert survivors(16, (2, 6, 18)) == (5, 1)
    assert survivors(9, (2, 6)) == (3, 1)
    assert survivors(27, (1, 3)) == (9, 3)  # the rungs end first: the 3 left run to the end
    assert survivors(2, (2, 6)) == (1,)
    assert survivors(1, (2, 6)) == ()


def test_auto_halves_grids_of_nine_points_or_more():
    assert auto_pruner("grid", grid_points=9) == "halving"
    assert auto_pruner("grid", grid_points=8) == "percentile"
    assert auto_pruner("grid") == "percentile"  # a grid cut by --n-trials, or without resumable checkpoints
    assert auto_pruner("tpe", grid_points=9) == "rung"  # as under the GP: TPE with percentile fell far behind on lcbench
    assert auto_pruner("random") == "percentile"


def _curves(points: int = 9, epochs: int = 8) -> StoredCurves:
    """Losses that fall at each point's own pace, so that the early ranking is not the final one."""
    rng = random.Random(0)
    curves = []
    for _ in range(points):
        start, floor, pace = rng.uniform(1.5, 2.5), rng.uniform(0.1, 1.0), rng.uniform(0.2, 1.5)
        curves.append(tuple(floor + (start - floor) / (1 + pace * epoch) for epoch in range(1, epochs + 1)))
    return StoredCurves("val_loss", "minimize", epochs, 1.0, tuple(curves))


def test_what_halving_spends_and_keeps_is_the_same_in_every_order():
    stored = _curves()
    first = replay(stored, "halving")
    # Rungs at epochs 2 and 6: 9 points x 2 epochs, 3 go on for 4, 1 for the last 2.
    assert first.epochs == 9 * 2 + 3 * 4 + 1 * 2
    by_rung_2 = sorted(range(9), key=lambda i: stored.curves[i][1])[:3]
    winner = min(by_rung_2, key=lambda i: stored.curves[i][5])
    assert first.best == stored.curves[winner][-1] and first.pruned == 8
    for order in itertools.islice(itertools.permutations(range(9)), 0, 2000, 250):
        assert replay(stored, "halving", list(order)) == first


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory):
    """The 9-point grid run to the end, with the default pruner, and by two workers started together."""
    folders = {}
    for name, pruner in (("none", "none"), ("auto", "auto")):
        folder = folders[name] = tmp_path_factory.mktemp(name)
        done = subprocess.run([*hpsearch_command(), *GRID, "--pruner", pruner], cwd=folder, capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        folders[f"{name}-stdout"] = done.stdout
    folder = folders["workers"] = tmp_path_factory.mktemp("workers")
    storage = f"sqlite:///{folder}/hpsearch.db"
    created = subprocess.run([*hpsearch_command(), "create", *GRID, "--pruner", "halving", "--storage", storage], cwd=folder,
                             capture_output=True, text=True, timeout=300, check=False)
    assert created.returncode == 0, created.stderr
    folders["create-stdout"] = created.stdout
    workers = [subprocess.Popen([*hpsearch_command(), "worker", "--study", STUDY, "--storage", storage, "--threads", "1", "-q",
                                 "--no-progress"], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    return folders


def _trials(folder) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{folder}/hpsearch.db").get_trials()


def _trained(trials: list[optuna.trial.FrozenTrial]) -> int:
    return sum(t.user_attrs["epochs_run"] - t.user_attrs.get("resumed_from", {}).get("epoch", 0) for t in trials)


def test_the_default_for_a_nine_point_grid_waits_at_rungs_and_resumes_the_best(grid_runs):
    assert "Strategy:   --sampler grid --pruner halving" in grid_runs["auto-stdout"]
    trials = _trials(grid_runs["auto"])
    by_number = {t.number: t for t in trials}
    reached: dict[tuple, int] = {}
    for trial in trials:
        key = tuple(sorted(trial.params.items()))
        reached[key] = max(reached.get(key, 0), trial.last_step or 0)
    # All 9 reach epoch 2, 3 go on to epoch 6, 1 to the end; the last point to reach a rung goes on
    # at once when it is among the best, so a point goes on in one trial or in a retry.
    assert sorted(reached.values()) == [2] * 6 + [6] * 2 + [7]
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 1
    retries = [t for t in trials if RETRY_OF_ATTR in t.user_attrs]
    assert len(trials) == 9 + len(retries) and retries
    for retry in retries:
        (resumed,) = retry.user_attrs[RETRY_OF_ATTR]
        waited = by_number[resumed]
        assert waited.state == TrialState.PRUNED and waited.params == retry.params
        assert "waits at epoch" in waited.user_attrs[PRUNE_REASON_ATTR]
        assert retry.user_attrs["resumed_from"]["epoch"] == waited.last_step in (2, 6)
    audit = audit_epochs(f"sqlite:///{grid_runs['auto']}/hpsearch.db", STUDY, str(grid_runs["auto"]))
    assert (audit.trained_twice, audit.lost, audit.running) == (0, 0, 0)
    # The rungs' verdicts, which a trial that ended waiting cannot be told, are the study's.
    rungs = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{grid_runs['auto']}/hpsearch.db").user_attrs[HALVING_ATTR]
    assert [(len(r["went_on"]), len(r["stopped"])) for r in (rungs["2"], rungs["6"])] == [(3, 6), (1, 2)]
    first_at_2 = {tuple(sorted(by_number[n].params.items())) for n in rungs["2"]["went_on"]}
    assert first_at_2 == {key for key, epoch in reached.items() if epoch >= 6}


def test_a_replay_of_the_full_grid_decides_as_the_live_run(grid_runs):
    full = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{grid_runs['none']}/hpsearch.db")
    replayed = replay(stored_curves(full), "halving")
    live = _trials(grid_runs["auto"])
    assert replayed.epochs == _trained(live) == 9 * 2 + 3 * 4 + 1 * 1
    assert replayed.best == next(t.value for t in live if t.state == TrialState.COMPLETE)


def test_two_workers_wait_for_each_other_at_the_rungs_and_end_as_one_does(grid_runs):
    assert ": 9 trials to run (halving: they wait at epochs 2, 6 for each other" in grid_runs["create-stdout"]
    one, two = _trials(grid_runs["auto"]), _trials(grid_runs["workers"])
    assert _trained(two) == _trained(one)
    (best_one,) = (t for t in one if t.state == TrialState.COMPLETE)
    (best_two,) = (t for t in two if t.state == TrialState.COMPLETE)
    assert (best_two.params, best_two.value) == (best_one.params, best_one.value)
    audit = audit_epochs(f"sqlite:///{grid_runs['workers']}/hpsearch.db", STUDY, str(grid_runs["workers"]))
    assert (audit.trained_twice, audit.lost, audit.running) == (0, 0, 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sampler", "random", "--n-trials", "3"], "--pruner halving runs a grid's points in rounds; this search samples"),
        (["--n-trials", "4"], "--pruner halving compares every point of the grid at each rung; --n-trials 4"),
        (["--checkpoints", "best"], "--pruner halving resumes waiting points from last.pt; --checkpoints best"),
    ],
)
def test_halving_where_it_cannot_run_is_one_line_and_exit_2(run_hpsearch, args, message):
    done = run_hpsearch(*GRID, "--pruner", "halving", *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_halving_studys_progress_bar_counts_its_points_and_at_most_one_retry_each_that_goes_on():
    study = optuna.create_study(pruner=make_pruner("halving", 7, 1.0, "grid", grid_points=9))
    assert halving_trials_left(study) == 9 + 3 + 1
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, intermediate_values={2: 1.0}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))  # a failure's retry is on top
    assert halving_trials_left(study) == 12
    assert halving_trials_left(optuna.create_study(pruner=make_pruner("percentile", 7, 1.0))) is None
