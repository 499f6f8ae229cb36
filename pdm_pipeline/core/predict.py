"""Prediction on the edge from a bundle written by `bundle.build_bundle`.

    predictor = EdgePredictor.load("bundles/motor_001")     # verifies every file's hash first
    out = predictor.predict(read_input("recent.parquet"))    # one row per input row
    fc = predictor.forecast(recent_rows)                     # 24 h per forecast sensor, 80 % / 95 % bands

Input: raw sensor rows (the machine's sensor columns; `timestamp` and `unit_id` optional, rows in time order
within each unit), with enough history before the rows that matter: features are computed by
`features.compute_features`, the same code as training, over the rows given. A row with fewer than
`min_history_rows` rows of its unit before it (itself included) is still predicted, but its longest windows
were not full, so it is marked `warmup=True`.

Output columns (those of models the bundle lacks are absent): failure_probability, failure_flag (at the
val-calibrated threshold), rul_hours, anomaly_score (ensemble, 0..1), anomaly_flag, warmup; plus `timestamp`
and `unit_id` when the input has them.

Speed: native boosters (LightGBM/XGBoost/CatBoost) and the scikit-learn ensemble; AutoGluon is imported only
for a model the bundle ships as an AutoGluon predictor, and Prophet only at the first `forecast` call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core.anomaly import ENSEMBLE, AnomalyEnsemble, load_anomaly_model
from pdm_pipeline.core.bundle import (
    AUTOGLUON_FORMAT,
    BUNDLE_FILE,
    NativeModel,
    feature_frame,
    verify_bundle,
)
from pdm_pipeline.core.features import FeatureSpec, min_history_rows, unit_codes
from pdm_pipeline.core.forecast import SensorForecaster, load_forecaster
from pdm_pipeline.core.pipeline import read_preprocessing
from pdm_pipeline.core.schema import ANOMALY, CLASSIFICATION, REGRESSION, TIMESERIES, TIMESTAMP, UNIT_ID
from pdm_pipeline.core.tabular import LoadedTabularModel, load_tabular_model

FAILURE_PROBABILITY = "failure_probability"
FAILURE_FLAG = "failure_flag"
RUL_HOURS = "rul_hours"
ANOMALY_SCORE = "anomaly_score"
ANOMALY_FLAG = "anomaly_flag"
WARMUP = "warmup"
OUTPUT_COLUMNS = (FAILURE_PROBABILITY, FAILURE_FLAG, RUL_HOURS, ANOMALY_SCORE, ANOMALY_FLAG)
CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


class PredictionInputError(ValueError):
    """Input rows the bundle cannot predict on; the message names the machine, the file or the columns."""


def read_input(path: str | Path) -> pd.DataFrame:
    """Raw sensor rows from a parquet or CSV file, with `timestamp` (when present) parsed as datetimes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        frame = pd.read_parquet(path)
    elif name.endswith(CSV_SUFFIXES):
        frame = pd.read_csv(path)
    else:
        raise PredictionInputError(
            f"input file {path}: unknown format; expected {', '.join(PARQUET_SUFFIXES + CSV_SUFFIXES)}"
        )
    if TIMESTAMP in frame.columns:
        try:
            frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP])
        except (ValueError, TypeError) as exc:
            raise PredictionInputError(f"input file {path}: column {TIMESTAMP!r} is not a date/time: {exc}") from exc
    return frame


def _column_index(columns: list[str], feature_names: tuple[str, ...], what: str) -> np.ndarray:
    """Positions of `columns` among the feature spec's names (the columns of the feature matrix)."""
    missing = [c for c in columns if c not in feature_names]
    if missing:
        raise ValueError(f"{what} needs column(s) {missing[:10]} that its feature spec does not compute")
    position = {name: i for i, name in enumerate(feature_names)}
    return np.array([position[c] for c in columns], dtype=np.intp)


