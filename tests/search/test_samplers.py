"""Pruner choice: names, the first judged epoch, and what the objective does with the verdicts."""

from __future__ import annotations

import re

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.search.errors import UsageError
from hpsearch.search.samplers import first_judged_epoch, make_pruner
from tests.search.test_cli import load_trials

TINY_DATA = ["--dataset-size", "200", "--no-progress"]


@pytest.mark.parametrize(
    ("epochs", "warmup", "first"), [(5, 1.0, 2), (20, 1.0, 2), (5, 0.0, 1), (5, 0.5, 2), (10, 2.5, 4), (1, 1.0, 1)]
)
def test_first_judged_epoch_is_the_first_after_the_lr_warmup(epochs, warmup, first):
    assert first_judged_epoch(epochs, warmup) == first


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("percentile", optuna.pruners.PercentilePruner),
        ("median", optuna.pruners.MedianPruner),
        ("sha", optuna.pruners.SuccessiveHalvingPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("wilcoxon", optuna.pruners.WilcoxonPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_every_pruner_name_makes_its_optuna_pruner(name, kind):
    assert isinstance(make_pruner(name, 10, 1.0), kind)
    with pytest.raises(UsageError, match="unknown pruner 'mediam'"):
        make_pruner("mediam", 10, 1.0)


def test_the_auto_pruner_is_rung_under_gp_and_tpe_halving_for_a_grid_of_nine_and_percentile_otherwise():
    from hpsearch.search.halving import HalvingPruner
    from hpsearch.search.rung_pruner import RungPruner

    assert isinstance(make_pruner("auto", 10, 1.0, "gp"), RungPruner)
    assert isinstance(make_pruner("auto", 10, 1.0, "tpe"), RungPruner)
    for sampler in ("grid", "random"):
        assert isinstance(make_pruner("auto", 10, 1.0, sampler), optuna.pruners.PercentilePruner)
    assert isinstance(make_pruner("auto", 10, 1.0, "grid", grid_points=9), HalvingPruner)
    assert isinstance(make_pruner("auto", 10, 1.0, "grid", grid_points=8), optuna.pruners.PercentilePruner)


def test_a_range_sweep_defaults_to_gp_with_the_rung_pruner_and_a_grid_to_halving_or_percentile():
    from hpsearch.search.resolved import resolve
    from hpsearch.search.spec import StudySpec

    ranged = resolve(StudySpec(models=("tfn_classifier",), sweep=("lr:1e-4..1e-2:log",), task_options={"dataset_size": 64}))
    assert (ranged.sampler, ranged.pruner) == ("gp", "rung")
    grid = resolve(StudySpec(models=("tfn_classifier",), sweep=("embed_dim:16,32",), task_options={"dataset_size": 64}))
    assert (grid.sampler, grid.pruner) == ("grid", "percentile")
    # From 9 points a grid halves; cut by --n-trials, or without a last.pt to resume from, it cannot.
    nine = ("embed_dim:8,16,32", "lr:1e-3,3e-3,1e-2")
    assert resolve(StudySpec(models=("tfn_classifier",), sweep=nine, task_options={"dataset_size": 64})).pruner == "halving"
    assert resolve(StudySpec(models=("tfn_classifier",), sweep=nine, n_trials=5, task_options={"dataset_size": 64})).pruner == "percentile"
    assert resolve(StudySpec(models=("tfn_classifier",), sweep=nine, train={"checkpoints": "none"},
                             task_options={"dataset_size": 64})).pruner == "percentile"
    chosen = resolve(StudySpec(models=("tfn_classifier",), sweep=("lr:1e-4..1e-2:log",), pruner="sha",
                               task_options={"dataset_size": 64}))
    assert chosen.pruner == "sha"  # an explicit choice wins


def run_curve(study: optuna.Study, values: list[float]) -> int | None:
    """Report ``values`` epoch by epoch; the epoch it was pruned at, or None if it completed."""
    trial = study.ask()
    for epoch, value in enumerate(values, start=1):
        trial.report(value, epoch)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return epoch
    study.tell(trial, values[-1])
    return None


@pytest.mark.parametrize("name", ["percentile", "median", "sha"])
def test_default_pruners_never_judge_the_warmup_epoch(name):
    study = optuna.create_study(pruner=make_pruner(name, 5, 1.0))
    for _ in range(3):
        assert run_curve(study, [1.0, 0.5, 0.3, 0.2, 0.1]) is None
    # Far behind at epoch 1 (a slow LR ramp), and as good as the rest afterwards: it goes on.
    assert run_curve(study, [9.0, 0.5, 0.3, 0.2, 0.1]) is None
    # Behind from epoch 2 on: pruned there, not at epoch 1.
    assert run_curve(study, [9.0, 5.0, 4.0, 3.0, 2.0]) == 2


def test_the_default_pruner_prunes_after_the_warmup_and_never_at_the_last_epoch(tmp_path, run_hpsearch):
    # Six LRs, two of which barely move in 3 epochs. With one warmup epoch the pruner judges
    # epoch 2 only (epoch 3 is the last): a slow trial that follows the two startup trials stops
    # at epoch 2 with the pruner's reason, and no trial is pruned at epoch 1 or 3.
    result = run_hpsearch(
        "--models", "tfn_classifier", "--param_sweep", "lr:3e-3,1e-2,5e-3,2e-3,1e-7,2e-7", "embed_dim:16",
        "--epochs", "3", *TINY_DATA,
    )
    assert result.returncode == 0, result.stderr
    trials = load_trials(tmp_path / "hpsearch.db", "tfn_classifier-synthetic_tokens")
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    assert [t["state"] for t in trials[:2]] == ["COMPLETE", "COMPLETE"]  # 2 startup trials
    slow_after_startup = [t for t in trials[2:] if t["params"]["lr"] < 1e-6]
    assert slow_after_startup and all(t in pruned for t in slow_after_startup)
    for trial in pruned:
        assert trial["attrs"]["epochs_run"] == 2 and trial["steps"] == [1, 2]
        reason = trial["attrs"]["prune_reason"]
        said = re.fullmatch(r"pruned by the percentile pruner at epoch 2: val_loss=\S+, its best so far \((\S+)\) is worse "
                            r"than (\S+), the bar of the best 25% of the (\d+) complete trials at epoch 2", reason)
        assert said is not None, reason
        assert float(said[1]) > float(said[2]) and int(said[3]) >= 2  # the loss above the best quarter's bar
    assert all(t["state"] == "COMPLETE" and t["attrs"]["epochs_run"] == 3 for t in trials if t not in pruned)


def test_a_trial_is_never_pruned_after_its_last_epoch(tmp_path, run_hpsearch):
    # One epoch, no warmup: the only epoch the pruner could judge is the last one, where the
    # work is already done; every trial completes, the bad ones included.
    result = run_hpsearch(
        "--models", "tfn_classifier", "--param_sweep", "lr:3e-3,1e-2,1e-7,2e-7,3e-7", "embed_dim:16",
        "--epochs", "1", "--warmup-epochs", "0", "--pruner", "median", *TINY_DATA,
    )
    assert result.returncode == 0, result.stderr
    trials = load_trials(tmp_path / "hpsearch.db", "tfn_classifier-synthetic_tokens")
    assert len(trials) == 5 and all(t["state"] == "COMPLETE" for t in trials)


def test_a_pruner_that_could_stop_no_trial_says_why():
    from hpsearch.search.samplers import idle_pruner_note

    # Three epochs, one of warmup: the rung falls at epoch 2, but needs 5 other trials there.
    assert idle_pruner_note("rung", 3, 1, 5) == (
        "--pruner rung stops a trial only by comparing it with 5 trials before it, so a study needs 6, and this one has 5 "
        "(a trial and its retries counted once): "
        "it could stop none")
    assert idle_pruner_note("rung", 3, 1, 6) is None
    assert idle_pruner_note("percentile", 3, 1, 2) is not None and idle_pruner_note("percentile", 3, 1, 3) is None
    # Two epochs, one of warmup: the only epoch judged would be the last, which is never pruned.
    assert idle_pruner_note("sha", 2, 1, 50) == (
        "--pruner sha judges no epoch before the last of 2 (none of the LR warmup): it could stop no trial")
    assert idle_pruner_note("none", 1, 0, 1) is None
