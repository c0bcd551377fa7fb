"""Plugins: models and tasks from a user's file, module or installed entry point, searched end to end."""

import re
import runpy
import textwrap
import uuid
from pathlib import Path

import pytest

from hpsearch.models import get_model
from hpsearch.search import plugins
from hpsearch.search.cli import main
from hpsearch.search.errors import UsageError
from hpsearch.search.plugins import load_entry_points, load_plugin, plugin_origin
from tests.search.test_cli import load_trials

README = Path(__file__).resolve().parents[2] / "README.md"
QUICK = ["--epochs", "1", "--dataset-size", "200", "--no-progress"]


def readme_block(after: str, language: str = "python") -> str:
    """The first ``language`` code block of the README after the text ``after``."""
    text = README.read_text()
    return re.search(rf"```{language}\n(.*?)```", text[text.index(after) :], re.DOTALL).group(1)


def readme_example() -> str:
    """The README's Python example of bringing your own model, data and metric."""
    return readme_block("## Bring your own model, data and step")


# The arrays the README's example leaves to the reader: 20 features, 3 classes.
README_DATA = """
import torch
g = torch.Generator().manual_seed(0)
y_train, y_val = torch.randint(0, 3, (240,), generator=g), torch.randint(0, 3, (60,), generator=g)
x_train = torch.randn(240, 20, generator=g) + torch.nn.functional.pad(torch.nn.functional.one_hot(y_train, 3), (0, 17)).float()
x_val = torch.randn(60, 20, generator=g) + torch.nn.functional.pad(torch.nn.functional.one_hot(y_val, 3), (0, 17)).float()
"""


def unique(prefix: str) -> str:
    """A model or module name no other test (or earlier run in this process) registered."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def model_plugin(name: str, output: str = "data.num_outputs") -> str:
    """Source of a plugin registering a tokens model ``name`` whose last layer has ``output`` units."""
    return f"""
from torch import nn
from hpsearch.models import HyperParam, register_model

def build(data, width):
    return nn.Sequential(nn.Embedding(data.vocab_size, width), nn.Flatten(), nn.Linear(width * data.seq_len, {output}))

