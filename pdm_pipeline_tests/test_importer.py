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
    CMAPSS_COLUMNS,
    CYCLE_ORIGIN,
    ImportOptions,
    ImportOptionsError,
    import_ai4i2020,
    import_cmapss,
    import_data,
    import_nab_machine_temperature,
    import_skab,
    sanitize_column_name,
)
from pdm_pipeline.core.paths import machine_dir, metadata_path, profile_path, split_path
from pdm_pipeline.errors import PdmError

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
# Small hand-made files: a C-MAPSS-style text file (6 engines, no header, blanks at line ends), two SKAB-style
# experiments (';', anomaly and changepoint columns) and a SKAB-style file with decimal commas.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "importer"
CMAPSS = FIXTURES / "cmapss_small.txt"
SKAB = FIXTURES / "skab"
SKAB_DECIMAL_COMMA = FIXTURES / "skab_decimal_comma.csv"


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
    assert meta["time_unit"] == "hours" and "machine_type" not in meta
    assert meta["rul_parameters"] == {"sampling_interval_minutes": 10.0, "sampling_step": round(10 / 60, 9)}
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


def test_cycle_column_with_old_cycle_unit_becomes_datetimes(tmp_path: Path) -> None:
    frame = pd.DataFrame({"cycle": np.arange(1, 21), "s1": np.linspace(0, 1, 20)})
    splits = _imported(
        _csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", cycle_column="cycle", cycle_unit="h"
    )
    assert list(splits["train"].columns) == ["timestamp", "s1"]  # the counter is a time axis, never a sensor
    assert splits["train"]["timestamp"].iloc[0] == CYCLE_ORIGIN + pd.Timedelta(hours=1)
    assert splits["test"]["timestamp"].iloc[-1] == CYCLE_ORIGIN + pd.Timedelta(hours=20)
    meta = _metadata(tmp_path / "data", "m")
    assert meta["time_unit"] == "hours" and meta["columns"]["timestamp"]["sdtype"] == "datetime"
    assert meta["rul_parameters"] == {"sampling_interval_minutes": 60.0, "sampling_step": 1.0}


def test_old_cycle_unit_seconds_counts_rul_in_seconds(tmp_path: Path) -> None:
    frame = pd.DataFrame({"cycle": np.arange(0, 40, 2), "s1": np.linspace(0, 1, 20)})
    splits = _imported(
        _csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", cycle_column="cycle", cycle_unit="s",
        compute_rul=True,
    )
    assert splits["train"]["rul"].iloc[0] == 38.0 and splits["test"]["rul"].iloc[-1] == 0.0
    meta = _metadata(tmp_path / "data", "m")
    assert meta["time_unit"] == "seconds"
    assert meta["rul_parameters"]["sampling_step"] == 2.0 and meta["rul_parameters"]["max_operational"] == 38.0
    assert "max_operational_hours" not in meta["rul_parameters"]  # only written when the unit is hours


@pytest.mark.parametrize(
    ("options", "time_unit"),
    [
        ({}, None), ({"time_unit": "cycles"}, "cycles"), ({"time_unit": "steps"}, "steps"),
        ({"cycle_unit": "steps"}, "steps"),
    ],
)
def test_cycle_column_is_kept_as_a_number(tmp_path: Path, options: dict, time_unit: str | None) -> None:
    frame = pd.DataFrame({"cycle": np.arange(1, 21), "s1": np.linspace(0, 1, 20)})
    root = tmp_path / "data"
    splits = _imported(_csv(tmp_path / "in.csv", frame), root, machine_id="m", cycle_column="cycle", **options)
    train, test = splits["train"], splits["test"]
    assert list(train.columns) == ["timestamp", "s1"]
    assert str(train["timestamp"].dtype) == "int64"  # no fake datetimes
    assert train["timestamp"].tolist() == list(range(1, 15)) and test["timestamp"].tolist() == [18, 19, 20]
    meta = _metadata(root, "m")
    assert meta["time_unit"] == (time_unit or "cycles")
    assert meta["columns"]["timestamp"] == {"sdtype": "numerical", "computer_representation": "Int64"}
    assert meta["rul_parameters"] == {"sampling_step": 1.0}  # no minutes for a counter
    assert load_machine(root, "m").metadata.time_unit == (time_unit or "cycles")


