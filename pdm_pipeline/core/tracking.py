"""MLflow tracking of every trained model, and the champion rule of the model registry.

Every model materialization gets its OWN MLflow run, nested (tag `mlflow.parentRunId`) under the run that
dagster-mlflow's `mlflow_tracking` resource opens for the whole Dagster run. Two reasons:

- dagster-mlflow reuses one MLflow run per Dagster run, and MLflow refuses to log a param twice with a
  different value, so the params of the classifier and of the regressor would collide in one run;
- with MLflow 3 the run made active in a step process is ended by MLflow's own atexit hook when that
  process exits (dagster-mlflow unregisters `mlflow.end_run`, but MLflow 3 registers `_safe_end_run`),
  so the shared run can be FINISHED while other steps still run.

So nothing here uses MLflow's global "active run": child runs are created, filled and terminated through
`MlflowClient` with explicit run ids, and every function takes an explicit `tracking_uri`. A child run is
always terminated (FINISHED, or FAILED when logging raised), and the parent run is never touched.

Child runs carry the Dagster run id under the tag `dagster.run_id`, NOT `dagster_run_id`: dagster-mlflow
finds "the" run of a Dagster run by searching `tags.dagster_run_id = '<id>'` and takes the newest match, so
a child carrying that tag would be resumed as the parent by the next step process.

Storage: `default_tracking_uri` gives a SQLite store (MLflow 3's default backend; the file store raises
unless MLFLOW_ALLOW_FILE_STORE=true) with the model registry in the same database, and `ensure_experiment`
puts a local store's artifacts beside the database in `<root>/mlruns`, whatever the working directory.

MLflow is imported inside the functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdm_pipeline.core.paths import mlflow_dir, validate_machine_id

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mlflow import MlflowClient

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
MLFLOW_DB_NAME = "mlflow.db"
# Artifact path of the model directory inside a child run; registered versions point at runs:/<id>/model.
MODEL_ARTIFACT_PATH = "model"
CHAMPION_ALIAS = "champion"
# Always the version in the machine's current release (on disk and in the edge bundle).
DEPLOYED_ALIAS = "deployed"
TAG_RELEASE = "release_id"

# Tags of a child run.
TAG_MACHINE_ID = "machine_id"
TAG_MODEL_TYPE = "model_type"
TAG_DATA_VERSION = "data_version"
TAG_DAGSTER_RUN_ID = "dagster.run_id"  # not "dagster_run_id": that one marks the parent (see module doc)
TAG_PARENT_RUN_ID = "mlflow.parentRunId"

# Tags of a registered model version.
TAG_METRIC = "metric"
TAG_SCORE = "score"
TAG_PASSED_GATES = "passed_gates"
TAG_HIGHER_IS_BETTER = "higher_is_better"
TAG_DECISION = "champion_decision"

_SQLITE_PREFIX = "sqlite:///"
# Tracking URIs this process gave to mlflow.set_tracking_uri. MLflow exports each one as $MLFLOW_TRACKING_URI
# (for its subprocesses), so finding one of them there later is our own echo, not the user's override: a later
# run of this process with another data root must use that root's store.
_process_uris: set[str] = set()
# Database stores this process has opened (their schema exists): see `_client`.
_opened_stores: set[str] = set()


def activate_tracking_uri(uri: str) -> None:
    """Make `uri` MLflow's global tracking URI (what dagster-mlflow's fluent calls use) in this process."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    _process_uris.add(uri)


def default_tracking_uri(root: Path) -> str:
    """$MLFLOW_TRACKING_URI if set; else, with $PDM_POSTGRES_URL, the database `<db>_mlflow` on that server (see
    core/postgres.py); else the SQLite store `<root>/mlflow.db` (absolute path).

    SQLite rather than a directory of files: MLflow 3.17 refuses the file store by default (it is in
    maintenance mode) and the model registry, which the champion alias needs, works fully on SQLite.
    The artifacts of a local store live in `<root>/mlruns` (see `ensure_experiment`). View with
    `mlflow ui --backend-store-uri sqlite:///<root>/mlflow.db`.
    """
    from_env = os.environ.get(TRACKING_URI_ENV)
    if from_env and from_env not in _process_uris:
        return from_env
    from pdm_pipeline.core.postgres import configured_url, mlflow_url

    postgres = configured_url()
    if postgres:
        return mlflow_url(postgres)
    return _SQLITE_PREFIX + (Path(root).resolve() / MLFLOW_DB_NAME).as_posix()


