"""Anomaly ensemble family: real scikit-learn fitting, numpy runtime from plain arrays, val weights, debounced alarm."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pdm_pipeline import families
from pdm_pipeline.core.config import TrainingConfig
from pdm_pipeline.core.schema import EVAL_ANOMALY, LABEL
from pdm_pipeline.families.anomaly import ANOMALY_FLAG, ANOMALY_SCORE, ENSEMBLE
from pdm_pipeline.families.anomaly.events import event_metrics, events
from pdm_pipeline.families.anomaly.runtime import MODEL_FILE, debounce, load
from pdm_pipeline.families.anomaly.train import (
    _fit_isolation_forest,
    _fit_lof,
    _fit_one_class_svm,
    conformal_threshold,
    select_anomaly_inputs,
)
from pdm_pipeline.families.base import ModelSkipped, read_card
from pdm_pipeline_tests.helpers import assert_picture, views

FEATURES = [f"f{i}" for i in range(8)]
# Fixed mixing matrix: correlated normal features, the same in every split.
MIX = np.random.default_rng(123).normal(scale=0.5, size=(8, 8)) + np.eye(8)
ANOMALY = families.get("anomaly")


def make_split(n: int, seed: int, *, with_label: bool = True) -> pd.DataFrame:
    """Correlated Gaussian normal rows; the last 10 rows of every 100 are labelled 1 and drift away."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))) @ MIX
    label = (np.arange(n) % 100 >= 90).astype(np.int8)
    bad = label == 1
    x[bad, :4] += 2.5
    x[bad] += rng.normal(scale=1.5, size=(int(bad.sum()), len(FEATURES)))
    frame = pd.DataFrame(x.astype(np.float32), columns=FEATURES)
    frame["timestamp"] = pd.date_range("2024-01-01", periods=n, freq="h")
    frame["unit_id"] = "u1"
    if with_label:
        frame[LABEL] = label
    return frame


@pytest.fixture(scope="module")
def splits() -> dict[str, pd.DataFrame]:
    return {"train": make_split(2000, 1), "val": make_split(500, 2), "test": make_split(500, 3)}


@pytest.fixture(scope="module")
def trained(splits, tmp_path_factory):
    out = tmp_path_factory.mktemp("anomaly") / "model"
    train, _ = views(splits, FEATURES)
    ANOMALY.train(train, out, TrainingConfig(seed=7))
    return out


def test_stored_as_plain_arrays_and_json(trained):
    assert sorted(p.name for p in trained.iterdir()) == ["anomaly_model.npz", "model_card.json"]
    with np.load(trained / MODEL_FILE, allow_pickle=False) as data:  # no object arrays: nothing runs on load
        assert "if_left" in data.files and "svm_vectors" in data.files and "pca_components" in data.files
    card = read_card(trained)
    assert card["detectors"] == ["isolation_forest", "one_class_svm", "local_outlier_factor", "zscore",
                                 "hotelling_t2", "spe_q", "autoencoder"]
    assert card["train_normal_rows"] == 1800, "rows labelled anomalous never fit a detector"


@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_runtime_scores_exactly_like_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(600, 5))
    probe = rng.normal(size=(200, 5)) * 2
    arrays, forest = _fit_isolation_forest(z, seed)
    svm_arrays, svm = _fit_one_class_svm(z, 0.05)
    lof_arrays, lof = _fit_lof(z)
    from pdm_pipeline.families.anomaly.runtime import _IsolationForest, _LocalOutlierFactor, _OneClassSVM

    np.testing.assert_allclose(_IsolationForest(arrays)(probe), -forest.score_samples(probe), rtol=1e-10)
    np.testing.assert_allclose(_OneClassSVM(svm_arrays)(probe), -svm.score_samples(probe), rtol=1e-9)
    np.testing.assert_allclose(_LocalOutlierFactor(lof_arrays)(probe), -lof.score_samples(probe), rtol=1e-9)


def test_pca_q_sees_a_broken_correlation_that_zscore_misses(trained, splits):
    """A row whose sensors each stay in range but break their usual relation: large Q, ordinary max |z|."""
    runtime = load(trained, read_card(trained))
    normal = splits["test"].loc[splits["test"][LABEL] == 0, runtime.inputs].to_numpy(dtype=float)[:50]
    z = runtime.standardized(normal)
    components = runtime._pca.components
    residual = np.eye(z.shape[1])[0] - components.T @ components[:, 0]  # off the principal plane
    residual /= np.linalg.norm(residual)
    rows = (z + 2.0 * residual) * runtime.scale + runtime.mean
    before, after = runtime.raw_scores(normal), runtime.raw_scores(rows)
    assert np.median(after["spe_q"]) > 3 * np.median(before["spe_q"])
    assert np.median(after["hotelling_t2"]) < 1.5 * np.median(before["hotelling_t2"])
    assert np.median(after["zscore"]) < 1.5 * np.median(before["zscore"]) + 2.0


