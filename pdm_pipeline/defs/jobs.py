"""The job that trains, evaluates, gates and releases one machine (one partition).

Executor: in-process by default. A machine's graph is 8 steps (3 preparation, one per model family, the
release); run in one process they share the loaded libraries and data, so a queued run (UI, sensor, schedule,
backfill, GraphQL) costs what `make demo` costs plus the run worker's start, instead of one Python start per
step. Parallelism comes from running several machines at once (`max_concurrent_runs` in dagster.yaml), and
across hosts from the Celery executor: set PDM_EXECUTOR=celery (see the README's "Scaling out") and the same
job's steps go to Celery workers.
"""

from __future__ import annotations

import os

import dagster as dg

from pdm_pipeline.defs.partitions import machines_partitions

TRAIN_JOB = "train_machine"
EXECUTOR_ENV = "PDM_EXECUTOR"
TRAIN_GROUPS = ("preparation", "models", "evaluation", "deployment")


def executor() -> dg.ExecutorDefinition:
    """in_process (default), multiprocess, or celery (broker from PDM_CELERY_BROKER, default local RabbitMQ)."""
    choice = os.environ.get(EXECUTOR_ENV, "in_process")
    if choice == "in_process":
        return dg.in_process_executor
    if choice == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": 2})
    if choice == "celery":
        from dagster_celery import celery_executor

        broker = os.environ.get("PDM_CELERY_BROKER", "pyamqp://guest:guest@127.0.0.1:5672//")
        backend = os.environ.get("PDM_CELERY_BACKEND", "rpc://")
        return celery_executor.configured({"broker": broker, "backend": backend})
    raise ValueError(f"{EXECUTOR_ENV}={choice!r} is unknown; choose in_process, multiprocess or celery")


def build_train_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        TRAIN_JOB,
        selection=dg.AssetSelection.groups(*TRAIN_GROUPS),
        partitions_def=machines_partitions,
        executor_def=executor(),
        tags={"pdm/job": TRAIN_JOB},
        description="Validate, label, featurize, train every model family, evaluate on test, gate and release one "
        "machine (atomic switch; a family that fails or is gated keeps its previous version).",
    )


train_machine_job = build_train_job()
