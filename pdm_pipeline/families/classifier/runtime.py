"""Edge runtime of the failure classifier: P(failure), calibrated on held-out rows, and the 0/1 flag at the
threshold chosen on those rows.

The booster's raw probability is mapped through the card's Platt scaling (`calibration`: a sigmoid of a line in
the raw probability's log-odds, fitted where the threshold was chosen: val, or the out-of-fold rows), so that
`failure_probability` reads as a probability. The map is increasing: it moves no row across the threshold and
changes no ranking (ROC-AUC, PR-AUC); the flag is taken on the raw probability against the raw threshold, so it is
exactly the one the threshold was chosen for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pdm_pipeline.families.boosters import TabularModel
from pdm_pipeline.families.classifier import FAILURE_FLAG, FAILURE_PROBABILITY, FAMILY

# Raw probabilities are clipped to [EPS, 1 - EPS] before their log-odds are taken.
EPS = 1e-7


def log_odds(proba: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(proba, dtype=float), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def platt(proba: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """The calibrated probability of raw probabilities (unchanged without a Platt calibration)."""
    if not calibration or calibration.get("method") != "platt":
        return np.asarray(proba, dtype=float)
    z = float(calibration["slope"]) * log_odds(proba) + float(calibration["intercept"])
    return 1.0 / (1.0 + np.exp(-z))


class ClassifierRuntime:
    model_type = FAMILY.model_type

    def __init__(self, model_dir: Path, card: dict[str, Any]) -> None:
        self.model = TabularModel(model_dir, card, classifier=True)
        self.calibration: dict[str, Any] = card.get("calibration") or {}
        self.threshold = float(card["threshold"])  # on the calibrated probability
        # the flag's threshold on the raw probability (the one chosen; the same as threshold without calibration)
        self.raw_threshold = float(self.calibration.get("raw_threshold", self.threshold))
        self.inputs = self.model.feature_inputs

    def raw_probability(self, features: np.ndarray) -> np.ndarray:
        """The booster's probability, before calibration."""
        return self.model.predict(features)

    def probability(self, features: np.ndarray) -> np.ndarray:
        return platt(self.raw_probability(features), self.calibration)

    def flag(self, raw: np.ndarray) -> np.ndarray:
        return (np.asarray(raw) >= self.raw_threshold).astype(np.int8)

    def predict(self, features: np.ndarray, units: np.ndarray | None = None) -> dict[str, np.ndarray]:
        raw = self.raw_probability(features)
        return {FAILURE_PROBABILITY: platt(raw, self.calibration), FAILURE_FLAG: self.flag(raw)}


def load(model_dir: Path, card: dict[str, Any]) -> ClassifierRuntime:
    return ClassifierRuntime(model_dir, card)
