"""Import real sensor data (CSV or parquet, in any layout) into the project's data contract.

`import_data` reads a file or a directory of files, maps the user's columns onto the contract (see
contract.py), splits the rows into train/val/test, and writes, per machine:

- ``synthetic/<machine_id>/{train,val,test}.parquet``: ``timestamp`` (absent without time order), ``unit_id``
  (string, when there are units), one float64 column per sensor, and ``rul``, ``failure_status``,
  ``anomaly_window`` when asked for;
- ``metadata/<machine_id>_metadata.json`` (SDV single-table metadata plus ``time_order``, ``rul_parameters``
  and ``source``: file, import time, options, column map);
- ``metadata/<machine_id>_profile.json`` when thresholds or a machine type are given.

Choices, in the order a user meets them:

- Column names are stripped of surrounding blanks. A directory is read file by file (``*.csv``, ``*.tsv``,
  ``*.parquet``, sorted by name, hidden files skipped); all files must have the same columns. Without
  ``unit_column``, every file of a directory is one unit whose id is the file stem. CSV files are read as
  UTF-8 and a byte-order mark is dropped.
- Sensor names are sanitized (`sanitize_column_name`): "Air temperature [K]" -> "air_temperature_K". `rename`
  gives a name by hand. A sensor that would take a reserved name (timestamp, rul, unit_id, failure_status,
  anomaly_window) is an error: such a column is a target or a time axis and must never become a feature.
- Without `sensor_columns`, every numeric column not used otherwise is a sensor; a non-numeric column that is
  neither used nor listed in `drop_columns` is an error (nothing is dropped silently).
- Time order comes from `time_column` (parsed by pandas; time zones are converted to UTC and dropped) or from
  `cycle_column` + `cycle_unit` (timestamp = 2000-01-01 + cycle x unit; every unit starts from the same
  origin). Neither means no time order: no ``timestamp`` column, ``"time_order": false``. The time and cycle
  columns are never sensors.
- Labels (`label_column` -> ``failure_status``, `eval_label_column` -> ``anomaly_window``) must hold 0/1 or
  booleans; anything else is an error. Non-zero values are not turned into 1 silently because a -1/1 coding
  or a multi-class failure code would be misread; map them to 0/1 before importing.
- Timestamps must be unique per unit. A repeated timestamp is an error unless `duplicate_timestamps` is
  "first" or "last" (one row of each is kept, in file order; the number dropped goes to the metadata).
- Missing sensor values are kept as NaN (the importer invents nothing); the count per sensor is recorded in
  the metadata's ``source`` and the contract validator's ``max_nan_share`` decides downstream.
- `compute_rul`: each unit (or the whole file without units) runs to failure at its last row; ``rul`` is the
  time to that row in hours, optionally capped at `rul_cap_hours`. ``rul_parameters.max_operational_hours``
  is the cap, else the longest such life (the range the RUL-range check should expect).
- Splits. "chronological": one global time cut (not per unit), so every test row is later than every val
  row and every val row later than every train row; rows sharing a timestamp stay together. It is refused
  for cycle counters with several units (their clocks all start at the same origin: use "unit"). "unit":
  whole units to splits by `ratios` of the unit count, units ordered by first timestamp (then first
  appearance), so the test units are the latest. "column": the `split_column` values train/val/test
  (case-insensitive). "random": only without time order (it would leak the future), seeded, stratified on the
  label when there is one. Every split must get rows.
- ``sampling_interval_minutes`` is the median step between consecutive rows of a unit in the train split.
- Writing is atomic per machine: all files are written to a staging directory under the data root, checked
  with the contract validator, then moved in. An existing machine is replaced only with ``overwrite=True``;
  its old metadata is removed first and the new metadata is moved in last, so a half-written machine never
  has metadata.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from pdm_pipeline.core.contract import DIRECTIONS, SPEC_VERSION, validate_machine
from pdm_pipeline.core.paths import (
    InvalidMachineIdError,
    machine_dir,
    metadata_dir,
    metadata_path,
    profile_path,
    split_path,
    validate_machine_id,
)
from pdm_pipeline.core.publish import publish_dir
from pdm_pipeline.core.schema import EVAL_ANOMALY, LABEL, RESERVED_COLUMNS, RUL, SPLITS, TIMESTAMP, UNIT_ID

SPLIT_MODES: tuple[str, ...] = ("chronological", "unit", "column", "random")
DUPLICATE_POLICIES: tuple[str, ...] = ("error", "first", "last")
# Seconds per cycle for each accepted cycle unit.
CYCLE_UNITS: dict[str, int] = {"s": 1, "min": 60, "h": 3600, "d": 86400}
# Cycle counters become timestamps counted from this instant.
CYCLE_ORIGIN = pd.Timestamp("2000-01-01")
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SOURCE_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".parquet")
THRESHOLD_KEYS: tuple[str, ...] = ("unit", "min", "typical", "max", "alarm", "trip", "direction")
_SENSOR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNIT_SUFFIX_RE = re.compile(r"(?P<base>.*?)\s*[\[(](?P<unit>[^\[\]()]*)[\])]\s*")
_SYMBOL_WORDS = {"%": "pct", "°": "deg", "µ": "u", "Ω": "Ohm"}

AI4I_LABEL = "Machine failure"
AI4I_GROUP = "Type"
# Failure-mode flags that almost define the label (leakage) and row ids.
AI4I_DROPPED: tuple[str, ...] = ("UDI", "Product ID", "TWF", "HDF", "PWF", "OSF", "RNF")
NAB_WINDOWS_KEY = "realKnownCause/machine_temperature_system_failure.csv"
NAB_SENSOR = "machine_temperature"


class ImportOptionsError(ValueError):
    """Input that cannot be imported; the message names the file, the column or the option at fault."""


@dataclass
class ImportOptions:
    """How to read one source into the contract; every field maps to a command-line option."""

    machine_id: str
    # Datetime column; parsed with `time_format` (any pandas format, also "ISO8601" or "mixed") or inferred.
    time_column: str | None = None
    time_format: str | None = None
    # Alternative to time_column: a cycle/step counter with its time unit ("s", "min", "h", "d").
    cycle_column: str | None = None
    cycle_unit: str | None = None
    # Repeated timestamps within a unit: "error", or keep the "first" / "last" row of each (file order).
    duplicate_timestamps: str = "error"
    # Fleet data: which unit a row belongs to (kept as string unit_id).
    unit_column: str | None = None
    # Default: every numeric column not used otherwise and not dropped.
    sensor_columns: list[str] | None = None
    # Source column -> sensor name, instead of the sanitized source name.
    rename: dict[str, str] | None = None
    # Kept as failure_status (must be 0/1 or boolean).
    label_column: str | None = None
    # Kept as anomaly_window: evaluation-only truth, never a feature (must be 0/1 or boolean).
    eval_label_column: str | None = None
    # Columns to ignore, e.g. ids or leakage columns (AI4I's TWF, HDF, PWF, OSF, RNF).
    drop_columns: Sequence[str] = ()
    separator: str = ","
    split: str = "chronological"
    # With split="column": a column whose values are train/val/test.
    split_column: str | None = None
    ratios: tuple[float, float, float] = (0.70, 0.15, 0.15)
    # Run-to-failure units: rul = hours until the unit's last row, optionally capped.
    compute_rul: bool = False
    rul_cap_hours: float | None = None
    # Sensor (source or sanitized name) -> {"alarm", "trip", "direction", "unit", "min", "typical", "max"}.
    thresholds: dict[str, dict] | None = None
    # Default: the thresholded sensors that have an alarm level.
    critical_sensors: list[str] | None = None
    machine_type: str | None = None
    # Split one input into several machines, f"{machine_id}_{value}" per value of this column.
    group_column: str | None = None
    seed: int = 0

    def validate(self) -> ImportOptions:
        """Check the options on their own (before any file is read); raise ImportOptionsError naming each bad one."""
        problems: list[str] = []
        try:
            validate_machine_id(self.machine_id)
        except InvalidMachineIdError as exc:
            problems.append(f"machine_id: {exc}")
        if self.time_column is not None and self.cycle_column is not None:
            problems.append(
                f"time_column={self.time_column!r} and cycle_column={self.cycle_column!r} are both given; "
                "give one of them (or neither for data without time order)"
            )
        if self.cycle_column is not None and self.cycle_unit is None:
            problems.append(f"cycle_column={self.cycle_column!r} needs cycle_unit (one of {', '.join(CYCLE_UNITS)})")
        if self.cycle_unit is not None and self.cycle_unit not in CYCLE_UNITS:
            problems.append(f"cycle_unit={self.cycle_unit!r} is unknown; choose one of {', '.join(CYCLE_UNITS)}")
        if self.cycle_unit is not None and self.cycle_column is None:
            problems.append(f"cycle_unit={self.cycle_unit!r} is given without cycle_column")
        if self.duplicate_timestamps not in DUPLICATE_POLICIES:
            problems.append(
                f"duplicate_timestamps={self.duplicate_timestamps!r} is unknown; "
                f"choose one of {', '.join(DUPLICATE_POLICIES)}"
            )
        if self.time_format is not None and self.time_column is None:
            problems.append(f"time_format={self.time_format!r} is given without time_column")
        problems += self._split_problems()
        if self.rul_cap_hours is not None:
            if not self.compute_rul:
                problems.append(f"rul_cap_hours={self.rul_cap_hours!r} is given but compute_rul is False")
            elif not (math.isfinite(self.rul_cap_hours) and self.rul_cap_hours > 0):
                problems.append(f"rul_cap_hours={self.rul_cap_hours!r} must be a number > 0 (hours)")
        if self.compute_rul and not self.has_time_order:
            problems.append("compute_rul needs time order: give time_column or cycle_column + cycle_unit")
        if not isinstance(self.separator, str) or not self.separator:
            problems.append(f"separator={self.separator!r} must be a non-empty string")
        for source, target in (self.rename or {}).items():
            if not _SENSOR_NAME_RE.fullmatch(str(target)) or target in RESERVED_COLUMNS:
                problems.append(
                    f"rename: {source!r} -> {target!r} is not a usable sensor name (letters, digits and '_', "
                    f"not starting with a digit, none of the reserved names {', '.join(sorted(RESERVED_COLUMNS))})"
                )
        problems += _threshold_problems(self.thresholds)
        if problems:
            raise ImportOptionsError("invalid import options: " + "; ".join(problems))
        return self

    @property
    def has_time_order(self) -> bool:
        return self.time_column is not None or self.cycle_column is not None

    def _split_problems(self) -> list[str]:
        problems: list[str] = []
        if self.split not in SPLIT_MODES:
            problems.append(f"split={self.split!r} is unknown; choose one of {', '.join(SPLIT_MODES)}")
        if self.split == "column" and self.split_column is None:
            problems.append("split='column' needs split_column (a column with values train/val/test)")
        if self.split_column is not None and self.split != "column":
            problems.append(
                f"split_column={self.split_column!r} is given but split={self.split!r} (use split='column')"
            )
        if self.split == "random" and self.has_time_order:
            problems.append(
                "split='random' is only allowed for data without time order: random rows of a time series put "
                "the future into train; use split='chronological' or 'unit'"
            )
        if self.split == "chronological" and not self.has_time_order:
            problems.append(
                "split='chronological' needs time order: give time_column or cycle_column + cycle_unit, "
                "or use split='random', 'unit' or 'column'"
            )
        ratios = tuple(self.ratios)
        numbers = all(isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) for r in ratios)
        if len(ratios) != 3 or not numbers:
            problems.append(f"ratios={self.ratios!r} must be three numbers (train, val, test)")
        elif any(r <= 0 for r in ratios):
            problems.append(f"ratios={ratios!r} must all be > 0 (every split needs rows)")
        elif abs(sum(ratios) - 1.0) > 1e-6:
            problems.append(f"ratios={ratios!r} sum to {sum(ratios):g}, not 1")
        return problems


def _threshold_problems(thresholds: object) -> list[str]:
    if thresholds is None:
        return []
    if not isinstance(thresholds, Mapping):
        return [f"thresholds must map sensor names to {{alarm, trip, direction, ...}}, got {type(thresholds).__name__}"]
    problems: list[str] = []
    for sensor, spec in thresholds.items():
        if not isinstance(spec, Mapping):
            problems.append(f"thresholds[{sensor!r}] must be a mapping, got {type(spec).__name__}")
            continue
        unknown = sorted(set(spec) - set(THRESHOLD_KEYS))
        if unknown:
            problems.append(f"thresholds[{sensor!r}] has unknown keys {unknown}; allowed: {', '.join(THRESHOLD_KEYS)}")
        direction = spec.get("direction", "high")
        if direction not in DIRECTIONS:
            problems.append(f"thresholds[{sensor!r}]['direction']={direction!r} must be 'high' or 'low'")
        unit = spec.get("unit")
        if unit is not None and not isinstance(unit, str):
            problems.append(f"thresholds[{sensor!r}]['unit']={unit!r} must be a string")
        for key in ("min", "typical", "max", "alarm", "trip"):
            value = spec.get(key)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if value is not None and not (number and math.isfinite(value)):
                problems.append(f"thresholds[{sensor!r}][{key!r}]={value!r} must be a finite number")
    return problems


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class _Table:
    """The rows to import with, for messages, the file and 0-based row in that file of every row."""

    frame: pd.DataFrame
    label: str
    file_names: list[str]
    file_index: np.ndarray
    file_rows: np.ndarray
    # Unit ids taken from the file stems of a directory read without unit_column.
    file_units: pd.Series | None = None

    def where(self, position: int) -> str:
        """'<file> row <n>' for the row at `position` of the frame."""
        return f"{self.file_names[self.file_index[position]]} row {int(self.file_rows[position])}"


def _read_file(path: Path, separator: str) -> pd.DataFrame:
    """One CSV (UTF-8, BOM dropped) or parquet file, with column names stripped of blanks."""
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep=separator, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise ImportOptionsError(f"{path}: the file is empty (no header, no rows)") from None
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise ImportOptionsError(f"{path}: not UTF-8 text (byte {byte:#04x} at offset {exc.start})") from None
    except (pd.errors.ParserError, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ImportOptionsError(f"{path}: cannot read the file: {detail}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    duplicated = sorted(set(frame.columns[frame.columns.duplicated()]))
    if duplicated:
        raise ImportOptionsError(f"{path}: column name(s) {duplicated} appear more than once")
    return frame


def _source_files(source: Path) -> list[Path]:
    if not source.exists():
        raise ImportOptionsError(f"source {source} does not exist")
    if source.is_file():
        if source.suffix.lower() not in SOURCE_SUFFIXES:
            raise ImportOptionsError(
                f"{source}: unsupported file type {source.suffix!r}; expected {', '.join(SOURCE_SUFFIXES)}"
            )
        return [source]
    files = sorted(
        p for p in source.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SOURCE_SUFFIXES
    )
    if not files:
        raise ImportOptionsError(f"source directory {source} holds no {', '.join(SOURCE_SUFFIXES)} file")
    stems = [p.stem for p in files]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:
        raise ImportOptionsError(f"source directory {source}: several files share the stem(s) {twins}")
    return files


def _read_source(source: Path, options: ImportOptions) -> _Table:
    """Read a file or a directory (files concatenated; the file stem is the unit id without unit_column)."""
    files = _source_files(source)
    frames = [_read_file(path, options.separator) for path in files]
    columns = list(frames[0].columns)
    for path, frame in zip(files[1:], frames[1:]):
        missing = [c for c in columns if c not in frame.columns]
        extra = [c for c in frame.columns if c not in columns]
        if missing or extra:
            raise ImportOptionsError(
                f"{path}: columns differ from {files[0].name} (missing {missing}, extra {extra}); "
                "all files of a directory must have the same columns"
            )
    file_index = np.repeat(np.arange(len(frames)), [len(f) for f in frames])
    file_units = None
    if source.is_dir() and options.unit_column is None:
        file_units = pd.Series(np.array([p.stem for p in files], dtype=object)[file_index], dtype=object)
    return _Table(
        frame=pd.concat([f[columns] for f in frames], ignore_index=True),
        label=str(source),
        file_names=[str(p) for p in files],
        file_index=file_index,
        file_rows=np.concatenate([np.arange(len(f)) for f in frames]),
        file_units=file_units,
    )


def _frame_table(frame: pd.DataFrame, source: str) -> _Table:
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c).strip() for c in frame.columns]
    return _Table(frame, source, [source], np.zeros(len(frame), dtype=np.int64), np.arange(len(frame)))


# --------------------------------------------------------------------------------------------- columns


def sanitize_column_name(name: str) -> str:
    """A snake_case sensor name with the unit as suffix: "Air temperature [K]" -> "air_temperature_K".

    The unit is the text in a trailing [...] or (...); it keeps its case ("Torque [Nm]" -> "torque_Nm"),
    symbols are spelled out ("%" -> "pct", "°C" -> "degC"), accents are dropped. Returns "" when nothing is
    left (the caller reports it).
    """
    text = str(name).strip()
    match = _UNIT_SUFFIX_RE.fullmatch(text)
    base, unit = (match["base"], match["unit"]) if match else (text, "")
    return "_".join(part for part in (_snake(base).lower(), _snake(unit)) if part)


def _snake(text: str) -> str:
    for symbol, word in _SYMBOL_WORDS.items():
        text = text.replace(symbol, word)
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^0-9A-Za-z]+", "_", ascii_text).strip("_")


def _unit_of_measure(name: str) -> str | None:
    match = _UNIT_SUFFIX_RE.fullmatch(str(name).strip())
    return (match["unit"].strip() or None) if match else None


@dataclass(frozen=True)
class _Columns:
    """Which source column plays which role, and the sensor names they get."""

    time: str | None
    cycle: str | None
    unit: str | None
    label: str | None
    eval_label: str | None
    split: str | None
    group: str | None
    # source column -> sensor name (contract column)
    sensors: dict[str, str]
    ignored: tuple[str, ...]


def _is_number(series: pd.Series) -> bool:
    return ptypes.is_numeric_dtype(series.dtype) and not ptypes.is_bool_dtype(series.dtype)


def _plan_columns(table: _Table, options: ImportOptions) -> _Columns:
    """Map source columns to roles; raise for unknown, doubly used, reserved or clashing names."""
    frame, where = table.frame, table.label
    available = list(frame.columns)
    roles = {
        "time_column": options.time_column,
        "cycle_column": options.cycle_column,
        "unit_column": options.unit_column,
        "label_column": options.label_column,
        "eval_label_column": options.eval_label_column,
        "split_column": options.split_column,
        "group_column": options.group_column,
    }
    named: list[tuple[str, str]] = [(opt, col) for opt, col in roles.items() if col is not None]
    named += [("drop_columns", c) for c in options.drop_columns]
    named += [("sensor_columns", c) for c in options.sensor_columns or ()]
    named += [("rename", c) for c in options.rename or {}]
    for option, column in named:
        if column not in frame.columns:
            raise ImportOptionsError(
                f"{where}: column {column!r} (from {option}) not found; available columns: {available}"
                + _separator_hint(available, options.separator)
            )
    used: dict[str, str] = {}
    for option, column in named:
        if option == "rename":
            continue
        if column in used and used[column] != option:
            raise ImportOptionsError(f"{where}: column {column!r} is given both as {used[column]} and as {option}")
        used[column] = option

    if options.sensor_columns is not None:
        chosen = list(options.sensor_columns)
        ignored = [c for c in available if c not in used]
    else:
        free = [c for c in available if c not in used]
        chosen = [c for c in free if _is_number(frame[c])]
        ignored = []
        odd = [c for c in free if c not in chosen]
        if odd:
            raise ImportOptionsError(
                f"{where}: column(s) {odd} are not numeric and have no role; list them in drop_columns or name "
                "the sensors with sensor_columns (nothing is dropped silently)"
            )
    if not chosen:
        raise ImportOptionsError(f"{where}: no sensor column (available columns: {available})")
    sensors = _sensor_names(chosen, options.rename or {}, where)
    return _Columns(
        time=options.time_column,
        cycle=options.cycle_column,
        unit=options.unit_column,
        label=options.label_column,
        eval_label=options.eval_label_column,
        split=options.split_column,
        group=options.group_column,
        sensors=sensors,
        ignored=tuple(ignored),
    )


def _separator_hint(columns: list[str], separator: str) -> str:
    if len(columns) != 1:
        return ""
    for candidate in (";", "\t", ",", "|"):
        if candidate != separator and candidate in columns[0]:
            return f" (the header was read as one column: is the separator {candidate!r} rather than {separator!r}?)"
    return ""


def _sensor_names(columns: list[str], rename: Mapping[str, str], where: str) -> dict[str, str]:
    names: dict[str, str] = {}
    for column in columns:
        name = rename.get(column) or sanitize_column_name(column)
        if not name:
            raise ImportOptionsError(f"{where}: column {column!r} gives an empty sensor name; name it with rename")
        if name in RESERVED_COLUMNS:
            raise ImportOptionsError(
                f"{where}: column {column!r} would become sensor {name!r}, a reserved column name (targets and the "
                "time axis are never features); give it its role (label_column, ...) or list it in drop_columns"
            )
        clash = [c for c, n in names.items() if n == name]
        if clash:
            raise ImportOptionsError(
                f"{where}: columns {clash[0]!r} and {column!r} both become sensor {name!r}; rename one of them"
            )
        names[column] = name
    not_sensors = sorted(set(rename) - set(columns))
    if not_sensors:
        raise ImportOptionsError(f"{where}: rename names column(s) {not_sensors} that are not sensors")
    return names


def _require_numeric(table: _Table, column: str) -> pd.Series:
    """The column as float64; raise naming the file, column, count and first non-numeric value."""
    series = table.frame[column]
    if ptypes.is_bool_dtype(series.dtype) or _is_number(series):
        return series.astype("float64")
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna().to_numpy() & series.notna().to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ImportOptionsError(
            f"{table.label}: column {column!r} is not numeric: {int(bad.sum())} values are not numbers, "
            f"first {str(series.iloc[first])[:30]!r} at {table.where(first)}"
        )
    return values.astype("float64")


# --------------------------------------------------------------------------------------- column values


def _timestamps(table: _Table, columns: _Columns, options: ImportOptions) -> pd.Series | None:
    """datetime64[ns] per row (naive, UTC when the source had time zones), or None without time order."""
    if columns.cycle is not None:
        cycles = _require_numeric(table, columns.cycle)
        bad = ~np.isfinite(cycles.to_numpy())
        _require_present(table, columns.cycle, bad, "values are missing or not finite cycle counts")
        assert options.cycle_unit is not None  # validate() guarantees it
        seconds = cycles * CYCLE_UNITS[options.cycle_unit]
        return (CYCLE_ORIGIN + pd.to_timedelta(seconds, unit="s")).astype("datetime64[ns]")
    if columns.time is None:
        return None
    raw = table.frame[columns.time]
    if _is_number(raw):
        raise ImportOptionsError(
            f"{table.label}: column {columns.time!r} (time_column) holds numbers, not dates; for a counter give "
            "it as cycle_column with cycle_unit"
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
    _require_present(table, columns.time, parsed.isna().to_numpy(), "values are missing or not parseable timestamps")
    return parsed.astype("datetime64[ns]")


def _require_present(table: _Table, column: str, bad: np.ndarray, what: str) -> None:
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        value = table.frame[column].iloc[first]
        shown = "(empty)" if pd.isna(value) else repr(str(value)[:30])
        raise ImportOptionsError(
            f"{table.label}: column {column!r}: {int(bad.sum())} {what}, first {shown} at {table.where(first)}"
        )


def _flag_values(table: _Table, column: str, option: str) -> pd.Series:
    """A 0/1 column as int64; raise naming the file and column for anything but 0/1 or booleans."""
    series = table.frame[column]
    if ptypes.is_bool_dtype(series.dtype):
        return series.astype("int64")
    present = series.notna().to_numpy()
    if _is_number(series):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        bad = ~present | ((values != 0) & (values != 1))
    else:  # object: booleans with gaps, or strings
        bad = ~np.array([isinstance(v, (bool, np.bool_)) for v in series], dtype=bool)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        value = series.iloc[first]
        shown = "(empty)" if not present[first] else repr(value) if isinstance(value, str) else str(value)
        raise ImportOptionsError(
            f"{table.label}: column {column!r} ({option}) must hold only 0/1 or booleans: {int(bad.sum())} other "
            f"values, first {shown} at {table.where(first)}; map them to 0/1 before importing (non-zero values "
            "are not turned into 1 silently: -1/1 codes or failure-type numbers would be misread)"
        )
    return series.astype("float64").astype("int64")


def _text_values(table: _Table, column: str, option: str) -> pd.Series:
    """Ids as strings ("7", not "7.0"); raise for missing values."""
    series = table.frame[column]
    _require_present(table, column, series.isna().to_numpy(), f"missing values ({option})")
    if ptypes.is_float_dtype(series.dtype) and np.all(np.mod(series.to_numpy(), 1) == 0):
        series = series.astype("int64")
    return series.astype(str).str.strip()


def _contract_frame(table: _Table, columns: _Columns, options: ImportOptions) -> pd.DataFrame:
    """The contract columns (timestamp, unit_id, sensors, failure_status, anomaly_window) in source row order."""
    out: dict[str, pd.Series] = {}
    timestamps = _timestamps(table, columns, options)
    if timestamps is not None:
        out[TIMESTAMP] = timestamps
    if columns.unit is not None:
        out[UNIT_ID] = _text_values(table, columns.unit, "unit_column")
    elif table.file_units is not None:
        out[UNIT_ID] = table.file_units
    for column, name in columns.sensors.items():
        out[name] = _require_numeric(table, column)
    if columns.label is not None:
        out[LABEL] = _flag_values(table, columns.label, "label_column")
    if columns.eval_label is not None:
        out[EVAL_ANOMALY] = _flag_values(table, columns.eval_label, "eval_label_column")
    return pd.DataFrame(out, index=table.frame.index)


# ------------------------------------------------------------------------------------------- per machine


@dataclass
class _Machine:
    """One machine ready to be written: its splits, metadata and optional profile."""

    machine_id: str
    splits: dict[str, pd.DataFrame]
    metadata: dict[str, Any]
    profile: dict[str, Any] | None


def _machine_rows(
    table: _Table, columns: _Columns, options: ImportOptions
) -> list[tuple[str, str | None, np.ndarray]]:
    """(machine id, group value, row positions) per machine of the input: one, or one per group_column value."""
    if columns.group is None:
        return [(options.machine_id, None, np.arange(len(table.frame)))]
    groups = _text_values(table, columns.group, "group_column")
    machines = []
    for value in sorted(groups.unique()):
        machine_id = f"{options.machine_id}_{value}"
        try:
            validate_machine_id(machine_id)
        except InvalidMachineIdError as exc:
            raise ImportOptionsError(
                f"{table.label}: column {columns.group!r} (group_column) value {value!r}: {exc}"
            ) from None
        machines.append((machine_id, value, np.flatnonzero((groups == value).to_numpy())))
    return machines


def _unit_rank(units: pd.Series) -> np.ndarray:
    """Sort rank of each row's unit: numeric order when every id is a number ("2" < "10"), else text order."""
    uniques = pd.unique(units)
    numeric = all(u.isascii() and u.isdigit() for u in uniques)
    ordered = sorted(uniques, key=int) if numeric else sorted(uniques)
    rank = {u: i for i, u in enumerate(ordered)}
    return units.map(rank).to_numpy()


