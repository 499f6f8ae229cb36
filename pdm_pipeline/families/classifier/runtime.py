"""Edge runtime of the failure classifier: P(failure) and the 0/1 flag at the val-calibrated threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pdm_pipeline.families.boosters import TabularModel
from pdm_pipeline.families.classifier import FAILURE_FLAG, FAILURE_PROBABILITY, FAMILY


class ClassifierRuntime:
    model_type = FAMILY.model_type

    def __init__(self, model_dir: Path, card: dict[str, Any]) -> None:
        self.model = TabularModel(model_dir, card, classifier=True)
        self.threshold = float(card["threshold"])
        self.inputs = self.model.feature_inputs

    def probability(self, features: np.ndarray) -> np.ndarray:
        return self.model.predict(features)

    def predict(self, features: np.ndarray, units: np.ndarray | None = None) -> dict[str, np.ndarray]:
        proba = self.probability(features)
        return {FAILURE_PROBABILITY: proba, FAILURE_FLAG: (proba >= self.threshold).astype(np.int8)}


def load(model_dir: Path, card: dict[str, Any]) -> ClassifierRuntime:
    return ClassifierRuntime(model_dir, card)
