"""The data contract: what the generator (and the importer) write and what every later step reads.

Layout under a data root (see paths.py):

- ``synthetic/<machine_id>/{train,val,test}.parquet``: ``timestamp`` (datetime for a clock axis, a number for
  a cycle/step axis; may be absent only when the metadata says ``"time_order": false``), one numeric column per
  sensor, optional ``rul`` (time to failure in the data's time unit, >= 0), optional ``unit_id`` (physical unit
  or run-to-failure lifecycle: time order and uniqueness hold per unit; without it the whole split is one unit),
  optional ``failure_status`` and ``anomaly_window`` (0/1).
- ``metadata/<machine_id>_metadata.json``: SDV single-table metadata, optionally with ``machine_id``,
  ``rul_parameters``, ``time_order``, ``time_unit`` (seconds, minutes, hours, days, cycles or steps; default
  hours: see `timeaxis.py`) and ``machine_type``. Unknown keys are kept in ``extra``.
- ``metadata/<machine_id>_profile.json`` (optional): machine type and per-sensor limits (alarm, trip, ...).

`validate_machine` returns every problem at once, each naming the machine, the file (relative to the data root)
and the column; `load_machine` raises `ContractError` with that full list or returns the data sorted per unit.
Row numbers in messages are 0-based positions in the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from pdm_pipeline.core.paths import (
    InvalidMachineIdError,
    metadata_path,
    profile_path,
    split_path,
    validate_machine_id,
)
from pdm_pipeline.core.schema import EVAL_ANOMALY, LABEL, RESERVED_COLUMNS, RUL, SPLITS, TIMESTAMP, UNIT_ID
from pdm_pipeline.core.timeaxis import DEFAULT_TIME_UNIT, TIME_UNITS, is_clock
from pdm_pipeline.errors import PdmError

SPEC_VERSION = "SINGLE_TABLE_V1"
# The SDV single-table sdtypes a column may have; only non-reserved "numerical" columns are sensors.
SDTYPES: frozenset[str] = frozenset({"numerical", "datetime", "id", "categorical", "boolean"})
# The sdtypes the metadata may give each reserved column.
RESERVED_SDTYPES: dict[str, frozenset[str]] = {
    TIMESTAMP: frozenset({"datetime", "numerical"}),
    RUL: frozenset({"numerical"}),
    UNIT_ID: frozenset({"id", "categorical"}),
    LABEL: frozenset({"categorical", "numerical", "boolean"}),
    EVAL_ANOMALY: frozenset({"categorical", "numerical", "boolean"}),
}
DIRECTIONS: tuple[str, ...] = ("high", "low")
_METADATA_KEYS = frozenset(
    {"METADATA_SPEC_VERSION", "columns", "machine_id", "rul_parameters", "time_order", "time_unit", "machine_type"}
)
_PROFILE_KEYS = frozenset({"machine_type", "sensors", "critical_sensors"})
_LIMIT_KEYS: tuple[str, ...] = ("min", "typical", "max", "alarm", "trip")
_PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class Problem:
    """One breach of the contract: which machine, which file (relative to the data root), which column."""

    machine_id: str
    file: str
    column: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.column is not None:
            where = f"{where} column '{self.column}'" if where else f"column '{self.column}'"
        return f"{self.machine_id}: {where}: {self.message}" if where else f"{self.machine_id}: {self.message}"


class ContractError(PdmError, ValueError):
    """The data of one machine breaks the contract; `.problems` lists every breach found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        machines = sorted({p.machine_id for p in self.problems})
        n = len(self.problems)
        header = f"data contract violated for machine {', '.join(map(repr, machines))}: {n} problem{'s' * (n != 1)}"
        super().__init__("\n".join([header, *(f"  - {p}" for p in self.problems)]))

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the problems (the default would pass the message string as `problems`).
        return (type(self), (self.problems,))


@dataclass(frozen=True)
class SensorLimits:
    """Operating levels of one sensor from the machine profile; `direction` says which side is bad."""

    unit: str | None = None
    min: float | None = None
    typical: float | None = None
    max: float | None = None
    alarm: float | None = None
    trip: float | None = None
    direction: str = "high"


@dataclass(frozen=True)
class MachineProfile:
    """The optional machine profile: type, per-sensor limits, critical sensors; unknown keys in `extra`."""

    machine_type: str | None
    sensors: dict[str, SensorLimits]
    critical_sensors: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MachineMetadata:
    """The parsed SDV metadata of one machine; unknown top-level keys are kept in `extra`."""

    machine_id: str
    columns: dict[str, dict[str, Any]]
    # Numerical columns minus the reserved ones (timestamp, rul, unit_id, failure_status, anomaly_window).
    sensors: tuple[str, ...]
    has_rul: bool
    has_unit: bool
    has_label: bool
    time_order: bool
    rul_parameters: dict[str, Any]
    # From rul_parameters.critical_sensors, else from the profile, else empty.
    critical_sensors: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    # Unit of `timestamp` steps, rul and horizons (timeaxis.TIME_UNITS).
    time_unit: str = DEFAULT_TIME_UNIT
    # The machine's type or fleet (metadata, else profile): machines of one type may share pooled models.
    machine_type: str | None = None


