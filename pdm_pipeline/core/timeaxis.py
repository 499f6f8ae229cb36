"""The time axis of a machine's data: what a `timestamp` value means and in which unit `rul` and horizons are.

The metadata's ``"time_unit"`` says it (the importer sets it; absent = ``"hours"``, the generator's unit):

- clock units ``seconds``, ``minutes``, ``hours``, ``days``: ``timestamp`` is a datetime column; ``rul``, the
  label horizon, the RUL cap and forecast horizons are counted in that unit;
- index units ``cycles``, ``steps``: ``timestamp`` is a number (a cycle or step counter, increasing within a
  unit); ``rul`` and horizons are counted in cycles / steps. Units of such data usually share the same origin
  (every engine starts at cycle 1), so there is no order in time across units.

Everything that needs "time" (features, labels, forecasts, checks) goes through `time_values`, which returns
float positions in the data's own unit; nothing assumes hours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from pdm_pipeline.core.schema import TIMESTAMP, UNIT_ID

CLOCK_UNITS: dict[str, float] = {"seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0}
INDEX_UNITS: tuple[str, ...] = ("cycles", "steps")
TIME_UNITS: tuple[str, ...] = (*CLOCK_UNITS, *INDEX_UNITS)
DEFAULT_TIME_UNIT = "hours"
# Short forms used in column names and messages ("rul_h", "12.5 h", "30 cycles").
SHORT: dict[str, str] = {"seconds": "s", "minutes": "min", "hours": "h", "days": "d", "cycles": "cycles", "steps": "steps"}


def validate_time_unit(unit: object, where: str = "") -> str:
    """Return the unit, or raise ValueError naming the allowed ones."""
    if unit not in TIME_UNITS:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}time_unit {unit!r} is unknown; choose one of {', '.join(TIME_UNITS)}")
    return str(unit)


def is_clock(unit: str) -> bool:
    """True when timestamps are datetimes (seconds .. days), False for cycle/step counters."""
    return unit in CLOCK_UNITS


def seconds_per_unit(unit: str) -> float | None:
    """Seconds in one unit of a clock axis; None for cycles and steps."""
    return CLOCK_UNITS.get(unit)


def short(unit: str) -> str:
    return SHORT.get(unit, unit)


def amount(value: float, unit: str) -> str:
    """A readable quantity: 12.5 h, 30 cycles, 90 s."""
    return f"{value:g} {short(unit)}"


def time_values(df: pd.DataFrame, unit: str, where: str = "") -> np.ndarray:
    """The `timestamp` column as float positions in `unit` (datetimes: time since the epoch in that unit).

    Raises ValueError naming the column when it is missing, has gaps, or has the wrong kind of values for the
    unit (datetimes for a cycle axis, numbers for a clock axis).
    """
    prefix = f"{where}: " if where else ""
    if TIMESTAMP not in df.columns:
        raise ValueError(f"{prefix}column {TIMESTAMP!r} is missing")
    column = df[TIMESTAMP]
    if is_clock(unit):
        if not ptypes.is_datetime64_any_dtype(column.dtype):
            raise ValueError(
                f"{prefix}column {TIMESTAMP!r} has dtype {column.dtype}, but time_unit {unit!r} needs datetimes"
            )
        times = pd.to_datetime(column)
        if times.isna().any():
            raise ValueError(f"{prefix}column {TIMESTAMP!r} has {int(times.isna().sum())} missing value(s)")
        if times.dt.tz is not None:
            times = times.dt.tz_convert("UTC").dt.tz_localize(None)
        seconds = (times - pd.Timestamp(0)).dt.total_seconds().to_numpy(dtype=float)
        return seconds / CLOCK_UNITS[unit]
    if not (ptypes.is_numeric_dtype(column.dtype) and not ptypes.is_bool_dtype(column.dtype)):
        raise ValueError(
            f"{prefix}column {TIMESTAMP!r} has dtype {column.dtype}, but time_unit {unit!r} needs a number "
            "(a cycle or step counter)"
        )
    values = column.to_numpy(dtype=float, na_value=np.nan)
    if np.isnan(values).any():
        raise ValueError(f"{prefix}column {TIMESTAMP!r} has {int(np.isnan(values).sum())} missing value(s)")
    return values


def unit_codes(df: pd.DataFrame) -> np.ndarray:
    """Integer code per row for its unit (`unit_id`); all zeros when the frame has no unit column."""
    if UNIT_ID not in df.columns:
        return np.zeros(len(df), dtype=np.int64)
    return pd.factorize(df[UNIT_ID], use_na_sentinel=False)[0].astype(np.int64)


def median_step(frames: Sequence[pd.DataFrame], unit: str, where: str = "") -> float:
    """Median positive step between consecutive rows of the same unit, in `unit`; ValueError if none."""
    steps = []
    for df in frames:
        if len(df) < 2:
            continue
        values = time_values(df, unit, where)
        codes = unit_codes(df)
        order = np.lexsort((values, codes))
        same = codes[order][1:] == codes[order][:-1]
        diffs = np.diff(values[order])[same]
        steps.append(diffs[diffs > 0])
    found = np.concatenate(steps) if steps else np.array([])
    if found.size == 0:
        prefix = f"{where}: " if where else ""
        raise ValueError(
            f"{prefix}cannot infer the sampling step: no unit has two rows with different {TIMESTAMP!r} values"
        )
    return float(np.median(found))


def units_share_origin(df: pd.DataFrame, unit: str) -> bool:
    """True when several units overlap in time (e.g. every engine counts cycles from 1): their rows cannot be
    laid on one time line. False for one unit, or for units that follow each other (lifecycles of a machine)."""
    if UNIT_ID not in df.columns or df[UNIT_ID].nunique() < 2:
        return False
    values = time_values(df, unit)
    spans = pd.DataFrame({"u": unit_codes(df), "t": values}).groupby("u", sort=False)["t"].agg(["min", "max"])
    spans = spans.sort_values("min")
    return bool((spans["min"].to_numpy()[1:] < spans["max"].cummax().to_numpy()[:-1]).any())