def ui_url(tracking_uri: str, experiment_id: str, run_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """Link to a run in the MLflow UI: on the tracking server itself when it is one, else on `base`."""
    server = tracking_uri if tracking_uri.startswith(("http://", "https://")) else base
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def registered_model_name(machine_id: str, model_type: str) -> str:
    """Name of a machine's model of one type in the registry, e.g. `pdm.pump_01.classification`."""
    return f"pdm.{validate_machine_id(machine_id)}.{_validate_model_type(model_type)}"


def flatten_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Params as MLflow stores them: nested mappings become dotted keys, values strings cut to MLflow's limit."""
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    flat: dict[str, str] = {}

    def visit(mapping: Mapping[str, Any], prefix: str) -> None:
        for key, value in mapping.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping) and value:
                visit(value, f"{name}.")
            else:
                flat[name] = str(value)[:MAX_PARAM_VAL_LENGTH]

    visit(params, "")
    return flat


def finite_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The metrics that are finite real numbers, as floats, keys prefixed; None, NaN, inf and non-numbers dropped."""
    return {
        f"{prefix}{key}": float(value)
        for key, value in metrics.items()
        if isinstance(value, numbers.Real) and math.isfinite(float(value))
    }


def ensure_experiment(*, tracking_uri: str, experiment: str) -> str:
    """Id of the experiment named `experiment`, created if missing; a local SQLite store gets its artifacts
    in `<directory of the database>/mlruns/<experiment>`.

    Call it before dagster-mlflow's resource first runs (it creates a missing experiment with MLflow's
    default artifact root, `./mlruns` of whatever the working directory is). A new store's schema is created
    by `_client`, one process at a time.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS

    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            return client.create_experiment(experiment, artifact_location=_artifact_location(tracking_uri, experiment))
        except MlflowException as exc:  # created meanwhile by a parallel step
            if exc.error_code != _error_name(RESOURCE_ALREADY_EXISTS):
                raise
            found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage != "active":
        raise ValueError(
            f"MLflow experiment {experiment!r} in {tracking_uri} is deleted; restore it "
            f"(mlflow experiments restore) or use another experiment name"
        )
    _follow_moved_store(tracking_uri, found.experiment_id, found.artifact_location, experiment)
    return found.experiment_id


def _follow_moved_store(tracking_uri: str, experiment_id: str, location: str, experiment: str) -> None:
    """A local SQLite store copied or moved with its data root keeps the absolute artifact paths of where it was
    made: new runs would write their artifacts there (filling the old disk after a move to a bigger one) and
    champion re-scoring would read from there. Re-point the experiment, its runs and its registered versions at
    the store's own directory (MLflow has no API to move an experiment's artifacts: the store's tables are
    updated, under the store's lock)."""
    db_path = _sqlite_path(tracking_uri)
    expected = _artifact_location(tracking_uri, experiment)
    if db_path is None or expected is None or location == expected or not location.startswith("file://"):
        return
    from urllib.parse import unquote, urlparse

    if not Path(unquote(urlparse(expected).path)).is_dir():
        log.warning(f"MLflow experiment {experiment!r} of {db_path} keeps its artifacts in {location}, outside the "
                    f"store's directory, and {expected} does not exist: left as it is")
        return
    old_root = location.rsplit("/", 1)[0]  # <old db dir>/mlruns
    new_root = expected.rsplit("/", 1)[0]
    import sqlite3

    with _store_lock(tracking_uri), contextlib.closing(sqlite3.connect(db_path)) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (expected, experiment_id))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?) WHERE experiment_id = ?",
                   (old_root, new_root, experiment_id))
        for column in ("source", "storage_location"):
            db.execute(f"UPDATE model_versions SET {column} = replace({column}, ?, ?) WHERE {column} LIKE ?",
                       (old_root, new_root, old_root + "%"))
        with contextlib.suppress(sqlite3.OperationalError):  # MLflow 3's logged models (absent in older stores)
            db.execute("UPDATE logged_models SET artifact_location = replace(artifact_location, ?, ?) "
                       "WHERE experiment_id = ?", (old_root, new_root, experiment_id))
    log.warning(f"MLflow store {db_path} was made at {old_root}: experiment {experiment!r}, its runs and "
                f"registered versions now keep their artifacts under {new_root} (copy the old mlruns/ there if it "
                "was not moved with the store)")


