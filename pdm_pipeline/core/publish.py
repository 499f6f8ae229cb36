"""Write aside, then rename: a published model is only ever replaced by one that is complete.

A model is trained into a candidate directory beside its final place (same file system, so the rename is
atomic). Publishing moves the current model away, renames the candidate into place, then deletes the old
one; if anything fails in between, the old one is put back.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def dir_size_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def size_mb(path: Path) -> float:
    return dir_size_bytes(path) / 1e6


def new_candidate_dir(final_dir: Path, tag: str | None = None) -> Path:
    """A fresh, empty directory beside `final_dir` where a new model is written before it passes its gates."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = tag or uuid.uuid4().hex[:12]
    cand = final_dir.parent / f".candidate-{final_dir.name}-{tag}"
    if cand.exists():
        shutil.rmtree(cand)
    cand.mkdir()
    return cand


def publish_dir(candidate: Path, final_dir: Path) -> Path:
    """Atomically replace `final_dir` with `candidate` (both on the same file system). Returns final_dir."""
    candidate, final_dir = Path(candidate), Path(final_dir)
    if not candidate.is_dir():
        raise FileNotFoundError(f"cannot publish {candidate}: candidate directory does not exist")
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    if final_dir.exists():
        backup = final_dir.parent / f".previous-{final_dir.name}-{uuid.uuid4().hex[:8]}"
        os.replace(final_dir, backup)
    try:
        os.replace(candidate, final_dir)
    except BaseException:
        if backup is not None:
            os.replace(backup, final_dir)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return final_dir


def discard_dir(candidate: Path) -> None:
    shutil.rmtree(candidate, ignore_errors=True)
