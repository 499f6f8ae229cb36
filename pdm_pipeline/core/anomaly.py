"""Anomaly ensemble: four unsupervised detectors fitted on normal train rows, soft-voted, thresholded on val.

Inputs
    Feature frames (train/val/test) with float feature columns plus pass-through columns (`failure_status`,
    `anomaly_window`, `unit_id`, `timestamp`), which are never model inputs. By default the ensemble uses a
    compact subset of the features (`select_anomaly_inputs`): each sensor's raw value plus the rolling mean and
    standard deviation over the shortest window (a level shift and a noise/vibration increase show there first,
    and ~3 inputs per sensor keep the stored LOF/SVM samples and the scoring cost small). Callers may pass an
    explicit subset instead (`inputs=`).

Fitting (train, normal rows only: `failure_status == 0`, or all rows when there is no label)
    Normal train rows are shuffled (seeded) and split in two: up to 2,000 "reference" rows (at most a fifth)
    that no detector sees, and the "fit" rows. On the fit rows: median imputation of missing values, a
    StandardScaler, and
      - isolation_forest: 150 trees, max_samples=256 (its size does not grow with the data);
      - one_class_svm: exact RBF OneClassSVM (nu = contamination, gamma="scale") on a 4,000-row subsample.
        Chosen over Nystroem + SGDOneClassSVM because the exact solution is deterministic and needs no
        learning-rate tuning, fit time is bounded by the cap whatever the train size (50k rows train in seconds),
        and the stored model is only its support vectors;
      - local_outlier_factor: LOF(novelty=True, 20 neighbours) on a 5,000-row subsample (LOF stores its
        training set, so the cap bounds both size and scoring cost). A ball tree rather than brute force: brute
        force runs multi-threaded distance kernels whose single-row latency spikes (~100 ms) when other processes
        share the CPU; the tree answers one row in ~1 ms, steadily, for ~1 MB more on disk;
      - zscore: max |z| over the inputs, z from the train-normal mean/std (a single sensor running away is
        the typical fault signature; the mean of squared z would dilute it among the other inputs).

Common scale and ensemble
    Every raw score is oriented so that higher = more anomalous (sklearn's score_samples is higher for normal
    rows: negated), then mapped through the empirical CDF of the same detector's scores on the held-out
    reference rows (mid-rank, in [0, 1]; 0.5 = a typical normal row, 1 = beyond every reference row). Held-out
    rows matter: LOF and the SVM score their own training rows as more normal than new normal rows.
    Ensemble = soft vote = mean of the four normalised scores.

Thresholds (VAL normal rows, never test)
    Ensemble threshold = the (1 - contamination) quantile of the ensemble score on val normal rows; each detector
    also gets its own threshold, the same quantile of its normalised val-normal score. A row is flagged when its
    score is >= the threshold.

Evaluation (TEST only, once)
    Truth = `anomaly_window` when present, else `failure_status`. Baseline = random flags at the contamination
    rate (expected values: precision = prevalence, recall = false-alarm rate = contamination, ROC-AUC = 0.5,
    PR-AUC = prevalence).
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neighbors import LocalOutlierFactor
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from pdm_pipeline.core.config import TrainingConfig
from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.core.publish import size_mb
from pdm_pipeline.core.schema import ANOMALY, EVAL_ANOMALY, LABEL, RESERVED_COLUMNS, TIMESTAMP

MODEL_FILE = "anomaly_ensemble.joblib"
CARD_FILE = "model_card.json"
ENSEMBLE = "ensemble"
DETECTORS: tuple[str, ...] = ("isolation_forest", "one_class_svm", "local_outlier_factor", "zscore")

IFOREST_TREES = 150
IFOREST_MAX_SAMPLES = 256
OCSVM_MAX_ROWS = 4_000
LOF_MAX_ROWS = 5_000
LOF_NEIGHBORS = 20
REFERENCE_MAX_ROWS = 2_000
REFERENCE_MAX_FRACTION = 0.2
MIN_TRAIN_NORMAL_ROWS = 50
MIN_VAL_NORMAL_ROWS = 20
LATENCY_REPEATS = 25

# "<sensor>__<stat>_<window>", window like "30min", "1h", "6h", "24h" (see features.py).
_WINDOWED_FEATURE_RE = re.compile(
    r"^(?P<sensor>.+?)__(?P<stat>[a-z]+(?:_[a-z]+)*)_(?P<amount>\d+(?:\.\d+)?)(?P<unit>min|h)$"
)
_SHORT_WINDOW_STATS = ("mean", "std")


class AnomalyInputError(ValueError):
    """Input frames or columns the anomaly ensemble cannot use; the message names the split and columns."""


@dataclass
class AnomalyModelResult:
    """What `train_anomaly_detector` wrote and measured."""

    path: Path
    size_mb: float
    train_seconds: float
    detectors: list[str]
    threshold: float
    contamination: float
    feature_names: list[str]
    n_train_normal: int
    val_metrics: dict[str, float]


def select_anomaly_inputs(feature_names: Sequence[str]) -> list[str]:
    """The compact default inputs: raw sensors plus rolling mean and std over the shortest window.

    Raw sensors are the names without "__"; windowed features follow `<sensor>__<stat>_<window>`. When no name
    follows that convention, every given feature is used.
    """
    raw = [name for name in feature_names if "__" not in name]
    windowed: list[tuple[str, float]] = []
    for name in feature_names:
        match = _WINDOWED_FEATURE_RE.match(name)
        if match and match["stat"] in _SHORT_WINDOW_STATS:
            hours = float(match["amount"]) / (60.0 if match["unit"] == "min" else 1.0)
            windowed.append((name, hours))
    shortest = min((hours for _, hours in windowed), default=None)
    selected = raw + [name for name, hours in windowed if hours == shortest]
    if not selected:
        return list(feature_names)
    chosen = set(selected)
    return [name for name in feature_names if name in chosen]


def _model_label(machine_id: str | None) -> str:
    """How error messages name the model: with its machine when known."""
    return f"anomaly model of machine {machine_id!r}" if machine_id else "anomaly model"


def _ecdf(reference_sorted: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mid-rank empirical CDF of `values` against a sorted reference sample, in [0, 1]."""
    below = np.searchsorted(reference_sorted, values, side="left")
    at_or_below = np.searchsorted(reference_sorted, values, side="right")
    return (below + at_or_below) / (2.0 * len(reference_sorted))


