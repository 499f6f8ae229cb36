"""The edge bundle: one release's models as the Raspberry Pi needs them, signed, in one directory.

Layout (built by the release into `<release>/bundle/`; a model type the release lacks is absent)

    manifest.json, manifest.sig   sha256 + size of every other file, Ed25519 signature (edge/integrity.py)
    bundle.json                   machine_id, release_id, created_at, time unit, library versions, per model:
                                  format, inputs, thresholds, output columns; for an imported machine
                                  `source_columns` (`import_columns`): the source file's names of its columns
    <model_type>/                 the released model directory as trained: native booster file (model.txt,
                                  model.json, model.cbm) or AutoGluon predictor, anomaly_model.npz, Prophet JSON;
                                  model_card.json, preprocessing.json, metrics.json and its own signed manifest

Every format is safe to load (native booster files, numpy arrays with allow_pickle=False, JSON) except the
AutoGluon fallback of a preset that does not reduce to one booster, which is loaded only after the signature
and every hash were verified. Files are hard links of the release's files (no extra space on the training host);
`export_bundle` copies a verified bundle elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from pdm_pipeline import families
from pdm_pipeline.edge.integrity import MANIFEST_FILE, IntegrityError, Trust, verify_dir, write_manifest
from pdm_pipeline.errors import PdmError
from pdm_pipeline.families.base import CARD_FILE, PREPROCESSING_FILE

BUNDLE_FILE = "bundle.json"
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "pandas": ("pandas",),
    "pdm_pipeline": ("pdm-pipeline",),
    "cryptography": ("cryptography",),
    "lightgbm": ("lightgbm",),
    "xgboost": ("xgboost", "xgboost-cpu"),
    "catboost": ("catboost",),
    "prophet": ("prophet",),
    "autogluon.tabular": ("autogluon.tabular",),
}
_FORMAT_LIBRARY = {"lightgbm": "lightgbm", "xgboost": "xgboost", "catboost": "catboost", "autogluon": "autogluon.tabular"}


class BundleExportError(PdmError, RuntimeError):
    """A bundle that cannot be built or exported; the message names the machine, the model and what is wrong."""


@dataclass
class BundleInfo:
    path: Path
    machine_id: str
    release_id: str
    created_at: str
    formats: dict[str, str]
    n_files: int
    total_bytes: int
    build_seconds: float
    absent: dict[str, str] = field(default_factory=dict)

    @property
    def size_mb(self) -> float:
        return self.total_bytes / 1e6


def library_versions(libraries: list[str]) -> dict[str, str]:
    out = {}
    for name in libraries:
        version = "not installed"
        for dist in _DISTRIBUTIONS.get(name, (name,)):
            try:
                version = importlib_metadata.version(dist)
                break
            except importlib_metadata.PackageNotFoundError:
                continue
        out[name] = version
    return out


def link_tree(src: Path, dest: Path) -> None:
    """Copy a directory tree as hard links (same file system), falling back to copies."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dest, copy_function=link)


def _entry(model_type: str, model_dir: Path) -> dict[str, Any]:
    card = json.loads((model_dir / CARD_FILE).read_text())
    entry: dict[str, Any] = {"format": card.get("format") or card.get("method") or "npz"}
    for key in ("threshold", "input_columns", "inputs", "time_unit", "rul_cap", "sensors", "method", "label",
                "fallback_reason", "source", "calibration"):
        if key in card:
            entry[key] = card[key]
    if "alarm" in card:
        entry["alarm"] = {k: card["alarm"][k] for k in ("on_samples", "off_samples")}
    entry["output_columns"] = list(families.get(model_type).output_columns)
    return entry