@contextlib.contextmanager
def _store_lock(tracking_uri: str):
    """Serialise the opening of a database store across processes: MLflow creates (migrates) the schema of a
    new database on first use, and two processes doing it at once fail (SQLite: "duplicate column name";
    PostgreSQL: a unique violation on `alembic_version`). A SQLite store is locked with a file beside it, a
    PostgreSQL one with a session advisory lock (released by the server if the holder dies)."""
    if _is_postgres(tracking_uri):
        from pdm_pipeline.core.postgres import advisory_lock

        with advisory_lock(tracking_uri, "pdm-pipeline: mlflow schema"):
            yield
        return
    db_path = _sqlite_path(tracking_uri)
    if db_path is None:
        yield
        return
    import fcntl

    db_path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db_path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class ModelRunRecord:
    """Where one model's child run is: ids, and a link for the asset metadata."""

    run_id: str
    experiment_id: str
    url: str


def log_model_run(
    *,
    tracking_uri: str,
    experiment: str,
    parent_run_id: str | None,
    machine_id: str,
    model_type: str,
    dagster_run_id: str,
    data_version: str,
    params: dict,
    metrics: dict[str, float],
    artifact_dir: Path | None,
    extra_tags: dict[str, str] | None = None,
    input_example: Any = None,
) -> ModelRunRecord:
    """Log one model materialization as its own (child) run and terminate that run.

    The run is named `<machine_id>/<model_type>` and tagged machine_id, model_type, data_version,
    dagster.run_id (+ mlflow.parentRunId when a parent is given; the parent must be in `experiment`).
    Params are flattened (`flatten_params`), only finite metrics are logged, and `artifact_dir` (the model
    directory) is logged under the artifact path "model". The run ends FINISHED, or FAILED if logging
    raised (the error is re-raised). The parent run is only referenced, never modified or ended.
    """
    validate_machine_id(machine_id)
    _validate_model_type(model_type)
    where = f"machine {machine_id!r}, model {model_type!r}"
    if artifact_dir is not None and not Path(artifact_dir).is_dir():
        raise FileNotFoundError(f"model directory {artifact_dir} does not exist ({where}); nothing to log to MLflow")

    client = _client(tracking_uri)
    experiment_id = _experiment_for(client, tracking_uri, experiment, parent_run_id, where)
    tags = {
        **{key: str(value) for key, value in (extra_tags or {}).items()},
        TAG_MACHINE_ID: machine_id,
        TAG_MODEL_TYPE: model_type,
        TAG_DAGSTER_RUN_ID: dagster_run_id,
        TAG_DATA_VERSION: data_version,
    }
    if parent_run_id is not None:
        tags[TAG_PARENT_RUN_ID] = parent_run_id
    run = client.create_run(experiment_id, tags=tags, run_name=f"{machine_id}/{model_type}")
    run_id = run.info.run_id
    try:
        _log_batches(client, run_id, params=flatten_params(params), metrics=finite_metrics(metrics))
        if artifact_dir is not None:
            client.log_artifacts(run_id, str(artifact_dir), MODEL_ARTIFACT_PATH)
        if input_example is not None and len(input_example):
            _log_signature(client, run_id, input_example)
    except BaseException:
        with contextlib.suppress(Exception):  # keep the logging error, not a failure to mark the run
            client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return ModelRunRecord(run_id=run_id, experiment_id=experiment_id, url=ui_url(tracking_uri, experiment_id, run_id))


def set_run_tags(*, tracking_uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    client = _client(tracking_uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))


def end_dagster_run(*, tracking_uri: str, experiment: str, dagster_run_id: str, status: str = "FAILED") -> list[str]:
    """End every MLflow run of one Dagster run still RUNNING (its parent run, tag `dagster_run_id`, and any
    child, tag `dagster.run_id`) with `status`; returns the MLflow run ids ended.

    Called when a Dagster run fails, is cancelled or is found dead: dagster-mlflow ends its run only from the
    last step of a run that gets there, so without this a failed run stays RUNNING in MLflow forever. A store or
    experiment that does not exist yet means nothing to end.
    """
    from mlflow.entities import RunStatus

    if status not in ("FAILED", "KILLED", "FINISHED"):
        raise ValueError(f"status {status!r}: choose FAILED, KILLED or FINISHED")
    db_path = _sqlite_path(tracking_uri)
    if db_path is not None and not db_path.exists():
        return []
    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    running = RunStatus.to_string(RunStatus.RUNNING)
    ended = []
    for tag in ("dagster_run_id", TAG_DAGSTER_RUN_ID):
        query = f"tags.`{tag}` = '{dagster_run_id}' and attributes.status = '{running}'"
        for run in client.search_runs([found.experiment_id], filter_string=query, max_results=100):
            client.set_terminated(run.info.run_id, status)
            ended.append(run.info.run_id)
    return ended


