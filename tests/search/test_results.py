"""The results table's layout: exactly what pandas' ``to_string(index=False)`` printed before."""

import random

import pandas as pd
import pytest

from hpsearch.search.results import aligned_table


@pytest.mark.parametrize("seed", range(20))
def test_aligned_text_is_pandas_to_string_without_the_index(seed):
    rng = random.Random(seed)
    cells = ["-", "", "COMPLETE", "PRUNED", "0.001", "1.39902", "tfn_classifier", "12345678", "*", "3.2", "compact"]
    columns = [rng.choice(["trial", "state", "lr", "embed_dim", "val_loss", "epochs", "seconds", "pareto", "x"])
               + str(i) * rng.randint(0, 1) for i in range(rng.randint(1, 6))]
    columns = list(dict.fromkeys(columns))
    rows = [[rng.choice(cells) for _ in columns] for _ in range(rng.randint(1, 8))]
    assert aligned_table(columns, rows) == pd.DataFrame(rows, columns=columns).to_string(index=False)


def test_a_simulated_trial_shows_its_simulated_seconds_not_the_wall_time():
    import optuna

    from hpsearch.search.results import format_results_table

    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"simulated.seconds": 1234.5, "epochs_run": 52}))
    study.add_trial(optuna.trial.create_trial(value=0.7))
    lines = format_results_table(study).splitlines()
    assert lines[1].split()[-1] == "1234.5"  # the best trial first
    assert lines[2].split()[-1] == "0.0"  # a real trial's wall time (created complete: none elapsed)


def test_pruned_trials_follow_the_complete_ones_furthest_first_then_best():
    import optuna
    from optuna.trial import TrialState, create_trial

    from hpsearch.search.results import format_results_table

    study = optuna.create_study()  # minimize
    study.add_trial(create_trial(state=TrialState.FAIL))  # trial 0
    for epochs, value in ((2, 0.9), (5, 1.2), (5, 1.0)):  # trials 1, 2, 3
        # As Optuna stores a pruned trial of one objective: its last report is its value.
        study.add_trial(create_trial(state=TrialState.PRUNED, value=value, intermediate_values={epochs: value},
                                     user_attrs={"epochs_run": epochs}))
    study.add_trial(create_trial(value=1.5, user_attrs={"epochs_run": 8}))  # trial 4
    order = [line.split()[0] for line in format_results_table(study).splitlines()[1:]]
    assert order == ["4", "3", "2", "1", "0"]


def test_a_queued_grid_point_shows_its_parameters_before_a_worker_takes_it():
    # A new user's interrupted grid listed its five waiting points with "-" for every parameter.
    import optuna

    from hpsearch.search.results import format_results_table

    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=0.5, params={"hidden": 16, "optimizer": "adamw"}, distributions={
        "hidden": optuna.distributions.IntDistribution(16, 64), "optimizer": optuna.distributions.CategoricalDistribution(["adamw", "sgd"])}))
    study.enqueue_trial({"hidden": 64, "optimizer": "sgd"})
    lines = format_results_table(study).splitlines()
    assert lines[0].split()[:4] == ["trial", "state", "hidden", "optimizer"]
    assert lines[2].split()[:4] == ["1", "WAITING", "64", "sgd"]


def test_a_pruned_trial_of_several_objectives_shows_its_pruned_values_marked_and_ranked_by_them():
    import optuna
    from optuna.trial import TrialState, create_trial

    from hpsearch.search.results import STAND_IN_NOTE, format_results_table

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(create_trial(values=[0.9, 50.0], user_attrs={"epochs_run": 52}))  # trial 0
    for accuracy in (0.4, 0.7):  # trials 1, 2: Optuna stores no values for a pruned trial of several objectives
        study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"epochs_run": 4, "pruned_values": [accuracy, 60.0]}))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"epochs_run": 4}))  # trial 3: stopped by another rule
    lines = format_results_table(study).splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert [line.split()[0] for line in lines[1:-1]] == ["0", "2", "1", "3"]  # the better stand-in first
    assert rows["2"][2:4] == ["(0.7)", "(60)"] and rows["3"][2:4] == ["-", "-"]
    assert rows["0"][2:4] == ["0.9", "50"]
    assert lines[-1] == STAND_IN_NOTE
    complete_only = optuna.create_study(directions=["maximize", "minimize"])
    complete_only.add_trial(study.trials[0])
    assert STAND_IN_NOTE not in format_results_table(complete_only)


@pytest.mark.parametrize(
    ("url", "browse"),
    [
        ("sqlite:///h.db", "Browse it:  optuna-dashboard sqlite:///h.db"),
        ("postgresql://u:secret@db/s", "Browse it:  optuna-dashboard postgresql://u:***@db/s"),
        ("grpc://127.0.0.1:13000", "Browse it:  optuna-dashboard DATABASE_URL, or hpsearch dashboard --storage DATABASE_URL"),
    ],
)
def test_a_search_ends_naming_its_strategy_and_how_to_browse_it(url, browse):
    # The dashboard reads the database; through the proxy the study's URL is not one it can open.
    import optuna

    from hpsearch.search.orchestrator import SearchOutcome
    from hpsearch.search.resolved import resolve
    from hpsearch.search.results import run_summary, strategy_line
    from hpsearch.search.spec import StudySpec

    resolved = resolve(StudySpec(models=("tfn_classifier",), sweep=("lr:1e-4..1e-2:log",), task_options={"dataset_size": 64}))
    lines = run_summary(SearchOutcome(optuna.create_study(study_name="s"), url, 0, 0), resolved)
    assert any(line.startswith(browse) for line in lines), lines
    assert "Strategy:   --sampler gp --pruner rung (--pruner auto); prune_reason says why a trial stopped" in lines
    assert "secret" not in "\n".join(lines)
    unpruned = resolve(StudySpec(models=("tfn_classifier",), sweep=("lr:1e-4..1e-2:log",), pruner="none",
                                 task_options={"dataset_size": 64}))
    assert strategy_line(unpruned) == ("Strategy:   --sampler gp --pruner none; prune_reason says why a trial that diverged "
                                       "or went over a budget stopped")


def test_the_idle_pruner_note_counts_a_failed_trial_and_its_retry_as_one():
    """A kill -9'd trial and its retry made "this one has 5" of four configurations, or hid the note."""
    import optuna

    from hpsearch.search.resolved import resolve
    from hpsearch.search.results import idle_pruning
    from hpsearch.search.spec import StudySpec

    resolved = resolve(StudySpec(models=("tfn_classifier",), sweep=("embed_dim:8..16",), pruner="rung", train={"epochs": 4}))
    study = optuna.create_study()
    for number in range(6):
        trial = study.ask()
        trial.suggest_int("embed_dim", 8, 16)
        if number == 0:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            if number == 1:
                trial.set_user_attr("retry_of", [0])
            study.tell(trial, 1.0)
    assert idle_pruning(study, resolved).endswith("so a study needs 6, and this one has 5 (a trial and its retries counted once): it could stop none")
