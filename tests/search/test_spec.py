"""What ``resolve`` refuses to guess, through the real ``hpsearch`` command."""

import pytest

# A task whose only metric says nothing of its direction: a plain class with no higher_is_better.
UNDIRECTED_TASK = """
import torch
from hpsearch.models import DataSpec
from hpsearch.trainers import Task, register_task


class Agreement:
    def __init__(self):
        self.hits = self.seen = 0

    def update(self, outputs, targets):
        self.hits += int((outputs.argmax(-1) == targets).sum())
        self.seen += len(targets)

    def compute(self):
        return self.hits / max(self.seen, 1)

    def reset(self):
        self.hits = self.seen = 0


def make(directions=None):
    x, y = torch.randint(0, 20, (64, 8)), torch.randint(0, 2, (64,))
    return Task(name="agree", train=(x[:48], y[:48]), val=(x[48:], y[48:]),
                loss=torch.nn.functional.cross_entropy, metrics={"val_agree": Agreement},
                metric_directions=directions or {}, data=DataSpec(kind="tokens", seq_len=8, vocab_size=20, num_outputs=2))


register_task("agree", make, [], "tokens, two classes, a metric without a direction")
register_task("agree_declared", lambda: make({"val_agree": "maximize"}), [], "the same, direction declared")
"""

BASE = [
    "--plugin",
    "task.py",
    "--models",
    "tfn_classifier",
    "--param_sweep",
    "embed_dim:16",
    "--epochs",
    "1",
    "--no-progress",
]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--task", "agree", "--metric", "val_agree"], "pass --direction maximize or --direction minimize"),
        (["--task", "agree", "--objectives", "val_agree,flops"], "write val_agree:maximize or val_agree:minimize"),
    ],
)
def test_a_metric_with_no_direction_is_refused_not_minimized(tmp_path, run_hpsearch, flags, message):
    (tmp_path / "task.py").write_text(UNDIRECTED_TASK)
    run = run_hpsearch(*BASE, *flags)
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert "val_agree does not say whether higher is better" in line and message in line
    assert not (tmp_path / "hpsearch.db").exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--task", "agree", "--metric", "val_agree", "--direction", "maximize"],
        ["--task", "agree_declared", "--metric", "val_agree"],
        ["--task", "agree", "--objectives", "val_agree:maximize,flops"],
    ],
)
def test_a_direction_given_anywhere_is_taken(tmp_path, run_hpsearch, flags):
    (tmp_path / "task.py").write_text(UNDIRECTED_TASK)
    run = run_hpsearch(*BASE, *flags)
    assert run.returncode == 0, run.stderr


def test_each_study_option_is_a_flag_a_study_file_key_and_a_search_keyword(tmp_path):
    # One declaration (a study_option field of StudySpec) makes all three; none is listed by hand.
    from hpsearch.search.keywords import split_search_keywords
    from hpsearch.search.cli import build_search_parser, given_values
    from hpsearch.search.spec import STUDY_OPTIONS
    from hpsearch.search.study_file import read_study_file

    examples = {"str": "x", "int": 3, "float": 2.5, "bool": True}
    assert len(STUDY_OPTIONS) >= 14
    for option in STUDY_OPTIONS:
        declared = option.metadata["option"]
        value = (declared["choices"] or ("val_loss",))[-1] if option.name in ("objectives", "sampler", "pruner", "direction") else None
        kind = "bool" if isinstance(option.default, bool) else "int" if option.name in ("max_params", "n_trials", "stop_when_converged") \
            else "float" if option.name in ("max_flops", "timeout") else "str"
        value = value if value is not None else examples[kind]
        flag = f"--{option.name.replace('_', '-')}"
        argv = ["--models", "m", flag] + ([] if kind == "bool" else [str(value)])
        parsed = given_values(build_search_parser().parse_args(argv))
        expected = (value,) if option.name == "objectives" else value
        assert parsed[option.name] == expected, option.name
        toml = tmp_path / f"{option.name}.toml"
        shown = str(value).lower() if kind == "bool" else repr(value) if kind == "str" else value
        toml.write_text(f'models = ["m"]\n{option.name} = {f"[{shown}]" if option.name == "objectives" else shown}\n'.replace("'", '"'))
        assert read_study_file(toml).values[option.name] in (expected, str(tmp_path / str(value))), option.name
        assert split_search_keywords({option.name: expected}, [])[0] == {option.name: expected}, option.name


def test_a_study_keeps_its_artifact_store():
    from hpsearch.search.spec import StudySpec

    def spec(artifacts):
        return StudySpec(models=("m",), artifacts=artifacts)

    assert spec("s3://b/p").store_refusal(spec("s3://b/p/")) is None
    assert spec(None).store_refusal(spec(None)) is None
    assert "keeps its checkpoints in s3://b/p" in spec("s3://b/q").store_refusal(spec("s3://b/p"))
    assert "pass --artifacts s3://b/p (artifacts= in Python) or" in spec(None).store_refusal(spec("s3://b/p"))
    assert "was run without an artifact store" in spec("s3://b/p").store_refusal(spec(None))


def test_a_data_path_stored_as_typed_before_is_the_same_data_from_the_folder_it_was_typed_in(tmp_path, monkeypatch):
    from hpsearch.search.spec import StudySpec

    def spec(data):
        return StudySpec(models=("m",), task="csv_timeseries", task_options={"data": data, "window": 12})

    monkeypatch.chdir(tmp_path)
    assert spec(str(tmp_path / "load.csv")).changes_from(spec("load.csv")) == []
    assert spec(str(tmp_path / "load.csv")).changes_from(spec("./sub/../load.csv")) == []
    (change,) = spec(str(tmp_path / "other.csv")).changes_from(spec("load.csv"))
    assert change.startswith("task_options ") and "other.csv" in change


def test_a_changed_sweep_is_shown_as_its_items_are_written():
    from hpsearch.search.spec import StudySpec

    before = StudySpec(models=("m",), sweep=("embed_dim:8,16", "kernel_type:rbf,compact"))
    (change,) = StudySpec(models=("m",), sweep=("embed_dim:8",)).changes_from(before)
    assert change == "sweep embed_dim:8,16 kernel_type:rbf,compact -> embed_dim:8"


def test_a_task_option_given_at_its_default_is_no_change():
    """A study file's n_examples = 600 (the default) then left out was refused as another search."""
    from hpsearch.search.spec import StudySpec
    from hpsearch.trainers.task_registry import get_task

    default = next(o.default for o in get_task("synthetic_tokens").options if o.name == "dataset_size")

    def spec(**options):
        return StudySpec(models=("m",), task="synthetic_tokens", task_options=options)

    assert spec().changes_from(spec(dataset_size=default)) == []
    assert spec(dataset_size=default).changes_from(spec()) == []
    assert spec(dataset_size=default + 1).changes_from(spec()) == [f"task_options dataset_size {default} -> {default + 1}"]
