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
    # Why a machine is not ready: missing files, files still changing, invalid id, a truncated parquet file.
    reason: str | None = None
    missing: list[str] = field(default_factory=list)
    # Size and modification time of every file: a machine is settled when this did not change between two scans.
    signature: str | None = None


def file_signature(files: list[Path]) -> str:
    parts = []
    for f in files:
        stat = f.stat()
        parts.append(f"{f.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _truncated_parquet(files: list[Path]) -> str | None:
    """The first parquet file whose header or footer magic is missing (still being written), if any."""
    for f in files:
        if f.suffix != ".parquet":
            continue
        size = f.stat().st_size
        with f.open("rb") as fh:
            head = fh.read(4)
            fh.seek(max(size - 4, 0))
            tail = fh.read(4)
        if size < 12 or head != b"PAR1" or tail != b"PAR1":
            return f.name
    return None


def scan_machines(
    root: Path, settle_seconds: float = 10.0, now: float | None = None, previous: dict[str, str] | None = None
) -> list[MachineScan]:
    """Every directory under synthetic/, with whether it is ready to train and its content fingerprint.

    Ready = all files present, none changed in the last `settle_seconds`, every parquet file has its header and
    footer, and (when `previous` signatures are given) the size and mtime of every file are the same as at the
    previous scan, so a writer that pauses inside a file is not taken for a finished one.
    """
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
        signature = file_signature(files)
        newest = max(f.stat().st_mtime for f in files)
        # A file dated in the future (clock skew, an NFS server ahead, a tar with future dates) would wait until the
        # clock caught up: for it only the unchanged size/mtime between two scans (below) says it settled.
        if 0 <= now - newest < settle_seconds or (newest > now and previous is None):
            when = (f"dated {newest - now:.0f} s in the future (clock skew?): waiting for two scans to agree"
                    if newest > now else f"changed {now - newest:.0f} s ago: waiting for them to settle")
            out.append(MachineScan(name, False, reason=f"files {when}", signature=signature))
            continue
        truncated = _truncated_parquet(files)
        if truncated:
            out.append(MachineScan(name, False, reason=f"{truncated} has no parquet footer yet: still being written",
                                   signature=signature))
            continue
        if previous is not None and previous.get(name) != signature:
            out.append(MachineScan(name, False, reason="size or mtime changed since the last scan: waiting one more "
                                   "scan", signature=signature))
            continue
        out.append(MachineScan(name, True, fingerprint=contract.machine_fingerprint(root, name), signature=signature))
    return out
