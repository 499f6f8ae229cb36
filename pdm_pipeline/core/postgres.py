"""PostgreSQL URLs of the Dagster instance and of MLflow beside it, from the one setting PDM_POSTGRES_URL.

Plain Python (no Dagster): `core/tracking.py` derives MLflow's store from it, `defs/instance_config.py` renders
the Dagster instance on it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from pdm_pipeline.errors import PdmError

POSTGRES_ENV = "PDM_POSTGRES_URL"
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class InstanceConfigError(PdmError):
    """A PostgreSQL URL or database that cannot be used; the message names the URL (without password)."""


def _unreachable(url: str, exc: Exception | None) -> InstanceConfigError:
    first = str(exc).strip().splitlines()[0] if exc and str(exc).strip() else "unknown error"
    return InstanceConfigError(f"PostgreSQL at {_safe(url)} is unreachable or refuses the connection: {first}")


def _safe(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def parse_postgres_url(url: str) -> tuple[str, str]:
    """(server URL without database or query, database name); refuses what is not postgresql://.../<db>."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg2"):
        raise InstanceConfigError(f"{POSTGRES_ENV}={_safe(url)!r}: expected postgresql://user@host:port/database")
    database = parts.path.lstrip("/")
    if not _DB_NAME.match(database):
        raise InstanceConfigError(f"{POSTGRES_ENV}={_safe(url)!r}: the database name {database!r} must be letters, "
                                  "digits and underscores")
    return urlunsplit(parts._replace(scheme="postgresql", path="", query="", fragment="")), database


def with_database(url: str, database: str, scheme: str = "postgresql") -> str:
    """`url` pointing at `database` instead, its query (sslmode=..., connect_timeout=...) kept."""
    parse_postgres_url(url)
    return urlunsplit(urlsplit(url)._replace(scheme=scheme, path=f"/{database}", fragment=""))


def sqlalchemy_url(url: str) -> str:
    """The URL with the psycopg2 driver named: dagster-postgres (and MLflow) connect through SQLAlchemy, whose
    default PostgreSQL driver is psycopg 3 since 2.1; dagster-postgres's `NOTIFY run_events, %s` needs psycopg2."""
    _, database = parse_postgres_url(url)
    return with_database(url, database, scheme="postgresql+psycopg2")


def mlflow_url(url: str) -> str:
    """MLflow's tracking store for a Dagster instance on `url`: database `<db>_mlflow` on the same server."""
    _, database = parse_postgres_url(url)
    return sqlalchemy_url(with_database(url, f"{database}_mlflow"))


def ensure_database(url: str) -> bool:
    """Create the database of `url` if it does not exist (connecting to the server's `postgres` database, else
    to the URL's own); True when it was created. Fails naming the server when PostgreSQL is unreachable."""
    import psycopg2
    from psycopg2 import sql

    _, database = parse_postgres_url(url)
    last: Exception | None = None
    for maintenance in ("postgres", "template1"):
        try:
            connection = psycopg2.connect(with_database(url, maintenance), connect_timeout=5)
        except psycopg2.OperationalError as exc:
            last = exc
            continue
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone():
                    return False
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                return True
        finally:
            connection.close()
    raise _unreachable(url, last)


@contextlib.contextmanager
def advisory_lock(url: str, name: str) -> Iterator[None]:
    """Hold PostgreSQL's session advisory lock `name` on the database of `url` while the block runs: one
    process at a time across hosts. The lock belongs to this connection, so a process killed while holding it
    releases it with its connection (the server ends the session); nothing stale is ever left behind."""
    import psycopg2

    _, database = parse_postgres_url(url)
    try:
        connection = psycopg2.connect(with_database(url, database), connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise _unreachable(url, exc) from exc
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(hashtext(%s))", (name,))
        yield
    finally:
        connection.close()  # ends the session: the lock goes with it


def configured_url() -> str | None:
    """$PDM_POSTGRES_URL, or None (SQLite)."""
    return os.environ.get(POSTGRES_ENV) or None
