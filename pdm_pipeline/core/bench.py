"""Benchmark: the `pi` preset against `seed` (the replaced system's settings) on one machine of the original size.

    python -m pdm_pipeline.core.bench --out bench/ [--presets pi,seed] [--rows 35000,7500,7500]
                                      [--machine-type compressor] [--seed 0] [--seed-time-limit 900]

1. One machine is simulated (35,000 / 7,500 / 7,500 rows by default). The default type is `compressor`: it
   has 10 sensors, the size of the original system's machines (`motor` has 6).
2. For each preset, the core pipeline (`pipeline.run_machine`: load, labels, features, every model family
   trained and evaluated on test, then the gated atomic release with its signed bundle, exactly as the Dagster
   graph does, without Dagster's own run overhead) runs in a FRESH subprocess with its own data root, so the
   peak resident memory is that run's alone: the parent reads it from the child's rusage (`os.wait4`,
   ru_maxrss, which also covers the child's own subprocesses) and measures wall time around it. The child
   reports per-model train time, artifact size and test metrics.
3. The released bundle is loaded with `edge.EdgePredictor` (signature and hashes verified) to measure
   prediction latency (median of repeats) of classifier + RUL + anomaly: on prepared feature rows (the models
   alone: the < 10 ms target) and end to end from raw rows (features over a `min_history_rows` buffer, then the
   models), each for one row and for 1,000 rows.
4. `bench.json` (everything) and `bench.md` (pi vs seed side by side, ratios, deltas, targets) go to `out_dir`.

Targets (checked on the pi preset; the comparisons need both presets):
    core pipeline < 60 s and peak RSS < 2 GB; >= 10x faster than seed; test metrics no worse
    than seed: classifier F1 >= 98 % of seed's and RUL RMSE <= 102 % of seed's (NO_WORSE_TOLERANCE);
    the four published models < 20 MB together; one-row prediction of the three models < 10 ms.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pdm_pipeline import families
from pdm_pipeline.core import paths
from pdm_pipeline.core.config import TABULAR_PRESETS, TrainingConfig

CLASSIFICATION, REGRESSION = "classification", "regression"

Log = Callable[[str], None]

DEFAULT_ROWS: tuple[int, int, int] = (35_000, 7_500, 7_500)
DEFAULT_MACHINE_TYPE = "compressor"
RESULT_FILE = "bench.json"
REPORT_FILE = "bench.md"
RUN_RESULT_FILE = "run.json"
TRAIN_LOG_FILE = "train.log"
# Targets.
GRAPH_SECONDS_TARGET = 60.0
PEAK_RSS_MB_TARGET = 2000.0
SPEEDUP_TARGET = 10.0
MODELS_MB_TARGET = 20.0
SINGLE_ROW_MS_TARGET = 10.0
# "No worse than seed": relative tolerance on the classifier's F1 (higher is better) and the RUL RMSE (lower).
NO_WORSE_TOLERANCE = 0.02
# Latency: repeats (median taken) and the batch size.
SINGLE_ROW_REPEATS = 200
END_TO_END_REPEATS = 30
BATCH_ROWS = 1000
BATCH_REPEATS = 10


def _headline(model_type: str) -> tuple[tuple[str, bool], ...]:
    """(metric, higher is better) of a family, from the registry."""
    return families.get(model_type).headline_metrics[:3]


# ---------------------------------------------------------------------------------------------- child: one run


def _train_child(root: Path, machine_id: str, preset: str, time_limit_s: float | None, result: Path) -> None:
    """Run the whole graph for one machine and write what the parent reports (inside the fresh subprocess)."""
    import logging

    from pdm_pipeline.core.pipeline import run_machine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in ("cmdstanpy", "prophet", "mlflow", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    config = TrainingConfig(preset=preset, time_limit_s=time_limit_s)
    run = run_machine(root, machine_id, config)
    models = {}
    for family in families.all_families():
        model_type = family.model_type
        trained, evaluation = run.trained[model_type], run.evaluations[model_type]
        models[model_type] = {
            "skipped_reason": trained.reason,
            "train_seconds": trained.train_seconds,
            "size_mb": trained.size_mb,
            "best_model": trained.summary.get("best_model") or trained.summary.get("chosen"),
            "test_metrics": evaluation.flat_metrics(),
        }
    release = run.release
    bundle = {"path": str(release.bundle.path), "size_mb": release.bundle.size_mb, "formats": release.bundle.formats} \
        if release.bundle else None
    result.write_text(json.dumps({"preset": preset, "step_seconds": run.seconds, "models": models,
                                  "release": {"outcome": release.outcome, "reason": release.reason}, "bundle": bundle},
                                 indent=1))


def _run_preset(root: Path, machine_id: str, preset: str, time_limit_s: float | None, log: Log) -> dict[str, Any]:
    """The whole graph in a fresh subprocess: its report plus wall time and peak RSS measured from outside."""
    result = root / RUN_RESULT_FILE
    command = [
        sys.executable, "-m", "pdm_pipeline.core.bench", "--train-child",
        "--root", str(root), "--machine-id", machine_id, "--presets", preset, "--result", str(result),
    ]
    if time_limit_s is not None:
        command += ["--time-limit", str(time_limit_s)]
    log(f"bench: {preset}: training the whole graph in a subprocess (log: {root / TRAIN_LOG_FILE})")
    with (root / TRAIN_LOG_FILE).open("w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        # wait4 (not Popen.wait) returns the child's resource usage: its own peak memory, not the parent's.
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = exit_code = os.waitstatus_to_exitcode(status)
    if exit_code != 0:
        raise RuntimeError(f"bench: the {preset} run failed with exit code {exit_code}; see {root / TRAIN_LOG_FILE}")
    report = json.loads(result.read_text())
    # Linux reports ru_maxrss in KiB.
    report["graph_seconds"] = wall
    report["peak_rss_mb"] = usage.ru_maxrss * 1024 / 1e6
    report["models_mb"] = sum(m["size_mb"] for m in report["models"].values() if m["skipped_reason"] is None)
    log(f"bench: {preset}: whole graph {wall:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MB, "
        f"models {report['models_mb']:.2f} MB")
    return report


# ---------------------------------------------------------------------------------------------- latency


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `fn` in milliseconds, after one warm-up call."""
    fn()
    timings = []
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        timings.append((time.perf_counter() - begin) * 1000.0)
    return statistics.median(timings)


