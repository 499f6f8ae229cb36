"""Failure classifier and RUL regressor (pdm_pipeline.core.tabular) with real AutoGluon on small data."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score

from pdm_pipeline.core import tabular
from pdm_pipeline.core.config import TrainingConfig
from pdm_pipeline.core.schema import LABEL, RUL, TIMESTAMP, UNIT_ID

FEATURES = [f"sensor_{i}" for i in range(10)]
LIFE_HOURS = 150  # every unit runs 150 hourly rows to failure: RUL 149 .. 0 h
HORIZON_HOURS = 20  # label: fails within the next 20 h (~14 % positives)
RUL_CAP_HOURS = 60.0
UNITS = {"train": 10, "val": 3, "test": 3}
TIME_LIMIT_S = 15
INLINE_PNG = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def make_frames(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Run-to-failure feature frames: two sensors react to wear near failure, one drifts with age, seven are noise.

    Each frame also carries the pass-through columns and a `leak` column equal to the label, which must never
    reach the model because it is not in FEATURES.
    """
    rng = np.random.default_rng(seed)
    frames = {}
    start = pd.Timestamp("2024-01-01")
    for split, n_units in UNITS.items():
        parts = []
        for u in range(n_units):
            rul = np.arange(LIFE_HOURS - 1, -1, -1, dtype=float)
            wear = np.exp(-rul / 25.0)
            x = rng.normal(size=(LIFE_HOURS, len(FEATURES)))
            x[:, 0] = 3.0 * wear + 0.25 * x[:, 0]
            x[:, 1] = -2.0 * wear + 0.25 * x[:, 1]
            x[:, 2] = 1.0 - rul / LIFE_HOURS + 0.05 * x[:, 2]
            part = pd.DataFrame(x, columns=FEATURES)
            part[RUL] = rul
            part[UNIT_ID] = f"{split}_unit_{u}"
            part[TIMESTAMP] = start + pd.to_timedelta(np.arange(LIFE_HOURS) + 1000 * u, unit="h")
            part[LABEL] = (rul <= HORIZON_HOURS).astype(int)
            part["leak"] = part[LABEL].astype(float)
            parts.append(part)
        frames[split] = pd.concat(parts, ignore_index=True)
    return frames


def inline_pngs(markdown: str) -> list[bytes]:
    return [base64.b64decode(b64) for b64 in INLINE_PNG.findall(markdown)]


def assert_picture(markdown: str) -> None:
    images = inline_pngs(markdown)
    assert len(images) == 1, markdown[:200]
    assert images[0].startswith(b"\x89PNG\r\n\x1a\n")


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return make_frames()


@pytest.fixture(scope="module")
def classifier_log() -> list[str]:
    return []


@pytest.fixture(scope="module")
def classifier(frames, tmp_path_factory, classifier_log) -> tabular.TabularModelResult:
    return tabular.train_failure_classifier(
        frames["train"], frames["val"], FEATURES, tmp_path_factory.mktemp("clf"),
        TrainingConfig(time_limit_s=TIME_LIMIT_S), log=classifier_log.append,
    )


@pytest.fixture(scope="module")
def regressor(frames, tmp_path_factory) -> tabular.TabularModelResult:
    return tabular.train_rul_regressor(
        frames["train"], frames["val"], FEATURES, tmp_path_factory.mktemp("reg"),
        TrainingConfig(time_limit_s=TIME_LIMIT_S, rul_cap_hours=RUL_CAP_HOURS), log=lambda _: None,
    )


# ---------------------------------------------------------------------------------------------- classifier


def test_classifier_result_card_and_only_best_model_kept(classifier, classifier_log):
    assert classifier.model_type == "classification"
    assert classifier.preset == "pi"
    assert classifier.best_model in [row["model"] for row in classifier.leaderboard]
    assert classifier.size_mb > 0
    model = tabular.load_tabular_model(classifier.path)
    assert model.predictor.model_names() == [classifier.best_model]
    card = model.card
    assert card["model_type"] == "classification"
    assert card["threshold"] == classifier.threshold
    assert card["feature_names"] == FEATURES
    assert card["val_metrics"] == classifier.val_metrics
    assert card["autogluon_version"].startswith("1.")
    assert card["train_majority_class"] == 0
    assert any(f"threshold {classifier.threshold:.4f}" in m for m in classifier_log)
    assert any(f"best model {classifier.best_model}" in m for m in classifier_log)


