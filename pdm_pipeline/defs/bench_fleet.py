"""`make bench-fleet`: N sample machines through the real daemon path (sensor -> queue -> runs), measured.

1. Reference: one extra machine trained in process (`pdm-pipeline train`, a fresh process, as an operator would)
   on its own copy of the data, wall time from process start to exit.
2. Queued: the same machine dropped into the data root of a running `dagster dev` (its own instance, the
   project's dagster.yaml rendered into the bench directory, SQLite or PostgreSQL): the sensor sees it, the run
   queues and runs. Its cost is the run's time from creation to end (queue + launch + worker + steps): the
   "queued vs in-process" ratio (target <= 1.3).
3. Fleet: N machines dropped at once; wall time from the drop to the end of the last run (the sensor's settle
   ticks included), machines per hour, mean run time and queue wait, peak resident memory of the whole process
   tree (webserver, daemon, code server, run workers), failed runs with their reason.

Writes bench-fleet.json and bench-fleet.md in the output directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg

from pdm_pipeline.core import paths
from pdm_pipeline.defs.devserver import DagsterDev
from pdm_pipeline.defs.instance_config import open_instance, write_instance
from pdm_pipeline.defs.jobs import TRAIN_JOB

FULL_SIZE = (35_000, 7_500, 7_500)
REFERENCE = "reference_000"


def _drop(source: Path, target: Path, machine_id: str, as_id: str | None = None) -> None:
    """Move a simulated machine into a data root the way a generator finishing would (files renamed into place)."""
    as_id = as_id or machine_id
    (target / "synthetic").mkdir(parents=True, exist_ok=True)
    (target / "metadata").mkdir(parents=True, exist_ok=True)
    os.replace(paths.machine_dir(source, machine_id), paths.machine_dir(target, as_id))
    metadata = json.loads(paths.metadata_path(source, machine_id).read_text())
    if as_id != machine_id:
        metadata["machine_id"] = as_id
    tmp = paths.metadata_path(target, as_id).with_suffix(".tmp")
    tmp.write_text(json.dumps(metadata, indent=1))
    stamp = paths.split_path(target, as_id, "train").stat().st_mtime
    os.utime(tmp, (stamp, stamp))  # as old as the data: settled
    os.replace(tmp, paths.metadata_path(target, as_id))
    profile = paths.profile_path(source, machine_id)
    if profile.exists():
        os.replace(profile, paths.profile_path(target, as_id))


def _runs(instance: dg.DagsterInstance) -> list[Any]:
    from dagster._core.storage.dagster_run import RunsFilter

    return list(instance.get_run_records(filters=RunsFilter(job_name=TRAIN_JOB)))


def _failure(instance: dg.DagsterInstance, run_id: str) -> str:
    for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE):
        return (event.message or "")[:300]
    return "?"


class _PeakMemory(threading.Thread):
    def __init__(self, dev: DagsterDev) -> None:
        super().__init__(daemon=True)
        self.dev, self.peak, self.stop = dev, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.dev.process_tree_rss_bytes())
            self.stop.wait(1.0)


def _wait_for(instance: dg.DagsterInstance, machines: set[str], timeout_s: float, dev: DagsterDev,
              label: str) -> list[Any]:
    """Wait until every machine has a finished run; a progress line per change."""
    from tqdm import tqdm

    deadline = time.time() + timeout_s
    bar = tqdm(total=len(machines), desc=label, unit="machine", leave=True)
    finished: list[Any] = []
    while True:
        records = [r for r in _runs(instance) if r.dagster_run.tags.get("dagster/partition") in machines]
        finished = [r for r in records if r.dagster_run.is_finished]
        done = {r.dagster_run.tags["dagster/partition"] for r in finished}
        bar.n = len(done)
        running = sum(1 for r in records if r.dagster_run.status == dg.DagsterRunStatus.STARTED)
        queued = sum(1 for r in records if r.dagster_run.status == dg.DagsterRunStatus.QUEUED)
        bar.set_postfix_str(f"running {running}, queued {queued}")
        bar.refresh()
        if done >= machines and not any(not r.dagster_run.is_finished for r in records):
            bar.close()
            return finished
        if time.time() > deadline:
            bar.close()
            raise TimeoutError(f"{label}: {len(done)}/{len(machines)} machines finished in {timeout_s:.0f} s\n"
                               + dev.log_tail())
        time.sleep(2)


def run_bench_fleet(out: Path, machines: int = 20, rows: tuple[int, int, int] = FULL_SIZE, seed: int = 0,
                    postgres_url: str | None = None, max_concurrent_runs: int | None = None,
                    timeout_s: float = 6 * 3600) -> dict[str, Any]:
    from pdm_pipeline.core.simulate import simulate_fleet

    out = Path(out).resolve()
    if out.exists():
        shutil.rmtree(out)
    incoming, data, home = out / "incoming", out / "data", out / "home"
    ref_data, ref_home = out / "reference" / "data", out / "reference" / "home"
    print(f"simulating {machines} + 1 machines of {rows[0]:,}/{rows[1]:,}/{rows[2]:,} rows into {incoming}")
    ids = simulate_fleet(incoming, machines + 1, seed=seed, rows=rows, progress=True)
    reference, fleet = ids[0], ids[1:]
    env = write_instance(home, postgres_url=postgres_url, max_concurrent_runs=max_concurrent_runs)
    write_instance(ref_home)  # the reference always runs on its own embedded instance

    # 1. in process, a fresh process (what `make demo`/`pdm-pipeline train` costs for one machine)
    shutil.copytree(paths.machine_dir(incoming, reference), paths.machine_dir(ref_data, REFERENCE))
    (ref_data / "metadata").mkdir(parents=True, exist_ok=True)
    meta = json.loads(paths.metadata_path(incoming, reference).read_text())
    meta["machine_id"] = REFERENCE
    paths.metadata_path(ref_data, REFERENCE).write_text(json.dumps(meta))
    cli_env = dict(os.environ, DAGSTER_HOME=str(ref_home), PDM_DATA_DIR=str(ref_data))
    cli_env.pop("MLFLOW_TRACKING_URI", None)
    print("reference: one machine trained in process (pdm-pipeline train)")
    start = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "pdm-pipeline"), "train", "--machine-id", REFERENCE],
                          env=cli_env, cwd=ref_home, capture_output=True, text=True)
    in_process_s = time.perf_counter() - start
    if done.returncode not in (0, 3):
        raise RuntimeError(f"the in-process reference run failed ({done.returncode}):\n{done.stderr[-3000:]}")

    data.mkdir(parents=True)
    result: dict[str, Any] = {
        "machines": machines, "rows": list(rows), "storage": "postgresql" if postgres_url else "sqlite",
        "cores": os.cpu_count(), "in_process_s": round(in_process_s, 1),
    }
    with DagsterDev(home, data, env={k: v for k, v in env.items() if k != "DAGSTER_HOME"}) as dev, \
            open_instance(home) as instance:
        memory = _PeakMemory(dev)
        memory.start()
        result["max_concurrent_runs"] = instance.get_concurrency_config().run_queue_config.max_concurrent_runs
        # 2. the same machine through the sensor and the queue, alone
        _drop(incoming, data, reference, REFERENCE)
        (queued,) = _wait_for(instance, {REFERENCE}, 900, dev, "queued reference")
        queued_s = queued.end_time - queued.create_timestamp.timestamp()
        result["queued_s"] = round(queued_s, 1)
        result["queued_run_s"] = round(queued.end_time - queued.start_time, 1)
        result["queued_vs_in_process"] = round(queued_s / in_process_s, 2)
        # 3. the fleet, dropped at once
        drop = time.time()
        for machine in fleet:
            _drop(incoming, data, machine)
        records = _wait_for(instance, set(fleet), timeout_s, dev, f"fleet of {machines}")
        memory.stop.set()
        memory.join()
        last_end = max(r.end_time for r in records)
        first_create = min(r.create_timestamp.timestamp() for r in records)
        failed = [r for r in records if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
        run_times = [r.end_time - r.start_time for r in records if r.start_time and r.end_time]
        waits = [r.start_time - r.create_timestamp.timestamp() for r in records if r.start_time]
        wall = last_end - drop
        result.update({
            "wall_s": round(wall, 1),
            "sensor_latency_s": round(first_create - drop, 1),
            "machines_per_hour": round(len(records) / wall * 3600, 1),
            "seconds_per_machine": round(wall / len(records), 1),
            "mean_run_s": round(sum(run_times) / len(run_times), 1),
            "mean_queue_wait_s": round(sum(waits) / len(waits), 1),
            "peak_memory_gb": round(memory.peak / 1e9, 2),
            "failed_runs": [{"machine_id": r.dagster_run.tags.get("dagster/partition"),
                             "run_id": r.dagster_run.run_id, "reason": _failure(instance, r.dagster_run.run_id)}
                            for r in failed],
        })
    (out / "bench-fleet.json").write_text(json.dumps(result, indent=1))
    (out / "bench-fleet.md").write_text(markdown(result))
    shutil.rmtree(incoming, ignore_errors=True)
    return result


def markdown(r: dict[str, Any]) -> str:
    rows = [
        ("machines (full size: rows)", f"{r['machines']} ({'/'.join(f'{n:,}' for n in r['rows'])})"),
        ("instance storage, runs at once, cores", f"{r['storage']}, {r.get('max_concurrent_runs')}, {r['cores']}"),
        ("one machine in process (fresh `pdm-pipeline train`)", f"{r['in_process_s']} s"),
        ("the same machine queued (sensor run: created -> ended)", f"{r['queued_s']} s (run itself {r['queued_run_s']} s)"),
        ("queued / in process (target <= 1.3)", f"{r['queued_vs_in_process']}"),
        ("fleet wall time (drop -> last run ended)", f"{r['wall_s']} s (sensor saw them after {r['sensor_latency_s']} s)"),
        ("machines per hour", f"{r['machines_per_hour']} ({r['seconds_per_machine']} s per machine)"),
        ("mean run time, mean queue wait", f"{r['mean_run_s']} s, {r['mean_queue_wait_s']} s"),
        ("peak memory (all processes)", f"{r['peak_memory_gb']} GB"),
        ("failed runs", str(len(r["failed_runs"])) + "".join(
            f"; {f['machine_id']}: {f['reason']}" for f in r["failed_runs"])),
    ]
    return "| measure | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"
