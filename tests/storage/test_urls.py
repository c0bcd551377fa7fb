"""mask_password: no part of a password shows, whatever form the URL takes, alone or inside text."""

from __future__ import annotations

import re

import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from hpsearch.storage.urls import ProxyAddress, StorageURLError, mask_password, parse_proxy_url, parse_storage_url

# Each: a URL, the password in it as the user wrote it, what mask_password shows.
PASSWORD_URLS = [
    ("postgresql://user:s3cret@host:5432/db", "s3cret", "postgresql://user:***@host:5432/db"),
    ("postgresql://user:p@ss@word@host:5432/db", "p@ss@word", "postgresql://user:***@host:5432/db"),
    ("postgresql://user:3tzz@@host/db", "3tzz@", "postgresql://user:***@host/db"),
    ("postgresql://user:pa/ss?x#y@host/db", "pa/ss?x#y", "postgresql://user:***@host/db"),
    ("postgresql://user:pa:ss@host/db", "pa:ss", "postgresql://user:***@host/db"),
    ("postgresql://user:p%40ss%2F@host/db", "p%40ss%2F", "postgresql://user:***@host/db"),
    ("postgresql://us@er:s3cret@host/db", "s3cret", "postgresql://us@er:***@host/db"),
    ("postgresql://:s3cret@host/db", "s3cret", "postgresql://:***@host/db"),
    ("postgresql+psycopg://user:s3cret@[::1]:5432/db", "s3cret", "postgresql+psycopg://user:***@[::1]:5432/db"),
    ("postgresql://user:pass word@host/db", "pass word", "postgresql://user:***@host/db"),
    (
        "postgresql://host/db?user=u&password=s3cret&sslmode=require",
        "s3cret",
        "postgresql://host/db?user=u&password=***&sslmode=require",
    ),
    ("postgresql://host/db?PASSWORD=s3cret", "s3cret", "postgresql://host/db?PASSWORD=***"),
    ("postgresql://u@host:5432/db?password=sec@ret", "sec@ret", "postgresql://u@host:5432/db?password=***"),
    ("postgresql://u@host/db?sslmode=disable&password=s@c@ret", "s@c@ret", "postgresql://u@host/db?sslmode=disable&password=***"),
]


@pytest.mark.parametrize(("url", "password", "shown"), PASSWORD_URLS)
def test_no_part_of_the_password_shows(url: str, password: str, shown: str) -> None:
    assert mask_password(url) == shown
    assert password not in mask_password(url)


@pytest.mark.parametrize(("url", "password", "shown"), PASSWORD_URLS)
def test_urls_inside_text_are_masked_and_the_text_kept(url: str, password: str, shown: str) -> None:
    text = """cannot open storage '{}': refused (ask admin@example.com)\nstorage = "{}"\n"""
    assert mask_password(text.format(url, url)) == text.format(shown, shown)
    if " " not in password:  # unquoted, a URL ends at the first blank
        assert mask_password(f"retry {url} now\n{url}") == f"retry {shown} now\n{shown}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql//postgres:Hunter2pw@127.0.0.1:5432/db", "postgresql//postgres:***@127.0.0.1:5432/db"),
        ("postgres:Hunter2pw@127.0.0.1/db", "postgres:***@127.0.0.1/db"),
        ("postgresql:/postgres:Hunter2pw@127.0.0.1/db", "postgresql:***@127.0.0.1/db"),
        ("postgresql:user:Hunter2pw:x@y@host/db", "postgresql:***@host/db"),
    ],
)
def test_a_url_mistyped_without_its_slashes_is_masked_in_the_malformed_url_line(url: str, shown: str) -> None:
    """A new user's postgresql//user:pw@host/db printed the password in clear: masking keyed on "://"."""
    assert mask_password(url) == shown
    with pytest.raises(StorageURLError) as error:
        parse_storage_url(url)
    assert "Hunter2pw" not in str(error.value) and f"malformed storage URL {shown!r}" in str(error.value)


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://postgres@127.0.0.1:5432/db",
        "postgresql://host:5432/db?sslmode=require",
        "sqlite:////tmp/runs@2024/x:y.db",
        "sqlite:///hpsearch.db",
        "no URL here: user:pw@host",
        "",
    ],
)
def test_text_without_a_password_is_unchanged(text: str) -> None:
    assert mask_password(text) == text