def test_fractional_cycle_counter_stays_float(tmp_path: Path) -> None:
    frame = pd.DataFrame({"step": np.arange(20) * 0.5, "s1": np.linspace(0, 1, 20)})
    splits = _imported(
        _csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", cycle_column="step", time_unit="steps"
    )
    assert str(splits["train"]["timestamp"].dtype) == "float64" and splits["val"]["timestamp"].iloc[0] == 7.0
    meta = _metadata(tmp_path / "data", "m")
    assert meta["columns"]["timestamp"]["computer_representation"] == "Float"
    assert meta["rul_parameters"]["sampling_step"] == 0.5


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
    rul_parameters = _metadata(tmp_path / "data", "m")["rul_parameters"]
    assert rul_parameters["max_operational"] == expected_max
    assert rul_parameters["max_operational_hours"] == expected_max  # the old key too, as the unit is hours


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
        meta = _metadata(root, machine_id)
        assert meta["source"]["group"] == {"column": "Type", "value": machine_id[-1]}
        assert meta["machine_type"] == "shop"  # the machines of one grouped import form one fleet
        assert load_machine(root, machine_id).metadata.machine_type == "shop"
        assert not profile_path(root, machine_id).exists()  # a derived machine type alone writes no profile


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
    assert {_metadata(root, m)["machine_type"] for m in ids} == {"ai4i"}
    assert "time_unit" not in _metadata(root, "ai4i_L")  # no time order, no time unit


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
    assert data.metadata.time_unit == "hours"



def test_import_nab_finds_any_files_windows_by_its_name_and_follows_the_probation(tmp_path: Path) -> None:
    """Another NAB file (hourly, as ambient_temperature_system_failure): its windows are found under the one key
    naming it, not another file's; the CLI does the same with the windows file beside the data."""
    from pdm_pipeline.cli import main
    from pdm_pipeline.core.importer import import_nab

    stamps = pd.date_range("2013-07-04 00:00", periods=1000, freq="h")
    folder = tmp_path / "realKnownCause"
    folder.mkdir()
    source = _csv(folder / "ambient_temperature_system_failure.csv",
                  pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": np.arange(1000.0)}))
    windows = {
        "realKnownCause/machine_temperature_system_failure.csv": [["2013-07-05 00:00:00", "2013-07-06 00:00:00"]],
        "realKnownCause/ambient_temperature_system_failure.csv": [["2013-07-20 00:00:00.000000",
                                                                   "2013-07-20 09:00:00.000000"]],
    }
    (folder / "combined_windows.json").write_text(json.dumps(windows))
    root = tmp_path / "data"
    ids = import_nab(source, folder / "combined_windows.json", root, probation=True)
    assert ids == ["nab_ambient_temperature_system_failure"]
    data = load_machine(root, ids[0])
    assert list(data.splits["test"].columns) == ["timestamp", "value", "anomaly_window"]
    rows = pd.concat(data.splits.values(), ignore_index=True)
    assert rows.loc[rows["anomaly_window"] == 1, "value"].tolist() == list(np.arange(384.0, 394.0))  # 10 hours
    assert len(data.splits["train"]) + len(data.splits["val"]) == 150  # NAB's probation: 15 % of 1,000 rows
    assert _metadata(root, ids[0])["source"]["anomaly_windows"]["key"] == "realKnownCause/ambient_temperature_system_failure.csv"

    assert main(["--data-dir", str(tmp_path / "cli"), "import-nab", str(source), "--machine-id", "ambient",
                 "--sensor", "ambient_temperature"]) == 0
    cli = load_machine(tmp_path / "cli", "ambient")
    assert "ambient_temperature" in cli.splits["train"].columns and len(cli.splits["train"]) == 700  # 70/15/15

    other = _csv(folder / "nyc_taxi.csv", pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"),
                                                        "value": np.ones(1000)}))
    with pytest.raises(PdmError, match=r"one key ending in '/nyc_taxi.csv'.*found none"):
        import_nab(other, folder / "combined_windows.json", root)
    assert not (root / "synthetic" / "nab_nyc_taxi").exists()  # nothing written

    # windows written with a time zone are placed in UTC, as the importer keeps times; a window that holds no
    # row (a wrong year, a wrong file) or ends before it starts is refused, naming it
    for name, window, expected in (
        ("zoned", ["2013-07-20T02:00:00+02:00", "2013-07-20T09:00:00Z"], list(np.arange(384.0, 394.0))),
        ("outside", ["2030-01-01 00:00:00", "2030-01-02 00:00:00"], "holds no row of"),
        ("reversed", ["2013-07-20 09:00:00", "2013-07-20 00:00:00"], "ends before it starts"),
    ):
        (folder / "combined_windows.json").write_text(json.dumps({f"realKnownCause/{name}.csv": [window]}))
        source = _csv(folder / f"{name}.csv", pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"),
                                                            "value": np.arange(1000.0)}))
        if isinstance(expected, str):
            with pytest.raises(PdmError, match=expected):
                import_nab(source, folder / "combined_windows.json", root)
            continue
        (machine,) = import_nab(source, folder / "combined_windows.json", root)
        rows = pd.concat(load_machine(root, machine).splits.values(), ignore_index=True)
        assert rows.loc[rows["anomaly_window"] == 1, "value"].tolist() == expected



