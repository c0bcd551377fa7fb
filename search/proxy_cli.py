"""``hpsearch proxy``: serve a study database to many workers through Optuna's gRPC storage proxy."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING

from hpsearch.search.arguments import ArgumentParser
from hpsearch.search.errors import UsageError
from hpsearch.search.heartbeat import add_heartbeat_arguments, heartbeat_from
from hpsearch.search.signals import ServerStopped, sigterm_stops_server

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from hpsearch.search.heartbeat import Heartbeat

DEFAULT_HOST = "127.0.0.1"  # DESIGN: servers bind 127.0.0.1 unless the user passes --host
DEFAULT_PORT = 13000  # Optuna's default for its proxy
# Requests served at once. One waiting for a study's queue lock holds a thread but no database
# connection, so there are more threads than a study has workers; database work shares the
# engine's pool (SQLAlchemy's default: 5 connections, up to 15 under load).
DEFAULT_THREADS = 256
SIBLING_STOP_S = 20.0  # how long a stopping proxy waits for its other processes to end before it kills them

DESCRIPTION = """\
Serve a study database to workers through Optuna's gRPC storage proxy, so that hundreds of
workers share this process's few database connections (and PostgreSQL's max_connections)
instead of each holding its own. Workers, hpsearch create and hpsearch use it with
--storage grpc://HOST:PORT (or HPSEARCH_STORAGE); the database URL and its password stay here.
hpsearch's own records travel through it too: the per-epoch table, heartbeats and the queue
lock. Every --heartbeat-interval the proxy fails trials whose worker went silent for its grace
period and queues their retries, as workers do on a database URL: each trial is judged by the
--grace-period its worker declares with its take and heartbeats, and never sooner than the proxy's own
--grace-period. The proxy waits out a database outage for its --db-timeout on each request,
then answers that the database is away; its workers keep retrying until their own --db-timeout.
Reading commands (trials, export, report, dashboard) take the database URL, not the proxy's.
One process serves about 15-20 trials a second (Python runs one request at a time in it); with
--processes N, N processes share the port and the kernel spreads the workers' connections over
them. Needs pip install "hpsearch[proxy]"."""

EPILOG = """\
example:
  hpsearch proxy --storage postgresql://user:pass@db-host/hpsearch --host 0.0.0.0 --port 13000 --processes 2
  hpsearch worker --study sweep1 --storage grpc://proxy-host:13000      (on every machine)