def _log_signature(client: MlflowClient, run_id: str, example: Any) -> None:
    """The model's input signature (column names and types, MLflow's schema) and an input example, as the JSON
    artifacts `signature.json` and `input_example.json` of the run (the models are logged as their own files,
    not as an MLflow flavor, so the signature travels beside them)."""
    import json
    import tempfile

    from mlflow.models import infer_signature

    signature = infer_signature(example)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "signature.json").write_text(json.dumps(signature.to_dict(), indent=1))
        (Path(tmp) / "input_example.json").write_text(example.to_json(orient="split", index=False))
        client.log_artifacts(run_id, tmp, "signature")


def log_metrics(*, tracking_uri: str, run_id: str, metrics: dict[str, float], prefix: str = "test_") -> None:
    """Add metrics (finite ones, keys prefixed) to an existing run; works on a run already FINISHED
    and leaves its status unchanged."""
    _log_batches(_client(tracking_uri), run_id, params={}, metrics=finite_metrics(metrics, prefix))


@dataclass
class ChampionDecision:
    """Outcome of `register_and_promote`.

    `champion_score` is the champion's score the new one was compared with (re-scored on the same test
    data, or its stored score), None when there was no comparison.
    """

    promoted: bool
    version: str | None
    reason: str
    new_score: float | None
    champion_score: float | None


def register_and_promote(
    *,
    tracking_uri: str,
    run_id: str,
    machine_id: str,
    model_type: str,
    data_version: str,
    new_score: float,
    champion_score_on_same_data: float | None,
    higher_is_better: bool,
    passed_gates: bool,
    metric_name: str,
    deployed: bool = False,
    release_id: str | None = None,
) -> ChampionDecision:
    """Register runs:/<run_id>/model as a new version and move the alias "champion" to it if it earns it.

    The new version is always registered (tags data_version, metric, score, passed_gates, higher_is_better,
    and champion_decision = the reason). The alias moves to it only when it passed its gates and:

    1. there is no champion yet; or
    2. `champion_score_on_same_data` (the caller re-scored the current champion on the SAME current test
       split) is given and `new_score` beats it strictly (ties keep the champion); or
    3. the champion could not be re-scored (`champion_score_on_same_data` is None or not finite) and then:
       - if the champion was scored on the same data (same `data_version` and same metric), its stored
         score is used as in 2;
       - otherwise the two scores are not comparable (other test data) and the new version is promoted;
         the reason says that the champion was evaluated on other data.

    Otherwise the alias stays where it was and the reason says why. Raises ValueError for a non-finite
    `new_score` or when the run has no "model" artifacts; a registry without this model is not an error.
    """
    name = registered_model_name(machine_id, model_type)
    if not (isinstance(new_score, numbers.Real) and math.isfinite(float(new_score))):
        raise ValueError(f"new_score={new_score!r} for {name} (run {run_id}) must be a finite number")
    new_score = float(new_score)
    client = _client(tracking_uri)
    if not client.list_artifacts(run_id, MODEL_ARTIFACT_PATH):
        raise ValueError(
            f"run {run_id} has no {MODEL_ARTIFACT_PATH!r} artifacts (machine {machine_id!r}, model {model_type!r}): "
            "log the model directory with log_model_run(artifact_dir=...) before registering it"
        )

    champion = current_champion(tracking_uri=tracking_uri, machine_id=machine_id, model_type=model_type)
    _ensure_registered_model(client, name)
    version = client.create_model_version(
        name,
        source=f"runs:/{run_id}/{MODEL_ARTIFACT_PATH}",
        run_id=run_id,
        tags={
            TAG_DATA_VERSION: data_version,
            TAG_METRIC: metric_name,
            TAG_SCORE: repr(new_score),
            TAG_PASSED_GATES: str(bool(passed_gates)).lower(),
            TAG_HIGHER_IS_BETTER: str(bool(higher_is_better)).lower(),
        },
    ).version
    promoted, reason, champion_score = _champion_rule(
        champion, new_score, champion_score_on_same_data, higher_is_better, passed_gates, metric_name, data_version
    )
    if promoted:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    if deployed:
        client.set_registered_model_alias(name, DEPLOYED_ALIAS, version)
        if release_id:
            client.set_model_version_tag(name, version, TAG_RELEASE, release_id)
    client.set_model_version_tag(name, version, TAG_DECISION, reason)
    return ChampionDecision(
        promoted=promoted, version=str(version), reason=reason, new_score=new_score, champion_score=champion_score
    )