def _average_path_length(n_samples: np.ndarray) -> np.ndarray:
    """c(n), the average path length of an unsuccessful search in a binary tree of n points (Liu et al., 2008)."""
    n = np.asarray(n_samples, dtype=np.float64)
    out = np.where(n == 2, 1.0, 0.0)
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _isolation_leaf_depths(forest: IsolationForest) -> list[np.ndarray]:
    """Per tree, per node: node depth + c(samples in the node), the path length a row ending there counts."""
    depths_per_tree = []
    for estimator in forest.estimators_:
        tree = estimator.tree_
        depth = np.zeros(tree.node_count)
        for node in range(tree.node_count):  # nodes are numbered depth-first: a parent precedes its children
            for child in (tree.children_left[node], tree.children_right[node]):
                if child >= 0:
                    depth[child] = depth[node] + 1.0
        depths_per_tree.append(depth + _average_path_length(tree.n_node_samples))
    return depths_per_tree


def _as_float_matrix(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The columns as a float64 matrix with +-inf turned into NaN (imputed like missing values)."""
    matrix = frame.loc[:, list(columns)].to_numpy(dtype=np.float64, copy=True)
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix


class AnomalyEnsemble:
    """The fitted ensemble (pickled with joblib): imputation, scaling, four detectors, normalisation, thresholds."""

    def __init__(
        self,
        *,
        feature_names: list[str],
        fill_values: np.ndarray,
        scaler: StandardScaler,
        isolation_forest: IsolationForest,
        one_class_svm: OneClassSVM,
        local_outlier_factor: LocalOutlierFactor,
        reference_scores: dict[str, np.ndarray],
        contamination: float,
        machine_id: str | None = None,
    ) -> None:
        self.feature_names = list(feature_names)
        self.fill_values = fill_values
        self.scaler = scaler
        self.isolation_forest = isolation_forest
        # Scoring through the trees directly is ~30x faster per row than IsolationForest.score_samples, whose
        # per-tree joblib dispatch dominates single-row latency; the result is identical (tested).
        self.isolation_leaf_depths = _isolation_leaf_depths(isolation_forest)
        self.one_class_svm = one_class_svm
        self.local_outlier_factor = local_outlier_factor
        self.reference_scores = reference_scores
        self.contamination = float(contamination)
        self.machine_id = machine_id
        self.threshold = math.nan
        self.detector_thresholds: dict[str, float] = {}

    @property
    def detectors(self) -> list[str]:
        """The detector names, in the order of the score columns."""
        return list(DETECTORS)

    def standardized(self, X: pd.DataFrame) -> np.ndarray:
        """The model inputs of X, imputed with the train medians and standardised with the train-normal scaler."""
        missing = [name for name in self.feature_names if name not in X.columns]
        if missing:
            raise AnomalyInputError(
                f"{_model_label(self.machine_id)}: the scored frame is missing {len(missing)} feature column(s) "
                f"the model was trained on: {missing}"
            )
        matrix = _as_float_matrix(X, self.feature_names)
        rows, cols = np.nonzero(np.isnan(matrix))
        matrix[rows, cols] = self.fill_values[cols]
        return self.scaler.transform(matrix)

    def isolation_score(self, Z: np.ndarray) -> np.ndarray:
        """The isolation forest's anomaly score 2^(-mean path length / c(max_samples)) of standardised rows Z.

        Equal to -IsolationForest.score_samples(Z); higher = more anomalous.
        """
        Z32 = np.ascontiguousarray(Z, dtype=np.float32)
        total = np.zeros(len(Z32))
        for estimator, leaf_depths in zip(self.isolation_forest.estimators_, self.isolation_leaf_depths):
            total += leaf_depths[estimator.tree_.apply(Z32)]
        normaliser = len(self.isolation_leaf_depths) * _average_path_length([self.isolation_forest.max_samples_])[0]
        return np.power(2.0, -total / normaliser)

    def raw_scores(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each detector's raw score, oriented so that higher = more anomalous."""
        Z = self.standardized(X)
        return {
            "isolation_forest": self.isolation_score(Z),
            "one_class_svm": -self.one_class_svm.score_samples(Z),
            "local_outlier_factor": -self.local_outlier_factor.score_samples(Z),
            "zscore": np.abs(Z).max(axis=1),
        }

    def score(self, X: pd.DataFrame) -> pd.DataFrame:
        """Normalised score per detector (train-normal reference CDF, in [0, 1]) and their mean, "ensemble".

        Higher = more anomalous. Same index as X.
        """
        raw = self.raw_scores(X)
        normalised = np.column_stack([_ecdf(self.reference_scores[name], raw[name]) for name in DETECTORS])
        table = np.column_stack([normalised, normalised.mean(axis=1)])
        return pd.DataFrame(table, columns=[*DETECTORS, ENSEMBLE], index=X.index)

    def flags(self, scores: pd.DataFrame) -> pd.DataFrame:
        """0/1 flags per detector (its own val threshold) and for the ensemble, from `score` output."""
        thresholds = {**self.detector_thresholds, ENSEMBLE: self.threshold}
        return pd.DataFrame(
            {name: (scores[name].to_numpy() >= thresholds[name]).astype(np.int8) for name in thresholds},
            index=scores.index,
        )

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """0/1 flags: ensemble score >= threshold."""
        return (self.score(X)[ENSEMBLE].to_numpy() >= self.threshold).astype(np.int8)

    def calibrate(self, val_normal: pd.DataFrame) -> pd.DataFrame:
        """Set the ensemble and per-detector thresholds from VAL normal rows; returns their scores."""
        scores = self.score(val_normal)
        quantile = 1.0 - self.contamination
        self.detector_thresholds = {name: float(np.quantile(scores[name], quantile)) for name in DETECTORS}
        self.threshold = float(np.quantile(scores[ENSEMBLE], quantile))
        return scores


def _normal_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows labeled normal (`failure_status == 0`), or every row when the frame has no label."""
    if LABEL in frame.columns:
        return frame.loc[frame[LABEL] == 0]
    return frame


def _check_inputs(
    train: pd.DataFrame,
    val: pd.DataFrame,
    feature_names: Sequence[str],
    inputs: Sequence[str] | None,
    where: str,
) -> list[str]:
    """Validate the feature lists and frames; return the inputs to use."""
    feature_names = list(feature_names)
    if not feature_names:
        raise AnomalyInputError(f"{where}: feature_names is empty")
    reserved = sorted(set(feature_names) & RESERVED_COLUMNS)
    if reserved:
        raise AnomalyInputError(
            f"{where}: feature_names include reserved columns {reserved}; they are never model inputs"
        )
    duplicates = sorted(name for name, count in Counter(feature_names).items() if count > 1)
    if duplicates:
        raise AnomalyInputError(f"{where}: feature_names repeat {duplicates}")
    if inputs is None:
        chosen = select_anomaly_inputs(feature_names)
    else:
        chosen = list(dict.fromkeys(inputs))
        unknown = [name for name in chosen if name not in feature_names]
        if unknown or not chosen:
            raise AnomalyInputError(
                f"{where}: inputs must be a non-empty subset of feature_names; not features: {unknown}"
            )
    for split, frame in (("train", train), ("val", val)):
        missing = [name for name in chosen if name not in frame.columns]
        if missing:
            raise AnomalyInputError(f"{where}: the {split} frame is missing feature columns {missing}")
        not_numeric = [name for name in chosen if not pd.api.types.is_numeric_dtype(frame[name])]
        if not_numeric:
            raise AnomalyInputError(f"{where}: the {split} frame has non-numeric feature columns {not_numeric}")
    return chosen


def _val_metrics(model: AnomalyEnsemble, val: pd.DataFrame, val_normal_scores: pd.DataFrame) -> dict[str, float]:
    """False-alarm rates on val normal rows; recall and ROC-AUC on val when it has labeled failure rows."""
    flags = model.flags(val_normal_scores)
    metrics = {"val_n_normal": float(len(val_normal_scores))}
    metrics["val_false_alarm_rate"] = float(flags[ENSEMBLE].mean())
    for name in DETECTORS:
        metrics[f"val_false_alarm_rate_{name}"] = float(flags[name].mean())
    if LABEL in val.columns:
        labeled = val.loc[val[LABEL].isin([0, 1])]
        truth = labeled[LABEL].to_numpy(dtype=int)
        if 0 < truth.sum() < len(truth):
            ensemble = model.score(labeled)[ENSEMBLE].to_numpy()
            metrics["val_recall"] = float((ensemble[truth == 1] >= model.threshold).mean())
            metrics["val_roc_auc"] = float(roc_auc_score(truth, ensemble))
    return metrics


def train_anomaly_detector(
    train: pd.DataFrame,
    val: pd.DataFrame,
    feature_names: Sequence[str],
    out_dir: Path,
    config: TrainingConfig,
    log: Callable[[str], None] = print,
    *,
    inputs: Sequence[str] | None = None,
    machine_id: str | None = None,
) -> AnomalyModelResult:
    """Fit the ensemble on normal train rows, set its thresholds on val normal rows, write it to out_dir.

    `inputs` (a subset of `feature_names`) overrides the compact default chosen by `select_anomaly_inputs`.
    Inputs that are missing or constant on every normal train row carry no information and are dropped (logged).
    Writes out_dir/anomaly_ensemble.joblib and out_dir/model_card.json.
    """
    import joblib

    started = time.perf_counter()
    config.validate()
    where = _model_label(machine_id)
    chosen = _check_inputs(train, val, feature_names, inputs, where)

    normal = _normal_rows(train)
    n_normal = len(normal)
    if n_normal < MIN_TRAIN_NORMAL_ROWS:
        raise AnomalyInputError(
            f"{where}: the train frame has {n_normal} normal rows ({LABEL} == 0), "
            f"at least {MIN_TRAIN_NORMAL_ROWS} are needed"
        )
    val_normal = _normal_rows(val)
    if len(val_normal) < MIN_VAL_NORMAL_ROWS:
        raise AnomalyInputError(
            f"{where}: the val frame has {len(val_normal)} normal rows ({LABEL} == 0), "
            f"at least {MIN_VAL_NORMAL_ROWS} are needed to set the threshold"
        )

    order = np.random.default_rng(config.seed).permutation(n_normal)
    n_reference = min(REFERENCE_MAX_ROWS, int(n_normal * REFERENCE_MAX_FRACTION))
    reference_rows, fit_rows = order[:n_reference], order[n_reference:]
    fit_matrix = _as_float_matrix(normal, chosen)[fit_rows]

    with np.errstate(all="ignore"):
        spread = np.nanstd(fit_matrix, axis=0)
    informative = np.isfinite(spread) & (spread > 0)
    dropped = [name for name, keep in zip(chosen, informative) if not keep]
    if dropped:
        log(f"anomaly: dropping {len(dropped)} input(s) missing or constant on normal train rows: {dropped}")
    used = [name for name, keep in zip(chosen, informative) if keep]
    if not used:
        raise AnomalyInputError(f"{where}: every input is missing or constant on the normal train rows: {chosen}")
    fit_matrix = fit_matrix[:, informative]
    fill_values = np.nanmedian(fit_matrix, axis=0)
    rows, cols = np.nonzero(np.isnan(fit_matrix))
    fit_matrix[rows, cols] = fill_values[cols]
    scaler = StandardScaler().fit(fit_matrix)
    Z = scaler.transform(fit_matrix)
    log(
        f"anomaly: {len(used)} inputs, {n_normal} normal train rows "
        f"({len(fit_rows)} to fit, {n_reference} held out to normalise scores)"
    )

    log(f"anomaly: isolation forest ({IFOREST_TREES} trees) on {len(Z)} rows")
    iforest = IsolationForest(
        n_estimators=IFOREST_TREES, max_samples=min(IFOREST_MAX_SAMPLES, len(Z)), random_state=config.seed
    ).fit(Z)
    svm_rows = Z[:OCSVM_MAX_ROWS]
    log(f"anomaly: one-class SVM on {len(svm_rows)} rows")
    ocsvm = OneClassSVM(kernel="rbf", gamma="scale", nu=config.contamination).fit(svm_rows)
    lof_rows = Z[:LOF_MAX_ROWS]
    log(f"anomaly: local outlier factor on {len(lof_rows)} rows")
    lof = LocalOutlierFactor(
        n_neighbors=min(LOF_NEIGHBORS, len(lof_rows) - 1), novelty=True, algorithm="ball_tree"
    ).fit(lof_rows)

    model = AnomalyEnsemble(
        feature_names=used,
        fill_values=fill_values,
        scaler=scaler,
        isolation_forest=iforest,
        one_class_svm=ocsvm,
        local_outlier_factor=lof,
        reference_scores={},
        contamination=config.contamination,
        machine_id=machine_id,
    )
    reference_raw = model.raw_scores(normal.iloc[reference_rows])
    model.reference_scores = {name: np.sort(reference_raw[name]) for name in DETECTORS}

    val_normal_scores = model.calibrate(val_normal)
    val_metrics = _val_metrics(model, val, val_normal_scores)
    log(
        f"anomaly: threshold {model.threshold:.4f} from {len(val_normal)} val normal rows, "
        f"val false-alarm rate {val_metrics['val_false_alarm_rate']:.3f}"
    )
    train_seconds = time.perf_counter() - started

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out_dir / MODEL_FILE, compress=3)
    card = {
        "model_type": ANOMALY,
        "machine_id": machine_id,
        "detectors": {
            "isolation_forest": {"n_estimators": IFOREST_TREES, "max_samples": iforest.max_samples_, "rows": len(Z)},
            "one_class_svm": {
                "kernel": "rbf",
                "gamma": "scale",
                "nu": config.contamination,
                "rows": len(svm_rows),
                "support_vectors": int(len(ocsvm.support_)),
            },
            "local_outlier_factor": {
                "n_neighbors": lof.n_neighbors_,
                "novelty": True,
                "algorithm": "ball_tree",
                "rows": len(lof_rows),
            },
            "zscore": {"statistic": "max |z| over inputs, z from train-normal mean/std"},
        },
        "normalisation": "mid-rank empirical CDF of each detector's score on held-out train-normal reference rows",
        "ensemble": "mean of the four normalised scores (soft vote); flag when >= threshold",
        "threshold": model.threshold,
        "threshold_rule": f"{1 - config.contamination:g} quantile of the ensemble score on val normal rows",
        "detector_thresholds": model.detector_thresholds,
        "contamination": config.contamination,
        "features": used,
        "input_selection": (
            "explicit" if inputs is not None else "select_anomaly_inputs (raw + shortest-window mean/std)"
        ),
        "dropped_inputs": dropped,
        "scaler": {
            "mean": dict(zip(used, map(float, scaler.mean_))),
            "std": dict(zip(used, map(float, scaler.scale_))),
            "fill_values": dict(zip(used, map(float, fill_values))),
        },
        "train_rows": int(len(train)),
        "train_normal_rows": n_normal,
        "fit_rows": int(len(fit_rows)),
        "reference_rows": n_reference,
        "val_normal_rows": int(len(val_normal)),
        "val_metrics": val_metrics,
        "seed": config.seed,
        "train_seconds": train_seconds,
        "sklearn_version": sklearn.__version__,
    }
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2))
    size = size_mb(out_dir)
    log(f"anomaly: wrote {out_dir / MODEL_FILE} ({size:.2f} MB) in {train_seconds:.1f} s")
    return AnomalyModelResult(
        path=out_dir,
        size_mb=size,
        train_seconds=train_seconds,
        detectors=model.detectors,
        threshold=model.threshold,
        contamination=model.contamination,
        feature_names=used,
        n_train_normal=n_normal,
        val_metrics=val_metrics,
    )


def load_anomaly_model(path: Path) -> AnomalyEnsemble:
    """Load the ensemble from its directory (or the .joblib file itself)."""
    import joblib

    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no anomaly model at {file}")
    model = joblib.load(file)
    if not isinstance(model, AnomalyEnsemble):
        raise TypeError(f"{file} holds a {type(model).__name__}, not an AnomalyEnsemble")
    return model


def single_row_latency_ms(model: AnomalyEnsemble, row: pd.DataFrame, repeats: int = LATENCY_REPEATS) -> float:
    """Median wall time (ms) of `model.score` on a one-row frame, after one warm-up call."""
    model.score(row)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.score(row)
        timings.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(timings)


def _binary_metrics(truth: np.ndarray, flagged: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1, false-alarm rate, ROC-AUC and PR-AUC (NaN where undefined for this truth)."""
    tp = int(np.sum((flagged == 1) & (truth == 1)))
    fp = int(np.sum((flagged == 1) & (truth == 0)))
    fn = int(np.sum((flagged == 0) & (truth == 1)))
    tn = int(np.sum((flagged == 0) & (truth == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    both_classes = 0 < tp + fn < len(truth)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1 if tp + fn else math.nan,
        "false_alarm_rate": fp / (fp + tn) if fp + tn else math.nan,
        "roc_auc": float(roc_auc_score(truth, score)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(truth, score)) if both_classes else math.nan,
        "flagged_rate": float(np.mean(flagged)),
    }


def _random_baseline(prevalence: float, rate: float) -> dict[str, float]:
    """Expected metrics of flagging rows at random with probability `rate`."""
    f1 = 2 * prevalence * rate / (prevalence + rate) if prevalence + rate > 0 else 0.0
    return {
        "precision": prevalence,
        "recall": rate,
        "f1": f1,
        "false_alarm_rate": rate,
        "roc_auc": 0.5,
        "pr_auc": prevalence,
        "flagged_rate": rate,
    }


def _metric_table(per_detector: dict[str, dict[str, float]], thresholds: dict[str, float]) -> str:
    """Markdown table: one row per detector (and ensemble, baseline), one column per metric."""
    columns = ["precision", "recall", "f1", "false_alarm_rate", "roc_auc", "pr_auc"]
    lines = [
        "| detector | threshold | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for name, metrics in per_detector.items():
        threshold = thresholds.get(name)
        cells = [f"{threshold:.4f}" if threshold is not None else "-"]
        cells += ["-" if math.isnan(metrics[c]) else f"{metrics[c]:.3f}" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _score_plot(
    test: pd.DataFrame, ensemble: np.ndarray, truth: np.ndarray, threshold: float, truth_column: str
) -> str:
    """Ensemble score over time (row index without an ordered timestamp), threshold line, truth = 1 shaded."""
    from pdm_pipeline.core.plots import figure_markdown, new_figure

    by_time = TIMESTAMP in test.columns and test[TIMESTAMP].is_monotonic_increasing
    x = pd.to_datetime(test[TIMESTAMP]).to_numpy() if by_time else np.arange(len(test))
    fig, ax = new_figure(9.0, 3.5)
    ax.fill_between(
        x, 0, 1, where=truth == 1, transform=ax.get_xaxis_transform(), color="tab:red", alpha=0.15,
        step="mid", label=f"{truth_column} = 1",
    )
    ax.plot(x, ensemble, color="tab:blue", linewidth=0.7, label="ensemble score")
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1.0, label=f"threshold {threshold:.3f}")
    ax.set_xlabel(TIMESTAMP if by_time else "test row")
    ax.set_ylabel("anomaly score (0..1)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, fontsize=8, frameon=False)
    return figure_markdown(fig, "Anomaly ensemble score on test")


def evaluate_anomaly_detector(model_dir_or_result: Path | AnomalyModelResult, test: pd.DataFrame) -> Evaluation:
    """Score the TEST split with the saved model: per-detector and ensemble metrics, baseline, pictures, latency.

    Truth is `anomaly_window` when present, else `failure_status`; without either, the evaluation is skipped.
    """
    if isinstance(model_dir_or_result, AnomalyModelResult):
        model = load_anomaly_model(model_dir_or_result.path)
    else:
        model = load_anomaly_model(Path(model_dir_or_result))
    truth_column = next((c for c in (EVAL_ANOMALY, LABEL) if c in test.columns), None)
    if truth_column is None:
        return Evaluation.skipped(
            ANOMALY,
            f"the test split has neither {EVAL_ANOMALY!r} nor {LABEL!r}: no truth to evaluate the anomaly model",
        )
    test = test.loc[test[truth_column].isin([0, 1])]
    if test.empty:
        return Evaluation.skipped(ANOMALY, f"the test split has no rows with {truth_column!r} in {{0, 1}}")
    truth = test[truth_column].to_numpy(dtype=int)

    scores = model.score(test)
    flags = model.flags(scores)
    per_detector = {
        name: _binary_metrics(truth, flags[name].to_numpy(), scores[name].to_numpy()) for name in [*DETECTORS, ENSEMBLE]
    }
    prevalence = float(truth.mean())
    baseline = _random_baseline(prevalence, model.contamination)
    metrics = dict(per_detector[ENSEMBLE])
    metrics["single_row_latency_ms"] = single_row_latency_ms(model, test.iloc[[0]])
    metrics["test_positive_rate"] = prevalence

    thresholds = {**model.detector_thresholds, ENSEMBLE: model.threshold}
    table = _metric_table({**per_detector, "baseline (random)": baseline}, thresholds)
    ensemble_flags = flags[ENSEMBLE].to_numpy()
    details = {
        "truth_column": truth_column,
        "n_test": int(len(test)),
        "n_positive": int(truth.sum()),
        "threshold": model.threshold,
        "detector_thresholds": model.detector_thresholds,
        "per_detector": per_detector,
        "confusion_matrix": {
            "tp": int(np.sum((ensemble_flags == 1) & (truth == 1))),
            "fp": int(np.sum((ensemble_flags == 1) & (truth == 0))),
            "fn": int(np.sum((ensemble_flags == 0) & (truth == 1))),
            "tn": int(np.sum((ensemble_flags == 0) & (truth == 0))),
        },
        "features": model.feature_names,
    }
    pictures = {
        "anomaly_score_over_time": _score_plot(test, scores[ENSEMBLE].to_numpy(), truth, model.threshold, truth_column),
        "anomaly_detector_metrics": table,
    }
    return Evaluation(
        model_type=ANOMALY,
        metrics=metrics,
        baseline=baseline,
        baseline_name=f"random flags at the contamination rate ({model.contamination:g}), expected values",
        details=details,
        pictures=pictures,
    )
