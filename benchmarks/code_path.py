"""The front door's review figures: how many files one search and one trial pass through, how often
the search's walk goes back to a file it has left, how often the storage URL is parsed and how
many engines are made, and the size of the objective.

Runs one plain search in this process (``hpsearch --models tfn_classifier --param_sweep
embed_dim:16,32 --epochs 1``, tiny data, in a temporary folder) under ``sys.setprofile`` and counts
calls into hpsearch's own files (``models/``, ``trainers/``, ``storage/``, ``search/``):

- files on the search's path: distinct hpsearch files with a call during ``run_search``;
- files on one trial's path: the same during the first ``Objective.__call__``;
- returns in the ``run_search`` walk: ``run_search``'s own calls and their calls (depth 1 and 2
  below it), as a sequence of files with repeats in a row merged; a return is an entry into a
  file the walk had already left;
- URL parses and engines per process: calls of ``parse_storage_url`` and of SQLAlchemy's
  ``create_engine`` during ``run_search``;
- ``search/objective.py``: lines, and the modules it imports from outside ``search/``, at run time and
  for annotations only (under ``TYPE_CHECKING``).

    python benchmarks/code_path.py
    PYTHONPATH=/tmp/before_pkg python benchmarks/code_path.py   # an older checkout, linked as /tmp/before_pkg/hpsearch/{models,...}
"""

from __future__ import annotations

import ast
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import hpsearch.search  # noqa: E402  where the code measured lives (an older checkout on PYTHONPATH, for a before figure)

ROOT = Path(hpsearch.search.__file__).parent.parent
OWN = tuple(str(ROOT / folder) + os.sep for folder in ("models", "trainers", "storage", "search"))
ARGV = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:16,32", "--epochs", "1", "--dataset-size", "64",
        "--no-progress", "-q", "--precision", "fp32"]


class PathRecorder:
    """A ``sys.setprofile`` hook that records the search's and the first trial's calls."""

    def __init__(self) -> None:
        self.depth = 0
        self.search_depth: int | None = None
        self.trial_depth: int | None = None
        self.trials_seen = 0
        self.search_files: set[str] = set()
        self.trial_files: set[str] = set()
        self.walk: list[str] = []
        self.calls: Counter[str] = Counter()

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            self.depth += 1
            self._call(frame)
        elif event == "return":
            if self.search_depth is not None and self.depth == self.search_depth and frame.f_code.co_name == "run_search":
                self.search_depth = None
            if self.trial_depth is not None and self.depth == self.trial_depth:
                self.trial_depth = None
            self.depth -= 1

    def _call(self, frame: FrameType) -> None:
        code = frame.f_code
        name = code.co_filename
        # SQLAlchemy's create_engine runs inside a generated wrapper of the same name: count the real one only.
        engine = code.co_name == "create_engine" and name.endswith(os.path.join("sqlalchemy", "engine", "create.py"))
        if code.co_name == "parse_storage_url" or engine:
            self.calls[code.co_name] += 1
        if not name.startswith(OWN):
            return
        short = str(Path(name).relative_to(ROOT))
        if code.co_name == "run_search" and self.search_depth is None:
            self.search_depth = self.depth
        if self.search_depth is None:
            return
        self.search_files.add(short)
        if 1 <= self.depth - self.search_depth <= 2 and (not self.walk or self.walk[-1] != short):
            self.walk.append(short)
        if code.co_name == "__call__" and short == "search/objective.py" and self.trial_depth is None and not self.trials_seen:
            self.trial_depth, self.trials_seen = self.depth, 1
        if self.trial_depth is not None:
            self.trial_files.add(short)


def objective_figures() -> tuple[int, list[str], list[str]]:
    """objective.py's lines, and its imports from outside ``search/``: at run time, and for annotations only."""
    source = (ROOT / "search" / "objective.py").read_text()
    tree = ast.parse(source)
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for node in ast.walk(block)
    }
    outside: dict[str, bool] = {}  # module -> imported at run time
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hpsearch.") and not node.module.startswith("hpsearch.search"):
            outside[node.module] = outside.get(node.module, False) or id(node) not in typing_only
    return (
        len(source.splitlines()),
        sorted(m for m, runtime in outside.items() if runtime),
        sorted(m for m, runtime in outside.items() if not runtime),
    )


def main() -> None:
    from hpsearch.search.cli import main as hpsearch

    recorder = PathRecorder()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        sys.setprofile(recorder)
        try:
            code = hpsearch(ARGV)
        finally:
            sys.setprofile(None)
    assert code == 0, f"the search exited {code}"
    returns = len(recorder.walk) - len(set(recorder.walk))
    lines, outside, for_types = objective_figures()
    print(f"files on the search's path:   {len(recorder.search_files)}")
    print(f"files on one trial's path:    {len(recorder.trial_files)}")
    print(f"run_search walk:              {len(recorder.walk)} steps, {returns} returns to a file it had left")
    print("  " + " > ".join(Path(step).stem for step in recorder.walk))
    for call, count in sorted(recorder.calls.items()):
        print(f"{call + ' calls:':<30}{count}")
    print(
        f"search/objective.py:          {lines} lines, {len(outside)} imports from outside search/ at run time: "
        f"{', '.join(outside)}; {len(for_types)} for annotations only: {', '.join(for_types)}"
    )


if __name__ == "__main__":
    main()
