"""The same-protocol yardsticks of bench-real behave as their definitions say (no real data needed)."""

from __future__ import annotations

import numpy as np
import pytest

from pdm_pipeline.core.bench_real import t2q_flags


def test_t2q_baseline_flags_about_one_in_a_thousand_normal_rows_and_every_broken_correlation():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(400, 2))
    mixing = rng.normal(size=(2, 6))
    train = latent @ mixing + 0.05 * rng.normal(size=(400, 6))
    normal = rng.normal(size=(20_000, 2)) @ mixing + 0.05 * rng.normal(size=(20_000, 6))
    assert t2q_flags(train, normal).mean() < 0.01  # p = 0.999 limits: rare on rows like the training ones
    broken = normal[:200].copy()
    broken[:, 0] += 1.0  # within the sensor's normal range, but off the correlation the PCA learnt: Q sees it
    assert abs(broken[:, 0].mean()) < 3 * train[:, 0].std()
    assert t2q_flags(train, broken).mean() > 0.95
    far = normal[:200] * 4  # along the learnt components, far out: T² sees it
    assert t2q_flags(train, far).mean() > 0.9


def test_the_weekly_retrain_walks_forward_one_model_per_week_and_finds_a_later_fault(tmp_path):
    """A NAB-format lookalike of 3 weeks: the probation model covers week 1, then a model retrained on the
    growing history covers each next week; a deep dip in week 3 is found and the whole file is scored."""
    import json

    import pandas as pd

    from pdm_pipeline.core.bench_real import _nab_weekly_retrain

    rows = 3 * 7 * 24 * 12
    rng = np.random.default_rng(0)
    stamps = pd.date_range("2014-01-01", periods=rows, freq="5min")
    value = 90 + 2 * np.sin(np.arange(rows) / 288 * 2 * np.pi) + rng.normal(0, 0.5, rows)
    value[5000:5100] -= 40  # the fault, in week 3
    nab = tmp_path / "realdata" / "nab"
    nab.mkdir(parents=True)
    pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": value}).to_csv(
        nab / "machine_temperature_system_failure.csv", index=False)
    window = [str(stamps[4950]), str(stamps[5150])]
    (nab / "combined_windows.json").write_text(json.dumps({
        "realKnownCause/machine_temperature_system_failure.csv": [window]}))
    result = _nab_weekly_retrain(tmp_path / "realdata", tmp_path / "weekly", probation=750)
    assert result["models"] == 3  # rows 750-2765, 2766-4781, 4782-6047
    assert result["events_total"] == 1 and result["events_found"] == 1
    assert result["boundaries_inside_windows"] == 0 and result["false_alarm_events"] <= 5
    assert result["nab_standard"] > 50  # 0 = never fires, 100 = earliest detection and no false alarm


