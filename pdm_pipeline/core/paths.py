"""Where things live under the data root, and the machine-id rule that keeps ids safe as path parts."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pdm_pipeline.core.schema import SPLITS
from pdm_pipeline.errors import PdmError

DATA_DIR_ENV = "PDM_DATA_DIR"

# A machine id becomes a directory and a file-name prefix: letters, digits, '_', '.', '-', at most 64
# characters, starting with a letter or digit, never containing '..'.
_MACHINE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class InvalidMachineIdError(PdmError, ValueError):
    """A machine id that cannot safely become a path."""


def is_valid_machine_id(machine_id: object) -> bool:
    return (
        isinstance(machine_id, str)
        and _MACHINE_ID_RE.fullmatch(machine_id) is not None
        and ".." not in machine_id
    )


def validate_machine_id(machine_id: object) -> str:
    """Return the id unchanged, or raise InvalidMachineIdError naming the id and the rule."""
    if not is_valid_machine_id(machine_id):
        raise InvalidMachineIdError(
            f"invalid machine id {machine_id!r}: a machine id must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}} "
            "and must not contain '..' (it becomes a directory name)"
        )
    return machine_id  # type: ignore[return-value]


# Free space a run needs on the disks it writes to (the data root: staging, releases, MLflow; the Dagster
# instance's local directories: SQLite storage, artifacts, compute logs, wherever its dagster.yaml puts them). A sample machine's run writes a few MB; a full disk failed the run mid-way with an
# unrelated-looking database error.
MIN_FREE_MB = 100.0
MIN_FREE_ENV = "PDM_MIN_FREE_MB"  # another floor (MB) for small volumes; 0 turns the check off


def free_space_problem(*directories: Path | None, min_free_mb: float | None = None) -> str | None:
    """Why a run cannot start on these directories' disks (too little free space), naming each; None if it can."""
    import shutil

    if min_free_mb is None:
        try:
            min_free_mb = float(os.environ.get(MIN_FREE_ENV, MIN_FREE_MB))
        except ValueError:
            raise PdmError(f"{MIN_FREE_ENV}={os.environ[MIN_FREE_ENV]!r} must be a number of MB") from None

    problems = []
    for directory in directories:
        if directory is None:
            continue
        existing = Path(directory)
        while not existing.exists() and existing != existing.parent:  # the data root may not exist yet
            existing = existing.parent
        try:
            free_mb = shutil.disk_usage(existing).free / 1e6
        except OSError:
            continue
        if free_mb < min_free_mb:
            problems.append(f"{directory} ({free_mb:.0f} MB free)")
    if not problems:
        return None
    return (f"too little free disk space at {', '.join(problems)}: a run writes models, MLflow records and run logs "
            f"there and needs at least {min_free_mb:g} MB free ({MIN_FREE_ENV}); free some space and launch again")


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data root: the explicit argument, else $PDM_DATA_DIR, else ./data."""
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get(DATA_DIR_ENV) or "data")


def synthetic_dir(root: Path) -> Path:
    return Path(root) / "synthetic"


def metadata_dir(root: Path) -> Path:
    return Path(root) / "metadata"


def machine_dir(root: Path, machine_id: str) -> Path:
    return synthetic_dir(root) / validate_machine_id(machine_id)


def split_path(root: Path, machine_id: str, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return machine_dir(root, machine_id) / f"{split}.parquet"


def metadata_path(root: Path, machine_id: str) -> Path:
    return metadata_dir(root) / f"{validate_machine_id(machine_id)}_metadata.json"


def profile_path(root: Path, machine_id: str) -> Path:
    return metadata_dir(root) / f"{validate_machine_id(machine_id)}_profile.json"


def releases_dir(root: Path, machine_id: str) -> Path:
    """data/releases/<machine_id>/: one directory per release, and `current` pointing at the one in use."""
    return Path(root) / "releases" / validate_machine_id(machine_id)


def current_release(root: Path, machine_id: str) -> Path:
    """The `current` symlink of a machine (switched atomically by core/release.py)."""
    return releases_dir(root, machine_id) / "current"


def model_dir(root: Path, model_type: str, machine_id: str) -> Path:
    """The released model of one type: <releases>/<machine_id>/current/<model_type>."""
    if not model_type or "/" in model_type or model_type.startswith("."):
        raise ValueError(f"invalid model type {model_type!r}")
    return current_release(root, machine_id) / model_type


def bundle_dir(root: Path, machine_id: str) -> Path:
    """The current edge bundle of a machine: <releases>/<machine_id>/current/bundle."""
    return current_release(root, machine_id) / "bundle"


def staging_dir(root: Path, machine_id: str, run_id: str) -> Path:
    """Where one run trains a machine's models before the release (run-scoped: runs never share it)."""
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise ValueError(f"invalid run id {run_id!r}")
    return Path(root) / "staging" / validate_machine_id(machine_id) / run_id


def fleet_dir(root: Path, fleet: str) -> Path:
    """Pooled models of one fleet (machine type): data/fleets/<fleet>/."""
    return Path(root) / "fleets" / validate_machine_id(fleet)


def mlflow_dir(root: Path) -> Path:
    return Path(root) / "mlruns"


def list_machine_dirs(root: Path) -> list[str]:
    """Names of the directories under synthetic/ (valid or not: callers decide what to do with bad ones)."""
    base = synthetic_dir(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