@dataclass
class MachineData:
    """A validated machine: metadata, optional profile and the three splits (sorted per unit by timestamp)."""

    machine_id: str
    metadata: MachineMetadata
    profile: MachineProfile | None
    splits: dict[str, pd.DataFrame]
    # machine_fingerprint of the files these splits were read from (when the reader took it): the data version.
    fingerprint: str | None = None
    # gates.data_quality's outcomes by gate settings: the machine_dataset step judges the data, the release reads
    # the same judgement back from the stored dataset instead of judging again.
    quality: dict[str, list] = field(default_factory=dict, repr=False, compare=False)

    @property
    def sensors(self) -> tuple[str, ...]:
        return self.metadata.sensors


class _Report:
    """Collects problems of one machine, naming files relative to the data root."""

    def __init__(self, root: Path, machine_id: str) -> None:
        self.root = root
        self.machine_id = machine_id
        self.problems: list[Problem] = []

    def add(self, path: Path | None, column: str | None, message: str) -> None:
        self.problems.append(Problem(self.machine_id, self.relative(path), column, message))

    def relative(self, path: Path | None) -> str:
        if path is None:
            return ""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()


# ----------------------------------------------------------------------------------------------- JSON files


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _read_json_object(path: Path, report: _Report) -> dict[str, Any] | None:
    """The JSON object in `path`, or None after reporting why it cannot be had."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        report.add(path, None, f"file not found (data root {report.root})")
        return None
    except UnicodeDecodeError as exc:
        report.add(path, None, f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})")
        return None
    except OSError as exc:
        report.add(path, None, f"cannot read file: {exc.strerror or exc}")
        return None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        report.add(path, None, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
        return None
    if not isinstance(raw, dict):
        report.add(path, None, f"top level is a JSON {_json_type(raw)}, expected a JSON object")
        return None
    return raw


def _string_list(value: object, key: str, path: Path, report: _Report) -> tuple[str, ...]:
    """`value` as a tuple of strings, or () after reporting that it is not a list of strings."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    report.add(path, None, f'"{key}" must be a list of sensor names, got {json.dumps(value)[:80]}')
    return ()


# ------------------------------------------------------------------------------------------------- profile


def _parse_limit(value: object, name: str, key: str, path: Path, report: _Report) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        return float(value)
    report.add(path, name, f'"{key}" must be a finite number or null, got {json.dumps(value)[:40]}')
    return None


def _parse_sensor_limits(name: str, spec: object, path: Path, report: _Report) -> SensorLimits | None:
    if not isinstance(spec, dict):
        report.add(path, name, f"sensor entry is a JSON {_json_type(spec)}, expected an object")
        return None
    unit = spec.get("unit")
    if unit is not None and not isinstance(unit, str):
        report.add(path, name, f'"unit" must be a string, got {json.dumps(unit)[:40]}')
        unit = None
    direction = spec.get("direction", "high")
    if direction not in DIRECTIONS:
        report.add(path, name, f'"direction" is {json.dumps(direction)[:40]}, expected "high" or "low"')
        direction = "high"
    values = {key: _parse_limit(spec.get(key), name, key, path, report) for key in _LIMIT_KEYS}
    limits = SensorLimits(unit=unit, direction=direction, **values)
    lo, hi = limits.min, limits.max
    if lo is not None and hi is not None and lo > hi:
        report.add(path, name, f"min {lo:g} is above max {hi:g}")
    alarm, trip = limits.alarm, limits.trip
    if alarm is not None and trip is not None:
        if direction == "high" and alarm > trip:
            report.add(path, name, f'alarm {alarm:g} is above trip {trip:g} for a "high" sensor (alarm comes first)')
        if direction == "low" and alarm < trip:
            report.add(path, name, f'alarm {alarm:g} is below trip {trip:g} for a "low" sensor (alarm comes first)')
    return limits


def _parse_profile(raw: dict[str, Any], path: Path, report: _Report) -> MachineProfile:
    machine_type = raw.get("machine_type")
    if machine_type is not None and not isinstance(machine_type, str):
        report.add(path, None, f'"machine_type" must be a string, got {json.dumps(machine_type)[:40]}')
        machine_type = None
    sensors_raw = raw.get("sensors", {})
    sensors: dict[str, SensorLimits] = {}
    if isinstance(sensors_raw, dict):
        for name, spec in sensors_raw.items():
            limits = _parse_sensor_limits(name, spec, path, report)
            if limits is not None:
                sensors[name] = limits
    else:
        report.add(path, None, f'"sensors" is a JSON {_json_type(sensors_raw)}, expected an object')
    critical: tuple[str, ...] = ()
    if "critical_sensors" in raw:
        critical = _string_list(raw["critical_sensors"], "critical_sensors", path, report)
    extra = {k: v for k, v in raw.items() if k not in _PROFILE_KEYS}
    return MachineProfile(machine_type=machine_type, sensors=sensors, critical_sensors=critical, extra=extra)


