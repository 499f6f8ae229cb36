"""The importer: every option on small hand-made files, every bad input with a message naming the file and
column, atomic writes, and the written machines pass the data contract's validator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pdm_pipeline.core.contract import load_machine, load_profile, validate_machine
from pdm_pipeline.core.importer import (
    CYCLE_ORIGIN,
    ImportOptions,
    ImportOptionsError,
    import_ai4i2020,
    import_data,
    import_nab_machine_temperature,
    sanitize_column_name,
)
from pdm_pipeline.core.paths import machine_dir, metadata_path, profile_path, split_path

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


# ------------------------------------------------------------------------------------------------ helpers


def _series(n: int = 20, start: str = "2024-03-01 00:00", freq: str = "10min", seed: int = 0) -> pd.DataFrame:
    """A small time series in a user's layout: string times, bracketed units, a plain 'value' column."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "Time": pd.date_range(start, periods=n, freq=freq).strftime("%Y-%m-%d %H:%M:%S"),
            "Temp [°C]": np.round(60 + rng.normal(0, 1, n), 3),
            "Pressure (bar)": np.round(5 + rng.normal(0, 0.1, n), 3),
            "value": np.arange(n, dtype=float),
        }
    )


def _fleet(units: dict[int, tuple[str, int]], seed: int = 0) -> pd.DataFrame:
    """Hourly rows per unit: {unit id: (first timestamp, number of rows)}, in file order unit by unit."""
    rng = np.random.default_rng(seed)
    parts = [
        pd.DataFrame(
            {
                "engine": unit,
                "when": pd.date_range(start, periods=n, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
                "vibration [mm/s]": rng.normal(2, 0.1, n),
            }
        )
        for unit, (start, n) in units.items()
    ]
    return pd.concat(parts, ignore_index=True)


def _csv(path: Path, frame: pd.DataFrame, sep: str = ",", bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep=sep, index=False, encoding="utf-8-sig" if bom else "utf-8")
    return path


def _imported(source: Path, root: Path, **options) -> dict[str, pd.DataFrame]:
    """Import, check the contract validator finds nothing, and return the splits as written."""
    ids = import_data(source, root, ImportOptions(**options))
    for machine_id in ids:
        assert validate_machine(root, machine_id) == []
    return {s: pd.read_parquet(split_path(root, ids[0], s)) for s in ("train", "val", "test")}


def _metadata(root: Path, machine_id: str) -> dict:
    return json.loads(metadata_path(root, machine_id).read_text())


def _error(source: Path, root: Path, **options) -> str:
    with pytest.raises(ImportOptionsError) as info:
        import_data(source, root, ImportOptions(**options))
    return str(info.value)


# ------------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Air temperature [K]", "air_temperature_K"),
        ("Rotational speed [rpm]", "rotational_speed_rpm"),
        ("Torque [Nm]", "torque_Nm"),
        ("value", "value"),
        ("Temp [°C]", "temp_degC"),
        ("Pressure (bar)", "pressure_bar"),
        ("Humidity [%]", "humidity_pct"),
        ("  Motor-Current  ", "motor_current"),
        ("vibration [mm/s]", "vibration_mm_s"),
    ],
)
def test_sanitize_column_name(given: str, expected: str) -> None:
    assert sanitize_column_name(given) == expected


# ------------------------------------------------------------------------------------------------ options


