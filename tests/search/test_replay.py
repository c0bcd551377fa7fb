"""hpsearch replay: a finished study's curves replayed under a pruner decide as a live run with that pruner."""

from __future__ import annotations

import optuna
import pytest

from hpsearch.search import UsageError, replay_study
from hpsearch.search.replay import PrunerSummary, compare, replay, stored_curves
from hpsearch.search.replay_cli import choice
from hpsearch.search.spec import StudySpec
from hpsearch.storage.attributes import SPEC_ATTR
from tests.search.conftest import TINY

GRID = [
    "--models",
    "tfn_classifier",
    "--param_sweep",
    "embed_dim:16,32",
    "lr:1e-4,1e-3,1e-2",
    "--epochs",
    "4",
    "--dataset-size",
    "300",
    # Both runs must train alike: auto decides bf16 or fp32 from timings, which vary between runs.
    "--precision",
    "fp32",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same grid run to the end (--pruner none) and live under the percentile pruner, in one database each."""
    import subprocess

    from tests.search.conftest import hpsearch_command

    urls = {}
    for pruner in ("none", "percentile"):
        folder = tmp_path_factory.mktemp(pruner)
        done = subprocess.run(
            [*hpsearch_command(), *TINY, *GRID, "--pruner", pruner],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        urls[pruner] = f"sqlite:///{folder}/hpsearch.db"
    return urls


def _study(url: str) -> optuna.Study:
    return optuna.load_study(study_name="tfn_classifier-synthetic_tokens", storage=url)


def test_a_replay_prunes_as_the_live_run_did(runs):
    live = _study(runs["percentile"]).get_trials()
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in live)  # else the comparison says nothing
    stored = stored_curves(_study(runs["none"]))
    replayed = replay(stored, "percentile")
    assert replayed.epochs == sum(t.user_attrs["epochs_run"] for t in live)
    assert replayed.pruned == sum(t.state == optuna.trial.TrialState.PRUNED for t in live)
    complete = [t.value for t in live if t.state == optuna.trial.TrialState.COMPLETE]
    assert replayed.best == min(complete)
    # The pruner none keeps everything: every epoch, the best.
    (kept,) = compare(stored, ["none"], orders=3)
    assert kept.epoch_share == 1.0 and kept.best_median == kept.best_worst == stored.best


def test_replay_study_is_the_table_as_a_frame(runs, capfd):
    stored = stored_curves(_study(runs["none"]))
    optuna.logging.set_verbosity(optuna.logging.INFO)
    capfd.readouterr()
    frame = replay_study(_study(runs["none"]), ["percentile", " sha"], orders=20)
    # Not a line per replayed order's study in memory.
    assert "A new study created" not in "".join(capfd.readouterr())
    assert optuna.logging.get_verbosity() == optuna.logging.INFO  # restored
    assert list(frame.index) == ["percentile", "sha"]
    assert list(frame.columns) == ["epoch_share", "kept_best", "pruned", "best_median", "best_worst"]
    # One pruner by name alone, as pandas takes a label or a list of them.
    assert list(replay_study(_study(runs["none"]), "percentile", orders=2).index) == ["percentile"]
    for pruner, row in frame.iterrows():
        assert row.best_worst >= row.best_median >= stored.best  # val_loss: the worst is the largest
        # The stored order is the first replayed: what it found lies within the spread.
        assert row.best_worst >= replay(stored, pruner).best >= stored.best
        # Kept the best in every order exactly when even the worst search found it.
        assert (row.kept_best == 1.0) == (row.best_worst == stored.best)
    assert list(replay_study(_study(runs["none"]), orders=2).index)[:2] == ["percentile", "median"]  # the defaults


def test_a_study_with_early_stopping_says_what_to_drop():
    study = optuna.create_study()
    spec = StudySpec(models=("tfn_classifier",), sweep=("embed_dim:4",), train={"epochs": 4, "early_stopping_patience": 1})
    study.set_user_attr(SPEC_ATTR, spec.to_json())
    trial = study.ask()
    trial.report(1.0, 1)
    trial.report(1.5, 2)
    study.tell(trial, 1.0)
    with pytest.raises(UsageError, match="stopped early after 2 of 4 epochs .--early-stopping-patience 1.; .* without --early-stopping-patience"):
        stored_curves(study)


def test_replay_prints_each_pruner(runs, run_hpsearch, tmp_path):
    done = run_hpsearch(
        "replay",
        "--study",
        "tfn_classifier-synthetic_tokens",
        "--storage",
        runs["none"],
        "--pruners",
        "percentile,sha",
        "--orders",
        "20",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Study 'tfn_classifier-synthetic_tokens': 6 trials x 4 epochs = 24 epochs")
    assert "best found: median" in lines[1]
    assert any(line.startswith("percentile") for line in lines) and any(line.startswith("sha") for line in lines)
    # The last line reads the table, as choice() does from the frame's rows.
    frame = replay_study(_study(runs["none"]), ["percentile", "sha"], orders=20)
    rows = [PrunerSummary(pruner, **row) for pruner, row in frame.to_dict("index").items()]
    assert lines[-1] == choice(rows)


def test_the_choice_is_the_fewest_epochs_that_kept_the_best_in_every_order():
    def row(pruner: str, share: float, kept: float) -> PrunerSummary:
        return PrunerSummary(pruner, share, kept, 0.0, 1.0, 1.0)

    rows = [row("percentile", 0.5, 1.0), row("sha", 0.3, 0.9), row("halving", 0.4, 1.0), row("none", 1.0, 1.0)]
    assert choice(rows).startswith("Fewest epochs while keeping the best in every order: halving (40.0% of the epochs); "
                                   "pass --pruner halving (it runs a grid")
    assert "percentile (50.0%" in choice(rows[:2])
    # A study that sampled ranges cannot take halving: a new user's random-sampler study was told to pass it.
    assert choice(rows, grid=False) == (
        "Fewest epochs while keeping the best in every order: percentile (50.0% of the epochs); pass --pruner percentile "
        "(halving kept it too, but runs a grid (value lists), and this study sampled ranges).")
    assert choice([rows[2]], grid=False).startswith("No pruner replayed kept the best in every order that fits this study")
    # none always keeps the best: it is no choice of a pruner.
    assert choice([rows[1], rows[3]]).startswith("No pruner replayed kept the best in every order")


def test_replay_study_takes_a_study_name_and_its_storage(runs):
    by_name = replay_study("tfn_classifier-synthetic_tokens", "percentile", orders=3, storage=runs["none"])
    assert by_name.equals(replay_study(_study(runs["none"]), "percentile", orders=3))
    with pytest.raises(TypeError, match="replay_study takes an optuna.Study or a study's name, not int"):
        replay_study(5, "percentile")


@pytest.mark.parametrize(
    ("which", "args", "message"),
    [
        ("percentile", [], "did not run all 4 epochs"),
        ("none", ["--pruners", "percentile,lucky"], "unknown pruner 'lucky'"),
        ("none", ["--pruners", "percentil"], "unknown pruner 'percentil' (did you mean percentile?)"),
        ("none", ["--pruners", " , "], "--pruners names no pruner"),
        ("none", ["--pruners", "auto"], "auto means rung under the tpe and gp samplers, halving for a grid of 9 points or more"),
        ("none", ["--pruners", "pareto"], "pareto judges several objectives"),
        ("none", ["--orders", "0"], "--orders must be at least 1"),
    ],
)
def test_wrong_input_is_one_line_and_exit_2(runs, run_hpsearch, which, args, message):
    done = run_hpsearch("replay", "--study", "tfn_classifier-synthetic_tokens", "--storage", runs[which], *args)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == "", "nothing of the table before the refusal"


def test_an_unknown_study_is_one_line(runs, run_hpsearch):
    done = run_hpsearch("replay", "--study", "nope", "--storage", runs["none"])
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def test_stored_curves_tell_a_grid_from_a_sampled_study():
    from hpsearch.storage.attributes import SIMULATED_ATTR
    from hpsearch.trainers.lcbench import EPOCHS

    def study_of(enqueued: bool) -> optuna.Study:
        study = optuna.create_study()
        study.set_user_attr(SIMULATED_ATTR, True)  # 52 epochs, no warmup, no stored search to read
        for x in (0.1, 0.2):
            if enqueued:
                study.enqueue_trial({"x": x})
            trial = study.ask()
            trial.suggest_float("x", 0.0, 1.0)
            for epoch in range(1, EPOCHS + 1):
                trial.report(x / epoch, epoch)
            study.tell(trial, x / EPOCHS)
        return study

    assert stored_curves(study_of(enqueued=True)).grid
    assert not stored_curves(study_of(enqueued=False)).grid
