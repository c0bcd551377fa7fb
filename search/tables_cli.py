"""``hpsearch studies``, ``hpsearch trials`` and ``hpsearch export``: look at results without running.

These commands only read: a storage URL naming a SQLite file that does not exist is an error,
never a new empty database, and nothing is written before the input has been checked.

Optuna and the storage layer are imported once the arguments are parsed: ``--help`` must not
wait for them (``hpsearch.storage`` loads pandas, SQLAlchemy and Optuna).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from hpsearch.search.arguments import ArgumentParser
from hpsearch.search.errors import EXIT_OK, UsageError
from hpsearch.storage.attributes import METRIC_ATTR

if TYPE_CHECKING:
    import optuna

STORAGE_HELP = "study database URL (default: $HPSEARCH_STORAGE, else sqlite:///hpsearch.db in the working directory)"
# storage.export.EXPORT_FORMATS, repeated so that export --help needs no storage layer; a test holds them equal.
EXPORT_FORMATS = ("csv", "parquet", "json")


@contextmanager
def usage_errors(url: str = "") -> Iterator[None]:
    """Turn the storage layer's errors about the user's input into one-line ``UsageError``s.

    With ``url``, an error anywhere inside that says its SQLite file is damaged is one line too.
    These commands read only the pages they show, so damage elsewhere does not stop them and
    whatever can still be read can be exported; the search and the worker, which write,
    check every page first.
    """
    from hpsearch.storage.engine import DamagedDatabaseError, sqlite_damage
    from hpsearch.storage.reading import ExportError
    from hpsearch.storage.urls import StorageURLError

    try:
        yield
    except Exception as error:
        damage = sqlite_damage(error) if url else None
        if damage is not None:
            raise UsageError(str(DamagedDatabaseError(url, str(damage)))) from None
        if isinstance(error, (StorageURLError, ExportError)):
            raise UsageError(str(error)) from None
        raise


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
    from hpsearch.storage.reading import COUNT_COLUMNS, SUMMARY_COLUMNS, summary_rows
    from hpsearch.storage.urls import mask_password, resolve_storage_url

    url = resolve_storage_url(args.storage)
    with usage_errors(url):
        rows = summary_rows(url)
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


def read_only_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna storage on an existing database that creates no table and switches no journal mode."""
    import optuna

    from hpsearch.storage.engine import reader_engine_options
    from hpsearch.storage.urls import mask_password

    sa_url, engine_kwargs = reader_engine_options(url)
    try:
        return optuna.storages.RDBStorage(sa_url, engine_kwargs=engine_kwargs, skip_table_creation=True)
    except RuntimeError as error:  # a schema written by another Optuna version
        raise UsageError(f"cannot read {mask_password(url)}: {str(error).splitlines()[0]}") from None


def _read_only_study(url: str, study_name: str) -> optuna.Study:
    """Load a study that is known to exist without creating tables or switching journal modes."""
    import optuna

    return optuna.load_study(study_name=study_name, storage=read_only_storage(url))


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
    import optuna

    from hpsearch.search.results import format_results_table
    from hpsearch.storage.reading import find_study, read_connection
    from hpsearch.storage.urls import resolve_storage_url

    url = resolve_storage_url(args.storage)

    with usage_errors(url):
        with read_connection(url) as connection:
            find_study(connection, args.study, url)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = _read_only_study(url, args.study)
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
    from hpsearch.storage.export import export_study
    from hpsearch.storage.urls import resolve_storage_url

    url = resolve_storage_url(args.storage)
    with usage_errors(url):
        paths = export_study(url, args.study, args.format, args.out)
    for path in paths:
        print(f"wrote {path}")
    return EXIT_OK
