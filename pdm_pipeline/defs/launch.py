"""Run the graph for machines from Python: register partitions, observe sources, materialize, summarize.

Used by `make demo` and the CLI (`run`, `train --in-process`). Runs are stored in the instance, so the UI (`make
dev`) shows them. Every in-process run carries its host and process id as tags (`pdm/host`, `pdm/pid`), so a
later process can tell that a run left STARTED belongs to a process that no longer exists and mark it failed
(core of the startup sweep, `defs/recovery.py`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import DagsterEventType

from pdm_pipeline import families
from pdm_pipeline.core import paths
from pdm_pipeline.core.config import build_gate_settings, build_training_config
from pdm_pipeline.core.contract import machine_fingerprint
from pdm_pipeline.core.gates import PASSED, SKIPPED
from pdm_pipeline.core.paths import data_root, free_space_problem, validate_machine_id
from pdm_pipeline.defs.assets.release import RELEASE_ASSET
from pdm_pipeline.defs.assets.source_data import source_observations
from pdm_pipeline.defs.coordinator import CHECKED_TAG, REFUSED_PREFIX, REFUSED_TAG
from pdm_pipeline.defs.jobs import TRAIN_JOB
from pdm_pipeline.defs.partitions import MACHINES_PARTITION_NAME
from pdm_pipeline.errors import PdmError

log = logging.getLogger(__name__)

TAG_MACHINE = "pdm/machine_id"
TAG_TRIGGER = "pdm/trigger"
TAG_HOST = "pdm/host"
TAG_PID = "pdm/pid"


class PreQueueError(PdmError):
    """A run request refused before anything was queued; the message says what is wrong and where."""


def register_machines(instance: dg.DagsterInstance, machine_ids: Iterable[str]) -> list[str]:
    """Add machines as partitions (ids are validated first); returns the ones that were new."""
    ids = [validate_machine_id(m) for m in machine_ids]
    known = set(instance.get_dynamic_partitions(MACHINES_PARTITION_NAME))
    new = [m for m in ids if m not in known]
    if new:
        instance.add_dynamic_partitions(MACHINES_PARTITION_NAME, new)
    return new


def run_config(training: dict[str, Any] | None = None, gates: dict[str, Any] | None = None, log_level: str = "INFO") -> dict:
    config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    resources = {}
    if training:
        resources["training"] = {"config": _config_values(training)}
    if gates:
        resources["gates"] = {"config": _config_values(gates)}
    if resources:
        config["resources"] = resources
    return config


def _config_values(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def disk_problem(root: Path, instance: dg.DagsterInstance | None = None) -> str | None:
    """Too little free space where a run writes: the data root (staging, releases, MLflow) and the local
    directories of the instance that records it (SQLite storage, artifacts, compute logs; with PostgreSQL storage
    only the latter two). Without an instance: DAGSTER_HOME's, as the CLI opens it."""
    from pdm_pipeline.defs.instance_config import home_directories, instance_directories

    directories = instance_directories(instance) if instance is not None else home_directories()
    return free_space_problem(Path(root), *directories)


def check_request(machine_id: str, training: dict[str, Any] | None, gates: dict[str, Any] | None, root=None,
                  instance: dg.DagsterInstance | None = None) -> Any:
    """Everything that can be checked before a run is queued: the id, the data contract, every setting, free disk
    space where the run writes (`disk_problem`: the instance's directories, DAGSTER_HOME's without one).

    Raises PreQueueError with the same messages as `pdm-pipeline validate` and `--set`; otherwise returns the
    machine's report (core/validation.py), whose warnings the run will not stop for."""
    from pdm_pipeline.core.validation import machine_report

    root = data_root() if root is None else root
    validate_machine_id(machine_id)
    build_training_config(training)
    settings = build_gate_settings(gates)
    if problem := disk_problem(root, instance):
        raise PreQueueError(f"machine {machine_id}: not queued, {problem}")
    report = machine_report(root, machine_id, settings)
    if report.errors:
        raise PreQueueError(
            f"machine {machine_id}: not queued, {len(report.errors)} problem(s) (see `pdm-pipeline validate`):\n"
            + "\n".join(f"  - {e}" for e in report.errors)
        )
    return report


# Run statuses of a run that holds its machine (a queued run waits: the queue counts in-process runs too).
_ACTIVE = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)


