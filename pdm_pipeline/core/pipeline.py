"""The steps of one machine's training, as plain functions, in graph order.

    load_machine -> prepare_labels -> prepare_features -> train_model (x4) -> evaluate_model (x4) -> publish_models

The Dagster assets call exactly these functions (one asset per step), and `run_machine` strings them together
without Dagster for the benchmark and for tests. Test data is touched only inside `evaluate_model`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core import paths
from pdm_pipeline.core.config import TrainingConfig
from pdm_pipeline.core.contract import MachineData, load_machine
from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.core.features import FeatureSpec, build_feature_frame, fit_feature_spec
from pdm_pipeline.core.labels import (
    ConstantLabel,
    LabelDefinition,
    LabelUnavailable,
    apply_labels,
    fit_label_definition,
)
from pdm_pipeline.core.publish import discard_dir, new_candidate_dir, publish_dir, size_mb
from pdm_pipeline.core.schema import (
    ANOMALY,
    CLASSIFICATION,
    LABEL,
    MODEL_TYPES,
    REGRESSION,
    TIMESERIES,
    TIMESTAMP,
)

Log = Callable[[str], None]

# Written into every model directory: what a predictor needs besides the model itself.
PREPROCESSING_FILE = "preprocessing.json"


# ---------------------------------------------------------------------------------------------- labels


@dataclass
class LabelResult:
    definition: LabelDefinition | None
    # Per split: the 0/1 failure_status, aligned with the split's rows. Empty when skipped.
    labels: dict[str, pd.Series] = field(default_factory=dict)
    skipped_reason: str | None = None
    # True when the data defines a label that is unusable (constant on train): a defect, not a missing feature.
    defective: bool = False

    @property
    def positive_rate(self) -> dict[str, float]:
        return {s: float(y.mean()) for s, y in self.labels.items() if len(y)}


def alarm_levels(data: MachineData) -> dict[str, dict[str, Any]]:
    """Alarm levels of the critical sensors, from the machine profile (empty without a profile)."""
    if data.profile is None:
        return {}
    critical = data.metadata.critical_sensors or data.profile.critical_sensors
    out = {}
    for name in critical:
        limits = data.profile.sensors.get(name)
        if limits is not None and limits.alarm is not None and name in data.sensors:
            out[name] = {"level": float(limits.alarm), "direction": limits.direction}
    return out


def prepare_labels(data: MachineData, config: TrainingConfig) -> LabelResult:
    """Fit the label definition on train, then apply that one definition to every split."""
    try:
        definition = fit_label_definition(
            data.splits["train"],
            horizon_hours=config.horizon_hours,
            target_positive_rate=config.target_positive_rate,
            alarm_levels=alarm_levels(data),
            where=f"machine {data.machine_id}",
        )
    except LabelUnavailable as exc:
        return LabelResult(definition=None, skipped_reason=str(exc), defective=isinstance(exc, ConstantLabel))
    labels = {
        split: apply_labels(df, definition, where=f"machine {data.machine_id}, {split} split")
        for split, df in data.splits.items()
    }
    return LabelResult(definition=definition, labels=labels)


# ---------------------------------------------------------------------------------------------- features


@dataclass
class FeatureFrames:
    spec: FeatureSpec
    # Per split: feature columns + pass-through columns (timestamp, unit_id, rul, failure_status, ...).
    frames: dict[str, pd.DataFrame]
    # Values that fill what a rolling window cannot compute (e.g. std of one row); fitted on train.
    fill_values: dict[str, float]

    @property
    def feature_names(self) -> list[str]:
        return list(self.spec.feature_names)


def prepare_features(data: MachineData, labels: LabelResult) -> FeatureFrames:
    """Causal rolling features per unit for every split, with the train-fitted label attached."""
    spec = fit_feature_spec(data.splits["train"], data.sensors, time_order=data.metadata.time_order)
    frames: dict[str, pd.DataFrame] = {}
    for split, df in data.splits.items():
        frame = build_feature_frame(df, spec)
        if labels.definition is not None:
            frame[LABEL] = labels.labels[split].to_numpy()
        frames[split] = frame
    names = list(spec.feature_names)
    fill_values = {c: float(v) for c, v in frames["train"][names].median().fillna(0.0).items()}
    for frame in frames.values():
        frame[names] = frame[names].fillna(fill_values)
    return FeatureFrames(spec=spec, frames=frames, fill_values=fill_values)


# ---------------------------------------------------------------------------------------------- training


@dataclass
class TrainedModel:
    model_type: str
    machine_id: str
    # The candidate directory (written aside; `publish_models` renames it into place).
    path: Path | None
    size_mb: float = 0.0
    train_seconds: float = 0.0
    # Small JSON-able facts: best model, threshold, validation metrics, detectors, sensors...
    summary: dict[str, Any] = field(default_factory=dict)
    skipped_reason: str | None = None

    @property
    def skipped(self) -> bool:
        return self.skipped_reason is not None


def _history(data: MachineData) -> pd.DataFrame:
    """Everything before test (train then val): the forecaster's training history."""
    return pd.concat([data.splits["train"], data.splits["val"]], ignore_index=True)


