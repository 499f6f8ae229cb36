"""Finding machines under the data root: which are complete, settled and changed since last time.

A machine is ready when its three splits and its metadata exist and none of its files changed in the last
`settle_seconds` (a generator still writing is not picked up half-way). Its fingerprint is the sha256 over its
files' content, so a re-written but identical file triggers nothing and any changed byte triggers one retrain.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from pdm_pipeline.core import contract, paths
from pdm_pipeline.core.schema import SPLITS

def machine_files(root: Path, machine_id: str) -> dict[str, list[Path]]:
    """The files of a machine by part: 'splits' (the three parquet files) and 'metadata' (+ profile if present)."""
    meta = [paths.metadata_path(root, machine_id)]
    profile = paths.profile_path(root, machine_id)
    if profile.exists():
        meta.append(profile)
    return {"splits": [paths.split_path(root, machine_id, s) for s in SPLITS], "metadata": meta}


def _combined(files: list[Path]) -> str | None:
    if not all(f.is_file() for f in files):
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\t{contract.file_fingerprint(f)}\n".encode())
    return digest.hexdigest()


def part_fingerprints(root: Path, machine_id: str) -> dict[str, str | None]:
    """sha256 of each part's files, the data versions of the two source assets (None when a file is missing)."""
    return {part: _combined(files) for part, files in machine_files(root, machine_id).items()}


@dataclass
class MachineScan:
    machine_id: str
    ready: bool
    fingerprint: str | None = None
    # Why a machine is not ready: missing files, files still changing, invalid id.
    reason: str | None = None
    missing: list[str] = field(default_factory=list)


def scan_machines(root: Path, settle_seconds: float = 10.0, now: float | None = None) -> list[MachineScan]:
    """Every directory under synthetic/, with whether it is ready to train and its content fingerprint."""
    now = time.time() if now is None else now
    out = []
    for name in paths.list_machine_dirs(root):
        if not paths.is_valid_machine_id(name):
            out.append(MachineScan(name, False, reason=f"invalid machine id {name!r}: skipped"))
            continue
        files = [f for part in machine_files(root, name).values() for f in part]
        missing = [str(f.relative_to(root)) for f in files if not f.is_file()]
        if missing:
            out.append(MachineScan(name, False, reason=f"incomplete: missing {', '.join(missing)}", missing=missing))
            continue
        newest = max(f.stat().st_mtime for f in files)
        if now - newest < settle_seconds:
            out.append(MachineScan(name, False, reason=f"files changed {now - newest:.0f} s ago: waiting for them to settle"))
            continue
        out.append(MachineScan(name, True, fingerprint=contract.machine_fingerprint(root, name)))
    return out
