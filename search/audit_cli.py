"""``hpsearch audit``: what faults cost a study, counted from its epoch table and checkpoints (``search.audit``)."""

from __future__ import annotations

from collections.abc import Sequence

from hpsearch.search.arguments import ArgumentParser
from hpsearch.search.errors import EXIT_OK, EXIT_RUN_FAILED
from hpsearch.search.tables_cli import STORAGE_HELP


def build_audit_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="hpsearch audit",
        description="After an incident (workers killed, a database or store outage, a full disk), count what it cost a "
        "study, once its workers are done: epochs trained twice, epochs a finished trial ran but the epoch table lacks, "
        "trials left RUNNING, and checkpoints that are missing or cannot be read (the count of epochs trained twice "
        "reads each trial's last.pt). Exit 0 when there is none of these, 1 when there is. In Python: "
        "hpsearch.search.audit.audit_epochs.",
        epilog="examples:\n  hpsearch audit --study sweep1 --storage postgresql://user@db:5432/hpsearch\n"
        "  hpsearch audit --study sweep1 --storage postgresql://user@db:5432/hpsearch --output-dir scratch/ "
        "--artifacts s3://bucket/runs",
    )
    parser.add_argument("--study", required=True, help="study name (hpsearch studies lists them)")
    parser.add_argument("--storage", help=STORAGE_HELP + "; the database's URL, not a proxy's grpc://")
    parser.add_argument("--output-dir", "--output_dir", help="where this machine finds the checkpoints (default: the "
                        "study's --output-dir); with an artifact store, a checkpoint not found here is read from it")
    parser.add_argument("--artifacts", help="the artifact store to read checkpoints from (default: the study's --artifacts)")
    return parser


def audit_main(argv: Sequence[str]) -> int:
    """``hpsearch audit``: print the study's audit; exit 1 when something was trained twice, lost, left RUNNING or unreadable."""
    args = build_audit_parser().parse_args(argv)
    from hpsearch.search.audit import audit_epochs
    from hpsearch.storage.urls import resolve_storage_url

    audit = audit_epochs(resolve_storage_url(args.storage), args.study, args.output_dir, args.artifacts)
    print(f"Study {args.study!r}: {audit.configurations} configurations, {audit.finished} finished")
    twice = audit.trained_twice if audit.counted else "not counted: the study keeps no last.pt (--checkpoints best or none)"
    print(f"  epochs trained twice:   {twice}")
    print(f"  epochs lost:            {audit.lost}")
    print(f"  trials RUNNING:         {audit.running}")
    for title, lines in (("missing checkpoints:   ", audit.missing), ("unreadable checkpoints:", audit.unreadable)):
        print(f"  {title} {len(lines)}")
        for line in lines:
            print(f"    {line}")
    if audit.missing:
        print("  (a missing last.pt: pass --output-dir where this machine has the checkpoints, or --artifacts for the store)")
    return EXIT_OK if audit.clean else EXIT_RUN_FAILED