@contextmanager
def machine_run_slot(instance: dg.DagsterInstance, root: Path, machine_id: str, poll_s: float = 2.0) -> Iterator[None]:
    """One run per machine for in-process runs too (they skip the queue, which holds one per machine): wait for
    another in-process run of the machine (a file lock, released by the OS when its holder dies), then for the
    machine's running runs to end (the dead ones are failed meanwhile). A queued run of the machine waits for this
    one: the queue's limit per machine counts in-process runs too."""
    import fcntl

    from pdm_pipeline.defs.recovery import fail_dead_in_process_runs

    directory = paths.releases_dir(root, machine_id)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".run.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning(f"{machine_id}: another run of this machine in this data root is running here: waiting")
            fcntl.flock(handle, fcntl.LOCK_EX)
        said = False
        while runs := instance.get_runs(dg.RunsFilter(tags={TAG_MACHINE: machine_id}, statuses=list(_ACTIVE))):
            if not said:
                log.warning(f"{machine_id}: waiting for run {runs[0].run_id[:8]} ({runs[0].status.value}) of this "
                            "machine to end (one run per machine)")
                said = True
            time.sleep(poll_s)
            fail_dead_in_process_runs(instance)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def materialize_machine(
    instance: dg.DagsterInstance,
    machine_id: str,
    *,
    training: dict[str, Any] | None = None,
    gates: dict[str, Any] | None = None,
    models: list[str] | None = None,
    log_level: str = "INFO",
    tags: dict[str, str] | None = None,
    check: bool = True,
    definitions: dg.Definitions | None = None,
) -> dg.ExecuteInProcessResult:
    """Record the machine's source data versions, then run the training graph for it in this process.

    `models` limits the run to those families (the others keep their released version)."""
    from pdm_pipeline.defs.definitions import defs

    if check:
        check_request(machine_id, training, gates, instance=instance)
    register_machines(instance, [machine_id])
    root = data_root()
    for observation in source_observations(root, machine_id):
        instance.report_runless_asset_event(observation)
    try:
        data_version = machine_fingerprint(root, machine_id)
    except PdmError:  # files missing: the run's machine_dataset step reports it
        data_version = "unreadable"
    run_tags = {
        CHECKED_TAG: "cli" if check else "skipped by the caller",
        TAG_MACHINE: machine_id,
        TAG_TRIGGER: "cli",
        TAG_HOST: socket.gethostname(),
        TAG_PID: str(os.getpid()),
        "pdm/data_version": data_version,
        **(tags or {}),
    }
    job = (definitions or defs).resolve_job_def(TRAIN_JOB)
    selection = asset_selection(models)
    with machine_run_slot(instance, root, machine_id):
        result = job.execute_in_process(
            instance=instance,
            partition_key=machine_id,
            run_config=run_config(training, gates, log_level),
            raise_on_error=False,
            tags=run_tags,
            asset_selection=selection,
        )
    if not result.success:  # no daemon watches an in-process run: end its MLflow runs here
        from pdm_pipeline.defs.recovery import end_mlflow

        end_mlflow(result.run_id, "FAILED")
    return result


def asset_selection(models: list[str] | None) -> list[dg.AssetKey] | None:
    """The assets of a run limited to some families (None = everything; an empty list is refused)."""
    if models is None:
        return None
    if not models:
        raise PreQueueError(f"the model selection names no model type; choose from {', '.join(families.model_types())}")
    unknown = [m for m in models if m not in families.model_types()]
    if unknown:
        raise PreQueueError(f"unknown model types {unknown}; choose from {', '.join(families.model_types())}")
    keys = [dg.AssetKey(k) for k in ("machine_dataset", "failure_labels", "machine_features", RELEASE_ASSET)]
    for family in families.all_families():
        if family.model_type in models:
            keys += [dg.AssetKey(family.asset_name), dg.AssetKey(family.evaluation_asset)]
    return keys


def latest_record(instance: dg.DagsterInstance, asset: str, machine_id: str) -> Any:
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[machine_id]), limit=1
    )
    return result.records[0] if result.records else None


def latest_metadata(instance: dg.DagsterInstance, asset: str, machine_id: str) -> dict[str, Any]:
    """Metadata of the latest materialization of one asset partition, as plain values."""
    record = latest_record(instance, asset, machine_id)
    if record is None or record.asset_materialization is None:
        return {}
    return _plain(record.asset_materialization.metadata)


