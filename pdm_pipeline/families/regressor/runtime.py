"""Edge runtime of the RUL regressor: remaining useful life (>= 0) in the data's time unit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pdm_pipeline.families.boosters import TabularModel
from pdm_pipeline.families.regressor import FAMILY, output_column


class RegressorRuntime:
    model_type = FAMILY.model_type

    def __init__(self, model_dir: Path, card: dict[str, Any]) -> None:
        self.model = TabularModel(model_dir, card, classifier=False)
        self.inputs = self.model.feature_inputs
        self.time_unit = card["time_unit"]
        self.column = output_column(self.time_unit)

    def rul(self, features: np.ndarray) -> np.ndarray:
        return np.maximum(self.model.predict(features), 0.0)

    def predict(self, features: np.ndarray, units: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return {self.column: self.rul(features)}


def load(model_dir: Path, card: dict[str, Any]) -> RegressorRuntime:
    return RegressorRuntime(model_dir, card)