def test_time_column_chronological_split_and_metadata(tmp_path: Path) -> None:
    frame = _series(20)
    source = _csv(tmp_path / "in.csv", frame.iloc[::-1])  # rows out of order in the file
    root = tmp_path / "data"
    splits = _imported(source, root, machine_id="press_1", time_column="Time")

    assert [len(splits[s]) for s in ("train", "val", "test")] == [14, 3, 3]
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert list(train.columns) == ["timestamp", "temp_degC", "pressure_bar", "value"]
    assert str(train["timestamp"].dtype) == "datetime64[ns]"
    assert all(str(train[c].dtype) == "float64" for c in ("temp_degC", "pressure_bar", "value"))
    assert train["timestamp"].is_monotonic_increasing
    assert train["timestamp"].max() < val["timestamp"].min() <= val["timestamp"].max() < test["timestamp"].min()
    # the values travel with their timestamps
    assert train["value"].tolist() == list(range(14))

    meta = _metadata(root, "press_1")
    assert meta["METADATA_SPEC_VERSION"] == "SINGLE_TABLE_V1" and meta["machine_id"] == "press_1"
    assert meta["time_order"] is True
    assert meta["columns"]["timestamp"] == {"sdtype": "datetime", "datetime_format": "%Y-%m-%d %H:%M:%S"}
    assert meta["columns"]["temp_degC"] == {"sdtype": "numerical", "computer_representation": "Float"}
    assert set(meta["columns"]) == {"timestamp", "temp_degC", "pressure_bar", "value"}
    assert meta["rul_parameters"] == {"sampling_interval_minutes": 10.0}
    assert meta["source"]["file"] == str(source)
    assert meta["source"]["sensor_columns"]["temp_degC"] == "Temp [°C]"
    assert meta["source"]["options"]["time_column"] == "Time"
    assert not profile_path(root, "press_1").exists()


def test_bom_and_separator(tmp_path: Path) -> None:
    source = _csv(tmp_path / "in.csv", _series(20), sep=";", bom=True)
    splits = _imported(source, tmp_path / "data", machine_id="m", time_column="Time", separator=";")
    assert "temp_degC" in splits["train"].columns

    message = _error(source, tmp_path / "other", machine_id="m", time_column="Time")
    assert "'Time'" in message and str(source) in message and "separator ';'" in message


