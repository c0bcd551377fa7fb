import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Small enough that a trial takes a second or two on two cores.
TINY = ["--epochs", "2", "--dataset-size", "200", "--no-progress"]


def hpsearch_command() -> list[str]:
    """The installed console script next to this interpreter, else the module."""
    script = Path(sys.executable).with_name("hpsearch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hpsearch.search.cli"]


@pytest.fixture
def run_hpsearch(tmp_path):
    """Run ``hpsearch ARGS`` in ``tmp_path`` as a user would; returns the CompletedProcess."""

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300):
        environment = {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}
        environment.update(env or {})
        return subprocess.run(
            [*hpsearch_command(), *args],
            cwd=cwd or tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def timed_steps(monkeypatch, tmp_path_factory) -> list[object]:
    """The models whose steps ``--precision auto`` timed, in order (``measure_step_speed`` still runs).

    In a cache folder of its own: timings kept by earlier tests or searches would be read, not timed.
    """
    from hpsearch.trainers import step_speed

    monkeypatch.setenv("HPSEARCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    timed: list[object] = []
    measure = step_speed.measure_step_speed

    def counted(*args, **kwargs):
        timed.append(args[0])
        return measure(*args, **kwargs)

    monkeypatch.setattr(step_speed, "measure_step_speed", counted)
    return timed


@pytest.fixture
def machine_says_bf16(monkeypatch):
    """auto as on a machine whose matmuls run faster in bf16: the per-model timing decides."""
    from hpsearch.trainers import step_speed  # here, not at collection: torch loads only for the tests that use it

    def choose(requested: str, device: object) -> str:
        return "bf16" if requested == "auto" else requested

    monkeypatch.setattr(step_speed, "choose_precision", choose)


def sigint_model_plugin(name: str, at_pass: int, send: str) -> str:
    """A plugin registering token model ``name``, whose ``at_pass``-th training forward pass runs ``send``
    (code that sends this process SIGINT): an interrupt that lands mid-trial on any machine."""
    return textwrap.dedent('''
        import os, signal, time
        import torch
        from torch import nn
        from hpsearch.models import HyperParam, register_model

        class SigintModel(nn.Module):
            def __init__(self, data, embed_dim):
                super().__init__()
                self.embed, self.head = nn.Embedding(data.vocab_size, embed_dim), nn.Linear(embed_dim, data.num_outputs)
                self.passes = 0

            def forward(self, tokens):
                if self.training and not torch.jit.is_tracing():
                    self.passes += 1
                    if self.passes == AT_PASS:
        SEND
                return self.head(self.embed(tokens).mean(dim=1))

        register_model(NAME, SigintModel, params=[HyperParam("embed_dim", "int", 8, "width", low=1)], input_kind="tokens")
    ''').replace("AT_PASS", str(at_pass)).replace("NAME", repr(name)).replace(
        "SEND\n", textwrap.indent(textwrap.dedent(send).strip() + "\n", " " * 16))
