"""``hpsearch studies``, ``hpsearch trials`` and ``hpsearch export``: look at results without running.

These commands only read: a storage URL naming a SQLite file that does not exist is an error,
never a new empty database, and nothing is written before the input has been checked.

Optuna and the storage layer are imported once the arguments are parsed: ``--help`` must not
wait for them (``hpsearch.storage`` loads pandas, SQLAlchemy and Optuna).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence

from hpsearch.search.arguments import ArgumentParser
from hpsearch.search.errors import EXIT_OK, UsageError
from hpsearch.storage.attributes import METRIC_ATTR

STORAGE_HELP = "study database URL (default: $HPSEARCH_STORAGE, else sqlite:///hpsearch.db in the working directory)"
# storage.export.EXPORT_FORMATS, repeated so that export --help needs no storage layer; a test holds them equal.
EXPORT_FORMATS = ("csv", "parquet", "json")


def studies_main(argv: Sequence[str]) -> int:
    """``hpsearch studies``: every study in the storage with its trials by state and best value."""
    parser = ArgumentParser(
        prog="hpsearch studies",
        description="List every study in the storage: directions, monitored metric, trials by state,\n"
        "and the best value of single-objective studies.",
        epilog="example:\n  hpsearch studies --storage postgresql://user@host:5432/db",
    )
    parser.add_argument("--storage", help=STORAGE_HELP)
    args = parser.parse_args(argv)
    from hpsearch.search.results import aligned_table
    from hpsearch.storage.database import StudyDatabase
    from hpsearch.storage.reading import COUNT_COLUMNS, SUMMARY_COLUMNS, summary_rows
    from hpsearch.storage.urls import mask_password, resolve_storage_url

    url = resolve_storage_url(args.storage)
    with StudyDatabase.open_for_reading(url) as database, database.connect() as connection:
        rows = summary_rows(connection)
    if not rows:
        print(f"no studies in {mask_password(url)}")
        return EXIT_OK
    for row in rows:
        row["best_value"] = "-" if math.isnan(row["best_value"]) else f"{row['best_value']:.6g}"
        row["metric"] = row["metric"] or "-"
    # The counts are numbers: pandas, which printed this table before, keeps a space for a sign
    # before them and their headers, and the output stays as it was.
    columns = [f" {name}" if name in COUNT_COLUMNS else name for name in SUMMARY_COLUMNS]
    cells = [[f" {row[name]}" if name in COUNT_COLUMNS else str(row[name]) for name in SUMMARY_COLUMNS] for row in rows]
    print(aligned_table(columns, cells))
    return EXIT_OK


def trials_main(argv: Sequence[str]) -> int:
    """``hpsearch trials --study NAME``: the study's trials as a table, best first."""
    parser = ArgumentParser(
        prog="hpsearch trials",
        description="Print a study's trials as a table: complete trials best first, then the others.\n"
        "Columns: trial, state, each parameter, the monitored value, epochs run, seconds.",
        epilog="example:\n  hpsearch trials --study tfn_classifier-synthetic_tokens",
    )
    parser.add_argument("--study", required=True, help="study name (hpsearch studies lists them)")
    parser.add_argument("--storage", help=STORAGE_HELP)
    parser.add_argument("--metric", help="title of the value column (default: the metric the search monitored)")
    args = parser.parse_args(argv)
    from hpsearch.search.results import format_results_table
    from hpsearch.storage.database import StudyDatabase
    from hpsearch.storage.urls import resolve_storage_url

    with StudyDatabase.open_for_reading(resolve_storage_url(args.storage)) as database:
        study = database.load_study(args.study)
        metric = args.metric or study.user_attrs.get(METRIC_ATTR)
        table = format_results_table(study, metric)
    print(table)
    return EXIT_OK


def export_main(argv: Sequence[str]) -> int:
    """``hpsearch export``: a study's trials and per-epoch metrics as csv, parquet or json files."""
    parser = ArgumentParser(
        prog="hpsearch export",
        description="Write a study to two files in DIR:\n"
        "  trials.FORMAT  one row per trial: number, value(s), datetime_start, datetime_complete,\n"
        "                 duration (seconds), params_*, user_attrs_*, system_attrs_*, state\n"
        "                 (the columns of Optuna's trials_dataframe)\n"
        "  epochs.FORMAT  one row per trial and epoch: number, state, epoch, intermediate_value,\n"
        "                 every per-epoch metric (lr, losses, the task's metrics, ...), params_*\n"
        "Lists and dicts (lr_history, ...) are written as JSON text. JSON files are strict JSON:\n"
        "infinite values are null there.",
        epilog="examples:\n  hpsearch export --study my-study --out results/\n"
        "  hpsearch export --study my-study --format parquet --out results/ --storage sqlite:///runs/hpsearch.db\n\n"
        "in Python: from hpsearch.storage import trials_frame, epochs_frame",
    )
    parser.add_argument("--study", required=True, help="study name (hpsearch studies lists them)")
    parser.add_argument("--storage", help=STORAGE_HELP)
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="csv", help="file format (default: %(default)s)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the two files (created if missing)")
    args = parser.parse_args(argv)
    if args.format == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise UsageError("--format parquet needs pyarrow: pip install 'hpsearch[parquet]' (or use --format csv)")
    from hpsearch.storage.database import StudyDatabase
    from hpsearch.storage.export import export_study
    from hpsearch.storage.urls import resolve_storage_url

    with StudyDatabase.open_for_reading(resolve_storage_url(args.storage)) as database:
        paths = export_study(database, args.study, args.format, args.out)
    for path in paths:
        print(f"wrote {path}")
    return EXIT_OK
