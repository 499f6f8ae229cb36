"""The data contract: a small valid machine validates clean and loads; every kind of breakage is reported
with the right file, column and a specific message, all at once."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pdm_pipeline.core.contract import (
    ContractError,
    MachineData,
    Problem,
    SensorLimits,
    file_fingerprint,
    load_machine,
    load_metadata,
    load_profile,
    machine_fingerprint,
    validate_machine,
)
from pdm_pipeline.core.schema import TIMESTAMP, UNIT_ID

MID = "motor_001"
SENSORS = ("bearing_temp_C", "vibration_mm_s", "current_A", "oil_pressure_bar")
ROWS = {"train": 300, "val": 80, "test": 80}
# Units (run-to-failure lifecycles) per split: train has three lifecycles of 100 rows.
UNITS = {"train": (1, 2, 3), "val": (4,), "test": (5,)}

TRAIN = f"synthetic/{MID}/train.parquet"
VAL = f"synthetic/{MID}/val.parquet"
TEST = f"synthetic/{MID}/test.parquet"
META = f"metadata/{MID}_metadata.json"
PROFILE = f"metadata/{MID}_profile.json"


def _split_frame(split: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    units = UNITS[split]
    per_unit = ROWS[split] // len(units)
    parts = []
    for k, unit in enumerate(units):
        start = pd.Timestamp("2024-01-01") + pd.Timedelta(days=30 * (unit - 1))
        rul = np.arange(per_unit - 1, -1, -1, dtype=float)
        wear = 1.0 - rul / per_unit
        parts.append(
            pd.DataFrame(
                {
                    "timestamp": pd.date_range(start, periods=per_unit, freq="h"),
                    "unit_id": unit,
                    "bearing_temp_C": 60 + 25 * wear + rng.normal(0, 1, per_unit),
                    "vibration_mm_s": 2 + 6 * wear**2 + rng.normal(0, 0.2, per_unit),
                    "current_A": 40 + rng.normal(0, 2, per_unit),
                    "oil_pressure_bar": 5 - 2 * wear + rng.normal(0, 0.1, per_unit),
                    "rul": rul,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _metadata() -> dict:
    columns = {"timestamp": {"sdtype": "datetime", "datetime_format": "%Y-%m-%d %H:%M:%S"}, "unit_id": {"sdtype": "id"}}
    columns |= {name: {"sdtype": "numerical"} for name in SENSORS}
    columns["rul"] = {"sdtype": "numerical"}
    return {
        "METADATA_SPEC_VERSION": "SINGLE_TABLE_V1",
        "machine_id": MID,
        "columns": columns,
        "rul_parameters": {
            "max_operational_hours": 100,
            "degradation_profile": "exponential",
            "critical_sensors": ["bearing_temp_C", "vibration_mm_s"],
            "sampling_interval_minutes": 60,
        },
    }


def _profile() -> dict:
    return {
        "machine_type": "motor",
        "sensors": {
            "bearing_temp_C": {"unit": "C", "min": 20, "typical": 65, "max": 120, "alarm": 90, "trip": 105},
            "vibration_mm_s": {"unit": "mm/s", "min": 0, "typical": 2.5, "max": 20, "alarm": 7.1, "trip": 11},
            "oil_pressure_bar": {"unit": "bar", "min": 0, "typical": 5, "max": 8, "alarm": 3, "trip": 2, "direction": "low"},
        },
        "critical_sensors": ["bearing_temp_C"],
    }


def write_machine(root: Path, *, profile: bool = True) -> Path:
    """A small valid machine (300/80/80 rows, 4 sensors, unit_id, rul) with metadata and profile under root."""
    data_dir = root / "synthetic" / MID
    data_dir.mkdir(parents=True)
    for seed, split in enumerate(ROWS):
        _split_frame(split, seed).to_parquet(data_dir / f"{split}.parquet", index=False)
    (root / "metadata").mkdir()
    (root / META).write_text(json.dumps(_metadata(), indent=2))
    if profile:
        (root / PROFILE).write_text(json.dumps(_profile(), indent=2))
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_machine(tmp_path_factory.mktemp("pristine"))


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the valid machine that a test may break."""
    return Path(shutil.copytree(pristine, tmp_path / "data"))


