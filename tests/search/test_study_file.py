"""Study files: ``hpsearch run FILE.toml`` with flags on top, and the files shipped in studies/."""

import os
from pathlib import Path

import optuna
import pytest

from hpsearch.search.api import search
from hpsearch.search.cli import main
from hpsearch.search.errors import UsageError
from hpsearch.search.plugins import load_plugins
from hpsearch.search.resolved import resolve
from hpsearch.search.spec import StudySpec
from hpsearch.search.study_claim import load_spec
from hpsearch.search.study_file import merge, read_study_file, sweep_items

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "studies"
ETTH1 = ROOT.parent / "shared" / "data" / "ETTh1.csv"
SEED_STUDY = "tfn_classifier-synthetic_tokens"

FULL = """
models = "tfn_classifier, transformer_classifier"
study_name = "full"
objectives = ["val_acc", "flops"]
plugins = ["plugins/extra.py", "some.module"]
output_dir = "runs"
n_trials = 3

[task]
name = "csv_timeseries"
data = "data/series.csv"
window = 12

[sweep]
embed_dim = [16, 32]
lr = "1e-4..1e-2:log"
compile = false

[train]
epochs = 2
lr = "auto"
warmup_epochs = 1
"""


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_key_maps_to_a_spec_field_with_paths_relative_to_the_file(tmp_path):
    values = read_study_file(write(tmp_path, FULL)).values
    assert values == {
        "models": ("tfn_classifier", "transformer_classifier"),
        "study_name": "full",
        "objectives": ("val_acc", "flops"),
        "plugins": (str(tmp_path / "plugins" / "extra.py"), "some.module"),
        "output_dir": str(tmp_path / "runs"),
        "n_trials": 3,
        "task": "csv_timeseries",
        "task_options": {"data": str(tmp_path / "data" / "series.csv"), "window": 12},
        "sweep": ("embed_dim:16,32", "lr:1e-4..1e-2:log", "compile:false"),
        "train": {"epochs": 2, "lr": "auto", "warmup_epochs": 1.0},  # an integer where a float is wanted is fine
    }
    StudySpec(**values)  # and they make a spec


def test_flags_override_the_file_one_setting_at_a_time():
    file = {"models": ("a",), "task": "csv_timeseries", "task_options": {"data": "x.csv", "window": 12},
            "train": {"epochs": 5, "batch_size": 32}, "plugins": ("p.py",), "sweep": ("embed_dim:8,16",)}
    merged = merge(file, {"train": {"epochs": 1}, "task_options": {"window": 4}, "plugins": ("q.py",), "sweep": ("embed_dim:8",)})
    assert merged["train"] == {"epochs": 1, "batch_size": 32}
    assert merged["task_options"] == {"data": "x.csv", "window": 4}
    assert merged["plugins"] == ("p.py", "q.py") and merged["sweep"] == ("embed_dim:8",)
    # Another task: the file's options were for the old one.
    other = merge(file, {"task": "multiplication", "task_options": {"digits": 3}})
    assert other["task"] == "multiplication" and other["task_options"] == {"digits": 3}


BAD_FILES = {
    "unknown key": ('models = ["tfn_classifier"]\nmodles = ["x"]\n', "modles: unknown key (did you mean models?)"),
    "unknown setting": ("[train]\nepoch = 1\n", "[train] epoch: unknown setting (did you mean epochs?)"),
    "wrong type": ('n_trials = "ten"\n', "n_trials must be an integer (got 'ten')"),
    "wrong list type": ("objectives = [1, 2]\n", "objectives must be a list of strings (got [1, 2])"),
    "wrong train type": ('[train]\nepochs = "5"\n', "[train] epochs must be an integer (got '5')"),
    "not toml": ("models = [\n", "not valid TOML"),
    "options at the top": ("task_options = {digits = 2}\n", "task_options: set it with [task]"),
    "bad sweep": ("sweep = 3\n", "sweep: write a list of items"),
    "bad choice": ('[train]\nprecision = "fp23"\n', "[train] precision: 'fp23' is not one of auto, fp32, bf16, fp16"),
    "task without a name": ("[task]\nn_examples = 600\n", '[task] needs name = "TASK"'),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_an_error_naming_the_file_and_the_key(case, tmp_path):
    text, message = BAD_FILES[case]
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        read_study_file(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_task_options_are_checked_against_the_task_and_named_by_their_source(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, 'models = ["simple_transformer"]\n[task]\nname = "multiplication"\nwindow = 3\n')
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"hpsearch: error: {path}: [task] window: task multiplication has no option window; "
        "its options: digits, dataset_size, data_seed\n"
    )
    assert main(["--models", "simple_transformer", "--task", "multiplication", "--horizon", "3"]) == 2
    assert "error: --horizon: task multiplication has no option horizon;" in capsys.readouterr().err
    assert main(["--models", "simple_transformer", "--task", "multiplication", "--digits", "0"]) == 2  # the task's schema
    assert "error: --digits: 0 is below the minimum 1" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]


