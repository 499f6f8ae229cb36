"""Experiment tracking through dagster-mlflow.

`mlflow_tracking` (dagster-mlflow) opens one MLflow run per Dagster run; every model materialization gets its
own child run under it (params of different assets would collide in one run), created with explicit run ids by
`pdm_pipeline.core.tracking`, so nothing depends on MLflow's global active run, which mlflow 3 ends at process
exit. The tracking store is `MLFLOW_TRACKING_URI`, else SQLite + artifacts under the data root.
"""

import atexit
from typing import Any

import dagster as dg

from pdm_pipeline.core import paths, tracking
from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.families.base import TrainedModel

EXPERIMENT = "pdm-pipeline"
MLFLOW_UI = "http://127.0.0.1:5000"


# The part of dagster-mlflow's config we use (importing dagster_mlflow imports mlflow: ~4 s, so only at run time).
CONFIG_SCHEMA = {
    "experiment_name": dg.Field(str, description="MLflow experiment name"),
    "mlflow_tracking_uri": dg.Field(dg.Noneable(str), default_value=None, is_required=False,
                                    description="default: $MLFLOW_TRACKING_URI, else sqlite under the data root"),
    "extra_tags": dg.Field(dg.Permissive(), is_required=False, description="extra tags for the Dagster run's MLflow run"),
}


@dg.resource(config_schema=CONFIG_SCHEMA, description="dagster-mlflow's MLflow run per Dagster run; experiment under the data root")
def pdm_mlflow(init_context) -> Any:
    from dagster_mlflow.resources import MlFlow

    config = init_context.resource_config
    # Resolved when a run starts (not when definitions load), so $PDM_DATA_DIR / $MLFLOW_TRACKING_URI apply.
    uri = config.get("mlflow_tracking_uri") or tracking.default_tracking_uri(paths.data_root().resolve())
    _end_stale_runs(init_context.log)  # before the URI changes: a stale run lives in its own run's store
    tracking.activate_tracking_uri(uri)
    # Create the experiment ourselves first, so its artifacts go under the data root, not ./mlruns.
    tracking.ensure_experiment(tracking_uri=uri, experiment=config["experiment_name"])
    resource = MlFlow(init_context)
    resource.tracking_uri = uri
    _name_parent_run(resource, init_context.dagster_run)
    # dagster-mlflow unregisters mlflow.end_run; mlflow 3 registers _safe_end_run instead, which would end the
    # Dagster run's MLflow run when each step's process exits.
    import mlflow.tracking.fluent as fluent

    atexit.unregister(fluent._safe_end_run)
    return resource


def _end_stale_runs(log) -> None:
    """End MLflow runs left active in this process by an earlier Dagster run that failed before its last step.

    dagster-mlflow would otherwise take the stale run as this run's (mlflow.start_run refuses while one is
    active, and dagster-mlflow then uses the active one). Done before the tracking URI changes: a stale run
    lives in the store of its own run. Its status becomes FAILED, the truth for a run that never finished.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    while (stale := mlflow.active_run()) is not None:
        try:
            mlflow.end_run(status="FAILED")  # pops it from the active-run stack first
            log.info(f"ended MLflow run {stale.info.run_id} left active by an earlier failed Dagster run")
        except MlflowException as exc:  # its store is gone (e.g. a deleted data root): nothing left to end
            log.warning(f"could not mark stale MLflow run {stale.info.run_id} FAILED: {exc}")


def _name_parent_run(resource: Any, dagster_run: Any) -> None:
    """Name and tag the Dagster run's MLflow run after its machine and what started it, so the MLflow UI lists
    `pump_001 · sensor · 1a2b3c4d` instead of one `train_machine` per run."""
    if dagster_run is None or resource.active_run() is None:
        return
    tags = dagster_run.tags or {}
    machine = tags.get("dagster/partition") or tags.get("pdm/machine_id") or "?"
    trigger = tags.get("pdm/trigger") or ("schedule" if "dagster/schedule_name" in tags
                                          else "sensor" if "dagster/sensor_name" in tags
                                          else "backfill" if "dagster/backfill" in tags else "ui")
    named = {
        "mlflow.runName": f"{machine} · {trigger} · {dagster_run.run_id[:8]}",
        "machine_id": machine,
        "trigger": trigger,
        "dagster_job": dagster_run.job_name,
    }
    if tags.get("pdm/data_version"):
        named["data_version"] = tags["pdm/data_version"]
    try:
        tracking.set_run_tags(tracking_uri=resource.tracking_uri, run_id=resource.active_run().info.run_id, tags=named)
    except Exception:  # naming is cosmetic: never fail a run over it
        pass


def end_mlflow_runs_of(dagster_run_id: str, status: str = "FAILED") -> list[str]:
    """End the MLflow runs of a Dagster run that failed, was cancelled or died (see core.tracking)."""
    uri = tracking.default_tracking_uri(paths.data_root().resolve())
    return tracking.end_dagster_run(tracking_uri=uri, experiment=EXPERIMENT, dagster_run_id=dagster_run_id,
                                    status=status)


def mlflow_resource() -> dg.ResourceDefinition:
    return pdm_mlflow.configured({"experiment_name": EXPERIMENT})


def _uri(mlflow: Any) -> str:
    return mlflow.tracking_uri


def log_trained_model(
    context: dg.AssetExecutionContext, mlflow: Any, trained: TrainedModel, params: dict[str, Any], data_version: str,
    input_example: Any = None,
) -> dict[str, Any]:
    """One child MLflow run for this model: params, validation metrics, the model directory, its input signature
    and an input example (the first feature rows of train). Returns metadata."""
    if trained.skipped or trained.path is None:
        return {}
    record = tracking.log_model_run(
        tracking_uri=_uri(mlflow),
        experiment=mlflow.experiment_name,
        parent_run_id=mlflow.active_run().info.run_id,
        machine_id=trained.machine_id,
        model_type=trained.model_type,
        dagster_run_id=context.run_id,
        data_version=data_version,
        params={**params, "summary": trained.summary},
        metrics={
            "size_mb": trained.size_mb,
            "train_seconds": trained.train_seconds,
            **{(k if k.startswith("val_") else f"val_{k}"): v for k, v in (trained.summary.get("val_metrics") or {}).items()},
        },
        artifact_dir=trained.path,
        input_example=input_example,
    )
    trained.summary["mlflow_run_id"] = record.run_id
    return {"mlflow_run_id": record.run_id, "mlflow_run": dg.MetadataValue.url(tracking.ui_url(_uri(mlflow), record.experiment_id, record.run_id, MLFLOW_UI))}


def log_evaluation(mlflow: Any, trained: TrainedModel, evaluation: Evaluation) -> None:
    run_id = trained.summary.get("mlflow_run_id")
    if run_id and evaluation.evaluated:
        tracking.log_metrics(tracking_uri=_uri(mlflow), run_id=run_id, metrics=evaluation.flat_metrics(), prefix="test_")
