"""The four model assets of a machine. Each trains into a candidate directory beside its final place;
`deployed_models` renames it into data/models/<type>/<machine_id>/ only after every gate passed."""


from typing import Any

import dagster as dg

from pdm_pipeline.core.contract import MachineData, machine_fingerprint
from pdm_pipeline.core.pipeline import FeatureFrames, LabelResult, TrainedModel, candidate_dir, train_model
from pdm_pipeline.core.schema import ANOMALY, CLASSIFICATION, REGRESSION, TIMESERIES
from pdm_pipeline.defs.partitions import machines_partitions
from pdm_pipeline.defs.resources import DataRootResource, TrainingResource
from pdm_pipeline.defs.tracking import log_trained_model

# Asset name, model type, what it is, tool kind shown in the UI.
MODEL_ASSETS: dict[str, tuple[str, str, str]] = {
    "failure_classifier": (CLASSIFICATION, "AutoGluon binary classifier of failure_status, threshold calibrated on val", "autogluon"),
    "rul_regressor": (REGRESSION, "AutoGluon regressor of the remaining useful life (hours)", "autogluon"),
    "anomaly_detector": (ANOMALY, "IsolationForest + OneClassSVM + LOF + z-score ensemble fitted on normal train rows", "scikitlearn"),
    "sensor_forecasts": (TIMESERIES, "Prophet 24 h forecasts with 80/95 % intervals per critical sensor", "prophet"),
}
MODEL_TYPE_OF = {name: spec[0] for name, spec in MODEL_ASSETS.items()}


def trained_model_metadata(trained: TrainedModel) -> dict:
    if trained.skipped:
        return {"skipped_reason": trained.skipped_reason, "size_mb": 0.0, "train_seconds": 0.0}
    meta = {
        "path": dg.MetadataValue.path(str(trained.path)),
        "size_mb": round(trained.size_mb, 3),
        "train_seconds": round(trained.train_seconds, 2),
        "summary": dg.MetadataValue.json(trained.summary),
    }
    for key, value in (trained.summary.get("val_metrics") or {}).items():
        if isinstance(value, (int, float)):
            meta[f"val_{key}"] = float(value)
    return meta


def _build_model_asset(name: str, model_type: str, description: str, kind: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        partitions_def=machines_partitions,
        group_name="models",
        kinds={kind},
        pool="model_training",
        description=description,
    )
    def _model(
        context: dg.AssetExecutionContext,
        machine_dataset: MachineData,
        failure_labels: LabelResult,
        machine_features: FeatureFrames,
        data_root: DataRootResource,
        training: TrainingResource,
        mlflow: dg.ResourceParam[Any],
    ) -> dg.Output[TrainedModel]:
        config = training.config()
        out_dir = candidate_dir(data_root.root, model_type, context.partition_key, tag=context.run_id[:8])
        context.log.info(f"training {model_type} for {context.partition_key} with preset {config.preset} into {out_dir}")
        trained = train_model(
            model_type, machine_dataset, failure_labels, machine_features, out_dir, config, log=context.log.info
        )
        data_version = machine_fingerprint(data_root.root, context.partition_key)
        tracked = log_trained_model(context, mlflow, trained, config.as_dict(), data_version)
        return dg.Output(trained, metadata={**trained_model_metadata(trained), **tracked})

    return _model


model_assets = [_build_model_asset(name, *spec) for name, spec in MODEL_ASSETS.items()]
