"""A wrong PostgreSQL URL, a wrong password and a stopped server: one line, exit 2, password masked.

The shared test server trusts every connection, so a wrong password cannot fail there; these
tests start a private cluster with password authentication on a free port, then stop it.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

PASSWORD = "correct-horse-7"


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def password_server():
    """Port of a private PostgreSQL cluster that requires the password; a callable stops it."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not binaries or os.geteuid() != 0 or not shutil.which("runuser"):
        _skip_or_fail("a private PostgreSQL cluster needs root, runuser and the PostgreSQL server binaries")
    bin_dir = binaries[-1]
    # Directly under /tmp: pytest's own tmp tree is root-only, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="hpsearch-pg-"))
    shutil.chown(root, "postgres")
    (root / "pw").write_text(PASSWORD + "\n")
    shutil.chown(root / "pw", "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, f"{bin_dir}/initdb", "-D", str(root / "data"), "--auth=scram-sha-256",
                    f"--pwfile={root / 'pw'}", "-U", "postgres"], check=True, capture_output=True)
    control = [*as_postgres, f"{bin_dir}/pg_ctl", "-D", str(root / "data"), "-w"]
    subprocess.run([*control, "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "-l", str(root / "log"), "start"],
                   check=True, capture_output=True)

    def stop() -> None:
        subprocess.run([*control, "stop"], capture_output=True)

    yield port, stop
    stop()
    shutil.rmtree(root, ignore_errors=True)


def assert_one_line_exit_2(result, *hidden):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpsearch: error: "), result.stderr
    for secret in hidden:
        assert secret not in result.stdout + result.stderr
    return lines[0]


def test_the_right_password_works(password_server, run_hpsearch):
    port, _ = password_server
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
    result = run_hpsearch("--models", "tfn_classifier", "--storage", url, "--epochs", "1", "--dataset-size", "20",
                          "--seq-len", "4", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "postgresql://postgres:***@127.0.0.1" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    studies = run_hpsearch("studies", "--storage", url)
    assert studies.returncode == 0 and "tfn_classifier-synthetic_tokens" in studies.stdout
    assert PASSWORD not in studies.stdout + studies.stderr


@pytest.mark.parametrize("command", [[], ["worker", "--study", "s"], ["studies"]])
def test_a_wrong_password_is_one_masked_line(command, password_server, run_hpsearch, tmp_path):
    port, _ = password_server
    url = f"postgresql://postgres:not-{PASSWORD}@127.0.0.1:{port}/postgres"
    search = ["--models", "tfn_classifier"] if not command else []
    line = assert_one_line_exit_2(run_hpsearch(*command, *search, "--storage", url), f"not-{PASSWORD}")
    assert "password authentication failed" in line and "postgres:***@" in line
    assert list(tmp_path.iterdir()) == []


def test_a_database_that_does_not_exist(postgres_server, run_hpsearch):
    url = postgres_server.rsplit("/", 1)[0] + "/no_such_database_hpsearch"
    line = assert_one_line_exit_2(run_hpsearch("--models", "tfn_classifier", "--storage", url))
    assert 'database "no_such_database_hpsearch" does not exist' in line


def test_a_stopped_server(password_server, run_hpsearch):
    port, stop = password_server
    stop()
    line = assert_one_line_exit_2(
        run_hpsearch("--models", "tfn_classifier", "--storage", f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"),
        PASSWORD,
    )
    assert "Connection refused" in line
