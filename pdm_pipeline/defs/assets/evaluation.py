"""One evaluation asset per model: test-set metrics beside a baseline, and pictures for the UI."""


from typing import Any

import dagster as dg

from pdm_pipeline.core.contract import MachineData
from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.core.pipeline import FeatureFrames, TrainedModel, evaluate_model
from pdm_pipeline.defs.assets.models import MODEL_ASSETS
from pdm_pipeline.defs.partitions import machines_partitions
from pdm_pipeline.defs.tracking import log_evaluation

BASELINES = {
    "failure_classifier": "majority class",
    "rul_regressor": "mean RUL of train",
    "anomaly_detector": "flag nothing",
    "sensor_forecasts": "seasonal naive (24 h)",
}


def evaluation_metadata(evaluation: Evaluation) -> dict:
    """Numeric metrics (plotted across materializations in the UI), baseline values and the pictures."""
    if evaluation.skipped_reason:
        return {"skipped_reason": evaluation.skipped_reason}
    meta: dict = dict(evaluation.flat_metrics())
    meta["baseline"] = evaluation.baseline_name
    if evaluation.details:
        meta["details"] = dg.MetadataValue.json(evaluation.details)
    for title, markdown in evaluation.pictures.items():
        meta[title] = dg.MetadataValue.md(markdown)
    return meta


def evaluation_asset_name(model_asset_name: str) -> str:
    return f"{model_asset_name}_evaluation"


def _build_evaluation_asset(model_asset_name: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=evaluation_asset_name(model_asset_name),
        partitions_def=machines_partitions,
        group_name="evaluation",
        ins={"trained": dg.AssetIn(model_asset_name)},
        kinds={"matplotlib"},
        description=f"Test-set metrics of {model_asset_name} beside the {BASELINES[model_asset_name]} baseline, "
        "with pictures; the test split is used here and nowhere else.",
    )
    def _evaluation(
        context: dg.AssetExecutionContext,
        trained: TrainedModel,
        machine_dataset: MachineData,
        machine_features: FeatureFrames,
        mlflow: dg.ResourceParam[Any],
    ) -> dg.Output[Evaluation]:
        evaluation = evaluate_model(trained, machine_dataset, machine_features)
        if evaluation.skipped_reason:
            context.log.info(f"{model_asset_name} skipped: {evaluation.skipped_reason}")
        else:
            context.log.info(f"{model_asset_name} test metrics: {evaluation.metrics}")
            log_evaluation(mlflow, trained, evaluation)
        return dg.Output(evaluation, metadata=evaluation_metadata(evaluation))

    return _evaluation


evaluation_assets = [_build_evaluation_asset(name) for name in MODEL_ASSETS]