register_model({name!r}, build, [HyperParam("width", "int", 8, "embedding width", low=1)])
"""


def test_the_readme_example_runs_as_written(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "example.py"
    script.write_text(README_DATA + readme_example().replace("epochs=10", "epochs=2"))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("{'model': 'my_mlp', 'hidden': ")  # best_params, best_value: nothing else
    trials = load_trials(tmp_path / "hpsearch.db", "my_mlp-my_data")
    assert len(trials) == 4 and all(t["state"] == "COMPLETE" for t in trials)


def test_the_readme_plugin_file_runs_with_its_command(tmp_path, run_hpsearch):
    (tmp_path / "my_mlp.py").write_text(readme_block("A whole plugin file, `my_mlp.py`"))
    command = readme_block("A whole plugin file, `my_mlp.py`", "bash").split()
    assert command[0] == "hpsearch"
    result = run_hpsearch(*command[1:], "--epochs", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    trials = load_trials(tmp_path / "hpsearch.db", "my_mlp-my_data")
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]


def test_a_plugins_models_are_listed_with_their_origin(run_hpsearch):
    listing = run_hpsearch("models", "--plugin", str(README.parent / "studies" / "digits_cnn.py"))
    assert listing.returncode == 0, listing.stderr
    block = listing.stdout[listing.stdout.index("digits_cnn  (input: image; from plugin") :]
    assert re.search(r"\n  channels +int +16 +>= 1 ", block) and re.search(r"\n  dropout +float +0.1 +0..0.9 ", block)

    tasks = run_hpsearch("tasks", "--plugin", str(README.parent / "studies" / "digits_cnn.py"))
    assert tasks.returncode == 0, tasks.stderr
    block = tasks.stdout[tasks.stdout.index("digits  (from plugin") :]
    assert re.search(r"\n  val_fraction +float +0.2 +0.05..0.9 ", block) and re.search(r"\n  augment +bool +true ", block)


def test_a_plugin_imports_a_module_beside_it_from_any_working_directory(tmp_path, run_hpsearch):
    name, helper = unique("sibling_model"), unique("plugin_helpers")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / f"{helper}.py").write_text(model_plugin(name))
    (tmp_path / "mine" / "plugin.py").write_text(f"import {helper}\n")
    (tmp_path / "elsewhere").mkdir()
    listing = run_hpsearch("models", "--plugin", "../mine/plugin.py", cwd=tmp_path / "elsewhere")
    assert listing.returncode == 0, listing.stderr
    assert name in listing.stdout


def test_an_installed_entry_point_registers_without_a_flag(tmp_path, run_hpsearch):
    site = tmp_path / "site"
    (site / "hpsearch_demo-0.1.dist-info").mkdir(parents=True)
    (site / "hpsearch_demo-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: hpsearch-demo\nVersion: 0.1\n")
    (site / "hpsearch_demo-0.1.dist-info" / "entry_points.txt").write_text("[hpsearch.plugins]\ndemo = demo_models:register\n")
    # A function entry point: importing the module registers nothing, calling register() does.
    (site / "demo_models.py").write_text("def register():\n" + textwrap.indent(model_plugin("demo_entry_model"), "    "))
    result = run_hpsearch("models", env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    assert "demo_entry_model  (input: any; from plugin entry point demo (demo_models:register))" in result.stdout


def test_a_broken_entry_point_is_named(tmp_path, monkeypatch):
    info = tmp_path / "broken_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hpsearch.plugins]\nbroken = no_such_module_for_hpsearch\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    with pytest.raises(UsageError, match=r"^plugin entry point broken \(no_such_module_for_hpsearch\) failed to import: ModuleNotFoundError"):
        load_entry_points()


def test_a_plugin_file_loads_once_and_a_module_by_name(tmp_path, monkeypatch):
    name = unique("file_model")
    path = tmp_path / "models_here.py"
    path.write_text(model_plugin(name))
    load_plugin(str(path))
    load_plugin(str(path))  # again, as when the command line and the study both name it: no duplicate
    assert get_model(name).params[0].name == "width"
    assert plugin_origin("model", name) == f"plugin {path}"

    module, module_model = unique("hpsearch_test_module"), unique("module_model")
    (tmp_path / f"{module}.py").write_text(model_plugin(module_model))
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugin(module)
    assert plugin_origin("model", module_model) == f"plugin {module}"


BROKEN = {
    "syntax error": ("def broken(:\n", r"failed to import: SyntaxError: "),
    "failing import": ("import numpy_is_not_this_module\n", r"failed to import: ModuleNotFoundError: No module named 'numpy_is_not_this_module'"),
    "error at import": ("raise RuntimeError('no GPU here')\n", r"failed to import: RuntimeError: no GPU here"),
    "name taken": (model_plugin("tfn_classifier"), r": a model named 'tfn_classifier' is already registered \(by hpsearch\.models\.tfn\.build_tfn_classifier\); give it another name"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_is_one_usage_error_naming_it(case, tmp_path):
    source, message = BROKEN[case]
    path = tmp_path / f"{unique('broken')}.py"
    path.write_text(source)
    with pytest.raises(UsageError) as caught:
        load_plugin(str(path))
    assert str(caught.value).startswith(f"plugin {path}")
    assert re.search(message, str(caught.value)) and "\n" not in str(caught.value)


def test_missing_plugins_are_named(tmp_path):
    with pytest.raises(UsageError, match=r"^plugin .*nothing\.py: no such file$"):
        load_plugin(str(tmp_path / "nothing.py"))
    with pytest.raises(UsageError, match=r"^plugin no_such_plugin_module failed to import: ModuleNotFoundError"):
        load_plugin("no_such_plugin_module")


CLI_CASES = {
    "name taken": (model_plugin("tfn_classifier"), "tfn_classifier", "a model named 'tfn_classifier' is already registered"),
    "failing import": ("import numpy_is_not_this_module\n", "tfn_classifier", "failed to import: ModuleNotFoundError"),
    "fails on the data": (model_plugin("{model}").replace("width * data.seq_len", "5"), "{model}", "fails on input of shape [2, 32]: RuntimeError"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_bad_plugins_are_one_line_exit_2(case, tmp_path, monkeypatch, capsys):
    model = unique("bad_model")
    source, chosen, message = (text.replace("{model}", model) for text in CLI_CASES[case])
    (tmp_path / "plugin.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    assert main(["--plugin", "plugin.py", "--models", chosen, *QUICK]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hpsearch: error: plugin {tmp_path / 'plugin.py'}") or f"(plugin {tmp_path / 'plugin.py'})" in err
    assert message in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plugin.py"]


def test_a_model_of_the_wrong_shape_stops_the_console_script(tmp_path, run_hpsearch):
    (tmp_path / "plugin.py").write_text(model_plugin("wrong_shape", output="7"))
    result = run_hpsearch("--plugin", "plugin.py", "--models", "wrong_shape", *QUICK)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        f"hpsearch: error: model wrong_shape (plugin {tmp_path / 'plugin.py'}) on task synthetic_tokens returns "
        "outputs of shape [2, 7] for input of shape [2, 32]; the task needs [2, 4]\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plugin.py"]


def test_an_edit_to_a_plugins_model_is_noticed_by_the_rerun_the_workers_and_load_model(tmp_path, run_hpsearch):
    from hpsearch.search.api import load_model

    name = unique("edited_model")
    plugin = tmp_path / "plugin.py"
    plugin.write_text(model_plugin(name))
    model = ["--plugin", "plugin.py", "--models", name, *QUICK]
    search = [*model, "--param_sweep", "width:4", "--study-name", "s"]
    assert run_hpsearch(*search).returncode == 0
    created = run_hpsearch("create", *model, "--param_sweep", "width:4,6", "--study-name", "queued")
    assert created.returncode == 0, created.stderr

    plugin.write_text(model_plugin(name, output="data.num_outputs + 0 * width"))  # same name, other code
    message = f"model {name}'s code differs from the study's (edited, or another file of that name)"
    rerun = run_hpsearch(*search)
    assert rerun.returncode == 2 and message in rerun.stderr and len(rerun.stderr.strip().splitlines()) == 1
    worker = run_hpsearch("worker", "--study", "queued")
    assert worker.returncode == 2 and message in worker.stderr, worker.stderr
    # A worker has no --allow-changes or --study-name to offer: it says to restore the code.
    assert "put that code back on this machine" in worker.stderr and "--allow-changes" not in worker.stderr
    assert len(worker.stderr.strip().splitlines()) == 1
    assert all(t["state"] == "WAITING" for t in load_trials(tmp_path / "hpsearch.db", "queued"))

    load_plugin(str(plugin))  # this process now has the edited code
    with pytest.raises(UsageError, match="was trained with other code for model"):
        load_model(f"sqlite:///{tmp_path / 'hpsearch.db'}", "s")
    assert load_model(f"sqlite:///{tmp_path / 'hpsearch.db'}", "s", allow_changed_code=True) is not None
    plugin.write_text(model_plugin(name, output="data.num_outputs + 1"))  # the weights no longer fit
    runpy.run_path(str(plugin))  # the same file run again, as a notebook cell is
    with pytest.raises(UsageError, match=r"weights do not fit model .*; restore the code it was trained with$"):
        load_model(f"sqlite:///{tmp_path / 'hpsearch.db'}", "s", allow_changed_code=True)


def test_a_task_option_named_like_a_trainer_flag_is_no_flag_and_breaks_nothing(tmp_path, run_hpsearch):
    task = unique("seeded")
    (tmp_path / "task.py").write_text(f"""
