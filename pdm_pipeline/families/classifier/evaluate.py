"""Test metrics of the failure classifier, through the runtime that ships (TEST only, once).

F1, precision, recall, accuracy at the val threshold, ROC-AUC, PR-AUC; baseline = per metric the better
constant prediction (always the train majority class, always failure). Calibration of `failure_probability`:
Brier score and expected calibration error (ECE: the row-weighted gap between the mean predicted probability and
the failure rate over CALIBRATION_BINS bins of equal row counts), beside the constant train failure rate's. `single_row_latency_ms` = median one-row prediction of the shipped model. Pictures: confusion matrix and
precision-recall curve.

Labels from alarm levels (no RUL): a row whose critical sensor is already at its alarm level is labelled failing
whatever the horizon, and the model reads that sensor, so part of its F1 is "in alarm now". The evaluation
reports that rule's F1 on the same rows (`details["alarm_now_rule"]`) and the model's F1 / precision / recall on
the rows not yet in alarm (`f1_before_alarm` ...): its skill at seeing an alarm coming.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.core.schema import LABEL
from pdm_pipeline.families import tabular
from pdm_pipeline.families.base import TestView, read_card
from pdm_pipeline.families.classifier import FAMILY
from pdm_pipeline.families.classifier.runtime import ClassifierRuntime
from pdm_pipeline.families.classifier.train import binary_labels

CALIBRATION_BINS = 10


def calibration_error(truth: np.ndarray, proba: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE over `bins` bins of equal row counts (sorted by probability): sum of |mean p - failure rate| x share."""
    order = np.argsort(proba, kind="stable")
    error = 0.0
    for rows in np.array_split(order, min(bins, len(order))):
        if len(rows):
            error += abs(float(proba[rows].mean()) - float(truth[rows].mean())) * len(rows) / len(order)
    return error


def _reliability_plot(truth: np.ndarray, proba: np.ndarray, raw: np.ndarray, machine_id: str) -> str:
    from pdm_pipeline.core.plots import figure_markdown, new_figure

    fig, ax = new_figure(5.5, 4.0)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    for values, name, color in ((raw, "raw booster", "tab:grey"), (proba, "shipped (calibrated)", "tab:blue")):
        order = np.argsort(values, kind="stable")
        groups = [g for g in np.array_split(order, min(CALIBRATION_BINS, len(order))) if len(g)]
        ax.plot([values[g].mean() for g in groups], [truth[g].mean() for g in groups], "o-", color=color,
                label=f"{name} (Brier {brier_score_loss(truth, values):.4f})", alpha=0.6 if name.startswith("raw") else 1.0)
    ax.set_xlabel("mean predicted failure probability (bins of equal rows)")
    ax.set_ylabel("observed failure rate")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_title(machine_id)
    ax.legend(loc="upper left", fontsize=8)
    return figure_markdown(fig, f"{machine_id}: failure probability reliability (test)")


def classification_metrics(truth: np.ndarray, predicted: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """F1, precision, recall, accuracy of 0/1 predictions; ROC-AUC and PR-AUC of the score (NaN with one class)."""
    both_classes = len(np.unique(truth)) == 2
    return {
        "f1": float(f1_score(truth, predicted, zero_division=0)),
        "precision": float(precision_score(truth, predicted, zero_division=0)),
        "recall": float(recall_score(truth, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(truth, predicted)),
        "roc_auc": float(roc_auc_score(truth, score)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(truth, score)) if both_classes else math.nan,
    }


def constant_baseline(truth: np.ndarray, majority: int) -> dict[str, float]:
    """Per metric, the better of the two constant predictions: always the train majority class, always failure.

    Against the majority class alone (0 in any useful data) F1, precision and recall are 0, which every model
    beats; always predicting failure has recall 1 and F1 2p / (1 + p) at test positive rate p, so a model whose
    F1 is no better has learnt nothing the failure rate does not say."""
    constant = {c: classification_metrics(truth, np.full(len(truth), c), np.full(len(truth), float(c)))
                for c in {majority, 1}}
    return {m: max(row[m] for row in constant.values()) for m in constant[1]}


def _confusion_plot(matrix: np.ndarray, threshold: float, machine_id: str) -> str:
    from pdm_pipeline.core.plots import figure_markdown, new_figure

    fig, ax = new_figure(4.5, 4.0)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    for (i, j), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(int(count)), ha="center", va="center", color=color, fontsize=12)
    ax.set_xticks([0, 1], labels=["predicted 0", "predicted 1"])
    ax.set_yticks([0, 1], labels=["true 0", "true 1"])
    ax.set_title(f"{machine_id}: threshold {threshold:.3f}")
    return figure_markdown(fig, f"{machine_id}: failure classifier confusion matrix (test)")


def _pr_curve_plot(truth: np.ndarray, proba: np.ndarray, operating: tuple[float, float], machine_id: str) -> str:
    from pdm_pipeline.core.plots import figure_markdown, new_figure

    precision, recall, _ = precision_recall_curve(truth, proba)
    fig, ax = new_figure(5.5, 4.0)
    ax.plot(recall, precision, color="tab:blue", label=f"model (PR-AUC {average_precision_score(truth, proba):.3f})")
    ax.axhline(truth.mean(), color="grey", linestyle="--", label=f"baseline (positive rate {truth.mean():.3f})")
    ax.plot(*operating, "o", color="tab:red", label="val-calibrated threshold")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.02)
    ax.set_title(machine_id)
    ax.legend(loc="lower left", fontsize=8)
    return figure_markdown(fig, f"{machine_id}: failure classifier precision-recall curve (test)")