def measure_latency(bundle_dir: Path, raw: Any, trust: Any = None) -> dict[str, float]:
    """Prediction latency (ms, medians) of classifier + RUL + anomaly from a loaded bundle on raw rows `raw`
    (time-ordered rows of one machine, at least `min_history_rows` + BATCH_ROWS of them for full figures)."""
    from pdm_pipeline.core.features import compute_features
    from pdm_pipeline.edge.predictor import EdgePredictor

    begin = time.perf_counter()
    predictor = EdgePredictor.load(bundle_dir, trust=trust)
    load_ms = (time.perf_counter() - begin) * 1000.0
    buffer = raw.iloc[-predictor.min_history_rows:]
    batch = raw.iloc[:BATCH_ROWS]

    def matrices(rows: Any) -> list[Any]:
        return [compute_features(rows, g.spec).fillna(g.fill_values).to_numpy(dtype=float) for g in predictor._groups]

    def score(mats: list[Any]) -> None:
        for group, matrix in zip(predictor._groups, mats):
            for runtime, columns in zip(group.runtimes, group.columns):
                runtime.predict(matrix[:, columns])

    one_row = [m[-1:] for m in matrices(buffer)]
    batch_inputs = matrices(batch)
    return {
        "load_ms": load_ms,
        "models_single_row_ms": _median_ms(lambda: score(one_row), SINGLE_ROW_REPEATS),
        "models_batch_ms": _median_ms(lambda: score(batch_inputs), BATCH_REPEATS),
        "end_to_end_single_row_ms": _median_ms(lambda: predictor.predict(buffer, latest_only=True), END_TO_END_REPEATS),
        "end_to_end_batch_ms": _median_ms(lambda: predictor.predict(batch), BATCH_REPEATS),
        "batch_rows": float(len(batch)),
        "history_rows": float(len(buffer)),
    }


# ---------------------------------------------------------------------------------------------- comparison


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _metric(report: dict[str, Any], model_type: str, name: str) -> float | None:
    value = report["models"][model_type]["test_metrics"].get(name)
    return None if value is None or not math.isfinite(value) else float(value)


def _tabular_seconds(report: dict[str, Any]) -> float:
    """Train time of the classifier and the RUL regressor together (the models the preset changes)."""
    return sum(report["models"][t]["train_seconds"] for t in (CLASSIFICATION, REGRESSION))


