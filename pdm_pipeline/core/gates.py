"""Gates: data-quality checks, the Raspberry Pi model-size gate and the model-quality gates.

Each gate returns a `GateOutcome` with the measured value beside its limit, so a person sees *how far* from
the limit a machine is, not just pass/fail. The Dagster layer turns outcomes into asset-check results; the
release step uses the same functions, so what the UI shows and what blocks publication cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core.schema import (
    ANOMALY,
    CLASSIFICATION,
    LABEL,
    REGRESSION,
    RUL,
    TIMESERIES,
    TIMESTAMP,
    UNIT_ID,
)

ERROR = "ERROR"
WARN = "WARN"


@dataclass
class GateOutcome:
    name: str
    passed: bool
    # Severity when the gate fails: ERROR blocks what comes after it, WARN only tells.
    severity: str
    description: str
    value: float | None = None
    limit: float | str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> bool:
        return not self.passed and self.severity == ERROR


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class DataQualityLimits:
    # Largest share of missing values tolerated in a critical sensor (per split).
    max_critical_nan_share: float = 0.0
    # Share of time steps allowed to differ from the median step before the step is called irregular.
    max_irregular_step_share: float = 0.05
    # Default sensible RUL range in hours when the metadata gives no max_operational_hours.
    default_max_rul_hours: float = 500.0
    positive_rate_band: tuple[float, float] = (0.10, 0.20)
    # Two-sample Kolmogorov-Smirnov statistic train vs test above which a sensor is said to have shifted.
    max_ks_statistic: float = 0.30


# Pi size budgets in MB, from the original design.
DEFAULT_SIZE_BUDGET_MB: dict[str, float] = {
    CLASSIFICATION: 250.0,
    REGRESSION: 250.0,
    ANOMALY: 50.0,
    TIMESERIES: 100.0,
}
DEFAULT_TOTAL_BUDGET_MB = 500.0
# The edge bundle holds the four models plus small JSON files: the same budget as the models together.
DEFAULT_BUNDLE_BUDGET_MB = DEFAULT_TOTAL_BUDGET_MB


@dataclass(frozen=True)
class QualityGateLimits:
    classifier_min_roc_auc: float = 0.90
    classifier_min_precision: float = 0.85
    classifier_min_recall: float = 0.85
    anomaly_max_false_alarm_rate: float = 0.05
    max_single_row_latency_ms: float = 50.0
    # Gate names (e.g. "classifier_roc_auc") that block publication when they fail; the rest only warn.
    strict: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------- data quality


def _sensor_frame(splits: dict[str, pd.DataFrame], sensors: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    return {s: df[[c for c in sensors if c in df.columns]] for s, df in splits.items()}


def check_critical_sensors_complete(
    splits: dict[str, pd.DataFrame], critical: tuple[str, ...], limits: DataQualityLimits
) -> GateOutcome:
    worst, where = 0.0, ""
    for split, df in _sensor_frame(splits, critical).items():
        for col in df.columns:
            share = float(df[col].isna().mean()) if len(df) else 0.0
            if share > worst:
                worst, where = share, f"{split}.{col}"
    ok = worst <= limits.max_critical_nan_share
    desc = (
        f"no missing values in critical sensors {list(critical)}"
        if ok
        else f"{worst:.1%} missing in {where} (tolerance {limits.max_critical_nan_share:.1%})"
    )
    return GateOutcome("critical_sensors_complete", ok, ERROR, desc, worst, limits.max_critical_nan_share, {"worst": where})


def check_no_constant_sensor(splits: dict[str, pd.DataFrame], sensors: tuple[str, ...]) -> GateOutcome:
    train = splits["train"]
    constant = [c for c in sensors if c in train.columns and train[c].nunique(dropna=True) <= 1]
    ok = not constant
    desc = "every sensor varies on train" if ok else f"constant sensors on train: {constant}"
    return GateOutcome("no_constant_sensor", ok, ERROR, desc, float(len(constant)), 0.0, {"constant": constant})


def _units(df: pd.DataFrame):
    if UNIT_ID in df.columns:
        return df.groupby(UNIT_ID, sort=False)
    return [("all", df)]


def check_regular_timestamps(splits: dict[str, pd.DataFrame], limits: DataQualityLimits) -> GateOutcome:
    if TIMESTAMP not in splits["train"].columns:
        return GateOutcome("timestamps_regular", True, WARN, "no timestamp column: data has no time order", None, None)
    bad_order, irregular, total = 0, 0, 0
    step = None
    diffs_all = []
    for df in splits.values():
        for _, unit in _units(df):
            d = unit[TIMESTAMP].diff().dropna().dt.total_seconds().to_numpy()
            bad_order += int((d <= 0).sum())
            diffs_all.append(d[d > 0])
    diffs = np.concatenate(diffs_all) if diffs_all else np.array([])
    if len(diffs):
        step = float(np.median(diffs))
        irregular = int((np.abs(diffs - step) > 0.01 * step).sum())
        total = len(diffs)
    share = irregular / total if total else 0.0
    if bad_order:
        return GateOutcome(
            "timestamps_regular", False, ERROR, f"{bad_order} unsorted or duplicate timestamps within units", float(bad_order), 0.0
        )
    ok = share <= limits.max_irregular_step_share
    desc = (
        f"sorted, unique, regular step of {step:.0f} s" if ok and step else
        f"{share:.1%} of steps differ from the median step {step:.0f} s (tolerance {limits.max_irregular_step_share:.0%})"
    )
    return GateOutcome("timestamps_regular", ok, WARN, desc, share, limits.max_irregular_step_share, {"median_step_s": step})


def check_splits_disjoint(splits: dict[str, pd.DataFrame]) -> GateOutcome:
    problems: list[str] = []
    if UNIT_ID in splits["train"].columns:
        units = {s: set(df[UNIT_ID].astype(str).unique()) for s, df in splits.items()}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = units[a] & units[b]
            if shared:
                problems.append(f"{len(shared)} lifecycle(s) in both {a} and {b}")
    if TIMESTAMP in splits["train"].columns:
        spans = {s: (df[TIMESTAMP].min(), df[TIMESTAMP].max()) for s, df in splits.items() if len(df)}
        for a, b in (("train", "val"), ("val", "test"), ("train", "test")):
            if a in spans and b in spans and spans[a][1] >= spans[b][0]:
                problems.append(f"{a} ends {spans[a][1]} after {b} starts {spans[b][0]}")
    ok = not problems
    desc = "splits are disjoint in lifecycle and ordered in time" if ok else "; ".join(problems)
    return GateOutcome("splits_disjoint", ok, WARN, desc, float(len(problems)), 0.0, {"overlaps": problems})


def check_rul_range(
    splits: dict[str, pd.DataFrame], rul_parameters: dict[str, Any], limits: DataQualityLimits
) -> GateOutcome:
    if RUL not in splits["train"].columns:
        return GateOutcome("rul_in_range", True, WARN, "no rul column", None, None)
    hi = float(rul_parameters.get("max_operational_hours") or limits.default_max_rul_hours)
    rul = pd.concat([df[RUL] for df in splits.values()])
    outside = float(((rul < 0) | (rul > hi)).mean())
    ok = outside == 0.0
    desc = (
        f"rul within 0-{hi:g} h (max {rul.max():.1f} h)"
        if ok
        else f"{outside:.1%} of rul values outside 0-{hi:g} h (min {rul.min():.1f}, max {rul.max():.1f})"
    )
    return GateOutcome("rul_in_range", ok, WARN, desc, float(rul.max()), hi, {"share_outside": outside})


def check_label_balance(labels: dict[str, pd.Series], limits: DataQualityLimits) -> GateOutcome:
    single = [s for s, y in labels.items() if pd.Series(y).nunique() < 2]
    rates = {s: float(pd.Series(y).mean()) for s, y in labels.items() if len(y)}
    lo, hi = limits.positive_rate_band
    train_rate = rates.get("train", float("nan"))
    if single:
        return GateOutcome(
            "label_balance", False, ERROR,
            f"{LABEL} has a single class in {single}: a classifier cannot be trained or evaluated",
            train_rate, f"{lo:.0%}-{hi:.0%}", {"positive_rate": rates},
        )
    ok = lo <= train_rate <= hi
    desc = (
        f"train positive rate {train_rate:.1%} within {lo:.0%}-{hi:.0%}"
        if ok
        else f"train positive rate {train_rate:.1%} outside {lo:.0%}-{hi:.0%}"
    )
    return GateOutcome("label_balance", ok, WARN, desc, train_rate, f"{lo:.0%}-{hi:.0%}", {"positive_rate": rates})


def check_distribution_shift(
    splits: dict[str, pd.DataFrame], sensors: tuple[str, ...], limits: DataQualityLimits
) -> GateOutcome:
    from scipy.stats import ks_2samp

    stats: dict[str, float] = {}
    train, test = splits["train"], splits["test"]
    for c in sensors:
        a, b = train[c].dropna().to_numpy(), test[c].dropna().to_numpy()
        if len(a) and len(b):
            stats[c] = float(ks_2samp(a, b).statistic)
    worst = max(stats, key=stats.get) if stats else None
    value = stats[worst] if worst else 0.0
    shifted = sorted(c for c, v in stats.items() if v > limits.max_ks_statistic)
    ok = not shifted
    desc = (
        f"largest train-vs-test KS statistic {value:.2f} ({worst})"
        if ok
        else f"shifted between train and test: {', '.join(f'{c} (KS {stats[c]:.2f})' for c in shifted)}"
    )
    return GateOutcome("distribution_shift", ok, WARN, desc, value, limits.max_ks_statistic, {"ks": stats})


# ---------------------------------------------------------------------------------------------- Pi size


def check_model_size(model_type: str, size_mb: float | None, budget_mb: float, skipped_reason: str | None = None) -> GateOutcome:
    name = "pi_size_gate"
    if skipped_reason:
        return GateOutcome(name, True, ERROR, f"skipped: {skipped_reason}", 0.0, budget_mb)
    ok = size_mb is not None and size_mb <= budget_mb
    desc = f"{model_type} model {size_mb:.2f} MB {'within' if ok else 'OVER'} the Pi budget of {budget_mb:g} MB"
    return GateOutcome(name, ok, ERROR, desc, size_mb, budget_mb)


def check_total_size(sizes_mb: dict[str, float], budget_mb: float) -> GateOutcome:
    total = float(sum(sizes_mb.values()))
    ok = total <= budget_mb
    parts = ", ".join(f"{k} {v:.2f}" for k, v in sizes_mb.items())
    desc = f"all models together {total:.2f} MB ({parts}) {'within' if ok else 'OVER'} {budget_mb:g} MB"
    return GateOutcome("pi_total_size_gate", ok, ERROR, desc, total, budget_mb, {"sizes_mb": sizes_mb})


def check_bundle_size(size_mb: float, budget_mb: float) -> GateOutcome:
    """The edge bundle (every file, manifest excluded) within its Raspberry Pi budget (blocking)."""
    ok = size_mb <= budget_mb
    desc = f"edge bundle {size_mb:.2f} MB {'within' if ok else 'OVER'} {budget_mb:g} MB"
    return GateOutcome("bundle_size_gate", ok, ERROR, desc, size_mb, budget_mb)


# ---------------------------------------------------------------------------------------------- quality


def quality_gates(model_type: str, metrics: dict[str, float], limits: QualityGateLimits) -> list[GateOutcome]:
    """The quality gates that apply to one model type's test metrics (WARN unless named in limits.strict)."""
    specs: list[tuple[str, str, float, str]] = []  # (gate name, metric, limit, "min"|"max")
    if model_type == CLASSIFICATION:
        specs += [
            ("classifier_roc_auc", "roc_auc", limits.classifier_min_roc_auc, "min"),
            ("classifier_precision", "precision", limits.classifier_min_precision, "min"),
            ("classifier_recall", "recall", limits.classifier_min_recall, "min"),
        ]
    if model_type == ANOMALY:
        specs.append(("anomaly_false_alarm_rate", "false_alarm_rate", limits.anomaly_max_false_alarm_rate, "max"))
    if model_type in (CLASSIFICATION, REGRESSION, ANOMALY):
        specs.append((f"{model_type}_single_row_latency", "single_row_latency_ms", limits.max_single_row_latency_ms, "max"))
    out = []
    for gate, metric, limit, kind in specs:
        severity = ERROR if gate in limits.strict else WARN
        value = metrics.get(metric)
        if value is None or not np.isfinite(value):
            out.append(GateOutcome(gate, False, severity, f"{metric} was not measured", None, limit))
            continue
        ok = value >= limit if kind == "min" else value <= limit
        sign = ">=" if kind == "min" else "<="
        out.append(GateOutcome(gate, bool(ok), severity, f"{metric} {value:.4g} (needs {sign} {limit:g})", float(value), limit))
    return out


def all_gate_names() -> tuple[str, ...]:
    return (
        "classifier_roc_auc",
        "classifier_precision",
        "classifier_recall",
        "anomaly_false_alarm_rate",
        f"{CLASSIFICATION}_single_row_latency",
        f"{REGRESSION}_single_row_latency",
        f"{ANOMALY}_single_row_latency",
    )


def validate_strict(names: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in all_gate_names()]
    if unknown:
        raise ValueError(f"unknown strict quality gates {unknown}; known: {', '.join(all_gate_names())}")