def test_the_ai4i_label_ceiling_counts_each_types_rule_failures_among_its_test_failures(tmp_path):
    """A perfect model of the deterministic rules finds the HDF/PWF/OSF failures and only those: F1 = 2R / (R + T)
    for R rule failures among T test failures, per Type and pooled. Rows exactly on the HDF limit at the published
    0.1 K (some failed, some not, as in AI4I where only float64 rounding parts them) are flagged all or none,
    whichever scores better. Test rows are traced back here by their unique tool wear, a different route from the
    function's own matching."""
    import pandas as pd

    from pdm_pipeline.core.bench_real import ai4i_label_ceiling
    from pdm_pipeline.core.contract import load_machine
    from pdm_pipeline.core.importer import import_ai4i2020

    rows = 3000
    rng = np.random.default_rng(1)
    kind = rng.choice(["L", "M", "H"], rows, p=[0.5, 0.3, 0.2])
    mode = rng.choice(["", "PWF", "OSF", "TWF", "RNF"], rows, p=[0.9, 0.04, 0.03, 0.02, 0.01])
    frame = pd.DataFrame({
        "UDI": np.arange(1, rows + 1), "Product ID": [f"X{i}" for i in range(rows)], "Type": kind,
        "Air temperature [K]": rng.normal(300, 2, rows).round(1), "Process temperature [K]": rng.normal(310, 1, rows).round(1),
        "Rotational speed [rpm]": rng.integers(1200, 2800, rows), "Torque [Nm]": rng.normal(40, 10, rows).round(1),
        "Tool wear [min]": np.arange(rows), "Machine failure": (mode != "").astype(int),
        **{flag: (mode == flag).astype(int) for flag in ("TWF", "HDF", "PWF", "OSF", "RNF")},
    })
    # 60 rows on the HDF limit below 1380 rpm (8.6 K at 0.1 K; in float64 8.599999999999966 and
    # 8.600000000000023): 30 failed with HDF only, 30 did not
    tied = rng.choice(rows, 60, replace=False)
    mode[tied[:30]], mode[tied[30:]] = "HDF", ""
    frame.loc[tied[:30], ["Air temperature [K]", "Process temperature [K]"]] = [300.8, 309.4]
    frame.loc[tied[30:], ["Air temperature [K]", "Process temperature [K]"]] = [302.2, 310.8]
    frame.loc[tied, "Rotational speed [rpm]"] = 1300
    frame["Machine failure"] = (mode != "").astype(int)
    for flag in ("TWF", "HDF", "PWF", "OSF", "RNF"):
        frame[flag] = (mode == flag).astype(int)
    # every row on the limit: the planted ones and any random row that landed there
    on_limit = (((frame["Process temperature [K]"] - frame["Air temperature [K]"]).round(1) == 8.6)
                & (frame["Rotational speed [rpm]"] < 1380)).to_numpy()
    assert on_limit.sum() >= 60
    source = tmp_path / "realdata" / "ai4i2020"
    source.mkdir(parents=True)
    frame.to_csv(source / "ai4i2020.csv", index=False, encoding="utf-8-sig")
    root = tmp_path / "data"
    ids = import_ai4i2020(source / "ai4i2020.csv", root, seed=3)

    def best_f1(reach: int, total: int, tied_failed: int, tied_normal: int) -> float:
        return max(2 * reach / (reach + total), 2 * (reach + tied_failed) / (reach + tied_failed + total + tied_normal))

    ceiling = ai4i_label_ceiling(tmp_path / "realdata", root, ids)
    counts = np.zeros(4, dtype=int)
    for machine_id in ids:
        test = load_machine(root, machine_id).splits["test"]
        wear = test["tool_wear_min"].astype(int).to_numpy()
        failed = test["failure_status"].to_numpy() == 1
        modes = mode[wear[failed]]
        reach, total = int(np.isin(modes, ["PWF", "OSF"]).sum()), len(modes)
        tied_failed = int((on_limit[wear[failed]] & ~np.isin(modes, ["PWF", "OSF"])).sum())
        tied_normal = int(on_limit[wear[~failed]].sum())
        assert total > 0 and 0 < reach < total
        row = ceiling["per_type"][machine_id.rsplit("_", 1)[-1]]
        assert (row["rule_failures"], row["test_failures"]) == (reach, total)
        assert (row["failures_on_hdf_limit"], row["normal_rows_on_hdf_limit"]) == (tied_failed, tied_normal)
        assert row["f1"] == best_f1(reach, total, tied_failed, tied_normal)
        counts += (reach, total, tied_failed, tied_normal)
    assert counts[2] > 0 and counts[3] > 0  # the split put rows of both kinds on the limit into test
    assert ceiling["f1"] == best_f1(*counts) < 1