def mark_deployed(*, tracking_uri: str, run_id: str, machine_id: str, model_type: str, release_id: str,
                  why: str = "registered by recovery after an interrupted release: no champion decision") -> str:
    """Point the alias "deployed" at the version of runs:/<run_id>/model (registered now if it is not yet, with
    no champion decision: that needs the re-scoring a release does), tagged with the release; returns the version.
    For a release whose process died between its switch and the registry (recovery), and for the models of a
    family without a champion metric (`why` says which)."""
    name = registered_model_name(machine_id, model_type)
    client = _client(tracking_uri)
    _ensure_registered_model(client, name)
    versions = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == run_id]
    if versions:
        version = max(versions, key=lambda v: int(v.version)).version
    else:
        version = client.create_model_version(name, source=f"runs:/{run_id}/{MODEL_ARTIFACT_PATH}",
                                              run_id=run_id).version
        client.set_model_version_tag(name, version, TAG_DECISION, why)
    client.set_registered_model_alias(name, DEPLOYED_ALIAS, version)
    client.set_model_version_tag(name, version, TAG_RELEASE, release_id)
    return str(version)


def current_champion(*, tracking_uri: str, machine_id: str, model_type: str) -> dict | None:
    """{"version", "run_id", "source", "data_version", "score", "metric"} of the version with alias
    "champion", or None when the model is not registered or has no champion. `score` is a float or None."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    name = registered_model_name(machine_id, model_type)
    client = _client(tracking_uri)
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == _error_name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    version_number = (registered.aliases or {}).get(CHAMPION_ALIAS)
    if version_number is None:
        return None
    version = client.get_model_version(name, str(version_number))
    score = version.tags.get(TAG_SCORE)
    return {
        "version": str(version.version),
        "run_id": version.run_id,
        "source": version.source,
        "data_version": version.tags.get(TAG_DATA_VERSION),
        "score": float(score) if score is not None else None,
        "metric": version.tags.get(TAG_METRIC),
    }


def champion_artifact_dir(*, tracking_uri: str, machine_id: str, model_type: str, dst: Path) -> Path | None:
    """Download the champion's "model" artifacts into `dst` and return the local model directory
    (`dst/model`), so the caller can re-score the champion on the current test data. None when there is
    no champion or its run or artifacts are gone (then pass champion_score_on_same_data=None)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    champion = current_champion(tracking_uri=tracking_uri, machine_id=machine_id, model_type=model_type)
    if champion is None:
        return None
    client = _client(tracking_uri)
    try:
        if not client.list_artifacts(champion["run_id"], MODEL_ARTIFACT_PATH):
            return None
    except MlflowException as exc:
        if exc.error_code == _error_name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    Path(dst).mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(champion["run_id"], MODEL_ARTIFACT_PATH, str(dst)))


def _champion_rule(
    champion: dict | None,
    new_score: float,
    champion_score_on_same_data: float | None,
    higher_is_better: bool,
    passed_gates: bool,
    metric: str,
    data_version: str,
) -> tuple[bool, str, float | None]:
    """(promoted, reason, champion score compared with) — the rule documented in register_and_promote."""
    new = f"{metric} {new_score:.4g}"
    if not passed_gates:
        return False, f"{new} failed its quality gates; the champion stays", None
    if champion is None:
        return True, f"{new}: no champion yet, this version becomes the first", None
    label = f"champion v{champion['version']}"
    same_data = champion["data_version"] == data_version and champion["metric"] == metric
    if champion_score_on_same_data is not None and math.isfinite(champion_score_on_same_data):
        reference, where = float(champion_score_on_same_data), "on the same test data"
    elif same_data and champion["score"] is not None:
        reference, where = champion["score"], f"(its stored score, same data_version {data_version})"
    else:
        return True, (
            f"{new}: {label} was evaluated on other data (data_version {champion['data_version']}, "
            f"metric {champion['metric']}) and could not be re-scored; promoted"
        ), None
    beats = new_score > reference if higher_is_better else new_score < reference
    direction = "higher" if higher_is_better else "lower"
    if beats:
        return True, f"{new} beats {label} {reference:.4g} {where} ({direction} is better)", reference
    return False, f"{new} does not beat {label} {reference:.4g} {where} ({direction} is better)", reference


