"""Failure classifier and remaining-useful-life (RUL) regressor, trained with AutoGluon tabular.

Inputs
    Feature frames (train/val/test): float feature columns named by `feature_names`, plus pass-through columns
    (`failure_status`, `rul`, `unit_id`, `timestamp`, ...). Only the `feature_names` columns and the target ever
    reach AutoGluon; a feature list that names a reserved column is refused.

Fitting (train; val is AutoGluon's tuning data: early stopping and model selection)
    `TabularPredictor.fit(train, tuning_data=val)` with the preset of `config.tabular` (hyperparameters, presets,
    bagging, excluded model types, weighted ensemble, time limit), at most the machine's CPU cores, no GPU, seeded
    from `config.seed`. With bagging, `use_bag_holdout=True` keeps val a real holdout (not folded into training).
    A preset that names an AutoGluon `presets` string and leaves `num_bag_folds` at 0 lets that AutoGluon preset
    choose bagging and stacking itself (e.g. `best_quality` stacks). With `keep_only_best`, every model the best one
    does not need is deleted after the leaderboard is recorded; `save_space` drops training-only artifacts.

Classifier
    Binary `failure_status`, eval metric "average_precision" (PR-AUC): it ranks models on how well they separate a
    rare positive class at every threshold, is insensitive to the large number of easy negatives (unlike accuracy
    or ROC-AUC), and is threshold-free, so model selection does not depend on an arbitrary 0.5 cut-off. Boosting
    rounds stop early on val log loss instead (computed natively by the tree libraries; see
    CLASSIFIER_STOPPING_METRIC). The decision threshold is then chosen separately on VAL probabilities: the one
    that maximises F1 (ties: the lowest such threshold, i.e. the higher recall). A label with a single class in
    train or val skips the model.

Regressor
    Target `rul` (hours), optionally capped (`config.rul_cap_hours`: target = min(rul, cap), the usual
    piecewise-linear RUL for run-to-failure data; val is capped the same way). Eval metric RMSE. Predictions are
    clipped at 0 h. Without a `rul` column the model is skipped.

Saved directory
    `autogluon/` (the predictor) and `model_card.json` (model type, best model, threshold, features, preset,
    val metrics, AutoGluon version, RUL cap, train time, and the train statistics the baselines need: majority
    class / positive rate, mean and max RUL), so evaluation never needs the train split.

Evaluation (TEST only, once)
    Classifier: F1, precision, recall, accuracy at the val threshold, ROC-AUC, PR-AUC; baseline = always the train
    majority class. Regressor: RMSE, MAE, R², bias, error by RUL band; baseline = the train mean RUL. Both measure
    `single_row_latency_ms` (median of one-row predictions with the loaded model).
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    precision_recall_curve,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)

from pdm_pipeline.core.config import TabularPreset, TrainingConfig
from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.core.publish import size_mb
from pdm_pipeline.core.schema import CLASSIFICATION, LABEL, REGRESSION, RESERVED_COLUMNS, RUL, TIMESTAMP, UNIT_ID

Log = Callable[[str], None]

CARD_FILE = "model_card.json"
PREDICTOR_DIR = "autogluon"
CLASSIFIER_METRIC = "average_precision"
# Early stopping of the classifier's boosted trees: log loss is computed natively by LightGBM/XGBoost/CatBoost,
# while average precision would be a Python callback on every boosting round. Measured at 35k rows x 150 features:
# LightGBM fit ~8 s -> ~6 s and 0.9 -> 0.5 MB (it also stops earlier), same test F1. Model selection and the
# leaderboard still use CLASSIFIER_METRIC.
CLASSIFIER_STOPPING_METRIC = "log_loss"
REGRESSOR_METRIC = "root_mean_squared_error"
LATENCY_REPEATS = 15
# Standard RUL bands (hours) for the error-by-band table: 0-24 h, 24-72 h, 72-168 h, >168 h.
RUL_BAND_EDGES_HOURS: tuple[float, ...] = (24.0, 72.0, 168.0)
# Units drawn in the "RUL over time" picture (the ones with the most test rows).
RUL_PLOT_UNITS = 2


class ModelSkipped(Exception):
    """The model cannot be trained on this data; the message is the user-facing reason."""


class TabularInputError(ValueError):
    """Feature frames the tabular models cannot use; the message names the split and the columns."""


@dataclass
class TabularModelResult:
    """What `train_failure_classifier` / `train_rul_regressor` wrote and measured."""

    model_type: str
    path: Path
    size_mb: float
    train_seconds: float
    best_model: str
    # One row per model AutoGluon trained: model, score_val (AutoGluon's sign: higher is better, so RMSE is
    # negated), fit_time, pred_time_val (seconds).
    leaderboard: list[dict]
    val_metrics: dict[str, float]
    feature_names: list[str]
    preset: str
    threshold: float | None
    rul_cap_hours: float | None


class LoadedTabularModel:
    """A saved classifier or regressor: the AutoGluon predictor plus its model card."""

    def __init__(self, predictor: Any, card: dict[str, Any], path: Path) -> None:
        self.predictor = predictor
        self.card = card
        self.path = path

    @property
    def model_type(self) -> str:
        return self.card["model_type"]

    @property
    def feature_names(self) -> list[str]:
        return list(self.card["feature_names"])

    @property
    def threshold(self) -> float | None:
        return self.card["threshold"]

    def _inputs(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.feature_names if c not in X.columns]
        if missing:
            raise TabularInputError(
                f"model {self.path}: input is missing {len(missing)} feature column(s) {missing[:10]}"
            )
        return X[self.feature_names]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """P(failure) per row (classifier only)."""
        if self.model_type != CLASSIFICATION:
            raise TypeError(f"model {self.path} is a {self.model_type} model: predict_proba needs a classifier")
        proba = self.predictor.predict_proba(self._inputs(X), as_multiclass=False)
        return proba.to_numpy(dtype=float)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Classifier: 0/1 at the val-calibrated threshold. Regressor: RUL in hours (>= 0)."""
        if self.model_type == CLASSIFICATION:
            return (self.predict_proba(X) >= self.threshold).astype(int)
        return np.maximum(self.predictor.predict(self._inputs(X)).to_numpy(dtype=float), 0.0)


