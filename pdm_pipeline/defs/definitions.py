"""The Dagster definitions of pdm-pipeline: `dagster dev` and the CLI load this module."""


import dagster as dg

from pdm_pipeline.defs.assets.edge_bundle import edge_bundle
from pdm_pipeline.defs.assets.evaluation import evaluation_assets
from pdm_pipeline.defs.assets.models import model_assets
from pdm_pipeline.defs.assets.preparation import failure_labels, machine_dataset, machine_features
from pdm_pipeline.defs.assets.release import deployed_models
from pdm_pipeline.defs.assets.source_data import machine_metadata, machine_splits
from pdm_pipeline.defs.checks.data_quality import label_balance, machine_data_quality
from pdm_pipeline.defs.checks.model_quality import quality_checks
from pdm_pipeline.defs.checks.model_size import size_checks
from pdm_pipeline.defs.jobs import jobs
from pdm_pipeline.defs.resources import DataRootResource, GatesResource, TrainingResource
from pdm_pipeline.defs.schedules import weekly_fleet_retrain
from pdm_pipeline.defs.sensors import new_machine_data_sensor
from pdm_pipeline.defs.tracking import mlflow_resource

source_assets = [machine_splits, machine_metadata]
pipeline_assets = [machine_dataset, failure_labels, machine_features, *model_assets, *evaluation_assets, deployed_models, edge_bundle]


def build_resources() -> dict:
    return {
        "data_root": DataRootResource(),
        "training": TrainingResource(),
        "gates": GatesResource(),
        "mlflow": mlflow_resource(),
    }


defs = dg.Definitions(
    assets=[*source_assets, *pipeline_assets],
    asset_checks=[machine_data_quality, label_balance, *size_checks, *quality_checks],
    jobs=jobs,
    sensors=[new_machine_data_sensor],
    schedules=[weekly_fleet_retrain],
    resources=build_resources(),
)
