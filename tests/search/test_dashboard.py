"""``hpsearch dashboard``: the real server in a subprocess, looked at in a real Chromium."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest

from hpsearch.search.dashboard_cli import dashboard_main
from hpsearch.search.errors import UsageError
from hpsearch.storage import StudyDatabase, trials_frame
from hpsearch.storage.errors import StorageError
from hpsearch.storage.export import find_study
from tests.browser import artifacts_dir, browser  # noqa: F401  (browser is a fixture)
from tests.search.conftest import hpsearch_command
from tests.search.test_report import SEARCHED_STUDY, files, searched_study

optuna.logging.set_verbosity(optuna.logging.ERROR)
URL_LINE = re.compile(r"^  (http://\S+/dashboard/)$", re.MULTILINE)


@contextmanager
def dashboard(*args: str, cwd: Path) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """``hpsearch dashboard ARGS`` running; yields the process, its dashboard URL and what it printed."""
    env = {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}
    process = subprocess.Popen([*hpsearch_command(), "dashboard", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        printed = ""
        while not printed.endswith("Ctrl-C stops it.\n"):  # the last line printed before serving
            try:
                printed += lines.get(timeout=60)
            except queue.Empty:
                process.kill()
                pytest.fail(f"the dashboard printed no URL in 60 s: {printed!r} {process.stderr.read()!r}")
        found = URL_LINE.search(printed)
        assert found, printed
        yield process, found[1], printed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop(process: subprocess.Popen[str], how: signal.Signals) -> tuple[int, str]:
    """Send ``how``; the exit code and stderr once the server has stopped."""
    process.send_signal(how)
    code = process.wait(timeout=15)
    return code, process.stderr.read()


@pytest.fixture(scope="module")
def real_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return searched_study(tmp_path_factory)


def test_dashboard_shows_trials_intermediate_values_and_flops(real_url, tmp_path, browser):  # noqa: F811
    trials = trials_frame(real_url, SEARCHED_STUDY).set_index("number")
    with StudyDatabase.open_for_reading(real_url).connect() as connection:
        study_id = find_study(connection, SEARCHED_STUDY).study_id

    with dashboard("--storage", real_url, "--port", "0", cwd=tmp_path) as (process, url, printed):
        assert url.startswith("http://127.0.0.1:") and not url.startswith("http://127.0.0.1:0/")
        assert printed.splitlines()[0] == f"optuna-dashboard on {real_url}"
        port = int(url.split(":")[2].split("/")[0])
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        # Bound to 127.0.0.1 only: the rest of the loopback network is refused.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=5).close()

        # The study page: the intermediate-value plot, one line per trial.
        page = browser.open(f"{url}studies/{study_id}")
        page.wait_for("document.querySelector('#graph-intermediate-values .main-svg') !== null")
        legend = page.wait_for(
            "(t => t.includes('trial #0') && t.includes('trial #1') && t)"
            "(document.querySelector('#graph-intermediate-values').textContent)"
        )
        assert "Intermediate values" in page.text() and SEARCHED_STUDY in page.text()
        shot = page.screenshot(artifacts_dir() / "dashboard-study.png")
        print(f"screenshot: {shot}")
        assert legend and shot.stat().st_size > 10_000

        # The trial list: every trial, and the selected trial's flops.* user attributes.
        page.goto(f"{url}studies/{study_id}/trials")
        text = page.wait_for("(t => t.includes('flops.per_sample_forward') && t)(document.body.innerText)")
        assert "Trial 0" in text and "Trial 1" in text
        shown = dict(re.findall(r"^(flops\.[\w.]+) (\S+)$", text, re.MULTILINE))
        expected = {c.removeprefix("user_attrs_"): v for c, v in trials.loc[0].items() if c.startswith("user_attrs_flops.")}
        assert set(shown) == set(expected)
        assert float(shown["flops.total"]) == expected["flops.total"]
        # The attributes box scrolls on its own; bring the FLOPs total into the screenshot.
        page.evaluate("[...document.querySelectorAll('*')].find(e => !e.children.length && e.textContent.startsWith('flops.total')).scrollIntoView()")
        shot = page.screenshot(artifacts_dir() / "dashboard-trials.png")
        print(f"screenshot: {shot}")
        assert page.errors == []

        code, err = stop(process, signal.SIGTERM)
    assert code == 0 and "Traceback" not in err, err


def test_ctrl_c_stops_the_server_with_exit_0(sqlite_url, study_name, tmp_path):
    optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(sqlite_url).storage)
    with dashboard("--storage", sqlite_url, "--port", "0", cwd=tmp_path) as (process, url, _):
        with urllib.request.urlopen(url.replace("/dashboard/", "/api/studies"), timeout=10) as response:
            assert study_name in response.read().decode()
        code, err = stop(process, signal.SIGINT)
    assert code == 0 and "Traceback" not in err, err


def test_passwords_are_masked_in_what_is_printed(postgres_url, study_name, tmp_path):
    # The test server trusts local connections, so any password gets in.
    optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(postgres_url).storage)
    with_password = postgres_url.replace("://postgres@", "://postgres:s3cret-pw@")
    assert "s3cret-pw" in with_password
    with dashboard("--storage", with_password, "--port", "0", cwd=tmp_path) as (process, _, printed):
        code, err = stop(process, signal.SIGTERM)
    assert "s3cret-pw" not in printed + err and "postgres:***@" in printed
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage", "not a url"], "malformed storage URL"),
        (["--storage", "sqlite:///{tmp}/typo.db"], "no database file"),
        (["--storage", "sqlite:///{tmp}/empty.db"], "holds no Optuna studies"),
        (["--port", "70000"], "--port must be between 0 and 65535"),
        (["--host", "no-such-host.invalid"], "--host no-such-host.invalid: no such address"),
        (["--port", "{busy}"], "port {busy} on 127.0.0.1 is in use; pass --port N"),
        (["--storage", "postgresql://alice:s3cret-pw@127.0.0.1:9/db"], r"cannot read storage postgresql://alice:\*\*\*@127.0.0.1:9/db"),
        (["--prot", "1"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_usage_error_and_creates_nothing(sqlite_url, study_name, tmp_path, monkeypatch, args, message):
    optuna.create_study(study_name=study_name, storage=StudyDatabase.open_for_search(sqlite_url).storage)
    monkeypatch.setenv("HPSEARCH_STORAGE", sqlite_url)
    (tmp_path / "empty.db").touch()
    before = files(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        values = {"tmp": tmp_path, "busy": busy.getsockname()[1]}

        with pytest.raises((UsageError, StorageError), match=message.format(**values)) as error:
            dashboard_main([a.format(**values) for a in args])

    assert "\n" not in str(error.value) and "s3cret-pw" not in str(error.value)
    assert files(tmp_path) == before


def test_hpsearch_dashboard_exits_2_with_one_line(run_hpsearch, tmp_path):
    result = run_hpsearch("dashboard", "--storage", f"sqlite:///{tmp_path / 'none.db'}")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no database file" in result.stderr
    assert not (tmp_path / "none.db").exists()
