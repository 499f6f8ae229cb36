"""Rows without time order (AI4I-like independent processes): the classifier is cross-fitted over train + val,
ships the mean of its fold boosters and takes its threshold from out-of-fold probabilities; a fleet's pooled
model is compared with each machine's own on that machine's out-of-fold rows. Real AutoGluon, small data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pdm_pipeline.core import paths
from pdm_pipeline.core.config import TrainingConfig
from pdm_pipeline.core.importer import import_ai4i2020
from pdm_pipeline.families.base import CARD_FILE, read_card
from pdm_pipeline.families.boosters import BaggedNativeModel, NativeModel
from pdm_pipeline.families.classifier.runtime import ClassifierRuntime, platt
from pdm_pipeline.families.classifier.train import OUT_OF_FOLD_FILE, OUT_OF_FOLD_ROWS, f1_optimal_threshold

pytestmark = pytest.mark.slow

CLASSIFIER_ONLY = TrainingConfig(excluded_models=("regression", "anomaly", "timeseries"), time_limit_s=20)


def _lookalike(path: Path, rows: int = 1800, seed: int = 5) -> Path:
    """AI4I-shaped rows whose failures follow physical rules (power out of band, too little heat dissipation),
    which trees find only through products and differences of the measurements; 1 % of labels flipped."""
    rng = np.random.default_rng(seed)
    air = rng.normal(300, 2, rows)
    process = air + rng.normal(10, 1, rows)
    speed = rng.normal(1540, 180, rows)
    torque = rng.normal(40, 10, rows)
    power = torque * speed * 2 * np.pi / 60
    failure = ((power < 3500) | (power > 9000) | ((process - air < 8.6) & (speed < 1380))).astype(int)
    flip = rng.random(rows) < 0.01
    failure[flip] = 1 - failure[flip]
    frame = pd.DataFrame({
        "UDI": np.arange(1, rows + 1), "Product ID": [f"X{i}" for i in range(rows)],
        "Type": rng.choice(["L", "M", "H"], rows, p=[0.5, 0.3, 0.2]),
        "Air temperature [K]": air, "Process temperature [K]": process, "Rotational speed [rpm]": speed,
        "Torque [Nm]": torque, "Tool wear [min]": rng.integers(0, 250, rows), "Machine failure": failure,
        **{flag: np.zeros(rows, dtype=int) for flag in ("TWF", "HDF", "PWF", "OSF", "RNF")},
    })
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory):
    from pdm_pipeline.core.fleet import train_fleet
    from pdm_pipeline.core.pipeline import run_machine

    tmp = tmp_path_factory.mktemp("independent")
    root = tmp / "data"
    ids = import_ai4i2020(_lookalike(tmp / "ai4i.csv"), root)
    fleet = train_fleet(root, "ai4i", CLASSIFIER_ONLY)
    # A machine of the same type that joined after the fleet was trained: the pooled model never saw it.
    shutil.copytree(paths.machine_dir(root, "ai4i_H"), paths.machine_dir(root, "ai4i_new"))
    metadata = json.loads(paths.metadata_path(root, "ai4i_H").read_text())
    paths.metadata_path(root, "ai4i_new").write_text(json.dumps({**metadata, "machine_id": "ai4i_new"}))
    runs = {m: run_machine(root, m, CLASSIFIER_ONLY) for m in [*ids, "ai4i_new"]}
    return root, fleet, runs


def test_a_cross_fitted_model_is_the_mean_of_its_fold_boosters():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] + x[:, 2] > 0).astype(int)
    import tempfile

    import lightgbm

    with tempfile.TemporaryDirectory() as tmp:
        members = []
        for i, columns in enumerate(([0, 2], [0, 1, 2])):
            booster = lightgbm.train({"objective": "binary", "verbose": -1, "seed": i},
                                     lightgbm.Dataset(x[:, columns], y), num_boost_round=20)
            booster.save_model(f"{tmp}/fold_{i}.txt")
            members.append({"file": f"fold_{i}.txt", "columns": columns})
        bag = BaggedNativeModel("lightgbm", Path(tmp), members, classifier=True)
        expected = np.mean([NativeModel("lightgbm", Path(tmp) / m["file"], True).predict(x[:, m["columns"]])
                            for m in members], axis=0)
        np.testing.assert_allclose(bag.predict(x), expected, rtol=0, atol=1e-12)


def test_the_pooled_model_is_cross_fitted_and_its_out_of_fold_rows_name_their_machine(fleet_run):
    root, fleet, _ = fleet_run
    assert fleet.release_id and "classification" in fleet.models, fleet.skipped
    assert fleet.inputs == "25 shared features, 75 member copies (3 x 25), 3 machine columns"
    model_dir = paths.fleet_dir(root, "ai4i") / fleet.release_id / "classification"
    card = json.loads((model_dir / CARD_FILE).read_text())
    assert card["bag"]["folds"] == 5 and len(card["bag"]["members"]) == 5
    with np.load(model_dir / OUT_OF_FOLD_FILE) as oof:
        assert not np.isnan(oof["probability"]).any(), "every train + val row got an out-of-fold probability"
        assert sorted(set(oof["member"].tolist())) == [0, 1, 2]
        threshold, f1 = f1_optimal_threshold(oof["truth"], oof["probability"])
    calibration = card["calibration"]  # fitted on those out-of-fold rows; the threshold moved with it
    assert calibration["method"] == "platt" and calibration["fitted_on"] == OUT_OF_FOLD_ROWS
    assert calibration["raw_threshold"] == pytest.approx(threshold) and card["val_metrics"]["f1"] == pytest.approx(f1)
    assert card["threshold"] == pytest.approx(float(platt(np.array([threshold]), calibration)[0]))
    assert "out-of-fold" in card["threshold_source"]


def test_each_machine_compares_pooled_and_own_on_its_out_of_fold_rows_and_beats_the_baseline(fleet_run):
    root, _, runs = fleet_run
    for machine_id, run in runs.items():
        evaluation = run.evaluations["classification"]
        assert evaluation.evaluated, (machine_id, evaluation.skipped_reason or evaluation.failed_reason)
        model_dir = run.release.path / "classification"
        card = read_card(model_dir)
        assert card.get("bag"), f"{machine_id}: rows without time order must be cross-fitted"
        decision = card["pooling"]
        assert decision["compared_on"] == OUT_OF_FOLD_ROWS, decision
        assert decision["fleet"]["machine_in_fleet"] == (machine_id != "ai4i_new")
        assert card["source"] == decision["chosen"]
        assert run.trained["classification"].summary["val_metrics_rows"] == decision["compared_on"], (
            "the val_* figures shown in Dagster and MLflow say which rows they come from")
        runtime = ClassifierRuntime(model_dir, card)
        split_rows = sum(len(run.features.frames[s]) for s in ("train", "val"))
        if card["source"] == "machine":
            with np.load(model_dir / OUT_OF_FOLD_FILE) as oof:
                assert len(oof["truth"]) == split_rows
        else:  # the own model's out-of-fold file does not ship beside the fleet's model
            assert not (model_dir / OUT_OF_FOLD_FILE).exists()
        assert evaluation.metrics["f1"] > evaluation.baseline["f1"], (machine_id, evaluation.metrics)
        test = run.features.frames["test"]
        assert runtime.probability(test[runtime.inputs].to_numpy(dtype=float)).shape == (len(test),)


def test_member_copies_let_a_pooled_model_place_each_members_own_limit(tmp_path):
    """Three members of unequal size (50 / 30 / 20 %) fail when the product of two of five measurements passes a
    limit of their own (its 97th, 95th and 91st percentile over the fleet), or, on every member, when one
    measurement falls below a shared limit. The inputs are the pipeline's for rows without time order
    (`bench_rules.inputs`: the measurements, their pairwise products and differences). With only one-hot machine columns the pooled model must split
    on the machine below the product's split; with each member's copy of the features (fleet.member_copies) one
    split places a member's limit. Judged on 100,000 unseen rows per seed: rows misclassified at the val
    F1-optimal threshold."""
    from pdm_pipeline.core.bench_rules import inputs
    from pdm_pipeline.core.schema import LABEL
    from pdm_pipeline.families import tabular

    shares = np.array([0.5, 0.3, 0.2])

    def rows(rng: np.random.Generator, n: int, copied: bool) -> pd.DataFrame:
        member = rng.choice(3, size=n, p=shares)
        x = rng.normal([300, 40, 10, 0, 50], [2, 10, 1, 1, 20], size=(n, 5))
        limits = np.array([17_600.0, 16_900.0, 16_000.0])  # ~97th, 95th, 91st percentile of the product
        failed = (x[:, 0] * x[:, 1] > limits[member]) | (x[:, 2] - x[:, 3] < 7.3)
        return inputs(x, member, 3, copied).assign(**{LABEL: failed.astype(int)})

    def misclassified(copied: bool, seed: int) -> int:
        rng = np.random.default_rng(seed)
        train, val, test = rows(rng, 6000, copied), rows(rng, 1500, copied), rows(rng, 100_000, copied)
        assert train.filter(like="@").isna().any().any() == copied
        predictor, _ = tabular.fit_predictor(
            train, val, LABEL, "binary", "f1", None, tmp_path / f"ag-{copied}-{seed}",
            TrainingConfig(time_limit_s=20), "limits per member", time_order=False,
        )
        threshold, _ = f1_optimal_threshold(val[LABEL].to_numpy(), predictor.predict_proba(val.drop(columns=[LABEL]))[1].to_numpy())
        flagged = predictor.predict_proba(test.drop(columns=[LABEL]))[1].to_numpy() >= threshold
        truth = test[LABEL].to_numpy() == 1
        return int((flagged != truth).sum())

    one_hot = [misclassified(False, seed) for seed in (0, 1, 2)]
    with_copies = [misclassified(True, seed) for seed in (0, 1, 2)]
    # Measured: 165 / 185 / 86 rows with one-hot columns only, 84 / 177 / 79 with the copies.
    assert all(c < o for c, o in zip(with_copies, one_hot)) and sum(with_copies) < 0.9 * sum(one_hot), (with_copies, one_hot)


def test_a_machine_copy_of_the_pooled_model_fills_in_its_member_copies(fleet_run, tmp_path):
    """The pooled model of rows without time order takes each member's copy of the features; a machine's copy
    of it repeats the machine's own features there and leaves the other members' copies missing, so it predicts
    exactly what the pooled model predicts on that member's rows. A machine that joined later has no copy."""
    from types import SimpleNamespace

    from pdm_pipeline.core.contract import load_machine
    from pdm_pipeline.core.fleet import FLEET_FILE, machine_column, machine_copy, pooled_for, with_member_copies
    from pdm_pipeline.families.boosters import TabularModel

    root, _, runs = fleet_run
    pooled = pooled_for(root, load_machine(root, "ai4i_M"))["classification"]
    described = json.loads((pooled.path / FLEET_FILE).read_text())
    copies = {c: tuple(v) for c, v in described["member_copies"].items()}
    shared = pooled.card["input_columns"][: len(copies) // len(described["machine_columns"])]
    assert copies and set(copies) <= set(pooled.card["input_columns"])
    assert copies[f"{shared[0]}@{machine_column('ai4i_H')}"] == (shared[0], machine_column("ai4i_H"))

    test = runs["ai4i_M"].features.frames["test"]
    frame = test.copy()
    for column in described["machine_columns"]:
        frame[column] = float(column == machine_column("ai4i_M"))
    frame = with_member_copies(frame, copies, machine_column("ai4i_M"))
    expected = TabularModel(pooled.path, pooled.card, classifier=True).predict(
        frame[pooled.card["input_columns"]].to_numpy(dtype=float))

    for machine_id, own_copies in (("ai4i_M", len(shared)), ("ai4i_new", 0)):
        view = SimpleNamespace(machine_id=machine_id, feature_names=list(runs[machine_id].features.feature_names))
        card = machine_copy(pooled, view, tmp_path / machine_id)
        assert len(card["copied_inputs"]) == own_copies
        assert all(source in shared for source in card["copied_inputs"].values())
        missing = [c for c, v in card["constant_inputs"].items() if v is None]
        assert len(missing) == len(copies) - own_copies
        model = TabularModel(tmp_path / machine_id, card, classifier=True)
        assert not set(model.feature_inputs) & set(copies), "callers pass the feature columns only"
        predicted = model.predict(test[model.feature_inputs].to_numpy(dtype=float))
        if machine_id == "ai4i_M":
            np.testing.assert_allclose(predicted, expected, rtol=0, atol=1e-12)
            # The copies matter to this model: left missing, the same rows get other probabilities.
            unfilled = {**card, "copied_inputs": {}, "constant_inputs": {
                **card["constant_inputs"], **dict.fromkeys(card["copied_inputs"])}}
            blind = TabularModel(tmp_path / machine_id, unfilled, classifier=True)
            assert np.abs(blind.predict(test[blind.feature_inputs].to_numpy(dtype=float)) - expected).max() > 1e-3


def test_bench_rules_draws_fleets_whose_members_have_their_own_limits_and_reports_both_fits(tmp_path):
    """`make bench-rules`: the random fleets are reproducible, shift most limits per member (or none with
    shared=True), and the report holds both fits' test F1 on unseen rows of every dataset."""
    from pdm_pipeline.core.bench_rules import markdown, rule_fleet, run_bench_rules

    fleet, again, shared = rule_fleet(3), rule_fleet(3), rule_fleet(3, shared=True)
    assert fleet.rules == again.rules and any(r["shifted"] for r in fleet.rules)
    assert any(len(set(r["limits"])) == fleet.members for r in fleet.rules)
    assert not any(r["shifted"] for r in shared.rules) and all(len(set(r["limits"])) == 1 for r in shared.rules)
    x, member, failed = fleet.sample(np.random.default_rng(0), 20_000)
    assert x.shape == (20_000, fleet.measurements) and set(np.unique(member)) == set(range(fleet.members))
    assert 0.005 < failed.mean() < 0.15

    result = run_bench_rules(tmp_path, datasets=1, first_seed=3, test_rows=5_000)
    row = result["datasets"][0]
    assert 0.3 < row["one_hot_f1"] <= 1 and 0.3 < row["member_copies_f1"] <= 1
    assert result["better"] + result["worse"] <= 1
    assert json.loads((tmp_path / "bench-rules.json").read_text())["datasets"][0]["seed"] == 3
    assert (tmp_path / "bench-rules.md").read_text() == markdown(result)


def test_the_fleet_models_asset_shows_what_the_pooled_models_take(tmp_path):
    """Dagster's fleet_models asset on an AI4I-like fleet: its table names the fleet, the pooled classifier and
    its inputs, member copies included."""
    import dagster as dg

    from pdm_pipeline.defs.assets.fleet import fleet_models
    from pdm_pipeline.defs.resources import DataRootResource, TrainingResource

    root = tmp_path / "data"
    import_ai4i2020(_lookalike(tmp_path / "ai4i.csv", rows=900), root)
    result = dg.materialize([fleet_models], resources={
        "data_root": DataRootResource(data_dir=str(root)),
        "training": TrainingResource(excluded_models=["regression", "anomaly", "timeseries"], time_limit_s=10),
    }, raise_on_error=True)
    metadata = result.asset_materializations_for_node("fleet_models")[0].metadata
    table = metadata["pooled"].value
    assert metadata["fleets"].value == 1 and "| ai4i | ai4i_H, ai4i_L, ai4i_M |" in table
    assert "| classification | 25 shared features, 75 member copies (3 x 25), 3 machine columns |" in table, table
    assert (paths.fleet_dir(root, "ai4i") / "current" / "classification").is_dir()