def machine_summary(instance: dg.DagsterInstance, machine_id: str, run_id: str | None = None) -> dict[str, Any]:
    """A release outcome of the machine (per model: action, reason, gates, headline metrics) and the data checks
    that warned: the latest one, or the one `run_id` made (empty when that run made none).

    A run that trained some families shows, for the others, the evaluation they had when it released."""
    record = _release_record(instance, machine_id, run_id)
    if record is None or record.asset_materialization is None:
        return {}
    meta = _plain(record.asset_materialization.metadata)
    summary: dict[str, Any] = {
        "run_id": record.run_id, "outcome": meta.get("outcome"), "reason": meta.get("reason"),
        "release_id": meta.get("release_id"), "models": {},
        "data_warnings": data_check_warnings(instance, record.run_id),
        # the release's own gates that did not pass (sizes; the registry that did not follow a live release)
        "release_warnings": [f"{g['name']} {'BLOCKED' if g.get('severity') == 'ERROR' else 'warned'}: "
                             f"{g.get('description', '')}"
                             for g in (meta.get("result") or {}).get("release_gates", [])
                             if isinstance(g, dict) and g.get("status") not in (PASSED, SKIPPED)],
    }
    for family in families.all_families():
        evaluation = _metadata_at(instance, family.evaluation_asset, machine_id, record.storage_id)
        summary["models"][family.model_type] = {
            "action": meta.get(f"{family.model_type}_action"),
            "size_mb": meta.get(f"{family.model_type}_mb"),
            **{m: evaluation[m] for m, _ in family.headline_metrics if m in evaluation},
            "status": evaluation.get("status"),
            # a re-execution that did not run again a training step that failed in its parent says so
            "reason": (meta.get("not_retrained") or {}).get(family.model_type) or evaluation.get("reason"),
        }
    return summary


# the steps whose checks judge the data (the model gates are in each model's release entry)
DATA_CHECK_ASSETS = ("machine_dataset", "failure_labels")


def data_check_warnings(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """'name warned: description' (or 'name ERROR: ...') of each data check of the run that did not pass. In a
    run that went on, an ERROR here stopped only what it names (label_balance: the classifier)."""
    lines = []
    for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data  # type: ignore[union-attr]
        if evaluation.asset_key.to_user_string() in DATA_CHECK_ASSETS and not evaluation.passed:
            word = "warned" if evaluation.severity == dg.AssetCheckSeverity.WARN else "ERROR"
            lines.append(f"{evaluation.check_name} {word}: {evaluation.description}")
    return lines


def _release_record(instance: dg.DagsterInstance, machine_id: str, run_id: str | None) -> Any:
    if run_id is None:
        return latest_record(instance, RELEASE_ASSET, machine_id)
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    mine = [r for r in records if r.asset_key == dg.AssetKey(RELEASE_ASSET) and r.partition_key == machine_id]
    return mine[-1] if mine else None


def _metadata_at(instance: dg.DagsterInstance, asset: str, machine_id: str, storage_id: int) -> dict[str, Any]:
    """Metadata of the asset partition's latest materialization up to a given event (the release's)."""
    result = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey(asset), asset_partitions=[machine_id], before_storage_id=storage_id), limit=1)
    record = result.records[0] if result.records else None
    return _plain(record.asset_materialization.metadata) if record and record.asset_materialization else {}


def _plain(metadata: Any) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in (metadata or {}).items()}


# ---------------------------------------------------------------------------------------------- server & status

DEFAULT_SERVER = "127.0.0.1:3000"


