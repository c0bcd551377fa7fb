"""``hpsearch dashboard``: serve optuna-dashboard on the study database.

The database is opened the way the reading commands open it: a SQLite file that does not
exist is an error (never a new empty database), and no table is created or migrated. The
dashboard's own buttons (notes, deleting a study) still write: it is read-mostly, not read-only.
optuna-dashboard and the storage layer are imported once the arguments are parsed: ``--help``
must not wait for them.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Sequence
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from hpsearch.search.arguments import ArgumentParser
from hpsearch.search.errors import EXIT_OK, UsageError
from hpsearch.search.signals import ServerStopped, sigterm_stops_server
from hpsearch.search.tables_cli import STORAGE_HELP

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class _Server(ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request (the SPA fetches several API routes at once)."""

    daemon_threads = True  # a request still running must not keep the process alive at exit


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request: the dashboard polls its API every few seconds."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="hpsearch dashboard",
        description="Serve optuna-dashboard on the study database: every study, its trials, intermediate\n"
        "values (the per-epoch monitored metric), parameters and user attributes (flops.*, ...).\n"
        "Prints the URL, then serves until Ctrl-C (or SIGTERM).",
        epilog="examples:\n  hpsearch dashboard\n  hpsearch dashboard --storage sqlite:///runs/hpsearch.db --port 8081\n"
        "  hpsearch dashboard --host 0.0.0.0   (reachable from other machines: no authentication!)",
    )
    parser.add_argument("--storage", help=STORAGE_HELP)
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default: %(default)s; 0 picks a free one)")
    return parser


def dashboard_url(host: str, port: int) -> str:
    """The dashboard's address as a browser wants it (IPv6 literals in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard/"


def bind(app: object, host: str, port: int) -> WSGIServer:
    """A listening server for ``app``, or a ``UsageError`` saying why the address cannot be used."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535 (got {port})")
    server_class = _IPv6Server if ":" in host else _Server
    try:
        return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)  # type: ignore[arg-type]
    except socket.gaierror:
        raise UsageError(f"--host {host}: no such address; use an IP address such as 127.0.0.1") from None
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is in use; pass --port N (--port 0 picks a free one)") from None
        raise UsageError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def dashboard_main(argv: Sequence[str]) -> int:
    """``hpsearch dashboard``: serve optuna-dashboard until interrupted; exit 0 on Ctrl-C or SIGTERM."""
    args = build_parser().parse_args(argv)
    import optuna_dashboard

    from hpsearch.storage.database import StudyDatabase
    from hpsearch.storage.urls import mask_password, resolve_storage_url

    url = resolve_storage_url(args.storage)
    with StudyDatabase.open_for_reading(url) as database:
        server = bind(optuna_dashboard.wsgi(database.storage), args.host, args.port)
        with server, sigterm_stops_server():
            try:  # a signal may come as soon as the URL is out, before serve_forever starts
                print(f"optuna-dashboard on {mask_password(url)}")
                print(f"  {dashboard_url(args.host, server.server_port)}")
                print("Ctrl-C stops it.", flush=True)
                server.serve_forever()
            except (KeyboardInterrupt, ServerStopped):
                print("stopped", file=sys.stderr)
    return EXIT_OK