def _load_profile(root: Path, machine_id: str, report: _Report) -> MachineProfile | None:
    path = profile_path(root, machine_id)
    if not path.exists():
        return None
    raw = _read_json_object(path, report)
    return None if raw is None else _parse_profile(raw, path, report)


# ------------------------------------------------------------------------------------------------ metadata


def _parse_columns(columns: dict[str, Any], path: Path, report: _Report) -> tuple[str, ...]:
    """Check every column spec; return the sensors (non-reserved numerical columns)."""
    sensors: list[str] = []
    for name, spec in columns.items():
        if not isinstance(spec, dict):
            report.add(path, name, f"column spec is a JSON {_json_type(spec)}, expected an object with \"sdtype\"")
            continue
        sdtype = spec.get("sdtype")
        if sdtype not in SDTYPES:
            found = "missing" if "sdtype" not in spec else f"{json.dumps(sdtype)[:40]}"
            report.add(path, name, f"sdtype {found}, expected one of {', '.join(sorted(SDTYPES))}")
        elif name in RESERVED_SDTYPES and sdtype not in RESERVED_SDTYPES[name]:
            expected = " or ".join(sorted(RESERVED_SDTYPES[name]))
            report.add(path, name, f"sdtype '{sdtype}' for reserved column '{name}', expected {expected}")
        elif sdtype == "numerical" and name not in RESERVED_COLUMNS:
            sensors.append(name)
    return tuple(sensors)


def _parse_metadata(
    raw: dict[str, Any], machine_id: str, path: Path, profile: MachineProfile | None, report: _Report
) -> MachineMetadata | None:
    """Parse and check the metadata; return it whenever its columns are usable (problems go to `report`)."""
    if "METADATA_SPEC_VERSION" not in raw:
        report.add(path, None, f"missing METADATA_SPEC_VERSION (expected '{SPEC_VERSION}')")
    elif raw["METADATA_SPEC_VERSION"] != SPEC_VERSION:
        found = json.dumps(raw["METADATA_SPEC_VERSION"])[:40]
        report.add(path, None, f"METADATA_SPEC_VERSION is {found}, expected '{SPEC_VERSION}'")
    if "machine_id" in raw and raw["machine_id"] != machine_id:
        found = json.dumps(raw["machine_id"])[:70]
        report.add(path, None, f"machine_id is {found}, but this file belongs to machine '{machine_id}'")

    time_order = raw.get("time_order", True)
    if not isinstance(time_order, bool):
        report.add(path, None, f'"time_order" must be true or false, got {json.dumps(time_order)[:40]}')
        time_order = True
    time_unit = raw.get("time_unit", DEFAULT_TIME_UNIT)
    if time_unit not in TIME_UNITS:
        report.add(path, None, f'"time_unit" is {json.dumps(time_unit)[:40]}, expected one of {", ".join(TIME_UNITS)}')
        time_unit = DEFAULT_TIME_UNIT
    machine_type = raw.get("machine_type", profile.machine_type if profile is not None else None)
    if machine_type is not None and not isinstance(machine_type, str):
        report.add(path, None, f'"machine_type" must be a string, got {json.dumps(machine_type)[:40]}')
        machine_type = None

    rul_parameters = raw.get("rul_parameters", {})
    if not isinstance(rul_parameters, dict):
        report.add(path, None, f'"rul_parameters" is a JSON {_json_type(rul_parameters)}, expected an object')
        rul_parameters = {}

    columns = raw.get("columns")
    if not isinstance(columns, dict) or not columns:
        found = "missing" if "columns" not in raw else f"a JSON {_json_type(columns)}" if columns else "empty"
        report.add(path, None, f'"columns" is {found}, expected an object mapping column names to {{"sdtype": ...}}')
        return None
    sensors = _parse_columns(columns, path, report)
    if not sensors:
        report.add(path, None, "no sensor columns (no numerical column besides the reserved ones)")
    if time_order and TIMESTAMP not in columns:
        report.add(
            path, TIMESTAMP, 'column missing from "columns": required unless the metadata says "time_order": false'
        )
    elif TIMESTAMP in columns and isinstance(columns[TIMESTAMP], dict):
        expected = "datetime" if is_clock(time_unit) else "numerical"
        found = columns[TIMESTAMP].get("sdtype")
        if found in RESERVED_SDTYPES[TIMESTAMP] and found != expected:
            report.add(
                path, TIMESTAMP,
                f"sdtype '{found}' but time_unit '{time_unit}' needs '{expected}' "
                f"({'datetimes' if expected == 'datetime' else 'a cycle/step counter'})",
            )

    if "critical_sensors" in rul_parameters:
        critical = _string_list(rul_parameters["critical_sensors"], "rul_parameters.critical_sensors", path, report)
        for name in critical:
            if name not in sensors:
                report.add(path, name, "listed in rul_parameters.critical_sensors but not a sensor column")
    else:
        critical = profile.critical_sensors if profile is not None else ()

    return MachineMetadata(
        machine_id=machine_id,
        columns=dict(columns),
        sensors=sensors,
        has_rul=RUL in columns,
        has_unit=UNIT_ID in columns,
        has_label=LABEL in columns,
        time_order=time_order,
        rul_parameters=dict(rul_parameters),
        critical_sensors=critical,
        extra={k: v for k, v in raw.items() if k not in _METADATA_KEYS},
        time_unit=time_unit,
        machine_type=machine_type,
    )


