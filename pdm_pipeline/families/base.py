"""What a model family is: one `ModelFamily` per model type, everything about that type in one place.

A family package (`pdm_pipeline/families/<name>/`) holds:

- ``__init__.py``: its `ModelFamily` (asset name, description, baseline, headline and champion metrics, Pi
  size budget, quality gates): light, no heavy import;
- ``train.py``: ``train(view: TrainView, out_dir: Path, config: TrainingConfig) -> dict`` writes the model
  into `out_dir` (safe formats only: native booster files, numpy arrays, JSON) and returns a JSON-able
  summary; it raises `ModelSkipped` with the reason when the model does not apply to this data;
- ``runtime.py``: ``load(model_dir: Path, card: dict) -> Runtime``: the edge predictor for the model, needing
  numpy, pandas and the model's own library only (it is imported on the Raspberry Pi);
- ``evaluate.py``: ``evaluate(model_dir: Path, view: TestView) -> Evaluation``: test metrics beside a baseline,
  with pictures; the only place test data is read.

The registry (`pdm_pipeline.families`) lists the families; the Dagster assets and checks, the release, the
bundle and the edge predictor are all generated from it, so a new model type is its package plus one
registry line.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

CARD_FILE = "model_card.json"
PREPROCESSING_FILE = "preprocessing.json"
# Written by the release into each released model directory: its test metrics.
METRICS_FILE = "metrics.json"

TRAINED = "trained"
SKIPPED = "skipped"
FAILED = "failed"
# Left out on purpose (excluded_models, or not selected for the run): no warning, its previous version stays.
EXCLUDED = "excluded"
NOT_RUN = "not run"


class ModelSkipped(Exception):
    """The model does not apply to this data (or was excluded); the message is the user-facing reason."""


@dataclass(frozen=True)
class QualityGate:
    """A test-metric gate of a family: `metric` must be >= (direction "min") or <= ("max") `limit`."""

    name: str
    metric: str
    limit: float
    direction: str
    description: str

    def passes(self, value: float, limit: float) -> bool:
        return value >= limit if self.direction == "min" else value <= limit

    @property
    def sign(self) -> str:
        return ">=" if self.direction == "min" else "<="


class Runtime(Protocol):
    """A loaded model on the edge: feature rows in, named output columns out."""

    model_type: str
    # The feature columns it reads, by name (a subset of its preprocessing's feature spec).
    inputs: list[str]

    def predict(self, features: np.ndarray, units: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Output columns for feature rows (`features[:, i]` is `inputs[i]`); `units` = unit codes of the rows,
        for runtimes whose output depends on the rows before (anomaly alarm hysteresis)."""
        ...


@dataclass
class TrainView:
    """What training may see: train and val only (raw rows and features), the label definition, the metadata."""

    machine_id: str
    metadata: Any  # contract.MachineMetadata
    profile: Any  # contract.MachineProfile | None
    raw: dict[str, pd.DataFrame]  # "train", "val"
    frames: dict[str, pd.DataFrame]  # "train", "val": feature columns + pass-through columns
    feature_names: list[str]
    preprocessing: dict[str, Any]  # feature spec, fill values, label definition (JSON-able)
    label_skipped_reason: str | None = None
    # Pooled fleet models this machine may use instead of its own (model type -> core.fleet.PooledModel).
    pooled: dict[str, Any] = field(default_factory=dict)
    # A fleet's pooled view only: per split ("train", "val"), each row's member (index into the fleet's members).
    row_members: dict[str, np.ndarray] | None = None

    @property
    def time_unit(self) -> str:
        return self.metadata.time_unit

    @property
    def sensors(self) -> tuple[str, ...]:
        return self.metadata.sensors


@dataclass
class TestView:
    """What evaluation sees: the test rows (raw and features) and the history before them (raw train + val)."""

    machine_id: str
    metadata: Any
    history: pd.DataFrame  # raw train + val rows
    raw_test: pd.DataFrame
    test: pd.DataFrame  # test feature frame (features computed over each unit's whole history)

    @property
    def time_unit(self) -> str:
        return self.metadata.time_unit


def read_card(model_dir: Path) -> dict[str, Any]:
    """The model card of a model directory (verify the directory first: see edge/integrity.py)."""
    file = Path(model_dir) / CARD_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no model at {model_dir}: {CARD_FILE} is missing")
    return json.loads(file.read_text())


@dataclass(frozen=True)
class ModelFamily:
    """Everything the pipeline knows about one model type."""

    model_type: str  # path part, CLI name: "classification"
    asset_name: str  # Dagster asset: "failure_classifier"
    title: str  # "failure classifier"
    description: str
    kind: str  # Dagster kind tag shown in the UI
    baseline_name: str
    # (metric, higher is better), most important first: summaries, fleet overview, benchmark.
    headline_metrics: tuple[tuple[str, bool], ...]
    # The test metric that decides the MLflow `champion` alias (None: not registered).
    champion_metric: tuple[str, bool] | None
    size_budget_mb: float
    quality_gates: tuple[QualityGate, ...]
    # The package holding train.py, runtime.py, evaluate.py.
    package: str
    # Model inputs are the rows' features (classifier, regressor, anomaly) or raw sensor series (forecasts).
    uses_features: bool = True
    output_columns: tuple[str, ...] = ()

    def module(self, name: str) -> Any:
        return importlib.import_module(f"{self.package}.{name}")

    def train(self, view: TrainView, out_dir: Path, config: Any) -> dict[str, Any]:
        return self.module("train").train(view, Path(out_dir), config)

    def evaluate(self, model_dir: Path, view: TestView) -> Any:
        return self.module("evaluate").evaluate(Path(model_dir), view)

    def load_runtime(self, model_dir: Path, card: Mapping[str, Any]) -> Runtime:
        return self.module("runtime").load(Path(model_dir), dict(card))

    @property
    def evaluation_asset(self) -> str:
        return f"{self.asset_name}_evaluation"


@dataclass
class TrainedModel:
    """The outcome of training one family for one machine: a model in a staging directory, or why not."""

    model_type: str
    machine_id: str
    # The staging directory (run-scoped; the release copies it into a versioned release directory).
    path: Path | None
    status: str = TRAINED
    size_mb: float = 0.0
    train_seconds: float = 0.0
    # Small JSON-able facts: best model, threshold, validation metrics, detectors, sensors...
    summary: dict[str, Any] = field(default_factory=dict)
    # Why there is no new model (status skipped or failed).
    reason: str | None = None

    @property
    def skipped(self) -> bool:
        """No new model (skipped or failed): the previous release's model stays."""
        return self.status != TRAINED

    @property
    def skipped_reason(self) -> str | None:
        return self.reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type, "machine_id": self.machine_id,
            "path": str(self.path) if self.path else None, "status": self.status, "size_mb": self.size_mb,
            "train_seconds": self.train_seconds, "summary": self.summary, "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainedModel:
        return cls(
            model_type=d["model_type"], machine_id=d["machine_id"], path=Path(d["path"]) if d["path"] else None,
            status=d["status"], size_mb=float(d["size_mb"]), train_seconds=float(d["train_seconds"]),
            summary=dict(d["summary"]), reason=d["reason"],
        )