class _ModelScorer:
    """One model of the bundle, fed from the feature matrix (columns = its feature spec's names).

    Working on numpy rather than a wide DataFrame matters: selecting ~200 named columns of a one-row frame
    costs more than the booster's prediction.
    """

    def __init__(self, bundle: Path, model_type: str, entry: dict[str, Any], feature_names: tuple[str, ...]) -> None:
        self.model_type = model_type
        what = f"bundle {bundle}, {model_type} model"
        self.native: NativeModel | None = None
        self.autogluon: LoadedTabularModel | None = None
        self.anomaly: AnomalyEnsemble | None = None
        if model_type == ANOMALY:
            self.anomaly = load_anomaly_model(bundle / ANOMALY)
            self.columns = list(self.anomaly.feature_names)
            self.threshold = float(self.anomaly.threshold)
        elif entry["format"] == AUTOGLUON_FORMAT:
            self.autogluon = load_tabular_model(bundle / model_type)
            self.columns = self.autogluon.feature_names
            self.threshold = entry["threshold"]
        else:
            self.native = NativeModel(entry["format"], bundle / entry["model_file"], model_type)
            self.columns = list(entry["input_columns"])
            self.threshold = entry["threshold"]
        self._index = _column_index(self.columns, feature_names, what)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """P(failure), RUL hours or the anomaly ensemble score per row of the feature matrix."""
        inputs = matrix[:, self._index]
        if self.native is not None:
            return self.native.predict(inputs)
        frame = pd.DataFrame(inputs, columns=self.columns)
        if self.anomaly is not None:
            return self.anomaly.score(frame)[ENSEMBLE].to_numpy()
        if self.model_type == CLASSIFICATION:
            return self.autogluon.predict_proba(frame)
        return self.autogluon.predict(frame)


@dataclass
class _FeatureGroup:
    """One preprocessing (feature spec + fill values) and the models that use it."""

    spec: FeatureSpec
    fill_values: dict[str, float]
    scorers: list[_ModelScorer]


def _feature_groups(bundle: Path, models: dict[str, dict[str, Any]]) -> list[_FeatureGroup]:
    """The models of the bundle grouped by preprocessing (normally one group: a run shares its features)."""
    groups: dict[str, _FeatureGroup] = {}
    for model_type in (CLASSIFICATION, REGRESSION, ANOMALY):
        if model_type not in models:
            continue
        prep = read_preprocessing(bundle / model_type)
        key = json.dumps([prep["feature_spec"], prep["fill_values"]], sort_keys=True)
        if key not in groups:
            groups[key] = _FeatureGroup(FeatureSpec.from_dict(prep["feature_spec"]), prep["fill_values"], [])
        group = groups[key]
        group.scorers.append(_ModelScorer(bundle, model_type, models[model_type], group.spec.feature_names))
    return list(groups.values())


