"""The Python API: search() and load_model() from a script or a notebook, with the user's own objects."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from hpsearch.models import DataSpec, HyperParam, get_model, register_model
from hpsearch.search import StudySpec, UsageError, load_model, load_task, resolve, search
from hpsearch.storage import StorageError
from hpsearch.trainers import Task
from hpsearch.trainers import trainer as trainer_module
from hpsearch.trainers.flops import FlopsMeter
from tests.search.conftest import sigint_model_plugin


def blobs_task(name: str = "api_blobs") -> Task:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (240,), generator=g)
    x = torch.randn(240, 6, generator=g) + 1.5 * F.one_hot(y, 6)[:, :6].float()
    return Task(
        name=name,
        train=(x[:180], y[:180]),
        val=(x[180:], y[180:]),
        loss=F.cross_entropy,
        metrics={"val_acc": lambda: MulticlassAccuracy(num_classes=3, average="micro")},
        data=DataSpec(kind="tabular", num_features=6, num_outputs=3),
    )


def build_api_mlp(data: DataSpec, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(data.num_features, hidden), nn.ReLU(), nn.Linear(hidden, data.num_outputs))


@pytest.fixture(scope="module", autouse=True)
def api_mlp():
    """Registered when these tests run, not when pytest collects them: the zoo's tests list every model."""
    spec = register_model("api_mlp", build_api_mlp, [HyperParam("hidden", "int", 8, "hidden units", low=1)], input_kind="tabular")
    yield spec
    from hpsearch.models import registry

    registry._MODELS.remove("api_mlp")


@pytest.fixture
def where(tmp_path, sqlite_url):
    return {"storage": sqlite_url, "output_dir": tmp_path}


def test_search_runs_quietly_on_objects_and_returns_the_study(where, capsys, api_mlp) -> None:
    study = search(api_mlp, blobs_task(), {"hidden": [4, 16]}, epochs=2, **where)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert {t.params["hidden"] for t in study.trials} == {4, 16}
    assert study.trials[0].user_attrs["flops.forward_passes"] > 0
    assert all(0 < t.user_attrs["flops.mfu"] <= 1 for t in study.trials)
    out, err = capsys.readouterr()
    assert out == "" and "Epoch" not in err and "Trial" not in err and "ExperimentalWarning" not in err


def test_trials_of_one_model_and_hyperparameters_trace_its_flops_once(where, monkeypatch) -> None:
    meters: dict[int, FlopsMeter] = {}
    stats = FlopsMeter.stats
    monkeypatch.setattr(FlopsMeter, "stats", lambda self: meters.setdefault(id(self), self) and stats(self))
    study = search("api_mlp", blobs_task(), {"hidden": [4, 16], "lr": [1e-3, 2e-3, 3e-3]}, epochs=1, **where)
    assert len(meters) == len(study.trials) == 6
    # The first trial of each width traced its batch shapes (training, the last training batch,
    # validation); the other trials of that width traced none.
    traced = sorted(m.traces for m in meters.values())
    assert traced[:4] == [0, 0, 0, 0] and traced[4] == traced[5] > 0
    totals = {(t.params["hidden"], t.user_attrs["flops.total"]) for t in study.trials}
    assert len(totals) == 2


def test_a_quiet_search_warns_of_another_study_holding_its_search(where, api_mlp) -> None:
    search(api_mlp, blobs_task(), ["hidden:4"], epochs=1, study_name="first", **where)
    with pytest.warns(UserWarning, match=r"^New study 'second'; study 'first' in this database holds the same search"):
        search(api_mlp, blobs_task(), ["hidden:4"], epochs=1, study_name="second", **where)