def test_time_zones_become_utc(tmp_path: Path) -> None:
    frame = _series(20)
    frame["Time"] = pd.date_range("2024-03-01 02:00", periods=20, freq="10min", tz="Europe/Berlin").astype(str)
    splits = _imported(_csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", time_column="Time")
    assert splits["train"]["timestamp"].iloc[0] == pd.Timestamp("2024-03-01 01:00")


def test_cycle_column_with_unit(tmp_path: Path) -> None:
    frame = pd.DataFrame({"cycle": np.arange(1, 21), "s1": np.linspace(0, 1, 20)})
    splits = _imported(
        _csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", cycle_column="cycle", cycle_unit="h"
    )
    assert list(splits["train"].columns) == ["timestamp", "s1"]  # the counter is a time axis, never a sensor
    assert splits["train"]["timestamp"].iloc[0] == CYCLE_ORIGIN + pd.Timedelta(hours=1)
    assert splits["test"]["timestamp"].iloc[-1] == CYCLE_ORIGIN + pd.Timedelta(hours=20)
    assert _metadata(tmp_path / "data", "m")["rul_parameters"]["sampling_interval_minutes"] == 60.0


def test_unit_column_and_unit_split(tmp_path: Path) -> None:
    # Unit 10 starts last, unit 2 first: the unit split orders by first timestamp, not by id.
    units = {
        10: ("2024-01-09", 6), 2: ("2024-01-01", 6), 3: ("2024-01-03", 6), 4: ("2024-01-05", 6), 5: ("2024-01-07", 6)
    }
    source = _csv(tmp_path / "fleet.csv", _fleet(units))
    splits = _imported(
        source, tmp_path / "data", machine_id="fleet", time_column="when", unit_column="engine",
        split="unit", ratios=(0.6, 0.2, 0.2),
    )
    train = splits["train"]
    assert list(train.columns) == ["timestamp", "unit_id", "vibration_mm_s"]
    assert train["unit_id"].tolist() == ["2"] * 6 + ["3"] * 6 + ["4"] * 6  # strings, sorted by (unit, time)
    assert splits["val"]["unit_id"].unique().tolist() == ["5"]
    assert splits["test"]["unit_id"].unique().tolist() == ["10"]
    assert _metadata(tmp_path / "data", "fleet")["columns"]["unit_id"] == {"sdtype": "id"}


def test_unit_split_without_time_keeps_file_order_of_units(tmp_path: Path) -> None:
    frame = pd.DataFrame({"u": np.repeat(["c", "a", "b"], 4), "x": np.arange(12.0)})
    splits = _imported(
        _csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", unit_column="u",
        split="unit", ratios=(0.34, 0.33, 0.33),
    )
    assert [splits[s]["unit_id"].unique().tolist() for s in ("train", "val", "test")] == [["c"], ["a"], ["b"]]
    assert "timestamp" not in splits["train"].columns


def test_directory_of_files_one_unit_per_file(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    for k, name in enumerate(["run_a", "run_b", "run_c"]):
        frame = _fleet({0: (f"2024-01-0{1 + 2 * k}", 5)}, seed=k).drop(columns="engine")
        if name == "run_c":
            folder.mkdir(exist_ok=True)
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        else:
            _csv(folder / f"{name}.csv", frame)
    (folder / "README.txt").write_text("not data")
    splits = _imported(
        folder, tmp_path / "data", machine_id="runs", time_column="when", split="unit", ratios=(0.4, 0.3, 0.3)
    )
    units = [splits[s]["unit_id"].unique().tolist() for s in ("train", "val", "test")]
    assert units == [["run_a"], ["run_b"], ["run_c"]]


def test_directory_files_must_share_columns(tmp_path: Path) -> None:
    _csv(tmp_path / "d" / "a.csv", pd.DataFrame({"t": ["2024-01-01"], "x": [1.0]}))
    bad = _csv(tmp_path / "d" / "b.csv", pd.DataFrame({"t": ["2024-01-02"], "y": [1.0]}))
    message = _error(tmp_path / "d", tmp_path / "data", machine_id="m", time_column="t")
    assert str(bad) in message and "missing ['x']" in message and "extra ['y']" in message


def test_label_and_eval_label(tmp_path: Path) -> None:
    frame = _series(20)
    frame["broken"] = [i % 4 == 0 for i in range(20)]  # booleans
    frame["truth"] = (np.arange(20) >= 15).astype(int)
    splits = _imported(
        _csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", time_column="Time",
        label_column="broken", eval_label_column="truth",
    )
    test = splits["test"]
    assert {"failure_status", "anomaly_window"} <= set(test.columns)
    assert not {"broken", "truth"} & set(test.columns)
    assert str(test["failure_status"].dtype) == "int64"
    assert test["anomaly_window"].tolist() == [1, 1, 1]
    assert splits["train"]["failure_status"].tolist() == [int(i % 4 == 0) for i in range(14)]
    meta = _metadata(tmp_path / "data", "m")
    assert meta["columns"]["failure_status"] == {"sdtype": "categorical"}
    assert meta["columns"]["anomaly_window"] == {"sdtype": "categorical"}
    assert load_machine(tmp_path / "data", "m").sensors == ("temp_degC", "pressure_bar", "value")


def test_drop_columns_and_no_silent_drop(tmp_path: Path) -> None:
    frame = _series(20)
    frame["Serial"] = [f"SN{i}" for i in range(20)]
    frame["leak"] = np.arange(20.0)
    source = _csv(tmp_path / "in.csv", frame)
    message = _error(source, tmp_path / "data", machine_id="m", time_column="Time")
    assert "'Serial'" in message and "drop_columns" in message and str(source) in message

    splits = _imported(source, tmp_path / "data", machine_id="m", time_column="Time", drop_columns=["Serial", "leak"])
    assert not {"Serial", "leak", "serial"} & set(splits["train"].columns)


def test_sensor_columns_and_rename(tmp_path: Path) -> None:
    frame = _series(20)
    frame["Notes"] = "ok"
    splits = _imported(
        _csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", time_column="Time",
        sensor_columns=["value", "Temp [°C]"], rename={"value": "flow_l_min"},
    )
    assert list(splits["train"].columns) == ["timestamp", "flow_l_min", "temp_degC"]
    assert set(_metadata(tmp_path / "data", "m")["source"]["ignored_columns"]) == {"Pressure (bar)", "Notes"}


def test_random_split_stratified_and_seeded(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=100), "y": (np.arange(100) < 20).astype(int)})
    source = _csv(tmp_path / "in.csv", frame)

    def split_rows(root: Path, seed: int) -> dict[str, pd.DataFrame]:
        return _imported(source, root, machine_id="m", label_column="y", split="random", seed=seed)

    first, again, other = split_rows(tmp_path / "a", 0), split_rows(tmp_path / "b", 0), split_rows(tmp_path / "c", 1)
    assert [int(first[s]["failure_status"].sum()) for s in ("train", "val", "test")] == [14, 3, 3]
    assert [len(first[s]) for s in ("train", "val", "test")] == [70, 15, 15]
    assert first["test"]["x"].tolist() == again["test"]["x"].tolist()
    assert first["test"]["x"].tolist() != other["test"]["x"].tolist()
    assert "timestamp" not in first["train"].columns
    assert _metadata(tmp_path / "a", "m")["time_order"] is False
    assert validate_machine(tmp_path / "a", "m") == []


