"""The job that trains, evaluates, gates and publishes everything for one machine (one partition)."""

import dagster as dg

from pdm_pipeline.defs.partitions import machines_partitions

TRAIN_JOB = "train_machine"

# Steps run in separate processes, two at a time (a 2-core machine); the model_training pool lets only
# one model train at once, so AutoGluon and Prophet get both cores.
train_machine_job = dg.define_asset_job(
    TRAIN_JOB,
    selection=dg.AssetSelection.groups("preparation", "models", "evaluation", "deployment"),
    partitions_def=machines_partitions,
    executor_def=dg.multiprocess_executor.configured({"max_concurrent": 2}),
    description="Validate, label, featurize, train the four models, evaluate them on test, gate and publish one machine.",
)

jobs = [train_machine_job]
