"""`make bench-pooling`: does fleet pooling help the machines that adopt it, on their TEST rows?

Simulates `machines` sample machines (types cycle, so every type with two or more members forms a fleet), runs
every fleet member once with `pooling="machine"` (its own models), trains the fleets' pooled models, and runs
every member again with `pooling="auto"` (the product's rule: each machine chooses on its own val rows). Test is
touched only by the evaluations, as in any run. Reported per machine: which model shipped and the test metrics
of its own vs the shipped classifier (F1, PR-AUC) and regressor (RMSE), plus how many machines got better or
worse. Writes bench-pooling.json and bench-pooling.md.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

DEFAULT_ROWS = (10_000, 2_500, 2_500)
# Per-machine horizons chosen on train differ by a few hours and would stop the classifier from pooling.
DEFAULT_HORIZON = 48.0
METRICS = {"classification": (("f1", "higher"), ("pr_auc", "higher")), "regression": (("rmse", "lower"),)}


def _shipped(run: Any, model_type: str) -> str | None:
    from pdm_pipeline.families.base import read_card

    model_dir = run.release.path / model_type if run.release is not None else None
    if model_dir is None or not model_dir.is_dir():
        return None
    pooling = read_card(model_dir).get("pooling")
    return pooling.get("chosen") if isinstance(pooling, dict) else "machine"


def run_bench_pooling(
    out: Path, machines: int = 10, rows: tuple[int, int, int] = DEFAULT_ROWS, seed: int = 1,
    horizon: float | None = DEFAULT_HORIZON,
) -> dict[str, Any]:
    from pdm_pipeline.core.config import TrainingConfig
    from pdm_pipeline.core.fleet import fleets, train_fleet
    from pdm_pipeline.core.pipeline import run_machine
    from pdm_pipeline.core.simulate import simulate_fleet

    start = time.perf_counter()
    out = Path(out)
    root = out / "data"
    simulate_fleet(root, machines, seed=seed, rows=rows)
    groups = fleets(root)
    members = [m for ids in groups.values() for m in ids]
    config = TrainingConfig(excluded_models=("anomaly", "timeseries"), horizon=horizon)
    own = {m: run_machine(root, m, replace(config, pooling="machine")).evaluations for m in members}
    pooled = {f: train_fleet(root, f, config) for f in groups}
    per_machine: dict[str, Any] = {}
    for machine_id in members:
        run = run_machine(root, machine_id, config)
        row: dict[str, Any] = {}
        for model_type, metrics in METRICS.items():
            before, after = own[machine_id][model_type], run.evaluations[model_type]
            if not (before.evaluated and after.evaluated):
                continue
            row[model_type] = {"shipped": _shipped(run, model_type),
                               **{m: {"own": before.metrics[m], "shipped": after.metrics[m]} for m, _ in metrics}}
        per_machine[machine_id] = row
    summary: dict[str, Any] = {}
    for model_type, metrics in METRICS.items():
        adopted = [m for m, r in per_machine.items() if r.get(model_type, {}).get("shipped") == "fleet"]
        name, direction = metrics[0]
        sign = 1 if direction == "higher" else -1

        def delta(m: str, model_type: str = model_type, name: str = name, sign: int = sign) -> float:
            values = per_machine[m][model_type][name]
            return sign * (values["shipped"] - values["own"])

        summary[model_type] = {"metric": name, "machines": len(per_machine), "fleet_shipped": len(adopted),
                               "better": sum(delta(m) > 0 for m in adopted),
                               "worse": sum(delta(m) < 0 for m in adopted)}
    result = {
        "machines": machines, "rows": list(rows), "seed": seed, "horizon": horizon,
        "fleets": {f: {"members": r.members, "pooled": sorted(r.models), "not_pooled": r.skipped}
                   for f, r in pooled.items()},
        "per_machine": per_machine, "summary": summary, "seconds": time.perf_counter() - start,
    }
    (out / "bench-pooling.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "bench-pooling.md").write_text(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = ["# bench-pooling: fleet pooled models vs each machine's own, on test", "",
             f"{result['machines']} simulated machines, rows {result['rows']}, seed {result['seed']}, horizon "
             f"{result['horizon']}; each machine chooses on its own val rows (the product's rule).", "",
             "| machine | classifier shipped | F1 own -> shipped | PR-AUC own -> shipped | regressor shipped | "
             "RMSE own -> shipped |", "|---|---|---|---|---|---|"]
    for machine_id, row in result["per_machine"].items():
        c, r = row.get("classification"), row.get("regression")
        cells = [machine_id]
        cells += ([c["shipped"], f"{c['f1']['own']:.3f} -> {c['f1']['shipped']:.3f}",
                   f"{c['pr_auc']['own']:.3f} -> {c['pr_auc']['shipped']:.3f}"] if c else ["-", "-", "-"])
        cells += ([r["shipped"], f"{r['rmse']['own']:.1f} -> {r['rmse']['shipped']:.1f}"] if r else ["-", "-"])
        lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    lines += [""]
    for model_type, s in result["summary"].items():
        lines.append(f"- {model_type}: the fleet's model shipped for {s['fleet_shipped']} of {s['machines']} "
                     f"machines; test {s['metric']} better on {s['better']}, worse on {s['worse']}.")
    lines += ["", f"Wall time {result['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"
