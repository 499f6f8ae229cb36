"""Planning columns: which source column plays which role, sensor names, and the values of id/label columns."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from pdm_pipeline.core.importer.options import LABEL_LIKE_NAMES, WHITESPACE, ImportOptions, ImportOptionsError
from pdm_pipeline.core.importer.reading import Table
from pdm_pipeline.core.schema import RESERVED_COLUMNS

_UNIT_SUFFIX_RE = re.compile(r"(?P<base>.*?)\s*[\[(](?P<unit>[^\[\]()]*)[\])]\s*")
_SYMBOL_WORDS = {"%": "pct", "°": "deg", "µ": "u", "Ω": "Ohm"}
_DECIMAL_COMMA_RE = re.compile(r"\s*[-+]?\d*,\d+(?:[eE][-+]?\d+)?\s*")


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


def unit_of_measure(name: str) -> str | None:
    match = _UNIT_SUFFIX_RE.fullmatch(str(name).strip())
    return (match["unit"].strip() or None) if match else None


def looks_like_label(name: str) -> bool:
    """True for column names such as "anomaly", "Machine failure", "changepoint", "target" (LABEL_LIKE_NAMES)."""
    return re.sub(r"[\s_-]+", " ", str(name).strip().lower()) in LABEL_LIKE_NAMES


@dataclass(frozen=True)
class Columns:
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
    # Columns not imported because sensor_columns left them out.
    ignored: tuple[str, ...]
    # Label-like columns declared with ignore_label_columns (not imported).
    ignored_labels: tuple[str, ...] = ()


def is_number(series: pd.Series) -> bool:
    return ptypes.is_numeric_dtype(series.dtype) and not ptypes.is_bool_dtype(series.dtype)


def plan_columns(table: Table, options: ImportOptions) -> Columns:
    """Map source columns to roles; raise for unknown, doubly used, reserved, clashing or label-like names."""
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
    named += [("ignore_label_columns", c) for c in options.ignore_label_columns]
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
        label_like = [c for c in free if looks_like_label(c)]
        if label_like:
            raise ImportOptionsError(
                f"{where}: column(s) {label_like} look like labels and would become sensors: declare each as "
                "label_column (-> failure_status), eval_label_column (-> anomaly_window, evaluation only), "
                "ignore_label_columns (a label that is not imported) or drop_columns; if it really is a sensor, "
                "list the sensors with sensor_columns (nothing that looks like a label silently becomes a feature)"
            )
        chosen = [c for c in free if is_number(frame[c])]
        ignored = []
        odd = [c for c in free if c not in chosen]
        if odd:
            raise ImportOptionsError(
                f"{where}: column(s) {odd} are not numeric and have no role; list them in drop_columns or name "
                "the sensors with sensor_columns (nothing is dropped silently)" + _decimal_hint(frame, odd, options)
            )
    if not chosen:
        raise ImportOptionsError(f"{where}: no sensor column (available columns: {available})")
    sensors = _sensor_names(chosen, options.rename or {}, where)
    return Columns(
        time=options.time_column,
        cycle=options.cycle_column,
        unit=options.unit_column,
        label=options.label_column,
        eval_label=options.eval_label_column,
        split=options.split_column,
        group=options.group_column,
        sensors=sensors,
        ignored=tuple(ignored),
        ignored_labels=tuple(options.ignore_label_columns),
    )


def _separator_hint(columns: list[str], separator: str) -> str:
    if len(columns) != 1:
        return ""
    header = columns[0]
    candidates = [c for c in (";", ",", "|") if c in header]
    if "\t" in header and " " not in header:
        candidates.append("\t")
    elif len(header.split()) > 1:  # blanks (spaces, or spaces and tabs mixed) between names
        candidates.append(WHITESPACE)
    for candidate in candidates:
        if candidate != separator:
            return f" (the header was read as one column: is the separator {candidate!r} rather than {separator!r}?)"
    return ""


def _decimal_hint(frame: pd.DataFrame, columns: list[str], options: ImportOptions) -> str:
    """A hint when text columns hold numbers written with a decimal comma (read with decimal='.')."""
    if options.decimal == ",":
        return ""
    for column in columns:
        values = frame[column].dropna()
        if len(values) and values.astype(str).str.fullmatch(_DECIMAL_COMMA_RE).any():
            return (
                f" (column {column!r} holds numbers with a decimal comma, e.g. {str(values.iloc[0])!r}: "
                "pass decimal=',')"
            )
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


# ------------------------------------------------------------------------------------------- column values


def require_numeric(table: Table, column: str) -> pd.Series:
    """The column as float64; raise naming the file, column, count and first non-numeric value."""
    series = table.frame[column]
    if ptypes.is_bool_dtype(series.dtype) or is_number(series):
        return series.astype("float64")
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna().to_numpy() & series.notna().to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        sample = str(series.iloc[first])
        hint = " (a decimal comma? pass decimal=',')" if _DECIMAL_COMMA_RE.fullmatch(sample) else ""
        raise ImportOptionsError(
            f"{table.label}: column {column!r} is not numeric: {int(bad.sum())} values are not numbers, "
            f"first {sample[:30]!r} at {table.where(first)}{hint}"
        )
    return values.astype("float64")


def require_present(table: Table, column: str, bad: np.ndarray, what: str) -> None:
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        value = table.frame[column].iloc[first]
        shown = "(empty)" if pd.isna(value) else repr(str(value)[:30])
        raise ImportOptionsError(
            f"{table.label}: column {column!r}: {int(bad.sum())} {what}, first {shown} at {table.where(first)}"
        )


def flag_values(table: Table, column: str, option: str) -> pd.Series:
    """A 0/1 column as int64; raise naming the file and column for anything but 0/1 or booleans."""
    series = table.frame[column]
    if ptypes.is_bool_dtype(series.dtype):
        return series.astype("int64")
    present = series.notna().to_numpy()
    if is_number(series):
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


def text_values(table: Table, column: str, option: str) -> pd.Series:
    """Ids as strings ("7", not "7.0"); raise for missing values."""
    series = table.frame[column]
    require_present(table, column, series.isna().to_numpy(), f"missing values ({option})")
    if ptypes.is_float_dtype(series.dtype) and np.all(np.mod(series.to_numpy(), 1) == 0):
        series = series.astype("int64")
    return series.astype(str).str.strip()