def test_column_split(tmp_path: Path) -> None:
    frame = _series(10)
    frame["set"] = ["Train"] * 5 + ["VAL"] * 2 + ["test"] * 3
    splits = _imported(
        _csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", time_column="Time",
        split="column", split_column="set",
    )
    assert [len(splits[s]) for s in ("train", "val", "test")] == [5, 2, 3]
    assert "set" not in splits["train"].columns


@pytest.mark.parametrize(("cap", "expected_max"), [(None, 9.0), (4.0, 4.0)])
def test_compute_rul(tmp_path: Path, cap: float | None, expected_max: float) -> None:
    units = {1: ("2024-01-01", 10), 2: ("2024-01-02", 6), 3: ("2024-01-03", 8), 4: ("2024-01-04", 7)}
    splits = _imported(
        _csv(tmp_path / "in.csv", _fleet(units)), tmp_path / "data", machine_id="m", time_column="when",
        unit_column="engine", split="unit", ratios=(0.5, 0.25, 0.25), compute_rul=True, rul_cap_hours=cap,
    )
    unit_1 = splits["train"][splits["train"]["unit_id"] == "1"]
    expected = np.arange(9.0, -1.0, -1.0)
    assert unit_1["rul"].tolist() == (expected if cap is None else np.minimum(expected, cap)).tolist()
    assert splits["test"]["rul"].iloc[-1] == 0.0  # every unit ends in failure
    assert str(unit_1["rul"].dtype) == "float64"
    assert _metadata(tmp_path / "data", "m")["rul_parameters"]["max_operational_hours"] == expected_max


