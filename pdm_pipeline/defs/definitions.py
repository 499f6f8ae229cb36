"""The Dagster definitions of pdm-pipeline: `dagster dev` and the CLI load this module.

Everything model-specific is generated from the family registry (`pdm_pipeline.families`): one step per family
(model + evaluation assets with their checks), the release, the summaries. `build_definitions()` builds them
for the families registered at call time (tests register a toy family this way).
"""

from __future__ import annotations

import dagster as dg

from pdm_pipeline.defs.assets.fleet import fleet_models, fleet_models_job, fleet_overview, fleet_overview_job
from pdm_pipeline.defs.assets.models import family_assets
from pdm_pipeline.defs.assets.preparation import failure_labels, machine_dataset, machine_features
from pdm_pipeline.defs.assets.release import machine_release
from pdm_pipeline.defs.assets.source_data import machine_metadata, machine_splits
from pdm_pipeline.defs.io_manager import RunScopedPickleIOManager
from pdm_pipeline.defs.jobs import executor, train_machine_job
from pdm_pipeline.defs.recovery import mlflow_on_run_canceled, mlflow_on_run_failure, recovery_sensor
from pdm_pipeline.defs.resources import DataRootResource, GatesResource, TrainingResource
from pdm_pipeline.defs.schedules import weekly_fleet_retrain
from pdm_pipeline.defs.sensors import fleet_overview_sensor, new_machine_data_sensor
from pdm_pipeline.defs.tracking import mlflow_resource


def build_resources() -> dict:
    return {
        "data_root": DataRootResource(),
        "training": TrainingResource(),
        "gates": GatesResource(),
        "mlflow": mlflow_resource(),
        "io_manager": RunScopedPickleIOManager(),
    }


def build_definitions() -> dg.Definitions:
    from pdm_pipeline.defs.assets.release import build_release_asset

    return dg.Definitions(
        assets=[
            machine_splits, machine_metadata, machine_dataset, failure_labels, machine_features,
            *family_assets(), build_release_asset(), fleet_overview, fleet_models,
        ],
        jobs=[train_machine_job, fleet_models_job, fleet_overview_job],
        sensors=[new_machine_data_sensor, fleet_overview_sensor, recovery_sensor, mlflow_on_run_failure, mlflow_on_run_canceled],
        schedules=[weekly_fleet_retrain],
        resources=build_resources(),
        # Every job without its own (the UI's Materialize button, asset backfills, `dagster asset materialize`)
        # runs on the train job's executor. With Dagster's default (multiprocess) such a run's steps each tagged
        # the run with their own short-lived pid, and the recovery sweep then failed the live run as killed and
        # deleted its staging: its trained models were lost.
        executor=executor(),
    )


defs = build_definitions()
__all__ = ["build_definitions", "defs", "machine_release"]
