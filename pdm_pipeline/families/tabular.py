"""Training shared by the classifier and the RUL regressor: AutoGluon tabular, then a faithful native export.

Fitting (train; val is AutoGluon's tuning data: early stopping and model selection)
    `TabularPredictor.fit(train, tuning_data=val)` with the preset of `config.tabular` (hyperparameters, presets,
    bagging, excluded model types, weighted ensemble, time limit), at most the machine's CPU cores, no GPU,
    seeded from `config.seed`. With bagging, `use_bag_holdout=True` keeps val a real holdout. A preset that names
    an AutoGluon `presets` string and leaves `num_bag_folds` at 0 lets that preset choose bagging and stacking.
    Only the feature columns and the target ever reach AutoGluon; a feature list naming a reserved column is
    refused.

Export
    When the best model is a single LightGBM/XGBoost/CatBoost model whose inputs are exactly pipeline features
    (AutoGluon's feature generator only selects columns for float inputs), its native file is written and its
    predictions are compared with AutoGluon's on up to 1,000 val rows: probability within 1e-5, regression
    within 1e-3 of the target's unit, or the training fails (an unfaithful model is never shipped). The AutoGluon
    directory (pickles) is then deleted. Otherwise the predictor directory is kept (format "autogluon") and the
    card says why.
"""

from __future__ import annotations

import logging
import random
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core.config import TabularPreset, TrainingConfig, available_cpus
from pdm_pipeline.core.schema import RESERVED_COLUMNS
from pdm_pipeline.errors import PdmError
from pdm_pipeline.families.boosters import AUTOGLUON_FORMAT, NATIVE_FORMATS, NativeModel

log = logging.getLogger(__name__)


class _TorchProbeFilter(logging.Filter):
    """AutoGluon logs "Failed to import torch ... pip install -U torch" at ERROR level whenever it counts GPUs;
    torch is absent by design here (no GPU on the Pi, gigabytes we do not need), so that one message is dropped
    at its source logger. Every other AutoGluon message passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to import torch" not in record.getMessage()


logging.getLogger("autogluon.common.utils.resource_utils").addFilter(_TorchProbeFilter())

AUTOGLUON_DIR = "autogluon"
FAITHFULNESS_ROWS = 1000
LATENCY_REPEATS = 15


class TabularInputError(PdmError, ValueError):
    """Feature frames the tabular models cannot use; the message names the split and the columns."""


class UnfaithfulExport(RuntimeError):
    """The native booster does not reproduce AutoGluon's predictions (a bug, never shipped)."""


def check_feature_names(feature_names: Sequence[str]) -> list[str]:
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


def check_frame(frame: pd.DataFrame, split: str, feature_names: list[str], target: str) -> None:
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


# The pi preset's LightGBM leaf size (200) was set for 35,000 train rows; smaller data gets proportionally
# smaller leaves (at least MIN_LEAF_ROWS), or a 700-row machine could never split on its rare failures.
LEAF_ROWS_PER_TRAIN_ROW = 1 / 175
MIN_LEAF_ROWS = 5
# LightGBM histogram bins for data without time order (see fit_predictor): ~8 rows per bin at 8,500 rows.
RAW_ROWS_MAX_BIN = 1023
# ... and every tree sees every row and every feature (see fit_predictor).
RAW_ROWS_NO_SUBSAMPLING = {"feature_fraction": 1.0, "bagging_fraction": 1.0, "bagging_freq": 0}


def _seeded_hyperparameters(hyperparameters: dict[str, Any], seed: int, train_rows: int | None = None) -> dict[str, Any]:
    """A copy of the preset's hyperparameters with every model config carrying the seed (under its own name),
    and LightGBM's `min_data_in_leaf` scaled down to the training size."""
    from autogluon.tabular.registry import ag_model_registry

    seeded: dict[str, Any] = {}
    for key, configs in hyperparameters.items():
        model_cls = key if isinstance(key, type) else ag_model_registry.key_to_cls(key)
        configs = deepcopy(configs if isinstance(configs, list) else [configs])
        for cfg in configs:
            if isinstance(cfg, dict) and getattr(model_cls, "seed_name", None) is not None:
                cfg.setdefault(model_cls.seed_name, seed)
            if isinstance(cfg, dict) and train_rows is not None and "min_data_in_leaf" in cfg:
                scaled = max(MIN_LEAF_ROWS, int(train_rows * LEAF_ROWS_PER_TRAIN_ROW))
                cfg["min_data_in_leaf"] = min(int(cfg["min_data_in_leaf"]), scaled)
        seeded[key] = configs
    return seeded