The proxy has no authentication: bind it to a private network (the default, 127.0.0.1, serves
this machine only)."""


def build_proxy_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="hpsearch proxy", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--storage", help="the study database URL it serves (default: $HPSEARCH_STORAGE, "
                        "else sqlite:///hpsearch.db if that file is here); postgresql:// for many machines")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s, this machine "
                        "only; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="requests served at once by each process; keep it above the number of workers (default: %(default)s)")
    parser.add_argument("--processes", type=int, default=1,
                        help="server processes sharing the port, each a core at most: raise it when workers wait on "
                        "the proxy while cores are free (default: %(default)s)")
    add_heartbeat_arguments(parser, proxy=True)
    return parser


def proxy_main(argv: Sequence[str]) -> int:
    """``hpsearch proxy``: open the database, then serve it until stopped (Ctrl-C, SIGTERM)."""
    args = build_proxy_parser().parse_args(argv)
    from hpsearch.search.orchestrator import open_database
    from hpsearch.storage.proxy import ProxiedStorage, serve
    from hpsearch.storage.proxy_client import require_grpc
    from hpsearch.storage.urls import DEFAULT_DB_NAME, STORAGE_ENV, is_proxy_url, mask_password, resolve_storage_url

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535 (got {args.port})")
    if args.threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {args.threads})")
    if args.processes < 1:
        raise UsageError(f"--processes must be at least 1 (got {args.processes})")
    heartbeat = heartbeat_from(args)
    url = resolve_storage_url(args.storage)
    if args.storage is None and not os.environ.get(STORAGE_ENV) and not (Path.cwd() / DEFAULT_DB_NAME).is_file():
        # Serving a new, empty hpsearch.db here would leave every worker asking for a study it lacks.
        raise UsageError(f"no --storage given, $HPSEARCH_STORAGE unset and no {DEFAULT_DB_NAME} here: pass --storage URL, "
                         "the database to serve (postgresql://... for many machines)")
    if is_proxy_url(url):
        raise UsageError(f"hpsearch proxy serves a database; --storage {mask_password(url)} is a proxy: pass the "
                         "sqlite:/// or postgresql:// URL")
    require_grpc()
    _check_port_free(args.host, args.port)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if args.processes > cores:
        _echo(f"hpsearch proxy: --processes {args.processes} is more than the {cores} core(s) it may use here; "
              "processes past one a core add memory and connections, not speed")
    # As a worker: started beside its database (a Deployment, a job script), it waits for it up to --db-timeout.
    database = open_database(url, heartbeat, _echo, wait=True, storage_class=ProxiedStorage)
    where = f"grpc://{args.host}:{args.port}"
    processes = f" in {args.processes} processes" if args.processes > 1 else ""
    _echo(f"hpsearch proxy: serving {database.shown_url} on {where}{processes}; workers pass --storage {where} "
          f"(stale trials failed after {heartbeat.grace_period} s without a heartbeat). Ctrl-C or SIGTERM stops it.")
    siblings = _Siblings(args.processes - 1, (url, heartbeat, args.host, args.port, args.threads))
    try:
        with sigterm_stops_server():
            serve(database, args.host, args.port, args.threads, _echo)
    except RuntimeError as error:  # grpc cannot bind the address
        raise UsageError(f"cannot listen on {args.host}:{args.port} ({error}); pick another --port or --host") from None
    except KeyboardInterrupt:
        print("hpsearch proxy: stopped (Ctrl-C)", file=sys.stderr)
    except ServerStopped:
        print("hpsearch proxy: stopped (SIGTERM)", file=sys.stderr)
    finally:
        siblings.stop()
        database.close()
    return 0


def _echo(line: str) -> None:
    from hpsearch.storage.urls import mask_password

    print(mask_password(line), flush=True)


def _serve_sibling(url: str, heartbeat: Heartbeat, host: str, port: int, threads: int) -> None:
    """One more server process on the port: gRPC binds it with SO_REUSEPORT beside the first."""
    from hpsearch.search.orchestrator import open_database
    from hpsearch.search.quiet import silence_optuna  # the first process's main() did it for itself
    from hpsearch.storage.proxy import ProxiedStorage, serve

    silence_optuna()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the first process stops the others
    threading.Thread(target=_stop_when_first_is_gone, name="first-process", daemon=True).start()
    database = open_database(url, heartbeat, _echo, wait=True, storage_class=ProxiedStorage)
    try:
        with sigterm_stops_server():
            serve(database, host, port, threads, _echo)
    except RuntimeError as error:  # grpc cannot bind the address
        _echo(f"hpsearch proxy: process {os.getpid()} cannot listen on {host}:{port} ({error})")
        sys.exit(2)
    except ServerStopped:
        pass  # the first process says it stopped
    finally:
        database.close()


def _stop_when_first_is_gone() -> None:
    """SIGTERM this process once the first one ends, however it ended (a kill -9 stops no child of its own)."""
    first = multiprocessing.parent_process()
    if first is not None:
        wait([first.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)


class _Siblings:
    """The proxy's other processes (``--processes``): started at once, stopped with the first, reported if one dies.

    Each is a whole proxy on the same database: every state a request leans on beyond its own
    connection (the queue locks, each trial's declared grace, the take that took it) is in the database.
    """

    def __init__(self, count: int, serve_args: tuple[object, ...]) -> None:
        context = multiprocessing.get_context("spawn")  # a fork would copy the first process's gRPC and database state
        self.processes: list[BaseProcess] = [
            context.Process(target=_serve_sibling, args=serve_args, name=f"hpsearch proxy {i + 2}", daemon=True)
            for i in range(count)
        ]
        self.stopping = threading.Event()
        for process in self.processes:
            process.start()
        if self.processes:
            threading.Thread(target=self._report_deaths, name="proxy-siblings", daemon=True).start()

    def _report_deaths(self) -> None:
        alive = {process.sentinel: process for process in self.processes}
        while alive:
            for sentinel in wait(list(alive)):
                process = alive.pop(sentinel)
                process.join()
                if not self.stopping.is_set():
                    _echo(f"hpsearch proxy: process {process.pid} exited (code {process.exitcode}); "
                          f"{len(alive) + 1} go on serving, and its workers reconnect to them")

    def stop(self) -> None:
        self.stopping.set()
        for process in self.processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the process stops serving and closes its database
        for process in self.processes:
            process.join(SIBLING_STOP_S)
            if process.is_alive():
                process.kill()
                process.join()


def _check_port_free(host: str, port: int) -> None:
    """``UsageError`` if something listens on ``host:port`` already.

    gRPC binds with SO_REUSEPORT on Linux, so a second proxy on a port in use would start and
    silently share the port with the first: workers would be spread between two proxies.
    """
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            # SO_REUSEADDR: a port whose last proxy just stopped (connections in TIME_WAIT) is free;
            # one something listens on is still refused.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        raise UsageError(f"cannot listen on {host}:{port} ({error.strerror or error}); another hpsearch proxy or "
                         "server may hold it: pick another --port or --host") from None