class EdgePredictor:
    """The models of one bundle, loaded for prediction. Build it with `EdgePredictor.load(bundle_dir)`."""

    def __init__(self, bundle_dir: Path, description: dict[str, Any], feature_groups: list[_FeatureGroup]) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.description = description
        self.machine_id: str = description["machine_id"]
        self._feature_groups = feature_groups
        # The raw sensor columns `predict` needs, in the feature specs' order.
        self.sensors: list[str] = list(dict.fromkeys(s for g in feature_groups for s in g.spec.sensors))
        # Rows of a unit (the current one included) before a prediction is no longer marked `warmup`.
        self.min_history_rows: int = max((min_history_rows(g.spec) for g in feature_groups), default=1)
        self._forecaster: SensorForecaster | None = None

    @classmethod
    def load(cls, bundle_dir: str | Path) -> EdgePredictor:
        """Verify the bundle's hashes (BundleIntegrityError on any change), then load its models."""
        bundle = Path(bundle_dir)
        verify_bundle(bundle)
        description = json.loads((bundle / BUNDLE_FILE).read_text())
        return cls(bundle, description, _feature_groups(bundle, description["models"]))

    @property
    def model_types(self) -> list[str]:
        """The model types in the bundle."""
        return list(self.description["models"])

    def _check_columns(self, raw: pd.DataFrame, needed: list[str], what: str) -> None:
        if not isinstance(raw, pd.DataFrame):
            raise TypeError(f"machine {self.machine_id}: {what} needs a pandas DataFrame, got {type(raw).__name__}")
        if raw.empty:
            raise PredictionInputError(f"machine {self.machine_id}: {what} got no rows")
        missing = [c for c in needed if c not in raw.columns]
        if missing:
            raise PredictionInputError(
                f"machine {self.machine_id}: {what} input is missing column(s) {missing}; "
                f"the bundle expects {needed} (present: {list(raw.columns)})"
            )

    # ------------------------------------------------------------------------------------------ prediction

    def model_inputs(self, raw: pd.DataFrame) -> list[np.ndarray]:
        """Feature matrices of raw rows (one per distinct preprocessing, rows aligned with `raw`)."""
        if not self._feature_groups:
            raise LookupError(
                f"bundle {self.bundle_dir} of machine {self.machine_id} has no classification, regression or "
                f"anomaly model to predict with (it holds: {', '.join(self.model_types)})"
            )
        self._check_columns(raw, self.sensors, "predict")
        matrices = []
        for group in self._feature_groups:
            try:
                frame = feature_frame(raw, group.spec, group.fill_values)
            except ValueError as exc:
                raise PredictionInputError(f"machine {self.machine_id}: {exc}") from exc
            matrices.append(frame.to_numpy(dtype=float))
        return matrices

    def score_inputs(self, matrices: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Model outputs (failure_probability, failure_flag, rul_hours, anomaly_score, anomaly_flag; those of
        the models present) for `model_inputs` matrices, or row subsets of them."""
        outputs: dict[str, np.ndarray] = {}
        for group, matrix in zip(self._feature_groups, matrices, strict=True):
            for scorer in group.scorers:
                value = scorer.predict(matrix)
                if scorer.model_type == CLASSIFICATION:
                    outputs[FAILURE_PROBABILITY] = value
                    outputs[FAILURE_FLAG] = (value >= scorer.threshold).astype(np.int8)
                elif scorer.model_type == REGRESSION:
                    outputs[RUL_HOURS] = value
                else:
                    outputs[ANOMALY_SCORE] = value
                    outputs[ANOMALY_FLAG] = (value >= scorer.threshold).astype(np.int8)
        return {name: outputs[name] for name in OUTPUT_COLUMNS if name in outputs}

    def predict(self, raw: pd.DataFrame, *, latest_only: bool = False) -> pd.DataFrame:
        """Predictions per input row (same index as `raw`); with `latest_only`, only each unit's last row.

        Raises PredictionInputError naming missing sensor columns (and the expected ones), an empty input or
        rows out of time order.
        """
        matrices = self.model_inputs(raw)
        codes = pd.Series(unit_codes(raw))
        position = codes.groupby(codes.to_numpy()).cumcount().to_numpy()
        rows = np.flatnonzero(~codes.duplicated(keep="last").to_numpy()) if latest_only else np.arange(len(raw))
        outputs = self.score_inputs([m[rows] for m in matrices])
        out = raw.iloc[rows][[c for c in (TIMESTAMP, UNIT_ID) if c in raw.columns]].copy()
        for name, values in outputs.items():
            out[name] = values
        out[WARMUP] = position[rows] + 1 < self.min_history_rows
        return out

    # ------------------------------------------------------------------------------------------ forecasts

    def forecast(self, raw: pd.DataFrame | None = None, hours: int | None = None) -> pd.DataFrame:
        """Per-sensor forecasts: sensor, ds, yhat and 80 %/95 % bounds, `hours` ahead (default: the trained
        horizon, 24 h). With `raw` (timestamp + sensor rows), each sensor is refitted on its trailing window and
        forecast from its end; without, from the end of the training history."""
        if TIMESERIES not in self.description["models"]:
            raise LookupError(
                f"bundle {self.bundle_dir} of machine {self.machine_id} has no timeseries model: "
                f"{self.description.get('absent', {}).get(TIMESERIES, 'not trained')}"
            )
        if self._forecaster is None:
            self._forecaster = load_forecaster(self.bundle_dir / TIMESERIES)
        if raw is not None:
            self._check_columns(raw, [TIMESTAMP, *self._forecaster.sensors], "forecast")
        try:
            return self._forecaster.forecast(recent=raw, hours=hours)
        except ValueError as exc:
            raise PredictionInputError(f"machine {self.machine_id}: forecast: {exc}") from exc


__all__ = [
    "ANOMALY_FLAG",
    "ANOMALY_SCORE",
    "FAILURE_FLAG",
    "FAILURE_PROBABILITY",
    "OUTPUT_COLUMNS",
    "RUL_HOURS",
    "WARMUP",
    "EdgePredictor",
    "PredictionInputError",
    "read_input",
]
