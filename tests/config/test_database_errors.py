"""Which database errors are an outage (503 with Retry-After) and which are the
application's own (500): a deadlock or a missing table must not hide behind a 503."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from django.db import InterfaceError, OperationalError, ProgrammingError

from apikeys.exceptions import is_database_down


def wrapped(cause: BaseException, error: type[Exception] = OperationalError) -> Exception:
    """A driver error as Django raises it: its own class, the driver's as the cause."""
    try:
        try:
            raise cause
        except Exception as exc:
            raise error(*exc.args) from exc
    except Exception as django_error:
        return django_error


def locked_sqlite_error(tmp_path: Path) -> sqlite3.OperationalError:
    path = tmp_path / "db.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0)
    try:
        other.execute("SELECT * FROM t")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        other.close()
        holder.close()
    raise AssertionError("the second connection was not refused")


def missing_table_sqlite_error() -> sqlite3.OperationalError:
    try:
        sqlite3.connect(":memory:").execute("SELECT * FROM no_such_table")
    except sqlite3.OperationalError as exc:
        return exc
    raise AssertionError("the query did not fail")


def refused_connection_error() -> psycopg.OperationalError:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        psycopg.connect(f"host=127.0.0.1 port={port} connect_timeout=2")
    except psycopg.OperationalError as exc:
        return exc
    raise AssertionError("the connection was not refused")


def test_an_unreachable_or_busy_database_is_an_outage(tmp_path: Path) -> None:
    assert is_database_down(wrapped(refused_connection_error()))
    assert is_database_down(wrapped(psycopg.errors.AdminShutdown("terminating connection")))
    assert is_database_down(wrapped(psycopg.errors.CannotConnectNow("starting up")))
    assert is_database_down(wrapped(psycopg.errors.TooManyConnections("too many clients")))
    assert is_database_down(wrapped(locked_sqlite_error(tmp_path)))
    assert is_database_down(InterfaceError("connection already closed"))


@pytest.mark.parametrize(
    "cause",
    [
        psycopg.errors.DeadlockDetected("deadlock detected"),
        psycopg.errors.SerializationFailure("could not serialize access"),
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    ],
    ids=["deadlock", "serialization", "statement-timeout"],
)
def test_an_error_of_the_application_is_not_an_outage(cause: Exception) -> None:
    assert not is_database_down(wrapped(cause))


def test_a_missing_table_is_not_an_outage() -> None:
    assert not is_database_down(wrapped(missing_table_sqlite_error()))
    assert not is_database_down(wrapped(psycopg.errors.UndefinedTable("x"), ProgrammingError))
    assert not is_database_down(OperationalError("raised with no driver error behind it"))


def test_postgresql_connections_give_up_after_a_few_seconds() -> None:
    """An unreachable server is a 503 in seconds, not after the TCP timeout (minutes)."""
    import subprocess
    import sys

    from tests.apikeys.guards.conftest import child_env, project_root

    def options(url: str) -> str:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import django; django.setup(); from django.conf import settings; "
                "print(settings.DATABASES['default'].get('OPTIONS', {}).get('connect_timeout'))",
            ],
            cwd=project_root(),
            env=child_env(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="config.settings"),
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1]

    assert options("postgres://u@127.0.0.1:5432/db") == "3"
    assert options("postgres://u@127.0.0.1:5432/db?connect_timeout=9") == "9"
