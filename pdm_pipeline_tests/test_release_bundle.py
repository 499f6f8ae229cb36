"""The core release (gates, atomic switch, carry-over, recovery) and the signed edge bundle, on tiny real runs."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from pdm_pipeline.core import keys, paths
from pdm_pipeline.core.bundle import BundleExportError, export_bundle
from pdm_pipeline.core.config import GateSettings, TrainingConfig
from pdm_pipeline.core.contract import load_machine
from pdm_pipeline.core.pipeline import run_machine
from pdm_pipeline.core.release import (
    KEPT,
    RELEASED,
    current_release_dir,
    read_release,
    recover_machine,
    verify_release,
)
from pdm_pipeline.edge.integrity import IntegrityError, Trust, write_manifest
from pdm_pipeline.edge.predictor import STATUS, WARMUP, EdgePredictor, PredictionInputError, status_note

pytestmark = pytest.mark.slow

MACHINE = "motor_001"
FAST = TrainingConfig(time_limit_s=10, extra={"forecast_validation_windows": 0})


@pytest.fixture(scope="module")
def released(tiny_fleet_root, tmp_path_factory):
    """One full core run (train, evaluate, gate, release) of motor_001 on a private copy of the tiny fleet."""
    root = tmp_path_factory.mktemp("release") / "data"
    shutil.copytree(tiny_fleet_root, root)
    result = run_machine(root, MACHINE, FAST)
    return root, result


def test_release_layout_is_versioned_with_one_current_pointer(released):
    root, result = released
    release = result.release
    assert release.published and release.outcome in ("published", "published with warnings")
    link = paths.current_release(root, MACHINE)
    assert link.is_symlink() and os.readlink(link) == release.release_id
    current = current_release_dir(root, MACHINE)
    for model_type in ("classification", "regression", "anomaly", "timeseries", "bundle"):
        assert (current / model_type).is_dir(), model_type
    description = verify_release(current, keys.local_trust(root))
    assert {t: e["action"] for t, e in description["models"].items()} == dict.fromkeys(
        ("classification", "regression", "anomaly", "timeseries"), RELEASED)
    assert not (root / "staging" / MACHINE / result.run_id).exists(), "the run's staging is cleaned up"
    metrics = json.loads((current / "classification" / "metrics.json").read_text())
    assert metrics["metrics"]["f1"] == pytest.approx(result.evaluations["classification"].metrics["f1"])


def test_evaluation_features_equal_the_bundle_features_on_the_same_rows(released):
    """One continuous history per unit: what evaluation scored is what the Pi computes from the unit's rows."""
    root, result = released
    bundle = EdgePredictor.load(current_release_dir(root, MACHINE) / "bundle", trust=keys.local_trust(root))
    data = load_machine(root, MACHINE)
    history = pd.concat([data.splits[s] for s in ("train", "val", "test")], ignore_index=True)
    predicted = bundle.predict(history)
    test_rows = np.arange(len(history) - len(data.splits["test"]), len(history))
    frame = result.features.frames["test"]
    from pdm_pipeline.families.classifier.runtime import ClassifierRuntime

    card = json.loads((current_release_dir(root, MACHINE) / "classification" / "model_card.json").read_text())
    runtime = ClassifierRuntime(current_release_dir(root, MACHINE) / "classification", card)
    expected = runtime.probability(frame[runtime.inputs].to_numpy(dtype=float))
    np.testing.assert_allclose(predicted["failure_probability"].to_numpy()[test_rows], expected, rtol=1e-6, atol=1e-9)
    # Anomaly: the same scores and the same debounced alarm as the evaluation counted.
    anomaly = result.evaluations["anomaly"]
    flagged = predicted["anomaly_flag"].to_numpy()[test_rows]
    assert flagged.mean() == pytest.approx(anomaly.metrics["flagged_rate"])


def test_bundle_refuses_tampering_unsigned_and_foreign_keys(released, tmp_path):
    root, _ = released
    trust = keys.local_trust(root)
    bundle = tmp_path / "bundle"
    export_bundle(current_release_dir(root, MACHINE) / "bundle", bundle, trust)
    EdgePredictor.load(bundle, trust=trust)  # intact: loads

    # Edited model file AND re-hashed manifest, but not re-signed: refused.
    booster = bundle / "classification" / "model.txt"
    booster.write_bytes(booster.read_bytes() + b"\n")  # still a valid booster, but not the signed bytes
    manifest = json.loads((bundle / "manifest.json").read_text())
    write_manifest(bundle, None, {k: v for k, v in manifest.items() if k not in ("files", "n_files", "total_bytes")})
    with pytest.raises(IntegrityError, match="not signed"):
        EdgePredictor.load(bundle, trust=trust)
    EdgePredictor.load(bundle, trust=Trust(trust.public_key, allow_unsigned=True))  # only when told so

    # Signed by another key: refused.
    other = tmp_path / "other_root"
    write_manifest(bundle, keys.signing_key(other), {"machine_id": MACHINE})
    with pytest.raises(IntegrityError, match="does not verify"):
        EdgePredictor.load(bundle, trust=trust)


def test_manifest_paths_are_confined_and_unlisted_files_refused(released, tmp_path):
    root, _ = released
    trust = keys.local_trust(root)
    bundle = tmp_path / "bundle"
    export_bundle(current_release_dir(root, MACHINE) / "bundle", bundle, trust)
    planted = bundle / "anomaly" / "extra.pkl"
    planted.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(IntegrityError, match="anomaly/extra.pkl is not listed"):
        EdgePredictor.load(bundle, trust=trust)
    planted.unlink()
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["../../x"] = {"sha256": "0" * 64, "bytes": 1}
    from pdm_pipeline.edge.integrity import sign_bytes

    data = json.dumps(manifest).encode()
    (bundle / "manifest.json").write_bytes(data)
    (bundle / "manifest.sig").write_bytes(sign_bytes(keys.signing_key(root), data))
    with pytest.raises(IntegrityError, match="not a plain relative path"):
        EdgePredictor.load(bundle, trust=trust)