def test_threads_sets_torchs_threads_for_the_search_and_restores_them(where) -> None:
    seen: list[int] = []

    class ThreadsProbe(nn.Module):
        def __init__(self, data) -> None:
            super().__init__()
            self.head = nn.Linear(data.num_features, data.num_outputs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return self.head(x)

    probe = register_model("threads_probe_api", ThreadsProbe, [], input_kind="tabular")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        search(probe, blobs_task(), epochs=1, threads=1, **where)
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
        with pytest.raises(UsageError, match=r"^threads must be at least 1 \(got 0\)$"):
            search(probe, blobs_task(), epochs=1, threads=0, **where)
    finally:
        torch.set_num_threads(before)
        from hpsearch.models import registry

        registry._MODELS.remove("threads_probe_api")


def test_a_rerun_with_a_larger_budget_stores_it(where, api_mlp) -> None:
    from hpsearch.search.study_claim import load_spec

    search(api_mlp, blobs_task(), ["hidden:2..8"], epochs=1, sampler="tpe", n_trials=1, study_name="budget", **where)
    study = search(api_mlp, blobs_task(), ["hidden:2..8"], epochs=1, sampler="tpe", n_trials=2, study_name="budget", **where)
    assert len(study.trials) == 2
    assert load_spec(study).n_trials == 2  # the stored search said 1 still


def test_search_leaves_no_connection_open_and_its_study_still_reads(empty_postgres_database, tmp_path, api_mlp) -> None:
    # A notebook's search left its pool's connections to be garbage-collected open (psycopg's ResourceWarning).
    import sqlalchemy as sa

    from hpsearch.storage.urls import parse_storage_url

    study = search(api_mlp, blobs_task(), ["hidden:4"], epochs=1, storage=empty_postgres_database, output_dir=tmp_path)
    name = parse_storage_url(empty_postgres_database).database
    admin = sa.create_engine(parse_storage_url(empty_postgres_database).set(database="postgres"))
    try:
        with admin.connect() as connection:
            count = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name")
            assert connection.execute(count, {"name": name}).scalar() == 0
            assert [t.state.name for t in study.trials] == ["COMPLETE"]  # the returned study reconnects
    finally:
        admin.dispose()


def test_verbose_prints_the_epoch_lines(where, capsys) -> None:
    search("api_mlp", blobs_task(), ["hidden:8"], epochs=1, verbose=True, **where)
    assert "Epoch 01 | Train Loss:" in capsys.readouterr().out


def test_load_model_returns_the_trained_best_model(where) -> None:
    task = blobs_task()
    # fp32, as the loss recomputed below: autocast's bf16 would move it.
    study = search("api_mlp", task, {"hidden": [4, 16]}, epochs=1, precision="fp32", **where)
    model = load_model(where["storage"], study.study_name)
    x_val, y_val = task.val
    with torch.no_grad():
        loss = F.cross_entropy(model(x_val), y_val).item()
    assert loss == pytest.approx(study.best_value, rel=1e-5)
    assert not model.training
    with pytest.raises(UsageError, match=r"^checkpoint='bset.pt' \(did you mean best.pt\?\): a trial keeps best.pt"):
        load_model(where["storage"], study.study_name, checkpoint="bset.pt")
    # A trial still running (here one taken and not yet told) has recorded no checkpoint: it is not "saved none".
    study.ask()
    with pytest.raises(UsageError, match=r"^trial 2 of study '.*' is RUNNING: its model can be loaded once it has ended$"):
        load_model(where["storage"], study.study_name, trial=2)


def test_load_task_rebuilds_the_studys_task_for_forecasts_in_the_datas_units(where, tmp_path) -> None:
    """A new user retyped the study's task options into build_task, and had no way back from standard deviations."""
    import pandas as pd

    csv = tmp_path / "load.csv"
    pd.DataFrame({"load": [float((7 * i) % 11) for i in range(120)], "OT": [20.0 + (i % 12) for i in range(120)]}).to_csv(csv, index=False)
    options = {"data": str(csv), "target": "OT", "window": 12, "horizon": 2}
    study = search("tfn_regressor", "csv_timeseries", {"embed_dim": [8]}, task_options=options, epochs=1,
                   precision="fp32", **where)
    task = load_task(where["storage"], study.study_name)
    assert task.name == "csv_timeseries" and task.data.seq_len == 12 and task.test is not None
    mean, std = task.target_scale
    inputs, targets = task.test
    unscaled = targets * std + mean
    assert torch.allclose(unscaled, unscaled.round(), atol=1e-4) and unscaled.min() >= 20  # the file's whole degrees
    model = load_model(where["storage"], study.study_name)
    with torch.no_grad():
        forecast = model(inputs[:1]) * std + mean
    assert forecast.shape == (1, 2) and 0 < float(forecast.mean()) < 60  # in the data's units, not standardized
    with pytest.raises(StorageError, match="no study named 'nope'"):  # as load_model says it
        load_task(where["storage"], "nope")


def test_load_model_in_a_process_that_lacks_the_scripts_model_says_to_register_it(where) -> None:
    study = search("api_mlp", blobs_task(), ["hidden:4"], epochs=1, **where)
    script = (
        "import sys\n"
        "from hpsearch.search import UsageError, load_model\n"
        f"try:\n    load_model({where['storage']!r}, {study.study_name!r})\n"
        "except UsageError as error:\n    print(error)\n"
        "from torch import nn\n"
        "from hpsearch.models import HyperParam, register_model\n"
        "register_model('api_mlp', lambda data, hidden: nn.Linear(data.num_features, hidden), "
        "[HyperParam('hidden', 'int', 8, 'units', low=1)], input_kind='tabular')\n"
        f"try:\n    load_model({where['storage']!r}, {study.study_name!r})\n"
        "except UsageError as error:\n    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    model_line, task_line = done.stdout.rstrip().splitlines()
    assert model_line.startswith("unknown model 'api_mlp'; known models: ")
    # task= would not help: the model is what this process lacks.
    assert model_line.endswith("import or register it in this process before load_model (studies run with "
                               "plugins=[...] load it by themselves)")
    assert task_line.startswith("unknown task 'api_blobs'")
    assert task_line.endswith("or pass the Task object the study searched as load_model(..., task=task) (studies run "
                              "with plugins=[...] load them by themselves)")


def test_a_task_object_the_study_searched_is_passed_to_load_model_in_another_process(where) -> None:
    study = search("api_mlp", blobs_task(), ["hidden:4"], epochs=1, **where)
    script = (
        "from hpsearch.models import HyperParam, register_model\n"
        "from hpsearch.search import load_model\n"
        "from tests.search.test_api import blobs_task, build_api_mlp\n"
        "register_model('api_mlp', build_api_mlp, [HyperParam('hidden', 'int', 8, 'hidden units', low=1)], input_kind='tabular')\n"
        f"model = load_model({where['storage']!r}, {study.study_name!r}, task=blobs_task())\n"
        "print(type(model).__name__, model.training)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Sequential False"


def test_rerunning_a_cell_that_registers_a_model_replaces_it() -> None:
    def build_cell_model(data: DataSpec, width: int) -> nn.Module:  # the same code, as a re-run cell defines it
        return nn.Linear(data.num_features, width)

    for default in (3, 5):
        register_model("api_cell_model", build_cell_model, [HyperParam("width", "int", default, "width")], input_kind="tabular")
    assert get_model("api_cell_model").params[0].default == 5

    def other_code(data: DataSpec) -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match="'api_cell_model' is already registered"):
        register_model("api_cell_model", other_code, [])
    from hpsearch.models import registry

    registry._MODELS.remove("api_cell_model")


def test_a_rerun_with_changed_epochs_names_what_changed(where) -> None:
    search("api_mlp", blobs_task(), ["hidden:8"], epochs=1, **where)
    with pytest.raises(UsageError, match=r"epochs 1 -> 2.*--study-name NEW.*--allow-changes"):
        search("api_mlp", blobs_task(), ["hidden:8"], epochs=2, **where)
    study = search("api_mlp", blobs_task(), ["hidden:8"], epochs=2, allow_changes=True, **where)
    assert len(study.trials) == 1  # the point has run; allowing the change queues nothing new


def test_a_tpe_rerun_with_a_larger_budget_adds_trials_with_new_parameters(where) -> None:
    first = [t.params["lr"] for t in search("api_mlp", blobs_task(), {"lr": "1e-4..1e-1:log"}, n_trials=3, epochs=1, **where).trials]
    with pytest.warns(UserWarning, match=r"its budget of 3 trials \(--n-trials, n_trials= in Python: the trials it holds"):
        same = [t.params["lr"] for t in search("api_mlp", blobs_task(), {"lr": "1e-4..1e-1:log"}, n_trials=3, epochs=1, **where).trials]
    assert same == first  # n_trials is the study's budget: run again, it is already spent
    both = [t.params["lr"] for t in search("api_mlp", blobs_task(), {"lr": "1e-4..1e-1:log"}, n_trials=6, epochs=1, **where).trials]
    assert len(first) == 3 and both[:3] == first and len(both) == 6
    assert len(set(both)) == 6


def test_an_optimizer_sweep_builds_each_named_optimizer(where, monkeypatch) -> None:
    built: list[type] = []
    original = trainer_module.build_optimizer

    def spy(*args, **kwargs):
        optimizer = original(*args, **kwargs)
        built.append(type(optimizer))
        return optimizer

    monkeypatch.setattr(trainer_module, "build_optimizer", spy)
    # fp32: auto's step timing builds optimizers of its own, for copies of the model.
    study = search("api_mlp", blobs_task(), {"optimizer": ["adamw", "sgd"], "momentum": [0.9]}, epochs=1, precision="fp32", **where)
    assert {t.params["optimizer"] for t in study.trials} == {"adamw", "sgd"}
    assert sorted(cls.__name__ for cls in built) == ["AdamW", "SGD"]


def test_the_metric_is_what_the_trainer_monitors() -> None:
    resolved = resolve(StudySpec(models=("api_mlp",), task=_registered(blobs_task("api_monitored")), metric="val_acc"))
    assert resolved.train_config.monitor == "val_acc"


def test_wrong_input_is_one_usage_error_before_anything_is_written(where, tmp_path) -> None:
    task = blobs_task()
    x, y = task.train
    bad = Task(name="api_bad", train=(torch.utils.data.TensorDataset(x, y), y), val=task.val, loss=F.cross_entropy)
    with pytest.raises(UsageError, match="a tuple holding a TensorDataset \\(a Dataset\\); give the Dataset itself"):
        search("api_mlp", bad, epochs=1, **where)
    with pytest.raises(UsageError, match=r"unknown keyword 'epoch' \(did you mean epochs\?\)"):
        search("api_mlp", task, epoch=1, **where)
    with pytest.raises(UsageError, match=r"unknown keyword 'n_trial' \(did you mean n_trials\?\); its keywords: models, "):
        search("api_mlp", task, n_trial=1, **where)
    # A task's option or a model's hyperparameter as a keyword is told where it goes.
    with pytest.raises(UsageError, match=r"^search\(\) got an unknown keyword 'dataset_size'; dataset_size is an option "
                                         r"of the task: pass task_options=\{'dataset_size': \.\.\.\}$"):
        search("tfn_classifier", "synthetic_tokens", dataset_size=200, **where)
    with pytest.raises(UsageError, match=r"^search\(\) got an unknown keyword 'hidden'; hidden is a hyperparameter of "
                                         r"model api_mlp: sweep it, sweep=\{'hidden': \[\.\.\.\]\}$"):
        search("api_mlp", task, hidden=8, **where)
    # Wrong types are named as the keyword was written, for study options and trainer settings alike.
    with pytest.raises(UsageError, match=r"search\(n_trials=\.\.\.\) must be an integer \(got '3'\)"):
        search("api_mlp", task, n_trials="3", **where)
    with pytest.raises(UsageError, match=r"search\(epochs=\.\.\.\) must be an integer \(got '2'\)"):
        search("api_mlp", task, epochs="2", **where)
    assert not (tmp_path / "hpsearch.db").exists() and not (tmp_path / "checkpoints").exists()


def test_a_storage_url_that_cannot_be_used_is_a_storage_error_and_leaves_no_folder(tmp_path) -> None:
    """As the README promises: ``except StorageError`` catches a malformed URL as it does an unreachable database."""
    from hpsearch.storage import StorageError

    for url, message in (("sqlite://x.db", "names no file"), ("sqlite:///no_such_folder/x.db", "no_such_folder")):
        with pytest.raises(StorageError, match=message):
            search("api_mlp", blobs_task(), epochs=1, storage=url, output_dir=tmp_path / "runs" / "deep")
    assert list(tmp_path.iterdir()) == []


def _registered(task: Task) -> str:
    from hpsearch.search.api import _task_name

    return _task_name(task)


BAD_SPLIT_PLUGIN = '''
import torch, torch.nn.functional as F
from torch.utils.data import TensorDataset
from hpsearch.trainers import Task, register_task

x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))

def tensors_where_a_dataset_goes():
    return Task(name="bad_split", train=x, val=TensorDataset(x, y), loss=F.cross_entropy)

register_task("bad_split", tensors_where_a_dataset_goes, [])
'''


CSV_TASK_PLUGIN = '''
import csv, torch, torch.nn.functional as F
from hpsearch.models import DataSpec, HyperParam
from hpsearch.trainers import Task, register_task

def csv_rows(data, target):
    with open(data, newline="") as file:
        rows = list(csv.DictReader(file))
    y = torch.tensor([float(row[target]) for row in rows])  # a typo'd column: a bare KeyError
    return Task(name="csv_rows", train=(y[:, None], y), val=(y[:, None], y), loss=F.mse_loss,
                data=DataSpec(kind="tabular", num_features=1, num_outputs=1))

register_task("csv_rows", csv_rows, [HyperParam("data", "str", "rows.csv", "the file"), HyperParam("target", "str", "y", "the column")])
'''


@pytest.mark.parametrize(("option", "said"), [
    (("--data", "hous.csv"), "task csv_rows: No such file or directory: {tmp}/hous.csv"),
    (("--target", "prcie"), "task csv_rows: KeyError 'prcie' while building it"),
])
def test_a_task_that_cannot_build_is_one_line_and_exit_2_from_the_cli(run_hpsearch, tmp_path, option, said) -> None:
    # A missing file was a traceback and exit 1; a column typo read "prcie (plugin ...)".
    (tmp_path / "csv_plugin.py").write_text(CSV_TASK_PLUGIN)
    (tmp_path / "rows.csv").write_text("y\n1\n2\n3\n")
    result = run_hpsearch("--plugin", "csv_plugin.py", "--models", "tfn_classifier", "--task", "csv_rows", *option,
                          "--epochs", "1", "--no-progress")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"hpsearch: error: {said.format(tmp=tmp_path)} (plugin {tmp_path / 'csv_plugin.py'})"]
    assert not (tmp_path / "hpsearch.db").exists()


def test_a_split_of_the_wrong_kind_is_one_line_and_exit_2_from_the_cli(run_hpsearch, tmp_path) -> None:
    (tmp_path / "bad.py").write_text(BAD_SPLIT_PLUGIN)
    result = run_hpsearch("--plugin", "bad.py", "--models", "tfn_classifier", "--task", "bad_split", "--epochs", "1", "--no-progress")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "hpsearch: error: task bad_split's train split is a single tensor; give a tuple of tensors such as "
        f"(inputs, targets) (plugin {tmp_path / 'bad.py'})"
    ]
    assert not (tmp_path / "hpsearch.db").exists()