def test_the_targets_table_shows_what_each_target_was_judged_on():
    """Every PASS / MISS stands beside its measured figure; AI4I's beside the label ceiling of the split."""
    from pdm_pipeline.core.bench_real import markdown

    per_type = {t: {"f1": f1, "precision": 0.9, "recall": 0.8, "test_failures": n, "test_rows": 10 * n, "model": "fleet",
                    "label_ceiling_f1": c} for t, f1, n, c in (("H", 0.571, 3, 0.8), ("L", 0.941, 35, 0.955))}
    confusion = {"f1": 0.785, "false_alarm_rate": 0.425, "missed_alarm_rate": 0.11, "always_anomalous_f1": 0.693}
    result = {
        "ai4i": {"protocol": "p", "reference": "r", "pooled": {"f1": 0.875, "precision": 0.9, "recall": 0.84,
                                                               "label_ceiling_f1": 0.925}, "per_type": per_type,
                 "targets": {"pooled_f1>=0.90": False, "every_type_f1>=0.80": False}},
        "skab": {"protocol": "p", "reference": "r", "pooled": confusion,
                 "targets": {"f1>=0.78": True, "far<=0.15": False, "above_always_anomalous": True}},
        "nab": {"protocol": "p", "reference": "r",
                "anomaly": {"events_total": 4.0, "events_found": 4.0, "false_alarm_events": 47.0, "f1": 0.33,
                            "false_alarm_rate": 0.18, "mean_detection_delay_rows": 1.0},
                "weekly_retrain": {"models": 11, "events_total": 4.0, "events_found": 4.0, "false_alarm_events": 33.0,
                                   "nab_standard": 57.3},
                "forecast": {"mase": 0.785, "naive_mase": 0.785, "label": "seasonal naive", "coverage_80": 0.9,
                             "coverage_95": 0.9},
                "targets": {"all_scored_windows_found": True, "false_positive_events<=2": False,
                            "forecast_mase<1_or_naive": True}},
        "seconds": 180.0, "cpus": 2,
    }
    rows = markdown(result).split("## Targets")[1].strip().splitlines()[2:]
    table = {tuple(cell.strip() for cell in row.strip("|").split("|")[:2]): row.strip("|").split("|")[2:] for row in rows
             if row.startswith("|")}
    measured = {key: (verdict.strip(), figure.strip()) for key, (verdict, figure) in table.items()}
    assert measured[("ai4i", "pooled_f1>=0.90")] == ("MISS", "0.875 (label ceiling 0.925)")
    assert measured[("ai4i", "every_type_f1>=0.80")] == ("MISS", "H 0.571 (ceiling 0.800), L 0.941 (ceiling 0.955)")
    assert measured[("skab", "far<=0.15")] == ("MISS", "0.425")
    assert measured[("skab", "above_always_anomalous")] == ("PASS", "0.785 vs 0.693")
    assert measured[("nab", "all_scored_windows_found")] == ("PASS", "4 of 4")
    assert measured[("nab", "false_positive_events<=2")] == ("MISS", "47 (weekly retrain: 33)")
    assert measured[("nab", "forecast_mase<1_or_naive")] == ("PASS", "MASE 0.785 (seasonal naive)")
    assert len(measured) == 8
    # with the threshold ceilings measured, they stand beside the figure they bound
    result["skab"]["threshold_ceiling"] = {"far_limit": 0.15, "f1_target": 0.78, "thresholds_tried": 142,
                                           "best_f1_within_far_limit": {"f1": 0.478, "false_alarm_rate": 0.146},
                                           "lowest_far_with_f1_target": None}
    result["nab"]["fewest_false_alarm_events"] = {"threshold": 0.96, "false_alarm_events": 17, "false_alarm_rate": 0.01}
    report = markdown(result)
    rows = report.split("## Targets")[1].strip().splitlines()[2:]
    measured = {tuple(c.strip() for c in row.strip("|").split("|")[:2]): row.strip("|").split("|")[3].strip()
                for row in rows if row.startswith("|")}
    assert measured[("skab", "far<=0.15")] == "0.425 (threshold ceiling: F1 0.478 at false alarms <= 0.15)"
    assert measured[("nab", "false_positive_events<=2")] == "47 (weekly retrain: 33; threshold ceiling: 17)"
    assert "no threshold reaches F1 0.78" in report and "is 17 (threshold chosen on test" in report
    # the file's NAB score stands beside the published detectors' scores of the same file, and says how each counts
    result["nab"]["nab_score"] = {"standard": 36.2, "windows": 4, "windows_detected": 4, "false_positive_onsets": 48}
    nab_section = markdown(result).split("## NAB machine temperature")[1].split("## Targets")[0]
    assert "score of this file: 36.2 (4 of 4 windows, 48 false-positive alarm onsets" in nab_section
    assert "ARTime 82.0 (10 false-positive rows)" in nab_section and "contextOSE 70.5 (1 false-positive row)" in nab_section
    assert "NAB counts every flagged row" in nab_section
    # each detector's raw-score ceiling stands in the SKAB section, a detector with no threshold within the limit as such
    result["skab"]["raw_detector_threshold_ceilings"] = {
        "zscore": {"best_f1_within_far_limit": {"f1": 0.735, "false_alarm_rate": 0.147}},
        "one_class_svm": {"best_f1_within_far_limit": None}}
    skab_section = markdown(result).split("## NAB machine temperature")[0]
    assert "best F1 within 15% false alarms: zscore 0.735, one_class_svm none." in skab_section