def test_a_planted_file_in_a_released_model_is_refused_before_loading(released):
    root, _ = released
    model_dir = current_release_dir(root, MACHINE) / "regression"
    planted = model_dir / "evil.pkl"
    planted.write_bytes(b"not a model")
    try:
        with pytest.raises(IntegrityError, match="evil.pkl is not listed"):
            verify_release(current_release_dir(root, MACHINE), keys.local_trust(root))
    finally:
        planted.unlink()


def test_export_refuses_a_non_empty_directory_that_is_not_a_bundle(released, tmp_path):
    root, _ = released
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(BundleExportError, match="non-empty directory that is not a bundle"):
        export_bundle(current_release_dir(root, MACHINE) / "bundle", precious, keys.local_trust(root))
    assert (precious / "thesis.tex").read_text() == "years of work"
    # a directory holding another machine's bundle is refused too; this machine's own bundle is replaced
    bundle = current_release_dir(root, MACHINE) / "bundle"
    pumps = tmp_path / "pump_bundle"
    export_bundle(bundle, pumps, keys.local_trust(root))
    description = json.loads((pumps / "bundle.json").read_text())
    (pumps / "bundle.json").write_text(json.dumps({**description, "machine_id": "pump_002"}))
    with pytest.raises(BundleExportError, match="holds the bundle of machine 'pump_002', not 'motor_001'"):
        export_bundle(bundle, pumps, keys.local_trust(root))
    assert json.loads((pumps / "bundle.json").read_text())["machine_id"] == "pump_002"
    own = tmp_path / "own"
    export_bundle(bundle, own, keys.local_trust(root))
    assert export_bundle(bundle, own, keys.local_trust(root))["machine_id"] == MACHINE


def test_predict_flags_rows_it_cannot_see_instead_of_calling_them_healthy(released):
    root, _ = released
    predictor = EdgePredictor.load(current_release_dir(root, MACHINE) / "bundle", trust=keys.local_trust(root))
    raw = load_machine(root, MACHINE).splits["val"].iloc[-200:].copy()
    raw.loc[raw.index[-1], predictor.sensors] = np.nan
    out = predictor.predict(raw)
    assert out[STATUS].iloc[-1] == "no sensor readings"
    assert np.isnan(out["failure_probability"].iloc[-1]) and np.isnan(out["rul_hours"].iloc[-1])
    stale = load_machine(root, MACHINE).splits["val"].iloc[-200:].copy()
    stale[predictor.sensors[0]] = np.nan
    out = predictor.predict(stale)
    assert out[STATUS].iloc[-1].startswith(f"stale: no reading of {predictor.sensors[0]}")
    assert (predictor.predict(raw.iloc[:5])[WARMUP]).all()
    # a reading far outside the sensor's training range is predicted, but not called 'ok'
    train = load_machine(root, MACHINE).splits["train"]
    sensor = predictor.sensors[0]
    lo, hi = float(train[sensor].min()), float(train[sensor].max())
    assert predictor.sensor_ranges[sensor] == pytest.approx((lo, hi))
    far = load_machine(root, MACHINE).splits["val"].iloc[-200:].copy()
    far.loc[far.index[-1], sensor] = hi + 10 * (hi - lo)
    far.loc[far.index[-2], sensor] = hi + 0.2 * (hi - lo)  # within the margin
    out = predictor.predict(far)
    assert out[STATUS].iloc[-1].startswith(f"out of training range: {sensor} ")
    assert f"(trained {lo:.4g} to {hi:.4g})" in out[STATUS].iloc[-1]
    assert np.isfinite(out["failure_probability"].iloc[-1]) and out[STATUS].iloc[-2] == "ok"
    assert status_note(out) == "1 of 200 rows not ok (out of training range 1): see the status column"
    assert (out[STATUS].iloc[:-1] == "ok").all()
    with pytest.raises(PredictionInputError, match="missing column"):
        predictor.predict(raw.drop(columns=[predictor.sensors[0]]))
    repeated = pd.concat([raw.iloc[:-1], raw.iloc[[-2]]], ignore_index=True)  # the last time sent twice
    with pytest.raises(PredictionInputError, match=r"1 row\(s\) repeat the timestamp of an earlier row"):
        predictor.predict(repeated)


