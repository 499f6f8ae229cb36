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

    p = sub.add_parser("run", help="run the whole graph in this process for machines already under the data root")
    p.add_argument("--machine-id", action="append", help="machine id (repeatable; default: all)")
    p.add_argument("--preset", default="pi", choices=["pi", "seed", "server"])
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.data_dir:
        os.environ[paths.DATA_DIR_ENV] = str(Path(args.data_dir).resolve())
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # Bad input: one clear line, no traceback.
        print(f"pdm-pipeline {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