def _sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort by (unit_id, timestamp), keeping source order for ties (the index holds source positions)."""
    keys = [frame.index.to_numpy()]
    if TIMESTAMP in frame.columns:
        keys.append(frame[TIMESTAMP].to_numpy().astype("int64"))
    if UNIT_ID in frame.columns:
        keys.append(_unit_rank(frame[UNIT_ID]))
    return frame.iloc[np.lexsort(keys)]


def _drop_duplicate_times(
    frame: pd.DataFrame, table: _Table, columns: _Columns, machine_id: str, policy: str
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
            f"timestamps {scope}, first {unit}{row[TIMESTAMP]} at {table.where(first)}; pass "
            "duplicate_timestamps='first' or 'last' to keep one row of each"
        )
    kept = ~frame.duplicated(keys, keep=policy).to_numpy()
    return frame[kept], int((~kept).sum())


def _add_rul(frame: pd.DataFrame, cap_hours: float | None) -> pd.DataFrame:
    """rul = hours until the last row of the row's unit (the failure), capped at `cap_hours` if given."""
    ts = frame[TIMESTAMP]
    last = ts.groupby(frame[UNIT_ID]).transform("max") if UNIT_ID in frame.columns else ts.max()
    hours = (last - ts).dt.total_seconds() / 3600.0
    return frame.assign(**{RUL: hours if cap_hours is None else hours.clip(upper=cap_hours)})