def test_workers_refuse_a_model_or_task_that_only_this_process_knows(where) -> None:
    """Worker processes would not know them: before, they stopped at once and this process ran everything."""
    with pytest.raises(UsageError, match=r"model .api_mlp. is registered by .*test_api.py:build_api_mlp, which worker processes cannot import"):
        search("api_mlp", blobs_task(), {"hidden": [4, 16]}, epochs=1, workers=2, **where)
    from dataclasses import replace

    from hpsearch.trainers import build_task

    tokens = replace(build_task("synthetic_tokens", {"dataset_size": 40}), name="api_tokens")
    with pytest.raises(UsageError, match=r"task 'api_tokens' is given to search\(\).*plugins=\[\.\.\.\], or use workers=1"):
        search("tfn_classifier", tokens, {"embed_dim": [4, 8]}, epochs=1, workers=2, **where)
    assert not (where["output_dir"] / "hpsearch.db").exists()



WIDE_PLUGIN = '''
import torch
import torch.nn.functional as F
from torch import nn
from hpsearch.models import DataSpec, HyperParam, register_model
from hpsearch.trainers import Task, register_task

def build_api_wide_mlp(data, hidden):
    return nn.Sequential(nn.Linear(data.num_features, hidden), nn.ReLU(), nn.Linear(hidden, data.num_outputs))

def api_wide_blobs():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (120,), generator=g)
    x = torch.randn(120, 6, generator=g) + 1.5 * F.one_hot(y, 6).float()
    return Task("api_wide_blobs", (x[:90], y[:90]), (x[90:], y[90:]), F.cross_entropy,
                data=DataSpec(kind="tabular", num_features=6, num_outputs=3))

register_model("api_wide_mlp", build_api_wide_mlp, [HyperParam("hidden", "int", 8, "hidden units", low=1)], input_kind="tabular")
register_task("api_wide_blobs", api_wide_blobs, [])
'''


