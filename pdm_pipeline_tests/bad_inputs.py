"""A corpus of broken variants of one machine's data, for the end-to-end bad-input test.

Each `BadInput` pairs a small function that breaks a copy of a valid machine's files (written by the simulator)
with what must happen, and the substrings the message must contain:

- CONTRACT / DATA_CHECK: refused before anything is queued (the same checks as `validate`); and when the files
  break after a run was queued, that run fails at `machine_dataset` (a Failure from the contract, or a blocking
  data check with ERROR) before any model trains;
- LABEL: the label is unusable: the classifier keeps its previous version, the other families still release;
- GATE: the models are valid but a gate blocks: the previous release stays current, whole;
- MACHINE_ID: an invalid machine id, refused before a partition or a run exists.

The test (test_bad_input_corpus.py) runs the whole Dagster graph on every variant and proves that the outcome is
clear and that released models are never replaced by anything that failed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core.paths import metadata_path, profile_path, split_path
from pdm_pipeline.core.schema import LABEL, RUL, SPLITS, TIMESTAMP, UNIT_ID

# What a variant must end in.
CONTRACT = "contract"  # refused before queueing; a queued run fails at machine_dataset (Failure, ContractError)
DATA_CHECK = "data_check"  # refused before queueing; a queued run fails the blocking check `fails_at` (ERROR)
LABEL_DEFECT = "label"  # label_balance ERROR; the classifier keeps its previous version, the rest release
GATE = "gate"  # the gate `fails_at` blocks; the previous release stays current
MACHINE_ID = "machine_id"  # InvalidMachineIdError before any run starts; `fails_at` is unused

# A sensor name that no machine type of the simulator has.
FOREIGN_COLUMN = "oil_viscosity_cSt"
# Fixed seed for every random byte or row a breaker picks: the corpus is deterministic.
SEED = 11


@dataclass(frozen=True)
class MachineFiles:
    """The files of one machine under a data root, with small read/write helpers for the breakers."""

    root: Path
    machine_id: str

    def split(self, name: str) -> Path:
        return split_path(self.root, self.machine_id, name)

    @property
    def metadata(self) -> Path:
        return metadata_path(self.root, self.machine_id)

    @property
    def profile(self) -> Path:
        return profile_path(self.root, self.machine_id)

    def files(self) -> list[Path]:
        """The three splits, the metadata and the profile (whether or not they exist)."""
        return [self.split(s) for s in SPLITS] + [self.metadata, self.profile]

    def read_split(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.split(name))

    def write_split(self, name: str, df: pd.DataFrame) -> None:
        df.to_parquet(self.split(name), index=False, engine="pyarrow")

    def edit_splits(self, edit: Callable[[pd.DataFrame], pd.DataFrame], splits: tuple[str, ...] = SPLITS) -> None:
        """Rewrite each named split as `edit(split frame)`."""
        for name in splits:
            self.write_split(name, edit(self.read_split(name)))

    @staticmethod
    def read_json(path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))

    @staticmethod
    def write_json(path: Path, content: Any) -> None:
        path.write_text(json.dumps(content, indent=2), encoding="utf-8")

    def sensors(self) -> list[str]:
        """Sensor columns of the (still valid) metadata: numerical, not rul."""
        columns = self.read_json(self.metadata)["columns"]
        return [c for c, spec in columns.items() if spec.get("sdtype") == "numerical" and c != RUL]

    def critical_sensor(self) -> str:
        return self.read_json(self.metadata)["rul_parameters"]["critical_sensors"][0]

    def plain_sensor(self) -> str:
        """The last sensor that is not critical."""
        critical = set(self.read_json(self.metadata)["rul_parameters"]["critical_sensors"])
        return [s for s in self.sensors() if s not in critical][-1]


def copy_machine(source: MachineFiles, target: MachineFiles) -> None:
    """Make `target`'s files an exact copy of `source`'s (same machine id, another root); removes extras."""
    shutil.rmtree(target.split(SPLITS[0]).parent, ignore_errors=True)
    for src, dst in zip(source.files(), target.files(), strict=True):
        dst.unlink(missing_ok=True)
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


@dataclass(frozen=True)
class BadInput:
    """One broken variant: how to break the files, and where and how the run must fail."""

    name: str
    # Breaks the machine's files in place (None: the files stay valid, e.g. a bad id or a too strict gate).
    breaker: Callable[[MachineFiles], None] | None
    # CONTRACT, DATA_CHECK, LABEL_DEFECT, GATE or MACHINE_ID, and the step or check that must fail.
    where: str
    fails_at: str
    # Substrings (case-sensitive) the failure message must contain.
    expected: tuple[str, ...]
    # The id to run instead of the good machine's (MACHINE_ID variants).
    machine_id: str | None = None
    # Run config of the training and gates resources for this variant.
    training: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    gates: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # The model families to train (None: all).
    models: tuple[str, ...] | None = None

    def break_files(self, files: MachineFiles) -> None:
        if self.breaker is not None:
            self.breaker(files)


# ------------------------------------------------------------------------------------------------ breakers


def _remove_split(name: str) -> Callable[[MachineFiles], None]:
    def breaker(files: MachineFiles) -> None:
        files.split(name).unlink()

    return breaker


def _truncate_train(files: MachineFiles) -> None:
    path = files.split("train")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes_val(files: MachineFiles) -> None:
    files.split("val").write_bytes(np.random.default_rng(SEED).bytes(4096))


def _csv_as_parquet_test(files: MachineFiles) -> None:
    path = files.split("test")
    files.read_split("test").to_csv(path, index=False)


def _garbled_parquet_body(files: MachineFiles) -> None:
    """Keep the b'PAR1' magic at both ends, overwrite the bytes in between."""
    path = files.split("train")
    data = bytearray(path.read_bytes())
    middle = len(data) - 8
    data[4:-4] = np.random.default_rng(SEED).bytes(middle)
    path.write_bytes(bytes(data))


def _split_is_directory(files: MachineFiles) -> None:
    path = files.split("val")
    path.unlink()
    path.mkdir()


def _sensor_as_strings(files: MachineFiles) -> None:
    sensor = files.plain_sensor()

    def edit(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(**{sensor: df[sensor].map(lambda v: f"{v:.2f}")})

    files.edit_splits(edit, ("train",))


def _extra_column(files: MachineFiles) -> None:
    files.edit_splits(lambda df: df.assign(**{FOREIGN_COLUMN: np.linspace(0.0, 1.0, len(df))}))


def _missing_column(files: MachineFiles) -> None:
    sensor = files.plain_sensor()
    files.edit_splits(lambda df: df.drop(columns=[sensor]))


def _val_lacks_column(files: MachineFiles) -> None:
    sensor = files.plain_sensor()
    files.edit_splits(lambda df: df.drop(columns=[sensor]), ("val",))


def _all_nan_sensor(files: MachineFiles) -> None:
    sensor = files.plain_sensor()
    files.edit_splits(lambda df: df.assign(**{sensor: np.nan}), ("train",))


def _inf_values(files: MachineFiles) -> None:
    sensor = files.critical_sensor()

    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.loc[[10, 20, 30], sensor] = [np.inf, np.inf, -np.inf]
        return df

    files.edit_splits(edit, ("test",))


def _constant_sensor(files: MachineFiles) -> None:
    sensor = files.plain_sensor()
    files.edit_splits(lambda df: df.assign(**{sensor: 1.0}), ("train",))


def _all_constant(files: MachineFiles) -> None:
    sensors = files.sensors()
    files.edit_splits(lambda df: df.assign(**{s: 1.0 for s in sensors}))


def _critical_nan(files: MachineFiles) -> None:
    """10 % NaN in a critical sensor: within the contract's hard limit (50 %), above the check's tolerance (0 %)."""
    sensor = files.critical_sensor()

    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.loc[df.index[::10], sensor] = np.nan
        return df

    files.edit_splits(edit, ("train",))


def _unsorted_timestamps(files: MachineFiles) -> None:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        order = np.arange(len(df))
        order[[100, 101]] = [101, 100]  # two neighbouring rows of the first unit swapped
        return df.iloc[order].reset_index(drop=True)

    files.edit_splits(edit, ("train",))


def _duplicate_timestamps(files: MachineFiles) -> None:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.loc[200, TIMESTAMP] = df.loc[199, TIMESTAMP]
        return df

    files.edit_splits(edit, ("val",))


def _timestamps_as_strings(files: MachineFiles) -> None:
    files.edit_splits(lambda df: df.assign(**{TIMESTAMP: df[TIMESTAMP].dt.strftime("%Y-%m-%d %H:%M:%S")}), ("train",))


def _negative_rul(files: MachineFiles) -> None:
    files.edit_splits(lambda df: df.assign(**{RUL: df[RUL] - 5.0}), ("test",))


def _unit_id_as_float(files: MachineFiles) -> None:
    files.edit_splits(lambda df: df.assign(**{UNIT_ID: pd.factorize(df[UNIT_ID])[0] + 0.5}))


def _empty_split(files: MachineFiles) -> None:
    files.edit_splits(lambda df: df.iloc[:0], ("test",))


def _with_label(files: MachineFiles, label: Callable[[str, pd.DataFrame], np.ndarray]) -> None:
    """Add a given failure_status column (declared in the metadata) computed per split by `label`."""
    meta = files.read_json(files.metadata)
    meta["columns"][LABEL] = {"sdtype": "categorical"}
    files.write_json(files.metadata, meta)
    for name in SPLITS:
        df = files.read_split(name)
        files.write_split(name, df.assign(**{LABEL: label(name, df).astype(np.int64)}))


def _label_single_class_in_val(files: MachineFiles) -> None:
    """A given label that fires within 12 h of failure, except in val where it was never recorded (all 0)."""
    _with_label(files, lambda split, df: np.zeros(len(df)) if split == "val" else (df[RUL] <= 12.0).to_numpy())


def _label_all_zero(files: MachineFiles) -> None:
    _with_label(files, lambda split, df: np.zeros(len(df)))


def _rul_far_from_failure_after_train(files: MachineFiles) -> None:
    """val and test never come near a failure: the horizon fitted on train labels them all 0."""
    files.edit_splits(lambda df: df.assign(**{RUL: df[RUL] + 10_000.0}), ("val", "test"))


def _label_not_binary(files: MachineFiles) -> None:
    _with_label(files, lambda split, df: (df[RUL] <= 12.0).to_numpy() * 2)


def _metadata_not_json(files: MachineFiles) -> None:
    text = files.metadata.read_text(encoding="utf-8")
    files.metadata.write_text(text[: len(text) // 2], encoding="utf-8")


def _metadata_top_level_list(files: MachineFiles) -> None:
    files.write_json(files.metadata, [files.read_json(files.metadata)])


def _metadata_other_machine_id(files: MachineFiles) -> None:
    meta = files.read_json(files.metadata)
    meta["machine_id"] = "pump_002"
    files.write_json(files.metadata, meta)


def _metadata_other_table(files: MachineFiles) -> None:
    """The columns of another machine type (the simulator's pump): wrong sensors for this data."""
    from pdm_pipeline.core.simulate import SPECS

    meta = files.read_json(files.metadata)
    numerical = {"sdtype": "numerical", "computer_representation": "Float"}
    columns = {TIMESTAMP: meta["columns"][TIMESTAMP], UNIT_ID: meta["columns"][UNIT_ID]}
    columns.update({s.name: dict(numerical) for s in SPECS["pump"].sensors})
    columns[RUL] = dict(numerical)
    meta["columns"] = columns
    meta["rul_parameters"].pop("critical_sensors")
    files.write_json(files.metadata, meta)
    files.profile.unlink()  # the profile names this machine's sensors; without it only the table mismatch remains


def _metadata_without_spec_version(files: MachineFiles) -> None:
    meta = files.read_json(files.metadata)
    del meta["METADATA_SPEC_VERSION"]
    files.write_json(files.metadata, meta)


def _metadata_rul_as_categorical(files: MachineFiles) -> None:
    meta = files.read_json(files.metadata)
    meta["columns"][RUL] = {"sdtype": "categorical"}
    files.write_json(files.metadata, meta)


def _metadata_unknown_critical_sensor(files: MachineFiles) -> None:
    meta = files.read_json(files.metadata)
    meta["rul_parameters"]["critical_sensors"].append(FOREIGN_COLUMN)
    files.write_json(files.metadata, meta)


def _profile_alarm_above_trip(files: MachineFiles) -> None:
    profile = files.read_json(files.profile)
    limits = profile["sensors"][files.critical_sensor()]
    limits["alarm"], limits["trip"] = 130.0, 120.0
    limits["direction"] = "high"
    files.write_json(files.profile, profile)


def _profile_not_json(files: MachineFiles) -> None:
    files.profile.write_text("machine_type: motor\nsensors: {}\n", encoding="utf-8")


def _profile_unknown_sensor(files: MachineFiles) -> None:
    profile = files.read_json(files.profile)
    profile["sensors"][FOREIGN_COLUMN] = {"unit": "cSt", "alarm": 50.0, "trip": 60.0}
    files.write_json(files.profile, profile)


# ------------------------------------------------------------------------------------------------ corpus

# Train only what a gate variant needs (the anomaly ensemble: seconds), skip the rest.

_TRAIN, _VAL, _TEST = "train.parquet", "val.parquet", "test.parquet"


def _contract(name: str, breaker: Callable[[MachineFiles], None], *expected: str) -> BadInput:
    """A variant the data contract refuses: the machine_dataset step fails."""
    return BadInput(name, breaker, CONTRACT, "machine_dataset", expected)


def _check(name: str, breaker: Callable[[MachineFiles], None] | None, check: str, *expected: str, **kw: Any) -> BadInput:
    """A variant valid by the contract and stopped by a blocking data check (before any model trains)."""
    return BadInput(name, breaker, DATA_CHECK, check, expected, **kw)


def _label(name: str, breaker: Callable[[MachineFiles], None], *expected: str) -> BadInput:
    """A variant whose label is unusable: label_balance ERROR, only the classifier keeps its previous version."""
    return BadInput(name, breaker, LABEL_DEFECT, "label_balance", expected)


def _gate(name: str, check: str, *expected: str, **kw: Any) -> BadInput:
    """Valid data and models, blocked by a gate: the previous release stays (only the anomaly family trains)."""
    return BadInput(name, None, GATE, check, expected, models=("anomaly",), **kw)


def _bad_id(name: str, machine_id: str, *expected: str) -> BadInput:
    """A machine id refused before anything runs (the files stay valid)."""
    return BadInput(name, None, MACHINE_ID, "", expected, machine_id=machine_id)


def _gates(**limits: Any) -> Mapping[str, Any]:
    return MappingProxyType(limits)


VARIANTS: tuple[BadInput, ...] = (
    # Files missing or unreadable.
    _contract("missing_train", _remove_split("train"), _TRAIN, "file not found"),
    _contract("missing_val", _remove_split("val"), _VAL, "file not found"),
    _contract("missing_test", _remove_split("test"), _TEST, "file not found"),
    _contract("truncated_parquet", _truncate_train, _TRAIN, "truncated or corrupt parquet file"),
    _contract("random_bytes_parquet", _random_bytes_val, _VAL, "not a parquet file"),
    _contract("csv_renamed_parquet", _csv_as_parquet_test, _TEST, "not a parquet file", "b'time'"),
    _contract("garbled_parquet_body", _garbled_parquet_body, _TRAIN, "corrupt parquet file"),
    _contract("split_is_a_directory", _split_is_directory, _VAL, "not a regular file"),
    # Columns and dtypes.
    _contract("sensor_as_strings", _sensor_as_strings, _TRAIN, "expected a numeric sensor column", "holds strings"),
    _contract("extra_column", _extra_column, FOREIGN_COLUMN, "column in the data but not in the metadata"),
    _contract("missing_column", _missing_column, "column in the metadata but missing from the data"),
    _contract("split_columns_differ", _val_lacks_column, _VAL, "missing from the data"),
    _contract("timestamps_as_strings", _timestamps_as_strings, _TRAIN, "'timestamp'", "expected datetime"),
    _contract("unit_id_as_float", _unit_id_as_float, "'unit_id'", "expected integer or string unit ids"),
    _contract("empty_split", _empty_split, _TEST, "empty split (0 rows)"),
    # Values.
    _contract("all_nan_sensor", _all_nan_sensor, _TRAIN, "100.0% NaN"),
    _contract("inf_values", _inf_values, _TEST, "3 infinite values (+inf 2, -inf 1), first at row 10"),
    _contract("unsorted_timestamps", _unsorted_timestamps, _TRAIN, "not sorted within a unit", "first at row 101"),
    _contract("duplicate_timestamps", _duplicate_timestamps, _VAL, "1 duplicate timestamps within a unit", "row 200"),
    _contract("negative_rul", _negative_rul, _TEST, "'rul'", "negative values", "rul must be >= 0"),
    _contract("label_not_binary", _label_not_binary, f"'{LABEL}'", "values other than 0/1"),
    # Metadata and profile.
    _contract("metadata_not_json", _metadata_not_json, "_metadata.json", "not valid JSON"),
    _contract("metadata_top_level_list", _metadata_top_level_list, "_metadata.json", "top level is a JSON array"),
    _contract("metadata_other_machine_id", _metadata_other_machine_id, 'machine_id is "pump_002"', "belongs to machine"),
    _contract(
        "metadata_other_table", _metadata_other_table, "'discharge_pressure_bar'",
        "column in the metadata but missing from the data", "column in the data but not in the metadata",
    ),
    _contract("metadata_without_spec_version", _metadata_without_spec_version, "missing METADATA_SPEC_VERSION"),
    _contract("metadata_rul_as_categorical", _metadata_rul_as_categorical, "'rul'", "sdtype 'categorical' for reserved"),
    _contract(
        "metadata_unknown_critical_sensor", _metadata_unknown_critical_sensor, FOREIGN_COLUMN,
        "listed in rul_parameters.critical_sensors but not a sensor column",
    ),
    _contract("profile_alarm_above_trip", _profile_alarm_above_trip, "_profile.json", "alarm 130 is above trip 120"),
    _contract("profile_not_json", _profile_not_json, "_profile.json", "not valid JSON"),
    _contract("profile_unknown_sensor", _profile_unknown_sensor, FOREIGN_COLUMN, "profile sensor is not a sensor column"),
    # Invalid machine ids: refused before a partition or a run exists.
    _bad_id("machine_id_parent_dir", "../evil", "invalid machine id '../evil'", "must not contain '..'"),
    _bad_id("machine_id_with_slash", "a/b", "invalid machine id 'a/b'"),
    _bad_id("machine_id_empty", "", "invalid machine id ''"),
    # Valid by the contract, stopped by a blocking data-quality check before any training.
    _check("all_sensors_constant", _all_constant, "no_constant_sensor", "every sensor is constant on train"),
    _check("critical_sensor_nan", _critical_nan, "critical_sensors_complete", "10.0% missing in train.", "tolerance 0.0%"),
    # An unusable label: the classifier keeps its previous version, the other families still release.
    _label("label_single_class_in_val", _label_single_class_in_val, LABEL, "single class in ['val']"),
    _label("rul_far_from_failure_after_train", _rul_far_from_failure_after_train, LABEL, "single class in ['val', 'test']"),
    _label("label_all_zero", _label_all_zero, f"{LABEL} would be 0 on every train row"),
    # Valid data, a model gate or a release gate blocks: the previous release stays current.
    _gate("pi_size_budget_tiny", "pi_size_gate", "anomaly model", "OVER the Pi budget of 0.001 MB",
          gates=_gates(size_budget_mb={"anomaly": 0.001})),
    _gate("strict_quality_gate_fails", "anomaly_single_row_latency", "single_row_latency_ms", "needs <= 0",
          gates=_gates(strict_quality_gates=["anomaly_single_row_latency"],
                       quality_limits={"anomaly_single_row_latency": 0.0})),
    _gate("total_size_budget_tiny", "pi_total_size_gate", "OVER 0.001 MB", gates=_gates(total_budget_mb=0.001)),
)
