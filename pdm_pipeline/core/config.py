"""Every setting of a run, defined once: training settings, gate limits, and the three AutoGluon presets.

`TrainingConfig` and `GateSettings` are the only definitions. The Dagster resources are generated from them
(`defs/resources.py`), the CLI's `--set key=value` parses into them (`apply_settings`), and `validate()` names
the field and the allowed values for every bad setting, so the same message reaches the user from the UI, the
CLI, the sensor, the schedule or GraphQL, before anything is queued.

Time quantities (label horizon, RUL cap, forecast horizon, maximum RUL) are in the data's own time unit
(`core/timeaxis.py`: hours for the generator's data, seconds for per-second test benches, cycles for
run-to-failure engines), never silently in hours.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, get_args, get_origin, get_type_hints

from pdm_pipeline.errors import SettingsError


def setting(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with its help text (shown in the CLI's --set list and in Dagster's launchpad)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. a container's limit), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class TabularPreset:
    """How AutoGluon is asked to train the classifier and the RUL regressor."""

    name: str
    description: str
    time_limit_s: float
    presets: str | None = None
    hyperparameters: dict[str, Any] | None = None
    # The RUL regressor's, when they differ from the classifier's (None: `hyperparameters`).
    regressor_hyperparameters: dict[str, Any] | None = None
    num_bag_folds: int = 0
    num_stack_levels: int = 0
    excluded_model_types: tuple[str, ...] = ()
    # Drop every model the best one does not need and the training-only artifacts (small on disk).
    keep_only_best: bool = False
    save_space: bool = False
    fit_weighted_ensemble: bool = True

    def hyperparameters_for(self, problem_type: str) -> dict[str, Any] | None:
        """AutoGluon hyperparameters for "binary" (the classifier) or "regression" (the RUL regressor)."""
        if problem_type == "regression" and self.regressor_hyperparameters is not None:
            return self.regressor_hyperparameters
        return self.hyperparameters


TABULAR_PRESETS: dict[str, TabularPreset] = {
    # Default. Gradient-boosted trees, no bagging, no stacking, keep only what the best model needs.
    # Measured at the original size (35,000 train rows x 150 features, 2 cores): LightGBM + XGBoost + CatBoost at
    # 400 rounds took 43 s (classifier) / 52 s (regressor) for F1 0.9425 / RMSE 10.4 h; LightGBM alone with early
    # stopping takes 9 s / 9 s for F1 0.9419 / RMSE 10.8 h. XGBoost (12 s) and CatBoost (24 s) never won, so the
    # Pi preset trains LightGBM only; `seed` and `server` still try the others.
    "pi": TabularPreset(
        name="pi",
        description="LightGBM with early stopping, no bagging, no stacking, only the best model kept: small and fast",
        time_limit_s=30,
        hyperparameters={
            # Regularised (row bagging, larger leaves, L2, 15 leaves): the unregularised booster (300 rounds,
            # lr 0.1, feature_fraction 0.6) was over-confident on unseen lifecycles; its val-F1 threshold sat at
            # the top of its probability range and test F1 fell to 0.57 on the benchmark compressor. With these
            # settings, on four full-size sample machines, val F1 was higher on 3 of 4 and test F1 0.92/0.94/
            # 0.94/0.79 vs 0.57/0.90/0.85/0.79, in less time (2.5-4.3 s vs 4.5-5.5 s).
            "GBM": [{
                "num_boost_round": 300, "learning_rate": 0.1, "num_leaves": 15, "min_data_in_leaf": 200,
                "feature_fraction": 0.5, "bagging_fraction": 0.7, "bagging_freq": 1, "lambda_l2": 5.0, "max_bin": 63,
            }],
        },
        # The regressor keeps the plain booster: regularised as above, its test RMSE on the benchmark
        # compressor rose from 75.8 h to 79.5 h (seed: 74.8 h).
        regressor_hyperparameters={
            "GBM": [{"num_boost_round": 300, "learning_rate": 0.1, "feature_fraction": 0.6, "max_bin": 63}],
        },
        num_bag_folds=0,
        num_stack_levels=0,
        keep_only_best=True,
        save_space=True,
        fit_weighted_ensemble=False,
    ),
    # The settings of the system this replaces, kept so the two can be compared on the same data.
    "seed": TabularPreset(
        name="seed",
        description="the original settings: medium_quality_faster_train, 3 bag folds, no stacking, 900 s",
        time_limit_s=900,
        presets="medium_quality_faster_train",
        num_bag_folds=3,
        num_stack_levels=0,
        excluded_model_types=("NN_TORCH", "FASTAI", "XT", "KNN"),
    ),
    # Best quality for a server: larger and slower; not for the Pi.
    "server": TabularPreset(
        name="server",
        description="best_quality (bagging and stacking, no neural nets: torch is not installed); large",
        time_limit_s=1800,
        presets="best_quality",
        excluded_model_types=("NN_TORCH", "FASTAI"),
    ),
}

# Choices of the settings that take words.
RUL_CAP_WORDS = ("auto", "none")
POOLING_CHOICES = ("auto", "machine", "fleet")


class ConfigError(SettingsError):
    """A training setting that is out of range or unknown; the message names the field."""


def _registry():
    from pdm_pipeline import families

    return families


@dataclass(frozen=True)
class TrainingConfig:
    """How every model of a run is trained (one value per run, for every machine of it)."""

    preset: str = setting("pi", "pi (small, fast, the default), seed (the original settings), server",
                          choices=("pi", "seed", "server"))
    time_limit_s: float | None = setting(None, "AutoGluon time limit per tabular model (s); null = the preset's")
    excluded_models: tuple[str, ...] = setting((), "model types to skip (their previous release stays)")
    contamination: float = setting(0.05, "expected anomaly share among normal val rows: sets the anomaly threshold")
    horizon: float | None = setting(
        None, "label horizon H in the data's time unit (fails within H); null = chosen on train for the band"
    )
    target_positive_rate: tuple[float, float] = setting((0.10, 0.20), "train positive-rate band when H is chosen")
    rul_cap: str = setting(
        "auto", "RUL target cap in the data's time unit: auto (chosen on val among a few), none, or a number"
    )
    window_samples: tuple[int, ...] = setting(
        (), "rolling-window lengths in samples, e.g. 6,36,144; empty = derived from the data"
    )
    forecast_horizon: float | None = setting(
        None, "forecast horizon in the data's time unit; null = 24 h for clock data, 24 steps otherwise"
    )
    anomaly_min_event_samples: int | None = setting(
        None, "anomaly flags shorter than this many samples are dropped; null = derived from the data"
    )
    pooling: str = setting(
        "auto", "classifier/regressor of a fleet: auto (chosen on val), machine (own data), fleet (pooled)",
        choices=POOLING_CHOICES,
    )
    seed: int = setting(0, "random seed for every model")
    extra: dict[str, Any] = setting({}, "expert settings, e.g. forecast_history_points, forecast_max_sensors")

    @property
    def tabular(self) -> TabularPreset:
        base = TABULAR_PRESETS[self.preset]
        if self.time_limit_s is not None:
            base = replace(base, time_limit_s=float(self.time_limit_s))
        return base

    def wants(self, model_type: str) -> bool:
        return model_type not in self.excluded_models

    @property
    def fixed_rul_cap(self) -> float | None:
        """The RUL cap when a number was set (None for "auto" and "none")."""
        return None if self.rul_cap in RUL_CAP_WORDS else float(self.rul_cap)

    def validate(self) -> TrainingConfig:
        problems: list[str] = []
        if self.preset not in TABULAR_PRESETS:
            problems.append(f"preset={self.preset!r} is unknown; choose one of {', '.join(TABULAR_PRESETS)}")
        if self.time_limit_s is not None and not (_is_number(self.time_limit_s) and self.time_limit_s > 0):
            problems.append(f"time_limit_s={self.time_limit_s!r} must be > 0 seconds")
        model_types = _registry().model_types()
        bad = [m for m in self.excluded_models if m not in model_types]
        if bad:
            problems.append(f"excluded_models has unknown types {bad}; allowed: {', '.join(model_types)}")
        if not (_is_number(self.contamination) and 0 < self.contamination < 0.5):
            problems.append(f"contamination={self.contamination!r} must be in (0, 0.5)")
        if self.horizon is not None and not (_is_number(self.horizon) and self.horizon > 0):
            problems.append(f"horizon={self.horizon!r} must be > 0 (or null to choose it on train)")
        band = tuple(self.target_positive_rate)
        if len(band) != 2 or not all(_is_number(v) for v in band) or not (0 < band[0] < band[1] < 1):
            problems.append(f"target_positive_rate={band!r} must be low,high with 0 < low < high < 1")
        if self.rul_cap not in RUL_CAP_WORDS:
            try:
                cap = float(self.rul_cap)
            except (TypeError, ValueError):
                cap = math.nan
            if not (math.isfinite(cap) and cap > 0):
                problems.append(f"rul_cap={self.rul_cap!r} must be 'auto', 'none' or a number > 0")
        windows = tuple(self.window_samples)
        if windows and not all(isinstance(w, int) and not isinstance(w, bool) and w >= 2 for w in windows):
            problems.append(f"window_samples={windows!r} must be whole numbers >= 2 (or empty: derived)")
        if self.forecast_horizon is not None and not (_is_number(self.forecast_horizon) and self.forecast_horizon > 0):
            problems.append(f"forecast_horizon={self.forecast_horizon!r} must be > 0 (or null: 24 h / 24 steps)")
        events = self.anomaly_min_event_samples
        if events is not None and not (isinstance(events, int) and not isinstance(events, bool) and events >= 1):
            problems.append(f"anomaly_min_event_samples={events!r} must be a whole number >= 1 (or null)")
        if self.pooling not in POOLING_CHOICES:
            problems.append(f"pooling={self.pooling!r} is unknown; choose one of {', '.join(POOLING_CHOICES)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            problems.append(f"seed={self.seed!r} must be a whole number")
        elif not 0 <= self.seed < 2**32:  # numpy, LightGBM and Prophet's sampler all take an unsigned 32-bit seed
            problems.append(f"seed={self.seed!r} must be between 0 and {2**32 - 1}")
        if not isinstance(self.extra, Mapping):
            problems.append(f"extra={self.extra!r} must be a mapping of expert settings")
        else:
            problems += _extra_problems(self.extra)
        if problems:
            raise ConfigError("invalid training settings: " + "; ".join(problems))
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _extra_problems(extra: Mapping[str, Any]) -> list[str]:
    """Unknown or bad expert settings (forecast_<field> overrides are checked by the forecast family)."""
    from pdm_pipeline.families.forecast.settings import ForecastSettings

    try:
        ForecastSettings.overrides(extra)
    except SettingsError as exc:
        return [str(exc)]
    return []


@dataclass(frozen=True)
class GateSettings:
    """Limits of the data-quality checks, the Raspberry Pi size gates and the model-quality gates."""

    size_budget_mb: dict[str, float] = setting({}, "Pi size budget per model type (MB); missing = the family's")
    total_budget_mb: float = setting(500.0, "all models of a release together (MB)")
    bundle_budget_mb: float = setting(500.0, "the edge bundle, all files (MB)")
    quality_limits: dict[str, float] = setting({}, "quality gate limits by gate name; missing = the family's")
    strict_quality_gates: tuple[str, ...] = setting((), "quality gates that block their model's release")
    max_critical_nan_share: float = setting(0.0, "largest share of missing values in a critical sensor")
    max_irregular_step_share: float = setting(0.05, "share of time steps allowed off the median step")
    max_gap_steps: float = setting(36.0, "longest gap between two rows of a unit, in median steps (warns past: an "
                                   "outage; feature windows shorter than a gap restart after it)")
    max_rul: float | None = setting(None, "largest sensible RUL in the data's unit; null = metadata, else none")
    max_ks_statistic: float = setting(0.30, "train-vs-test Kolmogorov-Smirnov statistic per sensor (warns past)")
    max_rul_correlation: float = setting(0.999, "|Spearman correlation| of a sensor with rul on train (warns past: "
                                         "a counter of age or remaining life, not a measurement, which has noise)")
    max_split_rows: int = setting(1_000_000, "largest split (rows) a run accepts: a bigger one is refused before "
                                  "it is read (also refused: a split this host has too little memory for)")

    def budget_mb(self, model_type: str) -> float:
        if model_type in self.size_budget_mb:
            return float(self.size_budget_mb[model_type])
        return float(_registry().get(model_type).size_budget_mb)

    def quality_limit(self, gate: str, default: float) -> float:
        return float(self.quality_limits.get(gate, default))

    def validate(self) -> GateSettings:
        registry = _registry()
        problems: list[str] = []
        types = registry.model_types()
        for key, value in self.size_budget_mb.items():
            if key not in types:
                problems.append(f"size_budget_mb.{key}: unknown model type; allowed: {', '.join(types)}")
            elif not (_is_number(value) and value > 0):
                problems.append(f"size_budget_mb.{key}={value!r} must be > 0 MB")
        for name in ("total_budget_mb", "bundle_budget_mb"):
            value = getattr(self, name)
            if not (_is_number(value) and value > 0):
                problems.append(f"{name}={value!r} must be > 0 MB")
        gates = registry.quality_gate_names()
        for key, value in self.quality_limits.items():
            if key not in gates:
                problems.append(f"quality_limits.{key}: unknown quality gate; known: {', '.join(gates)}")
            elif not _is_number(value):
                problems.append(f"quality_limits.{key}={value!r} must be a number")
            elif problem := _limit_out_of_range(registry, key, value):
                problems.append(problem)
        unknown = [g for g in self.strict_quality_gates if g not in gates]
        if unknown:
            problems.append(f"strict_quality_gates has unknown gates {unknown}; known: {', '.join(gates)}")
        for name in ("max_critical_nan_share", "max_irregular_step_share"):
            value = getattr(self, name)
            if not (_is_number(value) and 0 <= value <= 1):
                problems.append(f"{name}={value!r} must be between 0 and 1")
        if not (_is_number(self.max_gap_steps) and self.max_gap_steps >= 1):
            problems.append(f"max_gap_steps={self.max_gap_steps!r} must be a number >= 1")
        if self.max_rul is not None and not (_is_number(self.max_rul) and self.max_rul > 0):
            problems.append(f"max_rul={self.max_rul!r} must be > 0 (or null)")
        if not (_is_number(self.max_ks_statistic) and 0 < self.max_ks_statistic <= 1):
            problems.append(f"max_ks_statistic={self.max_ks_statistic!r} must be in (0, 1]")
        if not (_is_number(self.max_rul_correlation) and 0 < self.max_rul_correlation <= 1):
            problems.append(f"max_rul_correlation={self.max_rul_correlation!r} must be in (0, 1]")
        if not (isinstance(self.max_split_rows, int) and not isinstance(self.max_split_rows, bool)
                and self.max_split_rows >= 10):
            problems.append(f"max_split_rows={self.max_split_rows!r} must be a whole number >= 10")
        if problems:
            raise SettingsError("invalid gate settings: " + "; ".join(problems))
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The values a gated test metric can take, where known: a limit outside them is one no model can meet (or one
# every model meets), a mistake (1.5 for a recall, 85 for 0.85). Keyed by QualityGate.metric.
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "roc_auc": (0.0, 1.0), "precision": (0.0, 1.0), "recall": (0.0, 1.0), "f1": (0.0, 1.0),
    "false_alarm_rate": (0.0, 1.0),
    "r2": (-math.inf, 1.0),
    "rmse_vs_mean": (0.0, math.inf), "mae_vs_naive": (0.0, math.inf),
    "threshold_expected_exceedances": (0.0, math.inf), "single_row_latency_ms": (0.0, math.inf),
}


def _limit_out_of_range(registry: Any, gate_name: str, value: float) -> str | None:
    gate = next((g for f in registry.all_families() for g in f.quality_gates if g.name == gate_name), None)
    if gate is None or gate.metric not in METRIC_RANGES:
        return None
    low, high = METRIC_RANGES[gate.metric]
    if low <= value <= high:
        return None
    shown = "[" + ", ".join(_bound(b) for b in (low, high)) + "]"
    return (f"quality_limits.{gate_name}={value!r} is outside the range of its metric {gate.metric} {shown} "
            f"(the gate needs {gate.metric} {gate.sign} the limit; default {gate.limit:g})")


def _bound(value: float) -> str:
    return "-inf" if value == -math.inf else "inf" if value == math.inf else f"{value:g}"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------- --set key=value

SETTING_CLASSES: dict[str, type] = {"training": TrainingConfig, "gates": GateSettings}


def setting_help() -> list[tuple[str, str, str]]:
    """(key, default, help) of every setting, for `--set help` and the README."""
    rows = []
    for group, cls in SETTING_CLASSES.items():
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((f.name, json.dumps(_jsonable(default)), f"[{group}] {f.metadata.get('help', '')}"))
    return rows


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _owner(key: str) -> tuple[str, str, str | None]:
    """(group, field, sub-key) of a --set key: "horizon" -> training; "size_budget_mb.anomaly" -> gates."""
    name, _, sub = key.partition(".")
    for group, cls in SETTING_CLASSES.items():
        if name in {f.name for f in fields(cls)}:
            return group, name, sub or None
    known = sorted(f.name for cls in SETTING_CLASSES.values() for f in fields(cls))
    raise SettingsError(f"--set {key}: unknown setting {name!r}; known settings: {', '.join(known)}")


def _parse_scalar(text: str, kind: Any, key: str) -> Any:
    """One value of a --set pair, converted to the field's type; "null"/"none" -> None where allowed."""
    args = [a for a in get_args(kind) if a is not type(None)]
    optional = type(None) in get_args(kind)
    if optional and text.strip().lower() in ("null", "none", ""):
        return None
    base = args[0] if optional and len(args) == 1 else kind
    try:
        if base is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return lowered in ("true", "1", "yes")
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if base is str:
            return text.strip()
    except ValueError:
        raise SettingsError(f"--set {key}={text}: {text!r} is not a {getattr(base, '__name__', base)}") from None
    raise SettingsError(f"--set {key}: cannot parse a value of type {kind}")