def test_workers_run_what_a_plugin_file_registers_though_the_script_imported_it_too(where, tmp_path, monkeypatch) -> None:
    """A script's ``import my_plugin`` registers its names first; ``plugins=[file]`` must still count as theirs."""
    import importlib

    from hpsearch.models import registry
    from hpsearch.trainers import task_registry

    (tmp_path / "api_wide_plugin.py").write_text(WIDE_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("api_wide_plugin")
    try:
        study = search("api_wide_mlp", "api_wide_blobs", {"hidden": [4, 8]}, epochs=1, workers=2,
                       plugins=[str(tmp_path / "api_wide_plugin.py")], **where)
        assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    finally:
        registry._MODELS.remove("api_wide_mlp")
        task_registry._TASKS.remove("api_wide_blobs")


def test_a_task_object_named_as_a_registered_task_is_one_usage_error(where) -> None:
    from hpsearch.trainers import build_task

    tokens = build_task("synthetic_tokens", {"dataset_size": 40})
    with pytest.raises(UsageError, match=r"a task named 'synthetic_tokens' is already registered \(built in\); pass task='synthetic_tokens'"):
        search("tfn_classifier", tokens, epochs=1, **where)
    assert not (where["output_dir"] / "hpsearch.db").exists()


def test_a_model_that_needs_what_a_task_without_a_dataspec_lacks_is_one_usage_error(where) -> None:
    task = blobs_task("api_no_data")
    bare = Task(name=task.name, train=task.train, val=task.val, loss=task.loss)  # no data=DataSpec(...)
    with pytest.raises(UsageError, match=r"hidden=4 cannot be built \(registered by .*\): TypeError: .*pass data=DataSpec"):
        search("api_mlp", bare, ["hidden:4"], epochs=1, **where)


class BreaksAtItem(torch.utils.data.Dataset):
    """Blobs whose item 20 cannot be read: the two examples the probe runs pass, the trial fails."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if i == 20:
            raise RuntimeError("item 20 is corrupt")
        return self.x[i], self.y[i]


def test_a_search_whose_trials_fail_warns_with_the_reason(where, api_mlp) -> None:
    task = blobs_task()
    broken = Task(name="api_breaks", train=BreaksAtItem(*task.train), val=task.val, loss=F.cross_entropy,
                  data=task.data, metrics=task.metrics)
    with pytest.warns(UserWarning, match=r"^1 trial\(s\) failed; their fail_reason attributes say why \(trial 0: .*item 20 is corrupt"):
        study = search(api_mlp, broken, ["hidden:4"], epochs=1, **where)
    assert [t.state.name for t in study.trials] == ["FAIL"]


def test_a_pruner_chosen_that_could_stop_no_trial_is_a_warning(where) -> None:
    """The CLI's last lines said so; search() said nothing."""
    with pytest.warns(UserWarning, match=r"--pruner percentile judges no epoch before the last of 1"):
        search("api_mlp", blobs_task(), ["hidden:4"], epochs=1, pruner="percentile", **where)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto's choice is not the user's: no warning
        search("api_mlp", blobs_task(), ["hidden:8"], epochs=1, study_name="auto-pruned", **where)


# Sends this process SIGINT, as a notebook's interrupt button does, in the second epoch's training (3 batches an epoch).
INTERRUPTED_NOTEBOOK = sigint_model_plugin("interrupted_in_epoch_2", 5, """
    if os.environ.get("INTERRUPT"):
        os.kill(os.getpid(), signal.SIGINT)
""") + '''
import sys
from hpsearch.search import search

try:
    study = search("interrupted_in_epoch_2", "synthetic_tokens", {"embed_dim": "4..16"}, n_trials=1, epochs=3,
                   precision="fp32", task_options={"dataset_size": 200}, storage="sqlite:///nb.db", study_name="nb")
except KeyboardInterrupt as interrupt:
    print(f"KeyboardInterrupt: {interrupt}")
    sys.exit(0)
print([(t.number, t.state.name, t.user_attrs.get("resumed_from")) for t in study.trials])
'''


def test_a_notebooks_interrupt_records_the_trial_and_the_same_search_resumes_it(tmp_path) -> None:
    # Python's own SIGINT handler, not the CLI's: the trial failed with no reason and was never resumed.
    (tmp_path / "cell.py").write_text(INTERRUPTED_NOTEBOOK)
    env = {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}

    def run(**extra: str) -> str:
        done = subprocess.run([sys.executable, "cell.py"], cwd=tmp_path, env={**env, **extra}, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.strip().splitlines()[-1]

    assert run(INTERRUPT="1") == (
        "KeyboardInterrupt: search() interrupted: trial 0 is recorded as failed (interrupted by SIGINT after 1 epoch), "
        "finished trials are kept; the same search() again resumes it from its last checkpoint")
    again = run()
    assert again.startswith("[(0, 'FAIL', None), (1, 'COMPLETE', {'checkpoint': ") and again.endswith("'epoch': 1})]"), again


def test_a_model_class_where_a_registered_name_goes_is_one_usage_error(where) -> None:
    # A notebook user's first try: it was "TypeError: 'type' object is not iterable" from inside search().
    with pytest.raises(UsageError, match=r"^models are registered names \(or what register_model returned\), not the "
                                         r"class Linear: register_model\(\"name\", build, params\) first"):
        search(torch.nn.Linear, "synthetic_tokens", {"embed_dim": [4]}, **where)
    with pytest.raises(UsageError, match="not an int"):
        search(["tfn_classifier", 3], "synthetic_tokens", {"embed_dim": [4]}, **where)