def test_unix_times_are_read_with_their_time_format_and_a_numeric_time_column_says_how(tmp_path: Path) -> None:
    """Unix seconds and milliseconds become the same datetimes (1970 origin, not the cycle origin of 2000); a
    numeric time column without that format is refused, naming both ways to read numbers."""
    frame = _series(20)
    stamps = pd.to_datetime(frame["Time"])
    seconds = (stamps - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    for fmt, values in (("unix_s", seconds), ("unix_ms", seconds * 1000)):
        source = _csv(tmp_path / f"{fmt}.csv", frame.assign(Time=values))
        splits = _imported(source, tmp_path / fmt, machine_id="m", time_column="Time", time_format=fmt)
        written = pd.concat(splits.values(), ignore_index=True)["timestamp"]
        assert written.tolist() == stamps.tolist()
    message = _error(_csv(tmp_path / "plain.csv", frame.assign(Time=seconds)), tmp_path / "plain",
                     machine_id="m", time_column="Time")
    assert "holds numbers, not dates" in message and "unix_s or unix_ms" in message and "cycle_column" in message
    seconds_file = _csv(tmp_path / "seconds.csv", frame.assign(Time=seconds))
    message = _error(seconds_file, tmp_path / "wrong", machine_id="m", time_column="Time", time_format="unix_ms")
    assert "gives times from 1970-01-20" in message and "is it unix_s?" in message



def test_the_cli_import_says_what_a_run_would_refuse(tmp_path: Path, capsys) -> None:
    """A sensor that is empty in train imports (missing values are kept; the tolerance is a training setting), and
    the import already says that a run at the default settings refuses it, naming the column."""
    from pdm_pipeline.cli import main

    source = _csv(tmp_path / "in.csv", _series(40).assign(empty=np.nan))
    assert main(["--data-dir", str(tmp_path / "data"), "import", str(source), "--machine-id", "m",
                 "--time-column", "Time"]) == 0
    out = capsys.readouterr().out
    assert "note: a run of m would refuse it" in out and "column 'empty': 100.0% NaN" in out
    clean = _csv(tmp_path / "clean.csv", _series(40))
    assert main(["--data-dir", str(tmp_path / "data"), "import", str(clean), "--machine-id", "n",
                 "--time-column", "Time"]) == 0
    assert "would refuse" not in capsys.readouterr().out


def test_a_counter_that_restarts_is_named_as_runs_one_after_another_not_only_as_duplicates(tmp_path: Path,
                                                                                            capsys) -> None:
    """Two lifecycles in one file without a unit column: the cycle counter goes back to 1. The refusal says so and
    points to a unit column (keeping one row per cycle would splice the runs); when rows are dropped anyway, the
    import says how many."""
    from pdm_pipeline.cli import main

    frame = pd.DataFrame({"cycle": np.tile(np.arange(1, 31), 2), "x": np.arange(60.0)})
    source = _csv(tmp_path / "in.csv", frame)
    message = _error(source, tmp_path / "data", machine_id="m", cycle_column="cycle")
    assert "30 duplicate timestamps (no unit column)" in message
    assert f"goes back 1 time(s), first from 30 to 1 at {source} line 32" in message and "unit_column" in message
    assert main(["--data-dir", str(tmp_path / "data"), "import", str(source), "--machine-id", "m", "--cycle-column",
                 "cycle", "--duplicate-timestamps", "first"]) == 0
    assert "note: m: 30 row(s) dropped that repeated a time (duplicate_timestamps)" in capsys.readouterr().out


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
        ({"cycle_column": "value", "cycle_unit": "weeks"}, "cycle_unit='weeks' is unknown"),
        ({"time_column": "Time", "cycle_unit": "h"}, "cycle_unit='h' is given without cycle_column"),
        ({"time_column": "Time", "ratios": (0.5, 0.3, 0.3)}, "sum to 1.1, not 1"),
        ({"time_column": "Time", "ratios": (0.9, 0.2, -0.1)}, "must all be > 0"),
        ({"time_column": "Time", "split": "random"}, "split='random' is only allowed for data without time order"),
        ({}, "split='chronological' needs time order"),
        ({"time_column": "Time", "split": "column"}, "needs split_column"),
        ({"split": "random", "compute_rul": True}, "compute_rul needs time order"),
        ({"time_column": "Time", "rul_cap": 5.0}, "rul_cap=5.0 is given but compute_rul is False"),
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
    assert "'yesterday'" in message and f"{source} line 6" in message
    assert source.read_text().splitlines()[6 - 1].startswith("yesterday,"), "the line an editor shows"


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
    assert "'sensor fault'" in message and f"{source} line 9" in message
    assert "sensor fault" in source.read_text().splitlines()[9 - 1]


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
    assert "pass duplicate_timestamps='first' or 'last'" in message and "goes back" not in message

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


# ------------------------------------------------------------------------------------------------ time axis


def test_time_unit_is_the_unit_of_rul_and_of_the_old_hour_cap(tmp_path: Path) -> None:
    units = {1: ("2024-01-01", 10), 2: ("2024-01-02", 6), 3: ("2024-01-03", 8), 4: ("2024-01-04", 7)}
    root = tmp_path / "data"
    splits = _imported(
        _csv(tmp_path / "in.csv", _fleet(units)), root, machine_id="m", time_column="when", unit_column="engine",
        split="unit", ratios=(0.5, 0.25, 0.25), compute_rul=True, time_unit="minutes", rul_cap_hours=4.0,
    )
    unit_1 = splits["train"][splits["train"]["unit_id"] == "1"]
    assert unit_1["rul"].tolist() == np.minimum(np.arange(9.0, -1.0, -1.0) * 60, 240.0).tolist()
    meta = _metadata(root, "m")
    assert meta["time_unit"] == "minutes" and meta["columns"]["timestamp"]["sdtype"] == "datetime"
    assert meta["rul_parameters"] == {
        "sampling_interval_minutes": 60.0, "sampling_step": 60.0, "max_operational": 240.0  # no hours key
    }
    assert load_machine(root, "m").metadata.time_unit == "minutes"


def test_rul_cap_is_in_the_data_unit(tmp_path: Path) -> None:
    units = {1: ("2024-01-01", 10), 2: ("2024-01-02", 6), 3: ("2024-01-03", 8), 4: ("2024-01-04", 7)}
    frame = _fleet(units)
    frame["when"] = pd.to_datetime(frame["when"]).dt.strftime("%Y-%m-%d %H:%M:%S")
    splits = _imported(
        _csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", time_column="when",
        unit_column="engine", split="unit", ratios=(0.5, 0.25, 0.25), compute_rul=True, time_unit="days",
        rul_cap=0.25,
    )
    unit_1 = splits["train"][splits["train"]["unit_id"] == "1"]
    assert unit_1["rul"].tolist() == np.minimum(np.arange(9.0, -1.0, -1.0) / 24, 0.25).tolist()
    assert _metadata(tmp_path / "data", "m")["rul_parameters"]["max_operational"] == 0.25


def test_cycles_of_several_units_compute_rul_in_cycles(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"engine": np.repeat([1, 2, 3, 4], 5), "cycle": np.tile(np.arange(1, 6), 4), "x": np.arange(20.0)}
    )
    root = tmp_path / "data"
    splits = _imported(
        _csv(tmp_path / "in.csv", frame), root, machine_id="m", unit_column="engine", cycle_column="cycle",
        split="unit", ratios=(0.5, 0.25, 0.25), compute_rul=True, rul_cap=3,
    )
    assert splits["train"]["rul"].tolist() == [3.0, 3.0, 2.0, 1.0, 0.0] * 2
    assert splits["train"]["timestamp"].tolist() == [1, 2, 3, 4, 5] * 2
    rul_parameters = _metadata(root, "m")["rul_parameters"]
    assert rul_parameters == {"sampling_step": 1.0, "max_operational": 3.0}