def test_thresholds_write_a_profile(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _imported(
        _csv(tmp_path / "in.csv", _series(20)), root, machine_id="m", time_column="Time", machine_type="press",
        thresholds={
            "Temp [°C]": {"typical": 60.0, "alarm": 61.0, "trip": 63.0},  # by source name
            "pressure_bar": {"alarm": 4.8, "trip": 4.5, "direction": "low", "unit": "bar(g)"},  # by sensor name
            "value": {"max": 100.0},
        },
    )
    profile = json.loads(profile_path(root, "m").read_text())
    assert profile["machine_id"] == "m" and profile["machine_type"] == "press"
    assert profile["sensors"]["temp_degC"] == {
        "unit": "°C", "typical": 60.0, "alarm": 61.0, "trip": 63.0, "direction": "high"
    }
    assert profile["sensors"]["pressure_bar"]["unit"] == "bar(g)"
    assert profile["sensors"]["pressure_bar"]["direction"] == "low"
    # critical sensors default to the thresholded sensors that have an alarm level
    assert profile["critical_sensors"] == ["temp_degC", "pressure_bar"]
    assert _metadata(root, "m")["rul_parameters"]["critical_sensors"] == ["temp_degC", "pressure_bar"]
    loaded = load_profile(root, "m")
    assert loaded is not None and loaded.sensors["pressure_bar"].trip == 4.5


def test_critical_sensors_given(tmp_path: Path) -> None:
    root = tmp_path / "data"
    source = _csv(tmp_path / "in.csv", _series(20))
    _imported(source, root, machine_id="m", time_column="Time", critical_sensors=["Temp [°C]"])
    assert _metadata(root, "m")["rul_parameters"]["critical_sensors"] == ["temp_degC"]
    assert not profile_path(root, "m").exists()


def test_group_column_makes_one_machine_per_value(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {"Type": np.repeat(["L", "M"], 40), "x [K]": rng.normal(300, 1, 80), "fail": np.tile([1] + [0] * 9, 8)}
    )
    root = tmp_path / "data"
    ids = import_data(
        _csv(tmp_path / "in.csv", frame), root,
        ImportOptions(machine_id="shop", group_column="Type", label_column="fail", split="random"),
    )
    assert ids == ["shop_L", "shop_M"]
    for machine_id in ids:
        assert validate_machine(root, machine_id) == []
        data = load_machine(root, machine_id)
        assert sum(len(df) for df in data.splits.values()) == 40
        assert "Type" not in data.splits["train"].columns
        assert _metadata(root, machine_id)["source"]["group"] == {"column": "Type", "value": machine_id[-1]}


def test_import_ai4i2020_on_a_small_lookalike(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 60
    flags = {k: np.zeros(n, dtype=int) for k in ("TWF", "HDF", "PWF", "OSF", "RNF")}
    failure = (np.arange(n) % 6 == 0).astype(int)
    flags["HDF"] = failure
    frame = pd.DataFrame(
        {
            "UDI": np.arange(1, n + 1),
            "Product ID": [f"L{i}" for i in range(n)],
            "Type": np.tile(["L", "M", "H"], n // 3),
            "Air temperature [K]": rng.normal(300, 2, n),
            "Process temperature [K]": rng.normal(310, 1, n),
            "Rotational speed [rpm]": rng.integers(1200, 2800, n),
            "Torque [Nm]": rng.normal(40, 10, n),
            "Tool wear [min]": rng.integers(0, 250, n),
            "Machine failure": failure,
            **flags,
        }
    )
    root = tmp_path / "data"
    ids = import_ai4i2020(_csv(tmp_path / "ai4i.csv", frame, bom=True), root)
    assert ids == ["ai4i_H", "ai4i_L", "ai4i_M"]
    columns = list(pd.read_parquet(split_path(root, "ai4i_L", "train")).columns)
    assert columns == [
        "air_temperature_K", "process_temperature_K", "rotational_speed_rpm", "torque_Nm", "tool_wear_min",
        "failure_status",
    ]
    frames = [df for m in ids for df in load_machine(root, m).splits.values()]
    assert sum(int(df["failure_status"].sum()) for df in frames) == 10


def test_import_nab_on_a_small_lookalike(tmp_path: Path) -> None:
    stamps = pd.date_range("2014-01-01 00:00", periods=40, freq="5min")
    frame = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": np.arange(40.0)})
    repeated = frame.iloc[10:12].assign(value=[-1.0, -2.0])  # a repeated stretch, as in the real file
    frame = pd.concat([frame.iloc[:12], repeated, frame.iloc[12:]], ignore_index=True)
    windows = {
        "realKnownCause/machine_temperature_system_failure.csv": [
            ["2014-01-01 00:20:00.000000", "2014-01-01 00:30:00.000000"],
            ["2014-01-01 03:00:00.000000", "2014-01-01 03:15:00.000000"],
        ]
    }
    windows_path = tmp_path / "windows.json"
    windows_path.write_text(json.dumps(windows))
    root = tmp_path / "data"
    ids = import_nab_machine_temperature(_csv(tmp_path / "nab.csv", frame), windows_path, root)
    assert ids == ["nab_machine_temperature"]
    assert validate_machine(root, ids[0]) == []
    data = load_machine(root, ids[0])
    rows = pd.concat(data.splits.values(), ignore_index=True)
    assert list(rows.columns) == ["timestamp", "machine_temperature", "anomaly_window"]
    assert len(rows) == 40 and rows["machine_temperature"].tolist() == list(np.arange(40.0))  # first copy kept
    assert rows["anomaly_window"].sum() == 3 + 4  # both window ends included
    assert _metadata(root, ids[0])["source"]["dropped_duplicate_timestamp_rows"] == 2


# ------------------------------------------------------------------------------------------------ errors


def test_unknown_column_lists_the_available_ones(tmp_path: Path) -> None:
    source = _csv(tmp_path / "in.csv", _series(20))
    message = _error(source, tmp_path / "data", machine_id="m", time_column="Time", label_column="Failure")
    assert "'Failure'" in message and "label_column" in message and str(source) in message
    assert "'Temp [°C]'" in message and "available columns" in message


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"time_column": "Time", "cycle_column": "value", "cycle_unit": "h"}, "both given"),
        ({"cycle_column": "value"}, "needs cycle_unit"),
        ({"cycle_column": "value", "cycle_unit": "weeks"}, "cycle_unit='weeks' is unknown"),
        ({"time_column": "Time", "ratios": (0.5, 0.3, 0.3)}, "sum to 1.1, not 1"),
        ({"time_column": "Time", "ratios": (0.9, 0.2, -0.1)}, "must all be > 0"),
        ({"time_column": "Time", "split": "random"}, "split='random' is only allowed for data without time order"),
        ({}, "split='chronological' needs time order"),
        ({"time_column": "Time", "split": "column"}, "needs split_column"),
        ({"split": "random", "compute_rul": True}, "compute_rul needs time order"),
        ({"time_column": "Time", "rul_cap_hours": 5.0}, "compute_rul is False"),
        ({"time_column": "Time", "thresholds": {"value": {"alarm": "hot"}}}, "thresholds['value']['alarm']='hot'"),
        ({"time_column": "Time", "thresholds": {"value": {"direction": "up"}}}, "must be 'high' or 'low'"),
        ({"time_column": "Time", "rename": {"value": "rul"}}, "not a usable sensor name"),
    ],
)
def test_bad_options(tmp_path: Path, options: dict, expected: str) -> None:
    message = _error(_csv(tmp_path / "in.csv", _series(20)), tmp_path / "data", machine_id="m", **options)
    assert expected in message


