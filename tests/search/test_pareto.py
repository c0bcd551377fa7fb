"""The Pareto-rank pruner: its rule on hand-made peers, and a simulated multi-objective study that it prunes."""

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
# (val_loss, flops): A and D make the first front, B the second, C the third.
PEERS = {"A": (1.0, 1.0), "B": (2.0, 2.0), "C": (3.0, 3.0), "D": (0.5, 5.0)}


def rows_through(epoch: int, loss: float) -> list[dict]:
    return [{"epoch": e, "val_loss": loss if e == epoch else 9.0, "epoch_seconds": 1.0} for e in range(1, epoch + 1)]


@pytest.fixture
def peers() -> tuple[optuna.Study, MemoryRecorder]:
    """A two-objective study whose four trials reached epoch 3 with ``PEERS``' values, and a failed one that did too."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    recorder = MemoryRecorder()
    for loss, flops in [*PEERS.values(), (0.1, 0.1)]:
        trial = study.ask()
        trial.set_user_attr("flops.per_sample_forward", flops)
        for row in rows_through(3, loss):
            recorder.write_epoch(trial, row["epoch"], row, None)
        if loss == 0.1:
            study.tell(trial, state=TrialState.FAIL)  # it would dominate everyone, but a failed trial is no peer
    return study, recorder


def judge(peers, loss: float, flops: float, epoch: int = 3, rungs=(3,)) -> str | None:
    study, recorder = peers
    trial = study.ask()
    return ParetoPruner(LOSS_AND_FLOPS, rungs).prune_reason(
        trial, recorder, rows_through(epoch, loss), {"flops.per_sample_forward": flops}
    )


@pytest.mark.parametrize(
    ("loss", "flops", "pruned", "front", "ahead"),
    [
        (1.5, 0.5, False, 1, 0),  # on the first front
        (1.5, 1.5, False, 2, 2),  # behind A and D only: 2 of 5 trials, fewer than half
        (2.5, 2.5, True, 3, 3),  # behind A, D and B: 3 of 5, half or more
        (4.0, 4.0, True, 4, 4),  # dominated by A, B and C, behind D too: after the third front
    ],
)
def test_a_trial_goes_on_while_the_fronts_ahead_of_it_hold_fewer_than_half_the_trials(
    peers, loss, flops, pruned, front, ahead
):
    reason = judge(peers, loss, flops)
    assert (reason is not None) == pruned
    if pruned:
        assert reason.startswith(f"pruned by the pareto pruner at epoch 3: val_loss={loss:.4g}, flops={flops:.4g}; ")
        assert f"in front {front}, behind {ahead} of the 5 trials that reached this epoch" in reason


def test_no_verdict_off_a_rung_or_with_too_few_peers(peers):
    assert judge(peers, 4.0, 4.0, rungs=(2, 9)) is None  # epoch 3 is no rung
    _, recorder = peers
    for number in (0, 1):
        del recorder.rows[number]  # two peers never reached epoch 3: 2 left, fewer than MIN_PEERS
    assert judge(peers, 4.0, 4.0) is None


def test_a_single_objective_study_given_the_pareto_pruner_is_told_to_choose_another():
    with pytest.raises(UsageError, match="ranks trials on several objectives, but this study has one .val_loss."):
        ParetoPruner.for_study("pareto", LOSS_AND_FLOPS[:1], 10, 0)
    with pytest.raises(UsageError, match="--pruner sha judges one objective"):
        ParetoPruner.for_study("sha", LOSS_AND_FLOPS, 10, 0)
    assert ParetoPruner.for_study("percentile", LOSS_AND_FLOPS[:1], 10, 0) is None
    assert ParetoPruner.for_study("pareto", LOSS_AND_FLOPS, 10, 1).rungs == {6}  # sha's rungs after the first


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
    assert {t.user_attrs["epochs_run"] for t in by_pareto} <= {3, 9, 27}
    assert all(t.state == TrialState.PRUNED and t.intermediate_values == {} for t in by_pareto)
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            rows = result.recorder.rows[trial.number]
            assert trial.values == [rows[-1]["val_accuracy"], math.fsum(r["epoch_seconds"] for r in rows)]
    unpruned = CurveSimulation(surrogate, "random", "none", seed=0, budget=900, objectives=goals).run()
    assert sum(t.epochs < 52 for t in unpruned.finished) == 1  # only the trial the spent budget cut
    assert len(result.finished) > len(unpruned.finished)
