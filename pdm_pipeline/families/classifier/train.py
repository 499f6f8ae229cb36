"""Train the failure classifier on train, early-stop and calibrate its threshold on val.

Binary `failure_status`, AutoGluon eval metric "average_precision" (PR-AUC): it ranks models on how well they
separate a rare positive class at every threshold, is insensitive to the many easy negatives, and does not
depend on an arbitrary 0.5 cut-off. Boosting rounds stop early on val log loss (computed natively by the tree
libraries: faster, same test F1). The decision threshold is then chosen on VAL probabilities of the shipped
(native) model: the one that maximises F1 (ties: the lowest, i.e. the higher recall). A label with a single
class in train or val skips the model.

Rows without time order (metadata `"time_order": false`, e.g. AI4I's independent processes) are exchangeable,
so nothing forces val to be a later period: the classifier is CROSS-FITTED over train + val. Stratified k-fold
(CROSS_FIT_FOLDS, fewer when there are fewer failures): each fold's AutoGluon model is fitted on the other folds
(early-stopped on its own held-out fold) and exported natively; the shipped model is the mean of the k boosters,
and the threshold is the F1-optimal one on the out-of-fold probabilities of every train + val row, which no
booster was fitted on (each held-out fold only chose its booster's number of rounds, as val does on the train /
val protocol). Every non-test row thus serves both fitting and calibration (AI4I, 5 split seeds, pooled test F1 of
the pipeline 0.791 ± 0.035 -> 0.826 ± 0.027, then 0.845 ± 0.036 with finer histograms, see tabular.fit_predictor; of a
plain LightGBM 0.787 ± 0.059 -> 0.820 ± 0.034); test is still untouched. With time order this would train on the
future of the val period, so time-ordered data keeps the train / val protocol.

Fleet pooling (see `core/fleet.py`): when a pooled model of the machine's fleet exists and `pooling` allows
it, the pooled and the machine's own model are compared on the machine's held-out predictions (PR-AUC: val
rows, or every train + val row when both are cross-fitted) and the better one ships, with its threshold
calibrated on those rows of this machine.

Probability calibration: the booster's probabilities (early-stopped boosting on a rare class) are not
probabilities a reliability engineer can read as such. On the rows the threshold was chosen on (val, the
out-of-fold rows, or the machine's rows a pooled model was chosen on) a Platt scaling is fitted (a logistic
regression on the raw probability's log-odds; two parameters, so it holds on a few failures; isotonic regression
would follow their noise): `failure_probability` is the calibrated value, the threshold is moved with it (the map
is increasing: the same rows are flagged, rankings and F1 unchanged). With fewer than MIN_CALIBRATION_FAILURES
failures on those rows, or a fit that would not increase, the raw probability is kept and the card says why.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from pdm_pipeline.core.config import TrainingConfig
from pdm_pipeline.core.schema import LABEL
from pdm_pipeline.families import tabular
from pdm_pipeline.families.base import CARD_FILE, ModelSkipped, TrainView
from pdm_pipeline.families.boosters import NativeModel
from pdm_pipeline.families.classifier import FAMILY
from pdm_pipeline.families.classifier.runtime import ClassifierRuntime, log_odds, platt

log = logging.getLogger(__name__)

CLASSIFIER_METRIC = "average_precision"
# Early stopping on log loss (native in LightGBM/XGBoost/CatBoost); measured at 35k rows x 150 features:
# LightGBM fit ~8 s -> ~6 s and 0.9 -> 0.5 MB, same test F1. Model selection still uses CLASSIFIER_METRIC.
CLASSIFIER_STOPPING_METRIC = "log_loss"
FAITHFULNESS_TOLERANCE = 1e-5
# Fewer failures than this in the rows a machine compares on (val, or its out-of-fold train + val rows) cannot
# tell its own model from the fleet's: the pooled one, trained on every member's failures, is kept.
MIN_VAL_POSITIVES_TO_CHOOSE = 10
# Cross-fitting of rows without time order: folds (at most; never more than the failures in train + val).
CROSS_FIT_FOLDS = 5
# A machine's own classifier needs at least one failure per fold of the cross-fit in train + val: with fewer,
# folds learn from one or two failures and the threshold is set on as few. It is not trained from them (a fleet
# model, trained on every member's failures, still can be chosen for it).
MIN_FAILURES_TO_LEARN = CROSS_FIT_FOLDS
BAG_DIR = "bag"
# Out-of-fold probabilities and truth of the train + val rows (train first, then val), beside a bagged model.
OUT_OF_FOLD_FILE = "out_of_fold.npz"
OUT_OF_FOLD_ROWS = "every train + val row (out-of-fold)"
# Platt scaling needs this many failures (and non-failures) among the rows it is fitted on.
MIN_CALIBRATION_FAILURES = 5
# Where the rows the threshold was chosen on travel inside a card until the calibration is fitted (never written).
_THRESHOLD_ROWS = "_threshold_rows"


def fit_calibration(truth: np.ndarray, raw: np.ndarray, threshold: float, rows: str) -> dict[str, Any]:
    """Platt scaling of raw probabilities on held-out rows, or why not ({"method": "none", "reason": ...})."""
    from sklearn.linear_model import LogisticRegression

    truth = np.asarray(truth).astype(int)
    failures, normal = int(truth.sum()), int(len(truth) - truth.sum())
    if min(failures, normal) < MIN_CALIBRATION_FAILURES:
        return {"method": "none", "fitted_on": rows, "reason": f"{rows} hold {failures} failures and {normal} other "
                f"rows: fewer than {MIN_CALIBRATION_FAILURES} of one class to calibrate on"}
    x = log_odds(raw)[:, None]
    fit = LogisticRegression(C=1.0).fit(x, truth)
    slope, intercept = float(fit.coef_[0][0]), float(fit.intercept_[0])
    if not slope > 0:
        return {"method": "none", "fitted_on": rows,
                "reason": f"the fit on {rows} does not increase with the raw probability (slope {slope:.3g})"}
    calibration = {"method": "platt", "slope": slope, "intercept": intercept, "fitted_on": rows,
                   "rows": len(truth), "failures": failures, "raw_threshold": float(threshold)}
    calibrated = platt(raw, calibration)
    calibration["brier_on_fit_rows"] = {"raw": float(brier_score_loss(truth, raw)),
                                        "calibrated": float(brier_score_loss(truth, calibrated))}
    return calibration


def _with_calibration(card: dict[str, Any]) -> dict[str, Any]:
    """The card with the calibration fitted on its threshold rows (a kept calibration stays: the fleet's, when this
    machine's rows were too few to choose on) and its threshold moved onto the calibrated probability."""
    rows = card.pop(_THRESHOLD_ROWS, None)
    if rows is None:
        return card
    truth, raw, where = rows
    calibration = fit_calibration(truth, raw, card["threshold"], where)
    threshold = float(platt(np.array([card["threshold"]]), calibration)[0])
    if calibration["method"] == "platt":
        log.info(f"classifier: probabilities calibrated on {where} (Platt: Brier {calibration['brier_on_fit_rows']['raw']:.4f}"
                 f" -> {calibration['brier_on_fit_rows']['calibrated']:.4f}); threshold {card['threshold']:.4f} -> "
                 f"{threshold:.4f} on the calibrated probability")
    else:
        log.info(f"classifier: probabilities not calibrated: {calibration['reason']}")
    return {**card, "threshold": threshold, "calibration": calibration}


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
    pooled = (view.pooled or {}).get(FAMILY.model_type) if config.pooling != "machine" else None
    failures = int(labels["train"].sum() + labels["val"].sum())
    if pooled is None:
        _enough_failures(failures, "")
    out_dir.mkdir(parents=True, exist_ok=True)
    card: dict[str, Any] | None = None
    if not view.metadata.time_order:
        card = _cross_fit(view, out_dir, config, names, labels)
    if card is None:
        card = _fit_on_train(view, out_dir, config, names, labels)
    if pooled is not None:
        card = _choose_pooled(out_dir, card, view, labels, pooled, force=config.pooling == "fleet")
        if card["source"] == "machine":
            _enough_failures(failures, f" and the fleet model was not chosen ({card.get('pooling')})")
    card = _with_calibration(card)
    card["train_positive_rate"] = float(labels["train"].mean())
    card["train_majority_class"] = int(card["train_positive_rate"] > 0.5)
    card["train_seconds"] = time.perf_counter() - start
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=1))
    return {
        "best_model": card["best_model"],
        "format": card["format"],
        "threshold": card["threshold"],
        "calibration": (card.get("calibration") or {}).get("method", "none"),
        "val_metrics": card["val_metrics"],
        "preset": card["preset"],
        "source": card["source"],
        **({"pooling": card["pooling"]} if "pooling" in card else {}),
        **({"cross_fit_folds": card["bag"]["folds"]} if card.get("bag") else {}),
        # Where the val_* figures come from when not the val split (out-of-fold rows of a cross-fitted model).
        **({"val_metrics_rows": card["val_metrics_rows"]} if "val_metrics_rows" in card else {}),
    }