def server_client(address: str, timeout: float = 2.0):
    """A GraphQL client for the Dagster webserver at host:port whose code location has the train_machine job.

    Raises PreQueueError when nothing answers there, or when what answers is not a Dagster webserver serving
    pdm-pipeline (so a job is never submitted to an unidentified server)."""
    import json
    import urllib.request

    from dagster_graphql import DagsterGraphQLClient

    host, _, port = address.partition(":")
    query = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } jobs { name } } } } }"
    try:
        request = urllib.request.Request(f"http://{address}/graphql", data=json.dumps({"query": query}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise PreQueueError(f"no Dagster webserver answers at http://{address} ({exc}); start it with `make dev` "
                            "or train in this process (no --server)") from None
    nodes = ((body.get("data") or {}).get("repositoriesOrError") or {}).get("nodes") or []
    locations = [n["location"]["name"] for n in nodes if any(j["name"] == TRAIN_JOB for j in n.get("jobs", []))]
    if not locations:
        raise PreQueueError(f"the server at http://{address} serves no pdm-pipeline code location (no "
                            f"{TRAIN_JOB} job); refusing to submit to it")
    client = DagsterGraphQLClient(host, port_number=int(port or 80))
    client.pdm_location = locations[0]
    return client


def submit_to_server(client, machine_id: str, *, training: dict[str, Any] | None = None,
                     gates: dict[str, Any] | None = None, models: list[str] | None = None) -> str:
    """Queue a train_machine run for one machine partition on the running instance; returns the run id."""
    config = run_config(training, gates)
    config.pop("loggers", None)
    selection = asset_selection(models)
    kwargs: dict[str, Any] = {}
    if selection is not None:
        kwargs["asset_selection"] = selection  # older clients: op_selection only
    try:
        return client.submit_job_execution(
            TRAIN_JOB,
            repository_location_name=getattr(client, "pdm_location", None),
            run_config=config,
            tags={"dagster/partition": machine_id, TAG_MACHINE: machine_id, TAG_TRIGGER: "cli"},
            **kwargs,
        )
    except TypeError:
        if selection is None:
            raise
        raise PreQueueError("this Dagster GraphQL client cannot submit an asset selection; use --in-process") from None


def resolve_run_id(instance: dg.DagsterInstance, prefix: str) -> str:
    """A full run id from a prefix (e.g. the 8 characters `status` shows); PdmError when none or several match."""
    if instance.get_run_by_id(prefix) is not None:
        return prefix
    records = instance.get_run_records(limit=500)
    matches = [r.dagster_run.run_id for r in records if r.dagster_run.run_id.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise PreQueueError(f"no run id starts with {prefix!r} in this instance ({instance.root_directory})")
    raise PreQueueError(f"{len(matches)} runs start with {prefix!r}: give more characters")


def run_progress(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
    """Status of a run: state, steps done/total, the step(s) running now, failed steps, the release outcome."""
    run_id = resolve_run_id(instance, run_id)
    run = instance.get_run_by_id(run_id)
    total = reused = None
    if run.execution_plan_snapshot_id:
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        total = len(plan.steps)
        if run.step_keys_to_execute is not None:  # a re-execution runs these; the others' work is its parent's
            total, reused = len(run.step_keys_to_execute), total - len(run.step_keys_to_execute)
    stats = instance.get_run_step_stats(run_id)
    done = [s.step_key for s in stats if s.status is not None and s.status.value in ("SUCCESS", "SKIPPED")]
    failed = [s.step_key for s in stats if s.status is not None and s.status.value == "FAILURE"]
    # a step that started and never ended: running, or (the run is over: killed or crashed) interrupted
    unended = [s.step_key for s in stats if s.end_time is None and s.start_time is not None and s.step_key not in failed]
    running, interrupted = ([], unended) if run.is_finished else (unended, [])
    machine_id = run.tags.get("dagster/partition")
    summary = machine_summary(instance, machine_id, run_id) if machine_id and run.is_finished else {}
    failure = _run_failure_message(instance, run_id) if run.status == dg.DagsterRunStatus.FAILURE else None
    # refused by the run coordinator's checks (bad machine, data or settings): nothing ran
    refused = run.tags.get(REFUSED_TAG) == "true" or bool(failure and failure.startswith(REFUSED_PREFIX))
    return {
        "run_id": run_id,
        "job": run.job_name,
        "machine_id": machine_id,
        "status": run.status.value,
        "steps_done": len(done),
        "steps_total": total,
        "current": running,
        "failed": failed,
        "step_errors": _step_errors(instance, run_id) if failed else {},
        # a run stopped by a blocking data check: which check, with its value (the step's error names only the check)
        "failed_data_checks": [line for line in data_check_warnings(instance, run_id) if " ERROR: " in line]
        if failed and not summary else [],
        "interrupted": interrupted,
        "refused": refused,
        "failure": failure,
        "finished": run.is_finished,
        "release": summary,
        "reexecution_of": run.parent_run_id,
        "reused_steps": reused,
    }


def _run_failure_message(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """Why the run failed, as its RUN_FAILURE event says (with the error, when one is attached)."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records
    if not records:
        return None
    entry = records[-1].event_log_entry
    message = (entry.dagster_event.message if entry.dagster_event else None) or entry.user_message or ""
    data = entry.dagster_event.event_specific_data if entry.dagster_event else None
    error = getattr(data, "error", None)
    if error is not None and getattr(error, "message", None) and error.message.strip() not in message:
        message = f"{message}\n{error.message.strip()}"
    while error is not None and getattr(error, "cause", None) is not None:
        error = error.cause  # "Error executing resource_fn ..." wraps the reason (a refused re-execution's)
    if error is not None and getattr(error, "message", None) and error.message.strip() not in message:
        message = f"{message}\n{error.message.strip()}"
    return message.strip() or None


def _step_errors(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """The error of each failed step (the last line of the user code's exception when there is a cause)."""
    errors: dict[str, str] = {}
    for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_FAILURE).records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        error = getattr(event.event_specific_data, "error", None)
        while error is not None and getattr(error, "cause", None) is not None:
            error = error.cause  # "Error occurred while executing op ..." wraps the user code's exception
        text = (error.message.strip() if error is not None else "") or event.message or "failed"
        errors[event.step_key or "?"] = text
    return errors