def _load_metadata(
    root: Path, machine_id: str, profile: MachineProfile | None, report: _Report
) -> MachineMetadata | None:
    path = metadata_path(root, machine_id)
    raw = _read_json_object(path, report)
    return None if raw is None else _parse_metadata(raw, machine_id, path, profile, report)


# ----------------------------------------------------------------------------------------------- parquet


# Bytes a run holds per input value at its peak: the float64 value, ~30 rolling-window features per sensor,
# and the copies the model libraries make (measured: a 2M-row, 10-sensor split peaked past 5 GB).
RUN_BYTES_PER_VALUE = 8 * 40


def available_memory_bytes() -> int | None:
    """MemAvailable of this host (Linux), else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _size_problem(rows: int, columns: int, max_rows: int | None) -> str | None:
    """Why a split is too big to train (rows over the limit, or more memory than this host has), or None."""
    need = rows * columns * RUN_BYTES_PER_VALUE
    available = available_memory_bytes()
    estimate = f"a run would need about {need / 1e9:.1f} GB of memory"
    if available:
        estimate += f", this host has {available / 1e9:.1f} GB available"
    if max_rows is not None and rows > max_rows:
        return (f"{rows:,} rows is more than max_split_rows={max_rows:,} ({estimate}): downsample the split, or "
                f"raise the limit with --set max_split_rows=N")
    if available and need > 0.8 * available:
        return f"{rows:,} rows x {columns} columns is too big for this host ({estimate}): downsample the split"
    return None


def _read_parquet(path: Path, report: _Report, max_rows: int | None = None) -> pd.DataFrame | None:
    """Read a split once; every failure (missing, not parquet, truncated, corrupt, too big) becomes a problem.

    The size is judged from the parquet footer before anything is read, so a split too big to train is
    refused with its row count instead of filling the memory."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            report.add(path, None, "not a regular file")
            return None
        with path.open("rb") as fh:
            head = fh.read(4)
            fh.seek(max(size - 4, 0))
            tail = fh.read(4)
    except FileNotFoundError:
        report.add(path, None, f"file not found (data root {report.root})")
        return None
    except OSError as exc:
        report.add(path, None, f"cannot read file: {exc.strerror or exc}")
        return None
    if head != _PARQUET_MAGIC:
        report.add(path, None, f"not a parquet file ({size} bytes, starts with {head!r} instead of b'PAR1')")
        return None
    if size < 12 or tail != _PARQUET_MAGIC:
        report.add(path, None, f"truncated or corrupt parquet file ({size} bytes, no b'PAR1' footer)")
        return None
    try:
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as parquet:
            too_big = _size_problem(parquet.metadata.num_rows, parquet.metadata.num_columns, max_rows)
            if too_big:
                report.add(path, None, too_big)
                return None
            return parquet.read().to_pandas()
    except Exception as exc:  # any reader failure is a data problem, reported instead of raised
        detail = " ".join(str(exc).replace(str(path), report.relative(path)).split())[:160]
        report.add(path, None, f"corrupt parquet file: {type(exc).__name__}: {detail}")
        return None


# ------------------------------------------------------------------------------------------ split checks


def _is_number_column(series: pd.Series) -> bool:
    return ptypes.is_numeric_dtype(series.dtype) and not ptypes.is_bool_dtype(series.dtype)


def _first_value(series: pd.Series) -> object:
    present = series.dropna()
    return present.iloc[0] if len(present) else None


def _plain(value: object) -> object:
    """A numpy scalar as the Python value (so messages show 3, not np.int64(3))."""
    return value.item() if isinstance(value, np.generic) else value


def _as_float(series: pd.Series) -> np.ndarray:
    return series.to_numpy(dtype="float64", na_value=np.nan)


def _check_numeric(df: pd.DataFrame, column: str, what: str, path: Path, report: _Report) -> np.ndarray | None:
    """Report a non-numeric dtype and any +-inf value; return the values as floats (None if not numeric)."""
    series = df[column]
    if not _is_number_column(series):
        message = f"dtype {series.dtype}, expected a numeric {what} column"
        sample = _first_value(series)
        if isinstance(sample, str):
            message += f" (holds strings such as {sample[:30]!r})"
        report.add(path, column, message)
        return None
    values = _as_float(series)
    inf = np.isinf(values)
    if inf.any():
        n_pos, n_neg = int((values == np.inf).sum()), int((values == -np.inf).sum())
        first = int(np.flatnonzero(inf)[0])
        report.add(path, column, f"{n_pos + n_neg} infinite values (+inf {n_pos}, -inf {n_neg}), first at row {first}")
    return values


