"""The Dagster definitions of pdm-pipeline: `dagster dev` and the CLI load this module.

Everything model-specific is generated from the family registry (`pdm_pipeline.families`): one step per family
(model + evaluation assets with their checks), the release, the summaries. `build_definitions()` builds them
for the families registered at call time (tests register a toy family this way).
"""

from __future__ import annotations

import dagster as dg  # noqa: E402 - pdm_pipeline.defs installed the warning filters first

from pdm_pipeline.defs.assets.fleet import fleet_overview  # noqa: E402
from pdm_pipeline.defs.assets.models import family_assets  # noqa: E402
from pdm_pipeline.defs.assets.preparation import failure_labels, machine_dataset, machine_features  # noqa: E402
from pdm_pipeline.defs.assets.release import machine_release  # noqa: E402
from pdm_pipeline.defs.assets.source_data import machine_metadata, machine_splits  # noqa: E402
from pdm_pipeline.defs.io_manager import RunScopedPickleIOManager  # noqa: E402
from pdm_pipeline.defs.jobs import train_machine_job  # noqa: E402
from pdm_pipeline.defs.resources import DataRootResource, GatesResource, TrainingResource  # noqa: E402
from pdm_pipeline.defs.schedules import weekly_fleet_retrain  # noqa: E402
from pdm_pipeline.defs.sensors import new_machine_data_sensor  # noqa: E402
from pdm_pipeline.defs.tracking import mlflow_resource  # noqa: E402


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
            *family_assets(), build_release_asset(), fleet_overview,
        ],
        jobs=[train_machine_job],
        sensors=[new_machine_data_sensor],
        schedules=[weekly_fleet_retrain],
        resources=build_resources(),
    )


defs = build_definitions()
__all__ = ["build_definitions", "defs", "machine_release"]