def _cut_counts(n: int, ratios: Sequence[float]) -> tuple[int, int]:
    """Positions where val and test start when `n` ordered items are cut by `ratios`."""
    first = int(math.floor(n * ratios[0] + 0.5))
    second = int(math.floor(n * (ratios[0] + ratios[1]) + 0.5))
    return first, second


def _require_filled(assign: np.ndarray, machine_id: str, ratios: Sequence[float], what: str) -> None:
    for split in SPLITS:
        if not (assign == split).any():
            raise ImportOptionsError(
                f"machine {machine_id!r}: ratios {tuple(ratios)} leave the {split} split empty for {what}"
            )


def _assign_splits(
    frame: pd.DataFrame, split_values: pd.Series | None, options: ImportOptions, columns: _Columns, machine_id: str
) -> np.ndarray:
    """The split name of every row of the (sorted) machine frame, by `options.split`."""
    ratios = tuple(options.ratios)
    if options.split == "chronological":
        if columns.cycle is not None and UNIT_ID in frame.columns and frame[UNIT_ID].nunique() > 1:
            raise ImportOptionsError(
                f"machine {machine_id!r}: split='chronological' with cycle_column {columns.cycle!r} and several "
                "units: every unit's cycles start at the same origin, so a time cut would put every unit's early "
                "life in train and its end in test; use split='unit'"
            )
        assign = _chronological_split(frame[TIMESTAMP], ratios)
        n_times = frame[TIMESTAMP].nunique()
        _require_filled(assign, machine_id, ratios, f"{len(frame)} rows ({n_times} distinct timestamps)")
    elif options.split == "unit":
        if UNIT_ID not in frame.columns:
            raise ImportOptionsError(
                f"machine {machine_id!r}: split='unit' needs units: give unit_column or a directory of files per unit"
            )
        assign = _unit_split(frame, ratios)
        _require_filled(assign, machine_id, ratios, f"{frame[UNIT_ID].nunique()} units")
    elif options.split == "column":
        assert split_values is not None and columns.split is not None  # guaranteed by validate() and planning
        assign = split_values.str.lower().to_numpy()
        for split in SPLITS:
            if not (assign == split).any():
                raise ImportOptionsError(
                    f"machine {machine_id!r}: column {columns.split!r} (split_column) has no row with value {split!r}"
                )
    else:  # "random": validate() allows it only without time order
        strata = frame[LABEL].to_numpy() if LABEL in frame.columns else np.zeros(len(frame), dtype=np.int64)
        assign = _random_split(strata, ratios, options.seed)
        _require_filled(assign, machine_id, ratios, f"{len(frame)} rows")
    return assign