# ---------------------------------------------------------------------------------------------- input checks


def _check_feature_names(feature_names: Sequence[str]) -> list[str]:
    names = list(feature_names)
    if not names:
        raise TabularInputError("feature_names is empty: the tabular models need at least one feature column")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise TabularInputError(f"feature_names lists columns more than once: {duplicated}")
    reserved = [n for n in names if n in RESERVED_COLUMNS]
    if reserved:
        raise TabularInputError(
            f"feature_names includes reserved column(s) {reserved}: "
            "timestamp, rul, unit_id and labels are never features"
        )
    return names


def _check_frame(frame: pd.DataFrame, split: str, feature_names: list[str], target: str) -> None:
    """Raise TabularInputError naming the split and the columns for anything AutoGluon should not be given."""
    if frame.empty:
        raise TabularInputError(f"the {split} split has no rows")
    missing = [c for c in feature_names if c not in frame.columns]
    if missing:
        raise TabularInputError(f"the {split} split is missing {len(missing)} feature column(s): {missing[:10]}")
    non_numeric = [c for c in feature_names if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise TabularInputError(f"the {split} split has non-numeric feature column(s): {non_numeric[:10]}")
    infinite = [c for c in feature_names if np.isinf(frame[c].to_numpy(dtype=float)).any()]
    if infinite:
        raise TabularInputError(f"the {split} split has infinite values in feature column(s): {infinite[:10]}")
    if target not in frame.columns:
        raise TabularInputError(f"the {split} split has no {target!r} column; columns: {list(frame.columns)[:20]}")
    values = pd.to_numeric(frame[target], errors="coerce")
    if values.isna().any():
        raise TabularInputError(
            f"the {split} split has {int(values.isna().sum())} missing or non-numeric values in column {target!r}"
        )


def _binary_labels(frame: pd.DataFrame, split: str) -> np.ndarray:
    labels = pd.to_numeric(frame[LABEL]).to_numpy()
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        raise TabularInputError(
            f"the {split} split has {int(bad.sum())} value(s) of {LABEL!r} other than 0/1 "
            f"(e.g. {sorted(set(labels[bad].tolist()))[:5]})"
        )
    return labels.astype(int)


def _rul_target(frame: pd.DataFrame, split: str, cap: float | None) -> np.ndarray:
    rul = pd.to_numeric(frame[RUL]).to_numpy(dtype=float)
    if (rul < 0).any():
        raise TabularInputError(f"the {split} split has {int((rul < 0).sum())} negative value(s) in column {RUL!r}")
    return np.minimum(rul, cap) if cap is not None else rul


# ---------------------------------------------------------------------------------------------- training


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _seeded_hyperparameters(hyperparameters: dict[str, Any], seed: int) -> dict[str, Any]:
    """A copy of the preset's hyperparameters with every model config carrying the seed (under its own name)."""
    from autogluon.tabular.registry import ag_model_registry

    seeded: dict[str, Any] = {}
    for key, configs in hyperparameters.items():
        model_cls = key if isinstance(key, type) else ag_model_registry.key_to_cls(key)
        configs = deepcopy(configs if isinstance(configs, list) else [configs])
        for cfg in configs:
            if isinstance(cfg, dict) and model_cls.seed_name is not None:
                cfg.setdefault(model_cls.seed_name, seed)
        seeded[key] = configs
    return seeded


def _fit_kwargs(
    preset: TabularPreset, seed: int, stopping_metric: str | None, problem_type: str = "binary"
) -> dict[str, Any]:
    """Keyword arguments of `TabularPredictor.fit` for one preset (besides the data and the time limit)."""
    kwargs: dict[str, Any] = {
        "fit_weighted_ensemble": preset.fit_weighted_ensemble,
        "num_cpus": _available_cpus(),
        "num_gpus": 0,
        # Only acts when bagging: val is then the holdout that scores models, not extra training data.
        "use_bag_holdout": True,
        # Bagged models pass this seed to their fold models (models that are not bagged ignore it).
        "ag_args_ensemble": {"model_random_seed": seed},
    }
    if preset.presets is not None:
        kwargs["presets"] = preset.presets
    hyperparameters = preset.hyperparameters_for(problem_type)
    if hyperparameters is not None:
        kwargs["hyperparameters"] = _seeded_hyperparameters(hyperparameters, seed)
    if preset.presets is None or preset.num_bag_folds > 0:
        kwargs["num_bag_folds"] = preset.num_bag_folds
        kwargs["num_stack_levels"] = preset.num_stack_levels
    if preset.excluded_model_types:
        kwargs["excluded_model_types"] = list(preset.excluded_model_types)
    if stopping_metric is not None:
        kwargs["ag_args_fit"] = {"stopping_metric": stopping_metric}
    return kwargs


def _leaderboard(predictor: Any) -> list[dict]:
    board = predictor.leaderboard(silent=True)
    rows = []
    for rec in board[["model", "score_val", "fit_time", "pred_time_val"]].to_dict("records"):
        rows.append({k: (str(v) if k == "model" else float(v)) for k, v in rec.items()})
    return rows


def _fit_predictor(
    train: pd.DataFrame,
    val: pd.DataFrame,
    feature_names: list[str],
    target: str,
    problem_type: str,
    eval_metric: str,
    stopping_metric: str | None,
    out_dir: Path,
    config: TrainingConfig,
    log: Log,
    what: str,
) -> tuple[Any, list[dict]]:
    """Fit AutoGluon on train[features + target] with val as tuning data, prune per preset.

    Returns the predictor and the leaderboard recorded before pruning.
    """
    from autogluon.tabular import TabularPredictor

    preset = config.tabular
    random.seed(config.seed)
    np.random.seed(config.seed)
    kwargs = _fit_kwargs(preset, config.seed, stopping_metric, problem_type)
    log(
        f"{what}: fitting AutoGluon (preset {preset.name}, {eval_metric}, {preset.time_limit_s:g} s limit, "
        f"{kwargs['num_cpus']} CPUs) on {len(train)} train / {len(val)} val rows x {len(feature_names)} features"
    )
    predictor = TabularPredictor(
        label=target, problem_type=problem_type, eval_metric=eval_metric, path=str(out_dir / PREDICTOR_DIR), verbosity=0
    )
    predictor.fit(train_data=train, tuning_data=val, time_limit=preset.time_limit_s, **kwargs)
    leaderboard = _leaderboard(predictor)
    if preset.keep_only_best:
        predictor.delete_models(models_to_keep="best", dry_run=False)
    if preset.save_space:
        predictor.save_space()
    best = next(row for row in leaderboard if row["model"] == predictor.model_best)
    log(f"{what}: best model {predictor.model_best} (val score {best['score_val']:.4g}) of {len(leaderboard)} trained")
    return predictor, leaderboard


def _autogluon_data(frame: pd.DataFrame, feature_names: list[str], target: str, values: np.ndarray) -> pd.DataFrame:
    """Exactly the feature columns plus the target column: nothing else reaches AutoGluon."""
    data = frame[feature_names].reset_index(drop=True)
    data[target] = values
    return data


def _write_card(out_dir: Path, card: dict[str, Any]) -> None:
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=1))


