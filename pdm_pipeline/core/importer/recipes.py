"""Dataset recipes: the import options of public data sets (AI4I 2020, NAB, SKAB, NASA C-MAPSS), kept apart from
the generic importer. Each one only chooses options (and checks the expected layout); the importer does the rest."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core.importer.api import import_data, import_frame
from pdm_pipeline.core.importer.build import build_machines
from pdm_pipeline.core.importer.columns import sanitize_column_name
from pdm_pipeline.core.importer.options import WHITESPACE, ImportOptions, ImportOptionsError
from pdm_pipeline.core.importer.reading import read_file, read_source
from pdm_pipeline.core.importer.writing import write_machines
from pdm_pipeline.core.paths import InvalidMachineIdError, validate_machine_id
from pdm_pipeline.core.schema import EVAL_ANOMALY

AI4I_LABEL = "Machine failure"
AI4I_GROUP = "Type"
# Failure-mode flags that almost define the label (leakage) and row ids.
AI4I_DROPPED: tuple[str, ...] = ("UDI", "Product ID", "TWF", "HDF", "PWF", "OSF", "RNF")
NAB_WINDOWS_KEY = "realKnownCause/machine_temperature_system_failure.csv"
NAB_SENSOR = "machine_temperature"
SKAB_COLUMNS: tuple[str, ...] = (
    "datetime", "Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature", "Thermocouple",
    "Voltage", "Volume Flow RateRMS", "anomaly", "changepoint",
)
SKAB_RENAME = {
    "Accelerometer1RMS": "accelerometer_1_rms",
    "Accelerometer2RMS": "accelerometer_2_rms",
    "Volume Flow RateRMS": "volume_flow_rate_rms",
}
SKAB_TRAIN_ROWS = 400
CMAPSS_COLUMNS: tuple[str, ...] = (
    "unit", "cycle", "setting_1", "setting_2", "setting_3", *(f"s_{i}" for i in range(1, 22))
)


def import_ai4i2020(
    csv_path: Path, root: Path, machine_prefix: str = "ai4i", *, overwrite: bool = False, seed: int = 0
) -> list[str]:
    """AI4I 2020 as three machines `<prefix>_H`, `_L`, `_M` (one per product quality `Type`), machine type `<prefix>`.

    Label "Machine failure" -> failure_status; the failure-mode flags TWF, HDF, PWF, OSF, RNF (which almost
    define the label) and the ids UDI and Product ID are dropped. Rows are independent processes: no time
    order, random split stratified on the label (`seed`, 0 by default).
    """
    options = ImportOptions(
        machine_id=machine_prefix,
        label_column=AI4I_LABEL,
        drop_columns=list(AI4I_DROPPED),
        group_column=AI4I_GROUP,
        split="random",
        seed=seed,
    )
    return import_data(Path(csv_path), root, options, overwrite=overwrite)


def import_nab_machine_temperature(
    csv_path: Path,
    windows_json: Path,
    root: Path,
    machine_id: str = "nab_machine_temperature",
    *,
    overwrite: bool = False,
    probation: bool = False,
    train_rows: int | None = None,
) -> list[str]:
    """NAB realKnownCause/machine_temperature_system_failure as one machine (`import_nab` with its sensor name).

    The single column "value" becomes sensor "machine_temperature" (its unit is not published, so it has no
    unit suffix); 5-minute steps. The file repeats one hour (2014-01-07 02:00-02:55 appears twice, 12 rows); the
    first copy in file order is kept, so 22,683 of its 22,695 rows are imported (the count is recorded in the
    metadata's "source").
    """
    return import_nab(csv_path, windows_json, root, machine_id, sensor=NAB_SENSOR, key=NAB_WINDOWS_KEY,
                      overwrite=overwrite, probation=probation, train_rows=train_rows)


def nab_windows_key(windows_json: Path, csv_path: Path) -> str:
    """The key of `csv_path` in NAB's combined_windows.json ("<folder>/<file name>"), found by its file name."""
    try:
        keys = list(json.loads(Path(windows_json).read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ImportOptionsError(f"{windows_json}: anomaly windows file not found") from None
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ImportOptionsError(f"{windows_json}: not a NAB windows file ({type(exc).__name__}: {exc})") from None
    matches = [key for key in keys if str(key).rsplit("/", 1)[-1] == Path(csv_path).name]
    if len(matches) != 1:
        found = f"several: {matches}" if matches else "none"
        raise ImportOptionsError(f"{windows_json}: expected one key ending in '/{Path(csv_path).name}' for "
                                 f"{csv_path}, found {found}")
    return matches[0]


def import_nab(
    csv_path: Path,
    windows_json: Path,
    root: Path,
    machine_id: str | None = None,
    *,
    sensor: str = "value",
    key: str | None = None,
    overwrite: bool = False,
    probation: bool = False,
    train_rows: int | None = None,
) -> list[str]:
    """Any NAB data file (columns timestamp, value) as one machine, with its labelled windows (time unit hours).

    `machine_id` defaults to "nab_<file stem>"; the column "value" becomes `sensor`. The windows come from NAB's
    combined_windows.json, under `key` or else the one key naming this file; they become `anomaly_window` (both
    ends included, as in NAB), for evaluation only. No rul, no failure label. Repeated timestamps: the first in
    file order is kept (counted in the metadata's "source").

    `probation=True` follows NAB's scoring protocol: NAB's probationary period (`nab_probation_rows`: 15 % of
    the rows, at most 750) is training (val = its last 20 %) and every later row is test; otherwise a
    70 / 15 / 15 chronological split. `train_rows` (with `probation=True`) trains on that many first rows instead
    (a walk-forward evaluation retrains on a growing history).
    """
    csv_path, windows_json = Path(csv_path), Path(windows_json)
    key = key or nab_windows_key(windows_json, csv_path)
    if machine_id is None:
        machine_id = ("nab_" + sanitize_column_name(csv_path.stem).lower())[:64]
    frame = read_file(csv_path, ",")
    if list(frame.columns) != ["timestamp", "value"]:
        raise ImportOptionsError(
            f"{csv_path}: expected the NAB columns ['timestamp', 'value'], found {list(frame.columns)}"
        )
    split: dict[str, Any] = {}
    if probation:
        split = {"split": "first_rows", "train_rows": train_rows or nab_probation_rows(len(frame))}
    options = ImportOptions(
        machine_id=machine_id,
        time_column="timestamp",
        time_unit="hours",
        rename={"value": sensor},
        eval_label_column=EVAL_ANOMALY,
        duplicate_timestamps="first",
        **split,
    )
    # Only to place the windows (in UTC, as the importer keeps times); it parses (and reports bad) timestamps itself.
    stamps = pd.to_datetime(frame["timestamp"], errors="coerce", utc=True).dt.tz_localize(None)
    in_window = np.zeros(len(frame), dtype=bool)
    for start, end in _nab_windows(windows_json, key):
        inside = ((stamps >= start) & (stamps <= end)).to_numpy()
        if start > end or not inside.any():
            raise ImportOptionsError(
                f"{windows_json}: window [{start}, {end}] under key {key!r} "
                + ("ends before it starts" if start > end else
                   f"holds no row of {csv_path} (its rows span {stamps.min()} to {stamps.max()})"))
        in_window |= inside
    frame[EVAL_ANOMALY] = in_window.astype("int64")
    notes = {"anomaly_windows": {"file": str(windows_json), "key": key}}
    return import_frame(frame, root, options, source=str(csv_path), source_notes=notes, overwrite=overwrite)


NAB_PROBATION_SHARE = 0.15
NAB_PROBATION_MAX_ROWS = 750  # NAB's sweeper: probationPercent * 5000


def nab_probation_rows(rows: int) -> int:
    """NAB's probationary length for a file of `rows` rows (nab/sweeper.py `_getProbationaryLength`):
    min(floor(15 % of the rows), 750). Its rows are never scored."""
    return int(min(math.floor(NAB_PROBATION_SHARE * rows), NAB_PROBATION_MAX_ROWS))


def _naive_utc(stamp: pd.Timestamp) -> pd.Timestamp:
    """A time with a zone as UTC without it (how the importer keeps times); a time without one unchanged."""
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def _nab_windows(path: Path, key: str) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The (start, end) anomaly windows of one NAB data file from combined_windows.json."""
    try:
        windows = json.loads(path.read_text(encoding="utf-8"))[key]
        return [(_naive_utc(pd.Timestamp(start)), _naive_utc(pd.Timestamp(end))) for start, end in windows]
    except FileNotFoundError:
        raise ImportOptionsError(f"{path}: anomaly windows file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ImportOptionsError(
            f"{path}: no usable anomaly windows under key {key!r} ({type(exc).__name__}: {exc})"
        ) from None


def _skab_options(machine_id: str, machine_type: str, train_rows: int) -> ImportOptions:
    return ImportOptions(
        machine_id=machine_id,
        separator=";",
        time_column="datetime",
        time_unit="seconds",
        eval_label_column="anomaly",
        ignore_label_columns=["changepoint"],
        rename=dict(SKAB_RENAME),
        split="first_rows",
        train_rows=train_rows,
        machine_type=machine_type,
    ).validate()


def _skab_files(directory: Path) -> list[Path]:
    """The experiment files N.csv of a SKAB folder, in numeric order; each must have the SKAB columns."""
    if not directory.is_dir():
        raise ImportOptionsError(f"SKAB source {directory} is not a directory (expected a folder of 1.csv, 2.csv, ...)")
    files = sorted(
        (p for p in directory.iterdir() if p.is_file() and p.suffix.lower() == ".csv" and not p.name.startswith(".")),
        key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.stem),
    )
    if not files:
        raise ImportOptionsError(f"SKAB source directory {directory} holds no .csv file")
    for path in files:
        with path.open(encoding="utf-8-sig") as fh:
            header = [c.strip() for c in fh.readline().rstrip("\r\n").split(";")]
        if header != list(SKAB_COLUMNS):
            raise ImportOptionsError(
                f"{path}: expected the SKAB columns {list(SKAB_COLUMNS)} (';' separated), found {header}"
            )
    return files


def import_skab(
    directory: Path,
    root: Path,
    machine_prefix: str = "skab",
    *,
    one_machine_per_file: bool = True,
    train_rows: int = SKAB_TRAIN_ROWS,
    overwrite: bool = False,
) -> list[str]:
    """A SKAB folder (e.g. ``data/other``: files ``1.csv`` .. ``14.csv``, ``;`` separated, 1 s steps).

    Each file ``N.csv`` becomes machine ``<prefix>_N`` (machine type ``<prefix>``); with
    ``one_machine_per_file=False`` the folder becomes one machine ``<prefix>`` with one unit per file (the units
    must overlap in time, as SKAB's do, for the per-unit split to keep the contract's time order). Time axis
    ``datetime`` (time unit seconds); ``anomaly`` -> anomaly_window (evaluation only; anomalous rows stay in the
    data), ``changepoint`` is a label and is not imported. The leaderboard protocol: the first `train_rows` rows of
    each file are training data (their last 20 % val), every later row is test. All machines are written or none.
    """
    directory = Path(directory)
    files = _skab_files(directory)
    try:
        validate_machine_id(machine_prefix)
    except InvalidMachineIdError as exc:
        raise ImportOptionsError(f"machine_prefix: {exc}") from None
    machines = []
    if one_machine_per_file:
        for path in files:
            machine_id = f"{machine_prefix}_{path.stem}"
            try:
                validate_machine_id(machine_id)
            except InvalidMachineIdError as exc:
                raise ImportOptionsError(f"{path}: the file stem does not make a machine id: {exc}") from None
            options = _skab_options(machine_id, machine_prefix, train_rows)
            machines += build_machines(read_source(path, options), options, {"file": str(path), "dataset": "SKAB"})
    else:
        options = _skab_options(machine_prefix, machine_prefix, train_rows)
        table = read_source(directory, options)
        machines += build_machines(table, options, {"file": str(directory), "dataset": "SKAB"})
    return write_machines(Path(root), machines, overwrite)


def import_cmapss(
    train_txt: Path,
    root: Path,
    machine_id: str = "cmapss_FD001",
    *,
    rul_cap: float | None = None,
    overwrite: bool = False,
) -> list[str]:
    """A NASA C-MAPSS training file (``train_FD00x.txt``: 26 whitespace-separated columns, no header) as one machine.

    Columns unit, cycle, setting_1..3, s_1..s_21; ``unit`` -> unit_id, ``cycle`` kept as a number in ``timestamp``
    (time unit cycles). Every engine runs to failure at its last cycle: ``rul`` counts the cycles to it (capped at
    `rul_cap` cycles when given). Whole engines to splits 70/15/15 in engine-id order. The test files
    (``test_FD00x.txt``) stop before failure and need ``RUL_FD00x.txt``: they are not for this recipe.
    """
    options = ImportOptions(
        machine_id=machine_id,
        separator=WHITESPACE,
        header=False,
        columns=list(CMAPSS_COLUMNS),
        unit_column="unit",
        cycle_column="cycle",
        time_unit="cycles",
        compute_rul=True,
        rul_cap=rul_cap,
        split="unit",
        ratios=(0.70, 0.15, 0.15),
    )
    return import_data(Path(train_txt), root, options, overwrite=overwrite)