def _enough_failures(failures: int, why_own: str) -> None:
    if failures < MIN_FAILURES_TO_LEARN:
        raise ModelSkipped(
            f"train + val hold {failures} failure row(s) ({LABEL} = 1), fewer than {MIN_FAILURES_TO_LEARN} (one per "
            f"fold of the cross-fit){why_own}: too few to learn a failure classifier or to set its threshold. Pool "
            "the machine with others of its type (metadata machine_type) or collect more failures"
        )


def _card(config: TrainingConfig, names: list[str], best_model: str, leaderboard: list[dict]) -> dict[str, Any]:
    return {
        "model_type": FAMILY.model_type,
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


def _fit_on_train(
    view: TrainView, out_dir: Path, config: TrainingConfig, names: list[str], labels: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Time-ordered rows: fit on train, early-stop on val, threshold on val."""
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
    card = {**_card(config, names, best_model, leaderboard), **exported}
    return _calibrate(out_dir, card, view, labels)


def _cross_fit(
    view: TrainView, out_dir: Path, config: TrainingConfig, names: list[str], labels: dict[str, np.ndarray]
) -> dict[str, Any] | None:
    """Rows without time order: k-fold cross-fitting over train + val (see the module docstring). None when a
    fold's best model cannot be exported as a native booster (then the train / val protocol is used)."""
    from sklearn.model_selection import StratifiedKFold

    frame = pd.concat([view.frames["train"][names], view.frames["val"][names]], ignore_index=True)
    truth = np.concatenate([labels["train"], labels["val"]])
    folds = int(min(CROSS_FIT_FOLDS, truth.sum(), len(truth) - truth.sum()))
    if folds < 2:
        return None
    fold_config = replace(config, time_limit_s=config.tabular.time_limit_s / folds)
    bag = out_dir / BAG_DIR
    shutil.rmtree(bag, ignore_errors=True)
    bag.mkdir(parents=True)
    out_of_fold = np.full(len(truth), np.nan)
    members: list[dict[str, Any]] = []
    leaderboards: list[list[dict]] = []
    fmt = None
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    for i, (fit_rows, held_rows) in enumerate(splitter.split(frame, truth)):
        what = f"classifier fold {i + 1}/{folds}"
        work, staged = out_dir / f".fold{i}", out_dir / f".fold{i}-model"
        predictor, leaderboard = tabular.fit_predictor(
            tabular.autogluon_data(frame.iloc[fit_rows], names, LABEL, truth[fit_rows]),
            tabular.autogluon_data(frame.iloc[held_rows], names, LABEL, truth[held_rows]),
            LABEL, "binary", CLASSIFIER_METRIC, CLASSIFIER_STOPPING_METRIC, work, fold_config, what, time_order=False,
        )
        if predictor.positive_class != 1:
            raise RuntimeError(f"AutoGluon took {predictor.positive_class!r} as the positive class, expected 1")
        best_model = predictor.model_best
        staged.mkdir(parents=True, exist_ok=True)
        exported = tabular.export_model(
            predictor, work, staged, frame.iloc[held_rows], names, True, FAITHFULNESS_TOLERANCE, what
        )
        if exported["format"] == tabular.AUTOGLUON_FORMAT or fmt not in (None, exported["format"]):
            log.info(f"classifier: {what} did not give a native booster of one format "
                     f"({exported.get('fallback_reason', exported['format'])}): fitting on train, calibrating on val")
            for leftover in (bag, staged, *out_dir.glob(".fold*")):
                shutil.rmtree(leftover, ignore_errors=True)
            return None
        fmt = exported["format"]
        file = f"fold_{i}{Path(exported['model_file']).suffix}"
        (staged / exported["model_file"]).rename(bag / file)
        shutil.rmtree(staged, ignore_errors=True)
        columns = [names.index(c) for c in exported["input_columns"]]
        model = NativeModel(fmt, bag / file, classifier=True)
        out_of_fold[held_rows] = model.predict(frame.iloc[held_rows][exported["input_columns"]].to_numpy(dtype=float))
        members.append({"file": file, "columns": columns, "best_model": best_model,
                        "held_out_rows": len(held_rows), "faithfulness": exported.get("faithfulness")})
        leaderboards.append(leaderboard)
    threshold, _ = f1_optimal_threshold(truth, out_of_fold)
    metrics = val_metrics(truth, out_of_fold, threshold)
    fleet_rows = {} if view.row_members is None else {
        "member": np.concatenate([view.row_members["train"], view.row_members["val"]])}  # a fleet's pooled rows
    np.savez(out_dir / OUT_OF_FOLD_FILE, probability=out_of_fold, truth=truth,
             val=np.r_[np.zeros(len(labels["train"]), bool), np.ones(len(labels["val"]), bool)], **fleet_rows)
    log.info(f"classifier: {folds}-fold cross-fitted over train + val ({len(truth)} rows, {int(truth.sum())} "
             f"failures); threshold {threshold:.4f} on the out-of-fold probabilities (F1 {metrics['f1']:.3f}, "
             f"PR-AUC {metrics['average_precision']:.3f})")
    card = _card(config, names, members[0]["best_model"], leaderboards[0])
    card.update({
        "format": fmt, "model_file": BAG_DIR, "input_columns": names,
        "bag": {"folds": folds, "members": members, "rule": "mean of the fold models' probabilities"},
        "threshold": threshold,
        "threshold_source": f"maximum F1 on the out-of-fold probabilities of train + val ({folds}-fold "
                            "cross-fitting: rows without time order)",
        "val_metrics": metrics,
        "val_metrics_rows": OUT_OF_FOLD_ROWS,
        _THRESHOLD_ROWS: (truth, out_of_fold, OUT_OF_FOLD_ROWS),
    })
    return card


def _calibrate(model_dir: Path, card: dict[str, Any], view: TrainView, labels: dict[str, np.ndarray]) -> dict:
    """Threshold chosen on val probabilities of the runtime that ships (native booster or AutoGluon)."""
    runtime = ClassifierRuntime(model_dir, card)
    proba = runtime.raw_probability(view.frames["val"][runtime.inputs].to_numpy(dtype=float))
    threshold, _ = f1_optimal_threshold(labels["val"], proba)
    metrics = val_metrics(labels["val"], proba, threshold)
    log.info(
        f"classifier: threshold {threshold:.4f} chosen on val (F1 {metrics['f1']:.3f}, "
        f"PR-AUC {metrics['average_precision']:.3f})"
    )
    return {**card, "threshold": threshold, "threshold_source": "maximum F1 on the val split", "val_metrics": metrics,
            _THRESHOLD_ROWS: (labels["val"], proba, "val rows")}


def _held_out(model_dir: Path, card: dict[str, Any], view: TrainView, labels: dict[str, np.ndarray],
              pooled: Any = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(truth, probability) on this machine's rows that no fit of the model saw: "val" always, and "all" (train
    then val) when every train + val row is held out (a cross-fitted model's out-of-fold file, or a pooled model
    that never saw this machine)."""
    source = (pooled.path if pooled is not None else model_dir) / OUT_OF_FOLD_FILE
    member = pooled is None or view.machine_id in pooled.members
    if card.get("bag") and source.is_file() and member:
        with np.load(source) as data:
            rows = np.ones(len(data["truth"]), dtype=bool)
            if pooled is not None:
                rows = data["member"] == list(pooled.members).index(view.machine_id)
            truth, proba, is_val = data["truth"][rows], data["probability"][rows], data["val"][rows]
        return {"all": (truth, proba), "val": (truth[is_val], proba[is_val])}
    runtime = ClassifierRuntime(model_dir, card)
    val = (labels["val"], runtime.raw_probability(view.frames["val"][runtime.inputs].to_numpy(dtype=float)))
    if not member:  # a pooled model that never saw this machine: every train + val row is held out
        train = runtime.raw_probability(view.frames["train"][runtime.inputs].to_numpy(dtype=float))
        return {"all": (np.concatenate([labels["train"], val[0]]), np.concatenate([train, val[1]])), "val": val}
    return {"val": val}


def _choose_pooled(
    out_dir: Path, own: dict[str, Any], view: TrainView, labels: dict[str, np.ndarray], pooled: Any, force: bool
) -> dict[str, Any]:
    """Compare the fleet's pooled model with the machine's own on this machine's held-out predictions (every
    train + val row when both models have them, else the val rows); keep the better, its threshold calibrated
    on those rows (or the fleet's, when they hold too few failures)."""
    from pdm_pipeline.core import fleet

    candidate = fleet.machine_copy(pooled, view, out_dir / ".pooled")
    if candidate is None:
        own["pooling"] = "no usable pooled model for this machine"
        return own
    own_rows = _held_out(out_dir, own, view, labels)
    pooled_rows = _held_out(out_dir / ".pooled", candidate, view, labels, pooled)
    scope = "all" if "all" in own_rows and "all" in pooled_rows else "val"
    (own_truth, own_proba), (truth, proba) = own_rows[scope], pooled_rows[scope]
    rows = OUT_OF_FOLD_ROWS if scope == "all" else "val rows"
    positives = int(truth.sum())
    few = positives < MIN_VAL_POSITIVES_TO_CHOOSE
    fleet_calibration = candidate.get("calibration") or {}
    if few:  # the fleet's threshold and calibration (the threshold on the raw probability for the metrics here)
        threshold = float(fleet_calibration.get("raw_threshold", candidate["threshold"]))
        source = (f"the fleet model's threshold (this machine's {rows} hold {positives} failures: too few to "
                  "calibrate alone)")
    else:
        threshold, _ = f1_optimal_threshold(truth, proba)
        source = f"maximum F1 on this machine's {rows}"
    card = {**candidate, "threshold": threshold, "threshold_source": source,
            "val_metrics": val_metrics(truth, proba, threshold), "val_metrics_rows": rows,
            _THRESHOLD_ROWS: (truth, proba, f"this machine's {rows}")}
    if few:
        card.pop(_THRESHOLD_ROWS)
        card["threshold"] = float(candidate["threshold"])  # on the fleet's calibrated probability
    own_score = float(average_precision_score(own_truth, own_proba))
    pooled_score = float(average_precision_score(truth, proba))
    rule = ("forced by pooling=fleet" if force else
            f"this machine's {rows} hold {positives} failures (< {MIN_VAL_POSITIVES_TO_CHOOSE}): too few to prefer "
            "its own model over the one trained on the whole fleet" if few else
            f"higher PR-AUC on this machine's {rows}")
    decision = {"own_val_pr_auc": own_score, "pooled_val_pr_auc": pooled_score, "fleet": card.get("fleet"),
                "val_positives": positives, "compared_on": rows, "rule": rule}
    if force or few or pooled_score > own_score:
        (out_dir / OUT_OF_FOLD_FILE).unlink(missing_ok=True)  # the own model's, not the one that ships
        fleet.adopt(out_dir / ".pooled", out_dir, own)
        log.info(f"classifier: pooled fleet model chosen (PR-AUC {pooled_score:.3f} vs own {own_score:.3f} on {rows})")
        return {**card, "pooling": {**decision, "chosen": "fleet"}, "own_val_metrics": own["val_metrics"]}
    fleet.discard(out_dir / ".pooled")
    log.info(f"classifier: own model kept (PR-AUC {own_score:.3f} vs pooled {pooled_score:.3f} on {rows})")
    return {**own, "pooling": {**decision, "chosen": "machine"}}
