"""The Dagster instance on PostgreSQL (and MLflow beside it), selected by one setting: PDM_POSTGRES_URL.

SQLite (the project's `dagster.yaml`) stays the embedded default for `make demo`. With
`PDM_POSTGRES_URL=postgresql://user[:password]@host:port/db`, `pdm-pipeline instance-config` (run by the
Makefile) renders a copy of the project's dagster.yaml whose runs, events and schedules live in that database
(`dagster-postgres`), everything else unchanged (run coordinator, per-machine limit, run monitoring), into
`.dagster_home/postgres/dagster.yaml`, creates the databases if missing, and names MLflow's tracking store:
database `<db>_mlflow` on the same server (MLflow's schema and Dagster's never share a database).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pdm_pipeline.core.postgres import _safe, ensure_database, mlflow_url, parse_postgres_url, sqlalchemy_url

PROJECT_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"

# The sections of a dagster.yaml whose `base_dir` is a local directory the instance writes to: (section, key of
# the mapping that holds base_dir). Dagster resolves a relative base_dir against the working directory of the
# process that opens the instance, not against DAGSTER_HOME.
_LOCAL_DIRS = (("storage", "sqlite"), ("local_artifact_storage", "config"), ("compute_logs", "config"),
               ("run_storage", "config"), ("event_log_storage", "config"), ("schedule_storage", "config"))


def _map_local_dirs(config: dict[str, Any], place: Callable[[str, str], str]) -> dict[str, str]:
    """Replace, in place, each local `base_dir` given as a path (not `{env: VAR}`) by `place(section, base_dir)`;
    returns the sections changed and their new base_dir."""
    changed = {}
    for section, key in _LOCAL_DIRS:
        holder = (config.get(section) or {}).get(key)
        if isinstance(holder, dict) and isinstance(holder.get("base_dir"), str):
            holder["base_dir"] = changed[section] = place(section, holder["base_dir"])
    return changed


def render(base_dir: Path, *, postgres_url: str | None = None, max_concurrent_runs: int | None = None,
           template: Path = PROJECT_YAML) -> str:
    """The project's dagster.yaml with its local directories under `base_dir` (absolute), the storage on
    PostgreSQL when a URL is given, and optionally another number of concurrent runs."""
    import yaml

    config: dict[str, Any] = yaml.safe_load(template.read_text())
    base = Path(base_dir).resolve()
    _map_local_dirs(config, lambda section, value: str(base / ("storage" if section == "storage" else Path(value).name)))
    if postgres_url:
        parse_postgres_url(postgres_url)
        config["storage"] = {"postgres": {"postgres_url": sqlalchemy_url(postgres_url)}}
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


def absolute_dirs(home: Path) -> dict[str, Any]:
    """The sections of `<home>/dagster.yaml` that name a local directory, a relative one made absolute against
    `home` (empty when the file names none): the overrides that make an instance opened from any working
    directory use the same files."""
    import yaml

    home = Path(home).resolve()
    path = home / "dagster.yaml"
    config = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    changed = _map_local_dirs(config, lambda _section, value: str(home / value))
    return {section: config[section] for section in changed}  # (an absolute one stays: home / "/x" is "/x")


def open_instance(home: Path | str) -> Any:
    """The Dagster instance of `home` (a directory with a dagster.yaml), whatever DAGSTER_HOME and working directory
    this process has: relative local directories in its dagster.yaml are read against `home`, as the project's
    dagster.yaml means them (Dagster itself reads them against the working directory)."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    home = Path(home).resolve()
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides=absolute_dirs(home)))


def misplaced_directories(instance: Any, home: Path | str | None = None, cwd: Path | str | None = None) -> str | None:
    """Why `instance` writes elsewhere than its home's dagster.yaml means, or None. Dagster reads a relative
    `base_dir` against the process's working directory: `dagster dev` or the daemon started outside the home
    (default $DAGSTER_HOME) would keep runs, events and logs in a second, empty store beside the project's."""
    import yaml

    home = home or os.environ.get("DAGSTER_HOME")
    if not home or not (Path(home) / "dagster.yaml").is_file():
        return None
    home, cwd = Path(home).resolve(), Path(cwd or os.getcwd()).resolve()
    if home == cwd:
        return None
    config = yaml.safe_load((home / "dagster.yaml").read_text()) or {}
    relative = [value for value in _map_local_dirs(config, lambda _section, value: value).values()
                if not Path(value).is_absolute()]
    used = set(instance_directories(instance))
    wrong = [(cwd / value).resolve() for value in relative if (cwd / value).resolve() in used
             and (home / value).resolve() not in used]
    if not wrong:
        return None
    return (f"{home / 'dagster.yaml'} names relative directories ({', '.join(relative)}), which Dagster reads against "
            f"the working directory {cwd}: this process would use {', '.join(map(str, wrong))} instead of the "
            f"project's under {home}. Start it from {home} (`make dev` does)")


def instance_directories(instance: Any) -> list[Path]:
    """The local directories the instance writes to (its SQLite storage, artifacts, compute logs), absolute as the
    instance resolves them (a relative one against this process's working directory). A database storage such as
    PostgreSQL adds none: its files are the server's."""
    try:
        ref = instance.get_ref()
    except Exception:  # an ephemeral instance: only its artifact directory is on disk
        return [Path(instance.root_directory).resolve()]
    return _ref_directories(ref)


def home_directories(home: Path | str | None = None) -> list[Path]:
    """The local directories the instance of `home` (default $DAGSTER_HOME) writes to, as `open_instance` opens it
    (nothing is opened); [] when no home is set, the home itself when it does not exist yet."""
    from dagster._core.instance.ref import InstanceRef

    home = home or os.environ.get("DAGSTER_HOME")
    if not home:
        return []
    home = Path(home).resolve()
    if not home.is_dir():
        return [home]
    return _ref_directories(InstanceRef.from_dir(str(home), overrides=absolute_dirs(home)))


def _ref_directories(ref: Any) -> list[Path]:
    import yaml

    found: list[Path] = []
    for data in (ref.local_artifact_storage_data, ref.compute_logs_data, ref.storage_data, ref.run_storage_data,
                 ref.event_storage_data, ref.schedule_storage_data):
        value = (yaml.safe_load(data.config_yaml) or {}).get("base_dir") if data is not None else None
        if isinstance(value, dict) and "env" in value:  # {env: VAR}, as Dagster reads it
            value = os.environ.get(value["env"])
        if isinstance(value, str) and value:
            directory = Path(value).resolve()
            if directory not in found:
                found.append(directory)
    # a directory inside another one listed (the storage's history/ in storage/) is judged with the outer one
    return [d for d in found if not any(o != d and o in d.parents for o in found)]