def _autogluon_version() -> str:
    from autogluon.tabular import __version__

    return __version__


def f1_optimal_threshold(truth: np.ndarray, proba: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of `proba >= threshold`; ties go to the lowest threshold (higher recall)."""
    precision, recall, thresholds = precision_recall_curve(truth, proba)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


def train_failure_classifier(
    train: pd.DataFrame,
    val: pd.DataFrame,
    feature_names: Sequence[str],
    out_dir: Path,
    config: TrainingConfig,
    log: Log = print,
) -> TabularModelResult:
    """Train the binary `failure_status` classifier into `out_dir` and calibrate its threshold on val.

    Raises ModelSkipped when the label has a single class in train or val, TabularInputError for bad frames.
    """
    start = time.perf_counter()
    names = _check_feature_names(feature_names)
    labels = {}
    for split, frame in (("train", train), ("val", val)):
        _check_frame(frame, split, names, LABEL)
        labels[split] = _binary_labels(frame, split)
        classes = np.unique(labels[split])
        if len(classes) < 2:
            raise ModelSkipped(
                f"{LABEL} has a single class ({int(classes[0])}) in the {split} split ({len(frame)} rows): "
                "a failure classifier needs both classes in train and val"
            )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor, leaderboard = _fit_predictor(
        _autogluon_data(train, names, LABEL, labels["train"]),
        _autogluon_data(val, names, LABEL, labels["val"]),
        names, LABEL, "binary", CLASSIFIER_METRIC, CLASSIFIER_STOPPING_METRIC, out_dir, config, log, "classifier",
    )
    if predictor.positive_class != 1:
        raise RuntimeError(f"AutoGluon took {predictor.positive_class!r} as the positive class, expected 1")
    val_proba = predictor.predict_proba(val[names], as_multiclass=False).to_numpy(dtype=float)
    threshold, val_f1 = f1_optimal_threshold(labels["val"], val_proba)
    val_pred = (val_proba >= threshold).astype(int)
    val_metrics = {
        "average_precision": float(average_precision_score(labels["val"], val_proba)),
        "roc_auc": float(roc_auc_score(labels["val"], val_proba)),
        "f1": val_f1,
        "precision": float(precision_score(labels["val"], val_pred, zero_division=0)),
        "recall": float(recall_score(labels["val"], val_pred, zero_division=0)),
        "positive_rate": float(labels["val"].mean()),
    }
    log(
        f"classifier: threshold {threshold:.4f} chosen on val "
        f"(F1 {val_f1:.3f}, PR-AUC {val_metrics['average_precision']:.3f})"
    )
    train_positive_rate = float(labels["train"].mean())
    result = TabularModelResult(
        model_type=CLASSIFICATION,
        path=out_dir,
        size_mb=0.0,
        train_seconds=time.perf_counter() - start,
        best_model=predictor.model_best,
        leaderboard=leaderboard,
        val_metrics=val_metrics,
        feature_names=names,
        preset=config.tabular.name,
        threshold=threshold,
        rul_cap_hours=None,
    )
    return _save(result, config, log, "classifier", {
        "eval_metric": CLASSIFIER_METRIC,
        "train_positive_rate": train_positive_rate,
        "train_majority_class": int(train_positive_rate > 0.5),
    })


def train_rul_regressor(
    train: pd.DataFrame,
    val: pd.DataFrame,
    feature_names: Sequence[str],
    out_dir: Path,
    config: TrainingConfig,
    log: Log = print,
) -> TabularModelResult:
    """Train the RUL regressor (hours, capped at `config.rul_cap_hours` when set) into `out_dir`.

    Raises ModelSkipped when train or val has no `rul` column, TabularInputError for bad frames.
    """
    start = time.perf_counter()
    names = _check_feature_names(feature_names)
    cap = config.rul_cap_hours
    targets = {}
    for split, frame in (("train", train), ("val", val)):
        if RUL not in frame.columns:
            raise ModelSkipped(f"RUL column not found in data: the {split} split has columns {list(frame.columns)}")
        _check_frame(frame, split, names, RUL)
        targets[split] = _rul_target(frame, split, cap)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cap is not None:
        log(f"regressor: RUL target capped at {cap:g} h ({float(np.mean(train[RUL] > cap)):.1%} of train rows above)")
    predictor, leaderboard = _fit_predictor(
        _autogluon_data(train, names, RUL, targets["train"]),
        _autogluon_data(val, names, RUL, targets["val"]),
        names, RUL, "regression", REGRESSOR_METRIC, None, out_dir, config, log, "regressor",
    )
    val_pred = np.maximum(predictor.predict(val[names]).to_numpy(dtype=float), 0.0)
    val_metrics = _regression_metrics(targets["val"], val_pred)
    log(f"regressor: val RMSE {val_metrics['rmse']:.3g} h, MAE {val_metrics['mae']:.3g} h, R² {val_metrics['r2']:.3f}")
    result = TabularModelResult(
        model_type=REGRESSION,
        path=out_dir,
        size_mb=0.0,
        train_seconds=time.perf_counter() - start,
        best_model=predictor.model_best,
        leaderboard=leaderboard,
        val_metrics=val_metrics,
        feature_names=names,
        preset=config.tabular.name,
        threshold=None,
        rul_cap_hours=cap,
    )
    return _save(result, config, log, "regressor", {
        "eval_metric": REGRESSOR_METRIC,
        "train_mean_rul": float(np.mean(targets["train"])),
        "train_max_rul": float(np.max(targets["train"])),
    })


def _save(
    result: TabularModelResult, config: TrainingConfig, log: Log, what: str, extra: dict[str, Any]
) -> TabularModelResult:
    """Write the model card, measure the directory, log the size; returns the completed result."""
    card = {
        "model_type": result.model_type,
        "best_model": result.best_model,
        "threshold": result.threshold,
        "feature_names": result.feature_names,
        "preset": result.preset,
        "time_limit_s": config.tabular.time_limit_s,
        "seed": config.seed,
        "val_metrics": result.val_metrics,
        "leaderboard": result.leaderboard,
        "autogluon_version": _autogluon_version(),
        "rul_cap_hours": result.rul_cap_hours,
        "train_seconds": result.train_seconds,
        "predictor_dir": PREDICTOR_DIR,
        **extra,
    }
    _write_card(result.path, card)
    result.size_mb = size_mb(result.path)
    log(f"{what}: saved to {result.path} ({result.size_mb:.2f} MB, {result.train_seconds:.1f} s)")
    return result


# ---------------------------------------------------------------------------------------------- loading


def load_tabular_model(path: Path) -> LoadedTabularModel:
    """Load a saved classifier or regressor from its directory (reads model_card.json and the predictor)."""
    from autogluon.tabular import TabularPredictor

    path = Path(path)
    card_file = path / CARD_FILE
    if not card_file.is_file():
        raise FileNotFoundError(f"no tabular model at {path}: {CARD_FILE} not found")
    card = json.loads(card_file.read_text())
    predictor = TabularPredictor.load(str(path / card["predictor_dir"]), verbosity=0)
    predictor.persist()
    return LoadedTabularModel(predictor, card, path)


def _load(model_dir_or_result: Path | TabularModelResult, model_type: str) -> LoadedTabularModel:
    if isinstance(model_dir_or_result, TabularModelResult):
        path = model_dir_or_result.path
    else:
        path = Path(model_dir_or_result)
    model = load_tabular_model(path)
    if model.model_type != model_type:
        raise TypeError(f"model {path} is a {model.model_type} model, expected {model_type}")
    return model


def single_row_latency_ms(
    predict: Callable[[pd.DataFrame], np.ndarray], row: pd.DataFrame, repeats: int = LATENCY_REPEATS
) -> float:
    """Median wall time (ms) of `predict` on a one-row frame, after one warm-up call."""
    predict(row)
    timings = []
    for _ in range(repeats):
        begin = time.perf_counter()
        predict(row)
        timings.append((time.perf_counter() - begin) * 1000.0)
    return statistics.median(timings)


# ---------------------------------------------------------------------------------------------- classifier evaluation


def _classification_metrics(truth: np.ndarray, predicted: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """F1, precision, recall, accuracy of the 0/1 predictions; ROC-AUC and PR-AUC of the score (NaN with one class)."""
    both_classes = len(np.unique(truth)) == 2
    return {
        "f1": float(f1_score(truth, predicted, zero_division=0)),
        "precision": float(precision_score(truth, predicted, zero_division=0)),
        "recall": float(recall_score(truth, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(truth, predicted)),
        "roc_auc": float(roc_auc_score(truth, score)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(truth, score)) if both_classes else math.nan,
    }


def _confusion_plot(matrix: np.ndarray, threshold: float) -> str:
    from pdm_pipeline.core.plots import figure_markdown, new_figure

    fig, ax = new_figure(4.5, 4.0)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    for (i, j), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(int(count)), ha="center", va="center", color=color, fontsize=12)
    ax.set_xticks([0, 1], labels=["predicted 0", "predicted 1"])
    ax.set_yticks([0, 1], labels=["true 0", "true 1"])
    ax.set_title(f"threshold {threshold:.3f}")
    return figure_markdown(fig, "Failure classifier confusion matrix (test)")


def _pr_curve_plot(truth: np.ndarray, proba: np.ndarray, operating: tuple[float, float]) -> str:
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
    ax.legend(loc="lower left", fontsize=8)
    return figure_markdown(fig, "Failure classifier precision-recall curve (test)")


def evaluate_classifier(model_dir_or_result: Path | TabularModelResult, test: pd.DataFrame) -> Evaluation:
    """Score the TEST split with the saved classifier at its val-calibrated threshold, beside the majority baseline."""
    model = _load(model_dir_or_result, CLASSIFICATION)
    _check_frame(test, "test", model.feature_names, LABEL)
    truth = _binary_labels(test, "test")
    proba = model.predict_proba(test)
    threshold = float(model.threshold)
    predicted = (proba >= threshold).astype(int)
    metrics = _classification_metrics(truth, predicted, proba)
    metrics["single_row_latency_ms"] = single_row_latency_ms(model.predict_proba, test.iloc[[0]])
    majority = int(model.card["train_majority_class"])
    baseline = _classification_metrics(truth, np.full(len(truth), majority), np.full(len(truth), float(majority)))
    matrix = confusion_matrix(truth, predicted, labels=[0, 1])
    tn, fp, fn, tp = (int(v) for v in matrix.ravel())
    positive_rate = float(truth.mean())
    details = {
        "threshold": threshold,
        "threshold_source": "maximum F1 on the val split",
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp, "matrix": matrix.tolist()},
        "test_positive_rate": positive_rate,
        "train_positive_rate": model.card["train_positive_rate"],
        "n_test": int(len(test)),
        "best_model": model.card["best_model"],
        "preset": model.card["preset"],
        "val_metrics": model.card["val_metrics"],
    }
    pictures = {"confusion_matrix": _confusion_plot(matrix, threshold)}
    if 0 < truth.sum() < len(truth):
        pictures["precision_recall_curve"] = _pr_curve_plot(truth, proba, (metrics["recall"], metrics["precision"]))
    return Evaluation(
        model_type=CLASSIFICATION,
        metrics=metrics,
        baseline=baseline,
        baseline_name=f"always the train majority class ({majority})",
        details=details,
        pictures=pictures,
    )


# ---------------------------------------------------------------------------------------------- regressor evaluation


def _regression_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, R² (NaN for a constant truth) and bias = mean(predicted - truth), in hours."""
    error = predicted - truth
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(mean_absolute_error(truth, predicted)),
        "r2": float(r2_score(truth, predicted)) if np.ptp(truth) > 0 else math.nan,
        "bias": float(np.mean(error)),
    }


