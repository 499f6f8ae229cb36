"""Where things live under the data root, and the machine-id rule that keeps ids safe as path parts."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pdm_pipeline.core.schema import MODEL_TYPES, SPLITS

DATA_DIR_ENV = "PDM_DATA_DIR"

# A machine id becomes a directory and a file-name prefix: letters, digits, '_', '.', '-', at most 64
# characters, starting with a letter or digit, never containing '..'.
_MACHINE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class InvalidMachineIdError(ValueError):
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


def model_dir(root: Path, model_type: str, machine_id: str) -> Path:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}; expected one of {', '.join(MODEL_TYPES)}")
    return Path(root) / "models" / model_type / validate_machine_id(machine_id)


def bundle_dir(root: Path, machine_id: str) -> Path:
    return Path(root) / "bundles" / validate_machine_id(machine_id)


def mlflow_dir(root: Path) -> Path:
    return Path(root) / "mlruns"


def list_machine_dirs(root: Path) -> list[str]:
    """Names of the directories under synthetic/ (valid or not: callers decide what to do with bad ones)."""
    base = synthetic_dir(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
