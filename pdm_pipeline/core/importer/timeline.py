"""The time axis of an import: timestamps or cycle counters, row order, repeated timestamps, RUL, sampling step."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from pdm_pipeline.core.importer.columns import Columns, is_number, require_numeric, require_present
from pdm_pipeline.core.importer.options import CYCLE_UNITS, ImportOptions, ImportOptionsError
from pdm_pipeline.core.importer.reading import Table
from pdm_pipeline.core.schema import RUL, TIMESTAMP, UNIT_ID
from pdm_pipeline.core.timeaxis import is_clock, median_step, seconds_per_unit

# Old-style cycle counters (cycle_unit given) become timestamps counted from this instant.
CYCLE_ORIGIN = pd.Timestamp("2000-01-01")


UNIX_TIME_FORMATS = {"unix_s": "s", "unix_ms": "ms"}  # time_format of a numeric time column: seconds or ms since 1970
# Sensor logs read as Unix times outside these years are read in the wrong unit (ms as s lands after 2100).
UNIX_PLAUSIBLE = (pd.Timestamp("1990-01-01"), pd.Timestamp("2100-01-01"))


def timestamps(table: Table, columns: Columns, options: ImportOptions) -> pd.Series | None:
    """The time axis per row, or None without time order.

    time_column: datetime64[ns] (naive, UTC when the source had time zones). cycle_column: the counter as a number
    (int64 when every value is whole, else float64); with the old cycle_unit, datetimes from CYCLE_ORIGIN.
    """
    if columns.cycle is not None:
        cycles = require_numeric(table, columns.cycle)
        bad = ~np.isfinite(cycles.to_numpy())
        require_present(table, columns.cycle, bad, "values are missing or not finite cycle counts")
        if options.cycle_unit in CYCLE_UNITS:
            seconds = cycles * CYCLE_UNITS[options.cycle_unit]
            return (CYCLE_ORIGIN + pd.to_timedelta(seconds, unit="s")).astype("datetime64[ns]")
        whole = bool(np.all(np.mod(cycles.to_numpy(), 1) == 0))
        return cycles.astype("int64") if whole else cycles
    if columns.time is None:
        return None
    raw = table.frame[columns.time]
    if options.time_format in UNIX_TIME_FORMATS:
        seconds = require_numeric(table, columns.time)
        require_present(table, columns.time, ~np.isfinite(seconds.to_numpy()), "values are missing or not finite "
                        f"Unix times ({options.time_format})")
        parsed = pd.to_datetime(seconds, unit=UNIX_TIME_FORMATS[options.time_format]).astype("datetime64[ns]")
        if parsed.min() < UNIX_PLAUSIBLE[0] or parsed.max() > UNIX_PLAUSIBLE[1]:
            other = next(f for f in UNIX_TIME_FORMATS if f != options.time_format)
            raise ImportOptionsError(
                f"{table.label}: column {columns.time!r} read as {options.time_format} gives times from "
                f"{parsed.min()} to {parsed.max()}, outside {UNIX_PLAUSIBLE[0].year}-{UNIX_PLAUSIBLE[1].year}: "
                f"is it {other}?")
        return parsed
    if is_number(raw):
        raise ImportOptionsError(
            f"{table.label}: column {columns.time!r} (time_column) holds numbers, not dates; Unix times need "
            f"time_format {' or '.join(UNIX_TIME_FORMATS)} (seconds or milliseconds since 1970-01-01 UTC); for a "
            "cycle or step counter give it as cycle_column (time_unit cycles or steps)"
        )
    if ptypes.is_datetime64_any_dtype(raw.dtype):
        parsed = raw if getattr(raw.dt, "tz", None) is None else raw.dt.tz_convert("UTC").dt.tz_localize(None)
    else:
        try:
            parsed = pd.to_datetime(raw, errors="coerce", format=options.time_format, utc=True).dt.tz_localize(None)
        except (TypeError, ValueError) as exc:
            raise ImportOptionsError(
                f"{table.label}: column {columns.time!r} (time_column) cannot be parsed as dates: {exc}"
            ) from None
    require_present(table, columns.time, parsed.isna().to_numpy(), "values are missing or not parseable timestamps")
    return parsed.astype("datetime64[ns]")


def time_key(series: pd.Series) -> np.ndarray:
    """Sortable positions of a time axis: int64 nanoseconds for datetimes, float64 for counters."""
    if ptypes.is_datetime64_any_dtype(series.dtype):
        return series.to_numpy().astype("int64")
    return series.to_numpy(dtype="float64")


def unit_rank(units: pd.Series) -> np.ndarray:
    """Sort rank of each row's unit: numeric order when every id is a number ("2" < "10"), else text order."""
    uniques = pd.unique(units)
    numeric = all(u.isascii() and u.isdigit() for u in uniques)
    ordered = sorted(uniques, key=int) if numeric else sorted(uniques)
    rank = {u: i for i, u in enumerate(ordered)}
    return units.map(rank).to_numpy()


def sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort by (unit_id, timestamp), keeping source order for ties (the index holds source positions)."""
    keys = [frame.index.to_numpy()]
    if TIMESTAMP in frame.columns:
        keys.append(time_key(frame[TIMESTAMP]))
    if UNIT_ID in frame.columns:
        keys.append(unit_rank(frame[UNIT_ID]))
    return frame.iloc[np.lexsort(keys)]


def drop_duplicate_times(
    frame: pd.DataFrame, table: Table, columns: Columns, machine_id: str, policy: str
) -> tuple[pd.DataFrame, int]:
    """Enforce unique timestamps per unit on a sorted frame: raise (policy "error") or keep the first/last
    row of each repeated timestamp in file order. Returns the frame and the number of rows dropped."""
    if TIMESTAMP not in frame.columns:
        return frame, 0
    keys = [UNIT_ID, TIMESTAMP] if UNIT_ID in frame.columns else [TIMESTAMP]
    duplicated = frame.duplicated(keys).to_numpy()
    if not duplicated.any():
        return frame, 0
    if policy == "error":
        first = int(frame.index[np.flatnonzero(duplicated)[0]])
        row = frame.loc[first]
        unit = f"unit {row[UNIT_ID]!r}, " if UNIT_ID in frame.columns else ""
        column = columns.time or columns.cycle
        scope = "within a unit" if UNIT_ID in frame.columns else "(no unit column)"
        raise ImportOptionsError(
            f"{table.label}: column {column!r}: machine {machine_id!r} has {int(duplicated.sum())} duplicate "
            f"timestamps {scope}, first {unit}{row[TIMESTAMP]} at {table.where(first)}; "
            + (_restart_hint(frame, table) or "pass duplicate_timestamps='first' or 'last' to keep one row of each")
        )
    kept = ~frame.duplicated(keys, keep=policy).to_numpy()
    return frame[kept], int((~kept).sum())


def _restart_hint(frame: pd.DataFrame, table: Table) -> str:
    """When the time axis goes back in file order (within a unit), the file likely holds several runs one after
    another, each restarting its counter or clock: say so, since keeping one row per time would splice them."""
    ordered = frame.sort_index()
    values = time_key(ordered[TIMESTAMP])
    same_unit = (ordered[UNIT_ID].to_numpy()[1:] == ordered[UNIT_ID].to_numpy()[:-1]
                 if UNIT_ID in ordered.columns else np.ones(len(ordered) - 1, dtype=bool))
    back = np.flatnonzero((np.diff(values) < 0) & same_unit)
    if not len(back):
        return ""
    i = int(back[0])
    before, after = ordered[TIMESTAMP].iloc[i], ordered[TIMESTAMP].iloc[i + 1]
    return (f"in file order it goes back {len(back)} time(s), first from {before} to {after} at "
            f"{table.where(int(ordered.index[i + 1]))}: the file seems to hold runs one after another, each "
            "restarting its time axis. Give each run its own unit (unit_column), or split the file; "
            "duplicate_timestamps='first' or 'last' would keep one row per time and splice the runs together")


def add_rul(frame: pd.DataFrame, time_unit: str, cap: float | None) -> pd.DataFrame:
    """rul = time until the last row of the row's unit (the failure) in `time_unit`, capped at `cap` if given."""
    ts = frame[TIMESTAMP]
    last = ts.groupby(frame[UNIT_ID]).transform("max") if UNIT_ID in frame.columns else ts.max()
    if is_clock(time_unit):
        rul = (last - ts).dt.total_seconds() / seconds_per_unit(time_unit)
    else:
        rul = (last - ts).astype("float64")
    return frame.assign(**{RUL: rul if cap is None else rul.clip(upper=cap)})


def sampling_step(train: pd.DataFrame, time_unit: str) -> float | None:
    """Median step between consecutive rows of a unit in the train split, in `time_unit` (None if none)."""
    if TIMESTAMP not in train.columns:
        return None
    try:
        return round(median_step([train], time_unit), 9)
    except ValueError:  # no unit has two rows with different timestamps
        return None