def test_only_feature_names_reach_the_predictor(classifier):
    predictor = tabular.load_tabular_model(classifier.path).predictor
    assert sorted(predictor.features()) == sorted(FEATURES)
    assert predictor.label == LABEL


def test_threshold_is_f1_optimal_on_val(classifier, frames):
    val = frames["val"]
    proba = tabular.load_tabular_model(classifier.path).predict_proba(val)
    truth = val[LABEL].to_numpy()
    f1_at = {t: f1_score(truth, proba >= t) for t in np.unique(proba)}
    best_f1 = max(f1_at.values())
    assert classifier.threshold in f1_at
    assert f1_at[classifier.threshold] == pytest.approx(best_f1)
    assert classifier.val_metrics["f1"] == pytest.approx(best_f1)


def test_load_round_trip_gives_the_training_predictions(classifier, frames):
    model = tabular.load_tabular_model(classifier.path)
    proba = model.predict_proba(frames["val"])
    assert proba.shape == (len(frames["val"]),)
    val_ap = average_precision_score(frames["val"][LABEL], proba)
    assert val_ap == pytest.approx(classifier.val_metrics["average_precision"])
    again = tabular.load_tabular_model(classifier.path).predict_proba(frames["test"])
    np.testing.assert_allclose(model.predict_proba(frames["test"]), again)
    np.testing.assert_array_equal(model.predict(frames["test"]), (again >= classifier.threshold).astype(int))


def test_classifier_beats_majority_baseline_on_test(classifier, frames):
    ev = tabular.evaluate_classifier(classifier.path, frames["test"])
    test = frames["test"]
    assert ev.model_type == "classification"
    assert ev.metrics["f1"] > ev.baseline["f1"] + 0.3
    assert ev.baseline["f1"] == 0.0
    assert ev.baseline["roc_auc"] == pytest.approx(0.5)
    assert ev.baseline["pr_auc"] == pytest.approx(test[LABEL].mean())
    assert ev.baseline["accuracy"] == pytest.approx(1 - test[LABEL].mean())
    assert ev.metrics["roc_auc"] > 0.9
    assert ev.metrics["single_row_latency_ms"] > 0
    cm = ev.details["confusion_matrix"]
    assert cm["tp"] + cm["fn"] == int(test[LABEL].sum())
    assert cm["tp"] + cm["fp"] + cm["tn"] + cm["fn"] == len(test)
    assert ev.details["threshold"] == classifier.threshold
    assert ev.metrics["recall"] == pytest.approx(cm["tp"] / (cm["tp"] + cm["fn"]))
    assert set(ev.pictures) == {"confusion_matrix", "precision_recall_curve"}
    for markdown in ev.pictures.values():
        assert_picture(markdown)


def test_evaluate_classifier_accepts_the_result_object(classifier, frames):
    by_result = tabular.evaluate_classifier(classifier, frames["test"])
    by_path = tabular.evaluate_classifier(classifier.path, frames["test"])
    assert by_result.details["confusion_matrix"] == by_path.details["confusion_matrix"]


# ---------------------------------------------------------------------------------------------- regressor


def test_regressor_beats_mean_baseline_and_reports_capped_truth(regressor, frames):
    test = frames["test"]
    ev = tabular.evaluate_regressor(regressor, test)
    assert ev.model_type == "regression"
    assert ev.metrics["rmse"] < 0.5 * ev.baseline["rmse"]
    assert ev.metrics["r2"] > 0.7
    assert "capped" in ev.details["truth"]
    assert ev.details["rul_cap_hours"] == RUL_CAP_HOURS
    # The baseline is the train mean of the CAPPED target, scored against the capped test truth.
    train_mean = float(np.minimum(frames["train"][RUL], RUL_CAP_HOURS).mean())
    truth = np.minimum(test[RUL].to_numpy(), RUL_CAP_HOURS)
    assert ev.details["train_mean_rul"] == pytest.approx(train_mean)
    assert ev.baseline["rmse"] == pytest.approx(np.sqrt(np.mean((train_mean - truth) ** 2)))
    predicted = tabular.load_tabular_model(regressor.path).predict(test)
    assert ev.metrics["rmse"] == pytest.approx(np.sqrt(np.mean((predicted - truth) ** 2)))
    assert ev.metrics["bias"] == pytest.approx(np.mean(predicted - truth))