def _chronological_split(timestamps: pd.Series, ratios: Sequence[float]) -> np.ndarray:
    """One global time cut: rows sharing a timestamp stay together, so every split is later than the one before."""
    ticks = timestamps.to_numpy().astype("int64")
    ordered = np.sort(ticks)
    n = len(ticks)
    val_start, test_start = (ordered[i] if i < n else np.iinfo(np.int64).max for i in _cut_counts(n, ratios))
    return np.where(ticks < val_start, SPLITS[0], np.where(ticks < test_start, SPLITS[1], SPLITS[2]))


def _unit_split(frame: pd.DataFrame, ratios: Sequence[float]) -> np.ndarray:
    """Whole units to splits by unit count, units ordered by first timestamp, then by first row in the source."""
    starts = pd.DataFrame({"unit": frame[UNIT_ID].to_numpy(), "position": frame.index.to_numpy()})
    if TIMESTAMP in frame.columns:
        starts["time"] = frame[TIMESTAMP].to_numpy()
    first_rows = starts.groupby("unit", sort=False).min()
    order = first_rows.sort_values([c for c in ("time", "position") if c in first_rows.columns]).index
    parts = np.split(np.asarray(order), _cut_counts(len(order), ratios))
    unit_split = {unit: split for split, units in zip(SPLITS, parts) for unit in units}
    return frame[UNIT_ID].map(unit_split).to_numpy()


