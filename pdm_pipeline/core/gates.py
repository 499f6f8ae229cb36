"""Gates: data-quality checks, the Raspberry Pi size gates and the model-quality gates.

Each gate returns a `GateOutcome` with the measured value beside its limit, so a person sees *how far* from the
limit a machine is, not just pass/fail. The same functions serve `pdm-pipeline validate`, the Dagster checks
and the release (core/release.py), so what the UI shows, what validate prints and what blocks cannot disagree.

Severity: ERROR blocks (the data: the whole machine keeps its release; a model gate: that model keeps its
previous version), WARN only tells. `status` is "passed", "failed" or "skipped" (nothing to judge, e.g. a
model that was not trained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core.config import GateSettings
from pdm_pipeline.core.schema import LABEL, RUL, TIMESTAMP, UNIT_ID
from pdm_pipeline.core.timeaxis import short, time_values

ERROR = "ERROR"
WARN = "WARN"
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


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
    skipped: bool = False

    @property
    def blocks(self) -> bool:
        return not self.passed and not self.skipped and self.severity == ERROR

    @property
    def warns(self) -> bool:
        return not self.passed and not self.skipped and self.severity == WARN

    @property
    def status(self) -> str:
        return SKIPPED if self.skipped else PASSED if self.passed else FAILED

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "status": self.status, "severity": self.severity, "description": self.description,
            "value": self.value, "limit": self.limit,
        }

    def line(self) -> str:
        """'pi_size_gate passed: classifier 0.2 MB within 250 MB' (one line for summaries)."""
        word = {PASSED: "passed", SKIPPED: "skipped"}.get(self.status, "BLOCKED" if self.blocks else "warned")
        return f"{self.name} {word}: {self.description}"


def skipped(name: str, severity: str, reason: str, limit: float | str | None = None) -> GateOutcome:
    return GateOutcome(name, True, severity, f"skipped: {reason}", None, limit, skipped=True)


# ---------------------------------------------------------------------------------------------- data quality


def check_critical_sensors_complete(
    splits: dict[str, pd.DataFrame], critical: tuple[str, ...], settings: GateSettings
) -> GateOutcome:
    worst, where = 0.0, ""
    for split, df in splits.items():
        for col in critical:
            if col in df.columns and len(df):
                share = float(df[col].isna().mean())
                if share > worst:
                    worst, where = share, f"{split}.{col}"
    limit = settings.max_critical_nan_share
    ok = worst <= limit
    desc = (
        f"no more than {limit:.1%} missing in critical sensors {list(critical)}"
        if ok
        else f"{worst:.1%} missing in {where} (tolerance {limit:.1%})"
    )
    return GateOutcome("critical_sensors_complete", ok, ERROR, desc, worst, limit, {"worst": where})


def constant_sensors(train: pd.DataFrame, sensors: tuple[str, ...]) -> list[str]:
    return [c for c in sensors if c in train.columns and train[c].nunique(dropna=True) <= 1]


def check_no_constant_sensor(splits: dict[str, pd.DataFrame], sensors: tuple[str, ...]) -> GateOutcome:
    """WARN: a sensor constant on train carries no information; the models leave it out (named here). Every
    sensor constant is an ERROR: there is nothing to learn from at all."""
    constant = constant_sensors(splits["train"], sensors)
    ok = not constant
    severity = ERROR if constant and len(constant) == len(sensors) else WARN
    desc = ("every sensor varies on train" if ok else
            f"constant on train, left out of the models: {', '.join(constant)}" if severity == WARN else
            f"every sensor is constant on train (nothing to learn from): {', '.join(constant)}")
    return GateOutcome("no_constant_sensor", ok, severity, desc, len(constant), 0, {"constant": constant})


def _units(df: pd.DataFrame):
    if UNIT_ID in df.columns:
        return [g for _, g in df.groupby(UNIT_ID, sort=False)]
    return [df]


def check_regular_timestamps(splits: dict[str, pd.DataFrame], time_unit: str, settings: GateSettings) -> GateOutcome:
    if TIMESTAMP not in splits["train"].columns:
        return skipped("timestamps_regular", WARN, "no timestamp column: the data has no time order")
    diffs_all, where_all = [], []
    for split, df in splits.items():
        for unit in _units(df):
            values = time_values(unit, time_unit)
            diffs_all.append(np.diff(values))
            where_all.append((split, unit))
    diffs = np.concatenate(diffs_all) if diffs_all else np.array([])
    bad_order = int((diffs <= 0).sum())
    if bad_order:
        return GateOutcome(
            "timestamps_regular", False, ERROR, f"{bad_order} unsorted or duplicate timestamps within units",
            float(bad_order), 0.0,
        )
    positive = diffs[diffs > 0]
    if not len(positive):
        return skipped("timestamps_regular", WARN, "no unit has two rows")
    step = float(np.median(positive))
    share = float((np.abs(positive - step) > 0.01 * step).mean())
    limit = settings.max_irregular_step_share
    unit = short(time_unit)
    gaps = _long_gaps(diffs_all, where_all, step * settings.max_gap_steps)
    gaps += _long_gaps_between_splits(splits, time_unit, step * settings.max_gap_steps)
    ok = share <= limit and not gaps
    problems = []
    if share > limit:
        problems.append(f"{share:.1%} of steps differ from the median step {step:g} {unit} (tolerance {limit:.0%})")
    if gaps:
        longest, split, unit_name, start = max(gaps, key=lambda gap: gap[0])
        problems.append(
            f"{len(gaps)} gap(s) longer than {settings.max_gap_steps:g} steps ({step * settings.max_gap_steps:g} "
            f"{unit}), the longest {longest:g} {unit} ({longest / step:.0f} steps) "
            f"{'' if split.startswith('between') else 'in '}{split}"
            f"{f' unit {unit_name}' if unit_name is not None else ''} after {start}: feature windows restart after "
            "each; an outage or missing export? (limit: setting max_gap_steps)"
        )
    desc = f"sorted, unique, regular step of {step:g} {unit}" if ok else "; ".join(problems)
    details = {"median_step": step, "time_unit": time_unit, "long_gaps": len(gaps)}
    return GateOutcome("timestamps_regular", ok, WARN, desc, share, limit, details)


def _long_gaps_between_splits(
    splits: dict[str, pd.DataFrame], time_unit: str, longer_than: float
) -> list[tuple[float, str, Any, Any]]:
    """Gaps longer than `longer_than` from a unit's last row in one split to its first in the next (a unit's
    windows run on across the splits): (length, "between a and b", unit id, time before the gap)."""
    def ends(frame: pd.DataFrame, units: bool) -> pd.DataFrame:  # per unit: first and last time, last timestamp
        keys = frame[UNIT_ID].to_numpy() if units else np.zeros(len(frame))
        times = pd.Series(time_values(frame, time_unit), index=frame.index)
        grouped = pd.DataFrame({"t": times, "stamp": frame[TIMESTAMP]}).groupby(keys, sort=False)
        return pd.DataFrame({"first": grouped["t"].first(), "last": grouped["t"].last(),
                             "stamp": grouped["stamp"].last()})

    found = []
    names = [n for n in splits if len(splits[n])]
    for first, second in zip(names, names[1:]):
        units = UNIT_ID in splits[first].columns and UNIT_ID in splits[second].columns
        before, after = ends(splits[first], units), ends(splits[second], units)
        shared = after.index.intersection(before.index)
        gaps = after.loc[shared, "first"] - before.loc[shared, "last"]
        for unit, gap in gaps[gaps > longer_than].items():
            found.append((float(gap), f"between {first} and {second}", unit if units else None,
                          before.loc[unit, "stamp"]))
    return found


def _long_gaps(
    diffs: list[np.ndarray], where: list[tuple[str, pd.DataFrame]], longer_than: float
) -> list[tuple[float, str, Any, Any]]:
    """(length, split, unit id, time before the gap) of every step longer than `longer_than`."""
    found = []
    for steps, (split, frame) in zip(diffs, where):
        for i in np.flatnonzero(steps > longer_than):
            unit_id = frame[UNIT_ID].iloc[i] if UNIT_ID in frame.columns else None
            found.append((float(steps[i]), split, unit_id, frame[TIMESTAMP].iloc[i]))
    return found


def check_rul_range(
    splits: dict[str, pd.DataFrame], rul_parameters: dict[str, Any], time_unit: str, settings: GateSettings
) -> GateOutcome:
    if RUL not in splits["train"].columns:
        return skipped("rul_in_range", WARN, "no rul column")
    hi = settings.max_rul or rul_parameters.get("max_operational") or rul_parameters.get("max_operational_hours")
    rul = pd.concat([df[RUL] for df in splits.values()])
    unit = short(time_unit)
    if hi is None:
        return GateOutcome("rul_in_range", bool((rul >= 0).all()), WARN,
                           f"rul >= 0 (max {rul.max():g} {unit}; no upper limit set)", float(rul.max()), None)
    hi = float(hi)
    outside = float(((rul < 0) | (rul > hi)).mean())
    ok = outside == 0.0
    desc = (
        f"rul within 0-{hi:g} {unit} (max {rul.max():g} {unit})"
        if ok
        else f"{outside:.1%} of rul values outside 0-{hi:g} {unit} (min {rul.min():g}, max {rul.max():g})"
    )
    return GateOutcome("rul_in_range", ok, WARN, desc, float(rul.max()), hi, {"share_outside": outside})


def check_label_balance(labels: dict[str, pd.Series], band: tuple[float, float], defective: str | None = None) -> GateOutcome:
    """Train positive rate within the band (WARN). A label that is constant on train, or a split with a single
    class, is an ERROR of the classifier: that model cannot be trained or evaluated and keeps its previous
    version (the other models do not need the label to be balanced)."""
    lo, hi = band
    if defective:
        return GateOutcome("label_balance", False, ERROR, defective, None, f"{lo:.0%}-{hi:.0%}")
    single = [s for s, y in labels.items() if pd.Series(y).nunique() < 2]
    rates = {s: float(pd.Series(y).mean()) for s, y in labels.items() if len(y)}
    train_rate = rates.get("train", float("nan"))
    if single:
        return GateOutcome(
            "label_balance", False, ERROR,
            f"{LABEL} has a single class in {single}: the classifier cannot be trained or evaluated",
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
    splits: dict[str, pd.DataFrame], sensors: tuple[str, ...], settings: GateSettings
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
    limit = settings.max_ks_statistic
    shifted = sorted(c for c, v in stats.items() if v > limit)
    ok = not shifted
    desc = (
        f"largest train-vs-test KS statistic {value:.2f} ({worst})"
        if ok
        else f"shifted between train and test: {', '.join(f'{c} (KS {stats[c]:.2f})' for c in shifted)}"
    )
    return GateOutcome("distribution_shift", ok, WARN, desc, value, limit, {"ks": stats})


# Rows of train the rank correlation with rul is measured on (a fixed-seed sample beyond it).
RUL_CORRELATION_ROWS = 50_000


def rank_correlations(values: pd.DataFrame, target: pd.Series, min_rows: int = 3) -> dict[str, float]:
    """|Spearman correlation| of each column with `target` over the rows where both are known (NaN with fewer than
    `min_rows` such rows or a constant side)."""
    target = pd.Series(np.asarray(target, dtype=float), index=values.index)
    out = {}
    for column in values.columns:
        x = values[column].astype(float)
        keep = x.notna() & target.notna()
        r = x[keep].rank().corr(target[keep].rank()) if keep.sum() >= min_rows else math.nan
        out[column] = abs(float(r)) if math.isfinite(r) else math.nan
    return out


def check_rul_proxy(splits: dict[str, pd.DataFrame], sensors: tuple[str, ...], settings: GateSettings) -> GateOutcome:
    """WARN: a sensor whose rank correlation with rul on train is all but perfect (past 0.999 by default: a
    measurement has noise, a counter has none) is likely a counter of age or of remaining life (operating hours,
    cycles left) rather than a measurement of the machine's state: a model reading it reads the target, and its
    test metrics say little about predicting failures from sensors."""
    train = splits["train"]
    if RUL not in train.columns:
        return skipped("no_rul_proxy_sensor", WARN, "no rul column")
    rows = train[[RUL, *[c for c in sensors if c in train.columns]]].dropna(subset=[RUL])
    if len(rows) > RUL_CORRELATION_ROWS:
        rows = rows.sample(RUL_CORRELATION_ROWS, random_state=0)
    if rows[RUL].nunique() < 3:
        return skipped("no_rul_proxy_sensor", WARN, "rul takes fewer than 3 values on train")
    correlation = rank_correlations(rows.drop(columns=[RUL]), rows[RUL])
    correlation = {c: v for c, v in correlation.items() if math.isfinite(v)}
    limit = settings.max_rul_correlation
    proxies = sorted((c for c, v in correlation.items() if v > limit), key=lambda c: -correlation[c])
    worst = max(correlation, key=correlation.__getitem__) if correlation else None
    value = correlation[worst] if worst else 0.0
    desc = (f"largest |rank correlation| of a sensor with rul on train {value:.3f} ({worst})" if not proxies else
            "tracks rul on train all but exactly, like a counter of age or remaining life (the models read it as "
            f"an input; leave it out with the importer's --drop-columns if it is one): "
            f"{', '.join(f'{c} (|rho| {correlation[c]:.4f})' for c in proxies)}")
    return GateOutcome("no_rul_proxy_sensor", not proxies, WARN, desc, value, limit, {"rank_correlation": correlation})


DATA_CHECKS: dict[str, str] = {
    "critical_sensors_complete": "No missing values in critical sensors beyond the tolerance (ERROR)",
    "no_constant_sensor": "Sensors constant on train are named and left out of the models (WARN; ERROR when all are)",
    "timestamps_regular": "Timestamps sorted and unique per unit with a regular step and no long gap (WARN otherwise)",
    "rul_in_range": "rul within the expected range (WARN outside)",
    "distribution_shift": "Per-sensor train-vs-test Kolmogorov-Smirnov statistic under the limit (WARN past it)",
    "no_rul_proxy_sensor": "No sensor tracks rul on train (|Spearman| past the limit: a counter of age or remaining "
                           "life, WARN)",
}


def data_quality(data: Any, settings: GateSettings) -> list[GateOutcome]:
    """Every data-quality gate of a loaded machine (contract.MachineData), in DATA_CHECKS order; judged once per
    machine data and gate settings (kept in `data.quality`, which a stored dataset carries)."""
    import json

    key = json.dumps(settings.as_dict(), sort_keys=True, default=str)
    memo = getattr(data, "quality", None)  # (a dataset stored before the field existed has none)
    if isinstance(memo, dict) and key in memo:
        return list(memo[key])
    critical = tuple(data.metadata.critical_sensors or data.sensors)
    unit = data.metadata.time_unit
    outcomes = [
        check_critical_sensors_complete(data.splits, critical, settings),
        check_no_constant_sensor(data.splits, data.sensors),
        check_regular_timestamps(data.splits, unit, settings) if data.metadata.time_order
        else skipped("timestamps_regular", WARN, "the data has no time order"),
        check_rul_range(data.splits, data.metadata.rul_parameters, unit, settings),
        check_distribution_shift(data.splits, data.sensors, settings),
        check_rul_proxy(data.splits, data.sensors, settings),
    ]
    if isinstance(memo, dict):
        memo[key] = outcomes
    return list(outcomes)


# ---------------------------------------------------------------------------------------------- Pi size


def check_model_size(model_type: str, size_mb: float | None, budget_mb: float, skipped_reason: str | None = None) -> GateOutcome:
    name = "pi_size_gate"
    if skipped_reason:
        return skipped(name, ERROR, skipped_reason, budget_mb)
    ok = size_mb is not None and size_mb <= budget_mb
    desc = f"{model_type} model {size_mb:.2f} MB {'within' if ok else 'OVER'} the Pi budget of {budget_mb:g} MB"
    return GateOutcome(name, ok, ERROR, desc, size_mb, budget_mb)


def check_total_size(sizes_mb: dict[str, float], budget_mb: float) -> GateOutcome:
    total = float(sum(sizes_mb.values()))
    ok = total <= budget_mb
    parts = ", ".join(f"{k} {v:.2f}" for k, v in sizes_mb.items())
    desc = f"all models of the release {total:.2f} MB ({parts}) {'within' if ok else 'OVER'} {budget_mb:g} MB"
    return GateOutcome("pi_total_size_gate", ok, ERROR, desc, total, budget_mb, {"sizes_mb": sizes_mb})


def check_bundle_size(size_mb: float, budget_mb: float) -> GateOutcome:
    """The edge bundle (every file) within its Raspberry Pi budget (blocking)."""
    ok = size_mb <= budget_mb
    desc = f"edge bundle {size_mb:.2f} MB {'within' if ok else 'OVER'} {budget_mb:g} MB"
    return GateOutcome("bundle_size_gate", ok, ERROR, desc, size_mb, budget_mb)


# ---------------------------------------------------------------------------------------------- quality


def quality_gates(model_type: str, metrics: dict[str, float], settings: GateSettings) -> list[GateOutcome]:
    """The quality gates of one family on its test metrics (WARN unless named in strict_quality_gates)."""
    from pdm_pipeline import families

    out = []
    for gate in families.get(model_type).quality_gates:
        limit = settings.quality_limit(gate.name, gate.limit)
        severity = ERROR if gate.name in settings.strict_quality_gates else WARN
        value = metrics.get(gate.metric)
        if value is None or not np.isfinite(value):
            out.append(GateOutcome(gate.name, False, severity, f"{gate.metric} was not measured", None, limit))
            continue
        ok = gate.passes(float(value), limit)
        out.append(GateOutcome(
            gate.name, bool(ok), severity, f"{gate.metric} {value:.4g} (needs {gate.sign} {limit:g})", float(value), limit
        ))
    return out


def skipped_quality_gates(model_type: str, reason: str, settings: GateSettings) -> list[GateOutcome]:
    from pdm_pipeline import families

    return [
        skipped(g.name, ERROR if g.name in settings.strict_quality_gates else WARN, reason,
                settings.quality_limit(g.name, g.limit))
        for g in families.get(model_type).quality_gates
    ]