def _summary(result: Any, *names: str) -> dict[str, Any]:
    out = {}
    for n in names:
        v = getattr(result, n, None)
        if isinstance(v, Path):
            v = str(v)
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        out[n] = v
    return out


def _write_preprocessing(out_dir: Path, features: FeatureFrames, labels: LabelResult) -> None:
    card = {
        "feature_spec": features.spec.to_dict(),
        "fill_values": features.fill_values,
        "label_definition": labels.definition.to_dict() if labels.definition else None,
    }
    (Path(out_dir) / PREPROCESSING_FILE).write_text(json.dumps(card, indent=1))


def read_preprocessing(model_path: Path) -> dict[str, Any]:
    return json.loads((Path(model_path) / PREPROCESSING_FILE).read_text())


def train_model(
    model_type: str,
    data: MachineData,
    labels: LabelResult,
    features: FeatureFrames,
    out_dir: Path,
    config: TrainingConfig,
    log: Log = print,
) -> TrainedModel:
    """Train one model type into `out_dir` (a candidate directory), or return why it was skipped."""
    from pdm_pipeline.core import anomaly, forecast, tabular

    mid = data.machine_id
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}; expected one of {', '.join(MODEL_TYPES)}")
    if not config.wants(model_type):
        discard_dir(out_dir)
        return TrainedModel(model_type, mid, None, skipped_reason=f"{model_type} excluded by config (excluded_models)")
    train, val = features.frames["train"], features.frames["val"]
    names = features.feature_names
    start = time.perf_counter()
    try:
        if model_type == CLASSIFICATION:
            if labels.skipped_reason:
                raise tabular.ModelSkipped(labels.skipped_reason)
            result = tabular.train_failure_classifier(train, val, names, out_dir, config, log)
            summary = _summary(result, "best_model", "threshold", "val_metrics", "preset")
        elif model_type == REGRESSION:
            if not data.metadata.has_rul:
                raise tabular.ModelSkipped(
                    f"RUL column not found in data: machine {mid} has columns {list(data.splits['train'].columns)}"
                )
            result = tabular.train_rul_regressor(train, val, names, out_dir, config, log)
            summary = _summary(result, "best_model", "val_metrics", "preset", "rul_cap_hours")
        elif model_type == ANOMALY:
            result = anomaly.train_anomaly_detector(train, val, names, out_dir, config, log)
            summary = _summary(result, "detectors", "threshold", "contamination", "n_train_normal", "val_metrics")
        else:
            if not data.metadata.time_order:
                raise forecast.ForecastSkipped(f"machine {mid} has no timestamp column: nothing to forecast")
            sensors = forecast.forecast_sensors(data.metadata.critical_sensors, data.sensors)
            val_start = data.splits["val"][TIMESTAMP].min()
            result = forecast.train_sensor_forecasts(_history(data), sensors, out_dir, config, log, val_start=val_start)
            summary = _summary(result, "sensors", "freq", "history_hours", "horizon_hours", "seasonalities", "settings")
    except (tabular.ModelSkipped, forecast.ForecastSkipped) as exc:
        log(f"{model_type} skipped: {exc}")
        discard_dir(out_dir)
        return TrainedModel(model_type, mid, None, skipped_reason=str(exc))
    _write_preprocessing(out_dir, features, labels)
    return TrainedModel(
        model_type=model_type,
        machine_id=mid,
        path=Path(out_dir),
        size_mb=size_mb(out_dir),
        train_seconds=time.perf_counter() - start,
        summary=summary,
    )


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate_model(trained: TrainedModel, data: MachineData, features: FeatureFrames) -> Evaluation:
    """Test-set metrics of one trained model (the only place the test split is used)."""
    from pdm_pipeline.core import anomaly, forecast, tabular

    if trained.skipped:
        return Evaluation.skipped(trained.model_type, trained.skipped_reason or "skipped")
    test = features.frames["test"]
    if trained.model_type == CLASSIFICATION:
        return tabular.evaluate_classifier(trained.path, test)
    if trained.model_type == REGRESSION:
        return tabular.evaluate_regressor(trained.path, test)
    if trained.model_type == ANOMALY:
        return anomaly.evaluate_anomaly_detector(trained.path, test)
    return forecast.evaluate_sensor_forecasts(trained.path, _history(data), data.splits["test"])


