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
        self.cap = card.get("rul_cap")

    def rul(self, features: np.ndarray) -> np.ndarray:
        """Predicted RUL within [0, cap]: the model learned min(rul, cap), so values past the cap mean nothing."""
        upper = np.inf if self.cap is None else float(self.cap)
        return np.clip(self.model.predict(features), 0.0, upper)

    def predict(self, features: np.ndarray, units: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return {self.column: self.rul(features)}


def load(model_dir: Path, card: dict[str, Any]) -> RegressorRuntime:
    return RegressorRuntime(model_dir, card)