def test_latest_only_computes_a_tail_and_answers_as_the_whole_input(released, monkeypatch):
    """The latest row of each unit from a long input: the same numbers (anomaly alarm included, whose state comes
    from earlier rows) as predicting every row, from a tail of the input; with rows of two units interleaved."""
    from pdm_pipeline.edge import predictor as edge

    root, _ = released
    predictor = EdgePredictor.load(current_release_dir(root, MACHINE) / "bundle", trust=keys.local_trust(root))
    data = load_machine(root, MACHINE)
    history = pd.concat([data.splits["train"], data.splits["val"], data.splits["test"]], ignore_index=True)
    history = history[[c for c in history.columns if c in (*predictor.sensors, "timestamp", "unit_id")]]
    computed: list[int] = []
    monkeypatch.setattr(predictor, "_check_memory", computed.append)
    for latest_rows in (256, 3):  # 3: the alarm's state is rarely settled within so few rows: the tail grows
        monkeypatch.setattr(edge, "LATEST_ROWS", latest_rows)
        computed.clear()
        latest = predictor.predict(history, latest_only=True)
        assert len(computed) >= 1 and max(computed) < len(history), computed
        every = predictor.predict(history).groupby(history.get("unit_id", pd.Series(0, index=history.index))).tail(1)
        pd.testing.assert_frame_equal(latest, every.loc[latest.index], check_exact=False, atol=1e-9)
    assert predictor._groups and any(hasattr(r, "needs_earlier_rows") for g in predictor._groups for r in g.runtimes)
    # two units' rows interleaved (a second unit: the same rows a day later): each unit's answer is its own
    other = history.assign(unit_id="b", timestamp=history["timestamp"] + pd.Timedelta(days=1)).iloc[-3000:]
    mixed = pd.concat([history.assign(unit_id="a").iloc[-3000:], other]).sort_values("timestamp", kind="stable")
    both = predictor.predict(mixed, latest_only=True)
    alone = predictor.predict(other, latest_only=True)
    assert list(both["unit_id"]) == ["a", "b"]
    pd.testing.assert_frame_equal(both.iloc[[1]].reset_index(drop=True), alone.reset_index(drop=True), atol=1e-9)
    flags = predictor.predict(mixed)["anomaly_flag"].to_numpy()
    assert np.array_equal(flags[mixed["unit_id"].to_numpy() == "b"], predictor.predict(other)["anomaly_flag"].to_numpy())


def test_predict_refuses_an_input_its_host_has_no_memory_for(released, monkeypatch):
    """The features of 200 rows need ~40 bytes per value: on a host with less than that available (here made
    small), the input is refused by name before anything is computed, instead of an out-of-memory kill."""
    from pdm_pipeline.core import contract

    root, _ = released
    predictor = EdgePredictor.load(current_release_dir(root, MACHINE) / "bundle", trust=keys.local_trust(root))
    raw = load_machine(root, MACHINE).splits["val"].iloc[-200:]
    values = 200 * sum(len(g.spec.feature_names) for g in predictor._groups)
    monkeypatch.setattr(contract, "available_memory_bytes", lambda: int(values * 40 / 0.8) - 1)
    with pytest.raises(PredictionInputError, match=r"200 input rows would need about .* GB of memory to predict"):
        predictor.predict(raw)
    assert len(predictor.predict(raw.iloc[-150:])) == 150  # fewer rows fit


def test_a_blocked_model_keeps_its_previous_version_and_the_others_move_on(released):
    """A strict quality gate blocks the classifier only: the new release carries the old classifier (hard
    link, same bytes) beside the new regressor, anomaly and forecast models."""
    root, first = released
    before = current_release_dir(root, MACHINE)
    old_classifier = (before / "classification" / "model.txt").read_bytes()
    gates = GateSettings(quality_limits={"classification_single_row_latency": 0.0},  # no model takes 0 ms
                         strict_quality_gates=("classification_single_row_latency",))
    second = run_machine(root, MACHINE, TrainingConfig(time_limit_s=10, seed=1, extra={"forecast_validation_windows": 0}),
                         gates)
    release = second.release
    assert release.published and release.outcome == "blocked"
    decision = release.decisions["classification"]
    assert decision.action == KEPT and "classification_single_row_latency" in decision.reason
    assert decision.source_release == first.release.release_id
    after = current_release_dir(root, MACHINE)
    assert after != before
    assert (after / "classification" / "model.txt").read_bytes() == old_classifier
    assert release.decisions["regression"].action == RELEASED
    description = read_release(after, keys.local_trust(root))
    assert description["previous_release"] == first.release.release_id


def test_nothing_changes_when_the_whole_release_is_over_budget(released):
    root, _ = released
    before = os.readlink(paths.current_release(root, MACHINE))
    result = run_machine(root, MACHINE, FAST, GateSettings(total_budget_mb=0.01))
    assert not result.release.published and "previous release stays" in result.release.reason
    assert os.readlink(paths.current_release(root, MACHINE)) == before


def test_recovery_removes_interrupted_writes_and_repairs_a_dangling_pointer(released):
    root, _ = released
    directory = paths.releases_dir(root, MACHINE)
    building = directory / ".building-20990101T000000-deadbeef"
    (building / "classification").mkdir(parents=True)
    incomplete = directory / "20990101T000000-cafebabe"
    incomplete.mkdir()
    good = os.readlink(directory / "current")
    os.replace(directory / "current", directory / "current.bak")
    os.symlink("does-not-exist", directory / "current")
    (incomplete / "model.txt").write_text("the only copy")
    done = recover_machine(root, MACHINE)
    assert not building.exists() and not incomplete.exists()
    # a directory without release.json was never written by a release: moved aside, never deleted
    (aside,) = directory.glob(f".broken-{incomplete.name}-*")
    assert (aside / "model.txt").read_text() == "the only copy"
    assert any("moved aside" in line for line in done)
    assert any("re-pointed" in line for line in done)
    newest = sorted(p.name for p in directory.iterdir() if p.name[0].isdigit())[-1]
    assert os.readlink(directory / "current") == newest
    (directory / "current.bak").unlink()
    assert good in [p.name for p in directory.iterdir()]
    # the live release that lost its release.json is not deleted either (it was, with its signed models)
    live = directory / os.readlink(directory / "current")
    (live / "release.json").rename(tmp := directory.parent / "release.json.bak")
    recover_machine(root, MACHINE)
    assert list(directory.glob(f".broken-{live.name}-*")) and not live.exists()
    assert not list(directory.glob(".broken-current-*")), "the link is re-pointed, not moved aside"
    link = directory / "current"
    assert not link.is_symlink() or (directory / os.readlink(link) / "release.json").is_file()
    broken = next(directory.glob(f".broken-{live.name}-*"))
    tmp.rename(broken / "release.json")  # the operator puts it back (the module's later tests use it)
    broken.rename(live)
    (directory / "current").unlink(missing_ok=True)
    os.symlink(live.name, directory / "current")
    assert recover_machine(root, MACHINE) == [] and current_release_dir(root, MACHINE) == live