@pytest.mark.parametrize("machine_id", ["../escape", "bad id", ""])
def test_invalid_machine_id(tmp_path: Path, machine_id: str) -> None:
    source = _csv(tmp_path / "in.csv", _series(20))
    message = _error(source, tmp_path / "data", machine_id=machine_id, time_column="Time")
    assert "invalid machine id" in message and repr(machine_id) in message


def test_invalid_group_value_names_the_column(tmp_path: Path) -> None:
    frame = pd.DataFrame({"kind": ["a b"] * 10, "x": np.arange(10.0)})
    source = _csv(tmp_path / "in.csv", frame)
    message = _error(source, tmp_path / "data", machine_id="m", group_column="kind", split="random")
    assert "'kind'" in message and "'a b'" in message and "invalid machine id 'm_a b'" in message


def test_unparseable_timestamps(tmp_path: Path) -> None:
    frame = _series(20)
    frame.loc[[4, 9], "Time"] = ["yesterday", "soon"]
    source = _csv(tmp_path / "in.csv", frame)
    message = _error(source, tmp_path / "data", machine_id="m", time_column="Time")
    assert "'Time'" in message and "2 values are missing or not parseable" in message
    assert "'yesterday'" in message and f"{source} row 4" in message


def test_numeric_time_column_points_to_cycle_column(tmp_path: Path) -> None:
    source = _csv(tmp_path / "in.csv", _series(20))
    message = _error(source, tmp_path / "data", machine_id="m", time_column="value", drop_columns=["Time"])
    assert "'value'" in message and "cycle_column" in message


def test_non_numeric_sensor(tmp_path: Path) -> None:
    frame = _series(20)
    frame["Temp [°C]"] = frame["Temp [°C]"].astype(str)
    frame.loc[7, "Temp [°C]"] = "sensor fault"
    source = _csv(tmp_path / "in.csv", frame)
    message = _error(source, tmp_path / "data", machine_id="m", time_column="Time", sensor_columns=["Temp [°C]"])
    assert "'Temp [°C]'" in message and "not numeric" in message and "1 values" in message
    assert "'sensor fault'" in message and f"{source} row 7" in message