def test_the_masked_password_is_the_one_sqlalchemy_would_send() -> None:
    # SQLAlchemy itself reads "p@ss@word@host" as password "p" on host "ss@word@host", so its own
    # hide_password shows the rest; the mask must hide what the user typed, all of it.
    url = "postgresql://user:p@ss@word@host:5432/db"
    assert "ss@word" in make_url(url).render_as_string(hide_password=True)
    assert "ss@word" not in mask_password(url)


def test_an_unencoded_at_sign_stays_in_the_password() -> None:
    parsed = parse_storage_url("postgresql://user:p@ss@word@host:5432/db?application_name=me@lab")
    assert (parsed.username, parsed.password, parsed.host, parsed.port) == ("user", "p@ss@word", "host", 5432)
    assert dict(parsed.query) == {"application_name": "me@lab"}


def test_an_at_sign_in_a_query_password_stays_in_it() -> None:
    parsed = parse_storage_url("postgresql://u@host:5432/db?sslmode=disable&password=sec@ret")
    assert (parsed.username, parsed.password, parsed.host, parsed.port, parsed.database) == ("u", None, "host", 5432, "db")
    assert dict(parsed.query) == {"sslmode": "disable", "password": "sec@ret"}


def _answers(url: sqlalchemy.URL) -> bool:
    """Whether the server at ``url`` answers a query."""
    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_a_url_with_an_unencoded_at_sign_in_the_password_connects(postgres_server: str) -> None:
    # The test server trusts every connection, so the password is not checked, but the host is:
    # read as SQLAlchemy reads it, it would be "ss@127.0.0.1", which no resolver knows.
    server = make_url(postgres_server)
    url = server.render_as_string(hide_password=False).replace(f"//{server.username}@", f"//{server.username}:p@ss@", 1)
    assert "p@ss@" in url
    assert _answers(parse_storage_url(url))


def test_the_postgres_scheme_is_read_as_postgresql_and_connects(postgres_server: str) -> None:
    url = make_url(postgres_server).render_as_string(hide_password=False)
    spelled = re.sub(r"^postgresql(\+\w+)?://", "postgres://", url)
    assert spelled.startswith("postgres://") and parse_storage_url(spelled) == parse_storage_url(url)
    assert _answers(parse_storage_url(spelled))


@pytest.mark.parametrize(
    ("url", "address"),
    [("grpc://127.0.0.1:13001", ProxyAddress("127.0.0.1", 13001)), ("grpc://proxy-host", ProxyAddress("proxy-host", 13000)),
     ("GRPC://proxy-host:80/", ProxyAddress("proxy-host", 80))],
)
def test_a_proxy_url_is_a_host_and_a_port(url: str, address: ProxyAddress) -> None:
    assert parse_proxy_url(url) == address
    assert str(address) == f"grpc://{address.host}:{address.port}"


@pytest.mark.parametrize(
    ("url", "message"),
    [("grpc://", "names no host"), ("grpc://host:99999", "malformed proxy URL"),
     ("grpc://user:s3cret@host:1", "holds more than host and port"), ("grpc://host:1/db", "holds more than host and port"),
     ("grpc://host:1?password=s3cret", "holds more than host and port")],
)
def test_a_proxy_url_with_anything_but_host_and_port_is_refused_without_its_password(url: str, message: str) -> None:
    with pytest.raises(StorageURLError, match=message) as refused:
        parse_proxy_url(url)
    assert "s3cret" not in str(refused.value)


def test_a_proxy_url_where_a_database_is_read_says_to_pass_the_database() -> None:
    with pytest.raises(StorageURLError, match="reads the database itself; pass its sqlite:/// or postgresql:// URL"):
        parse_storage_url("grpc://127.0.0.1:13000")


@pytest.mark.parametrize(
    ("url", "fix"),
    [("sqlite://ett.db", "sqlite:///ett.db"), ("sqlite://runs/ett.db", "sqlite:///runs/ett.db")],
)
def test_a_sqlite_url_with_two_slashes_says_how_to_write_it(url: str, fix: str) -> None:
    with pytest.raises(StorageURLError, match=f"names no file .*: {fix}, or sqlite:////absolute"):
        parse_storage_url(url)