def test_the_signing_key_is_never_replaced_while_its_public_key_is_trusted(tmp_path):
    """A lost private key beside its public key (which the Pis trust) is refused by name: making a new pair
    silently broke every release and every Pi. An unreadable key file is named."""
    from pdm_pipeline.edge.integrity import IntegrityError

    root = tmp_path / "data"
    first = keys.signing_key(root)
    public = keys.public_key_path(root).read_bytes()
    private = next(p for p in (root / "keys").iterdir() if p.name != keys.public_key_path(root).name)
    private.unlink()
    with pytest.raises(IntegrityError, match="is missing but its public key .* exists"):
        keys.signing_key(root)
    assert keys.public_key_path(root).read_bytes() == public
    private.write_text("-----BEGIN PRIVATE KEY-----\ntruncated")
    with pytest.raises(IntegrityError, match="is not a readable PEM private key"):
        keys.signing_key(root)
    private.unlink()
    keys.public_key_path(root).unlink()  # a new pair only on purpose: both gone
    assert keys.signing_key(root) != first


def test_a_model_without_test_metrics_ships_only_while_its_gates_are_not_strict_and_says_so(tmp_path):
    """A forecast with no test window to backtest has no metric: released with the reason in the decision (the
    CLI prints it), or kept out when its quality gate is strict."""
    from pdm_pipeline.core.evaluation import Evaluation
    from pdm_pipeline.core.release import NONE, RELEASED, ReleaseResult, decide
    from pdm_pipeline.families.base import TrainedModel

    trained = {"timeseries": TrainedModel("timeseries", "m", tmp_path, size_mb=0.01)}
    evaluations = {"timeseries": Evaluation.skipped("timeseries", "test part: nothing to backtest")}
    decision = decide(trained, evaluations, GateSettings(), None)["timeseries"]
    assert decision.action == RELEASED
    assert decision.reason.startswith("released WITHOUT test metrics") and "nothing to backtest" in decision.reason
    # nothing measured it: the release warns (exit 3), where the same model with test metrics publishes plainly
    result = ReleaseResult("m", True, "r", None, None, {"timeseries": decision}, [], "")
    assert result.outcome == "published with warnings"
    measured = {"timeseries": Evaluation("timeseries", metrics={"mase": 0.5, "mae_vs_naive": 0.9})}
    tested = decide(trained, measured, GateSettings(), None)["timeseries"]
    assert tested.untested is None and not tested.warnings
    assert ReleaseResult("m", True, "r", None, None, {"timeseries": tested}, [], "").outcome == "published"
    strict = GateSettings(strict_quality_gates=("forecast_beats_seasonal_naive",))
    assert decide(trained, evaluations, strict, None)["timeseries"].action == NONE


def test_prediction_input_with_time_zones_is_read_in_utc_as_the_importer_reads_it(tmp_path):
    """Offsets that change across a daylight-saving switch: the importer keeps UTC without the zone, and so does
    the predictor's reader (it refused such a file: 'timestamp has dtype object')."""
    from pdm_pipeline.edge.predictor import read_input

    source = tmp_path / "recent.csv"
    pd.DataFrame({"timestamp": ["2024-03-31 01:50:00+01:00", "2024-03-31 03:00:00+02:00"], "x": [1.0, 2.0]}).to_csv(
        source, index=False)
    times = read_input(source)["timestamp"]
    assert times.dtype == "datetime64[ns]"
    assert times.tolist() == [pd.Timestamp("2024-03-31 00:50"), pd.Timestamp("2024-03-31 01:00")]
    # a file separated by ';' reads as one column: named as such (it was 'missing column(s)' of every sensor)
    semicolons = tmp_path / "semicolons.csv"
    pd.DataFrame({"timestamp": ["2024-03-31 01:50:00"], "x": [1.0]}).to_csv(semicolons, index=False, sep=";")
    with pytest.raises(PredictionInputError, match="one column 'timestamp;x': the rows must be comma-separated"):
        read_input(semicolons)


def test_predict_refuses_unreadable_inputs_keys_and_outputs_by_name(released, tmp_path, capsys):
    """Each of these ended in a traceback (exit 1); each is now a named refusal (exit 2)."""
    from pdm_pipeline.cli import main

    root, _ = released
    bundle = current_release_dir(root, MACHINE) / "bundle"
    forecast_sensor = EdgePredictor.load(bundle, trust=keys.local_trust(root))._forecaster.sensors[0]
    recent = tmp_path / "recent.csv"
    load_machine(root, MACHINE).splits["val"].iloc[-300:].to_csv(recent, index=False)
    unread = tmp_path / "unread.csv"  # weeks of rows in which one forecast sensor never reads
    history = pd.concat([load_machine(root, MACHINE).splits[s] for s in ("train", "val")], ignore_index=True)
    history.iloc[-1000:].assign(**{forecast_sensor: np.nan}).to_csv(unread, index=False)
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00x")
    (tmp_path / "bad.pem").write_text("not a key\n")
    key = ["--public-key", str(keys.public_key_path(root))]
    for arguments, words in (
        (["--input", tmp_path / "empty.csv", *key], "is empty"),
        (["--input", tmp_path / "binary.csv", *key], "not UTF-8 text"),
        (["--input", recent, "--public-key", tmp_path / "bad.pem"], "not a PEM public key"),
        (["--input", recent, "--output", tmp_path / "nowhere" / "out.csv", *key], "does not exist"),
        (["--input", recent, "--output", tmp_path / "out.json", *key], "write .csv or .parquet"),
        (["--input", unread, "--forecast", *key], f"forecast: recent rows, sensor(s) ['{forecast_sensor}']: no value"),
    ):
        assert main(["--data-dir", str(root), "predict", "--bundle", str(bundle), *map(str, arguments)]) == 2
        assert words in capsys.readouterr().err
    assert main(["--data-dir", str(root), "predict", "--bundle", str(bundle), "--input", str(recent),
                 "--output", str(tmp_path / "out.csv"), *key]) == 0
    assert len(pd.read_csv(tmp_path / "out.csv")) == 300