def test_autoencoder_reconstructs_normal_rows_better_than_anomalies(trained, splits):
    runtime = load(trained, read_card(trained))
    test = splits["test"]
    scores = runtime.raw_scores(test[runtime.inputs].to_numpy(dtype=float))["autoencoder"]
    assert np.median(scores[test[LABEL] == 1]) > 2 * np.median(scores[test[LABEL] == 0])


def test_weights_come_from_val_auc_and_the_threshold_from_val_normal_rows(trained, splits):
    card = read_card(trained)
    assert card["weight_rule"] == "val ROC-AUC above chance against failure_status"
    for name, weight in card["weights"].items():
        assert weight == pytest.approx(max(0.0, card["val_auc"][name] - 0.5))
    runtime = load(trained, card)
    val = splits["val"]
    scores = runtime.score(val[runtime.inputs].to_numpy(dtype=float))
    normal = (val[LABEL] == 0).to_numpy()
    assert card["threshold"] == pytest.approx(conformal_threshold(scores[ENSEMBLE].to_numpy()[normal], 0.05))


def test_equal_weights_without_labelled_anomalies_in_val(splits, tmp_path):
    unlabelled = {s: f.drop(columns=[LABEL]) for s, f in splits.items()}
    train, _ = views(unlabelled, FEATURES)
    ANOMALY.train(train, tmp_path / "m", TrainingConfig())
    card = read_card(tmp_path / "m")
    assert card["weight_rule"].startswith("equal weights") and set(card["weights"].values()) == {1.0}


def test_rows_labelled_anomalous_never_fit_or_calibrate(splits, tmp_path):
    """Wild rows marked anomaly_window=1 in train and val change neither the reference scores nor the threshold."""
    base = {s: f.drop(columns=[LABEL]).assign(**{EVAL_ANOMALY: 0}) for s, f in splits.items()}
    wild = {s: f.copy() for s, f in base.items()}
    for split in ("train", "val"):
        rows = wild[split].index[::50]
        wild[split].loc[rows, FEATURES] = 1e3
        wild[split].loc[rows, EVAL_ANOMALY] = 1
    without = {s: f.loc[f[EVAL_ANOMALY] == 0] for s, f in wild.items()}  # the same rows, wild ones removed
    cards, arrays = {}, {}
    for name, data in (("without", without), ("wild", wild)):
        train, _ = views(data, FEATURES)
        ANOMALY.train(train, tmp_path / name, TrainingConfig(seed=3))
        cards[name] = read_card(tmp_path / name)
        with np.load(tmp_path / name / MODEL_FILE) as npz:
            arrays[name] = {k: npz[k] for k in ("mean", "scale", "ref_isolation_forest")}
    assert cards["wild"]["train_normal_rows"] == cards["without"]["train_normal_rows"] == 1960
    assert cards["wild"]["val_normal_rows"] == cards["without"]["val_normal_rows"]
    # Per-detector thresholds come from val normal rows only (the ensemble's also depends on the val weights,
    # which the labelled anomalies legitimately inform).
    for name, value in cards["without"]["detector_thresholds"].items():
        assert cards["wild"]["detector_thresholds"][name] == pytest.approx(value)
    for key in arrays["wild"]:
        np.testing.assert_allclose(arrays["wild"][key], arrays["without"][key])


def test_conformal_threshold_holds_with_few_rows():
    scores = np.arange(1, 20, dtype=float)  # n = 19: ceil(20 * 0.95) = 19 -> the largest
    assert conformal_threshold(scores, 0.05) == 19.0
    assert conformal_threshold(np.arange(1, 101, dtype=float), 0.05) == 96.0
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(200):  # expected false-alarm rate on new normal rows stays <= contamination
        calibration, fresh = rng.normal(size=40), rng.normal(size=200)
        rates.append(np.mean(fresh >= conformal_threshold(calibration, 0.1)))
    assert np.mean(rates) <= 0.1


