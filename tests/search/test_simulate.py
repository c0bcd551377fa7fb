"""Simulated searches on the lcbench surrogate: the same sampler and pruner decisions as a bare Optuna
loop, a normal study in a real database, the budget kept, asynchronous workers, and wrong input."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy as sa

from hpsearch.search import replay_study, simulate_search
from hpsearch.search.samplers import make_pruner, make_sampler
from hpsearch.search.simulate import CurveSimulation, load_benchmark, optuna_loop
from hpsearch.storage.recorder import MemoryRecorder


@pytest.fixture(scope="module")
def surrogate(yahpo_data):
    return load_benchmark("lcbench", "167168", yahpo_data)


@pytest.mark.parametrize(("sampler", "pruner"), [("tpe", "sha"), ("random", "percentile"), ("tpe", "none")])
def test_a_simulation_decides_as_a_bare_optuna_loop_with_the_same_sampler_and_pruner(surrogate, sampler, pruner):
    simulated = CurveSimulation(surrogate, sampler, pruner, seed=3, budget=600).run()
    bare = optuna_loop(surrogate, make_sampler(sampler, 3), make_pruner(pruner, 52, 0), budget=600)
    assert [(t.number, t.epochs, t.value) for t in simulated.finished] == [(t.number, t.epochs, t.value) for t in bare]
    assert simulated.spent == 600 == sum(t.epochs for t in simulated.finished)
    if pruner != "none":
        assert any(t.epochs < 52 for t in simulated.finished[:-1])  # the pruner did prune


def test_the_in_memory_record_holds_every_epoch_and_the_closing_attributes(surrogate):
    result = CurveSimulation(surrogate, "random", "percentile", seed=0, budget=400).run()
    assert isinstance(result.recorder, MemoryRecorder)
    for trial in result.study.get_trials(deepcopy=False):
        rows = result.recorder.rows[trial.number]
        assert [row["epoch"] for row in rows] == list(range(1, trial.user_attrs["epochs_run"] + 1))
        assert list(trial.intermediate_values) == [row["epoch"] for row in rows]
        assert trial.intermediate_values[len(rows)] == rows[-1]["val_accuracy"]
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert trial.user_attrs["prune_reason"].startswith(
                ("pruned by the percentile pruner at epoch", "stopped: ")
            )
        else:
            assert trial.value == rows[-1]["val_accuracy"] and len(rows) == 52


def test_four_workers_spend_the_same_budget_in_less_simulated_time(surrogate):
    one = CurveSimulation(surrogate, "random", "none", seed=1, workers=1, budget=1040).run()
    four = CurveSimulation(surrogate, "random", "none", seed=1, workers=4, budget=1040).run()
    assert one.spent == four.spent == 1040
    assert four.clock < one.clock / 3
    # Four trials run side by side: the last four end together, cut by the budget.
    assert sum(t.value is None for t in four.finished) <= 4


def test_simulate_stores_a_normal_study(run_hpsearch, yahpo_data, sqlite_url):
    done = run_hpsearch(
        "simulate",
        "--data",
        str(yahpo_data),
        "--instance",
        "189906",
        "--pruner",
        "median",
        "--budget",
        "300",
        "--storage",
        sqlite_url,
        "--study-name",
        "sim",
    )
    assert done.returncode == 0, done.stderr
    assert "Best val_accuracy" in done.stdout and "optuna-dashboard" in done.stdout
    study = optuna.load_study(study_name="sim", storage=sqlite_url)
    trials = study.get_trials()
    assert sum(t.user_attrs["epochs_run"] for t in trials) == 300
    assert any(
        t.state == optuna.trial.TrialState.PRUNED and "median pruner" in t.user_attrs["prune_reason"] for t in trials
    )
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT COUNT(*) FROM hpsearch_epoch_metrics")).scalar()
    engine.dispose()
    assert rows == 300
    listed = run_hpsearch("trials", "--study", "sim", "--storage", sqlite_url)
    assert listed.returncode == 0 and "val_accuracy" in listed.stdout
    # Its pruned trials keep it from a replay; the advice is a simulation's, not a search's "--pruner none".
    replayed = run_hpsearch("replay", "--study", "sim", "--storage", sqlite_url)
    assert replayed.returncode == 2
    assert "simulate it with --pruner none and --n-trials, not --budget" in replayed.stderr
    assert "a grid prunes too" not in replayed.stderr
    audited = run_hpsearch("audit", "--study", "sim", "--storage", sqlite_url)  # no checkpoints to find missing
    assert audited.returncode == 2 and "was simulated (hpsearch simulate): it trained nothing" in audited.stderr


def test_simulate_search_in_python_is_the_commands_run(run_hpsearch, yahpo_data, sqlite_url):
    result = simulate_search("189906", yahpo_data, "tpe", "sha", budget=300, workers=2, storage=sqlite_url)
    assert result.study.study_name == "sim-lcbench-189906-tpe-sha-s0-w2"  # the workers in the default name
    assert result.spent == 300
    complete = [t for t in result.finished if t.value is not None]
    low, high = load_benchmark("lcbench", "189906", yahpo_data).target_range()
    assert result.regret() == pytest.approx((high - max(t.value for t in complete)) / (high - low))
    # By a quarter of the epochs, the best is that of the trials that had ended by then.
    early = [t.value for t in complete if t.spent <= 75]
    assert result.best(75) == (max(early) if early else None)
    done = run_hpsearch("simulate", "--data", str(yahpo_data), "--instance", "189906", "--sampler", "tpe", "--pruner",
                        "sha", "--budget", "300", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert f"normalized regret {result.regret():.4f}" in done.stdout
    r75, r150 = (f"{r:.4f}" if r is not None else "(no trial had ended)" for r in (result.regret(75), result.regret(150)))
    assert f"Regret with 25% of the budget {r75}, 50% of the budget {r150} (" in done.stdout, done.stdout

    # Its trials all ran to the end (random, no pruner): replay takes the simulated study.
    full = simulate_search("189906", yahpo_data, "random", "none", n_trials=6, storage=sqlite_url)
    replayed = replay_study(full.study, ["none", "sha"], orders=3)
    assert replayed.loc["none", "epoch_share"] == 1.0 and replayed.loc["none", "best_median"] == full.best()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--benchmark", "nasbench"], "unknown benchmark 'nasbench'"),
        (["--instance", "42"], "unknown lcbench instance '42'"),
        (["--data", "/no/such/folder"], "/no/such/folder does not exist"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--sampler", "grid"], "--sampler grid takes value lists, and lcbench's space is continuous; choose from"),
        (["--sampler", "tpee"], "unknown sampler 'tpee' (did you mean tpe?)"),
        # Not "unknown": they are pruners of a real search, which a simulation cannot run.
        (["--pruner", "halving"], "--pruner halving runs a grid's points in rounds, and a simulation samples"),
        (["--pruner", "pareto"], "--pruner pareto judges several objectives, and a simulation maximizes val_accuracy alone"),
        (["--pruner", "precentile"], "unknown pruner 'precentile' (did you mean percentile?)"),
    ],
)
def test_wrong_input_is_one_line_and_exit_2(run_hpsearch, yahpo_data, args, message):
    done = run_hpsearch("simulate", "--data", str(yahpo_data), *args)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""


def test_a_converged_simulation_is_the_full_run_cut_where_the_rule_first_holds(surrogate):
    from hpsearch.search.convergence import ConvergenceStop

    stop = ConvergenceStop(5)
    full = CurveSimulation(surrogate, "random", "none", seed=1, n_trials=60, budget=None).run().finished
    stopped = CurveSimulation(surrogate, "random", "none", seed=1, n_trials=60, budget=None, stop=stop).run()
    cut = stopped.finished
    assert stopped.converged and 5 < len(cut) < len(full) and full[: len(cut)] == cut
    values = [t.value for t in cut]
    assert stop.converged(values, "maximize") and not stop.converged(values[:-1], "maximize")
    # Stored as a search stores it (a new user's simulated study had no hpsearch.converged).
    best = stopped.study.best_trial
    assert stopped.study.user_attrs["hpsearch.converged"] == {
        "complete_trials": len(values), "patience": 5, "best_trial": best.number, "best_value": best.value}


def test_a_simulation_counts_its_epochs_on_a_progress_bar_and_names_its_study_by_the_pruner_that_ran(
    yahpo_data, sqlite_url, capsys
):
    # A new user's GP run with --pruner percentile printed nothing for 19 minutes; its study was named ...-auto-s0.
    result = simulate_search("189906", yahpo_data, "tpe", budget=120, storage=sqlite_url, progress=True)
    assert result.study.study_name == "sim-lcbench-189906-tpe-rung-s0"
    bar = capsys.readouterr().err
    assert "sim-lcbench-189906-tpe-rung-s0" in bar and "120/120" in bar and "epoch" in bar


def test_a_wrong_data_folder_from_the_environment_names_the_variable(run_hpsearch):
    done = run_hpsearch("simulate", env={"HPSEARCH_YAHPO_DATA": "/no/such/folder"})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "/no/such/folder does not exist" in done.stderr and "(the folder is $HPSEARCH_YAHPO_DATA's)" in done.stderr