def _random_split(strata: np.ndarray, ratios: Sequence[float], seed: int) -> np.ndarray:
    """A seeded random split of rows, cut by `ratios` within each stratum (label value)."""
    rng = np.random.default_rng(seed)
    assign = np.empty(len(strata), dtype=object)
    for value in np.unique(strata):
        rows = rng.permutation(np.flatnonzero(strata == value))
        for split, part in zip(SPLITS, np.split(rows, _cut_counts(len(rows), ratios))):
            assign[part] = split
    return assign


def _split_labels(table: _Table, columns: _Columns) -> pd.Series | None:
    """The split_column values (train/val/test, case-insensitive); raise naming the first other value."""
    if columns.split is None:
        return None
    values = _text_values(table, columns.split, "split_column")
    bad = ~values.str.lower().isin(SPLITS).to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ImportOptionsError(
            f"{table.label}: column {columns.split!r} (split_column): {int(bad.sum())} values are not "
            f"train/val/test, first {values.iloc[first]!r} at {table.where(first)}"
        )
    return values


def _sampling_interval_minutes(train: pd.DataFrame) -> float | None:
    if TIMESTAMP not in train.columns or len(train) < 2:
        return None
    groups = train.groupby(UNIT_ID, sort=False)[TIMESTAMP] if UNIT_ID in train.columns else [(None, train[TIMESTAMP])]
    steps = pd.concat([ts.diff().dropna() for _, ts in groups])
    steps = steps[steps > pd.Timedelta(0)]
    return None if steps.empty else round(float(steps.median().total_seconds() / 60.0), 6)


