"""Anomaly ensemble: real scikit-learn detectors on small deterministic data made here."""

from __future__ import annotations

import json
import joblib
import numpy as np
import pandas as pd
import pytest

from pdm_pipeline.core.anomaly import (
    CARD_FILE,
    DETECTORS,
    ENSEMBLE,
    MODEL_FILE,
    AnomalyEnsemble,
    AnomalyInputError,
    AnomalyModelResult,
    evaluate_anomaly_detector,
    load_anomaly_model,
    select_anomaly_inputs,
    train_anomaly_detector,
)
from pdm_pipeline.core.config import TrainingConfig

FEATURES = [f"f{i}" for i in range(8)]
# Fixed mixing matrix: correlated normal features, the same in every split.
MIX = np.random.default_rng(123).normal(scale=0.5, size=(8, 8)) + np.eye(8)


def make_split(n: int, seed: int, *, with_label: bool = True) -> pd.DataFrame:
    """Gaussian normal rows; the last 10 rows of every 100 are labeled 1 and drift away (shift + more noise)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES))) @ MIX
    label = (np.arange(n) % 100 >= 90).astype(np.int8)
    bad = label == 1
    X[bad, :4] += 2.5
    X[bad] += rng.normal(scale=1.5, size=(int(bad.sum()), len(FEATURES)))
    frame = pd.DataFrame(X.astype(np.float32), columns=FEATURES)
    frame["timestamp"] = pd.date_range("2024-01-01", periods=n, freq="h")
    frame["unit_id"] = "u1"
    if with_label:
        frame["failure_status"] = label
    return frame


def quiet(_: str) -> None:
    """A log sink for tests."""


def normal(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.loc[frame["failure_status"] == 0]


@pytest.fixture(scope="module")
def splits() -> dict[str, pd.DataFrame]:
    return {"train": make_split(2000, 1), "val": make_split(500, 2), "test": make_split(500, 3)}


@pytest.fixture(scope="module")
def trained(splits, tmp_path_factory) -> AnomalyModelResult:
    out = tmp_path_factory.mktemp("anomaly")
    return train_anomaly_detector(splits["train"], splits["val"], FEATURES, out, TrainingConfig(seed=7), log=quiet)


@pytest.fixture(scope="module")
def model(trained) -> AnomalyEnsemble:
    return load_anomaly_model(trained.path)


def test_result_and_files(trained, splits):
    assert trained.detectors == list(DETECTORS)
    assert trained.feature_names == FEATURES
    assert trained.n_train_normal == int((splits["train"]["failure_status"] == 0).sum())
    assert trained.contamination == 0.05
    assert 0 < trained.size_mb < 5
    card = json.loads((trained.path / CARD_FILE).read_text())
    assert card["threshold"] == trained.threshold
    assert card["features"] == FEATURES
    assert card["train_normal_rows"] == trained.n_train_normal
    assert set(card["detectors"]) == set(DETECTORS)
    assert set(card["scaler"]["mean"]) == set(FEATURES)
    assert card["sklearn_version"]
    assert (trained.path / MODEL_FILE).is_file()


def test_fitted_only_on_normal_train_rows(trained, splits, tmp_path):
    """Extreme values in train rows labeled 1 change nothing: those rows are never seen by the detectors."""
    poisoned = splits["train"].copy()
    poisoned.loc[poisoned["failure_status"] == 1, FEATURES] = 1e6
    other = train_anomaly_detector(poisoned, splits["val"], FEATURES, tmp_path, TrainingConfig(seed=7), log=quiet)
    test = splits["test"]
    pd.testing.assert_frame_equal(
        load_anomaly_model(other.path).score(test), load_anomaly_model(trained.path).score(test)
    )
    assert other.threshold == trained.threshold


def test_scores_are_oriented_higher_is_more_anomalous(model):
    typical = pd.DataFrame([np.zeros(len(FEATURES))], columns=FEATURES)
    far_out = pd.DataFrame([np.full(len(FEATURES), 8.0)], columns=FEATURES)
    scores = model.score(pd.concat([typical, far_out], ignore_index=True))
    assert list(scores.columns) == [*DETECTORS, ENSEMBLE]
    for name in [*DETECTORS, ENSEMBLE]:
        assert scores.loc[1, name] > scores.loc[0, name], name
        assert 0.0 <= scores.loc[0, name] <= 1.0 and 0.0 <= scores.loc[1, name] <= 1.0
    raw_typical, raw_far = model.raw_scores(typical), model.raw_scores(far_out)
    for name in DETECTORS:
        assert raw_far[name][0] > raw_typical[name][0], name
    assert model.predict(far_out).tolist() == [1]
    assert model.predict(typical).tolist() == [0]


def test_ensemble_is_mean_of_normalised_detector_scores(model, splits):
    scores = model.score(splits["test"])
    np.testing.assert_allclose(scores[ENSEMBLE], scores[list(DETECTORS)].mean(axis=1))
    np.testing.assert_array_equal(model.predict(splits["test"]), (scores[ENSEMBLE] >= model.threshold).astype(int))


def test_isolation_score_matches_sklearn(model, splits):
    Z = model.standardized(splits["test"])
    np.testing.assert_allclose(model.isolation_score(Z), -model.isolation_forest.score_samples(Z), rtol=0, atol=1e-12)


def test_threshold_is_val_normal_quantile_and_ignores_test(trained, model, splits):
    val_scores = model.score(normal(splits["val"]))
    assert trained.threshold == pytest.approx(np.quantile(val_scores[ENSEMBLE], 0.95), abs=1e-12)
    assert model.threshold == trained.threshold
    for name in DETECTORS:
        assert model.detector_thresholds[name] == pytest.approx(np.quantile(val_scores[name], 0.95), abs=1e-12)
    first = evaluate_anomaly_detector(trained, splits["test"])
    shifted = splits["test"].copy()
    shifted[FEATURES] += 3.0
    second = evaluate_anomaly_detector(trained, shifted)
    assert first.details["threshold"] == second.details["threshold"] == trained.threshold
    assert load_anomaly_model(trained.path).threshold == trained.threshold
    assert second.metrics["false_alarm_rate"] > first.metrics["false_alarm_rate"]


def test_val_false_alarm_rate_follows_contamination(trained, splits, tmp_path):
    assert trained.val_metrics["val_false_alarm_rate"] == pytest.approx(0.05, abs=0.015)
    for name in DETECTORS:
        assert trained.val_metrics[f"val_false_alarm_rate_{name}"] == pytest.approx(0.05, abs=0.015)
    looser = train_anomaly_detector(
        splits["train"], splits["val"], FEATURES, tmp_path, TrainingConfig(seed=7, contamination=0.15), log=quiet
    )
    assert looser.val_metrics["val_false_alarm_rate"] == pytest.approx(0.15, abs=0.02)
    assert looser.threshold < trained.threshold
    flagged = load_anomaly_model(looser.path).predict(normal(splits["val"]))
    assert flagged.mean() == pytest.approx(looser.val_metrics["val_false_alarm_rate"])


def test_evaluation_on_injected_anomalies(trained, splits):
    evaluation = evaluate_anomaly_detector(trained.path, splits["test"])
    assert evaluation.model_type == "anomaly" and evaluation.skipped_reason is None
    assert evaluation.details["truth_column"] == "failure_status"
    assert evaluation.metrics["roc_auc"] > 0.85
    assert evaluation.metrics["pr_auc"] > 0.5
    for name in DETECTORS:
        assert evaluation.details["per_detector"][name]["roc_auc"] > 0.7, name
    assert evaluation.metrics["recall"] > evaluation.baseline["recall"]
    assert evaluation.metrics["f1"] > evaluation.baseline["f1"]
    cm = evaluation.details["confusion_matrix"]
    assert evaluation.metrics["false_alarm_rate"] == pytest.approx(cm["fp"] / (cm["fp"] + cm["tn"]))
    assert evaluation.metrics["precision"] == pytest.approx(cm["tp"] / (cm["tp"] + cm["fp"]))
    assert evaluation.baseline["roc_auc"] == 0.5
    assert evaluation.baseline["false_alarm_rate"] == trained.contamination
    assert "random" in evaluation.baseline_name
    assert evaluation.metrics["single_row_latency_ms"] > 0
    assert "data:image/png;base64," in evaluation.pictures["anomaly_score_over_time"]
    table = evaluation.pictures["anomaly_detector_metrics"]
    for name in [*DETECTORS, ENSEMBLE, "baseline"]:
        assert f"| {name}" in table
    assert all(np.isfinite(v) for v in evaluation.flat_metrics().values())


def test_evaluation_truth_prefers_anomaly_window(trained, splits):
    test = splits["test"].copy()
    window = np.zeros(len(test), dtype=np.int8)
    window[100:130] = 1
    test["anomaly_window"] = window
    evaluation = evaluate_anomaly_detector(trained, test)
    assert evaluation.details["truth_column"] == "anomaly_window"
    assert evaluation.details["n_positive"] == 30
    no_truth = evaluate_anomaly_detector(trained, splits["test"].drop(columns=["failure_status"]))
    assert no_truth.skipped_reason and "anomaly_window" in no_truth.skipped_reason and not no_truth.metrics


def test_fifty_thousand_train_rows(tmp_path):
    big = make_split(50_000, 11)
    result = train_anomaly_detector(big, make_split(500, 12), FEATURES, tmp_path, TrainingConfig(), log=quiet)
    card = json.loads((tmp_path / CARD_FILE).read_text())
    assert result.n_train_normal == 45_000
    assert card["detectors"]["one_class_svm"]["rows"] == 4_000
    assert card["detectors"]["local_outlier_factor"]["rows"] == 5_000
    assert card["reference_rows"] == 2_000
    assert result.size_mb < 5
    evaluation = evaluate_anomaly_detector(result, make_split(500, 13))
    assert evaluation.metrics["roc_auc"] > 0.85


def test_save_load_round_trip(trained, model, splits, tmp_path):
    test = splits["test"]
    again = load_anomaly_model(trained.path / MODEL_FILE)
    pd.testing.assert_frame_equal(again.score(test), model.score(test))
    joblib.dump(again, tmp_path / MODEL_FILE)
    pd.testing.assert_frame_equal(load_anomaly_model(tmp_path).score(test), model.score(test))
    # The in-memory model measured these before saving; the loaded one reproduces them exactly.
    flags = model.flags(model.score(normal(splits["val"])))
    assert flags[ENSEMBLE].mean() == trained.val_metrics["val_false_alarm_rate"]
    with pytest.raises(FileNotFoundError, match="no anomaly model"):
        load_anomaly_model(tmp_path / "missing")
    joblib.dump({"not": "a model"}, tmp_path / "other.joblib")
    with pytest.raises(TypeError, match="not an AnomalyEnsemble"):
        load_anomaly_model(tmp_path / "other.joblib")


def test_missing_feature_columns_are_named(model, splits, tmp_path):
    with pytest.raises(AnomalyInputError, match=r"missing 2 feature column.*'f3'.*'f5'"):
        model.score(splits["test"].drop(columns=["f3", "f5"]))
    with pytest.raises(AnomalyInputError, match=r"machine 'm-7'.*val frame is missing feature columns \['f6'\]"):
        train_anomaly_detector(
            splits["train"], splits["val"].drop(columns=["f6"]), FEATURES, tmp_path, TrainingConfig(), log=quiet,
            machine_id="m-7",
        )
    with pytest.raises(AnomalyInputError, match=r"reserved columns \['rul'\]"):
        train_anomaly_detector(
            splits["train"], splits["val"], [*FEATURES, "rul"], tmp_path, TrainingConfig(), log=quiet
        )
    with pytest.raises(AnomalyInputError, match=r"train frame has 0 normal rows"):
        train_anomaly_detector(
            splits["train"].assign(failure_status=1), splits["val"], FEATURES, tmp_path, TrainingConfig(), log=quiet
        )


def test_missing_values_are_imputed(model, splits):
    test = splits["test"].copy()
    test.loc[:9, "f2"] = np.nan
    test.loc[10:19, "f4"] = np.inf
    scores = model.score(test)
    assert np.isfinite(scores.to_numpy()).all()


def test_no_label_explicit_inputs_and_constant_inputs(splits, tmp_path):
    train = splits["train"].drop(columns=["failure_status"]).assign(flat=1.0)
    val = splits["val"].drop(columns=["failure_status"]).assign(flat=1.0)
    logged: list[str] = []
    result = train_anomaly_detector(
        train, val, [*FEATURES, "flat"], tmp_path, TrainingConfig(), log=logged.append, inputs=["f0", "f1", "flat"]
    )
    assert result.n_train_normal == len(train)
    assert result.feature_names == ["f0", "f1"]
    assert any("flat" in line and "constant" in line for line in logged)
    assert list(load_anomaly_model(tmp_path).score(val.drop(columns=FEATURES[2:])).columns) == [*DETECTORS, ENSEMBLE]


def test_select_anomaly_inputs():
    names = [
        "temp", "vib", "temp__mean_30min", "temp__std_30min", "temp__rms_30min", "temp__mean_6h",
        "vib__band_high_24h", "vib__std_30min", "vib__slope_30min",
    ]
    assert select_anomaly_inputs(names) == ["temp", "vib", "temp__mean_30min", "temp__std_30min", "vib__std_30min"]
    hourly = ["a", "a__mean_1h", "a__std_1h", "a__mean_24h", "a__std_24h"]
    assert select_anomaly_inputs(hourly) == ["a", "a__mean_1h", "a__std_1h"]
    assert select_anomaly_inputs(FEATURES) == FEATURES
    assert select_anomaly_inputs(["x__q"]) == ["x__q"]
