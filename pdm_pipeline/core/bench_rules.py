"""`make bench-rules`: pooled fleet classifiers on random rule datasets nobody tuned on (rows without time order).

Each dataset is a fleet of 2-4 members of unequal size whose rows are 4-6 raw measurements (normal, uniform or
log-normal, sometimes two of them correlated, like AI4I's air and process temperatures). A row fails when one of
2-3 terms (a measurement, or the product or difference of two) passes its limit, at a 0.3-2 % tail, or at random
(0.1-0.4 %). With `shared=False` most limits are shifted per member (by up to 0.6 standard deviations of the term),
as AI4I's overstrain limit differs by Type; with `shared=True` every member has the same limits.

Protocol: the inputs are what the pipeline computes for rows without time order (the measurements and their
pairwise products and differences) plus one 0/1 column per member; the pooled classifier is fitted as the
pipeline fits it (`tabular.fit_predictor`, time_order=False) on the train rows with val as tuning data, its
threshold is the F1-optimal one on val, and it is judged on 100,000 unseen rows of the same fleet. Each dataset
is fitted twice, with and without the member copies of every feature (`fleet.member_copies`). Reported: test F1
of both per dataset, their means and how many datasets are better or worse with the copies.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

TEST_ROWS = 100_000
LIMIT_SHIFT_SD = 0.6  # a member's limit moves by up to this many standard deviations of its term
SHIFTED_SHARE = 0.6  # the share of limits shifted per member (shared=False)


@dataclass
class RuleFleet:
    """One random fleet: `sample(rng, n)` -> (measurements, member of each row, failed)."""

    seed: int
    rows: int
    members: int
    measurements: int
    rules: list[dict[str, Any]]
    sample: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def rule_fleet(seed: int, shared: bool = False) -> RuleFleet:
    """The random fleet of `seed` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    rows, k, members = int(rng.integers(3000, 12001)), int(rng.integers(4, 7)), int(rng.integers(2, 5))
    shares = np.maximum(rng.dirichlet(np.full(members, 2.0)), 0.08)
    shares /= shares.sum()
    laws = [(int(rng.integers(3)), rng.uniform(-5, 50), rng.uniform(0.5, 10), rng.uniform(10, 300),
             rng.uniform(0, 3), rng.uniform(0.1, 0.5)) for _ in range(k)]
    correlated, offset = bool(rng.random() < 0.5), rng.uniform(5, 15)

    def measurements(r: np.random.Generator, n: int) -> np.ndarray:
        x = np.empty((n, k))
        for j, (law, mean, sd, high, log_mean, log_sd) in enumerate(laws):
            x[:, j] = (r.normal(mean, sd, n) if law == 0 else r.uniform(0, high, n) if law == 1
                       else r.lognormal(log_mean, log_sd, n))
        if correlated:
            x[:, 1] = x[:, 0] + r.normal(offset, 1.0, n)
        return x

    def term(x: np.ndarray, kind: int, i: int, j: int) -> np.ndarray:
        return x[:, i] if kind == 0 else x[:, i] * x[:, j] if kind == 1 else x[:, i] - x[:, j]

    reference = measurements(np.random.default_rng(seed + 555), 50_000)
    rules: list[dict[str, Any]] = []
    for index in range(int(rng.integers(2, 4))):
        kind, (i, j) = int(rng.integers(3)), (int(v) for v in rng.choice(k, 2, replace=False))
        tail, above = rng.uniform(0.003, 0.02), bool(rng.integers(2))
        shifted = (rng.random() < SHIFTED_SHARE or (index > 0 and not any(r["shifted"] for r in rules))) and not shared
        values = term(reference, kind, i, j)
        base = float(np.quantile(values, 1 - tail if above else tail))
        scale = float(np.std(values))
        limits = [base + (rng.uniform(-LIMIT_SHIFT_SD, LIMIT_SHIFT_SD) * scale if shifted else 0.0) for _ in range(members)]
        rules.append({"term": ["raw", "product", "difference"][kind], "of": [i, j] if kind else [i], "above": above,
                      "limits": limits, "shifted": shifted, "_args": (kind, i, j)})
    noise = rng.uniform(0.001, 0.004)

    def sample(r: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        member = r.choice(members, size=n, p=shares)
        x = measurements(r, n)
        failed = r.random(n) < noise
        for rule in rules:
            values, limit = term(x, *rule["_args"]), np.asarray(rule["limits"])[member]
            failed |= (values > limit) if rule["above"] else (values < limit)
        return x, member, failed.astype(int)

    public = [{k: v for k, v in rule.items() if not k.startswith("_")} for rule in rules]
    return RuleFleet(seed, rows, members, k, public, sample)


def inputs(x: np.ndarray, member: np.ndarray, members: int, copied: bool) -> pd.DataFrame:
    """The pipeline's features of rows without time order (`core.features`: the measurements and their pairwise
    products and differences), the member columns and (copied) the member copies (`core.fleet`)."""
    from pdm_pipeline.core.features import compute_features, fit_feature_spec
    from pdm_pipeline.core.fleet import machine_column, member_copies, with_member_copies

    raw = pd.DataFrame(x, columns=[f"s{i}" for i in range(x.shape[1])])
    frame = compute_features(raw, fit_feature_spec(raw, list(raw.columns), time_order=False))
    names = list(frame.columns)
    machines = [machine_column(f"m{m}") for m in range(members)]
    for m, column in enumerate(machines):
        frame[column] = (member == m).astype(float)
    if not copied:
        return frame
    copies = member_copies(names, machines)
    parts = [with_member_copies(frame[member == m], copies, machines[m]) for m in range(members)]
    return pd.concat(parts).loc[frame.index]


def pooled_test_f1(fleet: RuleFleet, copied: bool, work: Path, test_rows: int = TEST_ROWS, time_limit_s: float = 30) -> float:
    """Test F1 of the pooled classifier on `test_rows` unseen rows (see the module docstring)."""
    from pdm_pipeline.core.config import TrainingConfig
    from pdm_pipeline.core.schema import LABEL
    from pdm_pipeline.families import tabular
    from pdm_pipeline.families.classifier.train import f1_optimal_threshold, val_metrics

    rng = np.random.default_rng(fleet.seed + 99)
    frames = []
    for n in (int(fleet.rows * 0.8), int(fleet.rows * 0.2), test_rows):
        x, member, failed = fleet.sample(rng, n)
        frames.append(inputs(x, member, fleet.members, copied).assign(**{LABEL: failed}))
    train, val, test = frames
    predictor, _ = tabular.fit_predictor(
        train, val, LABEL, "binary", "f1", None, work, TrainingConfig(time_limit_s=time_limit_s),
        f"rule fleet {fleet.seed}{' with member copies' if copied else ''}", time_order=False,
    )
    threshold, _ = f1_optimal_threshold(
        val[LABEL].to_numpy(), predictor.predict_proba(val.drop(columns=[LABEL]))[1].to_numpy())
    proba = predictor.predict_proba(test.drop(columns=[LABEL]))[1].to_numpy()
    shutil.rmtree(work, ignore_errors=True)
    return val_metrics(test[LABEL].to_numpy(), proba, threshold)["f1"]


def run_bench_rules(out: Path, datasets: int = 16, first_seed: int = 0, shared: bool = False,
                    test_rows: int = TEST_ROWS) -> dict[str, Any]:
    """Both fits on every dataset; writes `<out>/bench-rules.json` and `.md`."""
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(first_seed, first_seed + datasets):
            fleet = rule_fleet(seed, shared)
            one_hot = pooled_test_f1(fleet, False, Path(tmp) / f"{seed}-one-hot", test_rows)
            copies = pooled_test_f1(fleet, True, Path(tmp) / f"{seed}-copies", test_rows)
            rows.append({"seed": seed, "rows": fleet.rows, "members": fleet.members, "measurements": fleet.measurements,
                         "rules": fleet.rules, "one_hot_f1": one_hot, "member_copies_f1": copies})
            log.info(f"bench-rules: dataset {seed}: F1 {one_hot:.4f} one-hot only, {copies:.4f} with member copies")
    one_hot = np.array([r["one_hot_f1"] for r in rows])
    copies = np.array([r["member_copies_f1"] for r in rows])
    result = {"shared_limits": shared, "datasets": rows, "test_rows": test_rows,
              "one_hot_f1_mean": float(one_hot.mean()), "member_copies_f1_mean": float(copies.mean()),
              "better": int((copies > one_hot).sum()), "worse": int((copies < one_hot).sum()),
              "seconds": time.perf_counter() - start}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-rules.json").write_text(json.dumps(result, indent=1))
    (out / "bench-rules.md").write_text(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    limits = "every limit shared by the members" if result["shared_limits"] else "most limits shifted per member"
    lines = [f"# bench-rules: pooled classifier with and without member copies ({limits})", "",
             f"F1 on {result['test_rows']:,} unseen rows per dataset, threshold F1-optimal on val.", "",
             "| dataset | rows | members | one-hot only | with member copies |", "|---|---|---|---|---|"]
    for row in result["datasets"]:
        lines.append(f"| {row['seed']} | {row['rows']:,} | {row['members']} | {row['one_hot_f1']:.4f} | "
                     f"{row['member_copies_f1']:.4f} |")
    lines += ["", f"Mean F1 {result['one_hot_f1_mean']:.4f} -> {result['member_copies_f1_mean']:.4f} with member "
              f"copies: better on {result['better']}, worse on {result['worse']} of {len(result['datasets'])}.",
              f"Wall time {result['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"