def _resolve_sensor(name: str, columns: _Columns, where: str) -> str:
    """A sensor given by source or contract name -> its contract name."""
    if name in columns.sensors:
        return columns.sensors[name]
    if name in columns.sensors.values():
        return name
    raise ImportOptionsError(f"{where}: {name!r} is not a sensor column; sensors: {list(columns.sensors.values())}")


def _profile(
    machine_id: str, columns: _Columns, options: ImportOptions, critical: list[str] | None, where: str
) -> dict[str, Any] | None:
    if options.thresholds is None and options.machine_type is None:
        return None
    units = {name: _unit_of_measure(column) for column, name in columns.sensors.items()}
    sensors: dict[str, dict[str, Any]] = {}
    for given, spec in (options.thresholds or {}).items():
        name = _resolve_sensor(given, columns, f"{where}: thresholds")
        entry: dict[str, Any] = {"unit": spec.get("unit", units[name])}
        entry.update({k: float(spec[k]) for k in ("min", "typical", "max", "alarm", "trip") if spec.get(k) is not None})
        entry["direction"] = spec.get("direction", "high")
        sensors[name] = entry
    profile: dict[str, Any] = {"machine_id": machine_id, "machine_type": options.machine_type, "sensors": sensors}
    if critical is not None:
        profile["critical_sensors"] = critical
    return profile