def compare(pi: dict[str, Any], seed: dict[str, Any]) -> dict[str, Any]:
    """seed/pi ratios of time and size, and seed - pi deltas of the headline test metrics."""
    ratios = {
        "graph_seconds": _ratio(seed["graph_seconds"], pi["graph_seconds"]),
        "tabular_train_seconds": _ratio(_tabular_seconds(seed), _tabular_seconds(pi)),
        "peak_rss_mb": _ratio(seed["peak_rss_mb"], pi["peak_rss_mb"]),
        "models_mb": _ratio(seed["models_mb"], pi["models_mb"]),
        "bundle_mb": _ratio(seed["bundle"]["size_mb"], pi["bundle"]["size_mb"]),
        "models_single_row_ms": _ratio(
            seed["latency"]["models_single_row_ms"], pi["latency"]["models_single_row_ms"]
        ),
    }
    for model_type in families.model_types():
        ratios[f"{model_type}_train_seconds"] = _ratio(
            seed["models"][model_type]["train_seconds"], pi["models"][model_type]["train_seconds"]
        )
        ratios[f"{model_type}_size_mb"] = _ratio(
            seed["models"][model_type]["size_mb"], pi["models"][model_type]["size_mb"]
        )
    deltas = {}
    for model_type in families.model_types():
        for name, _ in _headline(model_type):
            a, b = _metric(seed, model_type, name), _metric(pi, model_type, name)
            deltas[f"{model_type}_{name}"] = None if a is None or b is None else a - b
    return {"ratios_seed_over_pi": ratios, "deltas_seed_minus_pi": deltas}