def _check_nan(values: np.ndarray, column: str, path: Path, limit: float, report: _Report) -> None:
    n_nan = int(np.isnan(values).sum())
    share = n_nan / len(values)
    if share > limit:
        report.add(path, column, f"{share:.1%} NaN (limit {limit:.1%}, {n_nan} of {len(values)} rows)")


def _check_no_missing(missing: np.ndarray, column: str, noun: str, path: Path, report: _Report) -> None:
    """Report missing entries (a boolean mask) of a column that must be complete."""
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        report.add(path, column, f"{int(missing.sum())} missing {noun}, first at row {first}")


def _check_flag(df: pd.DataFrame, column: str, path: Path, report: _Report) -> None:
    """0/1 columns (label, anomaly window): no missing value, nothing else than 0 and 1."""
    series = df[column]
    if ptypes.is_bool_dtype(series.dtype):
        values = _as_float(series)
    else:
        values = _check_numeric(df, column, "0/1", path, report)
        if values is None:
            return
    _check_no_missing(np.isnan(values), column, "values", path, report)
    other = ~np.isnan(values) & (values != 0) & (values != 1)
    if other.any():
        first = int(np.flatnonzero(other)[0])
        report.add(path, column, f"{int(other.sum())} values other than 0/1 (e.g. {values[first]:g} at row {first})")


def _check_unit_id(series: pd.Series, path: Path, report: _Report) -> None:
    if ptypes.is_float_dtype(series.dtype) or ptypes.is_bool_dtype(series.dtype):
        report.add(path, UNIT_ID, f"dtype {series.dtype}, expected integer or string unit ids")
    _check_no_missing(series.isna().to_numpy(), UNIT_ID, "unit ids", path, report)


def _check_timestamp_dtype(series: pd.Series, path: Path, report: _Report, time_unit: str) -> bool:
    """True if the column has the kind of values the time unit needs (datetimes, or cycle/step numbers);
    else report what it holds (and whether strings would parse as dates)."""
    if not is_clock(time_unit):
        if _is_number_column(series):
            return True
        kind = "datetimes" if ptypes.is_datetime64_any_dtype(series.dtype) else f"dtype {series.dtype}"
        report.add(
            path, TIMESTAMP,
            f"{kind}, but time_unit '{time_unit}' needs a number (a cycle or step counter); "
            "set the metadata's time_unit to a clock unit (seconds, minutes, hours, days) for datetimes",
        )
        return False
    if ptypes.is_datetime64_any_dtype(series.dtype):
        return True
    message = f"dtype {series.dtype}, expected datetime (time_unit '{time_unit}')"
    if _is_number_column(series):
        message += "; for a cycle or step counter set the metadata's time_unit to 'cycles' or 'steps'"
    if ptypes.is_object_dtype(series.dtype) or ptypes.is_string_dtype(series.dtype):
        present = series.dropna()
        try:
            parsed = pd.to_datetime(present, errors="coerce", format="mixed")
            bad = parsed.isna().to_numpy()
        except (TypeError, ValueError):  # e.g. mixed time zones, non-string objects
            bad = np.ones(len(present), dtype=bool)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            row = int(np.flatnonzero(series.notna().to_numpy())[first])
            sample = str(present.iloc[first])[:30]
            message += f": {int(bad.sum())} values are not parseable dates, first {sample!r} at row {row}"
        else:
            message += " (the strings parse as dates: store them as a parquet timestamp)"
    report.add(path, TIMESTAMP, message)
    return False


def _check_time_order(ts: pd.Series, units: pd.Series | None, path: Path, report: _Report) -> None:
    """No missing timestamp; strictly increasing in file order within each unit (no step back, no repeat)."""
    if ptypes.is_datetime64_any_dtype(ts.dtype):
        stamps = pd.DatetimeIndex(ts)
        valid = ~stamps.isna()
        all_ticks = stamps.asi8
    else:
        all_ticks = ts.to_numpy(dtype="float64", na_value=np.nan)
        valid = np.isfinite(all_ticks)
    _check_no_missing(~valid, TIMESTAMP, "timestamps (NaT)" if ptypes.is_datetime64_any_dtype(ts.dtype) else "timestamps", path, report)
    rows = np.flatnonzero(valid)
    ticks = all_ticks[rows]
    codes = pd.factorize(units)[0][rows] if units is not None else np.zeros(len(rows), dtype=np.int64)
    scope = "within a unit" if units is not None else "in the split"
    of_unit = " of their unit" if units is not None else ""

    def where(row: int) -> str:
        unit = f"unit {_plain(units.iloc[row])!r}, " if units is not None else ""
        return f"row {row} ({unit}{ts.iloc[row]})"

    # Rows of each unit, kept in file order: a step back is a row earlier than the previous row of its unit.
    order = np.argsort(codes, kind="stable")
    same_unit = codes[order][1:] == codes[order][:-1]
    back = same_unit & (ticks[order][1:] < ticks[order][:-1])
    if back.any():
        first = int(rows[order[1:][back]].min())
        report.add(
            path, TIMESTAMP,
            f"not sorted {scope}: {int(back.sum())} rows earlier than the previous row{of_unit}, "
            f"first at {where(first)}",
        )
    duplicated = pd.MultiIndex.from_arrays([codes, ticks]).duplicated()
    if duplicated.any():
        first = int(rows[np.flatnonzero(duplicated)[0]])
        report.add(path, TIMESTAMP, f"{int(duplicated.sum())} duplicate timestamps {scope}, first at {where(first)}")