def rul_bands(max_rul: float) -> list[tuple[float, float]]:
    """(lower, upper) hour bands for the error table: 0-24, 24-72, 72-168, >168 h, keeping the edges below
    `max_rul` (the largest train target); when fewer than two standard edges remain, quarters of that range."""
    edges = [e for e in RUL_BAND_EDGES_HOURS if e < max_rul]
    if len(edges) < 2 and max_rul > 0:
        edges = [round(max_rul * q, 3) for q in (0.25, 0.5, 0.75)]
    bounds = [0.0, *edges, math.inf]
    return list(zip(bounds[:-1], bounds[1:]))


def _band_name(lower: float, upper: float) -> str:
    return f">{lower:g} h" if math.isinf(upper) else f"{lower:g}-{upper:g} h"


def _band_errors(truth: np.ndarray, predicted: np.ndarray, bands: list[tuple[float, float]]) -> list[dict[str, Any]]:
    rows = []
    for lower, upper in bands:
        inside = (truth >= lower) & (truth < upper)
        count = int(inside.sum())
        rows.append({
            "band": _band_name(lower, upper),
            "count": count,
            "mae": float(np.mean(np.abs(predicted[inside] - truth[inside]))) if count else None,
            "bias": float(np.mean(predicted[inside] - truth[inside])) if count else None,
        })
    return rows


