"""`pdm-pipeline` command line. Each command imports what it needs only when it runs.

Exit codes: 0 everything published / ok; 3 published with warnings (a WARN gate failed, a model kept its
previous version because it was skipped, or one shipped without test metrics); 4 blocked (an ERROR gate stopped a model or a whole release); 1 a run
failed (a step raised: see its log); 2 bad input or settings (the message says what and where; nothing ran).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pdm_pipeline.core import paths
from pdm_pipeline.errors import PdmError

EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR, EXIT_WARNINGS, EXIT_BLOCKED = 0, 1, 2, 3, 4
OUTCOME_EXIT = {"published": EXIT_OK, "published with warnings": EXIT_WARNINGS, "blocked": EXIT_BLOCKED}


def _rows(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rows takes three integers train,val,test (got {text!r})") from None
    if len(parts) != 3 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"--rows takes three positive integers train,val,test (got {text!r})")
    return parts  # type: ignore[return-value]


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


def _root(args: argparse.Namespace) -> Path:
    return paths.data_root(args.data_dir)


def _instance():
    from pdm_pipeline.defs import quiet
    from pdm_pipeline.defs.instance_config import open_instance

    quiet.install()
    # DAGSTER_HOME's instance whatever the working directory: the project's dagster.yaml names its directories
    # relative to DAGSTER_HOME (.dagster_home/...), which Dagster would read against the working directory (an
    # empty instance, silently, when run from elsewhere). Absolute from here on for what this process starts.
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd()).resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    if not (home / "dagster.yaml").exists():
        raise PdmError(
            f"DAGSTER_HOME={home} has no dagster.yaml: run from the project root "
            "(or use make) so the runs land in the project's instance"
        )
    instance = open_instance(home)
    from pdm_pipeline.defs.recovery import sweep

    for line in sweep(instance, paths.data_root()):
        print(f"recovery: {line}", file=sys.stderr)
    return instance


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """--set key=value pairs (+ --preset, --models) as (training, gates) values, validated before anything runs."""
    from pdm_pipeline import families
    from pdm_pipeline.core.config import build_gate_settings, build_training_config, parse_settings

    parsed = parse_settings(getattr(args, "set", None) or [])
    training, gates = parsed.get("training", {}), parsed.get("gates", {})
    if getattr(args, "preset", None):
        training.setdefault("preset", args.preset)
    models = getattr(args, "models", None)
    if models is not None and not models:
        raise PdmError(f"--models names no model type; choose from {', '.join(families.model_types())}")
    if models:
        unknown = [m for m in models if m not in families.model_types()]
        if unknown:
            raise PdmError(f"--models: unknown model types {unknown}; choose from {', '.join(families.model_types())}")
    build_training_config(training)
    build_gate_settings(gates)
    return training, gates


# ---------------------------------------------------------------------------------------------- summaries


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_release(result: dict[str, Any], header: str = "") -> None:
    """Per model: released / kept previous / none, why, and every gate that did not pass (value vs limit)."""
    from pdm_pipeline import families

    print(f"\n== {result['machine_id']}{header}: {result.get('outcome', '?').upper()} - {result.get('reason', '')}")
    for model_type, entry in result.get("models", {}).items():
        family = families.get(model_type) if model_type in families.model_types() else None
        metrics = entry.get("metrics", {})
        shown = ", ".join(f"{m} {_fmt(metrics[m])}" for m, _ in (family.headline_metrics if family else ())
                          if m in metrics)
        size = f"{entry.get('size_mb') or 0:.2f} MB" if entry.get("size_mb") else ""
        print(f"  {model_type:<15} {entry['action']:<14} {size:>9}  {shown}")
        if entry["action"] != "released" or not shown:  # released without test metrics: say why
            print(f"  {'':<15} why: {entry['reason']}")
        for gate in entry.get("gates", []):
            if gate["status"] == "failed":
                word = "BLOCKED" if gate["severity"] == "ERROR" else "warned"
                print(f"  {'':<15} gate {gate['name']} {word}: {gate['description']}")
    for gate in result.get("release_gates", []):
        if gate["status"] == "failed":
            print(f"  release         gate {gate['name']} BLOCKED: {gate['description']}")


def _print_data_warnings(lines: list[str]) -> None:
    for line in lines:
        print(f"  data            {line}")


def _summary_exit(outcomes: list[str], failures: list[str]) -> int:
    if failures:
        return EXIT_FAILED
    return max((OUTCOME_EXIT.get(o, EXIT_FAILED) for o in outcomes), default=EXIT_OK)


def _final_line(machines: int, outcomes: list[str], failures: list[str]) -> str:
    counts = {o: outcomes.count(o) for o in dict.fromkeys(outcomes)}
    parts = [f"{n} {o}" for o, n in counts.items()]
    if failures:
        parts.append(f"{len(failures)} run(s) FAILED ({', '.join(failures)})")
    return f"{machines} machine(s): " + "; ".join(parts)


def _run_machines(machine_ids: list[str], training: dict | None, gates: dict | None, models: list[str] | None) -> int:
    from tqdm import tqdm

    from pdm_pipeline.defs.launch import check_request, data_check_warnings, latest_metadata, materialize_machine

    instance = _instance()
    for machine_id in machine_ids:  # everything checked before anything runs
        check_request(machine_id, training, gates, instance=instance)
    data_warnings: dict[str, list[str]] = {}  # the data checks of each run that only warned, beside its summary
    failures, outcomes = [], []
    bar = tqdm(machine_ids, desc="machines", unit="machine")
    results = []
    for machine_id in bar:
        bar.set_postfix_str(machine_id)
        run = materialize_machine(instance, machine_id, training=training, gates=gates, models=models, check=False)
        data_warnings[machine_id] = data_check_warnings(instance, run.run_id)
        release = latest_metadata(instance, "machine_release", machine_id)
        if not run.success or release.get("result") is None:
            failures.append(machine_id)
            if not run.success and _interrupted(run):
                rest = machine_ids[machine_ids.index(machine_id) + 1:]
                print(f"\ninterrupted (signal) during {machine_id}'s run"
                      + (f": not started: {', '.join(rest)}" if rest else ""), file=sys.stderr)
                return 130
            continue
        results.append(release["result"])
        outcomes.append(release["result"]["outcome"])
    _materialize_overview(instance)
    for result in results:
        print_release(result)
        _print_data_warnings(data_warnings.get(result["machine_id"], []))
    print("\n" + _final_line(len(machine_ids), outcomes, failures))
    if failures:
        print("failed runs: see the step logs above or in the UI (make dev)")
    else:
        print("open the UI with: make dev  (fleet_overview: machines x models)")
    return _summary_exit(outcomes, failures)


def _interrupted(run) -> bool:
    """Whether an in-process run ended because this process got SIGTERM/SIGINT (Dagster turns them into
    DagsterExecutionInterruptedError inside the run and returns a failed result)."""
    return any(e.is_failure and "interrupted" in (e.message or "").lower() for e in run.all_events)


def _materialize_overview(instance) -> None:
    """Refresh the fleet overview asset (machines x models) after a batch of runs."""
    import dagster as dg

    from pdm_pipeline.defs.assets.fleet import fleet_overview
    from pdm_pipeline.defs.resources import DataRootResource

    dg.materialize([fleet_overview], instance=instance, resources={"data_root": DataRootResource()},
                   raise_on_error=False, tags={"pdm/trigger": "cli"})


# ---------------------------------------------------------------------------------------------- commands


def cmd_simulate(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.simulate import simulate_fleet

    ids = simulate_fleet(_root(args), args.machines, args.seed, rows=args.rows, progress=True, overwrite=args.overwrite)
    print(f"wrote {len(ids)} machines under {_root(args)}: {', '.join(ids)}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.config import build_gate_settings, parse_settings
    from pdm_pipeline.core.validation import machine_report

    root = _root(args)
    gates = build_gate_settings(parse_settings(args.set or []).get("gates"))
    ids = args.machine_id or paths.list_machine_dirs(root)
    if not ids:
        print(f"no machines under {paths.synthetic_dir(root)}")
        return EXIT_USER_ERROR
    worst = EXIT_OK
    for machine_id in ids:
        report = machine_report(root, machine_id, gates)
        state = "ERRORS" if report.errors else "warnings" if report.warnings else "ok"
        timed = report.splits and report.splits[0]["unit"] != "no time order"
        print(f"{machine_id}: {state}" + (f" ({len(report.sensors)} sensors, "
                                          + (f"time unit {report.time_unit})" if timed else "no time order)")
                                          if report.time_unit else ""))
        for split in report.splits:
            print(f"  {split['split']:<5} {split['rows']:>8,} rows  {split['units']:>4} unit(s)  {split['span']}  "
                  f"[{split['unit']}]")
        for line in report.errors:
            print(f"  ERROR {line}")
        for line in report.warnings:
            print(f"  WARN  {line}")
        if report.errors:
            worst = EXIT_USER_ERROR
        elif report.warnings:
            worst = max(worst, EXIT_WARNINGS)
    return worst


def cmd_demo(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.simulate import simulate_fleet

    root = _root(args)
    training, gates = _settings(args)
    existing = paths.list_machine_dirs(root)
    if len(existing) >= args.machines and not args.regenerate:
        ids = existing[: args.machines]
        print(f"using existing sample data under {root}: {', '.join(ids)} (--regenerate to write it again)")
    else:
        ids = simulate_fleet(root, args.machines, args.seed, rows=args.rows, progress=True)
    return _run_machines(ids, training, gates, None)


def cmd_run(args: argparse.Namespace) -> int:
    root = _root(args)
    training, gates = _settings(args)
    ids = args.machine_id or paths.list_machine_dirs(root)
    if not ids:
        raise PdmError(f"no machines under {paths.synthetic_dir(root)}")
    return _run_machines([paths.validate_machine_id(m) for m in ids], training, gates, args.models)


def _print_progress(progress: dict) -> None:
    total = progress["steps_total"] or "?"
    current = ", ".join(progress["current"]) or "-"
    head = f"run {progress['run_id'][:8]} ({progress['job']}, machine {progress['machine_id']}): "
    if progress.get("refused"):
        # refused by the checks at the door (machine id, data contract, settings): no step ran
        print(f"{head}REFUSED before queueing (nothing ran)")
        print(_indent(progress.get("failure") or "no reason recorded"))
        return
    print(f"{head}{progress['status']}, {progress['steps_done']}/{total} steps done, running: {current}")
    if progress.get("reexecution_of"):
        reused = progress.get("reused_steps")
        print(f"  re-execution of run {progress['reexecution_of'][:8]}"
              + (f": the work of its other {reused} step(s) is that run's (or its parent's)" if reused else ""))
    if progress["failed"]:
        print(f"  failed steps: {', '.join(progress['failed'])}")
        for step, error in (progress.get("step_errors") or {}).items():
            print(f"    {step}: " + _indent(error, "      ").lstrip())
        for line in progress.get("failed_data_checks", []):
            print(f"  data check {line}")
    elif progress.get("failure"):  # failed outside any step (its process died, a resource failed to start)
        print(_indent(progress["failure"]))
    if progress.get("interrupted"):
        print(f"  interrupted steps (the run's process ended while they ran): {', '.join(progress['interrupted'])}")
    release = progress.get("release") or {}
    if release.get("outcome"):
        print(f"  release {release.get('release_id')}: {release['outcome']} - {release.get('reason')}")
        for model_type, row in release["models"].items():
            extra = f" ({row['reason']})" if row.get("reason") else ""
            print(f"    {model_type:<15} {row.get('action')}{extra}")
        for line in release.get("release_warnings", []):
            print(f"  release gate {line}")
        _print_data_warnings(release.get("data_warnings", []))


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in str(text).strip().splitlines())


def _progress_exit(progress: dict) -> int:
    if progress.get("refused"):
        return EXIT_USER_ERROR
    if progress["status"] != "SUCCESS":
        return EXIT_FAILED
    return OUTCOME_EXIT.get((progress.get("release") or {}).get("outcome"), EXIT_OK)


def _follow(instance, run_id: str, poll_s: float = 2.0) -> dict:
    """Poll a run until it finishes, with a progress bar of its steps."""
    import time

    from tqdm import tqdm

    from pdm_pipeline.defs.launch import run_progress

    progress = run_progress(instance, run_id)
    with tqdm(total=progress["steps_total"], desc=progress["run_id"][:8], unit="step") as bar:
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
    from pdm_pipeline.defs.launch import check_request, server_client, submit_to_server

    machine_id = paths.validate_machine_id(args.machine_id)
    training, gates = _settings(args)
    check_request(machine_id, training, gates)
    server = args.server or os.environ.get("PDM_DAGSTER_SERVER")
    if args.in_process or not server:
        return _run_machines([machine_id], training, gates, args.models)
    client = server_client(server)
    run_id = submit_to_server(client, machine_id, training=training, gates=gates, models=args.models)
    print(f"queued run {run_id[:8]} ({run_id}) for {machine_id} on http://{server}/runs/{run_id}")
    if not args.wait:
        print(f"follow it with: pdm-pipeline status {run_id[:8]} --wait")
        return EXIT_OK
    progress = _follow(_instance(), run_id)
    _print_progress(progress)
    return _progress_exit(progress)


def cmd_status(args: argparse.Namespace) -> int:
    from pdm_pipeline.defs.launch import run_progress

    instance = _instance()
    progress = _follow(instance, args.run_id) if args.wait else run_progress(instance, args.run_id)
    _print_progress(progress)
    if not progress["finished"]:
        return EXIT_OK
    return _progress_exit(progress)


IMPORT_OPTIONS = (
    "machine_id", "time_column", "time_format", "cycle_column", "cycle_unit", "time_unit", "duplicate_timestamps",
    "unit_column", "sensor_columns", "rename", "label_column", "eval_label_column", "ignore_label_columns",
    "drop_columns", "separator", "header", "columns", "decimal", "split", "split_column", "ratios", "train_rows",
    "val_share", "compute_rul", "rul_cap", "thresholds", "critical_sensors", "machine_type", "group_column", "seed",
)


def cmd_import(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from pdm_pipeline.core.importer import ImportOptions, import_data

    known = {f.name for f in fields(ImportOptions)}
    values = {k: getattr(args, k) for k in IMPORT_OPTIONS if k in known and getattr(args, k, None) is not None}
    options = ImportOptions(**values).validate()
    ids = import_data(Path(args.source), _root(args), options, overwrite=args.overwrite)
    print(f"imported {len(ids)} machine(s) into {_root(args)}: {', '.join(ids)}")
    _report_refusals(_root(args), ids)
    return 0


def _report_refusals(root: Path, ids: list[str]) -> None:
    """What a run would refuse at the default settings, said at import (the importer keeps missing values as they
    are: how many a sensor may miss is a training setting)."""
    import json

    from pdm_pipeline.core.config import build_gate_settings
    from pdm_pipeline.core.validation import machine_report

    settings = build_gate_settings(None)
    for machine_id in ids:
        source = json.loads(paths.metadata_path(root, machine_id).read_text()).get("source") or {}
        dropped = source.get("dropped_duplicate_timestamp_rows")
        if dropped:
            print(f"note: {machine_id}: {dropped} row(s) dropped that repeated a time (duplicate_timestamps)")
        errors = machine_report(root, machine_id, settings).errors
        if errors:
            print(f"note: a run of {machine_id} would refuse it at the default settings ({len(errors)} error(s); "
                  "`pdm-pipeline validate` lists them all):")
            for line in errors[:5]:
                print(f"  ERROR {line}")
            print("  drop such columns with --drop-columns, or raise the tolerance (pdm-pipeline settings)")


def cmd_import_nab(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.importer import import_nab

    source = Path(args.source)
    windows = Path(args.windows) if args.windows else source.parent / "combined_windows.json"
    ids = import_nab(source, windows, _root(args), args.machine_id, sensor=args.sensor, overwrite=args.overwrite,
                     probation=args.probation)
    print(f"imported {', '.join(ids)} into {_root(args)} (anomaly windows from {windows})")
    return 0


def cmd_demo_real(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.importer import import_ai4i2020, import_nab_machine_temperature

    realdata, root = Path(args.realdata), _root(args)
    training, gates = _settings(args)
    ai4i = realdata / "ai4i2020" / "ai4i2020.csv"
    nab = realdata / "nab" / "machine_temperature_system_failure.csv"
    windows = realdata / "nab" / "combined_windows.json"
    for f in (ai4i, nab, windows):
        if not f.is_file():
            raise PdmError(f"real dataset file not found: {f} (pass --realdata DIR)")
    ids = import_ai4i2020(ai4i, root, overwrite=True) + import_nab_machine_temperature(nab, windows, root, overwrite=True)
    print(f"imported {', '.join(ids)}; training the pooled models of fleet ai4i first")
    args.set = [*(args.set or [])]
    if cmd_fleet(args) != EXIT_OK:
        return EXIT_FAILED
    return _run_machines(ids, training, gates, None)


def _trust(args: argparse.Namespace):
    from pdm_pipeline.core import keys
    from pdm_pipeline.edge.predictor import default_trust

    public_key = getattr(args, "public_key", None)
    local = keys.public_key_path(_root(args))
    if public_key is None and not os.environ.get("PDM_PUBLIC_KEY") and local.is_file():
        public_key = local  # on the training host: its own key
    return default_trust(public_key, getattr(args, "allow_unsigned", False))


def cmd_export(args: argparse.Namespace) -> int:
    from pdm_pipeline.core import keys
    from pdm_pipeline.core.bundle import export_bundle
    from pdm_pipeline.core.release import current_release_dir, verify_release

    root = _root(args)
    release = current_release_dir(root, paths.validate_machine_id(args.machine_id))
    if release is None:
        raise PdmError(f"machine {args.machine_id} has no release under {paths.releases_dir(root, args.machine_id)}")
    trust = keys.local_trust(root)
    description = verify_release(release, trust)  # the whole set: every model it lists and its bundle
    if not args.out:
        print(f"{release / 'bundle'}  (release {description['release_id']}; copy it with --out DIR)")
        return EXIT_OK
    info = export_bundle(release / "bundle", Path(args.out), trust)
    for model_type, entry in info["models"].items():
        print(f"  {model_type:<15} {entry['format']}")
    print(f"bundle of release {info['release_id']} -> {info['path']}: {info['n_files']} files, "
          f"{info['total_bytes'] / 1e6:.2f} MB, signed (public key: {keys.public_key_path(root)})")
    return EXIT_OK


def _write_table(frame, out: Path | None) -> None:
    if out is None:
        try:
            frame.to_csv(sys.stdout, index=False)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader stopped early (`| head`): not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if out.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)
    print(f"wrote {len(frame)} rows to {out}", file=sys.stderr)


def cmd_predict(args: argparse.Namespace) -> int:
    from pdm_pipeline.edge.predictor import EdgePredictor, status_note

    if args.output and not Path(args.output).parent.is_dir():
        raise PdmError(f"--output {args.output}: the directory {Path(args.output).parent} does not exist")
    if args.output and Path(args.output).suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise PdmError(f"--output {args.output}: write .csv or .parquet (the table is written in that format)")
    predictor = EdgePredictor.load(args.bundle, trust=_trust(args))
    raw = predictor.read_input(args.input)
    if args.forecast:
        result = predictor.forecast_in_input_form(
            predictor.forecast(None if args.from_training_end else raw, horizon=args.horizon), raw)
    else:
        result = predictor.in_input_form(predictor.predict(raw, latest_only=args.latest_only), raw)
    _write_table(result, Path(args.output) if args.output else None)
    if note := status_note(result):
        print(note, file=sys.stderr)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.bench import run_benchmark

    result = run_benchmark(
        Path(args.out), args.presets, args.rows, args.machine_type, args.seed, seed_time_limit_s=args.seed_time_limit
    )
    failed = [t["rule"] for t in result["targets"].values() if t["passed"] is False]
    print(f"results: {Path(args.out) / 'bench.json'}, {Path(args.out) / 'bench.md'}")
    if failed:
        print("targets missed: " + "; ".join(failed))
    return EXIT_OK


def cmd_bench_real(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.bench_real import markdown, run_bench_real

    result = run_bench_real(Path(args.realdata), Path(args.out))
    print(markdown(result))
    print(f"results: {Path(args.out) / 'bench-real.json'}, {Path(args.out) / 'bench-real.md'}")
    return EXIT_OK


def cmd_bench_pooling(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.bench_pooling import markdown, run_bench_pooling

    result = run_bench_pooling(Path(args.out), args.machines, args.rows, args.seed, args.horizon)
    print(markdown(result))
    print(f"results: {Path(args.out) / 'bench-pooling.json'}, {Path(args.out) / 'bench-pooling.md'}")
    return EXIT_OK


def cmd_bench_rules(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.bench_rules import markdown, run_bench_rules

    result = run_bench_rules(Path(args.out), args.datasets, args.first_seed, args.shared)
    print(markdown(result))
    print(f"results: {Path(args.out) / 'bench-rules.json'}, {Path(args.out) / 'bench-rules.md'}")
    return EXIT_OK


def cmd_bench_fleet(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.postgres import configured_url
    from pdm_pipeline.defs import quiet
    from pdm_pipeline.defs.bench_fleet import markdown, run_bench_fleet

    quiet.install()
    result = run_bench_fleet(Path(args.out), args.machines, args.rows, args.seed,
                             postgres_url=args.postgres_url or configured_url(),
                             max_concurrent_runs=args.max_concurrent_runs)
    print(markdown(result))
    print(f"results: {Path(args.out) / 'bench-fleet.json'}, {Path(args.out) / 'bench-fleet.md'}")
    return EXIT_OK if not result["failed_runs"] else EXIT_FAILED


def cmd_fleet(args: argparse.Namespace) -> int:
    """Train the pooled models of every fleet (materializes the fleet_models asset in this instance)."""
    import dagster as dg

    from pdm_pipeline.defs.assets.fleet import fleet_models
    from pdm_pipeline.defs.launch import PreQueueError, disk_problem
    from pdm_pipeline.defs.resources import DataRootResource, TrainingResource

    training, _ = _settings(args)
    instance = _instance()
    if problem := disk_problem(paths.data_root(), instance):  # (the run's own start checks it too)
        raise PreQueueError(f"fleet models: not trained, {problem}")
    result = dg.materialize([fleet_models], instance=instance, raise_on_error=False,
                            resources={"data_root": DataRootResource(), "training": TrainingResource(**training)},
                            tags={"pdm/trigger": "cli"})
    for event in result.get_asset_materialization_events():
        table = event.materialization.metadata.get("pooled")
        print(getattr(table, "value", table))
    return EXIT_OK if result.success else EXIT_FAILED


def cmd_settings(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.config import setting_help

    for key, default, help_text in setting_help():
        print(f"{key:<28} default {default:<22} {help_text}")
    return EXIT_OK


def cmd_instance_config(args: argparse.Namespace) -> int:
    from pdm_pipeline.core.postgres import configured_url
    from pdm_pipeline.defs.instance_config import write_instance

    url = args.postgres_url or configured_url()
    home = Path(args.home or (".dagster_home/postgres" if url else ".dagster_home/sqlite")).resolve()
    env = write_instance(home, postgres_url=url, max_concurrent_runs=args.max_concurrent_runs)
    print(f"wrote {home / 'dagster.yaml'} ({'PostgreSQL' if url else 'SQLite'}); use it with:", file=sys.stderr)
    for key, value in env.items():
        print(f"export {key}={value}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- parser


def _add_settings(p: argparse.ArgumentParser, models: bool = True) -> None:
    p.add_argument("--preset", choices=["pi", "seed", "server"], help="training preset (default pi)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any training or gate setting, repeatable, e.g. --set rul_cap=125 --set horizon=30 "
                   "--set strict_quality_gates=classifier_recall (list them: pdm-pipeline settings)")
    if models:
        p.add_argument("--models", type=_csv_list,
                       help="comma-separated model types to train (the others keep their released version)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdm-pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="data root (default: $PDM_DATA_DIR or ./data)")
    parser.add_argument("--verbose", action="store_true", help="log DEBUG lines too")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write sample generator output for N machines")
    p.add_argument("--machines", type=int, default=3, help="how many machines (types cycle: motor, pump, ...)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--rows", type=_rows, default=(35_000, 7_500, 7_500), help="train,val,test rows")
    p.add_argument("--overwrite", action="store_true", help="replace machines that already exist")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("validate", help="everything that would stop or warn a run: contract and data checks")
    p.add_argument("--machine-id", action="append", help="machine id (repeatable; default: all)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="gate settings, e.g. max_critical_nan_share=0.01")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("demo", help="sample data for N machines, then the whole graph for each, with a summary")
    p.add_argument("--machines", type=int, default=3, help="how many sample machines")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sample data")
    p.add_argument("--rows", type=_rows, default=(35_000, 7_500, 7_500), help="train,val,test rows")
    p.add_argument("--regenerate", action="store_true", help="write the sample data again even if present")
    _add_settings(p, models=False)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("import", help="convert CSV/text/parquet sensor data (a file or a directory) into the contract")
    p.add_argument("source", help="a CSV, text or parquet file, or a directory of them")
    p.add_argument("--machine-id", required=True, help="machine id (with --group-column: the prefix)")
    p.add_argument("--time-column", help="datetime column")
    p.add_argument("--time-format", help="datetime format (pandas), e.g. ISO8601; unix_s or unix_ms for Unix times")
    p.add_argument("--cycle-column", help="cycle/step counter column (instead of --time-column)")
    p.add_argument("--cycle-unit", help="cycles (default) or steps; s/min/h/d turn counters into datetimes")
    p.add_argument("--time-unit", help="unit of rul and horizons for --time-column data (default hours)")
    p.add_argument("--duplicate-timestamps", choices=["error", "first", "last"], help="repeated timestamps in a unit")
    p.add_argument("--unit-column", help="column naming the physical unit / lifecycle of a row")
    p.add_argument("--sensor-columns", type=_csv_list, help="comma-separated sensor columns (default: all numeric)")
    p.add_argument("--rename", type=_json_dict, help='JSON {"source column": "sensor_name_unit"}')
    p.add_argument("--label-column", help="0/1 failure label kept as failure_status")
    p.add_argument("--eval-label-column", help="0/1 evaluation-only truth kept as anomaly_window")
    p.add_argument("--label-columns", dest="ignore_label_columns", type=_csv_list,
                   help="other label-like columns (e.g. changepoint): dropped, never sensors")
    p.add_argument("--drop-columns", type=_csv_list, help="comma-separated columns to ignore (ids, leakage)")
    p.add_argument("--separator", help="column separator (default ,); 'whitespace' for space-aligned text")
    p.add_argument("--no-header", dest="header", action="store_false", default=None,
                   help="the file has no header row (give --columns)")
    p.add_argument("--columns", type=_csv_list, help="column names for a file without header")
    p.add_argument("--decimal-comma", dest="decimal", action="store_const", const=",", help="numbers use a decimal comma")
    p.add_argument("--split", help="chronological, unit, column, random or first_rows")
    p.add_argument("--split-column", help="with --split column: a column holding train/val/test")
    p.add_argument("--ratios", type=_ratios, help="train,val,test shares (default 0.7,0.15,0.15)")
    p.add_argument("--train-rows", type=int, help="with --split first_rows: the first N rows of each unit train")
    p.add_argument("--val-share", type=float, help="with --split first_rows: share of those N rows kept for val")
    p.add_argument("--compute-rul", action="store_true", default=None, help="rul = time to each unit's last row")
    p.add_argument("--rul-cap", type=float, help="cap the computed rul (the data's time unit)")
    p.add_argument("--thresholds", type=_json_dict, help='JSON {"sensor": {"alarm": .., "trip": .., "direction": "high"}}')
    p.add_argument("--critical-sensors", type=_csv_list, help="sensors that get forecasts and alarm labels")
    p.add_argument("--machine-type", help="machine type / fleet (machines of one type may share pooled models)")
    p.add_argument("--group-column", help="split one input into one machine per value of this column")
    p.add_argument("--seed", type=int, help="seed of the random split")
    p.add_argument("--overwrite", action="store_true", help="replace an existing machine of that id")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("import-nab", help="one NAB data file (timestamp, value) with its labelled anomaly windows")
    p.add_argument("source", help="a NAB data file, e.g. realKnownCause/ambient_temperature_system_failure.csv")
    p.add_argument("--windows", help="NAB's combined_windows.json (default: beside the file)")
    p.add_argument("--machine-id", help="machine id (default nab_<file stem>)")
    p.add_argument("--sensor", default="value", help="sensor name of the value column (default value)")
    p.add_argument("--probation", action="store_true",
                   help="NAB's protocol: its probationary period (15 %% of rows, at most 750) trains, every later row is test")
    p.add_argument("--overwrite", action="store_true", help="replace an existing machine of that id")
    p.set_defaults(func=cmd_import_nab)

    p = sub.add_parser("demo-real", help="import AI4I 2020 and NAB machine temperature, then train them")
    p.add_argument("--realdata", default="../shared/realdata", help="folder holding ai4i2020/ and nab/")
    _add_settings(p, models=False)
    p.set_defaults(func=cmd_demo_real)

    p = sub.add_parser("train", help="train one machine in this process, or queue it on a webserver (--server)")
    p.add_argument("--machine-id", required=True, help="the machine to train")
    _add_settings(p)
    p.add_argument("--wait", action="store_true", help="with --server: follow the run with a progress bar until it ends")
    p.add_argument("--server", help="queue on the Dagster webserver at host:port (default $PDM_DAGSTER_SERVER; "
                   "none: train in this process)")
    p.add_argument("--in-process", action="store_true", help="train in this process even if a server is configured")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("status", help="progress of a run: status, steps done/total, current step, release outcome")
    p.add_argument("run_id", help="the run id, or its first characters")
    p.add_argument("--wait", action="store_true", help="follow the run with a progress bar until it ends")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("run", help="run the whole graph in this process for machines already under the data root")
    p.add_argument("--machine-id", action="append", help="machine id (repeatable; default: all)")
    _add_settings(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("export", help="check a machine's current release and copy its signed edge bundle")
    p.add_argument("--machine-id", required=True, help="the machine")
    p.add_argument("--out", help="directory to copy the bundle to (new, empty, or an older bundle)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="predict from a signed bundle on raw sensor rows (parquet or CSV, with history)")
    p.add_argument("--bundle", required=True, help="bundle directory (export --out, or <release>/bundle)")
    p.add_argument("--input", required=True, help="parquet or CSV of raw sensor rows (timestamp, sensors[, unit_id])")
    p.add_argument("--output", help="write to this .csv or .parquet (default: CSV on stdout, every column)")
    p.add_argument("--latest-only", action="store_true", help="only the last row of each unit")
    p.add_argument("--forecast", action="store_true", help="forecast each forecast sensor after the input's last row")
    p.add_argument("--horizon", type=float, help="with --forecast: how far ahead, in the data's time unit")
    p.add_argument("--from-training-end", action="store_true",
                   help="with --forecast: continue the training history instead of the input")
    p.add_argument("--public-key", help="trusted public key (default $PDM_PUBLIC_KEY, or this data root's key)")
    p.add_argument("--allow-unsigned", action="store_true", help="accept a bundle without a valid signature")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("fleet", help="train the pooled models of every fleet (machines sharing a machine_type)")
    _add_settings(p, models=False)
    p.set_defaults(func=cmd_fleet)

    p = sub.add_parser("bench-real", help="AI4I 2020, SKAB and NAB with their own protocols, beside the references")
    p.add_argument("--realdata", default="../shared/realdata", help="folder holding ai4i2020/, skab_other/, nab/")
    p.add_argument("--out", default="bench-real", help="output directory (bench-real.json, bench-real.md)")
    p.set_defaults(func=cmd_bench_real)

    p = sub.add_parser("bench-pooling", help="fleet pooled models vs each machine's own, on test: which shipped "
                       "and what it did to each machine's test metrics")
    p.add_argument("--machines", type=int, default=10, help="simulated machines (types cycle; default 10 = 5 fleets)")
    p.add_argument("--rows", type=_rows, default=(10_000, 2_500, 2_500), help="train,val,test rows")
    p.add_argument("--seed", type=int, default=1, help="simulation seed")
    p.add_argument("--horizon", type=float, default=48.0, help="one label horizon for every machine (hours)")
    p.add_argument("--out", default="bench-pooling", help="output directory (bench-pooling.json, .md)")
    p.set_defaults(func=cmd_bench_pooling)

    p = sub.add_parser("bench-rules", help="pooled classifier with and without member copies on random rule "
                       "datasets made for the check (rows without time order), F1 on unseen rows")
    p.add_argument("--datasets", type=int, default=16, help="random fleets (default 16)")
    p.add_argument("--first-seed", type=int, default=0, help="seed of the first fleet")
    p.add_argument("--shared", action="store_true", help="every member has the same limits (default: most shifted)")
    p.add_argument("--out", default="bench-rules", help="output directory (bench-rules.json, .md)")
    p.set_defaults(func=cmd_bench_rules)

    p = sub.add_parser("bench-fleet", help="N sample machines through the real daemon path (sensor -> queue -> "
                       "runs): wall time, machines per hour, peak memory, failed runs, queued vs in-process")
    p.add_argument("--machines", type=int, default=20, help="machines in the fleet (default 20)")
    p.add_argument("--rows", type=_rows, default=(35_000, 7_500, 7_500), help="train,val,test rows (default full size)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed")
    p.add_argument("--out", default="bench-fleet", help="output directory (replaced; bench-fleet.json, .md)")
    p.add_argument("--postgres-url", help="run the instance on PostgreSQL (default $PDM_POSTGRES_URL; none: SQLite)")
    p.add_argument("--max-concurrent-runs", type=int, help="runs at once (default: the project's dagster.yaml)")
    p.set_defaults(func=cmd_bench_fleet)

    p = sub.add_parser("instance-config", help="render the Dagster instance (dagster.yaml) on PostgreSQL "
                       "($PDM_POSTGRES_URL) or SQLite, create the databases; prints the exports to use it")
    p.add_argument("--postgres-url", help="postgresql://user@host:port/db (default $PDM_POSTGRES_URL; none: SQLite)")
    p.add_argument("--home", help="directory for dagster.yaml and local files (default .dagster_home/postgres, or .dagster_home/sqlite without a URL)")
    p.add_argument("--max-concurrent-runs", type=int, help="runs at once (default: the project's dagster.yaml)")
    p.set_defaults(func=cmd_instance_config)

    p = sub.add_parser("settings", help="list every --set key with its default and meaning")
    p.set_defaults(func=cmd_settings)

    p = sub.add_parser("bench", help="pi vs seed preset on one machine of the original size: time, memory, size, "
                       "metrics, latency; writes bench.json and bench.md")
    p.add_argument("--out", default="bench", help="output directory (default ./bench)")
    p.add_argument("--presets", type=_csv_list, default=["pi", "seed"], help="comma-separated presets (default pi,seed)")
    p.add_argument("--rows", type=_rows, default=(35_000, 7_500, 7_500), help="train,val,test rows")
    p.add_argument("--machine-type", default="compressor", help="simulated machine type (compressor: 10 sensors)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the simulated machine")
    p.add_argument("--seed-time-limit", type=float, help="AutoGluon time limit per model for seed (default 900 s)")
    p.set_defaults(func=cmd_bench)
    return parser


_PIPELINE_MODULES = {"dagster", "dagster_graphql", "autogluon", "mlflow", "prophet", "sklearn", "tqdm", "matplotlib",
                     "scipy"}

# Commands that run Dagster: their step logs (which capture `pdm_pipeline.*`, see dagster.yaml python_logs)
# are printed by Dagster's console logger; a second handler here would print every line twice.
_DAGSTER_COMMANDS = {"demo", "run", "train", "status", "demo-real"}


def _configure_logging(command: str, verbose: bool) -> None:
    """Core progress (stdlib logging, `pdm_pipeline.*`) at INFO on stderr for core-only commands; noisy
    libraries at WARNING."""
    for name in ("cmdstanpy", "prophet", "matplotlib", "alembic", "mlflow", "urllib3", "git", "autogluon"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logger = logging.getLogger("pdm_pipeline")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if command not in _DAGSTER_COMMANDS and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.command, args.verbose)
    if args.data_dir:
        os.environ[paths.DATA_DIR_ENV] = str(Path(args.data_dir).resolve())
    try:
        return int(args.func(args) or 0)
    except PdmError as exc:
        # Something the user can fix: one clear message, no traceback.
        print(f"pdm-pipeline {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _PIPELINE_MODULES:
            raise
        # An edge-only install (pip install 'pdm-pipeline[edge]') running a training-host command.
        print(f"pdm-pipeline {args.command}: error: this command needs the training pipeline ({exc.name} is not "
              "installed): pip install 'pdm-pipeline[pipeline]'; on a Raspberry Pi use `pdm-edge`", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
