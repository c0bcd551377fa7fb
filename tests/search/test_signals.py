"""A signal that lands inside code whose own cleanup then fails still stops the search as that signal."""

import sqlite3
import textwrap

from hpsearch.search.signals import Interrupted, interruption

# The model's sixth training forward pass sends this process SIGINT inside a block whose cleanup
# raises, as tqdm's write lock did when the interrupt landed in it ("cannot release un-acquired lock").
PLUGIN = textwrap.dedent('''
    import os, signal, time
    import torch
    from torch import nn
    from hpsearch.models import HyperParam, register_model

    class CleanupFailsOnInterrupt(nn.Module):
        def __init__(self, data, embed_dim):
            super().__init__()
            self.embed, self.head = nn.Embedding(data.vocab_size, embed_dim), nn.Linear(embed_dim, data.num_outputs)
            self.passes = 0

        def forward(self, tokens):
            if self.training and not torch.jit.is_tracing():
                self.passes += 1
                if self.passes == 6:
                    try:
                        os.kill(os.getpid(), signal.SIGINT)
                        time.sleep(10)  # the handler raises Interrupted here
                    finally:
                        raise RuntimeError("cleanup failed")
            return self.head(self.embed(tokens).mean(dim=1))

    register_model("cleanup_fails", CleanupFailsOnInterrupt,
                   params=[HyperParam("embed_dim", "int", 8, "width", low=1)], input_kind="tokens")
''')


def test_interruption_is_found_behind_the_error_its_cleanup_raised():
    try:
        try:
            raise Interrupted("SIGINT")
        finally:
            raise RuntimeError("cannot release un-acquired lock")
    except RuntimeError as error:
        found = interruption(error)
    assert isinstance(found, Interrupted) and found.signal_name == "SIGINT"
    assert interruption(ValueError("unrelated")) is None


def test_a_sigint_masked_by_a_failing_cleanup_still_stops_the_search_with_130(tmp_path, run_hpsearch):
    (tmp_path / "plugin.py").write_text(PLUGIN)
    result = run_hpsearch("--plugin", "plugin.py", "--models", "cleanup_fails", "--epochs", "5", "--dataset-size", "200",
                          "--no-progress", "--study-name", "masked")
    assert result.returncode == 130, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("hpsearch: stopped by SIGINT")
    with sqlite3.connect(tmp_path / "hpsearch.db") as db:
        [(state,)] = db.execute("SELECT state FROM trials").fetchall()
        [(reason,)] = db.execute("SELECT value_json FROM trial_user_attributes WHERE key = 'fail_reason'").fetchall()
    assert state == "FAIL" and reason.startswith('"interrupted by SIGINT after ')