def _critical_sensors(columns: _Columns, options: ImportOptions, where: str) -> list[str] | None:
    if options.critical_sensors is not None:
        return [_resolve_sensor(s, columns, f"{where}: critical_sensors") for s in options.critical_sensors]
    if options.thresholds:
        with_alarm = [s for s, spec in options.thresholds.items() if spec.get("alarm") is not None]
        return [_resolve_sensor(s, columns, f"{where}: thresholds") for s in with_alarm] or None
    return None


def _metadata(
    machine: str, splits: dict[str, pd.DataFrame], columns: _Columns, options: ImportOptions,
    critical: list[str] | None, source: Mapping[str, Any],
) -> dict[str, Any]:
    frame = splits["train"]
    specs: dict[str, dict[str, Any]] = {}
    for name in frame.columns:
        if name == TIMESTAMP:
            specs[name] = {"sdtype": "datetime", "datetime_format": DATETIME_FORMAT}
        elif name == UNIT_ID:
            specs[name] = {"sdtype": "id"}
        elif name in (LABEL, EVAL_ANOMALY):
            specs[name] = {"sdtype": "categorical"}
        else:
            specs[name] = {"sdtype": "numerical", "computer_representation": "Float"}
    rul_parameters: dict[str, Any] = {}
    if critical is not None:
        rul_parameters["critical_sensors"] = critical
    interval = _sampling_interval_minutes(frame)
    if interval is not None:
        rul_parameters["sampling_interval_minutes"] = interval
    if RUL in frame.columns:
        longest = max(float(df[RUL].max()) for df in splits.values())
        rul_parameters["max_operational_hours"] = options.rul_cap_hours or longest
    metadata: dict[str, Any] = {
        "METADATA_SPEC_VERSION": SPEC_VERSION,
        "machine_id": machine,
        "columns": specs,
        "time_order": TIMESTAMP in frame.columns,
    }
    if rul_parameters:
        metadata["rul_parameters"] = rul_parameters
    sensors = list(columns.sensors.values())
    missing = {s: int(sum(df[s].isna().sum() for df in splits.values())) for s in sensors}
    metadata["source"] = {
        **source,
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "options": asdict(options),
        "sensor_columns": {name: column for column, name in columns.sensors.items()},
        "ignored_columns": list(columns.ignored),
        "rows": {split: len(df) for split, df in splits.items()},
        "missing_values": {s: n for s, n in missing.items() if n},
    }
    return metadata


def _build_machines(table: _Table, options: ImportOptions, source: Mapping[str, Any]) -> list[_Machine]:
    """Everything to write, per machine; every input error is raised here, before anything is written."""
    if table.frame.empty:
        raise ImportOptionsError(f"{table.label}: no rows to import")
    columns = _plan_columns(table, options)
    frame = _contract_frame(table, columns, options)
    split_values = _split_labels(table, columns)
    critical = _critical_sensors(columns, options, table.label)
    column_order = [TIMESTAMP, UNIT_ID, *columns.sensors.values(), RUL, LABEL, EVAL_ANOMALY]
    machines = []
    for machine_id, group_value, rows in _machine_rows(table, columns, options):
        machine_frame = _sort_rows(frame.iloc[rows])
        machine_frame, n_dropped = _drop_duplicate_times(
            machine_frame, table, columns, machine_id, options.duplicate_timestamps
        )
        if options.compute_rul:
            machine_frame = _add_rul(machine_frame, options.rul_cap_hours)
        machine_frame = machine_frame[[c for c in column_order if c in machine_frame.columns]]
        values = None if split_values is None else split_values.loc[machine_frame.index]
        assign = _assign_splits(machine_frame, values, options, columns, machine_id)
        splits = {s: machine_frame[assign == s].reset_index(drop=True) for s in SPLITS}
        notes = dict(source)
        if n_dropped:
            notes["dropped_duplicate_timestamp_rows"] = n_dropped
        if group_value is not None:
            notes["group"] = {"column": columns.group, "value": group_value}
        metadata = _metadata(machine_id, splits, columns, options, critical, notes)
        profile = _profile(machine_id, columns, options, critical, table.label)
        machines.append(_Machine(machine_id, splits, metadata, profile))
    return machines


# -------------------------------------------------------------------------------------------- writing


def _existing_files(root: Path, machine_id: str) -> list[str]:
    paths = [machine_dir(root, machine_id), metadata_path(root, machine_id), profile_path(root, machine_id)]
    return [p.relative_to(root).as_posix() for p in paths if p.exists()]


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, default=str) + "\n", encoding="utf-8")


