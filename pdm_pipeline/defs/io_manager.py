"""Step outputs stored per RUN: <instance storage>/outputs/<run id>/<asset>/<partition>.pkl.

Dagster's default filesystem IO manager keys outputs by asset and partition only, so two runs of one machine
overwrite each other's stored outputs (and one run can load the other's model). Here every run writes under its
own run id; an input is read from the run that produced it (this run, the parent run of a re-execution, or, for
an upstream asset not selected in this run, the run of its latest materialization). Files are written aside and
renamed, so a killed step never leaves a half-written output. `machine_release` removes its run's outputs (and
those of the run a re-execution reused) after a successful release; the startup sweep removes those of runs whose
re-execution group ended more than a day ago (recovery.py).
"""


import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import dagster as dg

OUTPUTS_DIR = "outputs"


def outputs_root(instance: dg.DagsterInstance) -> Path:
    return Path(instance.storage_directory()) / OUTPUTS_DIR


def run_outputs_dir(instance: dg.DagsterInstance, run_id: str) -> Path:
    return outputs_root(instance) / run_id


class RunScopedPickleIOManager(dg.ConfigurableIOManager):
    """Pickled step outputs under the instance's storage directory, one folder per run."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Every step that reads or writes a stored output starts this manager: a run no entry point checked meets
        the run queue's checks here too (the data root resource starts only for the steps that use it)."""
        from pdm_pipeline.defs.reexecution import check_reexecution
        from pdm_pipeline.defs.resources import check_unchecked_run

        if context.dagster_run is not None:
            check_unchecked_run(context.dagster_run, context.instance)
            check_reexecution(context.instance, context.dagster_run)

    def _relative(self, context: dg.OutputContext) -> Path:
        key = context.asset_key.path if context.has_asset_key else [context.step_key, context.name]
        partition = context.partition_key if context.has_partition_key else "__unpartitioned__"
        return Path(*key) / f"{partition}.pkl"

    def _relative_input(self, context: dg.InputContext) -> Path:
        if context.has_asset_key:
            partition = context.asset_partition_key if context.has_asset_partitions else "__unpartitioned__"
            return Path(*context.asset_key.path) / f"{partition}.pkl"
        upstream = context.upstream_output
        return Path(upstream.step_key, upstream.name) / "__unpartitioned__.pkl"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        path = run_outputs_dir(context.step_context.instance, context.run_id) / self._relative(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        with tmp.open("wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)

    def load_input(self, context: dg.InputContext) -> Any:
        instance = context.instance
        relative = self._relative_input(context)
        candidates = []
        if context.upstream_output is not None:
            try:
                candidates.append(context.upstream_output.run_id)
            except dg.DagsterInvariantViolationError:
                pass
        if context.has_asset_key:
            partitions = [context.asset_partition_key] if context.has_asset_partitions else None
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=partitions), limit=1
            ).records
            if records:
                candidates.append(records[0].run_id)
        for run_id in candidates:
            path = run_outputs_dir(instance, run_id) / relative
            if path.is_file():
                with path.open("rb") as fh:
                    return pickle.load(fh)  # our own step outputs, written by this instance's runs
        raise dg.DagsterInvariantViolationError(
            f"no stored output for {relative} (runs tried: {candidates}); materialize its upstream asset first"
        )


def remove_run_outputs(instance: dg.DagsterInstance, run_id: str) -> None:
    shutil.rmtree(run_outputs_dir(instance, run_id), ignore_errors=True)
