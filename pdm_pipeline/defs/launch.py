"""Run the graph for machines from Python: register partitions, observe sources, materialize, summarize.

Used by `make demo` and `pdm-pipeline train` (in-process mode). Runs are stored in the instance, so the UI
(`make dev`) shows them.
"""


from collections.abc import Iterable
from typing import Any

import dagster as dg

from pdm_pipeline.core.paths import data_root, validate_machine_id
from pdm_pipeline.defs.assets.evaluation import evaluation_asset_name
from pdm_pipeline.defs.assets.models import MODEL_ASSETS
from pdm_pipeline.defs.assets.source_data import source_observations
from pdm_pipeline.defs.definitions import defs
from pdm_pipeline.defs.jobs import TRAIN_JOB
from pdm_pipeline.defs.partitions import MACHINES_PARTITION_NAME


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
        resources["training"] = {"config": training}
    if gates:
        resources["gates"] = {"config": gates}
    if resources:
        config["resources"] = resources
    return config


def materialize_machine(
    instance: dg.DagsterInstance,
    machine_id: str,
    *,
    training: dict[str, Any] | None = None,
    gates: dict[str, Any] | None = None,
    log_level: str = "INFO",
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Record the machine's source data versions, then run the whole training graph for it, in this process."""
    register_machines(instance, [machine_id])
    for observation in source_observations(data_root(), machine_id):
        instance.report_runless_asset_event(observation)
    return defs.resolve_job_def(TRAIN_JOB).execute_in_process(
        instance=instance,
        partition_key=machine_id,
        run_config=run_config(training, gates, log_level),
        raise_on_error=False,
        tags=tags,
    )


def latest_metadata(instance: dg.DagsterInstance, asset: str, machine_id: str) -> dict[str, Any]:
    """Metadata of the latest materialization of one asset partition, as plain values."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[machine_id]), limit=1
    )
    if not result.records:
        return {}
    mat = result.records[0].asset_materialization
    return {k: getattr(v, "value", v) for k, v in (mat.metadata or {}).items()} if mat else {}


SUMMARY_METRICS = {
    "failure_classifier": ("f1", "roc_auc", "baseline_f1"),
    "rul_regressor": ("rmse", "mae", "baseline_rmse"),
    "anomaly_detector": ("f1", "false_alarm_rate", "roc_auc"),
    "sensor_forecasts": ("mase", "coverage_80", "coverage_95"),
}


def machine_summary(instance: dg.DagsterInstance, machine_id: str) -> dict[str, dict[str, Any]]:
    """Per model: size, train time, headline test metrics (or the skip reason)."""
    out = {}
    for name in MODEL_ASSETS:
        model = latest_metadata(instance, name, machine_id)
        ev = latest_metadata(instance, evaluation_asset_name(name), machine_id)
        row: dict[str, Any] = {"size_mb": model.get("size_mb"), "train_s": model.get("train_seconds")}
        if ev.get("skipped_reason") or model.get("skipped_reason"):
            row["skipped"] = ev.get("skipped_reason") or model.get("skipped_reason")
        for metric in SUMMARY_METRICS[name]:
            if metric in ev:
                row[metric] = ev[metric]
        out[name] = row
    bundle = latest_metadata(instance, "edge_bundle", machine_id)
    if bundle:
        out["edge_bundle"] = {"size_mb": bundle.get("size_mb"), "path": bundle.get("relative_path")}
    return out


# ---------------------------------------------------------------------------------------------- server & status

DEFAULT_SERVER = "127.0.0.1:3000"


def excluded_for(models: list[str] | None) -> list[str]:
    """The model types to skip so that only `models` train (None = all)."""
    from pdm_pipeline.core.schema import MODEL_TYPES

    if not models:
        return []
    unknown = [m for m in models if m not in MODEL_TYPES]
    if unknown:
        raise ValueError(f"unknown model types {unknown}; choose from {', '.join(MODEL_TYPES)}")
    return [m for m in MODEL_TYPES if m not in models]


def server_client(address: str = DEFAULT_SERVER, timeout: float = 2.0):
    """A GraphQL client for a running Dagster webserver at host:port, or None when nothing answers there."""
    import urllib.request

    from dagster_graphql import DagsterGraphQLClient

    host, _, port = address.partition(":")
    try:
        with urllib.request.urlopen(f"http://{address}/server_info", timeout=timeout) as response:
            if response.status != 200:
                return None
    except OSError:
        return None
    return DagsterGraphQLClient(host, port_number=int(port or 80))


def submit_to_server(client, machine_id: str, *, training: dict[str, Any] | None = None) -> str:
    """Queue a train_machine run for one machine partition on the running instance; returns the run id."""
    validate_machine_id(machine_id)
    return client.submit_job_execution(
        TRAIN_JOB,
        run_config={"resources": {"training": {"config": training}}} if training else {},
        tags={"dagster/partition": machine_id, "pdm/machine_id": machine_id, "pdm/trigger": "cli"},
    )


def run_progress(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
    """Status of a run: state, steps done/total, the step(s) running now, failed steps."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(f"no run with id {run_id!r} in this instance ({instance.root_directory})")
    total = None
    if run.execution_plan_snapshot_id:
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        total = len(plan.steps)
    stats = instance.get_run_step_stats(run_id)
    done = [s.step_key for s in stats if s.status is not None and s.status.value in ("SUCCESS", "SKIPPED")]
    failed = [s.step_key for s in stats if s.status is not None and s.status.value == "FAILURE"]
    running = [s.step_key for s in stats if s.end_time is None and s.start_time is not None]
    return {
        "run_id": run_id,
        "job": run.job_name,
        "machine_id": run.tags.get("dagster/partition"),
        "status": run.status.value,
        "steps_done": len(done),
        "steps_total": total,
        "current": running,
        "failed": failed,
        "finished": run.is_finished,
    }