def import_columns(source: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """How the source rows of an imported machine map onto the contract, from its metadata's `source` notes
    (importer/build.py): {"sensors": {sensor: source column}, "timestamp": source time or cycle column,
    "time": how that column is read, "unit_id": source unit column}. None for a machine that was not imported."""
    from pdm_pipeline.core.importer.options import CYCLE_UNITS
    from pdm_pipeline.core.importer.timeline import CYCLE_ORIGIN, UNIX_TIME_FORMATS

    if not isinstance(source, Mapping) or not isinstance(source.get("sensor_columns"), Mapping):
        return None
    options = source.get("options") or {}
    out: dict[str, Any] = {"sensors": {str(k): str(v) for k, v in source["sensor_columns"].items()}}
    time_format, cycle_unit = options.get("time_format"), options.get("cycle_unit")
    if options.get("time_column"):
        out["timestamp"] = options["time_column"]
        out["time"] = ({"kind": "unix", "unit": UNIX_TIME_FORMATS[time_format]} if time_format in UNIX_TIME_FORMATS
                       else {"kind": "datetime", "format": time_format})
    elif options.get("cycle_column"):
        out["timestamp"] = options["cycle_column"]
        out["time"] = ({"kind": "cycles", "origin": str(CYCLE_ORIGIN), "seconds": CYCLE_UNITS[cycle_unit]}
                       if cycle_unit in CYCLE_UNITS else {"kind": "counter"})
    if options.get("unit_column"):
        out["unit_id"] = options["unit_column"]
    reading = {"separator": options.get("separator", ","), "decimal": options.get("decimal", "."),
               "header": options.get("header", True), "columns": options.get("columns")}
    if reading != {"separator": ",", "decimal": ".", "header": True, "columns": None}:
        out["reading"] = reading  # a text file written as the machine writes it reads this way
    return out


def build_bundle(release_dir: Path, machine_id: str, release_id: str, signing_key: bytes | None,
                 source: Mapping[str, Any] | None = None) -> BundleInfo:
    """Write `<release_dir>/bundle/` from the model directories of the release (hard links) and sign it.
    `source`: the machine metadata's import notes, recorded as `source_columns` (edge input may use its names)."""
    start = time.perf_counter()
    out = Path(release_dir) / "bundle"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    entries: dict[str, dict[str, Any]] = {}
    absent: dict[str, str] = {}
    libraries = ["numpy", "pandas", "pdm_pipeline", "cryptography"]
    time_unit = None
    for family in families.all_families():
        src = Path(release_dir) / family.model_type
        if not src.is_dir():
            absent[family.model_type] = "no released model"
            continue
        link_tree(src, out / family.model_type)
        entries[family.model_type] = entry = _entry(family.model_type, src)
        library = _FORMAT_LIBRARY.get(entry["format"])
        if family.model_type == "timeseries" and entry.get("method") == "prophet":
            library = "prophet"
        if library and library not in libraries:
            libraries.append(library)
        prep = src / PREPROCESSING_FILE
        if prep.is_file() and time_unit is None:
            time_unit = json.loads(prep.read_text())["feature_spec"]["time_unit"]
    if not entries:
        raise BundleExportError(f"machine {machine_id}: release {release_id} has no model to bundle")
    description = {
        "machine_id": machine_id,
        "release_id": release_id,
        "created_at": created_at,
        "time_unit": time_unit,
        "libraries": library_versions(libraries),
        "models": entries,
        "absent": absent,
    }
    columns = import_columns(source)
    if columns is not None:
        description["source_columns"] = columns
    (out / BUNDLE_FILE).write_text(json.dumps(description, indent=1))
    manifest = write_manifest(out, signing_key, {"machine_id": machine_id, "release_id": release_id,
                                                 "created_at": created_at, "kind": "edge bundle"})
    return BundleInfo(
        path=out,
        machine_id=machine_id,
        release_id=release_id,
        created_at=created_at,
        formats={t: e["format"] for t, e in entries.items()},
        n_files=manifest["n_files"],
        total_bytes=manifest["total_bytes"],
        build_seconds=time.perf_counter() - start,
        absent=absent,
    )


def export_bundle(bundle_dir: Path, out: Path, trust: Trust) -> dict[str, Any]:
    """Copy a verified bundle to `out` (written aside, then renamed). `out` must not exist, be empty, or hold a
    bundle (which is replaced): any other directory is refused, so an export never deletes unrelated files."""
    manifest = verify_dir(bundle_dir, trust, "bundle")
    description = json.loads((Path(bundle_dir) / BUNDLE_FILE).read_text())
    for model_type in description["models"]:
        verify_dir(Path(bundle_dir) / model_type, trust, f"{model_type} model of the bundle")
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise BundleExportError(f"--out {out} exists and is not a directory: refusing to overwrite it")
        contents = list(out.iterdir())
        if contents and not (out / MANIFEST_FILE).is_file() and not (out / BUNDLE_FILE).is_file():
            raise BundleExportError(
                f"--out {out} is a non-empty directory that is not a bundle ({len(contents)} entries, e.g. "
                f"{contents[0].name!r}): refusing to replace it; choose an empty or new directory"
            )
        if (out / BUNDLE_FILE).is_file():
            try:
                there = json.loads((out / BUNDLE_FILE).read_text()).get("machine_id")
            except (json.JSONDecodeError, AttributeError):
                there = None
            if there != description["machine_id"]:
                raise BundleExportError(
                    f"--out {out} holds the bundle of machine {there!r}, not {description['machine_id']!r}: refusing "
                    "to replace another machine's bundle; choose its own, an empty or a new directory"
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle_dir, staging)
    try:
        verify_dir(staging, trust, "exported bundle")
    except IntegrityError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = None
    if out.exists():
        backup = out.parent / f".{out.name}.previous-{os.getpid()}"
        os.replace(out, backup)
    os.replace(staging, out)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return {"path": str(out), **{k: manifest[k] for k in ("n_files", "total_bytes")}, **description}