import torch
from hpsearch.models import DataSpec, HyperParam
from hpsearch.trainers import Task, register_task

def make(seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randint(0, 20, (64, 8), generator=g), torch.randint(0, 2, (64,), generator=g)
    return Task(name={task!r}, train=(x[:48], y[:48]), val=(x[48:], y[48:]), loss=torch.nn.functional.cross_entropy,
                data=DataSpec(kind="tokens", seq_len=8, vocab_size=20, num_outputs=2))

register_task({task!r}, make, [HyperParam("seed", "int", 0, "the data's seed")])
""")
    done = run_hpsearch("--plugin", "task.py", "--models", "tfn_classifier", "--task", task, "--param_sweep", "embed_dim:16",
                        "--seed", "3", "--study-name", "seeded", "--epochs", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    (trial,) = load_trials(tmp_path / "hpsearch.db", "seeded")
    assert trial["state"] == "COMPLETE"


def test_a_task_option_shared_with_another_task_shows_each_tasks_own_help(tmp_path, run_hpsearch):
    # A new user's forecasting task took --data like csv_timeseries; --help showed only csv_timeseries' text.
    task = unique("forecast")
    (tmp_path / "task.py").write_text(f"""
from hpsearch.models import HyperParam
from hpsearch.trainers import register_task

register_task({task!r}, lambda data: None, [HyperParam("data", "str", "ETTh1.csv", "the hourly transformer CSV to window")])
""")
    shown = run_hpsearch("--plugin", "task.py", "--help")
    assert shown.returncode == 0, shown.stderr
    flag = " ".join(shown.stdout[shown.stdout.index("--data STR "):].split("\n  --")[0].split())
    assert f"[{task}: 'ETTh1.csv'] the hourly transformer CSV to window" in flag
    assert "[csv_timeseries] path of the CSV file" in flag
