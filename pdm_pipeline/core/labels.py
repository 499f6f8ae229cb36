"""The failure label: `failure_status` = 1 when the machine fails within the next H hours.

One definition is fitted on the train split and applied unchanged to every split, so validation and test
labels come from the train-fitted horizon and nothing is learned from val or test.

Three ways to define the label, tried in this order:

- "given": the train frame already carries `failure_status` (set by an importer, e.g. AI4I 2020). It is kept
  as is on every split; there is no horizon.
- "rul": the data has a remaining-useful-life column (hours); label = rul <= H.
- "alarm": no RUL, but alarm levels are known for critical sensors (from the machine profile); label = some
  critical sensor reaches its alarm level (>= level for direction "high", <= for "low") at a row of the same
  unit whose timestamp lies in [t, t + H] (the current row included). Rows near the end of a unit, whose
  window reaches past the unit's last row, are labelled from the rows that exist: 0 unless a crossing is seen.

When H is not configured it is chosen on train only: the train positive rate is aimed at the middle of the
target band, H is rounded to a 0.5 h grid, and when the band cannot be reached (too few distinct values) the
closest reachable rate is used and recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core.features import timestamp_seconds, unit_codes
from pdm_pipeline.core.schema import LABEL, RUL, TIMESTAMP

METHOD_GIVEN = "given"
METHOD_RUL = "rul"
METHOD_ALARM = "alarm"
METHODS: tuple[str, ...] = (METHOD_GIVEN, METHOD_RUL, METHOD_ALARM)

SOURCE_CONFIG = "config"
SOURCE_GIVEN = "given label"
# Resolution of a horizon chosen on train, in hours.
HORIZON_RESOLUTION_HOURS = 0.5
ALARM_DIRECTIONS: tuple[str, ...] = ("high", "low")


class LabelUnavailable(Exception):
    """No failure label can be defined for this data; the message is the user-facing skip reason."""


class ConstantLabel(LabelUnavailable):
    """The data defines a label, but it is constant on train: a data defect that must block training."""


@dataclass(frozen=True)
class LabelDefinition:
    """How `failure_status` is computed from a frame; fitted on train, applied to every split."""

    method: str
    horizon_hours: float | None
    horizon_source: str
    train_positive_rate: float
    # For method "alarm": {sensor: {"level": x, "direction": "high" | "low"}}; empty otherwise.
    alarm_levels: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the inverse of `from_dict`)."""
        return {
            "method": self.method,
            "horizon_hours": self.horizon_hours,
            "horizon_source": self.horizon_source,
            "train_positive_rate": self.train_positive_rate,
            "alarm_levels": {s: dict(v) for s, v in self.alarm_levels.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelDefinition:
        """Rebuild a definition from `to_dict` output; raises ValueError naming a missing or bad field."""
        missing = [k for k in ("method", "horizon_hours", "horizon_source", "train_positive_rate") if k not in d]
        if missing:
            raise ValueError(f"label definition is missing field(s) {missing}")
        if d["method"] not in METHODS:
            raise ValueError(f"label definition has unknown method {d['method']!r}; expected one of {METHODS}")
        horizon = d["horizon_hours"]
        return cls(
            method=d["method"],
            horizon_hours=None if horizon is None else float(horizon),
            horizon_source=str(d["horizon_source"]),
            train_positive_rate=float(d["train_positive_rate"]),
            alarm_levels=_validated_alarm_levels(d.get("alarm_levels") or {}, where="label definition"),
        )


def fit_label_definition(
    train: pd.DataFrame,
    *,
    horizon_hours: float | None,
    target_positive_rate: tuple[float, float] = (0.10, 0.20),
    alarm_levels: dict[str, dict] | None = None,
    where: str = "",
) -> LabelDefinition:
    """Fit the label definition on the train split only.

    `horizon_hours` None means "choose H on train for `target_positive_rate`". `alarm_levels` maps critical
    sensors to {"level": x, "direction": "high" | "low"} and is used only when there is no given label and no
    RUL. `where` (e.g. "machine pump_01, train split") is put in error messages.
    Raises LabelUnavailable when no label can be defined or the train label would be constant.
    """
    lo, hi = target_positive_rate
    if not (0 < lo < hi < 1):
        raise ValueError(f"target_positive_rate={target_positive_rate!r} must be (low, high) with 0 < low < high < 1")
    if horizon_hours is not None and not (math.isfinite(horizon_hours) and horizon_hours > 0):
        raise ValueError(f"horizon_hours={horizon_hours!r} must be a finite number > 0 (or None to choose it on train)")

    if LABEL in train.columns:
        labels = _given_labels(train, where)
        definition = LabelDefinition(METHOD_GIVEN, None, SOURCE_GIVEN, float(labels.mean()))
    elif RUL in train.columns:
        definition = _fit_on_hours(
            METHOD_RUL, _rul_hours(train, where), horizon_hours, (lo, hi), alarm_levels={}
        )
    elif alarm_levels:
        levels = _validated_alarm_levels(alarm_levels, where=_join(where, "alarm levels"))
        if TIMESTAMP not in train.columns:
            raise LabelUnavailable(
                _prefix(where) + f"RUL column {RUL!r} not found in data and the data has no {TIMESTAMP!r} column, "
                "which alarm-based labels need (alarm crossings are looked up H hours ahead): "
                "cannot define failure_status"
            )
        hours = _hours_to_next_alarm(train, levels, where)
        if not np.isfinite(hours).any():
            raise LabelUnavailable(
                _prefix(where) + "no critical sensor reaches its alarm level anywhere in the train split "
                f"({', '.join(sorted(levels))}): cannot define failure_status"
            )
        definition = _fit_on_hours(METHOD_ALARM, hours, horizon_hours, (lo, hi), alarm_levels=levels)
    else:
        raise LabelUnavailable(
            _prefix(where) + f"RUL column {RUL!r} not found in data and no profile alarm levels for critical "
            "sensors: cannot define failure_status (add a rul column, an importer-given failure_status, or "
            "alarm levels for the critical sensors to the machine profile)"
        )

    if definition.train_positive_rate in (0.0, 1.0):
        value = int(definition.train_positive_rate)
        raise ConstantLabel(
            _prefix(where) + f"failure_status would be {value} on every train row "
            f"(method {definition.method!r}, horizon {definition.horizon_hours} h): cannot train a classifier"
        )
    return definition


def apply_labels(df: pd.DataFrame, definition: LabelDefinition, *, where: str = "") -> pd.Series:
    """`failure_status` (int8 0/1, same index as `df`) from the definition and this frame alone (no refitting)."""
    if definition.method == METHOD_GIVEN:
        values = _given_labels(df, where).to_numpy()
    else:
        if definition.horizon_hours is None:
            raise ValueError(f"label definition with method {definition.method!r} has no horizon_hours")
        if definition.method == METHOD_RUL:
            if RUL not in df.columns:
                raise ValueError(
                    _prefix(where) + f"column {RUL!r} is missing, but the label definition computes "
                    "failure_status from it"
                )
            hours = _rul_hours(df, where)
        elif definition.method == METHOD_ALARM:
            hours = _hours_to_next_alarm(df, definition.alarm_levels, where)
        else:
            raise ValueError(f"label definition has unknown method {definition.method!r}; expected one of {METHODS}")
        values = hours <= definition.horizon_hours
    return pd.Series(np.asarray(values, dtype=np.int8), index=df.index, name=LABEL)


def _fit_on_hours(
    method: str,
    hours: np.ndarray,
    horizon_hours: float | None,
    band: tuple[float, float],
    alarm_levels: dict[str, dict],
) -> LabelDefinition:
    """Definition whose label is `hours <= H`, with H from the config or chosen on these (train) hours."""
    if horizon_hours is not None:
        horizon, source = float(horizon_hours), SOURCE_CONFIG
    else:
        horizon, in_band = choose_horizon(hours, band)
        source = f"chosen on train for target band [{band[0]:g}, {band[1]:g}]"
        if not in_band:
            source += "; band not reachable on train, closest positive rate used"
    rate = float(np.mean(hours <= horizon))
    return LabelDefinition(method, horizon, source, rate, alarm_levels)


def choose_horizon(hours: np.ndarray, band: tuple[float, float]) -> tuple[float, bool]:
    """The horizon H whose rate mean(hours <= H) is nearest the band's middle; returns (H, rate within band).

    `hours` may contain +inf (never positive). H on the 0.5 h grid around the middle quantile is preferred
    when its rate lies in the band; otherwise every distinct finite value is a candidate and the one whose rate
    is in the band (else closest to it) and nearest the middle wins.
    """
    lo, hi = band
    middle = (lo + hi) / 2
    ordered = np.sort(np.asarray(hours, dtype=float))
    finite = ordered[np.isfinite(ordered)]
    if finite.size == 0:
        raise ValueError("cannot choose a horizon: no finite hours to failure")

    def rates(candidates: np.ndarray) -> np.ndarray:
        return np.searchsorted(ordered, candidates, side="right") / ordered.size

    quantile = float(np.quantile(finite, min(1.0, middle * ordered.size / finite.size)))
    step = HORIZON_RESOLUTION_HOURS
    grid = np.array([math.floor(quantile / step) * step, math.ceil(quantile / step) * step])
    grid = grid[grid >= 0]
    grid_rates = rates(grid)
    in_band = (grid_rates >= lo) & (grid_rates <= hi)
    if in_band.any():
        best = np.argmin(np.where(in_band, np.abs(grid_rates - middle), np.inf))
        return float(grid[best]), True

    exact = np.unique(finite)
    exact_rates = rates(exact)
    distance_to_band = np.maximum(lo - exact_rates, 0) + np.maximum(exact_rates - hi, 0)
    best = np.lexsort((np.abs(exact_rates - middle), distance_to_band))[0]
    return float(exact[best]), bool(distance_to_band[best] == 0)


def _given_labels(df: pd.DataFrame, where: str) -> pd.Series:
    """The importer-given `failure_status`, checked to be 0/1 without gaps."""
    if LABEL not in df.columns:
        raise ValueError(
            _prefix(where) + f"column {LABEL!r} is missing, but the label definition says it is given by the importer"
        )
    labels = pd.to_numeric(df[LABEL], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        examples = df.loc[bad, LABEL].head(3).tolist()
        raise ValueError(
            _prefix(where) + f"column {LABEL!r} must hold only 0 and 1; {int(bad.sum())} row(s) do not, e.g. {examples}"
        )
    return labels.astype(np.int8)


def _rul_hours(df: pd.DataFrame, where: str) -> np.ndarray:
    """The `rul` column as finite float hours."""
    rul = pd.to_numeric(df[RUL], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(rul)
    if bad.any():
        raise ValueError(
            _prefix(where) + f"column {RUL!r} has {int(bad.sum())} missing, non-numeric or infinite value(s); "
            "every row needs a remaining useful life in hours"
        )
    return rul


def _hours_to_next_alarm(df: pd.DataFrame, alarm_levels: dict[str, dict], where: str) -> np.ndarray:
    """Per row: hours from its timestamp to the first alarm crossing at or after it in the same unit (inf if none)."""
    if TIMESTAMP not in df.columns:
        raise ValueError(_prefix(where) + f"column {TIMESTAMP!r} is missing; alarm-based labels need time order")
    missing = [s for s in alarm_levels if s not in df.columns]
    if missing:
        raise ValueError(_prefix(where) + f"critical sensor column(s) {missing} with alarm levels are missing")
    seconds = timestamp_seconds(df, where)
    crossing = np.zeros(len(df), dtype=bool)
    for sensor, spec in alarm_levels.items():
        values = pd.to_numeric(df[sensor], errors="coerce").to_numpy(dtype=float)
        if spec["direction"] == "high":
            crossing |= values >= spec["level"]
        else:
            crossing |= values <= spec["level"]
    units = unit_codes(df)
    # Time order within each unit, then the next crossing time = backward fill of crossing times per unit.
    order = np.lexsort((seconds, units))
    next_crossing = (
        pd.Series(np.where(crossing[order], seconds[order], np.nan))
        .groupby(units[order], sort=False)
        .bfill()
        .to_numpy()
    )
    hours = np.empty(len(df), dtype=float)
    hours[order] = (next_crossing - seconds[order]) / 3600.0
    return np.where(np.isnan(hours), np.inf, hours)


def _validated_alarm_levels(alarm_levels: dict[str, Any], where: str) -> dict[str, dict]:
    """Alarm levels normalised to {sensor: {"level": float, "direction": "high" | "low"}}."""
    out: dict[str, dict] = {}
    for sensor, spec in alarm_levels.items():
        if not isinstance(spec, dict) or "level" not in spec or "direction" not in spec:
            raise ValueError(
                f"{where}: sensor {sensor!r} needs {{'level': x, 'direction': 'high'|'low'}}, got {spec!r}"
            )
        try:
            level = float(spec["level"])
        except (TypeError, ValueError):
            level = math.nan
        if not math.isfinite(level):
            raise ValueError(
                f"{where}: sensor {sensor!r} has alarm level {spec['level']!r}; it must be a finite number"
            )
        if spec["direction"] not in ALARM_DIRECTIONS:
            raise ValueError(
                f"{where}: sensor {sensor!r} has direction {spec['direction']!r}; expected one of {ALARM_DIRECTIONS}"
            )
        out[str(sensor)] = {"level": level, "direction": spec["direction"]}
    return out


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def _join(where: str, what: str) -> str:
    return f"{where}, {what}" if where else what