def _parse_value(cls: type, name: str, sub: str | None, text: str, key: str) -> Any:
    hints = get_type_hints(cls)
    kind = hints[name]
    origin = get_origin(kind)
    if origin is tuple:
        element = get_args(kind)[0]
        parts = [p.strip() for p in text.split(",") if p.strip()]
        return tuple(_parse_scalar(p, element, key) for p in parts)
    if origin is dict:
        value_type = get_args(kind)[1]
        if sub is None:
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise SettingsError(f"--set {key}={text}: give {name}.<key>=value or a JSON object") from None
            if not isinstance(value, dict):
                raise SettingsError(f"--set {key}={text}: expected a JSON object")
            return value
        parsed = _parse_scalar(text, value_type, key) if value_type is not Any else _guess(text)
        return {sub: parsed}
    if sub is not None:
        raise SettingsError(f"--set {key}: {name!r} has no sub-settings")
    return _parse_scalar(text, kind, key)


def _guess(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_settings(pairs: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`key=value` strings -> {"training": {...}, "gates": {...}} with typed values (validated by `resolve`)."""
    out: dict[str, dict[str, Any]] = {group: {} for group in SETTING_CLASSES}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingsError(f"--set {pair!r}: expected key=value")
        group, name, sub = _owner(key)
        value = _parse_value(SETTING_CLASSES[group], name, sub, text, key)
        if isinstance(value, dict) and sub is not None:
            out[group].setdefault(name, {}).update(value)
        else:
            out[group][name] = value
    return {group: values for group, values in out.items() if values}


def build_training_config(values: Mapping[str, Any] | None = None) -> TrainingConfig:
    """TrainingConfig from plain values (CLI, run config, JSON); raises SettingsError naming every problem."""
    return _build(TrainingConfig, values).validate()


def build_gate_settings(values: Mapping[str, Any] | None = None) -> GateSettings:
    return _build(GateSettings, values).validate()


def _build(cls: type, values: Mapping[str, Any] | None) -> Any:
    values = dict(values or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise SettingsError(f"unknown {cls.__name__} setting(s) {unknown}; known: {', '.join(sorted(names))}")
    hints = get_type_hints(cls)
    for name, value in list(values.items()):
        if get_origin(hints[name]) is tuple and isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)