def test_settings_and_simulation_arguments_out_of_range_are_refused_before_anything_runs(tmp_path, capsys):
    """A negative seed used to pass the settings check and fail every model; simulation arguments raised a bare
    ValueError (exit 1)."""
    from pdm_pipeline.cli import main

    for arguments, words in (
        (["train", "--machine-id", MACHINE, "--set", "seed=-1"], "seed=-1 must be between 0 and 4294967295"),
        (["train", "--machine-id", MACHINE, "--models", ","], "--models names no model type"),
        (["simulate", "--machines", "0"], "machines=0 must be a positive integer"),
        (["simulate", "--machines", "1", "--seed", "-1"], "seed=-1 must be a non-negative integer"),
        (["simulate", "--machines", "1", "--rows", "10,600,600"], "train rows=10 is too small"),
    ):
        assert main(["--data-dir", str(tmp_path / "data"), *arguments]) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "data" / "synthetic").exists()


def test_a_kept_model_is_carried_forward_only_while_intact_and_readable(released, tmp_path):
    """A partial retrain carries the other models of the current release into the new one. A model whose file was
    changed after its release used to be carried, re-signed in the new bundle and published; a model reading a
    sensor the re-imported data no longer has broke the release's smoke test (a traceback). Neither is carried
    now: the release says why, and the new model ships."""
    from pdm_pipeline.core.release import KEPT, NONE, RELEASED, verify_release

    source, _ = released
    root = tmp_path / "data"
    shutil.copytree(source, root, symlinks=True)
    model = current_release_dir(root, MACHINE) / "regression" / "model.txt"
    text = model.read_text()
    model.unlink()  # the release hard-links its files: change this copy only
    import re

    first = re.search(r"leaf_value=-?(\d)", text)  # one digit of one leaf: still a valid model, predicting otherwise
    model.write_text(text[:first.start(1)] + str((int(first[1]) + 1) % 10) + text[first.end(1):])
    only_anomaly = TrainingConfig(time_limit_s=10, excluded_models=("classification", "regression", "timeseries"),
                                  extra={"forecast_validation_windows": 0})
    result = run_machine(root, MACHINE, only_anomaly)
    decisions = result.release.decisions
    assert decisions["anomaly"].action == RELEASED
    assert decisions["regression"].action == NONE and "fails its integrity check" in decisions["regression"].reason
    verify_release(current_release_dir(root, MACHINE), keys.local_trust(root))  # every file as signed
    assert not (current_release_dir(root, MACHINE) / "regression").exists()
    assert not (current_release_dir(root, MACHINE) / "bundle" / "regression").exists()

    data = load_machine(root, MACHINE)
    dropped = data.sensors[-1]
    card = current_release_dir(root, MACHINE) / "timeseries" / "model_card.json"
    forecast_reads_it = dropped in json.loads(card.read_text())["sensors"]
    for split in ("train", "val", "test"):  # the machine re-imported without one sensor
        path = paths.split_path(root, MACHINE, split)
        pd.read_parquet(path).drop(columns=[dropped]).to_parquet(path, index=False)
    metadata = json.loads(paths.metadata_path(root, MACHINE).read_text())
    del metadata["columns"][dropped]
    paths.metadata_path(root, MACHINE).write_text(json.dumps(metadata))
    profile = json.loads(paths.profile_path(root, MACHINE).read_text())
    profile["sensors"].pop(dropped, None)
    paths.profile_path(root, MACHINE).write_text(json.dumps(profile))
    result = run_machine(root, MACHINE, only_anomaly)
    decisions = result.release.decisions
    assert result.release.published and decisions["anomaly"].action == RELEASED
    # the classifier's features read every sensor; the forecasts only theirs
    assert decisions["classification"].action == NONE
    assert f"reads sensor(s) ['{dropped}']" in decisions["classification"].reason
    assert decisions["timeseries"].action == (NONE if forecast_reads_it else KEPT)


