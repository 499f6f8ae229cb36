"""The common shape of every model's test-set evaluation.

Each model family computes its own metrics on the test split (touched once, for these numbers) beside a
baseline, and pictures as markdown. The Dagster layer turns `metrics` and `baseline` into numeric metadata
(plotted across materializations) and `pictures` into markdown metadata; the release writes them into the
model's `metrics.json`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any


def metric_number(value: Any) -> int | float | None:
    """A finite metric as a number: an int for a whole-number type (a count: numpy's too), else a float; None
    for None, NaN, infinities and non-numbers."""
    if not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        return None
    return int(value) if isinstance(value, numbers.Integral) else float(value)


@dataclass
class Evaluation:
    model_type: str
    # Headline test metrics of the model, e.g. {"f1": 0.91, "roc_auc": 0.97}.
    metrics: dict[str, float] = field(default_factory=dict)
    # The same metrics for the baseline (majority class, mean RUL, seasonal naive, ...).
    baseline: dict[str, float] = field(default_factory=dict)
    baseline_name: str = ""
    # JSON-able detail: confusion matrix, per-band errors, per-detector metrics, per-sensor metrics...
    details: dict[str, Any] = field(default_factory=dict)
    # title -> markdown (images inlined as data URIs, or markdown tables).
    pictures: dict[str, str] = field(default_factory=dict)
    # Set when there is nothing to evaluate (no model, no truth): metrics are empty and this says why.
    skipped_reason: str | None = None
    # Set when evaluating raised: the model has no test metrics and is not released.
    failed_reason: str | None = None

    @property
    def evaluated(self) -> bool:
        return self.skipped_reason is None and self.failed_reason is None

    def flat_metrics(self) -> dict[str, float]:
        """metrics and baseline_<name> in one flat dict of finite numbers (for MLflow / numeric metadata): counts
        (n_windows, events_total, ...) stay whole numbers, everything else is a float."""
        out: dict[str, float] = {}
        for prefix, values in (("", self.metrics), ("baseline_", self.baseline)):
            for k, v in values.items():
                if (number := metric_number(v)) is not None:
                    out[f"{prefix}{k}"] = number
        return out

    def card(self) -> dict[str, Any]:
        """The JSON-able metrics card (no pictures) written next to a released model."""
        out = asdict(self)
        out.pop("pictures")
        return out

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> Evaluation:
        return cls(**{k: v for k, v in card.items() if k != "pictures"})

    @classmethod
    def skipped(cls, model_type: str, reason: str) -> Evaluation:
        return cls(model_type=model_type, skipped_reason=reason)

    @classmethod
    def failed(cls, model_type: str, reason: str) -> Evaluation:
        return cls(model_type=model_type, failed_reason=reason)
