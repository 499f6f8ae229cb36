"""From a read table to the machines to write: contract columns, machines, splits, metadata and profile."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from pdm_pipeline.core.contract import SPEC_VERSION
from pdm_pipeline.core.importer.columns import (
    Columns,
    flag_values,
    plan_columns,
    require_numeric,
    text_values,
    unit_of_measure,
)
from pdm_pipeline.core.importer.options import ImportOptions, ImportOptionsError
from pdm_pipeline.core.importer.reading import Table
from pdm_pipeline.core.importer.splits import assign_splits, split_labels
from pdm_pipeline.core.importer.timeline import add_rul, drop_duplicate_times, sampling_step, sort_rows, timestamps
from pdm_pipeline.core.importer.writing import Machine
from pdm_pipeline.core.paths import InvalidMachineIdError, validate_machine_id
from pdm_pipeline.core.schema import EVAL_ANOMALY, LABEL, RUL, SPLITS, TIMESTAMP, UNIT_ID
from pdm_pipeline.core.timeaxis import is_clock

DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def contract_frame(table: Table, columns: Columns, options: ImportOptions) -> pd.DataFrame:
    """The contract columns (timestamp, unit_id, sensors, failure_status, anomaly_window) in source row order."""
    out: dict[str, pd.Series] = {}
    times = timestamps(table, columns, options)
    if times is not None:
        out[TIMESTAMP] = times
    if columns.unit is not None:
        out[UNIT_ID] = text_values(table, columns.unit, "unit_column")
    elif table.file_units is not None:
        out[UNIT_ID] = table.file_units
    for column, name in columns.sensors.items():
        out[name] = require_numeric(table, column)
    if columns.label is not None:
        out[LABEL] = flag_values(table, columns.label, "label_column")
    if columns.eval_label is not None:
        out[EVAL_ANOMALY] = flag_values(table, columns.eval_label, "eval_label_column")
    return pd.DataFrame(out, index=table.frame.index)


def machine_rows(table: Table, columns: Columns, options: ImportOptions) -> list[tuple[str, str | None, np.ndarray]]:
    """(machine id, group value, row positions) per machine of the input: one, or one per group_column value."""
    if columns.group is None:
        return [(options.machine_id, None, np.arange(len(table.frame)))]
    groups = text_values(table, columns.group, "group_column")
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


def _resolve_sensor(name: str, columns: Columns, where: str) -> str:
    """A sensor given by source or contract name -> its contract name."""
    if name in columns.sensors:
        return columns.sensors[name]
    if name in columns.sensors.values():
        return name
    raise ImportOptionsError(f"{where}: {name!r} is not a sensor column; sensors: {list(columns.sensors.values())}")


def _critical_sensors(columns: Columns, options: ImportOptions, where: str) -> list[str] | None:
    if options.critical_sensors is not None:
        return [_resolve_sensor(s, columns, f"{where}: critical_sensors") for s in options.critical_sensors]
    if options.thresholds:
        with_alarm = [s for s, spec in options.thresholds.items() if spec.get("alarm") is not None]
        return [_resolve_sensor(s, columns, f"{where}: thresholds") for s in with_alarm] or None
    return None


def _profile(
    machine_id: str, columns: Columns, options: ImportOptions, critical: list[str] | None, where: str
) -> dict[str, Any] | None:
    """The profile when thresholds or a machine type are given (a derived machine type alone makes none)."""
    if options.thresholds is None and options.machine_type is None:
        return None
    units = {name: unit_of_measure(column) for column, name in columns.sensors.items()}
    sensors: dict[str, dict[str, Any]] = {}
    for given, spec in (options.thresholds or {}).items():
        name = _resolve_sensor(given, columns, f"{where}: thresholds")
        entry: dict[str, Any] = {"unit": spec.get("unit", units[name])}
        entry.update({k: float(spec[k]) for k in ("min", "typical", "max", "alarm", "trip") if spec.get(k) is not None})
        entry["direction"] = spec.get("direction", "high")
        sensors[name] = entry
    profile: dict[str, Any] = {
        "machine_id": machine_id, "machine_type": options.effective_machine_type, "sensors": sensors
    }
    if critical is not None:
        profile["critical_sensors"] = critical
    return profile


def _timestamp_spec(series: pd.Series) -> dict[str, Any]:
    if ptypes.is_datetime64_any_dtype(series.dtype):
        return {"sdtype": "datetime", "datetime_format": DATETIME_FORMAT}
    return {"sdtype": "numerical", "computer_representation": "Int64" if ptypes.is_integer_dtype(series) else "Float"}


def _metadata(
    machine: str, splits: dict[str, pd.DataFrame], columns: Columns, options: ImportOptions,
    critical: list[str] | None, source: Mapping[str, Any],
) -> dict[str, Any]:
    frame = splits["train"]
    specs: dict[str, dict[str, Any]] = {}
    for name in frame.columns:
        if name == TIMESTAMP:
            specs[name] = _timestamp_spec(frame[name])
        elif name == UNIT_ID:
            specs[name] = {"sdtype": "id"}
        elif name in (LABEL, EVAL_ANOMALY):
            specs[name] = {"sdtype": "categorical"}
        else:
            specs[name] = {"sdtype": "numerical", "computer_representation": "Float"}
    time_order = TIMESTAMP in frame.columns
    time_unit = options.effective_time_unit
    rul_parameters: dict[str, Any] = {}
    if critical is not None:
        rul_parameters["critical_sensors"] = critical
    if time_order and time_unit is not None:
        if is_clock(time_unit):
            minutes = sampling_step(frame, "minutes")
            if minutes is not None:
                rul_parameters["sampling_interval_minutes"] = round(minutes, 6)
        step = sampling_step(frame, time_unit)
        if step is not None:
            rul_parameters["sampling_step"] = step
    if RUL in frame.columns:
        cap = options.effective_rul_cap
        longest = cap if cap is not None else max(float(df[RUL].max()) for df in splits.values())
        rul_parameters["max_operational"] = longest
        if time_unit == "hours":  # the old key, still read by older code
            rul_parameters["max_operational_hours"] = longest
    metadata: dict[str, Any] = {
        "METADATA_SPEC_VERSION": SPEC_VERSION,
        "machine_id": machine,
        "columns": specs,
        "time_order": time_order,
    }
    if time_order and time_unit is not None:
        metadata["time_unit"] = time_unit
    machine_type = options.effective_machine_type
    if machine_type is not None:
        metadata["machine_type"] = machine_type
    if rul_parameters:
        metadata["rul_parameters"] = rul_parameters
    sensors = list(columns.sensors.values())
    missing = {s: int(sum(df[s].isna().sum() for df in splits.values())) for s in sensors}
    metadata["source"] = {
        **source,
        "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": asdict(options),
        "sensor_columns": {name: column for column, name in columns.sensors.items()},
        "ignored_columns": list(columns.ignored),
        "ignored_label_columns": list(columns.ignored_labels),
        "rows": {split: len(df) for split, df in splits.items()},
        "missing_values": {s: n for s, n in missing.items() if n},
    }
    return metadata


def build_machines(table: Table, options: ImportOptions, source: Mapping[str, Any]) -> list[Machine]:
    """Everything to write, per machine; every input error is raised here, before anything is written."""
    if table.frame.empty:
        raise ImportOptionsError(f"{table.label}: no rows to import")
    columns = plan_columns(table, options)
    frame = contract_frame(table, columns, options)
    values = split_labels(table, columns)
    critical = _critical_sensors(columns, options, table.label)
    column_order = [TIMESTAMP, UNIT_ID, *columns.sensors.values(), RUL, LABEL, EVAL_ANOMALY]
    time_unit = options.effective_time_unit
    machines = []
    for machine_id, group_value, rows in machine_rows(table, columns, options):
        machine_frame = sort_rows(frame.iloc[rows])
        machine_frame, n_dropped = drop_duplicate_times(
            machine_frame, table, columns, machine_id, options.duplicate_timestamps
        )
        if options.compute_rul:
            assert time_unit is not None  # validate(): compute_rul needs time order
            machine_frame = add_rul(machine_frame, time_unit, options.effective_rul_cap)
        machine_frame = machine_frame[[c for c in column_order if c in machine_frame.columns]]
        split_values = None if values is None else values.loc[machine_frame.index]
        assign = assign_splits(machine_frame, split_values, options, columns, machine_id)
        splits = {s: machine_frame[assign == s].reset_index(drop=True) for s in SPLITS}
        notes = dict(source)
        if n_dropped:
            notes["dropped_duplicate_timestamp_rows"] = n_dropped
        if group_value is not None:
            notes["group"] = {"column": columns.group, "value": group_value}
        metadata = _metadata(machine_id, splits, columns, options, critical, notes)
        profile = _profile(machine_id, columns, options, critical, table.label)
        machines.append(Machine(machine_id, splits, metadata, profile))
    return machines