def test_the_sweep_keeps_another_instances_staging_while_its_process_lives(tmp_path, dagster_instance):
    """Staging of runs this instance does not know (another instance on the same data root): kept while the
    process that wrote it lives, however long it trains; removed once it is gone; without an owner, only after a
    day untouched. A run of this instance that succeeded: removed at once (one that failed is kept a while for
    its re-execution). (The sweep removed any unknown run's
    staging 10 minutes after its directory last changed, under a model still training.)"""
    import subprocess
    import sys
    import time
    import uuid

    import dagster as dg

    from pdm_pipeline.defs.recovery import UNKNOWN_STAGING_RETENTION_S, mark_staging_owner, remove_stale_staging

    root = tmp_path / "data"
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dirs = {name: paths.staging_dir(root, MACHINE, str(uuid.uuid4())) for name in
            ("alive", "dead", "no_owner_recent", "no_owner_old", "finished", "failed")}
    for name, run_dir in dirs.items():
        mark_staging_owner(run_dir)
        (run_dir / "anomaly").mkdir()
        if name == "dead":
            (run_dir / ".owner").write_text((run_dir / ".owner").read_text().rsplit(" ", 1)[0] + f" {ended.pid}")
        if name.startswith("no_owner"):
            (run_dir / ".owner").unlink()
        age = UNKNOWN_STAGING_RETENTION_S + 60 if name == "no_owner_old" else 3600
        for path in (run_dir, run_dir / "anomaly"):
            os.utime(path, (time.time() - age, time.time() - age))
    dagster_instance.create_run_for_job(dg.GraphDefinition("g").to_job(), run_id=dirs["finished"].name,
                                        status=dg.DagsterRunStatus.SUCCESS)
    failed = dagster_instance.create_run_for_job(dg.GraphDefinition("g").to_job(), run_id=dirs["failed"].name)
    dagster_instance.report_run_failed(failed)
    done = remove_stale_staging(dagster_instance, root, active=set())
    # (a failed run's staging stays for a re-execution from failure, for a while: test_reexecution.py)
    assert {n for n, d in dirs.items() if not d.exists()} == {"dead", "no_owner_old", "finished"}, done
    assert len(done) == 3


def test_releases_are_ordered_as_they_were_made_not_by_a_clock_that_was_ahead(tmp_path):
    """A release made while the host's clock was years ahead has the latest-looking id: ordered by its recorded
    sequence it is the oldest, so garbage collection removes it in its turn and a dangling `current` is
    re-pointed to the release made last (by id, the 2030 one stayed 'newest' for good)."""
    from pdm_pipeline.core.release import _collect_garbage, complete_releases

    directory = paths.releases_dir(tmp_path, MACHINE)
    made = ["20300101T000000000000-aaaaaaaa", "20261128T000000000000-bbbbbbbb", "20261128T010000000000-cccccccc",
            "20261128T020000000000-dddddddd"]
    for sequence, name in enumerate(made, start=1):
        (directory / name).mkdir(parents=True)
        (directory / name / "release.json").write_text(json.dumps({"release_id": name, "sequence": sequence}))
    assert [p.name for p in complete_releases(tmp_path, MACHINE)] == made
    os.symlink("gone", directory / "current")
    assert recover_machine(tmp_path, MACHINE) == [f"current re-pointed to {made[-1]}"]
    _collect_garbage(tmp_path, MACHINE)
    assert [p.name for p in complete_releases(tmp_path, MACHINE)] == made[1:]



@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A machine imported from a file with awkward names (spaces, brackets, a day-first 'Time stamp', a 'Line #'
    unit column) and released with its anomaly model alone (seconds): root, bundle, source frame, and the last
    120 rows of each unit in the source file's format (a CSV) and in the contract's."""
    return _import_and_release(tmp_path_factory.mktemp("imported"), "Time stamp", {})


def _import_and_release(tmp_path, time_column: str, written: dict):
    """Import a two-line press file (time column `time_column`, day-first; `written`: the text file's separator
    and decimal mark) and release its anomaly model: root, bundle, the last rows as written and in contract form."""
    from pdm_pipeline.core.importer import ImportOptions, import_data

    n, rng = 400, np.random.default_rng(5)
    times = pd.date_range("2024-03-01", periods=n, freq="10min").strftime("%d/%m/%Y %H:%M")
    source = pd.concat([pd.DataFrame({
        "Line #": line,
        time_column: times,
        "Air temperature [K]": 300 + rng.normal(0, 1, n),
        "Rotational speed (rpm)": 1500 + rng.normal(0, 20, n),
    }) for line in ("A", "B")], ignore_index=True)
    csv = tmp_path / "press.csv"
    source.to_csv(csv, index=False, sep=written.get("separator", ","), decimal=written.get("decimal", "."))
    root = tmp_path / "data"
    import_data(csv, root, ImportOptions(machine_id="press", time_column=time_column, time_format="%d/%m/%Y %H:%M",
                                         unit_column="Line #", time_unit="minutes", **written))
    result = _retrain_and_release(root)
    assert result.published, result.reason
    data = load_machine(root, "press")
    original = tmp_path / "original.csv"
    source.groupby("Line #").tail(120).to_csv(original, index=False, sep=written.get("separator", ","),
                                              decimal=written.get("decimal", "."))
    every = pd.concat(data.splits.values()).sort_values(["unit_id", "timestamp"])
    contract = every.groupby("unit_id").tail(120).reset_index(drop=True)
    return root, current_release_dir(root, "press") / "bundle", original, contract


def test_rows_written_as_the_machine_writes_them_with_its_own_timestamp_column(tmp_path, capsys):
    """A source whose time column is itself called 'timestamp' (day-first) in a ';'-separated, decimal-comma file:
    the rows as written predict as the contract's rows do (the dates were read month-first, silently, and the
    file was refused as 'one column')."""
    from pdm_pipeline.cli import main

    root, bundle, original, contract = _import_and_release(tmp_path, "timestamp", {"separator": ";", "decimal": ","})
    predictor = EdgePredictor.load(bundle, trust=keys.local_trust(root))
    rows = predictor.read_input(original)
    assert rows["Air temperature [K]"].dtype == float
    got = predictor.predict(rows)
    expected = predictor.predict(contract)
    assert got["timestamp"].tolist() == expected["timestamp"].tolist() and not got["warmup"].iloc[-1]
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected)
    out = tmp_path / "out.csv"
    assert main(["--data-dir", str(root), "predict", "--bundle", str(bundle), "--input", str(original), "--latest-only",
                 "--output", str(out)]) == 0
    assert pd.read_csv(out)["anomaly_score"].tolist() == pytest.approx(expected.groupby("unit_id").tail(1)[
        "anomaly_score"].tolist())
    contract_csv = tmp_path / "contract.csv"  # rows in the contract's form still read as such
    contract.to_csv(contract_csv, index=False)
    pd.testing.assert_frame_equal(predictor.predict(predictor.read_input(contract_csv)).reset_index(drop=True),
                                  expected)


def test_an_imported_machine_predicts_on_rows_in_its_source_files_format(imported, tmp_path):
    """The bundle records the import's column map: rows as the machine emits them (the source file's header and
    day-first times) predict the same as the same rows in the contract's names (they were refused: 'missing
    column(s) ['air_temperature_K', ...]'), through the API and the CLI."""
    from pdm_pipeline.cli import main
    from pdm_pipeline.edge.predictor import read_input

    root, bundle, original, contract = imported
    assert json.loads((bundle / "bundle.json").read_text())["source_columns"] == {
        "sensors": {"air_temperature_K": "Air temperature [K]", "rotational_speed_rpm": "Rotational speed (rpm)"},
        "timestamp": "Time stamp", "time": {"kind": "datetime", "format": "%d/%m/%Y %H:%M"}, "unit_id": "Line #"}
    predictor = EdgePredictor.load(bundle, trust=keys.local_trust(root))
    expected = predictor.predict(contract)
    got = predictor.predict(read_input(original))
    assert list(got.columns) == list(expected.columns) and got["anomaly_score"].notna().sum() > 200
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected)
    out = tmp_path / "out.csv"
    assert main(["--data-dir", str(root), "predict", "--bundle", str(bundle), "--input", str(original),
                 "--output", str(out)]) == 0
    written = pd.read_csv(out)
    assert written["anomaly_score"].tolist() == pytest.approx(expected["anomaly_score"].tolist(), nan_ok=True)
    # the rows are named as the input named them: its own time column and text, its own unit column
    given = pd.read_csv(original)
    assert list(written.columns[:2]) == ["Time stamp", "Line #"]
    assert written["Time stamp"].tolist() == given["Time stamp"].tolist()  # '01/03/2024 20:00', not ISO
    assert written["Line #"].tolist() == given["Line #"].tolist()
    assert main(["--data-dir", str(root), "predict", "--bundle", str(bundle), "--input", str(original),
                 "--latest-only", "--output", str(out)]) == 0
    assert pd.read_csv(out)["Time stamp"].tolist() == given.groupby("Line #")["Time stamp"].last().tolist()


