"""Train the failure classifier on train, early-stop and calibrate its threshold on val.

Binary `failure_status`, AutoGluon eval metric "average_precision" (PR-AUC): it ranks models on how well they
separate a rare positive class at every threshold, is insensitive to the many easy negatives, and does not
depend on an arbitrary 0.5 cut-off. Boosting rounds stop early on val log loss (computed natively by the tree
libraries: faster, same test F1). The decision threshold is then chosen on VAL probabilities of the shipped
(native) model: the one that maximises F1 (ties: the lowest, i.e. the higher recall). A label with a single
class in train or val skips the model.

Fleet pooling (see `core/fleet.py`): when a pooled model of the machine's fleet exists and `pooling` allows
it, the pooled and the machine's own model are compared on the machine's val rows (PR-AUC) and the better one
ships, with its threshold calibrated on this machine's val rows.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from pdm_pipeline.core.config import TrainingConfig
from pdm_pipeline.core.schema import LABEL
from pdm_pipeline.families import tabular
from pdm_pipeline.families.base import CARD_FILE, ModelSkipped, TrainView
from pdm_pipeline.families.classifier import FAMILY
from pdm_pipeline.families.classifier.runtime import ClassifierRuntime

log = logging.getLogger(__name__)

CLASSIFIER_METRIC = "average_precision"
# Early stopping on log loss (native in LightGBM/XGBoost/CatBoost); measured at 35k rows x 150 features:
# LightGBM fit ~8 s -> ~6 s and 0.9 -> 0.5 MB, same test F1. Model selection still uses CLASSIFIER_METRIC.
CLASSIFIER_STOPPING_METRIC = "log_loss"
FAITHFULNESS_TOLERANCE = 1e-5
# Fewer failures than this in a machine's val rows cannot tell its own model from the fleet's: the pooled one,
# trained on every member's failures, is kept.
MIN_VAL_POSITIVES_TO_CHOOSE = 10


def binary_labels(frame: Any, split: str) -> np.ndarray:
    labels = np.asarray(frame[LABEL].to_numpy(), dtype=float)
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        raise tabular.TabularInputError(
            f"the {split} split has {int(bad.sum())} value(s) of {LABEL!r} other than 0/1 "
            f"(e.g. {sorted(set(labels[bad].tolist()))[:5]})"
        )
    return labels.astype(int)


def f1_optimal_threshold(truth: np.ndarray, proba: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of `proba >= threshold`; ties go to the lowest threshold (higher recall)."""
    precision, recall, thresholds = precision_recall_curve(truth, proba)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


def val_metrics(truth: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = (proba >= threshold).astype(int)
    precision = float(precision_score(truth, predicted, zero_division=0))
    recall = float(recall_score(truth, predicted, zero_division=0))
    return {
        "average_precision": float(average_precision_score(truth, proba)),
        "roc_auc": float(roc_auc_score(truth, proba)),
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "precision": precision,
        "recall": recall,
        "positive_rate": float(truth.mean()),
    }


def labels_of(view: TrainView) -> dict[str, np.ndarray]:
    """Train and val labels, checked: 0/1, both classes in each split (else ModelSkipped)."""
    if view.label_skipped_reason:
        raise ModelSkipped(view.label_skipped_reason)
    labels = {}
    for split in ("train", "val"):
        frame = view.frames[split]
        tabular.check_frame(frame, split, view.feature_names, LABEL)
        labels[split] = binary_labels(frame, split)
        classes = np.unique(labels[split])
        if len(classes) < 2:
            raise ModelSkipped(
                f"{LABEL} has a single class ({int(classes[0])}) in the {split} split ({len(frame)} rows): "
                "a failure classifier needs both classes in train and val"
            )
    return labels


def train(view: TrainView, out_dir: Path, config: TrainingConfig) -> dict[str, Any]:
    start = time.perf_counter()
    names = tabular.check_feature_names(view.feature_names)
    labels = labels_of(view)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_frame, val_frame = view.frames["train"], view.frames["val"]
    work = out_dir / tabular.AUTOGLUON_DIR
    predictor, leaderboard = tabular.fit_predictor(
        tabular.autogluon_data(train_frame, names, LABEL, labels["train"]),
        tabular.autogluon_data(val_frame, names, LABEL, labels["val"]),
        LABEL, "binary", CLASSIFIER_METRIC, CLASSIFIER_STOPPING_METRIC, work, config, "classifier",
        time_order=view.metadata.time_order,
    )
    if predictor.positive_class != 1:
        raise RuntimeError(f"AutoGluon took {predictor.positive_class!r} as the positive class, expected 1")
    best_model = predictor.model_best
    exported = tabular.export_model(
        predictor, work, out_dir, val_frame[names], names, True, FAITHFULNESS_TOLERANCE, "classifier"
    )
    card: dict[str, Any] = {
        "model_type": FAMILY.model_type,
        **exported,
        "best_model": best_model,
        "feature_names": names,
        "preset": config.tabular.name,
        "time_limit_s": config.tabular.time_limit_s,
        "seed": config.seed,
        "eval_metric": CLASSIFIER_METRIC,
        "leaderboard": leaderboard,
        "autogluon_version": tabular.autogluon_version(),
        "threshold": 0.5,
        "source": "machine",
    }
    card = _calibrate(out_dir, card, view, labels)
    pooled = (view.pooled or {}).get(FAMILY.model_type) if config.pooling != "machine" else None
    if pooled is not None:
        card = _choose_pooled(out_dir, card, view, labels, pooled, force=config.pooling == "fleet")
    card["train_positive_rate"] = float(labels["train"].mean())
    card["train_majority_class"] = int(card["train_positive_rate"] > 0.5)
    card["train_seconds"] = time.perf_counter() - start
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=1))
    return {
        "best_model": card["best_model"],
        "format": card["format"],
        "threshold": card["threshold"],
        "val_metrics": card["val_metrics"],
        "preset": card["preset"],
        "source": card["source"],
        **({"pooling": card["pooling"]} if "pooling" in card else {}),
    }