def fit_kwargs(
    preset: TabularPreset, seed: int, stopping_metric: str | None, problem_type: str = "binary",
    train_rows: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments of `TabularPredictor.fit` for one preset (besides the data and the time limit)."""
    kwargs: dict[str, Any] = {
        "fit_weighted_ensemble": preset.fit_weighted_ensemble,
        "num_cpus": available_cpus(),
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
        kwargs["hyperparameters"] = _seeded_hyperparameters(hyperparameters, seed, train_rows)
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


def autogluon_data(frame: pd.DataFrame, columns: list[str], target: str, values: np.ndarray) -> pd.DataFrame:
    """Exactly the input columns plus the target column: nothing else reaches AutoGluon."""
    data = frame[columns].reset_index(drop=True).astype("float64")
    data[target] = values
    return data


def fit_predictor(
    train: pd.DataFrame,
    val: pd.DataFrame,
    target: str,
    problem_type: str,
    eval_metric: str,
    stopping_metric: str | None,
    work_dir: Path,
    config: TrainingConfig,
    what: str,
    time_order: bool = True,
) -> tuple[Any, list[dict]]:
    """Fit AutoGluon on train (inputs + target) with val as tuning data, pruned per preset.

    Without time order (independent rows of raw measurements and their interactions) LightGBM gets fine
    histograms (RAW_ROWS_MAX_BIN bins): the preset's 63 bins suit smooth rolling-window statistics, but the
    failure limits of raw measurements are sharp and often lie in a sparse tail (a power or strain limit crossed
    by a few dozen rows). Quantile bins put ~rows/max_bin rows in each bin, so at 255 bins a tail of ~30 rows
    is one bin and the tree cannot place the limit inside it. Measured with 1023 vs 255 bins: AI4I, 5 split
    seeds, pooled test F1 0.826 -> 0.845 (4 of 5 better); 12 random rule datasets made for the check (limits on
    raw values, products or differences at 0.2-2 % tails, 3,000-12,000 rows), out-of-fold F1 0.799 -> 0.821
    (11 of 12 better).

    Without time order every tree also sees every row and every feature (RAW_ROWS_NO_SUBSAMPLING). The preset's
    row and feature subsampling decorrelates trees fitted on correlated neighbouring rows; on exchangeable rows
    it only hides a rare tail (a few dozen failing rows) from 30 % of the trees and the one product or difference
    that defines a limit from half of them, blurring the limit. Such data is cross-fitted and its fold models
    averaged (classifier/train.py), which already decorrelates. Measured on 36 random rule datasets made for the
    check (as above, seeds 100-111 and 200-223), out-of-fold F1 0.861 -> 0.872 and 0.888 -> 0.900: better on 9
    of 12 and 21 of 24, worse on 2 and 1. Returns the predictor and the leaderboard recorded before pruning.
    """
    from autogluon.tabular import TabularPredictor

    preset = config.tabular
    random.seed(config.seed)
    np.random.seed(config.seed)
    kwargs = fit_kwargs(preset, config.seed, stopping_metric, problem_type, len(train))
    if not time_order:
        for configs in (kwargs.get("hyperparameters") or {}).values():
            for cfg in configs:
                if isinstance(cfg, dict) and "max_bin" in cfg:
                    cfg["max_bin"] = RAW_ROWS_MAX_BIN
                if isinstance(cfg, dict) and set(cfg) & set(RAW_ROWS_NO_SUBSAMPLING):
                    cfg.update(RAW_ROWS_NO_SUBSAMPLING)
    log.info(
        f"{what}: fitting AutoGluon (preset {preset.name}, {eval_metric}, {preset.time_limit_s:g} s limit, "
        f"{kwargs['num_cpus']} CPUs) on {len(train)} train / {len(val)} val rows x {train.shape[1] - 1} inputs"
    )
    predictor = TabularPredictor(
        label=target, problem_type=problem_type, eval_metric=eval_metric, path=str(work_dir), verbosity=0
    )
    predictor.fit(train_data=train, tuning_data=val, time_limit=preset.time_limit_s,
                  feature_generator=_pass_through_features(), **kwargs)
    leaderboard = _leaderboard(predictor)
    if preset.keep_only_best:
        predictor.delete_models(models_to_keep="best", dry_run=False)
    if preset.save_space:
        predictor.save_space()
    best = next(row for row in leaderboard if row["model"] == predictor.model_best)
    log.info(f"{what}: best model {predictor.model_best} (val score {best['score_val']:.4g}) of {len(leaderboard)}")
    return predictor, leaderboard


def _pass_through_features() -> Any:
    """AutoGluon's feature generator for our inputs: none. They are already numeric features, checked by
    `check_frame`; AutoGluon's default pipeline (type inference, dropping constant and duplicate columns) spent
    ~1.1 s per fit on 35,000 x 179 for nothing a booster needs (it ignores constant columns itself)."""
    from autogluon.features.generators import IdentityFeatureGenerator

    return IdentityFeatureGenerator()


def _input_columns(best: Any) -> list[str]:
    """The columns the booster of AutoGluon model `best` takes, in its order."""
    generator = getattr(best, "_ohe_generator", None)  # XGBoost: its inputs pass through a one-hot generator
    if generator is not None:
        return list(generator.get_original_feature_names())
    # The features it was fitted on: AutoGluon's models drop columns with a single value in their train rows
    # (`drop_unique`, e.g. the rolling minimum of an on/off sensor), so they can be fewer than `best.features`.
    internal = getattr(best, "_features", None)
    return list(internal if internal else best.features)


def _native_fallback_reason(predictor: Any, best: Any, inputs: pd.DataFrame, columns: list[str]) -> str | None:
    """Why the best model cannot be exported natively (None when it can)."""
    kind = type(best).__name__
    if kind not in NATIVE_FORMATS:
        return (
            f"best model {predictor.model_best!r} is a {kind} (an ensemble or another model family), "
            f"not a single {', '.join(NATIVE_FORMATS)}"
        )
    if kind == "XGBoostModel" and getattr(best, "_ohe_generator", None) is not None and best._ohe_generator.cat_cols:
        return f"the XGBoost model one-hot encodes categorical inputs {best._ohe_generator.cat_cols[:5]}"
    unknown = [c for c in _input_columns(best) if c not in columns]
    if unknown:
        return f"the booster's inputs {unknown[:5]} are not pipeline inputs (AutoGluon derived them)"
    transformed = predictor.transform_features(inputs[columns])
    same = all(
        c in transformed.columns
        and np.array_equal(transformed[c].to_numpy(dtype=float), inputs[c].to_numpy(dtype=float), equal_nan=True)
        for c in _input_columns(best)
    )
    if not same:
        return "AutoGluon's feature generator changes the input values (not a column subset)"
    return None


def _export_native(best: Any, fmt: str, file: Path) -> None:
    """Write the booster held by AutoGluon model object `best` to `file` in its native format."""
    if fmt == "lightgbm":
        # Without num_iteration, LightGBM saves up to the best (early-stopping) iteration, as it predicts.
        best.model.save_model(str(file))
    elif fmt == "xgboost":
        booster = best.model.get_booster()
        # The sklearn wrapper predicts with the trees up to best_iteration; keep exactly those.
        best_iteration = getattr(best.model, "best_iteration", None)
        if best_iteration is not None:
            booster = booster[: int(best_iteration) + 1]
        booster.save_model(str(file))
    else:
        best.model.save_model(str(file))


def export_model(
    predictor: Any,
    work_dir: Path,
    out_dir: Path,
    val_inputs: pd.DataFrame,
    columns: list[str],
    classifier: bool,
    tolerance: float,
    what: str,
) -> dict[str, Any]:
    """Write the best model into `out_dir` natively (or keep the AutoGluon directory); returns card entries.

    `val_inputs` (the input columns of val rows) serve the faithfulness check.
    """
    rows = np.unique(np.linspace(0, len(val_inputs) - 1, min(FAITHFULNESS_ROWS, len(val_inputs))).astype(int))
    sample = val_inputs.iloc[rows].reset_index(drop=True).astype("float64")
    best = predictor._trainer.load_model(predictor.model_best)
    reason = _native_fallback_reason(predictor, best, sample, columns)
    if reason is not None:
        log.info(f"{what}: kept as the AutoGluon predictor: {reason}")
        target = out_dir / AUTOGLUON_DIR
        if Path(work_dir).resolve() != target.resolve():
            shutil.move(str(work_dir), target)
        return {"format": AUTOGLUON_FORMAT, "model_file": AUTOGLUON_DIR, "input_columns": columns,
                "fallback_reason": reason}
    fmt, file_name = NATIVE_FORMATS[type(best).__name__]
    _export_native(best, fmt, out_dir / file_name)
    input_columns = _input_columns(best)
    native = NativeModel(fmt, out_dir / file_name, classifier)
    ours = native.predict(sample[input_columns].to_numpy(dtype=float))
    if classifier:
        theirs = predictor.predict_proba(sample[columns], as_multiclass=False).to_numpy(dtype=float)
    else:
        theirs = predictor.predict(sample[columns]).to_numpy(dtype=float)
    max_diff = float(np.max(np.abs(ours - theirs))) if len(sample) else 0.0
    if not max_diff <= tolerance:
        raise UnfaithfulExport(
            f"{what}: the native {fmt} model differs from AutoGluon by up to {max_diff:.3g} on {len(sample)} val "
            f"rows (tolerance {tolerance:g}): refusing to ship an unfaithful model"
        )
    shutil.rmtree(work_dir, ignore_errors=True)
    log.info(f"{what}: exported as native {fmt} (max |diff| vs AutoGluon {max_diff:.2e} on {len(sample)} val rows)")
    return {
        "format": fmt,
        "model_file": file_name,
        "input_columns": input_columns,
        "faithfulness": {"max_abs_diff": max_diff, "tolerance": tolerance, "rows": len(sample),
                         "compared_on": "val rows"},
    }


def autogluon_version() -> str:
    from autogluon.tabular import __version__

    return __version__


def single_row_latency_ms(predict: Callable[[np.ndarray], Any], row: np.ndarray, repeats: int = LATENCY_REPEATS) -> float:
    """Median wall time (ms) of `predict` on one row, after one warm-up call."""
    predict(row)
    timings = []
    for _ in range(repeats):
        begin = time.perf_counter()
        predict(row)
        timings.append((time.perf_counter() - begin) * 1000.0)
    return statistics.median(timings)
