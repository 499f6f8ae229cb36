"""Writing machines atomically: stage every file under the data root, check the contract, then move them in."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pdm_pipeline.core.contract import validate_machine
from pdm_pipeline.core.importer.options import ImportOptionsError
from pdm_pipeline.core.paths import machine_dir, metadata_dir, metadata_path, profile_path, split_path
from pdm_pipeline.core.publish import publish_dir


@dataclass
class Machine:
    """One machine ready to be written: its splits, metadata and optional profile."""

    machine_id: str
    splits: dict[str, pd.DataFrame]
    metadata: dict[str, Any]
    profile: dict[str, Any] | None


def _existing_files(root: Path, machine_id: str) -> list[str]:
    paths = [machine_dir(root, machine_id), metadata_path(root, machine_id), profile_path(root, machine_id)]
    return [p.relative_to(root).as_posix() for p in paths if p.exists()]


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, default=str) + "\n", encoding="utf-8")


def _stage(staging: Path, machine: Machine) -> None:
    """Write the machine under the staging root and check it against the contract."""
    mid = machine.machine_id
    machine_dir(staging, mid).mkdir(parents=True)
    metadata_dir(staging).mkdir(exist_ok=True)
    for split, df in machine.splits.items():
        df.to_parquet(split_path(staging, mid, split), index=False)
    if machine.profile is not None:
        _write_json(profile_path(staging, mid), machine.profile)
    _write_json(metadata_path(staging, mid), machine.metadata)
    # NaN in sensors is allowed here (kept as is); the pipeline's own max_nan_share decides downstream.
    problems = validate_machine(staging, mid, max_nan_share=1.0)
    if problems:
        raise ImportOptionsError(
            f"machine {mid!r}: the imported data would break the data contract:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


def _commit(staging: Path, root: Path, machine_id: str) -> None:
    """Move a staged machine into place: old metadata away first, splits, profile, new metadata last."""
    final_metadata = metadata_path(root, machine_id)
    final_profile = profile_path(root, machine_id)
    metadata_dir(root).mkdir(parents=True, exist_ok=True)
    final_metadata.unlink(missing_ok=True)
    publish_dir(machine_dir(staging, machine_id), machine_dir(root, machine_id))
    staged_profile = profile_path(staging, machine_id)
    if staged_profile.exists():
        os.replace(staged_profile, final_profile)
    else:
        final_profile.unlink(missing_ok=True)
    os.replace(metadata_path(staging, machine_id), final_metadata)


def write_machines(root: Path, machines: list[Machine], overwrite: bool) -> list[str]:
    """Stage and check every machine, then move them in; nothing is moved unless all of them pass."""
    root = Path(root)
    ids = [m.machine_id for m in machines]
    twins = sorted({i for i in ids if ids.count(i) > 1})
    if twins:
        raise ImportOptionsError(f"the import would write machine(s) {twins} more than once")
    if not overwrite:
        for machine in machines:
            existing = _existing_files(root, machine.machine_id)
            if existing:
                raise ImportOptionsError(
                    f"machine {machine.machine_id!r} already exists under {root} ({', '.join(existing)}); "
                    "pass --overwrite (overwrite=True) to replace it"
                )
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".import-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir()
        for machine in machines:
            _stage(staging, machine)
        for machine in machines:
            _commit(staging, root, machine.machine_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ids