def _client(tracking_uri: str) -> MlflowClient:
    """A client whose tracking store AND registry are `tracking_uri` (the parent folder of a SQLite file made).

    The first client of a database store in this process opens it under `_store_lock`: whichever process
    (step, sensor, CLI) touches a new store first creates its schema alone, the others wait and find it."""
    from mlflow import MlflowClient

    db_path = _sqlite_path(tracking_uri)
    if db_path is not None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    if tracking_uri in _opened_stores or not (db_path is not None or _is_postgres(tracking_uri)):
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with _store_lock(tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)  # opens the tracking store
        client.search_registered_models(max_results=1)  # and the registry's
    _opened_stores.add(tracking_uri)
    return client


def _is_postgres(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("postgresql:", "postgresql+", "postgres:"))


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, else None (in-memory or not SQLite)."""
    if not tracking_uri.startswith(_SQLITE_PREFIX):
        return None
    path = tracking_uri[len(_SQLITE_PREFIX):].split("?", 1)[0]
    return Path(path).resolve() if path and path != ":memory:" else None


def _artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Where an experiment's artifacts go: `<db dir>/mlruns/<experiment>` for a local SQLite store, `<data
    root>/mlruns/<experiment>` for a database store (PostgreSQL: the data root is the storage every worker
    shares), None for a tracking server (it decides)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", experiment)
    db_path = _sqlite_path(tracking_uri)
    if db_path is not None:
        return (mlflow_dir(db_path.parent) / name).as_uri()
    if tracking_uri.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "mysql", "mssql"):
        from pdm_pipeline.core.paths import data_root

        return (mlflow_dir(data_root().resolve()) / name).as_uri()
    return None


def _experiment_for(
    client: MlflowClient, tracking_uri: str, experiment: str, parent_run_id: str | None, where: str
) -> str:
    """Experiment id for a child run; the parent, when given, must exist and be in that experiment."""
    if parent_run_id is None:
        return ensure_experiment(tracking_uri=tracking_uri, experiment=experiment)
    from mlflow.exceptions import MlflowException

    try:
        parent = client.get_run(parent_run_id)
    except MlflowException as exc:
        raise ValueError(f"parent MLflow run {parent_run_id!r} not found in {tracking_uri} ({where})") from exc
    parent_experiment = client.get_experiment(parent.info.experiment_id)
    if parent_experiment.name != experiment:
        raise ValueError(
            f"parent MLflow run {parent_run_id} is in experiment {parent_experiment.name!r}, not {experiment!r} "
            f"({where}); a child run must be in its parent's experiment"
        )
    return parent_experiment.experiment_id


def _log_batches(client: MlflowClient, run_id: str, *, params: dict[str, str], metrics: dict[str, float]) -> None:
    """log_batch within MLflow's per-call limits (100 params, 1000 metrics)."""
    from mlflow.entities import Metric, Param
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

    timestamp_ms = int(time.time() * 1000)
    param_items = [Param(key, value) for key, value in params.items()]
    metric_items = [Metric(key, value, timestamp_ms, 0) for key, value in metrics.items()]
    for start in range(0, len(param_items), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=param_items[start : start + MAX_PARAMS_TAGS_PER_BATCH])
    for start in range(0, len(metric_items), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metric_items[start : start + MAX_METRICS_PER_BATCH])


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model if missing (a parallel creation is not an error)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != _error_name(RESOURCE_ALREADY_EXISTS):
            raise


def _error_name(code: int) -> str:
    """MlflowException.error_code is the name of the protobuf error code."""
    from mlflow.protos.databricks_pb2 import ErrorCode

    return ErrorCode.Name(code)


def _validate_model_type(model_type: str) -> str:
    from pdm_pipeline import families

    return families.get(model_type).model_type