def check_targets(pi: dict[str, Any], seed: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Each target: the measured value, the limit and whether it passed (None when it cannot be checked)."""

    def target(value: float | None, limit: float | None, passed: bool | None, rule: str) -> dict[str, Any]:
        return {"value": value, "limit": limit, "passed": passed, "rule": rule}

    targets = {
        "pi_graph_seconds": target(
            pi["graph_seconds"], GRAPH_SECONDS_TARGET, pi["graph_seconds"] < GRAPH_SECONDS_TARGET,
            "core pipeline wall time (train, evaluate, release, bundle) < 60 s",
        ),
        "pi_peak_rss_mb": target(pi["peak_rss_mb"], PEAK_RSS_MB_TARGET, pi["peak_rss_mb"] < PEAK_RSS_MB_TARGET,
                                 "peak resident memory of the run < 2 GB"),
        "pi_models_mb": target(pi["models_mb"], MODELS_MB_TARGET, pi["models_mb"] < MODELS_MB_TARGET,
                               "the released models < 20 MB together"),
        "pi_single_row_ms": target(
            pi["latency"]["models_single_row_ms"], SINGLE_ROW_MS_TARGET,
            pi["latency"]["models_single_row_ms"] < SINGLE_ROW_MS_TARGET,
            "one-row prediction of classifier + RUL + anomaly from the loaded bundle < 10 ms",
        ),
    }
    speedup = _ratio(seed["graph_seconds"], pi["graph_seconds"]) if seed else None
    targets["speedup_vs_seed"] = target(
        speedup, SPEEDUP_TARGET, None if speedup is None else speedup >= SPEEDUP_TARGET,
        "seed whole-graph time / pi whole-graph time >= 10",
    )
    f1 = (_metric(pi, CLASSIFICATION, "f1"), _metric(seed, CLASSIFICATION, "f1") if seed else None)
    rmse = (_metric(pi, REGRESSION, "rmse"), _metric(seed, REGRESSION, "rmse") if seed else None)
    targets["classifier_f1_no_worse"] = target(
        f1[0], None if f1[1] is None else f1[1] * (1 - NO_WORSE_TOLERANCE),
        None if f1[0] is None or f1[1] is None else f1[0] >= f1[1] * (1 - NO_WORSE_TOLERANCE),
        f"pi test F1 >= {1 - NO_WORSE_TOLERANCE:.0%} of seed's",
    )
    targets["rul_rmse_no_worse"] = target(
        rmse[0], None if rmse[1] is None else rmse[1] * (1 + NO_WORSE_TOLERANCE),
        None if rmse[0] is None or rmse[1] is None else rmse[0] <= rmse[1] * (1 + NO_WORSE_TOLERANCE),
        f"pi test RUL RMSE <= {1 + NO_WORSE_TOLERANCE:.0%} of seed's",
    )
    return targets


# ---------------------------------------------------------------------------------------------- report


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown_report(result: dict[str, Any]) -> str:
    """The benchmark as markdown: presets side by side, seed/pi ratios and deltas, targets."""
    presets: list[str] = list(result["presets"])
    runs = result["presets"]
    comparison = result.get("comparison")
    header = ["", *presets] + (["seed / pi", "seed - pi"] if comparison else [])
    lines = [
        f"# Benchmark: {', '.join(presets)} on {result['machine']['machine_id']} "
        f"({result['machine']['machine_type']}, {len(result['machine']['sensors'])} sensors, "
        f"rows {'/'.join(str(r) for r in result['machine']['rows'])})",
        "",
        f"{result['host']['cpus']} CPU(s), {result['host']['platform']}, Python {result['host']['python']}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]

    def row(label: str, values: list[Any], ratio: float | None = None, delta: float | None = None) -> None:
        cells = [label, *(_fmt(v) for v in values)]
        if comparison:
            cells += [_fmt(ratio), _fmt(delta)]
        lines.append("| " + " | ".join(cells) + " |")

    ratios = comparison["ratios_seed_over_pi"] if comparison else {}
    deltas = comparison["deltas_seed_minus_pi"] if comparison else {}
    row("core pipeline incl. release (s)", [runs[p]["graph_seconds"] for p in presets], ratios.get("graph_seconds"))
    row("peak RSS (MB)", [runs[p]["peak_rss_mb"] for p in presets], ratios.get("peak_rss_mb"))
    row("released models (MB)", [runs[p]["models_mb"] for p in presets], ratios.get("models_mb"))
    row("bundle (MB)", [runs[p]["bundle"]["size_mb"] for p in presets], ratios.get("bundle_mb"))
    row("bundle formats", [", ".join(f"{t}: {f}" for t, f in runs[p]["bundle"]["formats"].items()) for p in presets])
    row("classifier + RUL training (s)", [_tabular_seconds(runs[p]) for p in presets],
        ratios.get("tabular_train_seconds"))
    for model_type in families.model_types():
        models = [runs[p]["models"][model_type] for p in presets]
        if all(m["skipped_reason"] for m in models):
            row(f"{model_type}", ["skipped"] * len(presets))
            continue
        if any(m["best_model"] for m in models):
            row(f"{model_type}: best model", [m["best_model"] or "-" for m in models])
        row(f"{model_type}: train (s)", [m["train_seconds"] for m in models], ratios.get(f"{model_type}_train_seconds"))
        row(f"{model_type}: size (MB)", [m["size_mb"] for m in models], ratios.get(f"{model_type}_size_mb"))
        for name, higher_better in _headline(model_type):
            arrow = "higher" if higher_better else "lower"
            row(f"{model_type}: test {name} ({arrow} is better)",
                [m["test_metrics"].get(name) for m in models], None, deltas.get(f"{model_type}_{name}"))
        if model_type in (CLASSIFICATION, REGRESSION):
            row(f"{model_type}: 1 row, shipped model (ms)",
                [m["test_metrics"].get("single_row_latency_ms") for m in models])
    latency_rows = (
        ("models_single_row_ms", "bundle: 1 row, clf + RUL + anomaly (ms)"),
        ("models_batch_ms", f"bundle: {BATCH_ROWS} rows, clf + RUL + anomaly (ms)"),
        ("end_to_end_single_row_ms", "bundle: 1 row from raw history, features + models (ms)"),
        ("end_to_end_batch_ms", f"bundle: {BATCH_ROWS} raw rows, features + models (ms)"),
        ("load_ms", "bundle: verify + load (ms)"),
    )
    for key, label in latency_rows:
        row(label, [runs[p]["latency"][key] for p in presets], ratios.get(key))
    lines += ["", "## Targets (pi preset)", "", "| target | value | limit | passed |", "|---|---|---|---|"]
    for target in result["targets"].values():
        passed = "n/a" if target["passed"] is None else ("PASS" if target["passed"] else "FAIL")
        lines.append(f"| {target['rule']} | {_fmt(target['value'])} | {_fmt(target['limit'])} | {passed} |")
    lines += [
        "",
        f"Metric deltas are seed - pi on the same test split. \"No worse\" allows {NO_WORSE_TOLERANCE:.0%}: pi's "
        "F1 at least 98 % of seed's and pi's RUL RMSE at most 102 % of seed's. The anomaly ensemble and the "
        "forecasts do not depend on the preset (their differences are run-to-run noise). Latency figures are "
        "medians of repeats on this machine, which may share its CPUs with other work.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- benchmark


def run_benchmark(
    out_dir: Path,
    presets: Sequence[str] = ("pi", "seed"),
    rows: tuple[int, int, int] = DEFAULT_ROWS,
    machine_type: str = DEFAULT_MACHINE_TYPE,
    seed: int = 0,
    *,
    seed_time_limit_s: float | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Simulate one machine, run each preset's whole graph in a fresh subprocess, bundle and time predictions;
    write bench.json and bench.md to `out_dir` and return the result (see the module docstring)."""
    from pdm_pipeline.core import keys
    from pdm_pipeline.core.contract import load_machine
    from pdm_pipeline.core.simulate import simulate_machine

    unknown = [p for p in presets if p not in TABULAR_PRESETS]
    if unknown or not presets:
        raise ValueError(f"bench: unknown preset(s) {unknown}; choose from {', '.join(TABULAR_PRESETS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    machine_id = f"bench_{machine_type}"
    data_root = out_dir / "data"
    log(f"bench: simulating {machine_id} ({machine_type}, rows {rows}, seed {seed})")
    machine = simulate_machine(data_root, machine_id, machine_type, seed, tuple(rows))
    test = load_machine(data_root, machine_id).splits["test"]

    runs: dict[str, dict[str, Any]] = {}
    for preset in presets:
        root = out_dir / preset
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(paths.machine_dir(data_root, machine_id), paths.machine_dir(root, machine_id))
        paths.metadata_dir(root).mkdir(parents=True)
        for file in (paths.metadata_path(data_root, machine_id), paths.profile_path(data_root, machine_id)):
            shutil.copy2(file, paths.metadata_dir(root) / file.name)
        time_limit = seed_time_limit_s if preset == "seed" else None
        report = _run_preset(root, machine_id, preset, time_limit, log)
        report["time_limit_s"] = time_limit or TABULAR_PRESETS[preset].time_limit_s
        if report.get("bundle") is None:
            raise RuntimeError(f"bench: the {preset} run released nothing: {report['release']['reason']}")
        report["latency"] = measure_latency(Path(report["bundle"]["path"]), test, keys.local_trust(root))
        log(f"bench: {preset}: one row clf + RUL + anomaly {report['latency']['models_single_row_ms']:.2f} ms")
        runs[preset] = report

    result: dict[str, Any] = {
        "machine": {
            "machine_id": machine_id,
            "machine_type": machine_type,
            "sensors": machine["sensors"],
            "rows": list(rows),
            "seed": seed,
        },
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "presets": runs,
    }
    if "pi" in runs and "seed" in runs:
        result["comparison"] = compare(runs["pi"], runs["seed"])
    if "pi" in runs:
        result["targets"] = check_targets(runs["pi"], runs.get("seed"))
    else:
        result["targets"] = {}
    report_md = markdown_report(result)
    (out_dir / RESULT_FILE).write_text(json.dumps(result, indent=1, default=float))
    (out_dir / REPORT_FILE).write_text(report_md)
    log(report_md)
    return result


def _rows(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--rows {text!r}: expected three integers train,val,test")
    return parts[0], parts[1], parts[2]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m pdm_pipeline.core.bench --out bench/ [--presets pi,seed] [--rows ...]`."""
    parser = argparse.ArgumentParser(prog="python -m pdm_pipeline.core.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench"), help="output directory (bench.json, bench.md)")
    parser.add_argument("--presets", default="pi,seed", help="comma-separated presets (default pi,seed)")
    parser.add_argument("--rows", type=_rows, default=DEFAULT_ROWS,
                        help="train,val,test rows (default 35000,7500,7500)")
    parser.add_argument("--machine-type", default=DEFAULT_MACHINE_TYPE,
                        help="simulated machine type (default compressor, 10 sensors)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")
    parser.add_argument("--seed-time-limit", type=float, default=None,
                        help="AutoGluon time limit per model for the seed preset (default: the preset's 900 s)")
    # Internal: the fresh subprocess of one preset's run.
    parser.add_argument("--train-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--machine-id", help=argparse.SUPPRESS)
    parser.add_argument("--time-limit", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    if args.train_child:
        _train_child(args.root, args.machine_id, presets[0], args.time_limit, args.result)
        return 0
    run_benchmark(args.out, presets, args.rows, args.machine_type, args.seed, seed_time_limit_s=args.seed_time_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
