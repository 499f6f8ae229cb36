"""Source assets: the generator's splits and metadata, one partition per machine.

Their data version is the sha256 of the files' content, so a changed file shows as a new version in the UI.
The sensor (and `pdm-pipeline run/demo`) records it before requesting a run, with `source_observations`; the
UI's "Observe sources" button runs the observe functions below.
"""

from pathlib import Path

import dagster as dg

from pdm_pipeline.core import paths
from pdm_pipeline.core.discovery import part_fingerprints
from pdm_pipeline.defs.partitions import MACHINES_PARTITION_NAME, machines_partitions
from pdm_pipeline.defs.resources import DataRootResource


def _observed_machines(context: dg.AssetExecutionContext) -> list[str]:
    if context.has_partition_key:
        return [context.partition_key]
    return context.instance.get_dynamic_partitions(MACHINES_PARTITION_NAME)


def _versions(context, data_root: DataRootResource, part: str) -> dg.DataVersionsByPartition:
    versions = {}
    for machine_id in _observed_machines(context):
        if not paths.is_valid_machine_id(machine_id):
            context.log.warning(f"skipping partition {machine_id!r}: not a valid machine id")
            continue
        fingerprint = part_fingerprints(data_root.root, machine_id)[part]
        if fingerprint is not None:
            versions[machine_id] = dg.DataVersion(fingerprint)
    return dg.DataVersionsByPartition(versions)


@dg.observable_source_asset(
    partitions_def=machines_partitions,
    group_name="source_data",
    description="data/synthetic/<machine_id>/{train,val,test}.parquet written by the generator (or the importer)",
)
def machine_splits(context, data_root: DataRootResource) -> dg.DataVersionsByPartition:
    return _versions(context, data_root, "splits")


@dg.observable_source_asset(
    partitions_def=machines_partitions,
    group_name="source_data",
    description="data/metadata/<machine_id>_metadata.json (SDV single-table) and the optional _profile.json",
)
def machine_metadata(context, data_root: DataRootResource) -> dg.DataVersionsByPartition:
    return _versions(context, data_root, "metadata")


def source_observations(root: Path, machine_id: str) -> list[dg.AssetObservation]:
    """Observations of both source assets for one machine, carrying the files' content hash as data version."""
    parts = part_fingerprints(root, machine_id)
    return [
        dg.AssetObservation(asset_key=asset.key, partition=machine_id, tags={"dagster/data_version": parts[part]})
        for asset, part in ((machine_splits, "splits"), (machine_metadata, "metadata"))
        if parts[part] is not None
    ]
