"""Test metrics of the anomaly ensemble through the shipped runtime (TEST only, once).

Truth = `anomaly_window` when present, else `failure_status`. Point metrics of the debounced alarm (what an
operator sees): precision, recall, F1, false-alarm rate FP / (FP + TN), missed-alarm rate FN / (FN + TP),
flagged rate; ROC-AUC and PR-AUC of the ensemble score. Event metrics beside them (events found, false-alarm
events per day, detection delay). Per-detector metrics at each detector's own val threshold, in a table.
Baseline = random flags at the contamination rate (expected values).
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.core.schema import TIMESTAMP
from pdm_pipeline.core.timeaxis import is_clock, seconds_per_unit, time_values, unit_codes
from pdm_pipeline.families.anomaly import ENSEMBLE, FAMILY
from pdm_pipeline.families.anomaly.events import event_metrics
from pdm_pipeline.families.anomaly.runtime import AnomalyRuntime, load
from pdm_pipeline.families.anomaly.train import truth_column
from pdm_pipeline.families.base import TestView, read_card

LATENCY_REPEATS = 25


def binary_metrics(truth: np.ndarray, flagged: np.ndarray, score: np.ndarray | None) -> dict[str, float]:
    """Precision, recall, F1, false- and missed-alarm rates, ROC-AUC and PR-AUC (NaN where undefined)."""
    tp = int(np.sum((flagged == 1) & (truth == 1)))
    fp = int(np.sum((flagged == 1) & (truth == 0)))
    fn = int(np.sum((flagged == 0) & (truth == 1)))
    tn = int(np.sum((flagged == 0) & (truth == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * precision * recall / (precision + recall) if tp + fn and precision + recall > 0 else 0.0
    both_classes = 0 < tp + fn < len(truth)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1 if tp + fn else math.nan,
        "false_alarm_rate": fp / (fp + tn) if fp + tn else math.nan,
        "missed_alarm_rate": fn / (fn + tp) if fn + tp else math.nan,
        "roc_auc": float(roc_auc_score(truth, score)) if both_classes and score is not None else math.nan,
        "pr_auc": float(average_precision_score(truth, score)) if both_classes and score is not None else math.nan,
        "flagged_rate": float(np.mean(flagged)),
    }


def random_baseline(prevalence: float, rate: float) -> dict[str, float]:
    """Expected metrics of flagging rows at random with probability `rate`."""
    f1 = 2 * prevalence * rate / (prevalence + rate) if prevalence + rate > 0 else 0.0
    return {
        "precision": prevalence, "recall": rate, "f1": f1, "false_alarm_rate": rate,
        "missed_alarm_rate": 1 - rate, "roc_auc": 0.5, "pr_auc": prevalence, "flagged_rate": rate,
    }


def _metric_table(per_detector: dict[str, dict[str, float]], thresholds: dict[str, float], weights: dict) -> str:
    columns = ["precision", "recall", "f1", "false_alarm_rate", "roc_auc", "pr_auc"]
    lines = ["| detector | weight | threshold | " + " | ".join(columns) + " |", "|---" * (len(columns) + 3) + "|"]
    for name, metrics in per_detector.items():
        threshold = thresholds.get(name)
        weight = weights.get(name)
        cells = ["-" if weight is None else f"{weight:.3f}", f"{threshold:.4f}" if threshold is not None else "-"]
        cells += ["-" if not math.isfinite(metrics[c]) else f"{metrics[c]:.3f}" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _score_plot(
    test: pd.DataFrame, ensemble: np.ndarray, flags: np.ndarray, truth: np.ndarray, threshold: float,
    truth_name: str, machine_id: str,
) -> str:
    """Ensemble score over time (row index without a monotonic timestamp), threshold, alarm and truth shaded."""
    from pdm_pipeline.core.plots import figure_markdown, new_figure

    by_time = TIMESTAMP in test.columns and test[TIMESTAMP].is_monotonic_increasing
    x = test[TIMESTAMP].to_numpy() if by_time else np.arange(len(test))
    fig, ax = new_figure(9.0, 3.5)
    ax.fill_between(x, 0, 1, where=truth == 1, transform=ax.get_xaxis_transform(), color="tab:red", alpha=0.15,
                    step="mid", label=f"{truth_name} = 1")
    ax.fill_between(x, 0, 0.04, where=flags == 1, transform=ax.get_xaxis_transform(), color="black", alpha=0.8,
                    step="mid", label="alarm")
    ax.plot(x, ensemble, color="tab:blue", linewidth=0.7, label="ensemble score")
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1.0, label=f"threshold {threshold:.3f}")
    ax.set_xlabel(TIMESTAMP if by_time else "test row")
    ax.set_ylabel("anomaly score (0..1)")
    ax.set_ylim(0, 1.02)
    ax.set_title(machine_id, loc="right", fontsize=9)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=4, fontsize=8, frameon=False)
    return figure_markdown(fig, f"{machine_id}: anomaly score and alarm on test")


def _normal_days(test: pd.DataFrame, truth: np.ndarray, time_unit: str) -> float | None:
    """Days of normal operation in the test rows (clock data only)."""
    if TIMESTAMP not in test.columns or not is_clock(time_unit) or len(test) < 2:
        return None
    values = time_values(test, time_unit)
    step = float(np.median(np.diff(np.sort(values)))) if len(values) > 1 else 0.0
    return float((~truth.astype(bool)).sum() * step * (seconds_per_unit(time_unit) or 0.0) / 86400.0) or None


def latency_ms(runtime: AnomalyRuntime, row: np.ndarray, repeats: int = LATENCY_REPEATS) -> float:
    runtime.predict(row)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        runtime.predict(row)
        timings.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(timings)


def evaluate(model_dir: Path, view: TestView) -> Evaluation:
    card = read_card(model_dir)
    runtime = load(model_dir, card)
    test = view.test
    column = truth_column(test)
    if column is None:
        return Evaluation.skipped(
            FAMILY.model_type, "the test split has neither anomaly_window nor failure_status: no truth to evaluate"
        )
    truth = test[column].to_numpy(dtype=int)
    features = test[runtime.inputs].to_numpy(dtype=float)
    scores = runtime.score(features)
    ensemble = scores[ENSEMBLE].to_numpy()
    units = unit_codes(test)
    flags = runtime.alarm(ensemble >= runtime.threshold, units)
    metrics = binary_metrics(truth, flags, ensemble)
    metrics.update(event_metrics(truth, flags, units, _normal_days(test, truth, view.time_unit)))
    metrics["single_row_latency_ms"] = latency_ms(runtime, features[:1])
    metrics["test_positive_rate"] = float(truth.mean())
    threshold_rows = card.get("threshold_rows", card.get("val_normal_rows"))
    if threshold_rows is not None:
        metrics["threshold_expected_exceedances"] = float(threshold_rows) * float(card["contamination"])
    per_detector = {
        name: binary_metrics(
            truth, (scores[name].to_numpy() >= runtime.detector_thresholds[name]).astype(int), scores[name].to_numpy()
        )
        for name in runtime.detectors
    }
    per_detector["ensemble (alarm)"] = {k: metrics[k] for k in per_detector[runtime.detectors[0]]}
    prevalence = float(truth.mean())
    contamination = float(card["contamination"])
    baseline = random_baseline(prevalence, contamination)
    always = binary_metrics(truth, np.ones_like(truth), None)
    thresholds = {**runtime.detector_thresholds, "ensemble (alarm)": runtime.threshold}
    table = _metric_table(
        {**per_detector, "baseline (random)": baseline, "baseline (always anomalous)": always},
        thresholds, {**card["weights"]},
    )
    details = {
        "confusion": {
            "tp": int(np.sum((flags == 1) & (truth == 1))), "fp": int(np.sum((flags == 1) & (truth == 0))),
            "fn": int(np.sum((flags == 0) & (truth == 1))), "tn": int(np.sum((flags == 0) & (truth == 0))),
        },
        "truth_column": column,
        "n_test": len(test),
        "n_positive": int(truth.sum()),
        "threshold": runtime.threshold,
        "threshold_rule": card["threshold_rule"],
        "alarm": card["alarm"],
        "weights": card["weights"],
        "weight_rule": card["weight_rule"],
        "detector_thresholds": runtime.detector_thresholds,
        "per_detector": per_detector,
        "always_anomalous_f1": always["f1"],
        "features": runtime.inputs,
    }
    pictures = {
        "anomaly_score_over_time": _score_plot(
            test, ensemble, flags, truth, runtime.threshold, column, view.machine_id
        ),
        "anomaly_detector_metrics": table,
    }
    return Evaluation(
        model_type=FAMILY.model_type,
        metrics=metrics,
        baseline=baseline,
        baseline_name=f"random flags at the contamination rate ({contamination:g}), expected values",
        details=details,
        pictures=pictures,
    )