def test_chronological_refused_for_counters_of_several_units(tmp_path: Path) -> None:
    frame = pd.DataFrame({"unit": np.repeat([1, 2], 10), "cycle": np.tile(np.arange(1, 11), 2), "x": np.arange(20.0)})
    message = _error(
        _csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", unit_column="unit", cycle_column="cycle"
    )
    assert "'cycle'" in message and "use split='unit'" in message


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"time_column": "Time", "time_unit": "weeks"}, "time_unit='weeks' is unknown; choose one of seconds, minutes"),
        ({"time_column": "Time", "time_unit": "cycles"}, "time_unit='cycles' counts cycles, but time_column='Time'"),
        ({"cycle_column": "value", "time_unit": "hours"}, "cycle_column='value' is kept as a counter: choose one"),
        ({"cycle_column": "value", "cycle_unit": "h", "time_unit": "steps"}, "does not fit cycle_unit='h'"),
        ({"cycle_column": "value", "cycle_unit": "cycles", "time_unit": "steps"}, "disagree"),
        ({"cycle_column": "value", "cycle_unit": "cycles", "time_unit": "hours"}, "is kept as a counter"),
        ({"split": "random", "time_unit": "hours"}, "time_unit='hours' is given but the data has no time order"),
        (
            {"cycle_column": "value", "compute_rul": True, "rul_cap_hours": 5.0},
            "rul_cap_hours=5.0 is in hours, but the data counts cycles: give rul_cap (in cycles)",
        ),
        ({"time_column": "Time", "compute_rul": True, "rul_cap": 5.0, "rul_cap_hours": 5.0}, "are both given"),
        ({"time_column": "Time", "compute_rul": True, "rul_cap": -1.0}, "rul_cap=-1.0 must be a number > 0"),
        ({"time_column": "Time", "machine_type": "a b"}, "machine_type='a b' must follow the machine-id rule"),
        ({"time_column": "Time", "header": False}, "header=False needs columns"),
        ({"time_column": "Time", "columns": ["a", "b"]}, "pass header=False too"),
        ({"time_column": "Time", "header": False, "columns": ["a", "a"]}, "columns names ['a'] more than once"),
        ({"time_column": "Time", "header": False, "columns": "abc"}, "columns='abc' must be a list of column names"),
        ({"time_column": "Time", "decimal": ","}, "decimal=',' is also the separator"),
        ({"time_column": "Time", "decimal": "dot"}, "decimal='dot' must be one character"),
        ({"time_column": "Time", "ignore_label_columns": "flag"}, "ignore_label_columns='flag' must be a list"),
        ({"time_column": "Time", "split": "first_rows"}, "split='first_rows' needs train_rows"),
        ({"time_column": "Time", "split": "first_rows", "train_rows": 0}, "train_rows=0 must be a whole number > 0"),
        (
            {"time_column": "Time", "split": "first_rows", "train_rows": 2},
            "train_rows=2 with val_share=0.2 leaves no val rows",
        ),
        (
            {"time_column": "Time", "split": "first_rows", "train_rows": 10, "val_share": 0.96},
            "train_rows=10 with val_share=0.96 leaves no train rows",
        ),
        ({"time_column": "Time", "split": "first_rows", "train_rows": 9, "val_share": 1.5}, "val_share=1.5 must be"),
        ({"time_column": "Time", "train_rows": 10}, "train_rows=10 is given but split='chronological'"),
    ],
)
def test_bad_new_options(tmp_path: Path, options: dict, expected: str) -> None:
    message = _error(_csv(tmp_path / "in.csv", _series(20)), tmp_path / "data", machine_id="m", **options)
    assert expected in message


