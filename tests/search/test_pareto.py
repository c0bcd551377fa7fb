"""The Pareto pruner: its rule on hand-made complete trials, and a simulated multi-objective study that it prunes."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.search.errors import UsageError
from hpsearch.search.goals import TIME_OBJECTIVE, Goal
from hpsearch.search.pareto import ParetoPruner
from hpsearch.search.simulate import CurveSimulation, load_benchmark
from hpsearch.storage.recorder import MemoryRecorder

LOSS_AND_FLOPS = (Goal("val_loss", "minimize"), Goal("flops", "minimize"))
# Complete trials of 6 epochs, (val_loss at epoch 3, at epoch 6, flops). Their changes after
# epoch 3 are -0.5 ... -0.1; the best quarter's is -0.4, which the optimistic guess adds.
COMPLETE = [(1.5, 1.0, 1.0), (2.4, 2.0, 2.0), (3.3, 3.0, 3.0), (0.7, 0.5, 5.0), (4.1, 4.0, 0.5)]


def rows_of(losses: dict[int, float], epochs: int, seconds: float = 1.0) -> list[dict]:
    """Epoch rows 1..``epochs``, with ``losses[e]`` at the epochs it names and 9.0 elsewhere."""
    return [{"epoch": e, "val_loss": losses.get(e, 9.0), "epoch_seconds": seconds} for e in range(1, epochs + 1)]


@pytest.fixture
def study() -> tuple[optuna.Study, MemoryRecorder]:
    """A two-objective study of the ``COMPLETE`` trials, and a failed one that would dominate every trial."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    recorder = MemoryRecorder()
    for at, final, flops in [*COMPLETE, (0.1, 0.1, 0.1)]:
        trial = study.ask()
        trial.set_user_attr("flops.per_sample_forward", flops)
        for row in rows_of({3: at, 6: final}, 6):
            recorder.write_epoch(trial, row["epoch"], row, None)
        study.tell(trial, [final, flops] if at != 0.1 else None, state=TrialState.COMPLETE if at != 0.1 else TrialState.FAIL)
    return study, recorder


def judge(study, loss: float, flops: float, epoch: int = 3, rungs=(3,), goals=LOSS_AND_FLOPS) -> str | None:
    study, recorder = study
    trial = study.ask()
    return ParetoPruner(goals, rungs, 6).prune_reason(trial, recorder, rows_of({epoch: loss}, epoch), {"flops.per_sample_forward": flops})


@pytest.mark.parametrize(
    ("loss", "flops", "by"),
    [
        (1.2, 1.0, None),  # its guess (0.8, 1.0) beats trial 0's end (1.0, 1.0)
        (0.8, 6.0, None),  # its guess (0.4, 6.0) beats every end in loss
        (1.5, 1.0, 0),  # its guess (1.1, 1.0): trial 0 ends at (1.0, 1.0), better in loss, as good in flops
        (2.0, 4.0, 0),  # its guess (1.6, 4.0) is worse than trial 0's end in both
    ],
)
def test_a_trial_stops_when_a_complete_trial_dominates_an_optimistic_guess_of_its_end(study, loss, flops, by):
    reason = judge(study, loss, flops)
    assert (reason is None) == (by is None)
    if by is not None:
        assert reason == (
            f"pruned by the pareto pruner at epoch 3: val_loss={loss:.4g}, flops={flops:.4g}; trial {by} (val_loss=1, "
            f"flops=1) dominates even its optimistic end (val_loss={loss - 0.4:.4g}, flops={flops:.4g}: the 75% best "
            "change after epoch 3 of the 5 complete trials)"
        )


def test_the_guess_grows_training_time_by_the_complete_trials_factor(study):
    # Every complete trial's time doubled from epoch 3 to 6 (1 s an epoch): a trial at 3 s is guessed at 6 s.
    goals = (Goal("val_loss", "minimize"), Goal(TIME_OBJECTIVE, "minimize"))
    assert "val_loss=1.1, time=6: the 75% best" in judge(study, 1.5, 1.0, goals=goals)


def test_no_verdict_off_a_rung_or_with_too_few_complete_trials(study):
    assert judge(study, 4.0, 4.0, rungs=(2, 4)) is None  # epoch 3 is no rung
    _, recorder = study
    del recorder.rows[0]  # one complete trial's rows are gone: 4 left, fewer than PARETO_MIN_COMPLETE
    assert judge(study, 4.0, 4.0) is None


def test_a_single_objective_study_given_the_pareto_pruner_is_told_to_choose_another():
    with pytest.raises(UsageError, match="ranks trials on several objectives, but this study has one .val_loss."):
        ParetoPruner.for_study("pareto", LOSS_AND_FLOPS[:1], 10, 0)
    with pytest.raises(UsageError, match="--pruner sha judges one objective"):
        ParetoPruner.for_study("sha", LOSS_AND_FLOPS, 10, 0)
    assert ParetoPruner.for_study("percentile", LOSS_AND_FLOPS[:1], 10, 0) is None
    assert ParetoPruner.for_study("pareto", LOSS_AND_FLOPS, 10, 1).rungs == {4, 8}  # doubling from twice the first judged epoch


@pytest.fixture(scope="module")
def surrogate(yahpo_data):
    return load_benchmark("lcbench", "167168", yahpo_data)


def test_a_simulated_multi_objective_study_prunes_with_a_prune_reason(surrogate):
    goals = (Goal("val_accuracy", "maximize"), Goal(TIME_OBJECTIVE, "minimize"))
    result = CurveSimulation(surrogate, "random", "pareto", seed=0, budget=900, objectives=goals).run()
    assert result.study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    trials = result.study.get_trials(deepcopy=False)
    by_pareto = [t for t in trials if t.user_attrs.get("prune_reason", "").startswith("pruned by the pareto pruner")]
    assert by_pareto
    assert {t.user_attrs["epochs_run"] for t in by_pareto} <= {4, 8, 16, 32}
    assert all(t.state == TrialState.PRUNED and t.intermediate_values == {} for t in by_pareto)
    for trial in by_pareto:  # what the samplers learn from it: its accuracy, and its time carried on to epoch 52
        rows = result.recorder.rows[trial.number]
        seconds = math.fsum(r["epoch_seconds"] for r in rows) * 52 / len(rows)
        assert trial.user_attrs["pruned_values"] == pytest.approx([rows[-1]["val_accuracy"], seconds])
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            rows = result.recorder.rows[trial.number]
            assert trial.values == [rows[-1]["val_accuracy"], math.fsum(r["epoch_seconds"] for r in rows)]
    unpruned = CurveSimulation(surrogate, "random", "none", seed=0, budget=900, objectives=goals).run()
    assert sum(t.epochs < 52 for t in unpruned.finished) == 1  # only the trial the spent budget cut
    assert len(result.finished) > len(unpruned.finished)