def _alarm_now(model_dir: Path, view: TestView, truth: np.ndarray, predicted: np.ndarray,
               metrics: dict[str, float]) -> dict[str, float] | None:
    """For labels from alarm levels: the "in alarm now" rule's figures on the test rows, and (into `metrics`) the
    model's on the rows not in alarm yet. None for other labels."""
    import json

    from pdm_pipeline.core.labels import METHOD_ALARM, in_alarm
    from pdm_pipeline.families.base import PREPROCESSING_FILE

    try:
        definition = json.loads((Path(model_dir) / PREPROCESSING_FILE).read_text()).get("label_definition") or {}
    except (OSError, ValueError):
        return None
    levels = definition.get("alarm_levels") or {}
    if definition.get("method") != METHOD_ALARM or not levels or len(view.raw_test) != len(truth) \
            or any(s not in view.raw_test.columns for s in levels):
        return None
    now = in_alarm(view.raw_test, levels)
    rule = now.astype(int)
    out = {"rows_in_alarm": int(now.sum()), "failing_rows_in_alarm": int((now & (truth == 1)).sum()),
           "f1": float(f1_score(truth, rule, zero_division=0)),
           "precision": float(precision_score(truth, rule, zero_division=0)),
           "recall": float(recall_score(truth, rule, zero_division=0))}
    ahead = ~now
    if 0 < truth[ahead].sum() < ahead.sum():
        metrics["f1_before_alarm"] = float(f1_score(truth[ahead], predicted[ahead], zero_division=0))
        metrics["precision_before_alarm"] = float(precision_score(truth[ahead], predicted[ahead], zero_division=0))
        metrics["recall_before_alarm"] = float(recall_score(truth[ahead], predicted[ahead], zero_division=0))
    return out


def evaluate(model_dir: Path, view: TestView) -> Evaluation:
    card = read_card(model_dir)
    runtime = ClassifierRuntime(model_dir, card)
    test = view.test
    tabular.check_frame(test, "test", runtime.inputs, LABEL)
    truth = binary_labels(test, "test")
    features = test[runtime.inputs].to_numpy(dtype=float)
    raw = runtime.raw_probability(features) if len(truth) else np.zeros(0)
    proba = runtime.probability(features) if len(truth) else np.zeros(0)
    threshold = runtime.threshold
    predicted = runtime.flag(raw).astype(int)
    if len(np.unique(truth)) < 2:
        cls = int(truth[0]) if len(truth) else None
        flagged = f"; the classifier flags {int(predicted.sum())} of its {len(truth)} rows as failing" if len(truth) else ""
        return Evaluation.skipped(
            FAMILY.model_type,
            f"the test split's {len(truth)} rows hold a single class ({LABEL} = {'-' if cls is None else cls}):"
            f" recall, precision and F1 are undefined there, so the test split cannot say how the classifier does"
            f"{flagged}" + (" (every one a false alarm)" if cls == 0 and predicted.any() else ""),
        )
    metrics = classification_metrics(truth, predicted, raw)  # rankings of the raw probability (the map is increasing)
    metrics["brier"] = float(brier_score_loss(truth, proba))
    metrics["calibration_error"] = calibration_error(truth, proba)
    metrics["single_row_latency_ms"] = tabular.single_row_latency_ms(runtime.probability, features[:1])
    baseline = constant_baseline(truth, int(card["train_majority_class"]))
    rate = np.full(len(truth), float(card["train_positive_rate"]))  # the train failure rate, said of every row
    baseline["brier"], baseline["calibration_error"] = float(brier_score_loss(truth, rate)), calibration_error(truth, rate)
    alarm_now = _alarm_now(model_dir, view, truth, predicted, metrics)
    matrix = confusion_matrix(truth, predicted, labels=[0, 1])
    tn, fp, fn, tp = (int(v) for v in matrix.ravel())
    details = {
        "threshold": threshold,
        "threshold_source": card.get("threshold_source"),
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp, "matrix": matrix.tolist()},
        "test_positive_rate": float(truth.mean()),
        "train_positive_rate": card["train_positive_rate"],
        "n_test": len(test),
        "best_model": card["best_model"],
        "format": card["format"],
        "source": card.get("source"),
        "pooling": card.get("pooling"),
        "preset": card["preset"],
        "val_metrics": card["val_metrics"],
        "calibration": card.get("calibration"),
        "raw_brier": float(brier_score_loss(truth, raw)),
        **({"alarm_now_rule": alarm_now} if alarm_now else {}),
    }
    pictures = {"confusion_matrix": _confusion_plot(matrix, threshold, view.machine_id)}
    if 0 < truth.sum() < len(truth):
        pictures["precision_recall_curve"] = _pr_curve_plot(
            truth, raw, (metrics["recall"], metrics["precision"]), view.machine_id
        )
        pictures["reliability"] = _reliability_plot(truth, proba, raw, view.machine_id)
    return Evaluation(
        model_type=FAMILY.model_type,
        metrics=metrics,
        baseline=baseline,
        baseline_name=FAMILY.baseline_name,
        details=details,
        pictures=pictures,
    )