def test_debounced_alarm_needs_consecutive_rows_and_turns_off():
    above = np.array([0, 1, 0, 1, 1, 1, 1, 0, 1, 0, 0, 0, 1], dtype=bool)
    assert debounce(above, None, 3, 3).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    units = np.array([0] * 6 + [1] * 7)
    assert debounce(above, units, 2, 2).tolist()[6:] == [0, 0, 0, 0, 0, 0, 0], "a new unit starts with the alarm off"
    # Causal: the alarm at row t never depends on later rows.
    for t in range(len(above)):
        assert debounce(above[: t + 1], None, 3, 3)[-1] == debounce(above, None, 3, 3)[t]
    # Rows it cannot see (a sensor silent: fill values score as normal) neither clear the alarm nor break a run
    on = np.array([1, 1, 1, 0, 0, 0, 0, 1], dtype=bool)
    blind = np.array([1, 1, 1, 0, 0, 0, 1, 1], dtype=bool)
    assert debounce(on, None, 3, 3).tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    assert debounce(on, None, 3, 3, seen=blind).tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    split = np.array([1, 0, 1, 1], dtype=bool)  # a run of 3 seen rows above, one unseen row in the middle
    assert debounce(split, None, 3, 3, seen=np.array([1, 0, 1, 1], dtype=bool)).tolist() == [0, 0, 0, 1]


def test_event_metrics_count_incidents_and_false_alarms():
    truth = np.array([0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0])
    flags = np.array([0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 1, 1])
    assert events(truth) == [(1, 4), (7, 9)]
    m = event_metrics(truth, flags, normal_days=2.0)
    assert (m["events_total"], m["events_found"], m["false_alarm_events"]) == (2, 1, 2)
    assert m["event_recall"] == 0.5 and m["false_alarms_per_day"] == 1.0 and m["mean_detection_delay_rows"] == 1


def test_an_alarm_stuck_on_over_normal_rows_counts_false_alarms():
    """An alarm on from the first test row to the last touched an anomaly, so it counted 0 false-alarm events: an
    always-on detector looked free of false alarms at the event level. Each stretch of normal rows an alarm stays on
    over is a false alarm now, except the alarm clearing after an anomaly."""
    truth = np.array([0, 0, 1, 1, 0, 0, 1, 0, 0])
    for split in (truth, truth[2:], truth[:-2], truth[2:-2]):  # starting normal or anomalous, ending either way
        always = np.ones(len(split), dtype=bool)
        m = event_metrics(split, always, normal_days=1.0)
        assert m["false_alarm_events"] >= 1 and m["false_alarms_per_day"] > 0, split
        assert m["events_found"] == m["events_total"] == 2
    assert event_metrics(truth, np.ones(len(truth)))["false_alarm_events"] == 3  # lead-in, between, never cleared

    from pdm_pipeline.families.anomaly.events import false_alarm_events

    t = np.array([0, 0, 1, 1, 0, 0, 0, 0])
    assert false_alarm_events(t, np.array([0, 0, 1, 1, 1, 0, 0, 0])) == 0  # on with the anomaly, clears after it
    assert false_alarm_events(t, np.array([0, 1, 1, 1, 1, 0, 0, 0])) == 1  # raised before the anomaly began
    assert false_alarm_events(t, np.array([0, 0, 1, 1, 1, 1, 1, 1])) == 1  # never seen to clear
    assert false_alarm_events(t, np.array([1, 0, 0, 0, 0, 1, 1, 0])) == 2  # touching no anomaly (one on at row 0)
    bridge = np.array([0, 1, 1, 0, 0, 1, 1, 0])
    assert false_alarm_events(bridge, np.array([0, 1, 1, 1, 1, 1, 1, 0])) == 1  # on between two anomalies
    # per unit: an alarm that ends with its unit's data was not seen to clear; the next unit's alarm is its own
    units = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert false_alarm_events(np.array([0, 1, 0, 0, 1, 0, 0, 0]), np.ones(8), units) == 3
    assert false_alarm_events(np.array([0, 1, 0, 0, 1, 0, 0, 0]), np.array([0, 1, 1, 0, 1, 1, 0, 0]), units) == 0


def test_evaluation_point_and_event_metrics_with_baselines_and_pictures(trained, splits):
    _, test = views(splits, FEATURES)
    evaluation = ANOMALY.evaluate(trained, test)
    m = evaluation.metrics
    assert m["roc_auc"] > 0.9 and m["f1"] > evaluation.baseline["f1"]
    assert m["missed_alarm_rate"] == pytest.approx(1 - m["recall"])
    assert m["events_total"] == 5 and m["event_recall"] >= 0.8
    assert "false_alarms_per_day" in m
    assert 0 < m["single_row_latency_ms"] < 50
    assert evaluation.details["always_anomalous_f1"] == pytest.approx(2 * 0.1 / 1.1)
    assert_picture(evaluation.pictures["anomaly_score_over_time"])
    assert "| hotelling_t2 |" in evaluation.pictures["anomaly_detector_metrics"]