def test_the_threshold_ceiling_finds_the_best_common_threshold_and_says_when_none_meets_the_target():
    """Two files scored on one scale. File a: anomalies score 0.9, normal rows 0.1 and, after the fault, 0.8 (the
    plant still warm); file b: anomalies 0.7, normal 0.2. Threshold 0.7 finds every anomaly but flags a's 4
    post-fault rows (false-alarm rate 4/12); 0.9 keeps false alarms at 0 but finds only a's 4 anomalies."""
    from pdm_pipeline.core.bench_real import false_alarms_around_faults, threshold_ceiling

    truth_a = np.array([0, 0, 1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    score_a = np.array([0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8])
    truth_b = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0], dtype=bool)
    score_b = np.array([0.2, 0.2, 0.2, 0.2, 0.7, 0.7, 0.7, 0.7, 0.2, 0.2])
    cases = [(truth_a, score_a, 1, 1), (truth_b, score_b, 1, 1)]
    strict = threshold_ceiling(cases, far_limit=0.15, f1_target=0.8)
    assert strict["best_f1_within_far_limit"]["f1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # 0.9: P 1, R 4/8
    assert strict["best_f1_within_far_limit"]["false_alarm_rate"] == 0.0
    assert strict["lowest_far_with_f1_target"]["false_alarm_rate"] == pytest.approx(4 / 12)  # 0.7: P 8/12, R 1
    assert strict["lowest_far_with_f1_target"]["f1"] == pytest.approx(0.8)
    assert threshold_ceiling(cases, far_limit=0.15, f1_target=0.95)["lowest_far_with_f1_target"] is None
    # debounced with the shipped delays: a 2-row on-delay misses the first anomalous row of each file
    delayed = threshold_ceiling([(t, s, 2, 1) for t, s, _, _ in cases], far_limit=0.5, f1_target=0.5)
    assert delayed["best_f1_within_far_limit"]["missed_alarm_rate"] == 2 / 8
    assert false_alarms_around_faults(truth_a, score_a >= 0.7) == {
        "before_flagged": 0, "before_rows": 2, "after_flagged": 4, "after_rows": 4}


def test_the_fewest_false_alarm_events_keep_every_window_and_cannot_hide_behind_an_alarm_that_stays_on():
    """Two windows peaking at 0.9 and 0.6; false-alarm bumps at 0.5, 0.7 and 0.8. Any threshold that finds the
    0.6 window also fires on the 0.7 and 0.8 bumps: 2 false-alarm events at best. A threshold under every normal
    row makes one alarm that never switches off: it counted 0 false-alarm events (it touched a window) and won;
    its normal stretches (before, between and after the windows) are 3 false alarms now, and the bound on flagged
    normal rows excludes it anyway."""
    from pdm_pipeline.core.bench_real import fewest_false_alarm_events

    score = np.full(200, 0.1)
    truth = np.zeros(200, dtype=bool)
    for start, height, window in ((20, 0.9, True), (60, 0.5, False), (100, 0.6, True), (140, 0.7, False),
                                  (170, 0.8, False)):
        score[start:start + 5] = height
        truth[start:start + 5] = window
    best = fewest_false_alarm_events(truth, score, 1, 1, max_false_alarm_rate=0.2)
    assert best["false_alarm_events"] == 2 and 0.5 < best["threshold"] <= 0.6
    assert fewest_false_alarm_events(truth, score, 1, 1, max_false_alarm_rate=0.05) is None
    assert fewest_false_alarm_events(truth, score, 1, 1, max_false_alarm_rate=1.0)["false_alarm_events"] == 2


def test_raw_detector_scores_keep_the_distance_the_ensembles_bounded_score_loses(tmp_path):
    """The ensemble maps each detector through its reference rows' empirical CDF: a row a little outside the normal
    range and one far outside both score ~1, so no threshold above the normal range can tell them apart. The
    bench's diagnostic keeps each detector's raw score, scaled per machine by its normal train rows (median -> 0,
    99th percentile -> 1), where the far row stays far."""
    from types import SimpleNamespace

    import numpy as np

    from pdm_pipeline import families
    from pdm_pipeline.core.bench_real import _scaled_raw_scores
    from pdm_pipeline.core.config import TrainingConfig
    from pdm_pipeline.families.anomaly import ENSEMBLE
    from pdm_pipeline.families.anomaly.runtime import load_dir
    from pdm_pipeline_tests.helpers import views
    from pdm_pipeline_tests.test_family_anomaly import FEATURES, make_split

    splits = {"train": make_split(600, 1), "val": make_split(200, 2)}
    normal = splits["train"][splits["train"]["failure_status"] == 0]
    sd = normal[FEATURES].std().to_numpy()
    test = normal.iloc[:2].copy()
    test[FEATURES] = normal[FEATURES].mean().to_numpy() + np.outer([6.0, 60.0], sd)  # a little outside, far outside
    splits["test"] = test
    train_view, _ = views(splits, FEATURES)
    families.get("anomaly").train(train_view, tmp_path / "model", TrainingConfig(seed=7))
    runtime = load_dir(tmp_path / "model")

    bounded = runtime.score(test[runtime.inputs].to_numpy(dtype=float))[ENSEMBLE].to_numpy()
    assert bounded.min() > 0.95 and bounded.max() - bounded.min() < 0.05  # both at the top of the reference CDF
    run = SimpleNamespace(features=SimpleNamespace(frames={"train": splits["train"], "test": test}))
    scaled = _scaled_raw_scores(run, runtime)
    assert set(scaled) == set(runtime.detectors)
    for detector in ("zscore", "hotelling_t2", "spe_q", "local_outlier_factor"):
        near, far = scaled[detector]
        assert far > 3 * near > 3, (detector, near, far)
    # the scale: the normal train rows' median maps to 0 and their 99th percentile to 1
    on_train = _scaled_raw_scores(SimpleNamespace(features=SimpleNamespace(
        frames={"train": splits["train"], "test": normal})), runtime)
    assert abs(np.median(on_train["zscore"])) < 1e-9 and abs(np.quantile(on_train["zscore"], 0.99) - 1) < 1e-9