def _band_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| RUL band | rows | MAE (h) | bias (h) |", "|---|---|---|---|"]
    for row in rows:
        cells = ["-" if row[k] is None else f"{row[k]:.2f}" for k in ("mae", "bias")]
        lines.append(f"| {row['band']} | {row['count']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def _scatter_plot(truth: np.ndarray, predicted: np.ndarray, truth_label: str) -> str:
    from pdm_pipeline.core.plots import figure_markdown, new_figure

    fig, ax = new_figure(5.0, 5.0)
    ax.scatter(truth, predicted, s=6, alpha=0.4, color="tab:blue")
    top = float(max(truth.max(), predicted.max(), 1e-9))
    ax.plot([0, top], [0, top], color="black", linestyle="--", linewidth=1.0, label="perfect prediction")
    ax.set_xlabel(f"true {truth_label} (h)")
    ax.set_ylabel("predicted RUL (h)")
    ax.legend(loc="upper left", fontsize=8)
    return figure_markdown(fig, "RUL predicted vs true (test)")


def _rul_over_time_plot(test: pd.DataFrame, truth: np.ndarray, predicted: np.ndarray, truth_label: str) -> str:
    """True and predicted RUL along time for the test units with the most rows (all rows when there is no unit_id)."""
    from pdm_pipeline.core.plots import figure_markdown, new_figure

    units = test[UNIT_ID].astype(str).to_numpy() if UNIT_ID in test.columns else np.full(len(test), "all rows")
    counts = pd.Series(units).value_counts()
    chosen = sorted(counts.index, key=lambda u: (-counts[u], u))[:RUL_PLOT_UNITS]
    by_time = TIMESTAMP in test.columns
    fig, ax = new_figure(9.0, 3.8)
    for i, unit in enumerate(chosen):
        rows = np.flatnonzero(units == unit)
        x = np.asarray(pd.to_datetime(test[TIMESTAMP].to_numpy()[rows])) if by_time else np.arange(len(rows))
        order = np.argsort(x, kind="stable")
        color = f"C{i}"
        ax.plot(x[order], truth[rows][order], color=color, linewidth=1.2, label=f"{unit}: true {truth_label}")
        ax.plot(x[order], predicted[rows][order], color=color, linestyle="--", label=f"{unit}: predicted")
    ax.set_xlabel(TIMESTAMP if by_time else "row within unit")
    ax.set_ylabel("RUL (h)")
    ax.legend(loc="upper right", fontsize=8)
    return figure_markdown(fig, "RUL over time, true vs predicted (test)")


def evaluate_regressor(model_dir_or_result: Path | TabularModelResult, test: pd.DataFrame) -> Evaluation:
    """Score the TEST split with the saved RUL regressor beside the train-mean baseline (capped truth when capped)."""
    model = _load(model_dir_or_result, REGRESSION)
    _check_frame(test, "test", model.feature_names, RUL)
    cap = model.card["rul_cap_hours"]
    truth = _rul_target(test, "test", cap)
    predicted = model.predict(test)
    metrics = _regression_metrics(truth, predicted)
    metrics["single_row_latency_ms"] = single_row_latency_ms(model.predict, test.iloc[[0]])
    train_mean = float(model.card["train_mean_rul"])
    baseline = _regression_metrics(truth, np.full(len(truth), train_mean))
    band_rows = _band_errors(truth, predicted, rul_bands(float(model.card["train_max_rul"])))
    truth_label = f"RUL capped at {cap:g} h" if cap is not None else "RUL"
    details = {
        "truth": (
            f"metrics against min(rul, {cap:g} h), the capped target the model was trained on"
            if cap is not None
            else "metrics against rul"
        ),
        "rul_cap_hours": cap,
        "error_by_rul_band": band_rows,
        "train_mean_rul": train_mean,
        "n_test": int(len(test)),
        "best_model": model.card["best_model"],
        "preset": model.card["preset"],
        "val_metrics": model.card["val_metrics"],
    }
    pictures = {
        "rul_predicted_vs_true": _scatter_plot(truth, predicted, truth_label),
        "rul_over_time": _rul_over_time_plot(test, truth, predicted, truth_label),
        "rul_error_by_band": _band_table(band_rows),
    }
    return Evaluation(
        model_type=REGRESSION,
        metrics=metrics,
        baseline=baseline,
        baseline_name=f"predict the train mean RUL ({train_mean:.1f} h)",
        details=details,
        pictures=pictures,
    )
