"""The Dagster instance on PostgreSQL (and MLflow beside it), selected by one setting: PDM_POSTGRES_URL.

SQLite (the project's `dagster.yaml`) stays the embedded default for `make demo`. With
`PDM_POSTGRES_URL=postgresql://user[:password]@host:port/db`, `pdm-pipeline instance-config` (run by the
Makefile) renders a copy of the project's dagster.yaml whose runs, events and schedules live in that database
(`dagster-postgres`), everything else unchanged (run coordinator, per-machine limit, run monitoring), into
`.dagster_home/postgres/dagster.yaml`, creates the databases if missing, and names MLflow's tracking store:
database `<db>_mlflow` on the same server (MLflow's schema and Dagster's never share a database).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pdm_pipeline.core.postgres import _safe, ensure_database, mlflow_url, parse_postgres_url, sqlalchemy_url

PROJECT_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"


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
