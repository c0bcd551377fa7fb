"""``hpsearch report``: its flags and the output file; the report itself is ``search.report``.

Apart so that ``hpsearch report --help`` does not wait for plotly, Optuna and pandas, which
``search.report`` imports and which are imported here once the arguments are parsed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hpsearch.search.arguments import ArgumentParser
from hpsearch.search.errors import EXIT_OK, UsageError
from hpsearch.search.tables_cli import STORAGE_HELP


def check_out_path(out: Path) -> None:
    """A ``UsageError`` unless ``out`` can be written: an existing, writable folder, not a folder itself."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; name the file, e.g. --out {out / 'report.html'}")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    if not os.access(out.parent, os.W_OK):
        raise UsageError(f"--out {out}: the folder {out.parent} is not writable")


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never a half-written file."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes the file private; a report is not
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="hpsearch report",
        description="Write one self-contained HTML file about a study (plotly.js inside; opens offline):\n"
        "optimization history, parameter importances, parallel coordinates, loss and learning rate\n"
        "per epoch for each trial, FLOPs against the monitored metric with the Pareto front marked,\n"
        "and a table of the best trials.",
        epilog="examples:\n  hpsearch report --study tfn_classifier-synthetic_tokens --out report.html\n"
        "  hpsearch report --study my-study --storage sqlite:///runs/hpsearch.db --out runs/my-study.html --top 20",
    )
    parser.add_argument("--study", required=True, help="study name (hpsearch studies lists them)")
    parser.add_argument("--out", default="report.html", help="the HTML file to write (default: %(default)s); its folder must exist")
    parser.add_argument("--storage", help=STORAGE_HELP)
    parser.add_argument("--metric", help="name of the monitored value (default: the metric the search monitored)")
    parser.add_argument("--top", type=int, default=10, help="rows in the best-trials table (default: %(default)s)")
    return parser


def report_main(argv: Sequence[str]) -> int:
    """``hpsearch report``: write the study's HTML report."""
    args = build_parser().parse_args(argv)
    if args.top < 1:
        raise UsageError(f"--top must be at least 1 (got {args.top})")
    out = Path(args.out)
    check_out_path(out)
    import optuna

    from hpsearch.search.report import build_report
    from hpsearch.storage.urls import resolve_storage_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    document = build_report(resolve_storage_url(args.storage), args.study, args.metric, args.top)
    try:
        write_atomically(out, document)
    except OSError as error:
        raise UsageError(f"cannot write --out {out}: {error.strerror or error}") from None
    print(f"wrote {out.resolve()}")
    return EXIT_OK
