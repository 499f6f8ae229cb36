"""ImportOptions: how to read one source into the contract, and their checks before any file is read."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pdm_pipeline.core.contract import DIRECTIONS
from pdm_pipeline.core.paths import InvalidMachineIdError, validate_machine_id
from pdm_pipeline.core.schema import RESERVED_COLUMNS
from pdm_pipeline.core.timeaxis import CLOCK_UNITS, DEFAULT_TIME_UNIT, INDEX_UNITS, TIME_UNITS, is_clock
from pdm_pipeline.errors import PdmError

SPLIT_MODES: tuple[str, ...] = ("chronological", "unit", "column", "random", "first_rows")
DUPLICATE_POLICIES: tuple[str, ...] = ("error", "first", "last")
# Old-style cycle units: the counter becomes datetimes (CYCLE_ORIGIN + cycle x unit) and the time unit of the data
# is the matching clock unit.
CYCLE_UNITS: dict[str, int] = {"s": 1, "min": 60, "h": 3600, "d": 86400}
CYCLE_TIME_UNITS: dict[str, str] = {"s": "seconds", "min": "minutes", "h": "hours", "d": "days"}
# separator="whitespace": any run of spaces and tabs (leading and trailing blanks ignored), e.g. NASA C-MAPSS.
WHITESPACE = "whitespace"
THRESHOLD_KEYS: tuple[str, ...] = ("unit", "min", "typical", "max", "alarm", "trip", "direction")
# A column with one of these names (case-insensitive, blanks/'_'/'-' runs read as one space) looks like a label: it
# must be declared (label_column, eval_label_column, ignore_label_columns, drop_columns or sensor_columns) and never
# becomes a sensor by default.
LABEL_LIKE_NAMES: tuple[str, ...] = (
    "anomaly", "changepoint", "label", "labels", "target", "failure", "fault", "machine failure", "class",
)
DEFAULT_VAL_SHARE = 0.2
SENSOR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ImportOptionsError(PdmError, ValueError):
    """Input that cannot be imported; the message names the file, the column or the option at fault."""


@dataclass
class ImportOptions:
    """How to read one source into the contract; every field maps to a command-line option."""

    machine_id: str
    # Datetime column; parsed with `time_format` (any pandas format, also "ISO8601" or "mixed") or inferred;
    # time_format "unix_s" / "unix_ms": a numeric column of Unix times (seconds / milliseconds since 1970, UTC).
    time_column: str | None = None
    time_format: str | None = None
    # Alternative to time_column: a cycle/step counter, kept as a number in `timestamp` (time_unit cycles or steps).
    cycle_column: str | None = None
    # "cycles" (default) or "steps": the counter stays a number (same as time_unit). Old behaviour, still accepted:
    # "s", "min", "h" or "d" turns the counter into datetimes (2000-01-01 + cycle x unit) with time_unit seconds,
    # minutes, hours or days.
    cycle_unit: str | None = None
    # Unit of timestamp steps, rul, rul_cap and horizons (timeaxis.TIME_UNITS). None: "hours" for time_column,
    # "cycles" for cycle_column (the clock unit of cycle_unit when given). Only for data with time order.
    time_unit: str | None = None
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
    # Other label-like columns (e.g. SKAB's changepoint): not imported, recorded in the metadata's source notes.
    ignore_label_columns: Sequence[str] = ()
    # Columns to ignore, e.g. ids or leakage columns (AI4I's TWF, HDF, PWF, OSF, RNF).
    drop_columns: Sequence[str] = ()
    # Text files: one character or string, or "whitespace" (any run of spaces/tabs).
    separator: str = ","
    # False: the text file has no header row; `columns` then names its columns, in order.
    header: bool = True
    columns: list[str] | None = None
    # Decimal mark of text files: "." or "," (decimal comma, usually with separator ";").
    decimal: str = "."
    split: str = "chronological"
    # With split="column": a column whose values are train/val/test.
    split_column: str | None = None
    ratios: tuple[float, float, float] = (0.70, 0.15, 0.15)
    # With split="first_rows": the first `train_rows` rows of each unit are train (their last `val_share` is val),
    # every later row is test.
    train_rows: int | None = None
    val_share: float = DEFAULT_VAL_SHARE
    # Run-to-failure units: rul = time until the unit's last row in the data's time unit, optionally capped at
    # rul_cap (same unit). rul_cap_hours is the old name (a cap in hours), still accepted for clock data.
    compute_rul: bool = False
    rul_cap: float | None = None
    rul_cap_hours: float | None = None
    # Sensor (source or sanitized name) -> {"alarm", "trip", "direction", "unit", "min", "typical", "max"}.
    thresholds: dict[str, dict] | None = None
    # Default: the thresholded sensors that have an alarm level.
    critical_sensors: list[str] | None = None
    # The machine's type or fleet (machines of one type may share pooled models). Default with group_column:
    # machine_id (the prefix of the machines made), else none.
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
        if self.machine_type is not None:
            try:
                validate_machine_id(self.machine_type)
            except InvalidMachineIdError:
                problems.append(
                    f"machine_type={self.machine_type!r} must follow the machine-id rule "
                    "([A-Za-z0-9][A-Za-z0-9_.-]{0,63}, no '..'): it names the fleet directory of pooled models"
                )
        problems += self._time_problems()
        problems += self._split_problems()
        problems += self._rul_problems()
        problems += self._reading_problems()
        for name in ("drop_columns", "ignore_label_columns", "sensor_columns", "critical_sensors"):
            problems += _name_list_problems(name, getattr(self, name))
        for source, target in (self.rename or {}).items():
            if not SENSOR_NAME_RE.fullmatch(str(target)) or target in RESERVED_COLUMNS:
                problems.append(
                    f"rename: {source!r} -> {target!r} is not a usable sensor name (letters, digits and '_', "
                    f"not starting with a digit, none of the reserved names {', '.join(sorted(RESERVED_COLUMNS))})"
                )
        problems += _threshold_problems(self.thresholds)
        if problems:
            raise ImportOptionsError("invalid import options: " + "; ".join(problems))
        return self

    # ------------------------------------------------------------------------------------------- derived

    @property
    def has_time_order(self) -> bool:
        return self.time_column is not None or self.cycle_column is not None

    @property
    def counter_as_number(self) -> bool:
        """True when the cycle/step counter is kept as a number (no old-style clock cycle_unit)."""
        return self.cycle_column is not None and self.cycle_unit not in CYCLE_UNITS

    @property
    def effective_time_unit(self) -> str | None:
        """The data's time unit (timeaxis.TIME_UNITS), None without time order."""
        if not self.has_time_order:
            return None
        if self.time_unit is not None:
            return self.time_unit
        if self.cycle_column is not None:
            if self.cycle_unit in INDEX_UNITS:
                return self.cycle_unit
            return CYCLE_TIME_UNITS.get(self.cycle_unit or "", "cycles")
        return DEFAULT_TIME_UNIT

    @property
    def effective_rul_cap(self) -> float | None:
        """The RUL cap in the data's time unit (rul_cap, else rul_cap_hours converted), None without a cap."""
        if self.rul_cap is not None:
            return float(self.rul_cap)
        if self.rul_cap_hours is None:
            return None
        unit = self.effective_time_unit or DEFAULT_TIME_UNIT
        return float(self.rul_cap_hours) * CLOCK_UNITS["hours"] / CLOCK_UNITS[unit]

    @property
    def val_rows(self) -> int:
        """With split="first_rows": how many of the first train_rows rows of each unit are val."""
        return _round_half_up((self.train_rows or 0) * self.val_share)

    @property
    def effective_machine_type(self) -> str | None:
        if self.machine_type is not None:
            return self.machine_type
        return self.machine_id if self.group_column is not None else None

    # ------------------------------------------------------------------------------------------- checks

    def _time_problems(self) -> list[str]:
        problems: list[str] = []
        if self.time_column is not None and self.cycle_column is not None:
            problems.append(
                f"time_column={self.time_column!r} and cycle_column={self.cycle_column!r} are both given; "
                "give one of them (or neither for data without time order)"
            )
        if self.cycle_unit is not None and self.cycle_unit not in (*INDEX_UNITS, *CYCLE_UNITS):
            problems.append(
                f"cycle_unit={self.cycle_unit!r} is unknown; choose {' or '.join(INDEX_UNITS)} (the counter stays a "
                f"number, the default) or one of {', '.join(CYCLE_UNITS)} (the counter becomes datetimes)"
            )
        if self.cycle_unit is not None and self.cycle_column is None:
            problems.append(f"cycle_unit={self.cycle_unit!r} is given without cycle_column")
        if self.time_unit is not None:
            unit = self.time_unit
            if unit not in TIME_UNITS:
                problems.append(f"time_unit={unit!r} is unknown; choose one of {', '.join(TIME_UNITS)}")
            elif not self.has_time_order:
                problems.append(
                    f"time_unit={unit!r} is given but the data has no time order (give time_column or cycle_column)"
                )
            elif self.time_column is not None and not is_clock(unit):
                problems.append(
                    f"time_unit={unit!r} counts {unit}, but time_column={self.time_column!r} holds dates: choose "
                    f"one of {', '.join(CLOCK_UNITS)} (for a cycle or step counter use cycle_column)"
                )
            elif self.counter_as_number and is_clock(unit):
                problems.append(
                    f"time_unit={unit!r} is a clock unit, but cycle_column={self.cycle_column!r} is kept as a counter: "
                    f"choose one of {', '.join(INDEX_UNITS)} (or give cycle_unit s, min, h or d to turn the counter "
                    "into datetimes)"
                )
            elif self.cycle_unit in INDEX_UNITS and unit != self.cycle_unit:
                problems.append(f"time_unit={unit!r} and cycle_unit={self.cycle_unit!r} disagree; give one of them")
            elif self.cycle_unit in CYCLE_UNITS and not is_clock(unit):
                problems.append(
                    f"time_unit={unit!r} does not fit cycle_unit={self.cycle_unit!r}, which turns the counter into "
                    f"datetimes: leave cycle_unit out to keep the counter as {unit}"
                )
        if self.duplicate_timestamps not in DUPLICATE_POLICIES:
            problems.append(
                f"duplicate_timestamps={self.duplicate_timestamps!r} is unknown; "
                f"choose one of {', '.join(DUPLICATE_POLICIES)}"
            )
        if self.time_format is not None and self.time_column is None:
            problems.append(f"time_format={self.time_format!r} is given without time_column")
        return problems

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
                "the future into train; use split='chronological', 'unit' or 'first_rows'"
            )
        if self.split == "chronological" and not self.has_time_order:
            problems.append(
                "split='chronological' needs time order: give time_column or cycle_column, "
                "or use split='random', 'unit', 'column' or 'first_rows'"
            )
        problems += self._first_rows_problems()
        ratios = tuple(self.ratios)
        numbers = all(_is_number(r) and math.isfinite(r) for r in ratios)
        if len(ratios) != 3 or not numbers:
            problems.append(f"ratios={self.ratios!r} must be three numbers (train, val, test)")
        elif any(r <= 0 for r in ratios):
            problems.append(f"ratios={ratios!r} must all be > 0 (every split needs rows)")
        elif abs(sum(ratios) - 1.0) > 1e-6:
            problems.append(f"ratios={ratios!r} sum to {sum(ratios):g}, not 1")
        return problems

    def _first_rows_problems(self) -> list[str]:
        problems: list[str] = []
        share_ok = _is_number(self.val_share) and 0.0 < self.val_share < 1.0
        if not share_ok:
            problems.append(f"val_share={self.val_share!r} must be a number between 0 and 1 (exclusive)")
        n = self.train_rows
        if self.split != "first_rows":
            if n is not None:
                problems.append(f"train_rows={n!r} is given but split={self.split!r} (use split='first_rows')")
            return problems
        if n is None:
            problems.append(
                "split='first_rows' needs train_rows: the number of leading rows of each unit (or file) that are "
                "training data (their last val_share is val, every later row is test)"
            )
        elif not (isinstance(n, int) and not isinstance(n, bool)) or n <= 0:
            problems.append(f"train_rows={n!r} must be a whole number > 0")
        elif share_ok:
            n_val = self.val_rows
            if n_val < 1:
                problems.append(
                    f"train_rows={n} with val_share={self.val_share:g} leaves no val rows: the last "
                    f"{self.val_share:.0%} of the first {n} rows of each unit are val ({n * self.val_share:g} rows, "
                    "rounded to 0); raise train_rows or val_share"
                )
            elif n_val >= n:
                problems.append(
                    f"train_rows={n} with val_share={self.val_share:g} leaves no train rows ({n_val} of the first "
                    f"{n} rows of each unit would be val); raise train_rows or lower val_share"
                )
        return problems

    def _rul_problems(self) -> list[str]:
        problems: list[str] = []
        unit = self.effective_time_unit
        for name in ("rul_cap", "rul_cap_hours"):
            value = getattr(self, name)
            if value is None:
                continue
            if not self.compute_rul:
                problems.append(f"{name}={value!r} is given but compute_rul is False")
            elif not (_is_number(value) and math.isfinite(value) and value > 0):
                what = "hours" if name == "rul_cap_hours" else f"in the data's time unit ({unit or 'none'})"
                problems.append(f"{name}={value!r} must be a number > 0 ({what})")
        if self.rul_cap is not None and self.rul_cap_hours is not None:
            problems.append(
                f"rul_cap={self.rul_cap!r} and rul_cap_hours={self.rul_cap_hours!r} are both given; "
                "give rul_cap (in the data's time unit) only"
            )
        elif self.rul_cap_hours is not None and unit is not None and not is_clock(unit):
            problems.append(
                f"rul_cap_hours={self.rul_cap_hours!r} is in hours, but the data counts {unit}: "
                f"give rul_cap (in {unit}) instead"
            )
        if self.compute_rul and not self.has_time_order:
            problems.append("compute_rul needs time order: give time_column or cycle_column")
        return problems

    def _reading_problems(self) -> list[str]:
        problems: list[str] = []
        separator, decimal = self.separator, self.decimal
        if not isinstance(separator, str) or not separator:
            problems.append(f"separator={separator!r} must be a non-empty string (or 'whitespace')")
        if not isinstance(self.header, bool):
            problems.append(f"header={self.header!r} must be True or False")
        if self.columns is not None:
            not_names = _name_list_problems("columns", self.columns)
            problems += not_names
            if not not_names and not self.columns:
                problems.append("columns=[] is empty: give one name per column of the file, in order")
            elif not not_names and len(set(self.columns)) < len(self.columns):
                twins = sorted({c for c in self.columns if list(self.columns).count(c) > 1})
                problems.append(f"columns names {twins} more than once")
            if self.header is True:
                problems.append(
                    "columns names the columns of a file without header row: pass header=False too "
                    "(to name sensors of a file with a header, use rename)"
                )
        elif self.header is False:
            problems.append("header=False needs columns: the names of the file's columns, in order")
        if not isinstance(decimal, str) or len(decimal) != 1 or decimal.isdigit() or decimal.isspace():
            problems.append(f"decimal={decimal!r} must be one character such as '.' or ','")
        elif decimal == separator or (separator == WHITESPACE and decimal.isspace()):
            problems.append(
                f"decimal={decimal!r} is also the separator: values like 1{decimal}5 could not be told apart from "
                f"two columns; with decimal=',' use separator=';'"
            )
        return problems


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _name_list_problems(option: str, names: object) -> list[str]:
    """Column-name options must be lists of strings (a bare string would be read letter by letter)."""
    if names is None:
        return []
    if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        return [f"{option}={names!r} must be a list of column names"]
    return []


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
            if value is not None and not (_is_number(value) and math.isfinite(value)):
                problems.append(f"thresholds[{sensor!r}][{key!r}]={value!r} must be a finite number")
    return problems
