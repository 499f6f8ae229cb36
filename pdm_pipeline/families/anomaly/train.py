"""Fit the anomaly ensemble on normal train rows, weight its detectors and set its threshold on val.

Inputs
    By default a compact subset of the features (`select_anomaly_inputs`): each sensor's raw value plus the
    rolling mean and standard deviation over the shortest window (a level shift and a noise increase show there
    first; ~3 inputs per sensor keep the stored samples and the scoring cost small).
Normal rows
    Rows with `failure_status == 0` and `anomaly_window == 0` (where those columns exist): rows labelled
    anomalous never fit a detector, never normalise a score and never set a threshold.
Fitting (train normal rows)
    Shuffled (seeded) and split: up to 2,000 "reference" rows (at most a fifth) that no detector sees, and the
    "fit" rows. Median imputation, standardisation, then: isolation forest (150 trees, 256 samples each),
    exact RBF one-class SVM (nu = contamination) on <= 4,000 rows, novelty LOF (20 neighbours) on <= 3,000
    rows, max |z|, PCA Hotelling T² and Q (components explaining 90 % of the variance), and an MLP autoencoder
    (tanh, bottleneck a quarter of the inputs) on <= 5,000 rows. The scikit-learn models are exported to plain
    arrays and scored by `runtime.py` (checked here against scikit-learn on the reference rows).
Weights (VAL)
    With labelled anomalies in val (anomaly_window, else failure_status, both classes present), each detector's
    weight is its val ROC-AUC above chance (max(0, AUC - 0.5)): detectors that do not separate this machine's
    anomalies get no say. Without labelled anomalies in val there is no evidence to prefer one: equal weights.
Threshold (VAL normal rows)
    The conformal (1 - contamination) quantile of the ensemble score on val normal rows: the ceil((n + 1)(1 -
    contamination))-th smallest of n, which keeps the expected false-alarm rate at most `contamination` however
    few normal rows there are (with too few, it is the largest val score). Each detector gets its own threshold
    the same way (reported beside the ensemble).
Alarm
    On after `on_samples` consecutive rows above the threshold, off after `off_samples` consecutive rows below
    (see `alarm_delays`: both the shortest feature window by default).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn

from pdm_pipeline.core.config import TrainingConfig
from pdm_pipeline.core.schema import EVAL_ANOMALY, LABEL, RESERVED_COLUMNS, UNIT_ID
from pdm_pipeline.core.timeaxis import unit_codes
from pdm_pipeline.errors import PdmError
from pdm_pipeline.families.anomaly import DETECTORS, FAMILY
from pdm_pipeline.families.anomaly.runtime import MODEL_FILE, AnomalyRuntime, average_path_length
from pdm_pipeline.families.base import CARD_FILE, ModelSkipped, TrainView

log = logging.getLogger(__name__)

IFOREST_TREES = 150
IFOREST_MAX_SAMPLES = 256
OCSVM_MAX_ROWS = 4_000
LOF_MAX_ROWS = 3_000
LOF_NEIGHBORS = 20
AE_MAX_ROWS = 5_000
# The autoencoder stops when its held-out reconstruction R² has gained less than AE_TOL over AE_PATIENCE epochs.
# Trained on until it reconstructs the last details of normal rows, it drifts towards the identity map and
# reconstructs anomalous rows as well: on the full-size bench compressor (3 seeds each), scikit-learn's 1e-4 ran
# 123-300 epochs (2.1-4.4 s) for val ROC-AUC 0.80-0.82; 1e-3 stops after 36-42 epochs (0.4-0.5 s) at 0.85-0.86.
# On 10 unseen simulated machines (5 types x 2 seeds) the autoencoder's val AUC rose on all 10; the ensemble's
# test F1 / false-alarm rate / ROC-AUC moved within noise (0.692 / 0.031 / 0.925 -> 0.700 / 0.034 / 0.926).
AE_TOL = 1e-3
AE_PATIENCE = 15
PCA_VARIANCE = 0.90
REFERENCE_MAX_ROWS = 2_000
REFERENCE_MAX_FRACTION = 0.2
MIN_TRAIN_NORMAL_ROWS = 50
MIN_VAL_NORMAL_ROWS = 20
FAITHFULNESS_TOLERANCE = 1e-6

# "<sensor>__<stat>_w<samples>" (see core/features.py).
_WINDOWED_FEATURE_RE = re.compile(r"^(?P<sensor>.+?)__(?P<stat>[a-z]+(?:_[a-z]+)*)_w(?P<samples>\d+)$")
_SHORT_WINDOW_STATS = ("mean", "std")


class AnomalyInputError(PdmError, ValueError):
    """Input frames or columns the anomaly ensemble cannot use; the message names the split and columns."""


def select_anomaly_inputs(feature_names: Sequence[str]) -> list[str]:
    """The compact default inputs: raw sensors plus rolling mean and std over the shortest window."""
    raw = [name for name in feature_names if "__" not in name]
    windowed = []
    for name in feature_names:
        match = _WINDOWED_FEATURE_RE.match(name)
        if match and match["stat"] in _SHORT_WINDOW_STATS:
            windowed.append((name, int(match["samples"])))
    shortest = min((w for _, w in windowed), default=None)
    chosen = set(raw + [name for name, w in windowed if w == shortest])
    return [name for name in feature_names if name in chosen] or list(feature_names)


def normal_mask(frame: pd.DataFrame) -> np.ndarray:
    """Rows not labelled anomalous: failure_status == 0 and anomaly_window == 0 where those columns exist."""
    keep = np.ones(len(frame), dtype=bool)
    for column in (LABEL, EVAL_ANOMALY):
        if column in frame.columns:
            keep &= frame[column].to_numpy() == 0
    return keep


def truth_column(frame: pd.DataFrame) -> str | None:
    """The column anomalies are measured against: anomaly_window, else failure_status."""
    return next((c for c in (EVAL_ANOMALY, LABEL) if c in frame.columns), None)


def conformal_threshold(scores: np.ndarray, contamination: float) -> float:
    """The ceil((n + 1)(1 - contamination))-th smallest score (the largest when that exceeds n)."""
    ordered = np.sort(np.asarray(scores, dtype=float))
    k = math.ceil((len(ordered) + 1) * (1.0 - contamination))
    return float(ordered[min(k, len(ordered)) - 1])


def _matrix(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    matrix = frame.loc[:, list(columns)].to_numpy(dtype=np.float64, copy=True)
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix


# ---------------------------------------------------------------------------------------------- detectors


def _fit_isolation_forest(z: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray], Any]:
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(
        n_estimators=IFOREST_TREES, max_samples=min(IFOREST_MAX_SAMPLES, len(z)), random_state=seed
    ).fit(z)
    left, right, feature, threshold, value, roots = [], [], [], [], [], []
    offset, max_depth = 0, 0
    # sklearn only re-indexes columns when trees see a subset of the features (as in its score_samples).
    subsample = forest._max_features != z.shape[1]
    for estimator, features in zip(forest.estimators_, forest.estimators_features_):
        features = np.asarray(features) if subsample else np.arange(z.shape[1])
        tree = estimator.tree_
        depth = np.zeros(tree.node_count)
        for node in range(tree.node_count):  # nodes are numbered depth-first: a parent precedes its children
            for child in (tree.children_left[node], tree.children_right[node]):
                if child >= 0:
                    depth[child] = depth[node] + 1.0
        max_depth = max(max_depth, int(depth.max()))
        is_leaf = tree.children_left < 0
        roots.append(offset)
        left.append(np.where(is_leaf, -1, tree.children_left + offset))
        right.append(np.where(is_leaf, -1, tree.children_right + offset))
        feature.append(np.where(is_leaf, 0, features[np.maximum(tree.feature, 0)]))
        threshold.append(tree.threshold)
        value.append(np.where(is_leaf, depth + average_path_length(tree.n_node_samples), 0.0))
        offset += tree.node_count
    normaliser = len(forest.estimators_) * float(average_path_length([forest.max_samples_])[0])
    arrays = {
        "if_left": np.concatenate(left).astype(np.int64),
        "if_right": np.concatenate(right).astype(np.int64),
        "if_feature": np.concatenate(feature).astype(np.int64),
        "if_threshold": np.concatenate(threshold).astype(np.float64),
        "if_value": np.concatenate(value).astype(np.float64),
        "if_roots": np.array(roots, dtype=np.int64),
        "if_max_depth": np.array([max_depth]),
        "if_normaliser": np.array([normaliser]),
    }
    return arrays, forest


def _fit_one_class_svm(z: np.ndarray, nu: float) -> tuple[dict[str, np.ndarray], Any]:
    from sklearn.svm import OneClassSVM

    svm = OneClassSVM(kernel="rbf", gamma="scale", nu=nu).fit(z[:OCSVM_MAX_ROWS])
    arrays = {
        "svm_vectors": np.asarray(svm.support_vectors_, dtype=np.float64),
        "svm_coef": np.asarray(svm.dual_coef_[0], dtype=np.float64),
        "svm_gamma": np.array([float(svm._gamma)]),
    }
    return arrays, svm


def _fit_lof(z: np.ndarray) -> tuple[dict[str, np.ndarray], Any]:
    from sklearn.neighbors import LocalOutlierFactor

    rows = z[:LOF_MAX_ROWS]
    lof = LocalOutlierFactor(n_neighbors=min(LOF_NEIGHBORS, len(rows) - 1), novelty=True, algorithm="brute").fit(rows)
    k = lof.n_neighbors_
    arrays = {
        "lof_fit": np.asarray(lof._fit_X, dtype=np.float64),
        "lof_kdist": np.asarray(lof._distances_fit_X_[:, k - 1], dtype=np.float64),
        "lof_lrd": np.asarray(lof._lrd, dtype=np.float64),
        "lof_k": np.array([k]),
    }
    return arrays, lof


def _fit_pca(z: np.ndarray) -> dict[str, np.ndarray]:
    """Components explaining PCA_VARIANCE of the (standardised) fit rows; at most d - 1 so that Q is defined."""
    centred = z - z.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2 / max(len(z) - 1, 1)
    share = np.cumsum(variance) / max(variance.sum(), 1e-12)
    k = int(np.searchsorted(share, PCA_VARIANCE) + 1)
    k = max(1, min(k, z.shape[1] - 1))
    return {"pca_components": vt[:k].astype(np.float64), "pca_variance": np.maximum(variance[:k], 1e-12)}


def _fit_autoencoder(z: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    d = z.shape[1]
    wide, narrow = max(2, d // 2), max(1, d // 4)
    model = MLPRegressor(
        hidden_layer_sizes=(wide, narrow, wide), activation="tanh", max_iter=300, early_stopping=True,
        validation_fraction=0.1, n_iter_no_change=AE_PATIENCE, tol=AE_TOL, random_state=seed,
        learning_rate_init=0.003,
    )
    rows = z[:AE_MAX_ROWS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(rows, rows)
    arrays: dict[str, np.ndarray] = {"ae_layers": np.array([len(model.coefs_)])}
    for i, (w, b) in enumerate(zip(model.coefs_, model.intercepts_)):
        arrays[f"ae_w{i}"] = np.asarray(w, dtype=np.float64)
        arrays[f"ae_b{i}"] = np.asarray(b, dtype=np.float64)
    return arrays


def _check_faithful(name: str, ours: np.ndarray, theirs: np.ndarray) -> None:
    difference = float(np.max(np.abs(ours - theirs))) if len(ours) else 0.0
    scale = max(1.0, float(np.max(np.abs(theirs))) if len(theirs) else 1.0)
    if difference > FAITHFULNESS_TOLERANCE * scale:
        raise RuntimeError(f"anomaly: the exported {name} differs from scikit-learn by {difference:.3g}: not shipped")


# ---------------------------------------------------------------------------------------------- training


def _val_auc(truth: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, score))


def train(view: TrainView, out_dir: Path, config: TrainingConfig, inputs: Sequence[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    where = f"anomaly model of machine {view.machine_id!r}"
    names = list(view.feature_names)
    reserved = sorted(set(names) & RESERVED_COLUMNS)
    if reserved:
        raise AnomalyInputError(f"{where}: feature_names include reserved columns {reserved}")
    chosen = select_anomaly_inputs(names) if inputs is None else list(dict.fromkeys(inputs))
    train_frame, val_frame = view.frames["train"], view.frames["val"]
    for split, frame in (("train", train_frame), ("val", val_frame)):
        missing = [c for c in chosen if c not in frame.columns]
        if missing:
            raise AnomalyInputError(f"{where}: the {split} frame is missing feature columns {missing}")
    normal = train_frame.loc[normal_mask(train_frame)]
    if len(normal) < MIN_TRAIN_NORMAL_ROWS:
        raise ModelSkipped(
            f"{where}: {len(normal)} normal train rows (not labelled anomalous); at least "
            f"{MIN_TRAIN_NORMAL_ROWS} are needed to fit the detectors"
        )
    val_is_normal = normal_mask(val_frame)
    calibration: pd.DataFrame | None = None
    if val_is_normal.sum() < MIN_VAL_NORMAL_ROWS:
        # Val is (almost) all anomalous: the threshold is set on the LATEST normal train rows instead, held out
        # from every fit (the closest stand-in for normal operation after the fit period).
        n_calibration = max(MIN_VAL_NORMAL_ROWS, int(len(normal) * REFERENCE_MAX_FRACTION))
        if len(normal) - n_calibration < MIN_TRAIN_NORMAL_ROWS:
            raise ModelSkipped(
                f"{where}: {int(val_is_normal.sum())} normal val rows and {len(normal)} normal train rows: too few "
                f"to fit the detectors and set the threshold (needs {MIN_VAL_NORMAL_ROWS} + {MIN_TRAIN_NORMAL_ROWS})"
            )
        calibration, normal = normal.iloc[-n_calibration:], normal.iloc[:-n_calibration]
        log.info(f"anomaly: val has {int(val_is_normal.sum())} normal rows: the threshold is calibrated on the "
                 f"latest {n_calibration} normal train rows, held out from fitting")

    order = np.random.default_rng(config.seed).permutation(len(normal))
    n_reference = min(REFERENCE_MAX_ROWS, int(len(normal) * REFERENCE_MAX_FRACTION))
    reference_rows, fit_rows = order[:n_reference], order[n_reference:]
    fit_matrix = _matrix(normal, chosen)[fit_rows]
    with np.errstate(all="ignore"):
        spread = np.nanstd(fit_matrix, axis=0)
    informative = np.isfinite(spread) & (spread > 0)
    dropped = [name for name, keep in zip(chosen, informative) if not keep]
    if dropped:
        log.info(f"anomaly: dropping {len(dropped)} input(s) missing or constant on normal train rows: {dropped}")
    used = [name for name, keep in zip(chosen, informative) if keep]
    if not used:
        raise ModelSkipped(f"{where}: every input is missing or constant on the normal train rows: {chosen}")
    fit_matrix = fit_matrix[:, informative]
    fill = np.nanmedian(fit_matrix, axis=0)
    rows, cols = np.nonzero(np.isnan(fit_matrix))
    fit_matrix[rows, cols] = fill[cols]
    mean, scale = fit_matrix.mean(axis=0), fit_matrix.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (fit_matrix - mean) / scale
    log.info(
        f"anomaly: {len(used)} inputs, {len(normal)} normal train rows ({len(fit_rows)} to fit, "
        f"{n_reference} held out to normalise scores)"
    )

    arrays: dict[str, np.ndarray] = {"fill": fill, "mean": mean, "scale": scale}
    detectors = ["isolation_forest", "one_class_svm", "local_outlier_factor", "zscore", "hotelling_t2"]
    forest_arrays, forest = _fit_isolation_forest(z, config.seed)
    svm_arrays, svm = _fit_one_class_svm(z, config.contamination)
    lof_arrays, lof = _fit_lof(z)
    arrays.update(forest_arrays)
    arrays.update(svm_arrays)
    arrays.update(lof_arrays)
    arrays.update(_fit_pca(z))
    if z.shape[1] >= 2:
        detectors.append("spe_q")
        arrays.update(_fit_autoencoder(z, config.seed))
        detectors.append("autoencoder")
    assert set(detectors) <= set(DETECTORS)

    provisional = {
        "inputs": used, "detectors": detectors, "weights": {d: 1.0 for d in detectors}, "threshold": 1.0,
        "detector_thresholds": {}, "alarm": {"on_samples": 1, "off_samples": 1},
    }
    runtime = AnomalyRuntime(provisional, {**arrays, **{f"ref_{d}": np.zeros(1) for d in detectors}})
    reference_matrix = _matrix(normal, used)[reference_rows]
    reference_z = runtime.standardized(reference_matrix)
    raw_reference = runtime.raw_scores(reference_matrix)
    _check_faithful("isolation forest", raw_reference["isolation_forest"], -forest.score_samples(reference_z))
    _check_faithful("one-class SVM", raw_reference["one_class_svm"], -svm.score_samples(reference_z))
    _check_faithful("LOF", raw_reference["local_outlier_factor"], -lof.score_samples(reference_z))
    for name in detectors:
        arrays[f"ref_{name}"] = np.sort(raw_reference[name])

    runtime = AnomalyRuntime(provisional, arrays)
    val_scores = runtime.score(_matrix(val_frame, used))
    weights, weight_rule, val_auc = _weights(val_frame, val_scores, detectors)
    runtime.weights = np.array([weights[d] for d in detectors])
    ensemble = val_scores[detectors].to_numpy() @ runtime.weights / runtime.weights.sum()
    if calibration is None:
        calibration_scores, calibration_rule = val_scores.loc[val_is_normal], f"{int(val_is_normal.sum())} val normal rows"
    else:
        calibration_scores = runtime.score(_matrix(calibration, used))
        calibration_rule = (f"the latest {len(calibration)} normal train rows, held out from fitting (val has only "
                            f"{int(val_is_normal.sum())} normal rows)")
    calibration_ensemble = calibration_scores[detectors].to_numpy() @ runtime.weights / runtime.weights.sum()
    threshold = conformal_threshold(calibration_ensemble, config.contamination)
    detector_thresholds = {
        d: conformal_threshold(calibration_scores[d].to_numpy(), config.contamination) for d in detectors
    }
    on_samples, off_samples, alarm_rule = alarm_delays(view, config)
    card: dict[str, Any] = {
        "model_type": FAMILY.model_type,
        "model_file": MODEL_FILE,
        "inputs": used,
        "dropped_inputs": dropped,
        "input_selection": "explicit" if inputs is not None else "select_anomaly_inputs (raw + shortest-window mean/std)",
        "detectors": detectors,
        "weights": weights,
        "weight_rule": weight_rule,
        "val_auc": val_auc,
        "threshold": threshold,
        "threshold_rule": f"conformal {1 - config.contamination:g} quantile of the ensemble score on {calibration_rule}",
        "detector_thresholds": detector_thresholds,
        "contamination": config.contamination,
        "threshold_rows": len(calibration_ensemble),
        "alarm": {"on_samples": on_samples, "off_samples": off_samples, "rule": alarm_rule},
        "normalisation": "mid-rank empirical CDF of each detector's score on held-out normal train reference rows",
        "detector_settings": {
            "isolation_forest": {"n_estimators": IFOREST_TREES, "max_samples": int(forest.max_samples_)},
            "one_class_svm": {"kernel": "rbf", "gamma": float(svm._gamma), "nu": config.contamination,
                              "support_vectors": len(svm.support_)},
            "local_outlier_factor": {"n_neighbors": int(lof.n_neighbors_), "rows": len(lof._fit_X)},
            "pca": {"components": len(arrays["pca_variance"]), "variance_kept": PCA_VARIANCE},
        },
        "train_rows": len(train_frame),
        "train_normal_rows": len(normal),
        "fit_rows": len(fit_rows),
        "reference_rows": int(n_reference),
        "val_normal_rows": int(val_is_normal.sum()),
        "seed": config.seed,
        "sklearn_version": sklearn.__version__,
    }
    runtime = AnomalyRuntime(card, arrays)
    units = unit_codes(val_frame) if UNIT_ID in val_frame.columns else None
    flags = runtime.alarm(ensemble >= threshold, units)
    card["val_metrics"] = _val_metrics(val_frame, ensemble, flags)
    card["train_seconds"] = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / MODEL_FILE, **arrays)
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=1))
    log.info(
        f"anomaly: {len(detectors)} detectors ({weight_rule}), threshold {threshold:.4f}, "
        f"val false-alarm rate {card['val_metrics']['val_false_alarm_rate']:.3f}"
    )
    return {
        "detectors": detectors,
        "weights": weights,
        "threshold": threshold,
        "contamination": config.contamination,
        "n_train_normal": len(normal),
        "val_metrics": card["val_metrics"],
    }


def alarm_delays(view: TrainView, config: TrainingConfig) -> tuple[int, int, str]:
    """(on-delay, off-delay, rule) of the alarm, in samples.

    Alarm management practice (ISA-18.2 on/off delays): an on-delay keeps single noisy rows from raising an
    alarm, an off-delay keeps a raised alarm from flickering while the score hovers near the threshold. Both are
    the shortest feature window (6 samples at the default windows): a longer off-delay (the next window, 36) added
    a flagged tail to every incident and raised the false-alarm rate above the gate on 3 of 5 sample machines.
    `anomaly_min_event_samples` sets both. Data without time order has no neighbours in time: every row stands
    alone (1 and 1)."""
    if config.anomaly_min_event_samples is not None:
        n = int(config.anomaly_min_event_samples)
        return n, n, f"on after {n} consecutive rows above the threshold, off after {n} below (setting)"
    windows = list((view.preprocessing.get("feature_spec") or {}).get("windows") or [])
    if not view.metadata.time_order or not windows:
        return 1, 1, "every row on its own (no time order)"
    n = int(windows[0])
    return n, n, (f"on after {n} consecutive rows above the threshold, off after {n} below (the shortest "
                  "window): no single-row flicker either way, and no alarm tail longer than the window")


def _weights(val: pd.DataFrame, scores: pd.DataFrame, detectors: list[str]) -> tuple[dict[str, float], str, dict]:
    """Detector weights from val: ROC-AUC above chance with labelled anomalies, else equal."""
    column = truth_column(val)
    truth = val[column].to_numpy() if column else None
    if truth is None or len(np.unique(truth)) < 2:
        return {d: 1.0 for d in detectors}, "equal weights (no labelled anomalies in val)", {}
    auc = {d: _val_auc(truth, scores[d].to_numpy()) for d in detectors}
    weights = {d: max(0.0, auc[d] - 0.5) for d in detectors}
    if sum(weights.values()) <= 0:
        return {d: 1.0 for d in detectors}, "equal weights (no detector beats chance on val)", auc
    return weights, f"val ROC-AUC above chance against {column}", auc


def _val_metrics(val: pd.DataFrame, ensemble: np.ndarray, flags: np.ndarray) -> dict[str, float]:
    normal = normal_mask(val)
    metrics = {"val_false_alarm_rate": float(flags[normal].mean()) if normal.any() else math.nan}
    column = truth_column(val)
    if column is not None:
        truth = val[column].to_numpy()
        positives = truth == 1
        if positives.any() and (~positives).any():
            tp = float((flags[positives] == 1).sum())
            precision = tp / max(float(flags.sum()), 1.0)
            recall = tp / float(positives.sum())
            metrics.update({
                "val_precision": precision,
                "val_recall": recall,
                "val_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
                "val_roc_auc": _val_auc(truth, ensemble),
            })
    return metrics