def _check_split(
    df: pd.DataFrame, path: Path, metadata: MachineMetadata | None, max_nan_share: float, report: _Report
) -> pd.DataFrame:
    """Report every problem of one split; return it with duplicate column names dropped."""
    dup_names = df.columns[df.columns.duplicated()].unique()
    for name in dup_names:
        report.add(path, str(name), "column appears more than once")
    df = df.loc[:, ~df.columns.duplicated()]

    if metadata is not None:
        for name in df.columns:
            if name not in metadata.columns:
                report.add(path, str(name), "column in the data but not in the metadata")
        for name in metadata.columns:
            if name not in df.columns:
                report.add(path, name, "column in the metadata but missing from the data")
        sensors = [s for s in metadata.sensors if s in df.columns]
        time_order, time_unit = metadata.time_order, metadata.time_unit
        for name, spec in metadata.columns.items():
            sdtype = spec.get("sdtype") if isinstance(spec, dict) else None
            if (
                name not in RESERVED_COLUMNS and name in df.columns and sdtype in SDTYPES
                and sdtype != "numerical" and _is_number_column(df[name])
            ):
                report.add(
                    path, name,
                    f"holds numbers (dtype {df[name].dtype}) but the metadata declares sdtype '{sdtype}': it would "
                    "be silently left out of the sensors; declare it 'numerical' to use it, or drop the column",
                )
    else:  # metadata unusable (already reported): still check what the data shows by itself
        sensors = [c for c in df.columns if c not in RESERVED_COLUMNS and _is_number_column(df[c])]
        time_order, time_unit = True, DEFAULT_TIME_UNIT

    if len(df) == 0:
        report.add(path, None, "empty split (0 rows)")
        return df

    for name in sensors:
        values = _check_numeric(df, name, "sensor", path, report)
        if values is not None:
            _check_nan(values, name, path, max_nan_share, report)
    if RUL in df.columns:
        rul = _check_numeric(df, RUL, "rul", path, report)
        if rul is not None:
            _check_no_missing(np.isnan(rul), RUL, "values", path, report)
            negative = rul < 0
            if negative.any():
                message = f"{int(negative.sum())} negative values (min {np.nanmin(rul):g}); rul must be >= 0"
                report.add(path, RUL, message)
    for flag in (LABEL, EVAL_ANOMALY):
        if flag in df.columns:
            _check_flag(df, flag, path, report)
    units = df[UNIT_ID] if UNIT_ID in df.columns else None
    if units is not None:
        _check_unit_id(units, path, report)
    if TIMESTAMP in df.columns and _check_timestamp_dtype(df[TIMESTAMP], path, report, time_unit) and time_order:
        _check_time_order(df[TIMESTAMP], units, path, report)
    return df


def _check_same_columns(frames: dict[str, pd.DataFrame], paths: dict[str, Path], report: _Report) -> None:
    """Every split has the columns of the first readable split (normally train).

    A column already reported for that split (against the metadata) is not reported twice.
    """
    if not frames:
        return
    reported = {(p.file, p.column) for p in report.problems}
    ref_split, ref = next(iter(frames.items()))
    ref_name = paths[ref_split].name
    for split, df in frames.items():
        path = paths[split]
        extra = [c for c in df.columns if c not in ref.columns]
        missing = [c for c in ref.columns if c not in df.columns]
        for names, message in (
            (extra, f"column not in {ref_name} (all splits must have the same columns)"),
            (missing, f"column missing here but present in {ref_name}"),
        ):
            for name in names:
                if (report.relative(path), str(name)) not in reported:
                    report.add(path, str(name), message)