def test_option_errors_are_user_errors_listed_together() -> None:
    with pytest.raises(ImportOptionsError) as info:
        ImportOptions(machine_id="m", time_column="t", time_unit="cycles", decimal=",").validate()
    assert isinstance(info.value, PdmError) and isinstance(info.value, ValueError)
    assert "time_unit='cycles'" in str(info.value) and "decimal=','" in str(info.value)


# ------------------------------------------------------------------------------------------------ text files


def test_whitespace_file_without_header(tmp_path: Path) -> None:
    root = tmp_path / "data"
    splits = _imported(
        CMAPSS, root, machine_id="engines", separator="whitespace", header=False, columns=list(CMAPSS_COLUMNS),
        unit_column="unit", cycle_column="cycle", split="unit", ratios=(0.5, 0.25, 0.25),
    )
    train = splits["train"]
    # 26 columns named in order; the blanks at line ends make no empty column
    assert list(train.columns) == ["timestamp", "unit_id", *CMAPSS_COLUMNS[2:]]
    assert not train.isna().any().any()
    assert train[["timestamp", "setting_3", "s_1", "s_2", "s_21"]].iloc[0].tolist() == [1, 100.0, 518.67, 642.23, 23.37]
    units = [splits[s]["unit_id"].unique().tolist() for s in ("train", "val", "test")]
    assert units == [["1", "2", "3"], ["4", "5"], ["6"]]


def test_file_without_header_needs_one_name_per_column(tmp_path: Path) -> None:
    options = {
        "machine_id": "m", "separator": "whitespace", "header": False, "unit_column": "unit", "cycle_column": "cycle",
        "split": "unit",
    }
    message = _error(CMAPSS, tmp_path / "data", columns=list(CMAPSS_COLUMNS[:-1]), **options)
    assert str(CMAPSS) in message and "expected 25 columns" in message and "found 26 in the file" in message

    source = tmp_path / "three.csv"
    source.write_text("1,0.5,7\n2,0.6,8\n3,0.7,9\n")
    message = _error(
        source, tmp_path / "data", machine_id="m", header=False, columns=["a", "b", "c", "d"], split="random"
    )
    assert str(source) in message and "expected 4 columns" in message and "found 3" in message


def test_whitespace_file_with_header_and_mixed_blanks(tmp_path: Path) -> None:
    lines = ["  cycle\tvib   temp "] + [f"{i}\t {0.5 + i / 100:.2f}  {60 + i / 10:.1f}\t" for i in range(1, 21)]
    source = tmp_path / "log.txt"
    source.write_text("\n".join(lines) + "\n")
    splits = _imported(source, tmp_path / "data", machine_id="m", separator="whitespace", cycle_column="cycle")
    assert list(splits["train"].columns) == ["timestamp", "vib", "temp"]
    assert splits["train"]["temp"].iloc[0] == 60.1 and len(splits["test"]) == 3

    message = _error(source, tmp_path / "other", machine_id="m", cycle_column="cycle")
    assert "'cycle'" in message and "separator 'whitespace'" in message


