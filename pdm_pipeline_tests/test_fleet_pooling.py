"""Time-ordered fleets: the pooled classifier and the machine's own are compared on the machine's val rows
(PR-AUC), the better ships with the rule recorded. Real AutoGluon on two small simulated motors."""

from __future__ import annotations

import pytest
from conftest import TINY_ROWS
from sklearn.metrics import average_precision_score

from pdm_pipeline.core.config import TrainingConfig
from pdm_pipeline.core.fleet import train_fleet
from pdm_pipeline.core.pipeline import run_machine
from pdm_pipeline.core.schema import LABEL
from pdm_pipeline.core.simulate import simulate_fleet
from pdm_pipeline.families.base import read_card
from pdm_pipeline.families.classifier.runtime import ClassifierRuntime
from pdm_pipeline.families.classifier.train import MIN_VAL_POSITIVES_TO_CHOOSE

pytestmark = pytest.mark.slow

# One label definition and one feature set for both motors: a horizon, or windows capped by each machine's own
# unit lengths, chosen per machine would not pool.
CONFIG = TrainingConfig(excluded_models=("regression", "anomaly", "timeseries"), time_limit_s=5, horizon=48,
                        window_samples=(6, 36))


def test_pooled_or_own_classifier_is_chosen_on_the_machines_val_rows(tmp_path):
    root = tmp_path / "data"
    simulate_fleet(root, 6, seed=3, rows=TINY_ROWS)  # motor_001 and motor_006 form the fleet "motor"
    fleet = train_fleet(root, "motor", CONFIG)
    assert fleet.members == ["motor_001", "motor_006"] and "classification" in fleet.models, fleet.skipped
    assert "member copies" not in fleet.inputs and fleet.inputs.endswith("2 machine columns"), "time order: no copies"
    # the pooled models' training ranges (the edge's out-of-range status) span both members' train rows
    import json

    from pdm_pipeline.core import paths
    from pdm_pipeline.core.contract import load_machine

    ranges = json.loads((paths.fleet_dir(root, "motor") / "current" / "classification" / "preprocessing.json")
                        .read_text())["sensor_ranges"]
    trains = [load_machine(root, m).splits["train"] for m in fleet.members]
    for sensor, span in ranges.items():
        assert span == pytest.approx([min(t[sensor].min() for t in trains), max(t[sensor].max() for t in trains)])
    assert any(span != pytest.approx([trains[0][s].min(), trains[0][s].max()]) for s, span in ranges.items()), \
        "the union, not the first member's ranges"

    run = run_machine(root, "motor_001", CONFIG)
    model_dir = run.release.path / "classification"
    card = read_card(model_dir)
    decision = card["pooling"]
    assert not card.get("bag"), "time-ordered rows keep the train / val protocol"
    assert decision["compared_on"] == "val rows" and decision["fleet"]["machine_in_fleet"]
    few = decision["val_positives"] < MIN_VAL_POSITIVES_TO_CHOOSE
    better = decision["pooled_val_pr_auc"] > decision["own_val_pr_auc"]
    assert decision["chosen"] == ("fleet" if few or better else "machine") == card["source"], decision
    # The recorded score of the shipped model is its PR-AUC on this machine's val rows, through the runtime.
    val = run.features.frames["val"]
    runtime = ClassifierRuntime(model_dir, card)
    shipped = average_precision_score(val[LABEL], runtime.probability(val[runtime.inputs].to_numpy(dtype=float)))
    recorded = decision["pooled_val_pr_auc" if card["source"] == "fleet" else "own_val_pr_auc"]
    assert shipped == pytest.approx(recorded, abs=1e-9)
    assert run.evaluations["classification"].evaluated
    # a machine that ships the pooled model records its training ranges: every member's, not its own alone
    from dataclasses import replace

    forced = run_machine(root, "motor_006", replace(CONFIG, pooling="fleet"))
    assert read_card(forced.release.path / "classification")["source"] == "fleet"
    shipped_ranges = json.loads((forced.release.path / "classification" / "preprocessing.json").read_text())
    assert shipped_ranges["sensor_ranges"] == ranges