def test_imported_names_mixed_with_contract_names_are_refused_naming_both(imported):
    """Both names of one sensor is ambiguous, a mix of forms is refused, and a missing column is named in both."""
    from pdm_pipeline.edge.predictor import read_input

    root, bundle, original, contract = imported
    predictor = EdgePredictor.load(bundle, trust=keys.local_trust(root))
    rows = read_input(original)
    with pytest.raises(PredictionInputError, match=r"both the contract and the imported name of "
                                                   r"'air_temperature_K' / 'Air temperature \[K\]'"):
        predictor.predict(rows.assign(air_temperature_K=1.0))
    with pytest.raises(PredictionInputError, match=r"mixes contract names \['rotational_speed_rpm'\]"):
        predictor.predict(rows.rename(columns={"Rotational speed (rpm)": "rotational_speed_rpm"}))
    for frame in (rows.drop(columns="Air temperature [K]"), contract.drop(columns="air_temperature_K")):
        with pytest.raises(PredictionInputError, match=r"missing column\(s\) 'air_temperature_K' \(imported from "
                                                       r"'Air temperature \[K\]'\)"):
            predictor.predict(frame)


def test_a_registry_that_fails_after_the_switch_warns_and_leaves_the_deploy_marker(tmp_path, monkeypatch):
    """The release is live once `current` switched: an MLflow registry that then fails (disk full, server down)
    makes it 'published with warnings', not a failed run, and the deploy marker stays for the recovery sweep."""
    from pdm_pipeline.core import champion
    from pdm_pipeline.core.release import DEPLOY_PENDING

    root, _, _, _ = _import_and_release(tmp_path, "Time stamp", {})
    before = current_release_dir(root, "press")

    def registry_down(*args, **kwargs):
        raise OSError("database or disk is full")

    monkeypatch.setattr(champion, "promote_champions", registry_down)
    result = _retrain_and_release(root, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert result.published and result.outcome == "published with warnings"
    assert current_release_dir(root, "press") == result.path != before
    (gate,) = [g for g in result.release_gates if g.name == "registry_follows_release"]
    assert "database or disk is full" in gate.description and gate.warns
    marker = json.loads((paths.releases_dir(root, "press") / DEPLOY_PENDING).read_text())
    assert marker["release_id"] == result.release_id


def _retrain_and_release(root, **kwargs):
    """Train the press's anomaly model (again) and release it (as the Dagster graph's last steps do)."""
    from pdm_pipeline.core.pipeline import evaluate_model, new_run_id, prepare_features, prepare_labels, train_model
    from pdm_pipeline.core.release import release_machine

    data = load_machine(root, "press")
    config = TrainingConfig(time_limit_s=5)
    labels = prepare_labels(data, config)
    features = prepare_features(data, labels, config)
    run_id = new_run_id()
    trained = train_model("anomaly", data, labels, features, paths.staging_dir(root, "press", run_id) / "anomaly",
                          config, keys.signing_key(root))
    evaluation = evaluate_model(trained, data, features, keys.local_trust(root))
    return release_machine(root, "press", {"anomaly": trained}, {"anomaly": evaluation}, GateSettings(),
                           run_id=run_id, data=data, **kwargs)


def test_a_damaged_current_release_is_replaced_whole_instead_of_blocking_the_machine(tmp_path, caplog):
    """A truncated release.json in `current` failed every later release at machine_release, naming 'the
    signature of manifest.json': it is now named as what it is, nothing is carried from it, the next release
    replaces it."""
    from pdm_pipeline.core.release import read_release
    from pdm_pipeline.edge.integrity import IntegrityError

    root, _, _, _ = _import_and_release(tmp_path, "Time stamp", {})
    damaged = current_release_dir(root, "press")
    text = (damaged / "release.json").read_text()
    (damaged / "release.json").write_text(text[: len(text) // 2])
    with pytest.raises(IntegrityError, match="signature of release.json does not verify"):
        read_release(damaged, keys.local_trust(root))
    result = _retrain_and_release(root)
    assert result.published and result.previous_release is None
    assert current_release_dir(root, "press") == result.path != damaged and damaged.is_dir()
    assert "the current release cannot be trusted" in caplog.text


def test_a_release_that_fails_at_its_switch_leaves_no_orphan(tmp_path, monkeypatch):
    """A full disk at the switch (or at the deploy marker) left a complete, signed release that never became
    current: it took a kept slot, and recovery could later point `current` at it."""
    from pdm_pipeline.core import release

    root, _, _, _ = _import_and_release(tmp_path, "Time stamp", {})
    before = sorted(p.name for p in paths.releases_dir(root, "press").iterdir())

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(release, "_switch", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _retrain_and_release(root)
    assert sorted(p.name for p in paths.releases_dir(root, "press").iterdir()) == before


def test_recovery_re_points_current_when_its_release_lost_release_json(tmp_path, monkeypatch):
    """The live release lost its release.json: it is moved aside and `current` re-pointed to the newest whole
    release, whatever order the directory lists in (the link itself, seen first, was moved aside too)."""
    from pathlib import Path

    directory = paths.releases_dir(tmp_path, "m1")
    (directory / "r1").mkdir(parents=True)
    (directory / "r1" / "release.json").write_text(json.dumps({"sequence": 1}))
    (directory / "r2").mkdir()
    (directory / "r2" / "model.txt").write_text("the only copy")
    os.symlink("r2", directory / "current")
    listed = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(listed(self), key=lambda p: p.name != "current")))
    done = recover_machine(tmp_path, "m1")
    assert os.readlink(directory / "current") == "r1", done
    (aside,) = directory.glob(".broken-r2-*")
    assert (aside / "model.txt").read_text() == "the only copy"
    assert not list(directory.glob(".broken-current-*"))


def test_recovery_never_removes_a_release_that_was_current(tmp_path):
    """Only a release whose `.switching-` marker survived (killed between its rename and its switch) is removed.
    A rollback by hand (`current` -> an older release), a current release.json that does not parse, and a lost
    `current` link removed or hid live releases (found by the verification sweep): they are left whole, and a
    lost link is re-pointed at the newest whole release."""
    directory = paths.releases_dir(tmp_path, "m1")
    for sequence, name in enumerate(("r1", "r2", "r3"), start=1):
        (directory / name).mkdir(parents=True)
        (directory / name / "release.json").write_text(json.dumps({"release_id": name, "sequence": sequence}))
    os.symlink("r2", directory / "current")  # rolled back from r3 by hand
    assert recover_machine(tmp_path, "m1") == []
    (directory / "r2" / "release.json").write_text("{ not json")  # the current one damaged
    os.replace(directory / "current", directory / "gone")
    os.symlink("r2", directory / "current")
    recover_machine(tmp_path, "m1")
    assert all((directory / n / "release.json").is_file() for n in ("r1", "r3"))
    (directory / "current").unlink()  # the link lost (a copy that drops symlinks)
    assert recover_machine(tmp_path, "m1") == ["current was missing: pointed to the newest whole release r3"]
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) == [
        "current", "gone", "r1", "r2", "r3"]
    (directory / ".switching-r3").write_text("run")  # r3 is current: its marker only goes
    assert recover_machine(tmp_path, "m1") == [] and (directory / "r3").is_dir()
    assert not (directory / ".switching-r3").exists()


def test_a_release_precondition_is_checked_while_the_machine_lock_is_held(tmp_path):
    """The check that no other run published since a re-execution's reused work was done ran before the release
    took the machine's lock: a run publishing in between was replaced by older models. It is now called with the
    lock held (another holder cannot take it), and a refusal writes nothing."""
    import fcntl

    from pdm_pipeline.core.release import ReleaseRefused

    root, _, _, _ = _import_and_release(tmp_path, "Time stamp", {})
    before = sorted(p.name for p in paths.releases_dir(root, "press").iterdir())
    live = current_release_dir(root, "press")
    seen = []

    def lock_is_held() -> str | None:
        with (paths.releases_dir(root, "press") / ".lock").open("a") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                seen.append("held")
                return "press has a newer release (injected)"
            fcntl.flock(other, fcntl.LOCK_UN)
            seen.append("free")
            return None

    with pytest.raises(ReleaseRefused, match="newer release"):
        _retrain_and_release(root, precondition=lock_is_held)
    assert seen == ["held"]
    assert current_release_dir(root, "press") == live
    assert sorted(p.name for p in paths.releases_dir(root, "press").iterdir()) == before
    assert _retrain_and_release(root, precondition=lambda: None).published