def test_a_study_option_the_search_refuses_is_named_as_the_file_key_a_flag_or_a_keyword(tmp_path, monkeypatch, capsys):
    """A file's n_trials = 0 was refused as "--n-trials", a flag the user never typed."""
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, 'models = ["tfn_classifier"]\nn_trials = 0\nsampler = "gird"\n')
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err == f"hpsearch: error: {path}: n_trials must be at least 1 (got 0)\n"
    assert main(["run", str(path), "--n-trials", "-1"]) == 2  # the flag over the file: named as the flag
    assert capsys.readouterr().err == "hpsearch: error: --n-trials must be at least 1 (got -1)\n"
    assert main(["run", str(path), "--n-trials", "2"]) == 2
    assert capsys.readouterr().err.startswith(f"hpsearch: error: {path}: sampler: unknown sampler 'gird' (did you mean grid?);")
    with pytest.raises(UsageError, match=r"^n_trials must be at least 1 \(got 0\)$"):
        search("tfn_classifier", "synthetic_tokens", {"embed_dim": [8]}, n_trials=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]

def test_create_takes_a_study_file_with_flags_on_top(tmp_path, monkeypatch, capsys):
    """Workers had no way to run a study file's search: create asked for --models."""
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, 'models = ["tfn_classifier"]\nstudy_name = "filed"\nn_trials = 3\nsampler = "tpe"\n'
                           '[sweep]\nembed_dim = [16, 32]\n[train]\nepochs = 2\nbatch_size = 16\n')
    assert main(["create", str(path), "--epochs", "1"]) == 0
    assert "Study 'filed' in sqlite:///" in capsys.readouterr().out
    study = optuna.load_study(study_name="filed", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    spec = load_spec(study)
    assert spec.sweep == ("embed_dim:16,32",) and spec.sampler == "tpe" and spec.n_trials == 3
    assert spec.train["epochs"] == 1 and spec.train["batch_size"] == 16  # the flag over the file, the rest kept
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 3
    # Without a file, the models are the flags' to name; a file's errors name the file, as for run.
    assert main(["create"]) == 2
    assert capsys.readouterr().err == "hpsearch: error: name the models with --models, or give a study file (hpsearch create FILE.toml)\n"
    bad = write(tmp_path, 'models = ["tfn_classifier"]\n[task]\nname = "synthetic_tokens"\nseq_lenn = 8\n', "bad.toml")
    assert main(["create", str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"hpsearch: error: {bad}: [task] seq_lenn: task synthetic_tokens has no "
                                              "option seq_lenn (did you mean seq_len?)")


def test_create_offers_no_flag_for_the_processes_it_does_not_start(tmp_path, monkeypatch, capsys):
    """create --help listed --workers, --threads and --devices, which create then refused."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["create", "--help"])
    shown = capsys.readouterr().out
    assert "--epochs" in shown and not any(flag in shown for flag in ("--workers", "--threads", "--devices"))
    assert main(["create", "--models", "tfn_classifier", "--threads=2"]) == 2
    assert capsys.readouterr().err == (
        "hpsearch: error: unrecognized arguments: --threads=2 (hpsearch create runs nothing; start workers with hpsearch "
        "worker (--device cuda:N picks a GPU, --threads N its torch threads)) (see hpsearch create --help)\n")
    assert list(tmp_path.iterdir()) == []

def test_a_sweep_error_names_the_file_that_gave_the_sweep(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, 'models = ["tfn_classifier"]\n[sweep]\nembed_dimm = [16, 32]\n')
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err.startswith(
        f"hpsearch: error: {path}: sweep: unknown hyperparameter 'embed_dimm' (did you mean embed_dim?) for tfn_classifier")
    # A sweep given on the command line replaces the file's, and its error names no file.
    assert main(["run", str(path), "--param-sweep", "embed_dimm:16"]) == 2
    assert capsys.readouterr().err.startswith("hpsearch: error: unknown hyperparameter 'embed_dimm'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]


def test_a_csv_without_the_target_column_is_one_line_naming_the_file(tmp_path, run_hpsearch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "load.csv").write_text("date,load\n" + "".join(f"2024-01-01 {h:02d}:00,{h}\n" for h in range(24)))
    path = write(tmp_path, '[task]\nname = "csv_timeseries"\ndata = "data/load.csv"\n', "forecast.toml")
    result = run_hpsearch("run", "../forecast.toml", "--models", "tfn_regressor", "--no-progress", cwd=tmp_path / "data")
    assert result.returncode == 2
    csv = tmp_path / "data" / "load.csv"
    assert result.stderr == f"hpsearch: error: {csv}: no column 'OT' to forecast; columns: date, load\n"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["load.csv"] and path.exists()


def shipped(name: str) -> Path:
    """A study file from studies/; the ETTh1 one needs the data (skipped without it, unless $CI)."""
    if name == "etth1_forecast" and not ETTH1.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {ETTH1} is missing")
        pytest.skip(f"{ETTH1} is not there")
    return STUDIES / f"{name}.toml"


SHIPPED = ["etth1_forecast", "plugin_example", "tfn_sweep", "tfn_vs_baselines"]


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_study_file_resolves_as_written(name):
    study = read_study_file(shipped(name))
    load_plugins(study.values.get("plugins", ()))
    resolved = resolve(StudySpec(**study.values))
    assert resolved.train_config.epochs == 5
    assert len(resolved.sweep.params) >= 2


# (extra flags, trials expected, checks on the stored study)
RUNS = {
    "tfn_sweep": (["--dataset-size", "100"], 4),
    "tfn_vs_baselines": (["--dataset-size", "100", "--param-sweep", "embed_dim:16", "num_layers:1"], 3),
    "etth1_forecast": (["--n-trials", "1", "--window", "24", "--horizon", "6", "--stride", "48"], 1),
    "plugin_example": (["--dataset-size", "100"], 3),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_each_shipped_study_file_runs_with_small_overrides(name, tmp_path, run_hpsearch):
    path = shipped(name)
    flags, expected = RUNS[name]
    result = run_hpsearch("run", str(path), "--epochs", "1", "--no-progress", *flags)
    assert result.returncode == 0, result.stderr

    file = read_study_file(path).values
    study = optuna.load_study(study_name=file.get("study_name", SEED_STUDY), storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    trials = study.trials
    assert len(trials) == expected and all(t.state.name == "COMPLETE" for t in trials)
    assert all(t.user_attrs["epochs_run"] == 1 for t in trials)  # --epochs 1 beat the file's 5
    if len(file["models"]) > 1:
        assert {t.params["model"] for t in trials} == set(file["models"])
    assert len(study.directions) == len(file.get("objectives", ["metric"]))

    spec = load_spec(study)
    assert spec.train["batch_size"] == 64 and spec.train["epochs"] == 1  # the file's, and the flag's
    assert spec.task == file.get("task", "synthetic_tokens") and spec.objectives == file.get("objectives", ())
    assert spec.plugins == file.get("plugins", ())  # stored for workers, as absolute paths
    if name == "tfn_sweep":  # the seed grid, from the file's [sweep] table
        assert sorted((t.params["embed_dim"], t.params["kernel_type"]) for t in trials) == [
            (64, "compact"), (64, "rbf"), (128, "compact"), (128, "rbf")
        ]
    if name == "etth1_forecast":  # the file's data path (relative to the file) with the flags' window
        assert spec.task_options == {**file["task_options"], "window": 24, "horizon": 6, "stride": 48}
        assert Path(spec.task_options["data"]).resolve() == ETTH1.resolve()


def test_a_missing_plugin_file_names_the_study_file_that_named_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, 'models = ["m"]\nplugins = ["my_digit.py"]\n')
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err == f"hpsearch: error: {path}: plugins: plugin {tmp_path / 'my_digit.py'}: no such file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]


def test_a_pair_of_numbers_in_a_tuple_is_refused_as_neither_two_values_nor_a_range():
    # In Python, (16, 64) looks like a range; it would have run as a two-point grid.
    with pytest.raises(UsageError, match=r'sweep.hidden: \(16, 64\) reads as two values, not a range: write \[16, 64\] '
                                         r'for the two values, or "16..64" for the range'):
        sweep_items({"hidden": (16, 64)}, "sweep")
    assert sweep_items({"hidden": [16, 64], "kernel": ("rbf", "compact"), "lr": "1e-4..1e-2:log"}, "sweep") == (
        "hidden:16,64", "kernel:rbf,compact", "lr:1e-4..1e-2:log")