def test_parquet_has_its_own_header(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    pd.DataFrame({"t": pd.date_range("2024-01-01", periods=5, freq="h"), "x": np.arange(5.0)}).to_parquet(source)
    message = _error(source, tmp_path / "data", machine_id="m", time_column="t", header=False, columns=["t", "x"])
    assert str(source) in message and "a parquet file names its columns itself" in message


def test_decimal_comma(tmp_path: Path) -> None:
    options = {
        "machine_id": "m", "separator": ";", "time_column": "datetime", "time_unit": "seconds",
        "eval_label_column": "anomaly", "ignore_label_columns": ["changepoint"], "split": "first_rows",
        "train_rows": 10,
    }
    splits = _imported(SKAB_DECIMAL_COMMA, tmp_path / "data", decimal=",", **options)
    first = splits["train"].iloc[0]
    assert first["accelerometer1rms"] == 0.080265 and first["pressure"] == -0.014095
    assert splits["test"]["anomaly_window"].sum() == 4

    message = _error(SKAB_DECIMAL_COMMA, tmp_path / "other", **options)
    assert str(SKAB_DECIMAL_COMMA) in message and "decimal comma" in message and "decimal=','" in message


# ------------------------------------------------------------------------------------------------ first rows


def test_first_rows_of_each_file_are_training(tmp_path: Path) -> None:
    root = tmp_path / "data"
    splits = _imported(
        SKAB, root, machine_id="bench", separator=";", time_column="datetime", time_unit="seconds",
        eval_label_column="anomaly", ignore_label_columns=["changepoint"], split="first_rows", train_rows=15,
    )
    for unit, n_rows in (("1", 30), ("2", 32)):
        sizes = [int((splits[s]["unit_id"] == unit).sum()) for s in ("train", "val", "test")]
        assert sizes == [12, 3, n_rows - 15]  # val = the last 20 % of the first 15 rows
    raw = pd.read_csv(SKAB / "2.csv", sep=";")
    stamps = pd.to_datetime(raw["datetime"])
    by_unit = {s: splits[s][splits[s]["unit_id"] == "2"] for s in ("train", "val", "test")}
    assert by_unit["train"]["timestamp"].tolist() == stamps[:12].tolist()
    assert by_unit["val"]["timestamp"].tolist() == stamps[12:15].tolist()
    assert by_unit["test"]["timestamp"].tolist() == stamps[15:].tolist()
    # rows labelled anomalous stay where they are, also in train (file 2 has a fault in its first rows)
    assert by_unit["train"]["anomaly_window"].tolist() == raw["anomaly"][:12].astype(int).tolist()
    assert _metadata(root, "bench")["rul_parameters"]["sampling_step"] == 1.0


def test_first_rows_of_a_single_file(tmp_path: Path) -> None:
    source = _csv(tmp_path / "in.csv", _series(20))
    splits = _imported(
        source, tmp_path / "data", machine_id="m", time_column="Time", split="first_rows", train_rows=10,
        val_share=0.3,
    )
    assert [splits[s]["value"].tolist() for s in ("train", "val", "test")] == [
        list(range(7)), [7.0, 8.0, 9.0], list(range(10, 20))
    ]


def test_first_rows_errors(tmp_path: Path) -> None:
    options = {
        "separator": ";", "time_column": "datetime", "eval_label_column": "anomaly",
        "ignore_label_columns": ["changepoint"], "split": "first_rows",
    }
    message = _error(SKAB, tmp_path / "data", machine_id="m", train_rows=30, **options)
    assert "needs more than train_rows=30 rows per unit" in message and "'1' (30 rows)" in message
    assert "'2'" not in message  # 32 rows leave test rows

    source = _csv(tmp_path / "in.csv", _series(20))
    message = _error(source, tmp_path / "data", machine_id="m", time_column="Time", split="first_rows", train_rows=20)
    assert "the data (no units) has only 20 rows" in message

    # Units that follow each other in time cannot be cut per unit: the splits would not be in time order.
    fleet = _csv(tmp_path / "fleet.csv", _fleet({1: ("2024-01-01", 10), 2: ("2024-01-05", 10)}))
    message = _error(
        fleet, tmp_path / "data", machine_id="m", time_column="when", unit_column="engine", split="first_rows",
        train_rows=5,
    )
    assert "2 units that follow each other in time" in message and "one machine per unit" in message


# ------------------------------------------------------------------------------------------------ labels


@pytest.mark.parametrize("name", ["anomaly", "Changepoint", " label ", "Machine failure", "machine_failure", "CLASS"])
def test_label_like_columns_never_become_sensors(tmp_path: Path, name: str) -> None:
    frame = _series(20)
    frame[name] = (np.arange(20) % 5 == 0).astype(int)
    message = _error(_csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", time_column="Time")
    assert repr(name.strip()) in message and "look like labels" in message
    for option in ("label_column", "eval_label_column", "ignore_label_columns", "drop_columns"):
        assert option in message


def test_ignore_label_columns(tmp_path: Path) -> None:
    frame = _series(20)
    frame["changepoint"] = (np.arange(20) == 15).astype(int)
    frame["anomaly"] = (np.arange(20) >= 15).astype(int)
    root = tmp_path / "data"
    splits = _imported(
        _csv(tmp_path / "in.csv", frame), root, machine_id="m", time_column="Time", eval_label_column="anomaly",
        ignore_label_columns=["changepoint"],
    )
    assert list(splits["train"].columns) == ["timestamp", "temp_degC", "pressure_bar", "value", "anomaly_window"]
    assert _metadata(root, "m")["source"]["ignored_label_columns"] == ["changepoint"]
    assert load_machine(root, "m").sensors == ("temp_degC", "pressure_bar", "value")

    source = _csv(tmp_path / "in2.csv", frame)
    message = _error(source, tmp_path / "x", machine_id="m", time_column="Time", ignore_label_columns=["fault"])
    assert "'fault' (from ignore_label_columns) not found" in message
    message = _error(
        source, tmp_path / "x", machine_id="m", time_column="Time", eval_label_column="anomaly",
        ignore_label_columns=["anomaly", "changepoint"],
    )
    assert "'anomaly' is given both as eval_label_column and as ignore_label_columns" in message


def test_a_label_like_name_may_be_declared_a_sensor(tmp_path: Path) -> None:
    frame = _series(20)
    frame["Target"] = np.linspace(0, 1, 20)  # e.g. a set point
    splits = _imported(
        _csv(tmp_path / "in.csv", frame), tmp_path / "data", machine_id="m", time_column="Time",
        sensor_columns=["value", "Target"],
    )
    assert list(splits["train"].columns) == ["timestamp", "value", "target"]


def test_machine_type_goes_to_the_metadata(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _imported(_csv(tmp_path / "in.csv", _series(20)), root, machine_id="m", time_column="Time", machine_type="press")
    assert _metadata(root, "m")["machine_type"] == "press"
    assert load_machine(root, "m").metadata.machine_type == "press"


# ------------------------------------------------------------------------------------------------ recipes


def test_import_cmapss_on_a_small_lookalike(tmp_path: Path) -> None:
    root = tmp_path / "data"
    ids = import_cmapss(CMAPSS, root)
    assert ids == ["cmapss_FD001"] and validate_machine(root, ids[0]) == []
    data = load_machine(root, ids[0])
    assert [data.splits[s]["unit_id"].unique().tolist() for s in ("train", "val", "test")] == [
        ["1", "2", "3", "4"], ["5"], ["6"]
    ]
    assert data.sensors == tuple(CMAPSS_COLUMNS[2:])
    unit_1 = data.splits["train"][data.splits["train"]["unit_id"] == "1"]
    assert unit_1["timestamp"].tolist() == [1, 2, 3, 4, 5, 6]
    assert unit_1["rul"].tolist() == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]  # cycles to failure at the last cycle
    meta = _metadata(root, ids[0])
    assert meta["time_unit"] == "cycles" and meta["columns"]["timestamp"]["sdtype"] == "numerical"
    assert meta["rul_parameters"] == {"sampling_step": 1.0, "max_operational": 8.0}  # engine 5: 9 cycles

    (capped,) = import_cmapss(CMAPSS, root, machine_id="cmapss_capped", rul_cap=3)
    assert validate_machine(root, capped) == []
    assert max(float(df["rul"].max()) for df in load_machine(root, capped).splits.values()) == 3.0
    assert _metadata(root, capped)["rul_parameters"]["max_operational"] == 3.0


def test_import_skab_one_machine_per_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    ids = import_skab(SKAB, root, train_rows=15)
    assert ids == ["skab_1", "skab_2"]
    for machine_id, n_rows in zip(ids, (30, 32)):
        assert validate_machine(root, machine_id) == []
        data = load_machine(root, machine_id)
        assert [len(data.splits[s]) for s in ("train", "val", "test")] == [12, 3, n_rows - 15]
        assert data.sensors == (
            "accelerometer_1_rms", "accelerometer_2_rms", "current", "pressure", "temperature", "thermocouple",
            "voltage", "volume_flow_rate_rms",
        )
        assert data.metadata.time_unit == "seconds" and data.metadata.machine_type == "skab"
        meta = _metadata(root, machine_id)
        assert meta["source"]["ignored_label_columns"] == ["changepoint"]
        raw = pd.read_csv(SKAB / f"{machine_id[5:]}.csv", sep=";")
        rows = pd.concat(data.splits.values(), ignore_index=True)
        assert rows["anomaly_window"].tolist() == raw["anomaly"].astype(int).tolist()  # anomalous rows stay


def test_import_skab_as_one_machine(tmp_path: Path) -> None:
    root = tmp_path / "data"
    ids = import_skab(SKAB, root, one_machine_per_file=False, train_rows=15)
    assert ids == ["skab"] and validate_machine(root, "skab") == []
    data = load_machine(root, "skab")
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [24, 6, 15 + 17]
    assert data.splits["test"]["unit_id"].unique().tolist() == ["1", "2"]


def test_import_skab_checks_the_layout(tmp_path: Path) -> None:
    bad = _csv(tmp_path / "skab" / "1.csv", _series(20), sep=";")
    message = _error_of(lambda: import_skab(tmp_path / "skab", tmp_path / "data"))
    assert str(bad) in message and "expected the SKAB columns" in message
    assert "is not a directory" in _error_of(lambda: import_skab(tmp_path / "nope", tmp_path / "data"))


def _error_of(call) -> str:
    with pytest.raises(ImportOptionsError) as info:
        call()
    return str(info.value)


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
    # NAB's protocol: a probation of min(15 %, 750) rows trains; every later row, all 4 windows, is test.
    (scored,) = import_nab_machine_temperature(
        nab / "machine_temperature_system_failure.csv", nab / "combined_windows.json", tmp_path / "nab",
        probation=True,
    )
    splits = load_machine(tmp_path / "nab", scored).splits
    assert [len(splits["train"]), len(splits["val"])] == [600, 150]
    windows = splits["test"]["anomaly_window"].to_numpy()
    assert int((np.diff(np.r_[0, windows]) == 1).sum()) == 4


@pytest.mark.skipif(not (REALDATA / "skab_other").is_dir(), reason="../shared/realdata/skab_other is not present")
def test_real_skab(tmp_path: Path) -> None:
    root = tmp_path / "data"
    ids = import_skab(REALDATA / "skab_other", root)
    assert ids == [f"skab_{i}" for i in range(1, 15)]
    total = 0
    for machine_id in ids:
        assert validate_machine(root, machine_id) == []
        data = load_machine(root, machine_id)
        assert [len(data.splits["train"]), len(data.splits["val"])] == [320, 80]
        total += sum(len(df) for df in data.splits.values())
    assert total == 14_943 - 14  # every row of the 14 files (minus their header lines)


def test_a_header_naming_a_column_twice_is_refused_not_renamed(tmp_path: Path) -> None:
    """pandas reads "a,a" as columns "a" and "a.1": which one is the sensor? The import refuses the file, naming it."""
    source = tmp_path / "twice.csv"
    source.write_text("Time,temp,temp,flow\n2024-03-01 00:00:00,1,2,3\n2024-03-01 00:10:00,4,5,6\n")
    message = _error(source, tmp_path / "data", machine_id="m", time_column="Time")
    assert str(source) in message and "['temp'] appear more than once" in message


@pytest.mark.parametrize(
    ("column", "values", "options"),
    [
        ("Time", lambda f: f["Time"], {"time_column": "Time"}),
        ("Zeit", lambda f: pd.to_datetime(f["Time"]).dt.strftime("%d.%m.%Y %H:%M"),
         {"time_column": "Zeit", "time_format": "%d.%m.%Y %H:%M"}),
        ("Epoch (s)", lambda f: pd.to_datetime(f["Time"]).astype("int64") // 10**9,
         {"time_column": "Epoch (s)", "time_format": "unix_s"}),
        ("Cycle no.", lambda f: np.arange(1, len(f) + 1), {"cycle_column": "Cycle no.", "cycle_unit": "min"}),
        ("Cycle no.", lambda f: np.arange(1, len(f) + 1), {"cycle_column": "Cycle no."}),
    ],
)
def test_the_edge_reads_the_source_time_column_as_the_import_did(tmp_path: Path, column, values, options) -> None:
    """The bundle's column map (`import_columns` of the metadata's source notes) lets the edge predictor rename
    source-format rows and read their time column to the very timestamps the import wrote."""
    from pdm_pipeline.core.bundle import import_columns
    from pdm_pipeline.edge.predictor import EdgePredictor

    frame = _series(20)
    frame = frame.drop(columns="Time").assign(**{column: values(frame)})
    source = _csv(tmp_path / "in.csv", frame)
    splits = _imported(source, tmp_path / "data", machine_id="m", **options)
    columns = import_columns(_metadata(tmp_path / "data", "m")["source"])
    assert columns is not None and columns["timestamp"] == column
    predictor = EdgePredictor(tmp_path, {"machine_id": "m", "models": {}, "source_columns": columns}, [], None)
    rows = predictor.to_contract(pd.read_csv(source))
    written = pd.concat(splits.values(), ignore_index=True)
    assert list(rows.columns) == ["temp_degC", "pressure_bar", "value", "timestamp"]
    assert rows["timestamp"].tolist() == written["timestamp"].tolist()
    assert str(rows["timestamp"].dtype) == str(written["timestamp"].dtype)
    # and a forecast's times go back to the source's own column and form (they were contract times: UTC dates,
    # a cycle machine's as 2000-01-01 + cycles)
    given = pd.read_csv(source)
    # (a forecast names its time column `ds`, as Prophet does)
    back = predictor.forecast_in_input_form(rows[["timestamp"]].rename(columns={"timestamp": "ds"}).assign(
        temp_degC=0.0), given)
    assert list(back.columns) == [column, "temp_degC"]
    if pd.api.types.is_numeric_dtype(given[column]):
        np.testing.assert_allclose(back[column].to_numpy(dtype=float), given[column].to_numpy(dtype=float))
    else:
        assert back[column].astype(str).tolist() == given[column].tolist()
    assert import_columns(None) is None and import_columns({"file": "x"}) is None  # not imported: no map
