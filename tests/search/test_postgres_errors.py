"""A wrong PostgreSQL URL, a wrong password and a stopped server: one line, exit 2, password masked.

The shared test server trusts every connection, so a wrong password cannot fail there; these
tests start a private cluster with password authentication on a free port, then stop it.
"""

import pytest

from tests.private_postgres import private_cluster

PASSWORD = "correct-horse-7"


@pytest.fixture(scope="module")
def password_server():
    """Port of a private PostgreSQL cluster that requires the password; a callable stops it."""
    cluster = private_cluster(password=PASSWORD)
    yield cluster.port, cluster.stop
    cluster.close()


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
