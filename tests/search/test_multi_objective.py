"""Multi-objective studies and FLOPs/parameter budgets, through the real CLI on a real SQLite file."""

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpsearch.storage.epoch_metrics import EpochMetricsTable
from hpsearch.storage.export import trials_frame
from tests.search.conftest import TINY


def test_val_loss_and_flops_make_a_pareto_study(tmp_path, run_hpsearch):
    result = run_hpsearch("--models", "tfn_classifier", "transformer_classifier", "--param_sweep", "embed_dim:8,16,32",
                          "--objectives", "val_loss,flops", "--study-name", "mo", *TINY)
    assert result.returncode == 0, result.stderr
    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    study = optuna.load_study(study_name="mo", storage=url)
    assert study.directions == [StudyDirection.MINIMIZE, StudyDirection.MINIMIZE]
    assert study.metric_names == ["val_loss", "flops"]
    trials = study.trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    for trial in trials:
        assert trial.values[1] == trial.user_attrs["flops.per_sample_forward"] > 0
        assert trial.intermediate_values == {}  # Optuna takes none from multi-objective trials
    front = {t.number for t in study.best_trials}
    frame = trials_frame(url, "mo")
    assert set(frame.loc[frame["pareto"], "number"]) == front
    table = run_hpsearch("trials", "--study", "mo", "--storage", url).stdout
    marked = {int(line.split()[0]) for line in table.splitlines()[1:] if line.rstrip().endswith("*")}
    assert marked == front
    from hpsearch.search import UsageError, load_model

    # No one best trial: load_model asks for a number, and names the front's.
    with pytest.raises(UsageError, match=rf"pick one of its best trials by number \(its Pareto front: {', '.join(map(str, sorted(front)))}\)$"):
        load_model(url, "mo")


def test_the_pareto_pruner_prunes_a_real_multi_objective_search_with_a_prune_reason(tmp_path, run_hpsearch):
    # One model, so equal FLOPs: a run whose learning rate cannot move the loss in 5 epochs, judged at
    # epoch 4 (the first rung) once 5 trials have completed, is dominated by one that could, even
    # with the best quarter's gain added to it.
    result = run_hpsearch("--models", "tfn_classifier", "--param_sweep", "lr:0.03,0.01,0.003,1e-6,1e-7,1e-8,2e-8,3e-8",
                          "--objectives", "val_loss,flops", "--pruner", "pareto", "--study-name", "mo",
                          "--epochs", "5", "--warmup-epochs", "0", "--dataset-size", "200", "--no-progress")
    assert result.returncode == 0, result.stderr
    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    trials = optuna.load_study(study_name="mo", storage=url).trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and len(pruned) <= 3  # 5 trials complete before any is judged
    rows = EpochMetricsTable(url).frame("mo")
    for trial in pruned:
        assert trial.params["lr"] < 1e-5
        reason = trial.user_attrs["prune_reason"]
        epoch = trial.user_attrs["epochs_run"]
        assert reason.startswith(f"pruned by the pareto pruner at epoch {epoch}: val_loss="), reason
        assert "dominates even its optimistic end" in reason and epoch == 4
        assert len(trial.user_attrs["pruned_values"]) == 2  # what the sampler learns from it
        assert trial.user_attrs["flops.per_sample_forward"] > 0
        assert rows.loc[rows["number"] == trial.number, "epoch"].tolist() == list(range(1, epoch + 1))
        assert f"Trial {trial.number} pruned by the pareto pruner at epoch {epoch}" in result.stdout
    assert all(t.state == TrialState.COMPLETE and len(t.values) == 2 for t in trials if t not in pruned)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pruner", "pareto"], "--pruner pareto ranks trials on several objectives, but this study has one (val_loss)"),
        (["--objectives", "val_loss,flops", "--pruner", "sha"], "--pruner sha judges one objective"),
        # Not halving's need of a grid first: the user dropped --sampler tpe only to be refused again.
        (["--objectives", "val_loss,flops", "--pruner", "halving", "--sampler", "tpe"], "--pruner halving judges one objective"),
        (["--objectives", "val_loss,f1"], "unknown objective 'f1'"),
        (["--objectives", "val_loss,val_loss"], "twice"),
        (["--objectives", "flops,params"], "needs a training metric"),
        (["--objectives", "val_loss:upward"], "must be minimize or maximize"),
        (["--objectives", "val_acc,flops", "--direction", "maximize"], "give each of --objectives its own, as NAME:maximize"),
        (["--max-flops", "0"], "--max-flops must be positive"),
        (["--max-params", "-5"], "--max-params must be positive"),
    ],
)
def test_bad_objectives_and_budgets(args, message, tmp_path, run_hpsearch):
    result = run_hpsearch("--models", "tfn_classifier", *TINY, *args)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_over_budget_configurations_are_pruned_in_under_a_second_without_training(tmp_path, run_hpsearch):
    result = run_hpsearch("--models", "tfn_classifier", "--param_sweep", "embed_dim:8,128",
                          "--max-params", "50000", "--study-name", "budget", *TINY)
    assert result.returncode == 0, result.stderr
    url = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    trials = {t.params["embed_dim"]: t for t in optuna.load_study(study_name="budget", storage=url).trials}
    small, big = trials[8], trials[128]
    assert small.state == TrialState.COMPLETE and small.user_attrs["constraints"][1] < 0
    assert big.state == TrialState.PRUNED
    assert big.user_attrs["prune_reason"].startswith("over budget: params ")
    assert big.user_attrs["constraints"][1] > 0 and big.user_attrs["epochs_run"] == 0
    assert big.intermediate_values == {} and "flops.total" not in big.user_attrs  # not one forward pass
    assert (big.datetime_complete - big.datetime_start).total_seconds() < 1.0
    rows = EpochMetricsTable(url).frame("budget")
    assert set(rows["number"]) == {small.number}


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_flops_budget_teaches_the_sampler_through_constraints(tmp_path, run_hpsearch, sampler):
    result = run_hpsearch("--models", "tfn_classifier", "--param_sweep", "embed_dim:4..64", "--sampler", sampler,
                          "--n-trials", "6", "--max-flops", "300000", "--pruner", "none", "--study-name", "s", *TINY)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr  # Optuna 5 deprecates constraints_func; trials set their constraints
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    for trial in study.trials:
        flops_excess = trial.user_attrs["constraints"][0]
        assert trial.constraints == {"0": flops_excess, "1": trial.user_attrs["constraints"][1]}  # what samplers read
        assert (flops_excess > 0) == (trial.state == TrialState.PRUNED)
        assert trial.user_attrs["budget"]["flops_per_sample"] == pytest.approx(flops_excess + 300000)
