"""The steps of one machine's training, as plain functions, in graph order.

    load_machine -> prepare_labels -> prepare_features -> train_model (per family) -> evaluate_model
    (per family) -> core.release.release_machine

The Dagster assets call exactly these functions, and `run_machine` strings them together without Dagster (the
benchmark, tests, any core-only use): the same gates, the same metrics card, the same atomic release.

Each family trains into a RUN-SCOPED staging directory (`<data root>/staging/<machine>/<run id>/<type>/`), so
two runs of one machine never share files. A family that does not apply (skipped) or raises (failed) gives a
`TrainedModel` saying why and blocks nothing: the others are evaluated and released, and the release keeps that
type's previous model. Every staged model directory is hashed and signed (`edge/integrity.py`) right after
training; evaluation verifies it before loading anything. Test data is touched only in `evaluate_model`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline import families
from pdm_pipeline.core import paths
from pdm_pipeline.core.config import GateSettings, TrainingConfig
from pdm_pipeline.core.contract import MachineData, load_machine
from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.core.features import FeatureSpec, build_feature_frame, continuous_features, fit_feature_spec
from pdm_pipeline.core.labels import (
    ConstantLabel,
    LabelDefinition,
    LabelUnavailable,
    apply_labels,
    fit_label_definition,
)
from pdm_pipeline.core.schema import LABEL
from pdm_pipeline.edge.integrity import Trust, verify_dir, write_manifest
from pdm_pipeline.families.base import (
    CARD_FILE,
    EXCLUDED,
    FAILED,
    PREPROCESSING_FILE,
    SKIPPED,
    TRAINED,
    ModelFamily,
    ModelSkipped,
    TestView,
    TrainedModel,
    TrainView,
)

log = logging.getLogger(__name__)

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
    """Fit the label definition on train, then apply that one definition to every split (each split alone:
    a row's label never looks into the next split)."""
    try:
        definition = fit_label_definition(
            data.splits["train"],
            horizon=config.horizon,
            target_positive_rate=tuple(config.target_positive_rate),
            alarm_levels=alarm_levels(data),
            time_unit=data.metadata.time_unit,
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


def prepare_features(data: MachineData, labels: LabelResult, config: TrainingConfig | None = None) -> FeatureFrames:
    """Causal rolling features over each unit's whole history (train, val and test in one pass), the train
    label attached, and the train-median fill values applied."""
    from pdm_pipeline.core.gates import constant_sensors

    config = config or TrainingConfig()
    constant = set(constant_sensors(data.splits["train"], data.sensors))
    if constant:
        log.warning(f"{data.machine_id}: sensors constant on train left out of the features: {sorted(constant)}")
    spec = fit_feature_spec(
        data.splits["train"],
        [s for s in data.sensors if s not in constant] or list(data.sensors),
        time_unit=data.metadata.time_unit,
        window_samples=tuple(config.window_samples),
        time_order=data.metadata.time_order,
    )
    if data.metadata.time_order:
        frames = continuous_features(data.splits, spec)
    else:
        frames = {split: build_feature_frame(df, spec) for split, df in data.splits.items()}
    for split, frame in frames.items():
        if labels.definition is not None:
            frame[LABEL] = labels.labels[split].to_numpy()
    names = list(spec.feature_names)
    fill_values = {c: float(v) for c, v in frames["train"][names].median().fillna(0.0).items()}
    for frame in frames.values():
        frame[names] = frame[names].fillna(fill_values)
    return FeatureFrames(spec=spec, frames=frames, fill_values=fill_values)


def sensor_ranges(frames: Sequence[pd.DataFrame], sensors: Sequence[str]) -> dict[str, list[float]]:
    """Each sensor's [min, max] over the rows the models learnt from (train only): the edge predictor says when
    a reading lies far outside it (a model answers there by extrapolation)."""
    ranges: dict[str, list[float]] = {}
    for sensor in sensors:
        values = pd.concat([f[sensor] for f in frames if sensor in f.columns]).to_numpy(dtype=float, na_value=np.nan)
        values = values[np.isfinite(values)]
        if len(values):
            ranges[sensor] = [float(values.min()), float(values.max())]
    return ranges


def preprocessing_card(
    features: FeatureFrames, labels: LabelResult, ranges: Mapping[str, list[float]] | None = None
) -> dict[str, Any]:
    """preprocessing.json: what a predictor needs besides the model (feature spec, fill values, label, the
    sensors' training ranges)."""
    return {
        "feature_spec": features.spec.to_dict(),
        "fill_values": features.fill_values,
        "label_definition": labels.definition.to_dict() if labels.definition else None,
        "sensor_ranges": dict(ranges or {}),
    }


def _trained_ranges(preprocessing: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    """The machine's preprocessing, its sensor ranges widened to the fleet's when it ships a pooled model (which
    learnt from every member's train rows)."""
    card_file = model_dir / CARD_FILE
    card = json.loads(card_file.read_text()) if card_file.is_file() else {}
    fleet_ranges = (card.get("fleet") or {}).get("sensor_ranges") if card.get("source") == "fleet" else None
    if not fleet_ranges:
        return preprocessing
    ranges = dict(preprocessing.get("sensor_ranges") or {})
    for sensor, (lo, hi) in fleet_ranges.items():
        own = ranges.get(sensor, [lo, hi])
        ranges[sensor] = [min(own[0], lo), max(own[1], hi)]
    return {**preprocessing, "sensor_ranges": ranges}


def read_preprocessing(model_path: Path) -> dict[str, Any]:
    return json.loads((Path(model_path) / PREPROCESSING_FILE).read_text())


def train_view(
    data: MachineData, labels: LabelResult, features: FeatureFrames, pooled: Mapping[str, Any] | None = None
) -> TrainView:
    """What training may see: train and val only."""
    reason = labels.skipped_reason
    if labels.defective:
        reason = f"the label is defective (a data problem, not a model limit): {labels.skipped_reason}"
    return TrainView(
        machine_id=data.machine_id,
        metadata=data.metadata,
        profile=data.profile,
        raw={s: data.splits[s] for s in ("train", "val")},
        frames={s: features.frames[s] for s in ("train", "val")},
        feature_names=features.feature_names,
        preprocessing=preprocessing_card(
            features, labels, sensor_ranges([data.splits["train"]], features.spec.sensors)
        ),
        label_skipped_reason=reason,
        pooled=dict(pooled or {}),
    )


def test_view(data: MachineData, features: FeatureFrames) -> TestView:
    """What evaluation sees: the test rows and the raw history before them."""
    return TestView(
        machine_id=data.machine_id,
        metadata=data.metadata,
        history=pd.concat([data.splits["train"], data.splits["val"]], ignore_index=True),
        raw_test=data.splits["test"],
        test=features.frames["test"],
    )


# ---------------------------------------------------------------------------------------------- training


def new_run_id() -> str:
    return uuid.uuid4().hex


def train_model(
    family: ModelFamily | str,
    data: MachineData,
    labels: LabelResult,
    features: FeatureFrames,
    out_dir: Path,
    config: TrainingConfig,
    signing_key: bytes | None,
    pooled: Mapping[str, Any] | None = None,
) -> TrainedModel:
    """Train one family into `out_dir` (a run-scoped staging directory), signed; or say why there is no model.

    Never raises for the model's own problems: ModelSkipped -> status "skipped", any other exception ->
    status "failed" with the exception named (its traceback goes to the log), so one family never blocks
    the others.
    """
    family = families.get(family) if isinstance(family, str) else family
    mid = data.machine_id
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    if not config.wants(family.model_type):
        return TrainedModel(family.model_type, mid, None, EXCLUDED,
                            reason=f"{family.model_type} excluded by the settings (excluded_models)")
    start = time.perf_counter()
    view = train_view(data, labels, features, pooled)
    try:
        summary = family.train(view, out_dir, config)
    except ModelSkipped as exc:
        shutil.rmtree(out_dir, ignore_errors=True)
        log.info(f"{mid}: {family.title} skipped: {exc}")
        return TrainedModel(family.model_type, mid, None, SKIPPED, reason=str(exc))
    except Exception as exc:
        shutil.rmtree(out_dir, ignore_errors=True)
        reason = f"training failed: {type(exc).__name__}: {exc}"
        log.error(f"{mid}: {family.title} {reason}\n{traceback.format_exc()}")
        return TrainedModel(family.model_type, mid, None, FAILED, reason=reason)
    (out_dir / PREPROCESSING_FILE).write_text(json.dumps(_trained_ranges(view.preprocessing, out_dir), indent=1))
    write_manifest(out_dir, signing_key, {"machine_id": mid, "model_type": family.model_type})
    size = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file()) / 1e6
    seconds = time.perf_counter() - start
    log.info(f"{mid}: {family.title} trained in {seconds:.1f} s ({size:.2f} MB)")
    return TrainedModel(family.model_type, mid, out_dir, TRAINED, size, seconds, summary)


def evaluate_model(trained: TrainedModel, data: MachineData, features: FeatureFrames, trust: Trust) -> Evaluation:
    """Test metrics of one trained model (the only place the test split is used); verifies the model first."""
    family = families.get(trained.model_type)
    if trained.skipped or trained.path is None:
        return Evaluation.skipped(trained.model_type, trained.reason or "no model")
    try:
        verify_dir(trained.path, trust, f"{family.title} of {trained.machine_id}")
        return family.evaluate(trained.path, test_view(data, features))
    except Exception as exc:
        reason = f"evaluation failed: {type(exc).__name__}: {exc}"
        log.error(f"{trained.machine_id}: {family.title} {reason}\n{traceback.format_exc()}")
        return Evaluation.failed(trained.model_type, reason)


# ---------------------------------------------------------------------------------------------- all steps


@dataclass
class MachineRunResult:
    machine_id: str
    run_id: str
    labels: LabelResult
    features: FeatureFrames
    trained: dict[str, TrainedModel]
    evaluations: dict[str, Evaluation]
    release: Any  # core.release.ReleaseResult
    seconds: dict[str, float]


def run_machine(
    root: Path,
    machine_id: str,
    config: TrainingConfig | None = None,
    gates: GateSettings | None = None,
    *,
    run_id: str | None = None,
    tracking_uri: str | None = None,
) -> MachineRunResult:
    """Every step for one machine without Dagster: load, labels, features, every family, evaluation, and the
    gated atomic release (core/release.py), exactly as the Dagster graph does."""
    from pdm_pipeline.core import keys, release

    config = (config or TrainingConfig()).validate()
    gates = (gates or GateSettings()).validate()
    run_id = run_id or new_run_id()
    root = Path(root)
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        t = time.perf_counter()
        out = fn()
        seconds[name] = time.perf_counter() - t
        log.info(f"{machine_id}: {name} done in {seconds[name]:.1f} s")
        return out

    data = timed("load", lambda: load_machine(root, machine_id, max_rows=gates.max_split_rows))
    labels = timed("labels", lambda: prepare_labels(data, config))
    features = timed("features", lambda: prepare_features(data, labels, config))
    signing_key = keys.signing_key(root)
    trust = keys.local_trust(root)
    staging = paths.staging_dir(root, machine_id, run_id)
    pooled = release.pooled_models(root, data)
    trained: dict[str, TrainedModel] = {}
    evaluations: dict[str, Evaluation] = {}
    for family in families.all_families():
        t = family.model_type
        trained[t] = timed(
            f"train_{t}",
            lambda f=family: train_model(f, data, labels, features, staging / f.model_type, config, signing_key, pooled),
        )
        evaluations[t] = timed(f"evaluate_{t}", lambda t=t: evaluate_model(trained[t], data, features, trust))
    outcome = timed(
        "release",
        lambda: release.release_machine(
            root, machine_id, trained, evaluations, gates, run_id=run_id, data=data, tracking_uri=tracking_uri,
        ),
    )
    return MachineRunResult(machine_id, run_id, labels, features, trained, evaluations, outcome, seconds)


__all__ = [
    "FeatureFrames",
    "LabelResult",
    "MachineRunResult",
    "alarm_levels",
    "evaluate_model",
    "new_run_id",
    "prepare_features",
    "prepare_labels",
    "preprocessing_card",
    "read_preprocessing",
    "run_machine",
    "sensor_ranges",
    "test_view",
    "train_model",
    "train_view",
]