def _check_time_zones(frames: dict[str, pd.DataFrame], paths: dict[str, Path], report: _Report) -> None:
    """Every split's timestamps are all time-zone aware or all naive (mixing them would compare apples with
    pears: a naive 10:00 and an aware 10:00+02:00 are not the same instant)."""
    zones = {
        split: str(df[TIMESTAMP].dt.tz)
        for split, df in frames.items()
        if TIMESTAMP in df.columns and ptypes.is_datetime64_any_dtype(df[TIMESTAMP].dtype)
    }
    kinds = {split: ("naive" if tz == "None" else f"time-zone aware ({tz})") for split, tz in zones.items()}
    if len({k == "naive" for k in kinds.values()}) > 1:
        listing = ", ".join(f"{paths[s].name} {k}" for s, k in kinds.items())
        for split, kind in kinds.items():
            if kind == "naive":
                report.add(
                    paths[split], TIMESTAMP,
                    f"timestamps are naive but other splits are time-zone aware ({listing}): store every split "
                    "in one convention (UTC recommended)",
                )


def split_order_problems(splits: dict[str, pd.DataFrame], time_unit: str) -> list[str]:
    """Time order across splits, in words (empty = in order).

    Rows of one unit must come in split order: all its train rows before its val rows before its test rows (a
    unit's later rows can never train a model evaluated on its earlier rows). When units do not overlap in time
    (one unit, or lifecycles that follow each other), the splits as a whole must also be ordered: train ends
    before val starts, val before test. Units that run side by side (a fleet split by unit, engines counting
    cycles from 1) are compared unit by unit only.
    """
    from pdm_pipeline.core.timeaxis import time_values, units_share_origin

    present = {s: df for s, df in splits.items() if TIMESTAMP in df.columns and len(df)}
    if len(present) < 2:
        return []
    try:
        values = {s: time_values(df, time_unit) for s, df in present.items()}
    except ValueError as exc:  # dtype problems are reported by the split checks
        return [str(exc)]
    problems: list[str] = []
    order = [s for s in SPLITS if s in present]
    units = {
        s: (df[UNIT_ID].astype(str).to_numpy() if UNIT_ID in df.columns else np.full(len(df), "")) for s, df in present.items()
    }
    spans: dict[str, pd.DataFrame] = {
        s: pd.DataFrame({"u": units[s], "t": values[s]}).groupby("u")["t"].agg(["min", "max"]) for s in order
    }
    for i, earlier in enumerate(order):
        for later in order[i + 1:]:
            shared = spans[earlier].index.intersection(spans[later].index)
            bad = [u for u in shared if spans[earlier].loc[u, "max"] >= spans[later].loc[u, "min"]]
            if bad:
                who = "the data (no unit_id)" if bad == [""] else f"{len(bad)} unit(s), e.g. {bad[0]!r}"
                problems.append(
                    f"{later} rows of {who} are not later than its {earlier} rows "
                    f"({earlier} runs to {_time_text(spans[earlier].loc[bad[0], 'max'], time_unit)}, "
                    f"{later} starts at {_time_text(spans[later].loc[bad[0], 'min'], time_unit)})"
                )
    combined = pd.concat([df for df in present.values()], ignore_index=True)
    if is_clock(time_unit) and not units_share_origin(combined, time_unit):
        for i, earlier in enumerate(order):
            for later in order[i + 1:]:
                end, start = values[earlier].max(), values[later].min()
                if end >= start:
                    problems.append(
                        f"{earlier} ends at {_time_text(end, time_unit)}, after {later} starts at "
                        f"{_time_text(start, time_unit)}: the {later} split must lie later in time"
                    )
    return list(dict.fromkeys(problems))


def _time_text(value: float, time_unit: str) -> str:
    if is_clock(time_unit):
        from pdm_pipeline.core.timeaxis import seconds_per_unit

        return str(pd.Timestamp(value * (seconds_per_unit(time_unit) or 1.0), unit="s"))
    return f"{value:g} {time_unit}"


def _check_profile_sensors(profile: MachineProfile, metadata: MachineMetadata, path: Path, report: _Report) -> None:
    for name in profile.sensors:
        if name not in metadata.sensors:
            report.add(path, name, "profile sensor is not a sensor column of the data")
    for name in profile.critical_sensors:
        if name not in metadata.sensors:
            report.add(path, name, "listed in critical_sensors but not a sensor column of the data")


# ------------------------------------------------------------------------------------------------- public


@dataclass
class _Inspection:
    problems: list[Problem]
    metadata: MachineMetadata | None = None
    profile: MachineProfile | None = None
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)


def _require_valid_id(machine_id: object) -> None:
    """Raise ContractError (one problem, no file) for a machine id that cannot safely become a path."""
    try:
        validate_machine_id(machine_id)
    except InvalidMachineIdError as exc:
        raise ContractError([Problem(str(machine_id), "", None, str(exc))]) from None