def test_duplicate_timestamps_within_a_unit(tmp_path: Path) -> None:
    frame = _fleet({1: ("2024-01-01", 10), 2: ("2024-01-01", 10)})
    frame.loc[3, "when"] = frame.loc[2, "when"]  # unit 1 repeats a time; unit 2 shares times with unit 1 (fine)
    frame.loc[5, "when"] = frame.loc[4, "when"]
    source = _csv(tmp_path / "in.csv", frame)
    options = {
        "machine_id": "m", "time_column": "when", "unit_column": "engine", "split": "unit", "ratios": (0.5, 0.25, 0.25)
    }
    message = _error(source, tmp_path / "data", **options)
    assert "'when'" in message and "2 duplicate timestamps within a unit" in message and "unit '1'" in message

    # With three units the unit split has room; "last" keeps the later row of each repeated time.
    frame = pd.concat([frame, _fleet({3: ("2024-01-01", 10)}), _fleet({4: ("2024-01-01", 10)})], ignore_index=True)
    frame.loc[3, "vibration [mm/s]"] = 99.0
    source = _csv(tmp_path / "in2.csv", frame)
    splits = _imported(source, tmp_path / "data", **options, duplicate_timestamps="last")
    unit_1 = splits["train"][splits["train"]["unit_id"] == "1"]
    assert len(unit_1) == 8 and 99.0 in unit_1["vibration_mm_s"].tolist()


def test_empty_split_is_named(tmp_path: Path) -> None:
    source = _csv(tmp_path / "in.csv", _series(5))
    message = _error(source, tmp_path / "data", machine_id="m", time_column="Time", ratios=(0.6, 0.3, 0.1))
    assert "ratios (0.6, 0.3, 0.1) leave the test split empty for 5 rows" in message


def test_chronological_refused_for_cycles_of_several_units(tmp_path: Path) -> None:
    frame = pd.DataFrame({"unit": np.repeat([1, 2], 10), "cycle": np.tile(np.arange(1, 11), 2), "x": np.arange(20.0)})
    message = _error(
        _csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", unit_column="unit",
        cycle_column="cycle", cycle_unit="h",
    )
    assert "'cycle'" in message and "use split='unit'" in message


def test_unit_split_needs_units(tmp_path: Path) -> None:
    source = _csv(tmp_path / "in.csv", _series(20))
    message = _error(source, tmp_path / "data", machine_id="m", time_column="Time", split="unit")
    assert "split='unit' needs units" in message


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        ([0, 1, 2] * 6 + [0, 0], "2 at"),
        ([-1, 1] * 10, "-1 at"),
        (["no", "yes"] * 10, "'no' at"),
        ([1, None] * 10, "(empty) at"),
    ],
)
def test_label_must_be_zero_one(tmp_path: Path, values: list, shown: str) -> None:
    frame = _series(20)
    frame["state"] = values
    source = _csv(tmp_path / "in.csv", frame)
    message = _error(source, tmp_path / "data", machine_id="m", time_column="Time", label_column="state")
    assert "'state'" in message and "label_column" in message and "0/1 or booleans" in message
    assert f"first {shown}" in message and str(source) in message


