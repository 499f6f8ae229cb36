"""The Dagster instance on PostgreSQL (and MLflow beside it), selected by one setting: PDM_POSTGRES_URL.

SQLite (the project's `dagster.yaml`) stays the embedded default for `make demo`. With
`PDM_POSTGRES_URL=postgresql://user[:password]@host:port/db`, `pdm-pipeline instance-config` (run by the
Makefile) renders a copy of the project's dagster.yaml whose runs, events and schedules live in that database
(`dagster-postgres`), everything else unchanged (run coordinator, per-machine limit, run monitoring), into
`.dagster_home/postgres/dagster.yaml`, creates the databases if missing, and names MLflow's tracking store:
database `<db>_mlflow` on the same server (MLflow's schema and Dagster's never share a database).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pdm_pipeline.errors import PdmError

POSTGRES_ENV = "PDM_POSTGRES_URL"
PROJECT_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class InstanceConfigError(PdmError):
    """A PostgreSQL URL or database that cannot be used; the message names the URL (without password)."""


def _safe(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def parse_postgres_url(url: str) -> tuple[str, str]:
    """(server URL without database, database name); refuses what is not postgresql://.../<db>."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg2"):
        raise InstanceConfigError(f"{POSTGRES_ENV}={_safe(url)!r}: expected postgresql://user@host:port/database")
    database = parts.path.lstrip("/")
    if not _DB_NAME.match(database):
        raise InstanceConfigError(f"{POSTGRES_ENV}={_safe(url)!r}: the database name {database!r} must be letters, "
                                  "digits and underscores")
    return urlunsplit(parts._replace(scheme="postgresql", path="")), database


def with_database(url: str, database: str) -> str:
    server, _ = parse_postgres_url(url)
    return f"{server}/{database}"


def sqlalchemy_url(url: str) -> str:
    """The URL with the psycopg2 driver named: dagster-postgres (and MLflow) connect through SQLAlchemy, whose
    default PostgreSQL driver is psycopg 3 since 2.1; dagster-postgres's `NOTIFY run_events, %s` needs psycopg2."""
    server, database = parse_postgres_url(url)
    return f"postgresql+psycopg2{server[len('postgresql'):]}/{database}"


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
    raise InstanceConfigError(f"PostgreSQL at {_safe(url)} is unreachable or refuses the connection: "
                              f"{str(last).strip().splitlines()[0] if last else 'unknown error'}")


def render(base_dir: Path, *, postgres_url: str | None = None, max_concurrent_runs: int | None = None,
           template: Path = PROJECT_YAML) -> str:
    """The project's dagster.yaml with its local directories under `base_dir` (absolute), the storage on
    PostgreSQL when a URL is given, and optionally another number of concurrent runs."""
    import yaml

    config: dict[str, Any] = yaml.safe_load(template.read_text())
    base = Path(base_dir).resolve()
    for section in ("local_artifact_storage", "compute_logs"):
        if section in config and "base_dir" in config[section].get("config", {}):
            config[section]["config"]["base_dir"] = str(base / Path(config[section]["config"]["base_dir"]).name)
    if postgres_url:
        parse_postgres_url(postgres_url)
        config["storage"] = {"postgres": {"postgres_url": sqlalchemy_url(postgres_url)}}
    elif "sqlite" in config.get("storage", {}):
        config["storage"]["sqlite"]["base_dir"] = str(base / "storage")
    if max_concurrent_runs is not None:
        config["concurrency"]["runs"]["max_concurrent_runs"] = int(max_concurrent_runs)
    header = (f"# Rendered by `pdm-pipeline instance-config` from {template.name}: "
              f"{'PostgreSQL ' + _safe(postgres_url) if postgres_url else 'SQLite'}. Do not edit; edit the template.\n")
    return header + yaml.safe_dump(config, sort_keys=False)


def write_instance(home: Path, *, postgres_url: str | None = None, max_concurrent_runs: int | None = None,
                   create_databases: bool = True) -> dict[str, str]:
    """Write `<home>/dagster.yaml` (storage under `<home>`), create the databases; returns the environment a
    process needs to use it (DAGSTER_HOME, and MLFLOW_TRACKING_URI with PostgreSQL)."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {"DAGSTER_HOME": str(home)}
    if postgres_url:
        if create_databases:
            ensure_database(postgres_url)
            ensure_database(mlflow_url(postgres_url))
        env["MLFLOW_TRACKING_URI"] = mlflow_url(postgres_url)
    text = render(home, postgres_url=postgres_url, max_concurrent_runs=max_concurrent_runs)
    tmp = home / "dagster.yaml.tmp"
    tmp.write_text(text)
    tmp.replace(home / "dagster.yaml")
    return env


def open_instance(home: Path) -> Any:
    """The Dagster instance of the home `write_instance` wrote (whatever DAGSTER_HOME this process has)."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
