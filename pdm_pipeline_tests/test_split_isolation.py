"""Differential split-isolation test: a machine whose TEST split is scrambled
(sensors permuted and scaled, rul / labels permuted) while train + val stay byte-identical must produce the same
label definition, fill values, train/val features, model files and model cards for EVERY family, pooled fleet
models included; only the test metrics may move. It fails on any statistic, threshold, calibration or
selection that reads a test row (checked: it fails when pipeline.train_view hands test over as val, when the
fill values are test medians, or when the label is fitted on train + val + test).

The unit tests of each family's fitting on train/val cannot see a leak in the pipeline between them (an audit
injected these three leaks into core/pipeline.py and every fast test passed); this one sees each.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pdm_pipeline import families
from pdm_pipeline.core import fleet, keys
from pdm_pipeline.core.config import TrainingConfig
from pdm_pipeline.core.contract import load_machine
from pdm_pipeline.core.pipeline import evaluate_model, prepare_features, prepare_labels, train_model
from pdm_pipeline.core.release import pooled_models
from pdm_pipeline.core.simulate import simulate_fleet

pytestmark = pytest.mark.slow

RESERVED = {"timestamp", "unit_id"}
TARGETS = {"rul", "failure_status", "anomaly_window"}


def scramble_test(root: Path, machine: str, seed: int = 0) -> None:
    f = root / "synthetic" / machine / "test.parquet"
    t = pd.read_parquet(f)
    rng = np.random.default_rng(seed)
    for c in t.columns:
        if c in RESERVED:
            continue
        if c in TARGETS:
            t[c] = rng.permutation(t[c].to_numpy())
        elif pd.api.types.is_numeric_dtype(t[c]):
            t[c] = rng.permutation(t[c].to_numpy()) * 1.3
    t.to_parquet(f, index=False)


def scrub(o):
    if isinstance(o, dict):
        return {k: scrub(v) for k, v in o.items()
                if "seconds" not in k and "latency" not in k and k not in ("fit_time", "pred_time_val", "release")}
    if isinstance(o, list):
        return [scrub(v) for v in o]
    return o


def digest(directory: Path) -> dict[str, str]:
    out = {}
    for f in sorted(directory.rglob("*")):
        if f.is_file() and f.name not in ("manifest.json", "manifest.sig"):
            b = f.read_bytes()
            if f.suffix == ".json":
                b = json.dumps(scrub(json.loads(b)), sort_keys=True).encode()
            out[str(f.relative_to(directory))] = hashlib.sha256(b).hexdigest()
    return out


def fingerprint(root: Path, machine: str, config: TrainingConfig, pooled: bool = False) -> dict:
    data = load_machine(root, machine)
    labels = prepare_labels(data, config)
    features = prepare_features(data, labels, config)
    fp = {
        "label": labels.definition.to_dict() if labels.definition else None,
        "labels": {s: labels.labels[s].to_numpy().tolist() for s in ("train", "val")} if labels.labels else None,
        "fill": features.fill_values,
        "spec": features.spec.to_dict(),
        "frames": {s: hashlib.sha256(pd.util.hash_pandas_object(features.frames[s]).values.tobytes()).hexdigest()
                   for s in ("train", "val")},
        "models": {},
    }
    key, trust = keys.signing_key(root), keys.local_trust(root)
    pool = pooled_models(root, data) if pooled else None
    for family in families.all_families():
        out = root / "staging" / family.model_type
        tm = train_model(family, data, labels, features, out, config, key, pool)
        fp["models"][family.model_type] = {"status": tm.status, "reason": tm.reason, "summary": scrub(tm.summary),
                                          "files": digest(out) if tm.path else None}
        evaluate_model(tm, data, features, trust)  # must run, and must not write into the model
        if tm.path:
            assert digest(out) == fp["models"][family.model_type]["files"], "evaluation changed the model directory"
    return fp


def diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in
                (diff(a.get(k), b.get(k), f"{path}/{k}") if k in a and k in b else [f"{path}/{k}: one side only"])]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:60]} != {str(b)[:60]}"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    simulate_fleet(src, 6, seed=5, rows=(2500, 800, 800))  # motor_001 + motor_006 form the fleet "motor"
    return src


def twin_roots(src: Path, tmp: Path, machines: list[str], drop_rul: bool = False) -> tuple[Path, Path]:
    roots = []
    for side in ("A", "B"):
        root = tmp / side
        for m in machines:
            (root / "metadata").mkdir(parents=True, exist_ok=True)
            for f in (src / "metadata").glob(f"{m}_*.json"):
                meta = json.loads(f.read_text())
                if drop_rul and f.name.endswith("_metadata.json"):
                    meta["columns"].pop("rul", None)
                (root / "metadata" / f.name).write_text(json.dumps(meta))
            shutil.copytree(src / "synthetic" / m, root / "synthetic" / m)
            if drop_rul:
                for s in ("train", "val", "test"):
                    p = root / "synthetic" / m / f"{s}.parquet"
                    pd.read_parquet(p).drop(columns=["rul"]).to_parquet(p, index=False)
        roots.append(root)
    for m in machines:
        scramble_test(roots[1], m)
    return roots[0], roots[1]


@pytest.mark.parametrize("drop_rul", [False, True], ids=["rul-labels", "alarm-labels"])
def test_every_family_ignores_the_test_split(simulated, tmp_path, drop_rul):
    a, b = twin_roots(simulated, tmp_path, ["motor_001"], drop_rul)
    config = TrainingConfig().validate()
    fa, fb = fingerprint(a, "motor_001", config), fingerprint(b, "motor_001", config)
    assert all(m["status"] == "trained" for t, m in fa["models"].items() if not (drop_rul and t == "regression")), fa
    assert diff(fa, fb) == []


def test_pooled_fleet_models_and_the_machines_choice_ignore_every_members_test_split(simulated, tmp_path):
    a, b = twin_roots(simulated, tmp_path, ["motor_001", "motor_006"])
    config = TrainingConfig(horizon=24).validate()
    pooled = {}
    for root in (a, b):
        result = fleet.train_fleet(root, "motor", config)
        assert set(result.models) == {"classification", "regression"}, result.skipped
        released = fleet.pooled_for(root, load_machine(root, "motor_001"))
        pooled[root] = {t: digest(Path(released[t].path)) for t in result.models}
    assert diff(pooled[a], pooled[b]) == []
    assert diff(fingerprint(a, "motor_006", config, pooled=True), fingerprint(b, "motor_006", config, pooled=True)) == []