def _inspect(root: Path, machine_id: str, max_nan_share: float, max_rows: int | None = None) -> _Inspection:
    """Read every file of the machine once and check it; the heart of validate_machine and load_machine."""
    if not (0.0 <= max_nan_share <= 1.0):
        raise ValueError(f"max_nan_share={max_nan_share!r} must be between 0 and 1")
    try:
        _require_valid_id(machine_id)
    except ContractError as exc:  # checked first: nothing else is touched, no path is built from the id
        return _Inspection(exc.problems)
    root = Path(root)
    report = _Report(root, machine_id)
    profile = _load_profile(root, machine_id, report)
    metadata = _load_metadata(root, machine_id, profile, report)
    paths = {split: split_path(root, machine_id, split) for split in SPLITS}
    frames: dict[str, pd.DataFrame] = {}
    for split, path in paths.items():
        df = _read_parquet(path, report, max_rows)
        if df is not None:
            frames[split] = _check_split(df, path, metadata, max_nan_share, report)
    _check_same_columns(frames, paths, report)
    _check_time_zones(frames, paths, report)
    if metadata is not None and metadata.time_order and not any(p.column == TIMESTAMP for p in report.problems):
        for message in split_order_problems(frames, metadata.time_unit):
            report.add(None, TIMESTAMP, f"time order across splits: {message}")
    if profile is not None and metadata is not None:
        _check_profile_sensors(profile, metadata, profile_path(root, machine_id), report)
    return _Inspection(report.problems, metadata, profile, frames)


def load_profile(root: str | Path, machine_id: str) -> MachineProfile | None:
    """The machine profile, or None when it does not exist; raises ContractError if it is broken."""
    _require_valid_id(machine_id)
    report = _Report(Path(root), machine_id)
    profile = _load_profile(Path(root), machine_id, report)
    if report.problems:
        raise ContractError(report.problems)
    return profile


def load_metadata(root: str | Path, machine_id: str) -> MachineMetadata:
    """The parsed metadata; raises ContractError listing every problem of it (and of the profile, if present).

    The profile is read too because the critical sensors fall back to it when rul_parameters has none.
    """
    _require_valid_id(machine_id)
    report = _Report(Path(root), machine_id)
    profile = _load_profile(Path(root), machine_id, report)
    metadata = _load_metadata(Path(root), machine_id, profile, report)
    if report.problems:
        raise ContractError(report.problems)
    assert metadata is not None  # an unusable metadata file is always reported
    return metadata


def validate_machine(root: str | Path, machine_id: str, *, max_nan_share: float = 0.0,
                     max_rows: int | None = None) -> list[Problem]:
    """Every contract problem of one machine at once (empty list = valid). Never raises for data problems.

    `max_nan_share` is the largest share of NaN allowed per sensor and split (0.0 = none). An invalid machine
    id is reported alone: no path is built from it.
    """
    return _inspect(Path(root), machine_id, max_nan_share, max_rows).problems


def load_machine(root: str | Path, machine_id: str, *, max_nan_share: float = 0.0,
                 max_rows: int | None = None) -> MachineData:
    """Validate and load a machine; raises ContractError with the full list of problems.

    Each split comes back with its rows grouped by unit (units in order of first appearance) and, unless the
    metadata says "time_order": false, sorted by timestamp within each unit; with a fresh RangeIndex and the
    sensor columns as float64.
    """
    inspection = _inspect(Path(root), machine_id, max_nan_share, max_rows)
    if inspection.problems:
        raise ContractError(inspection.problems)
    metadata = inspection.metadata
    assert metadata is not None  # no problems means the metadata parsed
    splits = {split: _sorted_by_unit(df, metadata) for split, df in inspection.frames.items()}
    return MachineData(machine_id=machine_id, metadata=metadata, profile=inspection.profile, splits=splits)


def _sorted_by_unit(df: pd.DataFrame, metadata: MachineMetadata) -> pd.DataFrame:
    """Group rows by unit; validation already guaranteed increasing timestamps within each unit."""
    if UNIT_ID in df.columns:
        df = df.iloc[np.argsort(pd.factorize(df[UNIT_ID])[0], kind="stable")]
    df = df.reset_index(drop=True)
    return df.astype({name: "float64" for name in metadata.sensors})


def file_fingerprint(path: str | Path) -> str:
    """sha256 of the file bytes (hex): the version of one data file."""
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _machine_files(root: str | Path, machine_id: str) -> list[Path]:
    """The files that make up a machine's data: the three splits, the metadata and the profile if present."""
    root = Path(root)
    files = [split_path(root, machine_id, split) for split in SPLITS] + [metadata_path(root, machine_id)]
    profile = profile_path(root, machine_id)
    return files + [profile] if profile.exists() else files


def machine_fingerprint(root: str | Path, machine_id: str) -> str:
    """sha256 over the fingerprints of the splits, the metadata and the profile (if present): the data version.

    Files are named relative to the root, so moving the data root keeps the fingerprint. Raises ContractError
    if the machine id is invalid or a file is missing.
    """
    _require_valid_id(machine_id)
    report = _Report(Path(root), machine_id)
    files = _machine_files(root, machine_id)
    for path in files:
        if not path.is_file():
            report.add(path, None, f"file not found (data root {report.root})")
    if report.problems:
        raise ContractError(report.problems)
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{report.relative(path)}\t{file_fingerprint(path)}\n".encode())
    return digest.hexdigest()
