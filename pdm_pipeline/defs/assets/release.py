"""The release of a machine: every family's outcome of this run, gated, switched atomically with its bundle.

`core.release.release_machine` does the work (the same function `run_machine` and the benchmark use): models
that passed their blocking gates are released, the others keep their previous version, the release as a whole
must fit the Pi budgets, and `current` switches in one atomic rename. The asset reads this run's family
outcomes from the staging directory of the run that trained each (this run; for a re-execution that reuses a
family's step, the ancestor that completed it: defs/reexecution.py), so a family missing from the run (excluded,
or not selected) simply keeps its previous model, and a re-execution from failure of a run whose release failed
publishes that run's models. A re-execution whose reused models are gone, or older than the machine's current
release, fails here naming why (the queue refuses it first; this is for one that changed since it was queued).
"""


import shutil
from typing import Any

import dagster as dg

from pdm_pipeline import families
from pdm_pipeline.core import paths
from pdm_pipeline.core.contract import MachineData
from pdm_pipeline.core.pipeline import FeatureFrames
from pdm_pipeline.core.release import ReleaseRefused, release_machine
from pdm_pipeline.defs.assets.models import ReusedWorkMissing, read_results, trained_data_version
from pdm_pipeline.defs.checks.outcomes import emit
from pdm_pipeline.defs.io_manager import remove_run_outputs
from pdm_pipeline.defs.partitions import machines_partitions
from pdm_pipeline.defs.reexecution import (
    dataset_version,
    failed_sources,
    family_sources,
    family_step,
    newer_release,
    remove_superseded_staging,
    reused_sources,
)
from pdm_pipeline.defs.resources import DataRootResource, GatesResource

RELEASE_ASSET = "machine_release"


def release_table(result: Any) -> str:
    rows = ["| model | training | release | reason |", "|---|---|---|---|"]
    for t, d in result.decisions.items():
        rows.append(f"| {t} | {d.status} | {d.action} | {d.reason} |")
    return "\n".join(rows)


def gate_table(result: Any) -> str:
    rows = ["| model | gate | status | severity | value | limit |", "|---|---|---|---|---|---|"]
    for t, d in result.decisions.items():
        for g in d.gates:
            value = "-" if g.value is None else f"{g.value:.4g}"
            rows.append(f"| {t} | {g.name} | {g.status} | {g.severity} | {value} | {g.limit} |")
    for g in result.release_gates:
        rows.append(f"| release | {g.name} | {g.status} | {g.severity} | {g.value or 0:.4g} | {g.limit} |")
    return "\n".join(rows)


