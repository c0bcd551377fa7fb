"""Start-up: which big packages each command imports, in a real fresh process (speed itself: benchmarks/startup.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import optuna
import pytest

from hpsearch.search import cli, tables_cli
from hpsearch.storage import StudyDatabase, export

# Runs the CLI in this fresh interpreter, then prints the exit code and the big packages loaded.
PROBE = """
import json, sys
from hpsearch.search.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
big = ("torch", "optuna", "pandas", "sqlalchemy", "plotly", "optuna_dashboard", "fvcore", "torchmetrics", "sklearn")
print(json.dumps({"code": code, "loaded": [p for p in big if p in sys.modules]}), file=sys.stderr)
"""

SUBCOMMANDS = sorted(cli.SUBCOMMANDS)  # every command, a new one included


def probe(*argv: str, cwd=None) -> tuple[int, set[str], str]:
    """The exit code, the big packages loaded and stdout of ``hpsearch ARGV`` in a fresh process."""
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=cwd, timeout=300)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], set(report["loaded"]), done.stdout


@pytest.mark.parametrize("command", ["", *SUBCOMMANDS])
def test_help_imports_no_torch(command):
    code, loaded, out = probe(*([command] if command else []), "--help")

    assert code == 0 and out.startswith("usage: hpsearch")
    assert not loaded & {"torch", "plotly", "optuna_dashboard", "fvcore", "torchmetrics", "sklearn"}
    assert not loaded & {"optuna", "pandas", "sqlalchemy"}


@pytest.fixture
def small_study(sqlite_url: str, study_name: str) -> str:
    study = optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(sqlite_url).storage)
    study.set_user_attr("hpsearch.metric", "val_loss")
    study.enqueue_trial({"lr": 0.01})
    study.optimize(lambda trial: trial.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=1)
    return sqlite_url


def test_studies_trials_and_export_import_no_torch(small_study, study_name, tmp_path):
    code, loaded, out = probe("studies", "--storage", small_study)
    assert code == 0 and study_name in out and not loaded & {"torch", "pandas"}

    code, loaded, out = probe("trials", "--study", study_name, "--storage", small_study)
    assert code == 0 and "0.01" in out and not loaded & {"torch", "pandas"}  # the table is aligned without pandas

    code, loaded, out = probe("export", "--study", study_name, "--storage", small_study, "--out", str(tmp_path / "out"))
    assert code == 0 and (tmp_path / "out" / "trials.csv").exists() and "torch" not in loaded


def test_listing_the_zoo_and_mistakes_a_built_in_task_does_not_decide_import_no_torch(tmp_path):
    code, loaded, out = probe("models")
    assert code == 0 and "tfn_classifier" in out and "latent_transformer" in out and "torch" not in loaded

    for wrong in (["--models", "tfn_classifierr"], ["--models", "tfn_classifier", "--max-flops", "0"],
                  ["--models", "tfn_classifier", "--param_sweep", "embed_dimm:64"]):
        code, loaded, _ = probe(*wrong, "--storage", f"sqlite:///{tmp_path / 'never.db'}")
        assert code == 2 and "torch" not in loaded and not (tmp_path / "never.db").exists()


def test_a_plugins_task_flags_are_in_help_without_torch_elsewhere(tmp_path):
    plugin = tmp_path / "plugin_task.py"
    plugin.write_text(
        "from hpsearch.models import HyperParam\n"
        "from hpsearch.trainers import register_task\n"
        "def build(rows):\n    raise NotImplementedError\n"
        "register_task('plugin_rows', build, [HyperParam('rows', 'int', 3, 'rows of the plugin task')])\n"
    )

    code, _, out = probe("--plugin", str(plugin), "--help", cwd=tmp_path)

    assert code == 0 and "--rows INT" in out and "[plugin_rows: 3]" in out
    code, _, out = probe("create", "--plugin", str(plugin), "--help", cwd=tmp_path)  # create takes them too
    assert code == 0 and "--rows INT" in out
    code, loaded, out = probe("--help", cwd=tmp_path)
    assert code == 0 and "--rows" not in out and "torch" not in loaded


def test_a_built_in_model_name_is_taken_before_the_zoo_is_listed():
    # The zoo loads when the registry is first used, so a registration that comes first still collides.
    script = (
        "import sys\n"
        "from hpsearch.models import register_model\n"
        "assert 'torch' not in sys.modules\n"
        "try:\n    register_model('tfn_classifier', lambda data: None, ())\n"
        "except ValueError as error:\n    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    assert "a model named 'tfn_classifier' is already registered (by hpsearch.models.tfn." in done.stdout


def test_a_command_that_uses_optuna_runs_it_quiet(small_study):
    script = (
        "import sys, warnings\n"
        "from hpsearch.search.cli import main\n"
        "assert 'optuna' not in sys.modules\n"
        f"assert main(['studies', '--storage', {small_study!r}]) == 0\n"
        "import optuna\n"
        "print(optuna.logging.get_verbosity() == optuna.logging.ERROR, any(\n"
        "    f[2] is optuna.exceptions.ExperimentalWarning and f[0] == 'ignore' for f in warnings.filters))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    assert done.stdout.split()[-2:] == ["True", "True"]


def test_the_export_formats_offered_are_the_storage_layers():
    assert tables_cli.EXPORT_FORMATS == export.EXPORT_FORMATS


def test_main_in_this_process_quiets_optuna_already_imported(small_study, capsys):
    from hpsearch.search.cli import main

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        with warnings.catch_warnings():
            assert main(["studies", "--storage", small_study]) == 0
        assert optuna.logging.get_verbosity() == optuna.logging.ERROR
    finally:
        optuna.logging.set_verbosity(before)


def test_a_worker_trains_without_pandas_or_torchmetrics(run_hpsearch, sqlite_url, study_name, tmp_path):
    """Each costs a worker process half a second or more before its first step, and it needs neither."""
    created = run_hpsearch("create", "--study", study_name, "--storage", sqlite_url, "--models", "tfn_classifier",
                           "--epochs", "1", "--dataset-size", "20", "--seq-len", "4", "--output-dir", str(tmp_path))
    assert created.returncode == 0, created.stderr
    code, loaded, out = probe("worker", "--study", study_name, "--storage", sqlite_url, "--no-progress", cwd=tmp_path)
    assert code == 0 and "1 trial run, 0 failed" in out
    assert "torch" in loaded and not loaded & {"pandas", "torchmetrics", "sklearn", "plotly", "optuna_dashboard"}


def test_the_trial_path_imports_no_boto3_without_an_artifact_store():
    # optuna.artifacts imports boto3 whenever it is installed: a tenth of a second of each worker's start.
    code = (
        "import sys, hpsearch.search.worker_cli, hpsearch.search.orchestrator, hpsearch.search.objective; "
        "print(sorted(m for m in ('boto3', 'botocore', 'optuna.artifacts') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "[]", f"a worker without --artifacts imported {done.stdout.strip()}"
