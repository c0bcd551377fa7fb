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