def _stage(staging: Path, machine: _Machine) -> None:
    """Write the machine under the staging root and check it against the contract."""
    mid = machine.machine_id
    machine_dir(staging, mid).mkdir(parents=True)
    metadata_dir(staging).mkdir(exist_ok=True)
    for split, df in machine.splits.items():
        df.to_parquet(split_path(staging, mid, split), index=False)
    if machine.profile is not None:
        _write_json(profile_path(staging, mid), machine.profile)
    _write_json(metadata_path(staging, mid), machine.metadata)
    # NaN in sensors is allowed here (kept as is); the pipeline's own max_nan_share decides downstream.
    problems = validate_machine(staging, mid, max_nan_share=1.0)
    if problems:
        raise ImportOptionsError(
            f"machine {mid!r}: the imported data would break the data contract:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


def _commit(staging: Path, root: Path, machine_id: str) -> None:
    """Move a staged machine into place: old metadata away first, splits, profile, new metadata last."""
    final_metadata = metadata_path(root, machine_id)
    final_profile = profile_path(root, machine_id)
    metadata_dir(root).mkdir(parents=True, exist_ok=True)
    final_metadata.unlink(missing_ok=True)
    publish_dir(machine_dir(staging, machine_id), machine_dir(root, machine_id))
    staged_profile = profile_path(staging, machine_id)
    if staged_profile.exists():
        os.replace(staged_profile, final_profile)
    else:
        final_profile.unlink(missing_ok=True)
    os.replace(metadata_path(staging, machine_id), final_metadata)


def _write_machines(root: Path, machines: list[_Machine], overwrite: bool) -> list[str]:
    root = Path(root)
    if not overwrite:
        for machine in machines:
            existing = _existing_files(root, machine.machine_id)
            if existing:
                raise ImportOptionsError(
                    f"machine {machine.machine_id!r} already exists under {root} ({', '.join(existing)}); "
                    "pass overwrite=True to replace it"
                )
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".import-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir()
        for machine in machines:
            _stage(staging, machine)
        for machine in machines:
            _commit(staging, root, machine.machine_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [m.machine_id for m in machines]


# --------------------------------------------------------------------------------------------- public


def import_data(source: Path, root: Path, options: ImportOptions, *, overwrite: bool = False) -> list[str]:
    """Import a CSV/parquet file or a directory of them into the contract under `root`; return the machine ids.

    Raises ImportOptionsError naming the file, column or option for any bad input, before anything is
    written. An existing machine is replaced only with ``overwrite=True``.
    """
    source = Path(source)
    options.validate()
    table = _read_source(source, options)
    machines = _build_machines(table, options, {"file": str(source)})
    return _write_machines(Path(root), machines, overwrite)


def import_frame(
    frame: pd.DataFrame,
    root: Path,
    options: ImportOptions,
    *,
    source: str,
    source_notes: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Like `import_data` for a DataFrame already in memory; `source` names it in messages and metadata.

    `source_notes` are added to the metadata's "source" entry (e.g. where extra columns came from).
    """
    options.validate()
    table = _frame_table(frame, source)
    machines = _build_machines(table, options, {"file": source, **(source_notes or {})})
    return _write_machines(Path(root), machines, overwrite)


def import_ai4i2020(csv_path: Path, root: Path, machine_prefix: str = "ai4i", *, overwrite: bool = False) -> list[str]:
    """AI4I 2020 as three machines `<prefix>_H`, `_L`, `_M` (one per product quality `Type`).

    Label "Machine failure" -> failure_status; the failure-mode flags TWF, HDF, PWF, OSF, RNF (which almost
    define the label) and the ids UDI and Product ID are dropped. Rows are independent processes: no time
    order, random split stratified on the label (seed 0).
    """
    options = ImportOptions(
        machine_id=machine_prefix,
        label_column=AI4I_LABEL,
        drop_columns=list(AI4I_DROPPED),
        group_column=AI4I_GROUP,
        split="random",
    )
    return import_data(Path(csv_path), root, options, overwrite=overwrite)


def import_nab_machine_temperature(
    csv_path: Path,
    windows_json: Path,
    root: Path,
    machine_id: str = "nab_machine_temperature",
    *,
    overwrite: bool = False,
) -> list[str]:
    """NAB realKnownCause/machine_temperature_system_failure as one machine.

    The single column "value" becomes sensor "machine_temperature" (its unit is not published, so it has no
    unit suffix); 5-minute steps; chronological split. The labelled anomaly windows (both ends included, as
    in NAB) become `anomaly_window`, for evaluation only. No rul, no failure label. The file repeats one
    hour (2014-01-07 02:00-02:55 appears twice, 12 rows); the first copy in file order is kept, so 22,683
    of its 22,695 rows are imported (the count is recorded in the metadata's "source").
    """
    csv_path, windows_json = Path(csv_path), Path(windows_json)
    frame = _read_file(csv_path, ",")
    if list(frame.columns) != ["timestamp", "value"]:
        raise ImportOptionsError(
            f"{csv_path}: expected the NAB columns ['timestamp', 'value'], found {list(frame.columns)}"
        )
    options = ImportOptions(
        machine_id=machine_id,
        time_column="timestamp",
        rename={"value": NAB_SENSOR},
        eval_label_column=EVAL_ANOMALY,
        duplicate_timestamps="first",
    )
    # Only to place the windows; the importer parses (and reports bad) timestamps itself.
    stamps = pd.to_datetime(frame["timestamp"], errors="coerce")
    in_window = np.zeros(len(frame), dtype=bool)
    for start, end in _nab_windows(windows_json, NAB_WINDOWS_KEY):
        in_window |= ((stamps >= start) & (stamps <= end)).to_numpy()
    frame[EVAL_ANOMALY] = in_window.astype("int64")
    notes = {"anomaly_windows": {"file": str(windows_json), "key": NAB_WINDOWS_KEY}}
    return import_frame(frame, root, options, source=str(csv_path), source_notes=notes, overwrite=overwrite)


def _nab_windows(path: Path, key: str) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The (start, end) anomaly windows of one NAB data file from combined_windows.json."""
    try:
        windows = json.loads(path.read_text(encoding="utf-8"))[key]
        return [(pd.Timestamp(start), pd.Timestamp(end)) for start, end in windows]
    except FileNotFoundError:
        raise ImportOptionsError(f"{path}: anomaly windows file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ImportOptionsError(
            f"{path}: no usable anomaly windows under key {key!r} ({type(exc).__name__}: {exc})"
        ) from None