def _calibrate(
    model_dir: Path, card: dict[str, Any], view: TrainView, labels: dict[str, np.ndarray], keep_threshold: bool = False
) -> dict:
    """Threshold chosen on val probabilities of the runtime that ships (native booster or AutoGluon); with
    `keep_threshold`, the card's threshold stays (a fleet model's, calibrated on every member's val rows)."""
    runtime = ClassifierRuntime(model_dir, card)
    proba = runtime.probability(view.frames["val"][runtime.inputs].to_numpy(dtype=float))
    if keep_threshold:
        metrics = val_metrics(labels["val"], proba, float(card["threshold"]))
        return {**card, "threshold_source": "maximum F1 on the val rows of the whole fleet (this machine's val has "
                "too few failures to calibrate alone)", "val_metrics": metrics}
    threshold, _ = f1_optimal_threshold(labels["val"], proba)
    metrics = val_metrics(labels["val"], proba, threshold)
    log.info(
        f"classifier: threshold {threshold:.4f} chosen on val (F1 {metrics['f1']:.3f}, "
        f"PR-AUC {metrics['average_precision']:.3f})"
    )
    return {**card, "threshold": threshold, "threshold_source": "maximum F1 on the val split", "val_metrics": metrics}


def _choose_pooled(
    out_dir: Path, own: dict[str, Any], view: TrainView, labels: dict[str, np.ndarray], pooled: Any, force: bool
) -> dict[str, Any]:
    """Compare the fleet's pooled model with the machine's own on this machine's val rows; keep the better."""
    from pdm_pipeline.core import fleet

    candidate = fleet.machine_copy(pooled, view, out_dir / ".pooled")
    if candidate is None:
        own["pooling"] = "no usable pooled model for this machine"
        return own
    positives = int(labels["val"].sum())
    few = positives < MIN_VAL_POSITIVES_TO_CHOOSE
    card = _calibrate(out_dir / ".pooled", candidate, view, labels, keep_threshold=few)
    own_score, pooled_score = own["val_metrics"]["average_precision"], card["val_metrics"]["average_precision"]
    rule = ("forced by pooling=fleet" if force else
            f"this machine's val has {positives} failure rows (< {MIN_VAL_POSITIVES_TO_CHOOSE}): too few to prefer its "
            "own model over the one trained on the whole fleet" if few else
            "higher val PR-AUC on this machine's val rows")
    decision = {"own_val_pr_auc": own_score, "pooled_val_pr_auc": pooled_score, "fleet": card.get("fleet"),
                "val_positives": positives, "rule": rule}
    if force or few or pooled_score > own_score:
        fleet.adopt(out_dir / ".pooled", out_dir, own)
        log.info(f"classifier: pooled fleet model chosen (val PR-AUC {pooled_score:.3f} vs own {own_score:.3f})")
        return {**card, "pooling": {**decision, "chosen": "fleet"}, "own_val_metrics": own["val_metrics"]}
    fleet.discard(out_dir / ".pooled")
    log.info(f"classifier: own model kept (val PR-AUC {own_score:.3f} vs pooled {pooled_score:.3f})")
    return {**own, "pooling": {**decision, "chosen": "machine"}}