# ------------------------------------------------------------------------------------------ breakage helpers


def edit_split(split: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / "synthetic" / MID / f"{split}.parquet"
        change(pd.read_parquet(path)).to_parquet(path, index=False)

    return apply


def edit_json(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / name
        raw = json.loads(path.read_text())
        change(raw)
        path.write_text(json.dumps(raw))

    return apply


def write_bytes(name: str, content: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / name
        path.write_bytes(content(path.read_bytes()))

    return apply


def delete(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).unlink()


def with_column(name: str, values: Callable[[pd.DataFrame], object]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(**{name: values(df)})

    return change


def nan_share(share: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        values = df["bearing_temp_C"].to_numpy().copy()
        values[np.arange(int(round(share * len(df)))) * 3] = np.nan
        return df.assign(bearing_temp_C=values)

    return change


def set_values(column: str, rows: list[int], value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        values = df[column].to_numpy().copy()
        values[rows] = value
        return df.assign(**{column: values})

    return change


def swap_rows(i: int, j: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        order = np.arange(len(df))
        order[[i, j]] = order[[j, i]]
        return df.iloc[order].reset_index(drop=True)

    return change


def set_in(path: list[str], value: object) -> Callable[[dict], None]:
    def change(raw: dict) -> None:
        target = raw
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def drop_key(*path: str) -> Callable[[dict], None]:
    def change(raw: dict) -> None:
        target = raw
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


def both(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        for step in steps:
            step(root)

    return apply


def add_declared_column_to_val(root: Path) -> None:
    edit_split("val", with_column("extra_sensor_V", lambda df: np.ones(len(df))))(root)
    edit_json(META, set_in(["columns", "extra_sensor_V"], {"sdtype": "numerical"}))(root)


# (breakage, file, column, words the message must contain)
BREAKAGES = {
    "missing split": (delete(VAL), VAL, None, ["file not found"]),
    "truncated parquet": (write_bytes(TRAIN, lambda b: b[: len(b) // 2]), TRAIN, None, ["truncated", "footer"]),
    "corrupt parquet": (
        write_bytes(TEST, lambda b: b[:4] + bytes(len(b) - 8) + b[-4:]),
        TEST, None, ["corrupt parquet"],
    ),
    "corrupt data pages": (write_bytes(TRAIN, lambda b: b[:4] + bytes(2000) + b[2004:]), TRAIN, None, ["corrupt parquet file"]),
    "directory instead of file": (
        both(delete(VAL), lambda root: (root / VAL).mkdir()),
        VAL, None, ["not a regular file"],
    ),
    "not parquet": (write_bytes(TRAIN, lambda b: b"timestamp,current_A\n2024-01-01,3\n"), TRAIN, None, ["not a parquet file"]),
    "metadata missing": (delete(META), META, None, ["file not found"]),
    "metadata not json": (write_bytes(META, lambda b: b'{"columns": {,}}'), META, None, ["not valid JSON", "line 1 column 14"]),
    "metadata not object": (write_bytes(META, lambda b: b"[1, 2]"), META, None, ["JSON array", "expected a JSON object"]),
    "spec version wrong": (
        edit_json(META, set_in(["METADATA_SPEC_VERSION"], "MULTI_TABLE_V1")),
        META, None, ["MULTI_TABLE_V1", "SINGLE_TABLE_V1"],
    ),
    "spec version missing": (edit_json(META, drop_key("METADATA_SPEC_VERSION")), META, None, ["missing METADATA_SPEC_VERSION"]),
    "no columns": (edit_json(META, drop_key("columns")), META, None, ['"columns" is missing']),
    "other machine id": (edit_json(META, set_in(["machine_id"], "pump_002")), META, None, ["pump_002", MID]),
    "data column not in metadata": (
        edit_json(META, drop_key("columns", "current_A")),
        TEST, "current_A", ["in the data but not in the metadata"],
    ),
    "metadata column not in data": (
        edit_split("test", lambda df: df.drop(columns="oil_pressure_bar")),
        TEST, "oil_pressure_bar", ["in the metadata but missing from the data"],
    ),
    "sensor holds strings": (
        edit_split("val", with_column("vibration_mm_s", lambda df: df["vibration_mm_s"].map("{:.2f} mm/s".format))),
        VAL, "vibration_mm_s", ["dtype object", "holds strings", "mm/s"],
    ),
    "nan share": (edit_split("train", nan_share(0.12)), TRAIN, "bearing_temp_C", ["12.0% NaN (limit 0.0%", "36 of 300"]),
    "inf": (
        edit_split("val", set_values("current_A", [5, 9], np.inf)),
        VAL, "current_A", ["2 infinite values", "+inf 2", "first at row 5"],
    ),
    "-inf": (edit_split("test", set_values("oil_pressure_bar", [7], -np.inf)), TEST, "oil_pressure_bar", ["-inf 1"]),
    "timestamp as parseable strings": (
        edit_split("train", with_column("timestamp", lambda df: df["timestamp"].astype(str))),
        TRAIN, "timestamp", ["expected datetime", "parse as dates"],
    ),
    "timestamp not parseable": (
        edit_split("val", with_column("timestamp", lambda df: df["timestamp"].astype(str).where(df.index % 8 != 3, "n/a"))),
        VAL, "timestamp", ["expected datetime", "10 values are not parseable", "'n/a' at row 3"],
    ),
    "timestamp unsorted": (
        edit_split("train", swap_rows(10, 20)),
        TRAIN, "timestamp", ["not sorted within a unit", "2 rows earlier", "first at row 11 (unit 1, "],
    ),
    "timestamp duplicate": (
        edit_split("test", set_values("timestamp", [31], pd.Timestamp("2024-05-01 06:00"))),
        TEST, "timestamp", ["1 duplicate timestamps within a unit", "first at row 31"],
    ),
    "timestamp missing value": (
        edit_split("val", set_values("timestamp", [4, 6], np.datetime64("NaT"))),
        VAL, "timestamp", ["2 missing timestamps (NaT), first at row 4"],
    ),
    "negative rul": (edit_split("val", set_values("rul", [1, 2, 3], -2.5)), VAL, "rul", ["3 negative values", "min -2.5"]),
    "empty split": (edit_split("test", lambda df: df.iloc[:0]), TEST, None, ["empty split (0 rows)"]),
    "split columns differ": (add_declared_column_to_val, VAL, "extra_sensor_V", ["not in train.parquet"]),
    "split columns differ (metadata unreadable)": (
        both(delete(META), edit_split("val", lambda df: df.drop(columns="current_A"))),
        VAL, "current_A", ["missing here but present in train.parquet"],
    ),
    "profile not json": (write_bytes(PROFILE, lambda b: b"{\n  'sensors': 1\n}"), PROFILE, None, ["not valid JSON", "line 2 column 3"]),
    "alarm above trip (high)": (
        edit_json(PROFILE, set_in(["sensors", "bearing_temp_C", "alarm"], 110)),
        PROFILE, "bearing_temp_C", ["alarm 110 is above trip 105", '"high"'],
    ),
    "alarm below trip (low)": (
        edit_json(PROFILE, set_in(["sensors", "oil_pressure_bar", "alarm"], 1.5)),
        PROFILE, "oil_pressure_bar", ["alarm 1.5 is below trip 2", '"low"'],
    ),
    "min above max": (
        edit_json(PROFILE, set_in(["sensors", "vibration_mm_s", "min"], 25)),
        PROFILE, "vibration_mm_s", ["min 25 is above max 20"],
    ),
    "profile sensor not in data": (
        edit_json(PROFILE, set_in(["sensors", "speed_rpm"], {"unit": "rpm", "max": 3000})),
        PROFILE, "speed_rpm", ["not a sensor column"],
    ),
    "critical sensor unknown": (
        edit_json(META, set_in(["rul_parameters", "critical_sensors"], ["bearing_temp_C", "torque_Nm"])),
        META, "torque_Nm", ["critical_sensors", "not a sensor column"],
    ),
    "label not 0/1": (
        both(
            edit_split("train", with_column("failure_status", lambda df: (df["rul"] < 10).astype(int) * 2)),
            edit_split("val", with_column("failure_status", lambda df: np.zeros(len(df), dtype=int))),
            edit_split("test", with_column("failure_status", lambda df: np.zeros(len(df), dtype=int))),
            edit_json(META, set_in(["columns", "failure_status"], {"sdtype": "categorical"})),
        ),
        TRAIN, "failure_status", ["values other than 0/1", "e.g. 2"],
    ),
    "unit id missing": (
        edit_split("val", with_column("unit_id", lambda df: [None if i == 3 else f"u{u}" for i, u in enumerate(df["unit_id"])])),
        VAL, "unit_id", ["1 missing unit ids", "row 3"],
    ),
    "timestamp missing without time_order false": (
        both(
            *(edit_split(s, lambda df: df.drop(columns="timestamp")) for s in ROWS),
            edit_json(META, drop_key("columns", "timestamp")),
        ),
        META, "timestamp", ['"time_order": false'],
    ),
}


def _matching(problems: list[Problem], file: str, column: str | None) -> list[Problem]:
    return [p for p in problems if p.file == file and p.column == column and p.machine_id == MID]


def test_valid_machine_validates_clean_and_loads(root: Path) -> None:
    assert validate_machine(root, MID) == []
    data = load_machine(root, MID)
    assert isinstance(data, MachineData)
    assert data.sensors == SENSORS
    assert {s: len(df) for s, df in data.splits.items()} == ROWS
    meta = data.metadata
    assert (meta.has_rul, meta.has_unit, meta.has_label, meta.time_order) == (True, True, False, True)
    assert meta.critical_sensors == ("bearing_temp_C", "vibration_mm_s")  # rul_parameters wins over the profile
    assert meta.rul_parameters["degradation_profile"] == "exponential"
    assert data.profile is not None and data.profile.machine_type == "motor"
    assert data.profile.sensors["oil_pressure_bar"] == SensorLimits("bar", 0.0, 5.0, 8.0, 3.0, 2.0, "low")
    assert data.profile.sensors["bearing_temp_C"].direction == "high"  # the default
    assert all(data.splits["train"][s].dtype == np.float64 for s in SENSORS)


@pytest.mark.parametrize("case", list(BREAKAGES), ids=list(BREAKAGES))
def test_breakage_is_reported_with_file_column_and_message(root: Path, case: str) -> None:
    breakage, file, column, words = BREAKAGES[case]
    breakage(root)
    problems = validate_machine(root, MID)
    hits = _matching(problems, file, column)
    assert hits, f"no problem for {file} column {column!r}; got:\n" + "\n".join(map(str, problems))
    assert any(all(w in p.message for w in words) for p in hits), "\n".join(map(str, hits))
    with pytest.raises(ContractError):
        load_machine(root, MID)


def test_a_sensor_that_tracks_rul_is_named_by_a_data_check(root: Path) -> None:
    """A counter of age among the sensors (operating hours of a unit: it falls as rul does, without noise) reads
    the target: the data check warns and names it; the measured sensors, however close to rul, pass."""
    from pdm_pipeline.core.config import GateSettings
    from pdm_pipeline.core.gates import check_rul_proxy, data_quality

    data = load_machine(root, MID)
    assert check_rul_proxy(data.splits, data.sensors, GateSettings()).passed
    assert "no_rul_proxy_sensor" in [g.name for g in data_quality(data, GateSettings())]
    train = data.splits["train"]
    leaky = {**data.splits, "train": train.assign(operating_hours=1000.0 - train["rul"])}
    outcome = check_rul_proxy(leaky, (*data.sensors, "operating_hours"), GateSettings())
    assert not outcome.passed and outcome.warns and not outcome.blocks
    assert outcome.description.endswith("): operating_hours (|rho| 1.0000)"), outcome.description


def test_a_long_outage_is_named_by_the_timestamp_check(root: Path) -> None:
    """One 7-day gap among thousands of regular steps is too rare to make the steps irregular, but it is an outage
    the features restart after: the check warns, naming its length, split, unit and start."""
    from pdm_pipeline.core.config import GateSettings
    from pdm_pipeline.core.gates import check_regular_timestamps

    data = load_machine(root, MID)
    assert check_regular_timestamps(data.splits, data.metadata.time_unit, GateSettings()).passed
    train = data.splits["train"].copy()
    first_unit = train[UNIT_ID] == train[UNIT_ID].iloc[0] if UNIT_ID in train.columns else train.index >= 0
    rows = train.index[first_unit]
    later = rows[len(rows) // 2:]
    before = train.loc[later[0] - 1, TIMESTAMP]
    train.loc[later, TIMESTAMP] += pd.Timedelta(days=7)
    if UNIT_ID in train.columns:
        train = train.sort_values([UNIT_ID, TIMESTAMP], kind="stable")
    outcome = check_regular_timestamps({**data.splits, "train": train}, data.metadata.time_unit, GateSettings())
    assert not outcome.passed and outcome.warns and not outcome.blocks
    assert "1 gap(s) longer than 36 steps" in outcome.description and "in train" in outcome.description
    assert f"after {before}" in outcome.description, outcome.description
    assert outcome.details["long_gaps"] == 1
    assert check_regular_timestamps({**data.splits, "train": train}, data.metadata.time_unit, GateSettings(max_gap_steps=1e9)).passed
    # an outage between two splits of one unit (its windows run on across them) is named too
    unit = data.splits["train"].loc[rows]
    cut = len(unit) * 2 // 3
    split = {"train": unit.iloc[:cut], "val": unit.iloc[cut:].assign(**{TIMESTAMP: unit[TIMESTAMP].iloc[cut:] +
                                                                        pd.Timedelta(days=10)})}
    assert check_regular_timestamps({"train": unit.iloc[:cut], "val": unit.iloc[cut:]}, data.metadata.time_unit,
                                    GateSettings()).passed
    outcome = check_regular_timestamps(split, data.metadata.time_unit, GateSettings())
    assert not outcome.passed and "between train and val" in outcome.description, outcome.description


def test_problem_str_names_machine_file_and_column(root: Path) -> None:
    edit_split("train", nan_share(0.12))(root)
    (problem,) = validate_machine(root, MID)
    assert str(problem) == f"{MID}: {TRAIN} column 'bearing_temp_C': 12.0% NaN (limit 0.0%, 36 of 300 rows)"
    assert str(Problem(MID, META, None, "x")) == f"{MID}: {META}: x"


def test_max_nan_share_allows_some_nan_and_load_keeps_them(root: Path) -> None:
    edit_split("train", nan_share(0.12))(root)
    assert validate_machine(root, MID, max_nan_share=0.15) == []
    problems = validate_machine(root, MID, max_nan_share=0.10)
    assert [p.message.split(" NaN")[0] for p in problems] == ["12.0%"]
    data = load_machine(root, MID, max_nan_share=0.15)
    assert data.splits["train"]["bearing_temp_C"].isna().sum() == 36
    with pytest.raises(ValueError, match="max_nan_share"):
        validate_machine(root, MID, max_nan_share=1.5)


def test_broken_metadata_does_not_stop_the_data_checks(root: Path) -> None:
    """Every problem comes at once, even when the metadata cannot be read."""
    write_bytes(META, lambda b: b"not json")(root)
    edit_split("val", set_values("rul", [0], -1.0))(root)
    write_bytes(TEST, lambda b: b"hello")(root)
    files = {p.file for p in validate_machine(root, MID)}
    assert files == {META, VAL, TEST}


def test_load_machine_raises_with_all_problems(root: Path) -> None:
    edit_split("train", nan_share(0.12))(root)
    edit_split("val", set_values("rul", [0], -1.0))(root)
    edit_json(PROFILE, set_in(["sensors", "bearing_temp_C", "alarm"], 110))(root)
    with pytest.raises(ContractError) as info:
        load_machine(root, MID)
    err = info.value
    assert {(p.file, p.column) for p in err.problems} == {
        (TRAIN, "bearing_temp_C"), (VAL, "rul"), (PROFILE, "bearing_temp_C")
    }
    lines = str(err).splitlines()
    assert MID in lines[0] and "3 problems" in lines[0]
    assert len(lines) == 4 and all(str(p) in str(err) for p in err.problems)
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert again.problems == err.problems and str(again) == str(err)


@pytest.mark.parametrize("bad_id", ["../etc", "a/b", "", ".hidden", "x" * 65, "a..b", None])
def test_invalid_machine_ids_are_rejected_before_touching_files(tmp_path: Path, bad_id: object) -> None:
    problems = validate_machine(tmp_path / "does-not-exist", bad_id)  # type: ignore[arg-type]
    assert len(problems) == 1 and problems[0].file == "" and "invalid machine id" in problems[0].message
    for load in (load_machine, load_metadata, load_profile, machine_fingerprint):
        with pytest.raises(ContractError, match="invalid machine id"):
            load(tmp_path, bad_id)  # type: ignore[operator]


@pytest.mark.parametrize("good_id", ["motor_001", "Pump-2.b"])
def test_valid_machine_ids_are_accepted(tmp_path: Path, good_id: str) -> None:
    problems = validate_machine(tmp_path, good_id)
    assert problems and all("invalid machine id" not in p.message for p in problems)
    assert {p.file for p in problems} >= {f"synthetic/{good_id}/train.parquet", f"metadata/{good_id}_metadata.json"}


def test_unknown_metadata_and_profile_keys_are_kept(root: Path) -> None:
    edit_json(META, set_in(["sequence_index"], "timestamp"))(root)
    edit_json(META, set_in(["rul_parameters", "failure_modes"], ["bearing"]))(root)
    edit_json(PROFILE, set_in(["manufacturer"], {"name": "Siemens"}))(root)
    assert validate_machine(root, MID) == []
    meta = load_metadata(root, MID)
    assert meta.extra == {"sequence_index": "timestamp"}
    assert meta.rul_parameters["failure_modes"] == ["bearing"]
    assert load_profile(root, MID).extra == {"manufacturer": {"name": "Siemens"}}  # type: ignore[union-attr]


def test_profile_is_optional_and_critical_sensors_fall_back_to_it(tmp_path: Path) -> None:
    root = write_machine(tmp_path, profile=False)
    assert load_profile(root, MID) is None
    assert validate_machine(root, MID) == []
    assert load_machine(root, MID).profile is None
    edit_json(META, drop_key("rul_parameters", "critical_sensors"))(root)
    assert load_metadata(root, MID).critical_sensors == ()
    (root / PROFILE).write_text(json.dumps(_profile()))
    assert load_metadata(root, MID).critical_sensors == ("bearing_temp_C",)


def test_load_profile_and_metadata_raise_when_broken(root: Path) -> None:
    edit_json(PROFILE, set_in(["sensors", "current_A"], {"direction": "sideways", "max": "high"}))(root)
    with pytest.raises(ContractError) as info:
        load_profile(root, MID)
    messages = sorted(p.message for p in info.value.problems)
    assert len(messages) == 2 and "direction" in messages[0] and '"max" must be a finite number' in messages[1]
    edit_json(META, set_in(["columns", "current_A"], {"sdtype": "float"}))(root)
    with pytest.raises(ContractError, match="sdtype \"float\", expected one of"):
        load_metadata(root, MID)


def test_load_machine_groups_interleaved_units_sorted_by_time(root: Path) -> None:
    """Units may interleave in the file (each unit in time order); the loaded split is grouped by unit."""
    path = root / TRAIN
    df = pd.read_parquet(path)
    interleaved = df.iloc[np.argsort(np.tile(np.arange(100), 3) * 10 + df["unit_id"].to_numpy(), kind="stable")]
    interleaved.to_parquet(path, index=False)
    assert validate_machine(root, MID) == []
    train = load_machine(root, MID).splits["train"]
    assert train["unit_id"].tolist() == [1] * 100 + [2] * 100 + [3] * 100
    assert list(train.index) == list(range(300))
    assert all(g["timestamp"].is_monotonic_increasing for _, g in train.groupby("unit_id"))
    pd.testing.assert_frame_equal(train, df.astype({s: "float64" for s in SENSORS}))


def test_same_timestamp_in_different_units_is_fine_without_units_it_is_a_duplicate(root: Path) -> None:
    edit_split("train", with_column("timestamp", lambda df: np.tile(pd.date_range("2024-01-01", periods=100, freq="h"), 3)))(root)
    assert validate_machine(root, MID) == []
    edit_json(META, drop_key("columns", "unit_id"))(root)
    for split in ROWS:
        edit_split(split, lambda df: df.drop(columns="unit_id"))(root)
    messages = [p.message for p in _matching(validate_machine(root, MID), TRAIN, "timestamp")]
    assert any("200 duplicate timestamps in the split" in m for m in messages)
    assert any("not sorted in the split" in m for m in messages)


def test_time_order_false_allows_data_without_timestamp(root: Path) -> None:
    for split in ROWS:
        edit_split(split, lambda df: df.drop(columns="timestamp").sample(frac=1.0, random_state=0))(root)
    edit_json(META, drop_key("columns", "timestamp"))(root)
    edit_json(META, set_in(["time_order"], False))(root)
    assert validate_machine(root, MID) == []
    assert load_machine(root, MID).metadata.time_order is False


def test_fingerprints_change_with_any_file_and_ignore_the_root_location(root: Path, pristine: Path) -> None:
    before = machine_fingerprint(root, MID)
    assert before == machine_fingerprint(pristine, MID)
    assert file_fingerprint(root / TRAIN) == file_fingerprint(pristine / TRAIN)
    assert len(before) == 64 and int(before, 16) >= 0
    edit_json(PROFILE, set_in(["machine_type"], "pump"))(root)
    after_profile = machine_fingerprint(root, MID)
    assert after_profile != before
    edit_split("test", set_values("current_A", [0], 41.0))(root)
    assert machine_fingerprint(root, MID) != after_profile
    (root / VAL).unlink()
    import re

    # the data root it looked in is named (a run given another data_dir said only 'synthetic/.../val.parquet')
    with pytest.raises(ContractError, match=re.escape(f"val.parquet: file not found (data root {root})")):
        machine_fingerprint(root, MID)


def test_a_split_too_big_to_train_is_refused_from_its_footer_before_it_is_read(root: Path, monkeypatch) -> None:
    from pdm_pipeline.core import contract

    rows = ROWS["train"]
    with pytest.raises(ContractError) as info:
        load_machine(root, MID, max_rows=rows - 1)
    (problem,) = info.value.problems
    assert problem.file == TRAIN and f"{rows:,} rows is more than max_split_rows={rows - 1:,}" in problem.message
    assert "--set max_split_rows=" in problem.message and "GB of memory" in problem.message
    assert validate_machine(root, MID, max_rows=rows) == []
    # Within the row limit but more than this host's memory: refused too, the estimate beside what is there.
    monkeypatch.setattr(contract, "available_memory_bytes", lambda: 1000)
    (problem, *_) = validate_machine(root, MID, max_rows=rows)
    assert "too big for this host" in problem.message and "0.0 GB available" in problem.message


def test_the_data_checks_are_judged_once_per_dataset_and_settings(root: Path) -> None:
    """machine_dataset judges the data and the release re-checks it: the outcomes travel with the stored dataset
    (a pickle), so the release reads them back; other gate settings are judged anew."""
    import pickle

    from pdm_pipeline.core.config import GateSettings
    from pdm_pipeline.core.contract import load_machine
    from pdm_pipeline.core.gates import data_quality

    data = load_machine(root, MID)
    first = data_quality(data, GateSettings())
    stored = pickle.loads(pickle.dumps(data))
    assert [g.as_dict() for g in data_quality(stored, GateSettings())] == [g.as_dict() for g in first]
    assert len(stored.quality) == 1
    strict = data_quality(stored, GateSettings(max_ks_statistic=0.0))
    assert len(stored.quality) == 2 and strict[4].name == "distribution_shift" and not strict[4].passed