def build_release_asset() -> dg.AssetsDefinition:
    """The release asset, depending on every registered family's evaluation."""

    @dg.multi_asset(
        name=RELEASE_ASSET,
        outs={RELEASE_ASSET: dg.AssetOut(
            group_name="deployment",
            kinds={"python"},
            description="data/releases/<machine_id>/current: the models that passed their gates (the others keep "
            "their previous version), their metrics cards, and the signed edge bundle, switched in one atomic rename. "
            "Moves the MLflow `champion` and `deployed` aliases.",
        )},
        partitions_def=machines_partitions,
        deps=[dg.AssetKey(f.evaluation_asset) for f in families.all_families()],
        ins={"machine_dataset": dg.AssetIn("machine_dataset"), "machine_features": dg.AssetIn("machine_features")},
        check_specs=[
            dg.AssetCheckSpec("pi_total_size_gate", asset=RELEASE_ASSET, blocking=False,
                              partitions_def=machines_partitions,
                              description="all models of the release within the total Pi budget (MB); over it, the "
                              "previous release stays whole"),
            dg.AssetCheckSpec("bundle_size_gate", asset=RELEASE_ASSET, blocking=False,
                              partitions_def=machines_partitions,
                              description="the edge bundle within its Pi budget (MB); over it, the previous release "
                              "stays whole"),
        ],
        # A release with no new model never reaches its size gates: they show as skipped, not failed.
        can_subset=True,
    )
    def machine_release(
        context: dg.AssetExecutionContext,
        machine_dataset: MachineData,
        machine_features: FeatureFrames,
        data_root: DataRootResource,
        gates: GatesResource,
        mlflow: dg.ResourceParam[Any],
    ):
        root, machine_id = data_root.root, context.partition_key
        sources = family_sources(context.instance, context.run)
        reused = sorted({s for s in sources.values() if s != context.run_id})
        advice = f"nothing was released; launch a new run of {machine_id}"
        try:
            trained, evaluations = read_results(root, machine_id, context.run_id, sources)
        except ReusedWorkMissing as exc:
            raise dg.Failure(description=f"{exc}: {advice}") from None

        def no_newer_release() -> str | None:  # (checked under the machine's lock, up to the switch)
            if newer := newer_release(context.instance, context.run, root, machine_id):
                return (f"{machine_id} has a newer release since the run(s) whose work this re-execution reuses "
                        f"({', '.join(sorted(reused_sources(context.instance, context.run)))}) started ({newer})")
            return None

        data_version = trained_data_version(context, root, machine_dataset)
        # A re-execution from asset failure reads the data again (its dataset step is selected when a data check
        # warned): models another run trained on other data would be released as trained on this data.
        other_data = {s[:8]: v[:12] for s in reused
                      if data_version and (v := dataset_version(context.instance, s)) and v != data_version}
        if other_data:
            raise dg.Failure(description=f"the data of {machine_id} changed since run(s) {', '.join(other_data)} trained "
                             f"the models this re-execution would release (data version {', '.join(other_data.values())} "
                             f"then, {data_version[:12]} now): {advice}")
        for source in reused:
            context.log.info(f"releasing the model(s) run {source[:8]} trained: "
                             + ", ".join(sorted(t for t, s in sources.items() if s == source)))
        # a training step that failed in the run this re-execution reuses, and that it does not run again
        not_retrained = {t: f"its step {family_step(t)} failed in run {s[:8]} and this re-execution did not run it "
                         "again" for t, s in failed_sources(context.instance, context.run).items()}
        try:
            result = release_machine(
                root, machine_id, trained, evaluations, gates.settings(),
                run_id=context.run_id, data=machine_dataset, features=machine_features,
                data_version=data_version, tracking_uri=mlflow.tracking_uri, not_trained=not_retrained,
                precondition=no_newer_release,
            )
        except ReleaseRefused as exc:
            raise dg.Failure(description=f"{exc}: {advice}") from None
        for t, d in result.decisions.items():
            line = f"{t}: {d.action} ({d.reason})"
            (context.log.info if d.action == "released" else context.log.warning)(line)
        mlflow.end_run()  # the Dagster run's MLflow run: this is the graph's last step
        metadata: dict[str, Any] = {
            "outcome": result.outcome,
            "data_version": data_version,
            "reason": result.reason,
            "release_id": result.release_id or "",
            "previous_release": result.previous_release or "",
            "models": dg.MetadataValue.md(release_table(result)),
            "gates": dg.MetadataValue.md(gate_table(result)),
            "champion": dg.MetadataValue.json(result.champion),
            "result": dg.MetadataValue.json(result.as_dict()),
            "trained_in_runs": dg.MetadataValue.json(sources),
        }
        if not_retrained:
            metadata["not_retrained"] = dg.MetadataValue.json(not_retrained)
        if result.bundle is not None:
            metadata.update({
                "bundle_path": dg.MetadataValue.path(str(result.bundle.path)),
                "bundle_mb": round(result.bundle.size_mb, 3),
                "bundle_formats": dg.MetadataValue.json(result.bundle.formats),
                "export": f"pdm-pipeline export --machine-id {machine_id} --out DIR",
            })
        for t, d in result.decisions.items():
            metadata[f"{t}_action"] = d.action
            if d.size_mb:
                metadata[f"{t}_mb"] = round(d.size_mb, 3)
        yield dg.Output(result.as_dict(), output_name=RELEASE_ASSET, metadata=metadata)
        own = {"pi_total_size_gate", "bundle_size_gate"}  # (a refusal on the data names the data's checks too)
        yield from emit([g for g in result.release_gates if g.name in own], dg.AssetKey(RELEASE_ASSET), set())
        for source in reused:  # decided on (like this run's own staging, core/release.py _finish): a re-execution
            # of that run again finds nothing left to release, and is refused
            shutil.rmtree(paths.staging_dir(root, machine_id, source), ignore_errors=True)
        if result.published:
            for run_id in (context.run_id, *reused):
                remove_run_outputs(context.instance, run_id)
            # failed runs of the machine this release supersedes: a re-execution of them is refused from now on
            for line in remove_superseded_staging(context.instance, root, machine_id):
                context.log.info(line)

    return machine_release


machine_release = build_release_asset()