def test_a_fleet_pools_by_default_on_the_windows_every_member_has(tmp_path):
    """No window set given: each motor caps its longest window by its own unit lengths (104 vs 105 samples),
    so their feature names differ. The fleet pools anyway, on the features both compute; each machine then
    compares that pooled model with its own (all its windows) on its val rows."""
    from pdm_pipeline.core import paths
    from pdm_pipeline.core.contract import load_machine
    from pdm_pipeline.core.features import default_windows, window_label

    root = tmp_path / "data"
    simulate_fleet(root, 6, seed=3, rows=TINY_ROWS)
    windows = {m: default_windows(load_machine(root, m).splits["train"]) for m in ("motor_001", "motor_006")}
    assert windows["motor_001"] != windows["motor_006"], windows  # the case this test is about
    shared = set(windows["motor_001"]) & set(windows["motor_006"])
    config = TrainingConfig(excluded_models=("anomaly", "timeseries"), time_limit_s=5, horizon=48)
    fleet = train_fleet(root, "motor", config)
    assert set(fleet.models) == {"classification", "regression"}, fleet.skipped

    for model_type in ("classification", "regression"):
        card = read_card(paths.fleet_dir(root, "motor") / "current" / model_type)
        window_inputs = {c.rsplit("_", 1)[-1] for c in card["input_columns"] if "__" in c and "_w" in c}
        assert window_inputs and window_inputs <= {window_label(w) for w in shared}, window_inputs

    run = run_machine(root, "motor_006", config)
    for model_type in ("classification", "regression"):
        decision = read_card(run.release.path / model_type)["pooling"]
        assert decision["fleet"]["machine_in_fleet"] and decision["chosen"] in ("fleet", "machine"), decision


def test_bench_pooling_reports_each_members_own_and_shipped_test_metrics(tmp_path):
    from pdm_pipeline.core.bench_pooling import run_bench_pooling

    result = run_bench_pooling(tmp_path / "bench", machines=6, rows=TINY_ROWS, seed=3)
    assert list(result["fleets"]) == ["motor"] and result["fleets"]["motor"]["pooled"] == ["classification",
                                                                                              "regression"]
    assert sorted(result["per_machine"]) == ["motor_001", "motor_006"]
    for row in result["per_machine"].values():
        assert row["classification"]["shipped"] in ("fleet", "machine")
        if row["regression"]["shipped"] == "machine":  # the own model shipped: the same test metrics
            assert row["regression"]["rmse"]["shipped"] == pytest.approx(row["regression"]["rmse"]["own"])
    summary = result["summary"]["classification"]
    assert summary["machines"] == 2 and summary["better"] + summary["worse"] <= summary["fleet_shipped"]
    assert (tmp_path / "bench" / "bench-pooling.md").read_text().count("| motor_0") == 2


def test_a_fleet_that_no_longer_pools_withdraws_its_pooled_models(tmp_path):
    """motor_006 is re-imported without one sensor: the fleet no longer shares its sensors. Its previous pooled
    release used to stay current, and members kept choosing a model fitted on data that no longer pools."""
    import json

    import pandas as pd

    from pdm_pipeline.core import paths
    from pdm_pipeline.core.contract import load_machine
    from pdm_pipeline.core.fleet import pooled_for

    root = tmp_path / "data"
    simulate_fleet(root, 6, seed=3, rows=TINY_ROWS)
    first = train_fleet(root, "motor", CONFIG)
    assert first.release_id and pooled_for(root, load_machine(root, "motor_001"))
    dropped = load_machine(root, "motor_006").sensors[-1]
    for split in ("train", "val", "test"):
        path = paths.split_path(root, "motor_006", split)
        pd.read_parquet(path).drop(columns=[dropped]).to_parquet(path, index=False)
    for path, key in ((paths.metadata_path(root, "motor_006"), "columns"), (paths.profile_path(root, "motor_006"), "sensors")):
        content = json.loads(path.read_text())
        content[key].pop(dropped, None)
        path.write_text(json.dumps(content))

    second = train_fleet(root, "motor", CONFIG)
    assert second.release_id is None and second.retired == first.release_id, second
    assert pooled_for(root, load_machine(root, "motor_001")) == {}
    assert (paths.fleet_dir(root, "motor") / first.release_id).is_dir(), "kept for inspection, no longer current"
    run = run_machine(root, "motor_001", CONFIG)
    assert read_card(run.release.path / "classification")["source"] != "fleet"
