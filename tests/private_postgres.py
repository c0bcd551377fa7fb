"""A private PostgreSQL cluster that a test starts, stops and restarts, so the shared server never is.

It runs the server binaries of this machine as the ``postgres`` user on a free port, in a folder
directly under /tmp (pytest's own tmp tree is root-only). Needs root, ``runuser`` and
``/usr/lib/postgresql/*/bin``; without them ``ClusterUnavailable`` is raised, and the tests'
``private_cluster`` skips (or fails under ``$CI``). ``benchmarks/chaos_run.py`` uses it too.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

AS_POSTGRES = ["runuser", "-u", "postgres", "--"]


class ClusterUnavailable(RuntimeError):
    """This machine cannot run a private PostgreSQL cluster."""


def private_cluster(password: str | None = None) -> PrivateCluster:
    """A started ``PrivateCluster``; skips the test (fails it under ``$CI``) where none can run."""
    try:
        return PrivateCluster(password)
    except ClusterUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {error}")
        pytest.skip(str(error))


class PrivateCluster:
    """``initdb`` + ``pg_ctl`` on a free port of 127.0.0.1; ``password`` turns on scram-sha-256 auth."""

    def __init__(self, password: str | None = None) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not binaries or os.geteuid() != 0 or not shutil.which("runuser"):
            raise ClusterUnavailable("a private PostgreSQL cluster needs root, runuser and the PostgreSQL server binaries")
        self.bin_dir = binaries[-1]
        self.root = Path(tempfile.mkdtemp(prefix="hpsearch-pg-"))
        shutil.chown(self.root, "postgres")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.password = password
        auth = ["--auth=trust"]
        if password is not None:
            (self.root / "pw").write_text(password + "\n")
            shutil.chown(self.root / "pw", "postgres")
            auth = ["--auth=scram-sha-256", f"--pwfile={self.root / 'pw'}"]
        subprocess.run([*AS_POSTGRES, f"{self.bin_dir}/initdb", "-D", str(self.root / "data"), *auth, "-U", "postgres"],
                       check=True, capture_output=True)
        self.start()

    def url(self, database: str = "postgres") -> str:
        secret = f":{self.password}" if self.password is not None else ""
        return f"postgresql://postgres{secret}@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run([*AS_POSTGRES, f"{self.bin_dir}/pg_ctl", "-D", str(self.root / "data"), "-w", *args],
                       check=check, capture_output=True)

    def socket_url(self, database: str = "postgres") -> str:
        """The URL through the cluster's Unix socket, which answers after ``start(tcp=False)`` too."""
        secret = f":{self.password}" if self.password is not None else ""
        return f"postgresql://postgres{secret}@/{database}?host={self.root}&port={self.port}"

    def start(self, tcp: bool = True) -> None:
        """Start the server; without ``tcp`` only its Unix socket answers, so clients of ``url()`` still find it away."""
        listen = "127.0.0.1" if tcp else "''"
        self._pg_ctl("-o", f"-p {self.port} -k {self.root} -c listen_addresses={listen}", "-l", str(self.root / "log"), "start")

    def stop(self) -> None:
        """A fast shutdown, as a restart by an operator: open connections are cut mid-session."""
        self._pg_ctl("-m", "fast", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