def test_rul_cap_is_applied_to_the_training_target(regressor, frames):
    model = tabular.load_tabular_model(regressor.path)
    assert regressor.rul_cap_hours == RUL_CAP_HOURS
    assert model.card["rul_cap_hours"] == RUL_CAP_HOURS
    assert model.card["train_max_rul"] == RUL_CAP_HOURS
    predicted = model.predict(frames["val"])
    # True RUL reaches 149 h; a model trained on the uncapped target would predict far above the cap.
    assert frames["val"][RUL].max() > 2 * RUL_CAP_HOURS
    assert predicted.max() <= RUL_CAP_HOURS * 1.05
    assert predicted.min() >= 0.0


def test_regressor_round_trip_and_features(regressor, frames):
    model = tabular.load_tabular_model(regressor.path)
    assert sorted(model.predictor.features()) == sorted(FEATURES)
    assert model.predictor.model_names() == [regressor.best_model]
    assert model.threshold is None
    val_truth = np.minimum(frames["val"][RUL].to_numpy(), RUL_CAP_HOURS)
    val_rmse = np.sqrt(np.mean((model.predict(frames["val"]) - val_truth) ** 2))
    assert val_rmse == pytest.approx(regressor.val_metrics["rmse"])


def test_regressor_bands_and_pictures(regressor, frames):
    ev = tabular.evaluate_regressor(regressor.path, frames["test"])
    bands = ev.details["error_by_rul_band"]
    # The capped range (0-60 h) is too small for the 24/72/168 h bands: quarters of it instead.
    assert [b["band"] for b in bands] == ["0-15 h", "15-30 h", "30-45 h", ">45 h"]
    assert sum(b["count"] for b in bands) == len(frames["test"])
    assert set(ev.pictures) == {"rul_predicted_vs_true", "rul_over_time", "rul_error_by_band"}
    assert_picture(ev.pictures["rul_predicted_vs_true"])
    assert_picture(ev.pictures["rul_over_time"])
    assert ev.pictures["rul_error_by_band"].startswith("| RUL band |")
    assert ev.metrics["single_row_latency_ms"] > 0


def test_evaluating_with_the_wrong_model_type_is_refused(regressor, frames):
    with pytest.raises(TypeError, match="regression model, expected classification"):
        tabular.evaluate_classifier(regressor.path, frames["test"])


# ---------------------------------------------------------------------------------------------- skips and bad input


def test_regressor_skips_without_rul_column(frames, tmp_path):
    train = frames["train"].drop(columns=[RUL])
    with pytest.raises(tabular.ModelSkipped, match=r"RUL column not found in data: the train split has columns \["):
        tabular.train_rul_regressor(train, frames["val"], FEATURES, tmp_path, TrainingConfig(), log=lambda _: None)


@pytest.mark.parametrize("split", ["train", "val"])
def test_classifier_skips_single_class_label(frames, tmp_path, split):
    data = {s: frames[s].copy() for s in ("train", "val")}
    data[split][LABEL] = 0
    with pytest.raises(tabular.ModelSkipped, match=rf"single class \(0\) in the {split} split"):
        tabular.train_failure_classifier(
            data["train"], data["val"], FEATURES, tmp_path, TrainingConfig(), log=lambda _: None
        )
    assert not (Path(tmp_path) / tabular.PREDICTOR_DIR).exists()


def test_reserved_columns_are_refused_as_features(frames, tmp_path):
    with pytest.raises(tabular.TabularInputError, match=r"reserved column\(s\) \['rul'\]"):
        tabular.train_failure_classifier(frames["train"], frames["val"], [*FEATURES, RUL], tmp_path, TrainingConfig())


def test_missing_feature_column_names_split_and_column(frames, tmp_path):
    val = frames["val"].drop(columns=["sensor_3"])
    expected = r"the val split is missing 1 feature column\(s\): \['sensor_3'\]"
    with pytest.raises(tabular.TabularInputError, match=expected):
        tabular.train_rul_regressor(frames["train"], val, FEATURES, tmp_path, TrainingConfig())


def test_non_binary_label_is_refused(frames, tmp_path):
    train = frames["train"].copy()
    train.loc[0, LABEL] = 2
    expected = r"train split has 1 value\(s\) of 'failure_status' other than 0/1"
    with pytest.raises(tabular.TabularInputError, match=expected):
        tabular.train_failure_classifier(train, frames["val"], FEATURES, tmp_path, TrainingConfig())


def test_rul_bands():
    assert tabular.rul_bands(500.0) == [(0.0, 24.0), (24.0, 72.0), (72.0, 168.0), (168.0, float("inf"))]
    assert tabular.rul_bands(100.0) == [(0.0, 24.0), (24.0, 72.0), (72.0, float("inf"))]
    assert tabular.rul_bands(40.0) == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, float("inf"))]