def test_counts_are_whole_numbers_in_the_dagster_metadata_and_floats_in_mlflow(trained, splits):
    """events_total, events_found, false_alarm_events (and a gate's count of constant sensors) were recorded as
    floats: the evaluation asset's metadata showed 5.0 events. Counts are ints there now; MLflow keeps floats."""
    import dagster as dg

    from pdm_pipeline.core.gates import check_no_constant_sensor
    from pdm_pipeline.core.tracking import finite_metrics
    from pdm_pipeline.defs.assets.models import evaluation_metadata
    from pdm_pipeline.defs.checks.outcomes import check_result
    from pdm_pipeline.families.base import TrainedModel

    _, test = views(splits, FEATURES)
    evaluation = ANOMALY.evaluate(trained, test)
    metadata = dg.Output(None, metadata=evaluation_metadata(evaluation, TrainedModel("anomaly", "m", trained))).metadata
    for count in ("events_total", "events_found", "false_alarm_events"):
        assert isinstance(metadata[count], dg.IntMetadataValue), (count, metadata[count])
        assert metadata[count].value == evaluation.metrics[count] and type(evaluation.metrics[count]) is int
    assert metadata["events_total"].value == 5
    assert isinstance(metadata["f1"], dg.FloatMetadataValue) and isinstance(metadata["event_recall"], dg.FloatMetadataValue)
    logged = finite_metrics(evaluation.flat_metrics(), "test_")
    assert type(logged["test_events_total"]) is float and logged["test_events_total"] == 5.0

    frame = splits["train"].assign(stuck=1.0)
    check = check_result(check_no_constant_sensor({"train": frame}, (*FEATURES, "stuck")))
    assert isinstance(check.metadata["value"], dg.IntMetadataValue) and check.metadata["value"].value == 1


def test_runtime_predict_gives_score_and_debounced_flag(trained, splits):
    runtime = load(trained, read_card(trained))
    out = runtime.predict(splits["test"][runtime.inputs].to_numpy(dtype=float))
    assert set(out) == {ANOMALY_SCORE, ANOMALY_FLAG}
    raw_above = out[ANOMALY_SCORE] >= runtime.threshold
    assert out[ANOMALY_FLAG].sum() <= raw_above.sum() + 0, "debouncing only removes isolated flags here"


def test_too_few_normal_rows_is_a_skip_with_the_count(splits, tmp_path):
    few = {**splits, "train": splits["train"].iloc[:40]}
    train, _ = views(few, FEATURES)
    with pytest.raises(ModelSkipped, match=r"\d+ normal train rows .* at least 50"):
        ANOMALY.train(train, tmp_path / "m", TrainingConfig())


def test_a_threshold_set_on_few_normal_rows_warns(trained, splits, tmp_path):
    """30 normal val rows at contamination 0.05: the conformal threshold is their largest score, 1.5 rows were
    expected above it, and the gate anomaly_threshold_support says so (it said nothing). 450 rows pass it."""
    from pdm_pipeline.core.config import GateSettings
    from pdm_pipeline.core.gates import quality_gates

    def support(model_dir, test) -> tuple[float, bool]:
        metrics = ANOMALY.evaluate(model_dir, test).metrics
        (gate,) = [g for g in quality_gates("anomaly", metrics, GateSettings()) if g.name == "anomaly_threshold_support"]
        return metrics["threshold_expected_exceedances"], gate.passed

    _, test = views(splits, FEATURES)
    assert support(trained, test) == (pytest.approx(450 * 0.05), True)
    val = splits["val"]
    few = {**splits, "val": pd.concat([val.loc[val[LABEL] == 0].iloc[:30], val.loc[val[LABEL] == 1]])}
    train, test = views(few, FEATURES)
    ANOMALY.train(train, tmp_path / "few", TrainingConfig(seed=7))
    assert read_card(tmp_path / "few")["threshold_rows"] == 30
    assert support(tmp_path / "few", test) == (pytest.approx(1.5), False)


def test_select_anomaly_inputs_takes_raw_values_and_the_shortest_window():
    names = ["a", "b", "a__mean_w6", "a__std_w6", "a__max_w6", "a__mean_w36", "b__std_w6", "b__slope_w6"]
    assert select_anomaly_inputs(names) == ["a", "b", "a__mean_w6", "a__std_w6", "b__std_w6"]
    assert select_anomaly_inputs(["x__foo", "y__bar"]) == ["x__foo", "y__bar"]


def test_loading_the_runtime_imports_no_scikit_learn(trained):
    """The edge loads the ensemble with numpy alone."""
    code = (
        "import sys, json; from pathlib import Path; from pdm_pipeline.families.anomaly.runtime import load_dir\n"
        f"r = load_dir(Path({str(trained)!r})); import numpy as np\n"
        "r.predict(np.zeros((3, len(r.inputs))))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'autogluon', 'dagster'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []
    assert not math.isnan(0.0)