def test_reserved_name_never_becomes_a_sensor(tmp_path: Path) -> None:
    frame = _series(20)
    frame["RUL"] = np.arange(20.0)[::-1]
    message = _error(_csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", time_column="Time")
    assert "'RUL'" in message and "reserved" in message


def test_column_in_two_roles(tmp_path: Path) -> None:
    source = _csv(tmp_path / "in.csv", _series(20))
    message = _error(source, tmp_path / "data", machine_id="m", time_column="Time", drop_columns=["Time"])
    assert "'Time'" in message and "time_column" in message and "drop_columns" in message


@pytest.mark.parametrize("content", ["", "Time,value\n"])
def test_empty_input(tmp_path: Path, content: str) -> None:
    source = tmp_path / "in.csv"
    source.write_text(content)
    message = _error(source, tmp_path / "data", machine_id="m", time_column="Time")
    assert str(source) in message and ("empty" in message or "no rows" in message)


def test_missing_source_and_empty_directory(tmp_path: Path) -> None:
    assert "does not exist" in _error(tmp_path / "nope.csv", tmp_path / "data", machine_id="m", time_column="t")
    (tmp_path / "empty").mkdir()
    assert "holds no .csv" in _error(tmp_path / "empty", tmp_path / "data", machine_id="m", time_column="t")


# ------------------------------------------------------------------------------------------------ writing


def test_existing_machine_needs_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "data"
    source = _csv(tmp_path / "in.csv", _series(20))
    with_profile = ImportOptions(machine_id="m", time_column="Time", thresholds={"value": {"alarm": 15.0}})
    import_data(source, root, with_profile)
    before = split_path(root, "m", "train").read_bytes()

    message = _error(source, root, machine_id="m", time_column="Time")
    assert "'m' already exists" in message and "overwrite=True" in message and "synthetic/m" in message
    assert split_path(root, "m", "train").read_bytes() == before

    shorter = _csv(tmp_path / "short.csv", _series(10))
    import_data(shorter, root, ImportOptions(machine_id="m", time_column="Time"), overwrite=True)
    assert validate_machine(root, "m") == []
    assert len(pd.read_parquet(split_path(root, "m", "train"))) == 7
    assert not profile_path(root, "m").exists()  # the old profile does not outlive the data it described


def test_failed_import_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    source = _csv(tmp_path / "in.csv", _series(20))
    import_data(source, root, ImportOptions(machine_id="m", time_column="Time"))
    before = {p: p.read_bytes() for p in (split_path(root, "m", "test"), metadata_path(root, "m"))}

    # alarm above trip for a "high" sensor: caught by the contract check of the staged machine
    bad = ImportOptions(machine_id="m", time_column="Time", thresholds={"value": {"alarm": 9.0, "trip": 5.0}})
    with pytest.raises(ImportOptionsError, match="alarm 9 is above trip 5"):
        import_data(source, root, bad, overwrite=True)
    with pytest.raises(ImportOptionsError):
        import_data(source, root, ImportOptions(machine_id="fresh", time_column="Time", thresholds=bad.thresholds))
    assert {p: p.read_bytes() for p in before} == before  # the old machine is untouched
    assert not machine_dir(root, "fresh").exists() and not metadata_path(root, "fresh").exists()
    assert not profile_path(root, "m").exists()
    assert sorted(p.name for p in root.iterdir()) == ["metadata", "synthetic"]  # no staging leftovers


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is not present")
def test_real_data_sets(tmp_path: Path) -> None:
    root = tmp_path / "data"
    ids = import_ai4i2020(REALDATA / "ai4i2020" / "ai4i2020.csv", root)
    assert ids == ["ai4i_H", "ai4i_L", "ai4i_M"]
    frames = [df for m in ids for df in load_machine(root, m).splits.values()]
    assert sum(len(df) for df in frames) == 10_000
    assert sum(int(df["failure_status"].sum()) for df in frames) == 339
    assert not {"TWF", "HDF", "PWF", "OSF", "RNF", "twf", "UDI", "udi"} & set(frames[0].columns)

    nab = REALDATA / "nab"
    (machine,) = import_nab_machine_temperature(
        nab / "machine_temperature_system_failure.csv", nab / "combined_windows.json", root
    )
    assert validate_machine(root, machine) == []
    rows = pd.concat(load_machine(root, machine).splits.values(), ignore_index=True)
    # The file has 22,695 rows; one hour (2014-01-07 02:00-02:55) appears twice and its 12 repeats are dropped.
    assert len(pd.read_csv(nab / "machine_temperature_system_failure.csv")) == 22_695
    assert len(rows) == 22_683 and _metadata(root, machine)["source"]["dropped_duplicate_timestamp_rows"] == 12
    assert int(rows["anomaly_window"].sum()) == 2_268