# ---------------------------------------------------------------------------------------------- publication


def publish_models(root: Path, trained: dict[str, TrainedModel]) -> dict[str, Path]:
    """Rename every trained candidate into data/models/<type>/<machine_id>/ (skipped ones keep their old model)."""
    published = {}
    for model_type, model in trained.items():
        if model.skipped or model.path is None:
            continue
        final = paths.model_dir(root, model_type, model.machine_id)
        published[model_type] = publish_dir(model.path, final)
    return published


def candidate_dir(root: Path, model_type: str, machine_id: str, tag: str | None = None) -> Path:
    """A fresh candidate directory for one model; abandoned candidates of earlier runs are removed."""
    final = paths.model_dir(root, model_type, machine_id)
    for old in final.parent.glob(f".candidate-{final.name}-*"):
        discard_dir(old)
    return new_candidate_dir(final, tag)


# ---------------------------------------------------------------------------------------------- all steps


@dataclass
class MachineRunResult:
    machine_id: str
    labels: LabelResult
    features: FeatureFrames
    trained: dict[str, TrainedModel]
    evaluations: dict[str, Evaluation]
    published: dict[str, Path]
    seconds: dict[str, float]


def run_machine(
    root: Path,
    machine_id: str,
    config: TrainingConfig | None = None,
    *,
    log: Log = print,
    publish: bool = True,
) -> MachineRunResult:
    """Every step for one machine without Dagster (benchmark, tests). Gates are the Dagster layer's job."""
    config = (config or TrainingConfig()).validate()
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        out = fn()
        seconds[name] = time.perf_counter() - t
        log(f"{machine_id}: {name} done in {seconds[name]:.1f} s")
        return out

    data = timed("load", lambda: load_machine(root, machine_id))
    labels = timed("labels", lambda: prepare_labels(data, config))
    features = timed("features", lambda: prepare_features(data, labels))
    trained: dict[str, TrainedModel] = {}
    evaluations: dict[str, Evaluation] = {}
    for model_type in MODEL_TYPES:
        out_dir = candidate_dir(root, model_type, machine_id)
        trained[model_type] = timed(
            f"train_{model_type}", lambda: train_model(model_type, data, labels, features, out_dir, config, log)
        )
        evaluations[model_type] = timed(f"evaluate_{model_type}", lambda: evaluate_model(trained[model_type], data, features))
    published = publish_models(root, trained) if publish else {}
    return MachineRunResult(machine_id, labels, features, trained, evaluations, published, seconds)


__all__ = [
    "FeatureFrames",
    "LabelResult",
    "MachineRunResult",
    "TrainedModel",
    "alarm_levels",
    "candidate_dir",
    "evaluate_model",
    "prepare_features",
    "prepare_labels",
    "publish_models",
    "read_preprocessing",
    "run_machine",
    "train_model",
]
