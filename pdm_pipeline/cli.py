"""`pdm-pipeline` command line. Each command imports what it needs only when it runs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pdm_pipeline.core import paths


def _rows(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rows takes three integers train,val,test (got {text!r})") from None
    if len(parts) != 3 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"--rows takes three positive integers train,val,test (got {text!r})")
    return parts  # type: ignore[return-value]


def _root(args: argparse.Namespace) -> Path:
    return paths.data_root(args.data_dir)


def _instance():
    import dagster as dg

    os.environ.setdefault("DAGSTER_HOME", str(Path.cwd()))
    if not (Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml").exists():
        sys.exit(
            f"DAGSTER_HOME={os.environ['DAGSTER_HOME']} has no dagster.yaml: run from the project root "
            "(or use make) so the runs land in the project's instance"
        )
    return dg.DagsterInstance.get()


# ---------------------------------------------------------------------------------------------- commands


def cmd_simulate(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.simulate import simulate_fleet

    ids = simulate_fleet(_root(args), args.machines, args.seed, rows=args.rows, progress=True)
    print(f"wrote {len(ids)} machines under {_root(args)}: {', '.join(ids)}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.contract import validate_machine

    root = _root(args)
    ids = args.machine_id or paths.list_machine_dirs(root)
    if not ids:
        print(f"no machines under {paths.synthetic_dir(root)}")
        return 1
    failed = 0
    for machine_id in ids:
        problems = validate_machine(root, machine_id)
        if problems:
            failed += 1
            print(f"{machine_id}: {len(problems)} problem(s)")
            for p in problems:
                print(f"  - {p}")
        else:
            print(f"{machine_id}: ok")
    return 1 if failed else 0


def _print_summary(summaries: dict[str, dict[str, dict]]) -> None:
    for machine_id, models in summaries.items():
        print(f"\n== {machine_id}")
        for name, row in models.items():
            if row.get("skipped"):
                print(f"  {name:<20} skipped: {row['skipped']}")
                continue
            if name == "edge_bundle":
                print(f"  {name:<20} {row.get('size_mb') or 0:.2f} MB at <data root>/{row.get('path')}")
                continue
            facts = [f"{row.get('size_mb') or 0:.2f} MB", f"train {row.get('train_s') or 0:.1f} s"]
            facts += [f"{k} {v:.3f}" for k, v in row.items() if k not in ("size_mb", "train_s") and isinstance(v, float)]
            print(f"  {name:<20} " + ", ".join(facts))


def _run_machines(machine_ids: list[str], training: dict | None = None) -> int:
    from tqdm import tqdm

    from pdm_pipeline.defs.launch import machine_summary, materialize_machine

    instance = _instance()
    failures, summaries = [], {}
    bar = tqdm(machine_ids, desc="machines", unit="machine")
    for machine_id in bar:
        bar.set_postfix_str(machine_id)
        result = materialize_machine(instance, machine_id, training=training)
        if not result.success:
            failures.append(machine_id)
        summaries[machine_id] = machine_summary(instance, machine_id)
    _print_summary(summaries)
    if failures:
        print(f"\nFAILED: {', '.join(failures)} (see the step logs above or in the UI: make dev)")
        return 1
    print(f"\nall {len(machine_ids)} machines trained, evaluated and published; open the UI with: make dev")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.simulate import simulate_fleet

    root = _root(args)
    existing = paths.list_machine_dirs(root)
    if len(existing) >= args.machines and not args.regenerate:
        ids = existing[: args.machines]
        print(f"using existing sample data under {root}: {', '.join(ids)} (--regenerate to write it again)")
    else:
        ids = simulate_fleet(root, args.machines, args.seed, rows=args.rows, progress=True)
    return _run_machines(ids, training={"preset": args.preset})


def cmd_run(args: argparse.Namespace) -> int:
    root = _root(args)
    ids = args.machine_id or paths.list_machine_dirs(root)
    return _run_machines([paths.validate_machine_id(m) for m in ids], training={"preset": args.preset})


def _print_progress(progress: dict) -> None:
    total = progress["steps_total"] or "?"
    current = ", ".join(progress["current"]) or "-"
    print(f"run {progress['run_id']} ({progress['job']}, machine {progress['machine_id']}): {progress['status']}, "
          f"{progress['steps_done']}/{total} steps done, running: {current}")
    if progress["failed"]:
        print(f"  failed steps: {', '.join(progress['failed'])}")


def _follow(instance, run_id: str, poll_s: float = 2.0) -> dict:
    """Poll a run until it finishes, with a progress bar of its steps."""
    import time

    from tqdm import tqdm

    from pdm_pipeline.defs.launch import run_progress

    progress = run_progress(instance, run_id)
    with tqdm(total=progress["steps_total"], desc=run_id[:8], unit="step") as bar:
        while True:
            progress = run_progress(instance, run_id)
            bar.total = progress["steps_total"]
            bar.n = progress["steps_done"]
            bar.set_postfix_str(f"{progress['status']} {', '.join(progress['current'])[:60]}")
            bar.refresh()
            if progress["finished"]:
                return progress
            time.sleep(poll_s)


def cmd_train(args: argparse.Namespace) -> int:
    from pdm_pipeline.defs.launch import excluded_for, server_client, submit_to_server

    machine_id = paths.validate_machine_id(args.machine_id)
    training = {"preset": args.preset, "excluded_models": excluded_for(args.models)}
    client = None if args.in_process else server_client(args.server)
    if client is None:
        print(f"no Dagster webserver at {args.server}: training {machine_id} in this process")
        return _run_machines([machine_id], training=training)
    run_id = submit_to_server(client, machine_id, training=training)
    print(f"queued run {run_id} for {machine_id} on http://{args.server}/runs/{run_id}")
    if not args.wait:
        print(f"follow it with: pdm-pipeline status {run_id}")
        return 0
    progress = _follow(_instance(), run_id)
    _print_progress(progress)
    return 0 if progress["status"] == "SUCCESS" else 1


def cmd_status(args: argparse.Namespace) -> int:
    from pdm_pipeline.defs.launch import run_progress

    instance = _instance()
    progress = _follow(instance, args.run_id) if args.wait else run_progress(instance, args.run_id)
    _print_progress(progress)
    return 0 if progress["status"] in ("SUCCESS", "STARTED", "QUEUED", "STARTING", "NOT_STARTED") else 1


def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _json_dict(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ratios takes three numbers train,val,test (got {text!r})") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--ratios takes three numbers train,val,test (got {text!r})")
    return parts  # type: ignore[return-value]


IMPORT_OPTIONS = (
    "machine_id", "time_column", "time_format", "cycle_column", "cycle_unit", "duplicate_timestamps", "unit_column",
    "sensor_columns", "rename", "label_column", "eval_label_column", "drop_columns", "separator", "split",
    "split_column", "ratios", "compute_rul", "rul_cap_hours", "thresholds", "critical_sensors", "machine_type",
    "group_column", "seed",
)


def cmd_import(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.importer import ImportOptions, import_data

    values = {k: getattr(args, k) for k in IMPORT_OPTIONS if getattr(args, k) is not None}
    options = ImportOptions(**values).validate()
    ids = import_data(Path(args.source), _root(args), options, overwrite=args.overwrite)
    print(f"imported {len(ids)} machine(s) into {_root(args)}: {', '.join(ids)}")
    return 0


# Published references for the real datasets (../shared/realdata/README.md and NAB's final_results.json).
REAL_REFERENCES = {
    "ai4i": "AI4I 2020: gradient boosting without the failure-mode flags reaches about F1 0.90 (2026 study)",
    "nab": "NAB machine temperature: see nab/final_results.json for published detector scores (NAB scoring differs "
    "from our window precision/recall)",
}


def cmd_demo_real(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.importer import import_ai4i2020, import_nab_machine_temperature

    realdata, root = Path(args.realdata), _root(args)
    ai4i = realdata / "ai4i2020" / "ai4i2020.csv"
    nab = realdata / "nab" / "machine_temperature_system_failure.csv"
    windows = realdata / "nab" / "combined_windows.json"
    for f in (ai4i, nab, windows):
        if not f.is_file():
            raise FileNotFoundError(f"real dataset file not found: {f} (pass --realdata DIR)")
    ids = import_ai4i2020(ai4i, root, overwrite=True) + import_nab_machine_temperature(nab, windows, root, overwrite=True)
    print(f"imported {', '.join(ids)}")
    code = _run_machines(ids, training={"preset": args.preset})
    print("\nreferences:\n  - " + "\n  - ".join(REAL_REFERENCES.values()))
    return code


def cmd_export(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.bundle import build_bundle

    root = _root(args)
    out = Path(args.out) if args.out else paths.bundle_dir(root, args.machine_id)
    info = build_bundle(root, args.machine_id, out)
    for model_type, fmt in info.formats.items():
        diff = info.max_abs_diff.get(model_type)
        print(f"  {model_type:<15} {fmt}" + (f"  (max |native - AutoGluon| {diff:.1e})" if diff is not None else ""))
    for model_type, reason in info.absent.items():
        print(f"  {model_type:<15} absent: {reason}")
    print(f"bundle {info.path}: {info.n_files} files, {info.size_mb:.2f} MB (manifest.json lists their sha256)")
    return 0


def _write_table(frame, out: Path | None) -> None:
    import pandas as pd

    if out is None:
        with pd.option_context("display.max_rows", 50, "display.width", 160):
            print(frame.to_string(index=False) if len(frame) <= 50 else frame)
        return
    if out.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)
    print(f"wrote {len(frame)} rows to {out}")


def cmd_predict(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.predict import EdgePredictor, read_input

    predictor = EdgePredictor.load(args.bundle)
    raw = read_input(args.input)
    if args.forecast:
        result = predictor.forecast(raw if args.refit else None, hours=args.hours)
    else:
        result = predictor.predict(raw, latest_only=args.latest_only)
    _write_table(result, Path(args.output) if args.output else None)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.bench import run_benchmark

    result = run_benchmark(
        Path(args.out), args.presets, args.rows, args.machine_type, args.seed, seed_time_limit_s=args.seed_time_limit
    )
    failed = [t["rule"] for t in result["targets"].values() if t["passed"] is False]
    print(f"results: {Path(args.out) / 'bench.json'}, {Path(args.out) / 'bench.md'}")
    if failed:
        print("targets missed: " + "; ".join(failed))
    return 0


# ---------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdm-pipeline", description=__doc__)
    parser.add_argument("--data-dir", default=None, help="data root (default: $PDM_DATA_DIR or ./data)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write sample generator output for N machines")
    p.add_argument("--machines", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=_rows, default=(35_000, 7_500, 7_500), help="train,val,test rows")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("validate", help="check machines against the data contract; lists every problem")
    p.add_argument("--machine-id", action="append", help="machine id (repeatable; default: all)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("demo", help="sample data for N machines, then the whole graph for each, with a summary")
    p.add_argument("--machines", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=_rows, default=(35_000, 7_500, 7_500), help="train,val,test rows")
    p.add_argument("--preset", default="pi", choices=["pi", "seed", "server"])
    p.add_argument("--regenerate", action="store_true", help="write the sample data again even if present")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("import", help="convert CSV/parquet sensor data (a file or a directory) into the data contract")
    p.add_argument("source", help="a CSV or parquet file, or a directory of them")
    p.add_argument("--machine-id", required=True, help="machine id (with --group-column: the prefix)")
    p.add_argument("--time-column", help="datetime column")
    p.add_argument("--time-format", help="datetime format (pandas), e.g. ISO8601")
    p.add_argument("--cycle-column", help="cycle/step counter column (instead of --time-column)")
    p.add_argument("--cycle-unit", choices=["s", "min", "h", "d"], help="time unit of one cycle")
    p.add_argument("--duplicate-timestamps", choices=["error", "first", "last"])
    p.add_argument("--unit-column", help="column naming the physical unit / lifecycle of a row")
    p.add_argument("--sensor-columns", type=_csv_list, help="comma-separated sensor columns (default: all numeric)")
    p.add_argument("--rename", type=_json_dict, help='JSON {"source column": "sensor_name_unit"}')
    p.add_argument("--label-column", help="0/1 failure label kept as failure_status")
    p.add_argument("--eval-label-column", help="0/1 evaluation-only truth kept as anomaly_window")
    p.add_argument("--drop-columns", type=_csv_list, help="comma-separated columns to ignore (ids, leakage)")
    p.add_argument("--separator", help="CSV separator (default ,)")
    p.add_argument("--split", choices=["chronological", "unit", "column", "random"])
    p.add_argument("--split-column", help="with --split column: a column holding train/val/test")
    p.add_argument("--ratios", type=_ratios, help="train,val,test shares (default 0.7,0.15,0.15)")
    p.add_argument("--compute-rul", action="store_true", default=None, help="rul = hours to each unit's last row")
    p.add_argument("--rul-cap-hours", type=float)
    p.add_argument("--thresholds", type=_json_dict, help='JSON {"sensor": {"alarm": .., "trip": .., "direction": "high"}}')
    p.add_argument("--critical-sensors", type=_csv_list)
    p.add_argument("--machine-type")
    p.add_argument("--group-column", help="split one input into one machine per value of this column")
    p.add_argument("--seed", type=int)
    p.add_argument("--overwrite", action="store_true", help="replace an existing machine of that id")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("demo-real", help="import AI4I 2020 and NAB machine temperature, then train them")
    p.add_argument("--realdata", default="../shared/realdata", help="folder holding ai4i2020/ and nab/")
    p.add_argument("--preset", default="pi", choices=["pi", "seed", "server"])
    p.set_defaults(func=cmd_demo_real)

    p = sub.add_parser("train", help="train one machine: on the running Dagster instance, else in this process")
    p.add_argument("--machine-id", required=True)
    p.add_argument("--models", type=_csv_list, help="comma-separated subset of classification,regression,anomaly,timeseries")
    p.add_argument("--preset", default="pi", choices=["pi", "seed", "server"])
    p.add_argument("--wait", action="store_true", help="follow the run with a progress bar until it ends")
    p.add_argument("--server", default=os.environ.get("PDM_DAGSTER_SERVER", "127.0.0.1:3000"), help="webserver host:port")
    p.add_argument("--in-process", action="store_true", help="do not look for a webserver")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("status", help="progress of a run: status, steps done/total, current step")
    p.add_argument("run_id")
    p.add_argument("--wait", action="store_true", help="follow the run with a progress bar until it ends")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("run", help="run the whole graph in this process for machines already under the data root")
    p.add_argument("--machine-id", action="append", help="machine id (repeatable; default: all)")
    p.add_argument("--preset", default="pi", choices=["pi", "seed", "server"])
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("export", help="write a machine's edge bundle: its published models + manifest.json of hashes")
    p.add_argument("--machine-id", required=True)
    p.add_argument("--out", help="bundle directory (default: <data root>/bundles/<machine_id>)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="predict from a bundle on raw sensor rows (parquet or CSV, with history)")
    p.add_argument("--bundle", required=True, help="bundle directory written by `export`")
    p.add_argument("--input", required=True, help="parquet or CSV of raw sensor rows (timestamp, sensors[, unit_id])")
    p.add_argument("--output", help="write the predictions to this .csv or .parquet instead of printing them")
    p.add_argument("--latest-only", action="store_true", help="only the last row of each unit")
    p.add_argument("--forecast", action="store_true", help="the next hours per forecast sensor, 80 %%/95 %% intervals")
    p.add_argument("--hours", type=int, help="with --forecast: hours ahead (default: the trained horizon, 24)")
    p.add_argument("--refit", action="store_true",
                   help="with --forecast: forecast from the end of --input (refit on it), not the training history")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("bench", help="pi vs seed preset on one machine of the original size: time, memory, size, "
                       "metrics, latency; writes bench.json and bench.md")
    p.add_argument("--out", default="bench", help="output directory (default ./bench)")
    p.add_argument("--presets", type=_csv_list, default=["pi", "seed"], help="comma-separated presets (default pi,seed)")
    p.add_argument("--rows", type=_rows, default=(35_000, 7_500, 7_500), help="train,val,test rows")
    p.add_argument("--machine-type", default="compressor", help="simulated machine type (compressor: 10 sensors)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seed-time-limit", type=float, help="AutoGluon time limit per model for seed (default 900 s)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.data_dir:
        os.environ[paths.DATA_DIR_ENV] = str(Path(args.data_dir).resolve())
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, LookupError) as exc:
        # Bad input: one clear line, no traceback.
        print(f"pdm-pipeline {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from pdm_pipeline.core.bundle import BundleExportError, BundleIntegrityError

        if not isinstance(exc, (BundleExportError, BundleIntegrityError)):
            raise
        # A refused or unbuildable bundle: its message names the file or the model.
        print(f"pdm-pipeline {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
