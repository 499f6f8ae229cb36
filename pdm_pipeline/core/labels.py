"""The failure label: `failure_status` = 1 when the machine fails within the next H (in the data's time unit).

One definition is fitted on the train split and applied unchanged to every split, so validation and test
labels come from the train-fitted horizon and nothing is learned from val or test.

Three ways to define the label, tried in this order:

- "given": the train frame already carries `failure_status` (set by an importer, e.g. AI4I 2020). It is kept
  as is on every split; there is no horizon.
- "rul": the data has a remaining-useful-life column (in the data's time unit); label = rul <= H.
- "alarm": no RUL, but alarm levels are known for critical sensors (from the machine profile); label = some
  critical sensor reaches its alarm level (>= level for direction "high", <= for "low") at a row of the same
  unit whose time lies in [t, t + H] (the current row included). Rows near the end of a unit, whose
  window reaches past the unit's last row, are labelled from the rows that exist: 0 unless a crossing is seen.

When H is not configured it is chosen on train only: the train positive rate is aimed at the middle of the
target band, H is rounded to a grid of half a time unit (one cycle or step for index axes), and when the band
cannot be reached (too few distinct values) the closest reachable rate is used and recorded. H is stored with
its unit (`time_unit`), and every message names it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core.schema import LABEL, RUL, TIMESTAMP
from pdm_pipeline.core.timeaxis import DEFAULT_TIME_UNIT, INDEX_UNITS, short, time_values, unit_codes

METHOD_GIVEN = "given"
METHOD_RUL = "rul"
METHOD_ALARM = "alarm"
METHODS: tuple[str, ...] = (METHOD_GIVEN, METHOD_RUL, METHOD_ALARM)

SOURCE_CONFIG = "config"
SOURCE_GIVEN = "given label"
# Resolution of a horizon chosen on train: half a clock unit, one cycle or step.
HORIZON_RESOLUTION = 0.5
ALARM_DIRECTIONS: tuple[str, ...] = ("high", "low")


class LabelUnavailable(Exception):
    """No failure label can be defined for this data; the message is the user-facing skip reason."""


class ConstantLabel(LabelUnavailable):
    """The data defines a label, but it is constant on train: a data defect that must block training."""


@dataclass(frozen=True)
class LabelDefinition:
    """How `failure_status` is computed from a frame; fitted on train, applied to every split."""

    method: str
    # H in `time_unit` (None for a given label).
    horizon: float | None
    horizon_source: str
    train_positive_rate: float
    # For method "alarm": {sensor: {"level": x, "direction": "high" | "low"}}; empty otherwise.
    alarm_levels: dict[str, dict] = field(default_factory=dict)
    time_unit: str = DEFAULT_TIME_UNIT

    def describe(self) -> str:
        """One line: 'rul <= 36 h (chosen on train ...)' / 'given by the importer'."""
        if self.method == METHOD_GIVEN:
            return "failure_status given by the importer"
        what = "rul" if self.method == METHOD_RUL else "time to the next alarm crossing"
        return f"{what} <= {self.horizon:g} {short(self.time_unit)} ({self.horizon_source})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the inverse of `from_dict`)."""
        return {
            "method": self.method,
            "horizon": self.horizon,
            "time_unit": self.time_unit,
            "horizon_source": self.horizon_source,
            "train_positive_rate": self.train_positive_rate,
            "alarm_levels": {s: dict(v) for s, v in self.alarm_levels.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelDefinition:
        """Rebuild a definition from `to_dict` output; raises ValueError naming a missing or bad field."""
        missing = [k for k in ("method", "horizon", "time_unit", "horizon_source", "train_positive_rate") if k not in d]
        if missing:
            raise ValueError(f"label definition is missing field(s) {missing}")
        if d["method"] not in METHODS:
            raise ValueError(f"label definition has unknown method {d['method']!r}; expected one of {METHODS}")
        horizon = d["horizon"]
        return cls(
            method=d["method"],
            horizon=None if horizon is None else float(horizon),
            time_unit=str(d["time_unit"]),
            horizon_source=str(d["horizon_source"]),
            train_positive_rate=float(d["train_positive_rate"]),
            alarm_levels=_validated_alarm_levels(d.get("alarm_levels") or {}, where="label definition"),
        )


def fit_label_definition(
    train: pd.DataFrame,
    *,
    horizon: float | None,
    target_positive_rate: tuple[float, float] = (0.10, 0.20),
    alarm_levels: dict[str, dict] | None = None,
    time_unit: str = DEFAULT_TIME_UNIT,
    where: str = "",
) -> LabelDefinition:
    """Fit the label definition on the train split only; H and rul are in `time_unit`.

    `horizon` None means "choose H on train for `target_positive_rate`". `alarm_levels` maps critical
    sensors to {"level": x, "direction": "high" | "low"} and is used only when there is no given label and no
    RUL. `where` (e.g. "machine pump_01, train split") is put in error messages.
    Raises LabelUnavailable when no label can be defined or the train label would be constant.
    """
    lo, hi = target_positive_rate
    if not (0 < lo < hi < 1):
        raise ValueError(f"target_positive_rate={target_positive_rate!r} must be (low, high) with 0 < low < high < 1")
    if horizon is not None and not (math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon={horizon!r} must be a finite number > 0 (or None to choose it on train)")

    if LABEL in train.columns:
        labels = _given_labels(train, where)
        definition = LabelDefinition(METHOD_GIVEN, None, SOURCE_GIVEN, float(labels.mean()), time_unit=time_unit)
    elif RUL in train.columns:
        definition = _fit_on_times(
            METHOD_RUL, _rul_values(train, where), horizon, (lo, hi), {}, time_unit
        )
    elif alarm_levels:
        levels = _validated_alarm_levels(alarm_levels, where=_join(where, "alarm levels"))
        if TIMESTAMP not in train.columns:
            raise LabelUnavailable(
                _prefix(where) + f"RUL column {RUL!r} not found in data and the data has no {TIMESTAMP!r} column, "
                "which alarm-based labels need (alarm crossings are looked up H ahead): "
                "cannot define failure_status"
            )
        times = _time_to_next_alarm(train, levels, time_unit, where)
        if not np.isfinite(times).any():
            raise LabelUnavailable(
                _prefix(where) + "no critical sensor reaches its alarm level anywhere in the train split "
                f"({', '.join(sorted(levels))}): cannot define failure_status"
            )
        definition = _fit_on_times(METHOD_ALARM, times, horizon, (lo, hi), levels, time_unit)
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
            f"(method {definition.method!r}, horizon {definition.horizon} {short(time_unit)}): cannot train a classifier"
        )
    return definition


def apply_labels(df: pd.DataFrame, definition: LabelDefinition, *, where: str = "") -> pd.Series:
    """`failure_status` (int8 0/1, same index as `df`) from the definition and this frame alone (no refitting)."""
    if definition.method == METHOD_GIVEN:
        values = _given_labels(df, where).to_numpy()
    else:
        if definition.horizon is None:
            raise ValueError(f"label definition with method {definition.method!r} has no horizon")
        if definition.method == METHOD_RUL:
            if RUL not in df.columns:
                raise ValueError(
                    _prefix(where) + f"column {RUL!r} is missing, but the label definition computes "
                    "failure_status from it"
                )
            times = _rul_values(df, where)
        elif definition.method == METHOD_ALARM:
            times = _time_to_next_alarm(df, definition.alarm_levels, definition.time_unit, where)
        else:
            raise ValueError(f"label definition has unknown method {definition.method!r}; expected one of {METHODS}")
        values = times <= definition.horizon
    return pd.Series(np.asarray(values, dtype=np.int8), index=df.index, name=LABEL)


def _fit_on_times(
    method: str,
    times: np.ndarray,
    horizon: float | None,
    band: tuple[float, float],
    alarm_levels: dict[str, dict],
    time_unit: str,
) -> LabelDefinition:
    """Definition whose label is `times <= H`, with H from the config or chosen on these (train) times."""
    if horizon is not None:
        chosen, source = float(horizon), SOURCE_CONFIG
    else:
        resolution = 1.0 if time_unit in INDEX_UNITS else HORIZON_RESOLUTION
        chosen, in_band = choose_horizon(times, band, resolution)
        source = f"chosen on train for target band [{band[0]:g}, {band[1]:g}]"
        if not in_band:
            source += "; band not reachable on train, closest positive rate used"
    rate = float(np.mean(times <= chosen))
    return LabelDefinition(method, chosen, source, rate, alarm_levels, time_unit)


def choose_horizon(
    times: np.ndarray, band: tuple[float, float], resolution: float = HORIZON_RESOLUTION
) -> tuple[float, bool]:
    """The horizon H whose rate mean(times <= H) is nearest the band's middle; returns (H, rate within band).

    `times` may contain +inf (never positive). H on the `resolution` grid around the middle quantile is preferred
    when its rate lies in the band; otherwise every distinct finite value is a candidate and the one whose rate
    is in the band (else closest to it) and nearest the middle wins.
    """
    lo, hi = band
    middle = (lo + hi) / 2
    ordered = np.sort(np.asarray(times, dtype=float))
    finite = ordered[np.isfinite(ordered)]
    if finite.size == 0:
        raise ValueError("cannot choose a horizon: no finite time to failure")

    def rates(candidates: np.ndarray) -> np.ndarray:
        return np.searchsorted(ordered, candidates, side="right") / ordered.size

    quantile = float(np.quantile(finite, min(1.0, middle * ordered.size / finite.size)))
    step = resolution
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


def _rul_values(df: pd.DataFrame, where: str) -> np.ndarray:
    """The `rul` column as finite floats (in the data's time unit)."""
    rul = pd.to_numeric(df[RUL], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(rul)
    if bad.any():
        raise ValueError(
            _prefix(where) + f"column {RUL!r} has {int(bad.sum())} missing, non-numeric or infinite value(s); "
            "every row needs a remaining useful life"
        )
    return rul


def in_alarm(df: pd.DataFrame, alarm_levels: dict[str, dict]) -> np.ndarray:
    """Per row: some critical sensor is at or past its alarm level at that row (a label of the "alarm" method is
    1 there whatever the horizon: the reading itself says so)."""
    crossing = np.zeros(len(df), dtype=bool)
    for sensor, spec in alarm_levels.items():
        values = pd.to_numeric(df[sensor], errors="coerce").to_numpy(dtype=float)
        if spec["direction"] == "high":
            crossing |= values >= spec["level"]
        else:
            crossing |= values <= spec["level"]
    return crossing


def _time_to_next_alarm(df: pd.DataFrame, alarm_levels: dict[str, dict], time_unit: str, where: str) -> np.ndarray:
    """Per row: time (in `time_unit`) to the first alarm crossing at or after it in the same unit (inf if none)."""
    if TIMESTAMP not in df.columns:
        raise ValueError(_prefix(where) + f"column {TIMESTAMP!r} is missing; alarm-based labels need time order")
    missing = [s for s in alarm_levels if s not in df.columns]
    if missing:
        raise ValueError(_prefix(where) + f"critical sensor column(s) {missing} with alarm levels are missing")
    times = time_values(df, time_unit, where)
    crossing = in_alarm(df, alarm_levels)
    units = unit_codes(df)
    # Time order within each unit, then the next crossing time = backward fill of crossing times per unit.
    order = np.lexsort((times, units))
    next_crossing = (
        pd.Series(np.where(crossing[order], times[order], np.nan))
        .groupby(units[order], sort=False)
        .bfill()
        .to_numpy()
    )
    out = np.empty(len(df), dtype=float)
    out[order] = next_crossing - times[order]
    return np.where(np.isnan(out), np.inf, out)


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
