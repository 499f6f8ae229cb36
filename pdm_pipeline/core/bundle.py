"""The edge bundle: one machine's published models in their smallest faithful form, checked by hashes.

Layout (`build_bundle(root, machine_id, out_dir)`; a model type the machine does not have is simply absent)

    manifest.json              sha256 + size of every other file, machine_id, created_at, total size, faithfulness
    bundle.json                machine_id, created_at, library versions, per model: format, files, inputs, thresholds
    classification/            model.txt (LightGBM) | model.json (XGBoost) | model.cbm (CatBoost) | autogluon/
                               + model_card.json, preprocessing.json, metrics.json (when the release step wrote it)
    regression/                the same
    anomaly/                   anomaly_ensemble.joblib, model_card.json, preprocessing.json, metrics.json
    timeseries/                prophet/<nn>.json, model_card.json, preprocessing.json, metrics.json

Tabular models
    The pi preset keeps one LightGBM (XGBoost, CatBoost) model inside an AutoGluon predictor; one-row prediction
    through AutoGluon costs ~10 ms per model. The bundle ships the NATIVE booster instead: AutoGluon 1.6.3 holds
    a `lightgbm.Booster` in `LGBModel.model`, an `XGBClassifier`/`XGBRegressor` in `XGBoostModel.model` and a
    `CatBoostClassifier`/`CatBoostRegressor` in `CatBoostModel.model`. For float inputs AutoGluon's feature
    generator only selects columns (it drops constant and duplicated ones), so the native input is the
    model's feature columns, in its order. The models' own preprocessing renames columns (LightGBM) or, for
    XGBoost, turns the frame into a scipy CSR matrix, where a 0.0 is not stored and so is MISSING to XGBoost:
    the native XGBoost path reproduces that (found by the check below: without it, predictions differed by
    5e-4). Nothing is assumed: the generator's output must equal its input on the model's columns, and the
    native predictions must match AutoGluon's on rows of the val split (probability within 1e-5, RUL within
    1e-3 h), or the build is refused. A best model that is not a single LightGBM/XGBoost/CatBoost model (a
    bagged or weighted ensemble, e.g. the seed preset) ships as the AutoGluon predictor directory instead
    (format "autogluon"; the manifest says why).

Integrity
    `verify_bundle` re-hashes every file and refuses a bundle with a changed, missing or unlisted file. The
    predictor calls it before it unpickles anything (a pickle runs code). The bundle is written into a temporary
    directory beside `out_dir` and renamed into place, so `out_dir` is never half-written.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core import paths
from pdm_pipeline.core.anomaly import MODEL_FILE as ANOMALY_MODEL_FILE
from pdm_pipeline.core.anomaly import load_anomaly_model
from pdm_pipeline.core.contract import file_fingerprint, load_machine
from pdm_pipeline.core.features import FeatureSpec, compute_features
from pdm_pipeline.core.forecast import MODEL_CARD as FORECAST_CARD_FILE
from pdm_pipeline.core.pipeline import PREPROCESSING_FILE, read_preprocessing
from pdm_pipeline.core.gates import GateOutcome, check_bundle_size
from pdm_pipeline.core.publish import discard_dir, publish_dir
from pdm_pipeline.core.schema import ANOMALY, CLASSIFICATION, MODEL_TYPES, REGRESSION, TIMESERIES
from pdm_pipeline.core.tabular import CARD_FILE as TABULAR_CARD_FILE
from pdm_pipeline.core.tabular import load_tabular_model

MANIFEST_FILE = "manifest.json"
BUNDLE_FILE = "bundle.json"
# Test metrics, written into each published model directory by the release step (defs/assets/release.py).
METRICS_FILE = "metrics.json"
AUTOGLUON_FORMAT = "autogluon"
# Native formats: AutoGluon model class name -> (format, file name in the bundle).
NATIVE_FORMATS: dict[str, tuple[str, str]] = {
    "LGBModel": ("lightgbm", "model.txt"),
    "XGBoostModel": ("xgboost", "model.json"),
    "CatBoostModel": ("catboost", "model.cbm"),
}
# Largest accepted |native - AutoGluon| on the sample rows: probability (classifier) and hours (RUL).
FAITHFULNESS_TOLERANCE: dict[str, float] = {CLASSIFICATION: 1e-5, REGRESSION: 1e-3}
# Val rows (evenly spread) on which native and AutoGluon predictions are compared.
FAITHFULNESS_ROWS = 1000
SAMPLE_SPLIT = "val"
# Libraries whose versions the bundle records: import name -> distribution names to try.
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "pandas": ("pandas",),
    "scipy": ("scipy",),
    "scikit-learn": ("scikit-learn",),
    "joblib": ("joblib",),
    "pdm_pipeline": ("pdm-pipeline",),
    "lightgbm": ("lightgbm",),
    "xgboost": ("xgboost", "xgboost-cpu"),
    "catboost": ("catboost",),
    "prophet": ("prophet",),
    "autogluon.tabular": ("autogluon.tabular",),
}
_BASE_LIBRARIES = ("numpy", "pandas", "scipy", "scikit-learn", "joblib", "pdm_pipeline")


class BundleIntegrityError(Exception):
    """A bundle whose files do not match its manifest; the message names the file."""


class BundleExportError(RuntimeError):
    """A bundle that cannot be built; the message names the machine, the model and what is wrong."""


@dataclass
class BundleInfo:
    """What `build_bundle` wrote."""

    path: Path
    machine_id: str
    created_at: str
    # model type -> format ("lightgbm", "xgboost", "catboost", "autogluon", "joblib", "prophet-json").
    formats: dict[str, str]
    # model type -> max |native - AutoGluon| on the sample rows (native tabular models only).
    max_abs_diff: dict[str, float]
    n_files: int
    total_bytes: int
    build_seconds: float
    # model type -> why it is absent (no published model).
    absent: dict[str, str] = field(default_factory=dict)

    @property
    def size_mb(self) -> float:
        return self.total_bytes / 1e6


# ---------------------------------------------------------------------------------------------- shared helpers


def feature_frame(raw: pd.DataFrame, spec: FeatureSpec, fill_values: dict[str, float]) -> pd.DataFrame:
    """Model inputs of raw sensor rows, exactly as in training: `compute_features` with the stored spec, then
    the train-fitted fill values (preprocessing.json) for what a window cannot compute; same index as `raw`."""
    return compute_features(raw, spec).fillna(fill_values)


def library_versions(libraries: tuple[str, ...]) -> dict[str, str]:
    """Installed version of each library (import name -> version; "not installed" when absent)."""
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


# ---------------------------------------------------------------------------------------------- native models


class NativeModel:
    """A LightGBM/XGBoost/CatBoost model loaded from its native file, without AutoGluon.

    `predict(matrix)` takes the input columns in the bundle's order and returns P(failure) for a classifier,
    RUL hours (clipped at 0, as `tabular.LoadedTabularModel.predict` does) for a regressor.
    """

    def __init__(self, fmt: str, path: Path, model_type: str) -> None:
        if model_type not in (CLASSIFICATION, REGRESSION):
            raise ValueError(f"native models are classifiers or regressors, not {model_type!r}")
        self.format = fmt
        self.path = Path(path)
        self.model_type = model_type
        if fmt == "lightgbm":
            import lightgbm

            self._model = lightgbm.Booster(model_file=str(path))
        elif fmt == "xgboost":
            import xgboost

            self._model = xgboost.Booster()
            self._model.load_model(str(path))
        elif fmt == "catboost":
            import catboost

            cls = catboost.CatBoostClassifier if model_type == CLASSIFICATION else catboost.CatBoostRegressor
            self._model = cls()
            self._model.load_model(str(path))
        else:
            raise ValueError(f"unknown native model format {fmt!r}; expected lightgbm, xgboost or catboost")

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """P(failure) (classifier) or RUL hours >= 0 (regressor) per row of `matrix`."""
        if self.format == "lightgbm":
            # One thread: the boosters are small and OpenMP start-up dominates one-row predictions.
            out = self._model.predict(matrix, num_threads=1)
        elif self.format == "xgboost":
            # AutoGluon feeds XGBoost a scipy CSR matrix built from the frame, where a 0.0 is not stored and so
            # is MISSING to XGBoost, in training as in prediction: the same here, or zeros take other branches.
            out = self._model.inplace_predict(np.where(matrix == 0.0, np.nan, matrix))
        elif self.model_type == CLASSIFICATION:
            out = self._model.predict_proba(matrix, thread_count=1)[:, 1]
        else:
            out = self._model.predict(matrix, thread_count=1)
        out = np.asarray(out, dtype=float)
        return out if self.model_type == CLASSIFICATION else np.maximum(out, 0.0)


def _export_native(best: Any, fmt: str, file: Path) -> None:
    """Write the booster held by AutoGluon model object `best` to `file` in its native format."""
    if fmt == "lightgbm":
        # Without num_iteration, LightGBM saves up to the best (early-stopping) iteration, as it predicts.
        best.model.save_model(str(file))
    elif fmt == "xgboost":
        booster = best.model.get_booster()
        # The sklearn wrapper predicts with the trees up to best_iteration; keep exactly those.
        best_iteration = getattr(best.model, "best_iteration", None)
        if best_iteration is not None:
            booster = booster[: int(best_iteration) + 1]
        booster.save_model(str(file))
    else:
        best.model.save_model(str(file))


# ---------------------------------------------------------------------------------------------- tabular export


def _sample_rows(root: Path, machine_id: str) -> pd.DataFrame:
    """The raw val split, for the faithfulness check (features need each sampled row's history)."""
    try:
        return load_machine(root, machine_id).splits[SAMPLE_SPLIT]
    except (OSError, ValueError) as exc:
        raise BundleExportError(
            f"machine {machine_id}: cannot load the {SAMPLE_SPLIT} split to check the native models "
            f"({paths.split_path(root, machine_id, SAMPLE_SPLIT)}): {exc}"
        ) from exc


def _sample_inputs(raw: pd.DataFrame, preprocessing: dict[str, Any]) -> pd.DataFrame:
    """Model inputs of `raw` (as the edge computes them) at up to FAITHFULNESS_ROWS evenly spread rows."""
    features = feature_frame(raw, FeatureSpec.from_dict(preprocessing["feature_spec"]), preprocessing["fill_values"])
    rows = np.unique(np.linspace(0, len(features) - 1, min(FAITHFULNESS_ROWS, len(features))).astype(int))
    return features.iloc[rows]


def _input_columns(best: Any) -> list[str]:
    """The columns the booster of AutoGluon model `best` takes, in its order."""
    generator = getattr(best, "_ohe_generator", None)  # XGBoost: its inputs pass through a one-hot generator
    if generator is not None:
        return list(generator.get_original_feature_names())
    return list(best.features)


def _native_fallback_reason(predictor: Any, best: Any, inputs: pd.DataFrame, feature_names: list[str]) -> str | None:
    """Why the best model cannot ship natively (None when it can)."""
    kind = type(best).__name__
    if kind not in NATIVE_FORMATS:
        return (
            f"best model {predictor.model_best!r} is a {kind} (an ensemble or another model family), "
            f"not a single {', '.join(NATIVE_FORMATS)}"
        )
    if kind == "XGBoostModel" and getattr(best, "_ohe_generator", None) is not None and best._ohe_generator.cat_cols:
        return f"the XGBoost model one-hot encodes categorical inputs {best._ohe_generator.cat_cols[:5]}"
    unknown = [c for c in _input_columns(best) if c not in feature_names]
    if unknown:
        return f"the booster's inputs {unknown[:5]} are not pipeline features (AutoGluon derived them)"
    transformed = predictor.transform_features(inputs[feature_names])
    same = all(
        c in transformed.columns
        and np.array_equal(transformed[c].to_numpy(dtype=float), inputs[c].to_numpy(dtype=float), equal_nan=True)
        for c in _input_columns(best)
    )
    if not same:
        return "AutoGluon's feature generator changes the input values (not a column subset)"
    return None


def _export_tabular(
    model_type: str, src: Path, dest: Path, sample: pd.DataFrame, machine_id: str, log: Callable[[str], None]
) -> dict[str, Any]:
    """Copy one classifier/regressor into `dest` natively (or as an AutoGluon predictor); return its entry.

    `sample`: raw val rows on which the native model must reproduce AutoGluon's predictions."""
    where = f"machine {machine_id}, {model_type} model {src}"
    loaded = load_tabular_model(src)
    if loaded.model_type != model_type:
        raise BundleExportError(f"{where}: its model card says {loaded.model_type!r}")
    dest.mkdir(parents=True)
    for name in (TABULAR_CARD_FILE, PREPROCESSING_FILE, METRICS_FILE):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    preprocessing = read_preprocessing(src)
    feature_names = loaded.feature_names
    inputs = _sample_inputs(sample, preprocessing)
    predictor = loaded.predictor
    best = predictor._trainer.load_model(predictor.model_best)
    entry: dict[str, Any] = {
        "best_model": predictor.model_best,
        "threshold": loaded.threshold,
        "rul_cap_hours": loaded.card.get("rul_cap_hours"),
    }
    reason = _native_fallback_reason(predictor, best, inputs, feature_names)
    if reason is not None:
        log(f"bundle: {model_type} ships as the AutoGluon predictor: {reason}")
        shutil.copytree(src / loaded.card["predictor_dir"], dest / "autogluon")
        return {**entry, "format": AUTOGLUON_FORMAT, "model_file": f"{model_type}/autogluon", "fallback_reason": reason}

    fmt, file_name = NATIVE_FORMATS[type(best).__name__]
    _export_native(best, fmt, dest / file_name)
    native = NativeModel(fmt, dest / file_name, model_type)
    input_columns = _input_columns(best)
    ours = native.predict(inputs[input_columns].to_numpy(dtype=float))
    theirs = loaded.predict_proba(inputs) if model_type == CLASSIFICATION else loaded.predict(inputs)
    max_diff = float(np.max(np.abs(ours - theirs)))
    tolerance = FAITHFULNESS_TOLERANCE[model_type]
    if not max_diff <= tolerance:
        raise BundleExportError(
            f"{where}: the native {fmt} model differs from AutoGluon by up to {max_diff:.3g} on "
            f"{len(inputs)} {SAMPLE_SPLIT} rows (tolerance {tolerance:g}): refusing to build an unfaithful bundle"
        )
    log(f"bundle: {model_type} exported as native {fmt} (max |diff| vs AutoGluon {max_diff:.2e} on {len(inputs)} rows)")
    return {
        **entry,
        "format": fmt,
        "model_file": f"{model_type}/{file_name}",
        "input_columns": input_columns,
        "faithfulness": {
            "max_abs_diff": max_diff,
            "tolerance": tolerance,
            "rows": int(len(inputs)),
            "compared_on": f"{SAMPLE_SPLIT} split, {'P(failure)' if model_type == CLASSIFICATION else 'RUL hours'}",
        },
    }


# ---------------------------------------------------------------------------------------------- anomaly, forecasts


def _export_anomaly(src: Path, dest: Path, machine_id: str) -> dict[str, Any]:
    """Copy the anomaly ensemble (joblib + card) after checking that it loads."""
    try:
        model = load_anomaly_model(src)
    except (OSError, TypeError) as exc:
        raise BundleExportError(f"machine {machine_id}, anomaly model {src}: {exc}") from exc
    shutil.copytree(src, dest)
    return {
        "format": "joblib",
        "model_file": f"{ANOMALY}/{ANOMALY_MODEL_FILE}",
        "threshold": float(model.threshold),
        "inputs": list(model.feature_names),
    }


def _export_forecasts(src: Path, dest: Path, machine_id: str) -> dict[str, Any]:
    """Copy the Prophet JSON models and their card after checking that every listed file exists."""
    card_file = src / FORECAST_CARD_FILE
    if not card_file.is_file():
        raise BundleExportError(f"machine {machine_id}, timeseries model {src}: {FORECAST_CARD_FILE} is missing")
    card = json.loads(card_file.read_text())
    missing = [name for name in card["files"].values() if not (src / name).is_file()]
    if missing:
        raise BundleExportError(f"machine {machine_id}, timeseries model {src}: model file(s) {missing} are missing")
    shutil.copytree(src, dest)
    return {"format": "prophet-json", "sensors": list(card["sensors"]), "horizon_hours": card["horizon_hours"]}


# ---------------------------------------------------------------------------------------------- manifest


def _bundle_files(bundle: Path) -> list[str]:
    """Relative POSIX paths of every file and symlink in the bundle except the manifest, sorted."""
    return sorted(
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if (p.is_file() or p.is_symlink()) and p.relative_to(bundle).as_posix() != MANIFEST_FILE
    )


def _write_manifest(bundle: Path, machine_id: str, created_at: str, entries: dict[str, dict]) -> dict[str, Any]:
    files = {}
    for name in _bundle_files(bundle):
        file = bundle / name
        files[name] = {"sha256": file_fingerprint(file), "bytes": file.stat().st_size}
    manifest = {
        "machine_id": machine_id,
        "created_at": created_at,
        "n_files": len(files),
        "total_bytes": sum(f["bytes"] for f in files.values()),
        "formats": {t: e["format"] for t, e in entries.items()},
        "faithfulness": {t: e.get("faithfulness") or e.get("fallback_reason") for t, e in entries.items()
                         if t in (CLASSIFICATION, REGRESSION)},
        "files": files,
    }
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    return manifest


def verify_bundle(bundle_dir: Path) -> dict[str, Any]:
    """Check every file against manifest.json (sha256 and size) and that no unlisted file exists.

    Returns the manifest. Raises BundleIntegrityError naming the first offending file.
    """
    bundle = Path(bundle_dir)
    manifest_file = bundle / MANIFEST_FILE
    if not manifest_file.is_file():
        raise BundleIntegrityError(f"{bundle}: {MANIFEST_FILE} is missing: not a bundle (or it was modified)")
    try:
        manifest = json.loads(manifest_file.read_text())
        listed: dict[str, dict[str, Any]] = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleIntegrityError(f"{bundle}: {MANIFEST_FILE} is unreadable ({exc}): bundle was modified") from exc
    for name, expected in sorted(listed.items()):
        file = bundle / name
        if Path(name).is_absolute() or ".." in Path(name).parts or file.is_symlink():
            raise BundleIntegrityError(f"{bundle}: manifest entry {name} points outside the bundle: refused")
        if not file.is_file():
            raise BundleIntegrityError(f"missing file {name} in {bundle}: bundle was modified")
        if file.stat().st_size != expected["bytes"]:
            raise BundleIntegrityError(
                f"size mismatch for {name} ({file.stat().st_size} bytes, manifest says {expected['bytes']}): "
                "bundle was modified"
            )
        if file_fingerprint(file) != expected["sha256"]:
            raise BundleIntegrityError(f"hash mismatch for {name}: bundle was modified")
    unlisted = [name for name in _bundle_files(bundle) if name not in listed]
    if unlisted:
        raise BundleIntegrityError(
            f"unlisted file {unlisted[0]} in {bundle} ({len(unlisted)} file(s) not in {MANIFEST_FILE}): "
            "bundle was modified"
        )
    return manifest


# ---------------------------------------------------------------------------------------------- build


def build_bundle(root: Path, machine_id: str, out_dir: Path, log: Callable[[str], None] = print) -> BundleInfo:
    """Write the edge bundle of one machine's published models to `out_dir` (replacing any previous one).

    Raises BundleExportError when the machine has no published model, a model is incomplete, or a native
    booster does not reproduce AutoGluon's predictions; `out_dir` is then left as it was.
    """
    start = time.perf_counter()
    root, out_dir = Path(root), Path(out_dir)
    paths.validate_machine_id(machine_id)
    sources = {t: paths.model_dir(root, t, machine_id) for t in MODEL_TYPES}
    present = {t: src for t, src in sources.items() if src.is_dir()}
    absent = {t: f"no published model at {src}" for t, src in sources.items() if t not in present}
    if not present:
        raise BundleExportError(f"machine {machine_id}: no published model under {root / 'models'}: nothing to bundle")
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = out_dir.parent / f".building-{out_dir.name}-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        entries: dict[str, dict[str, Any]] = {}
        sample = _sample_rows(root, machine_id) if {CLASSIFICATION, REGRESSION} & set(present) else None
        for model_type, src in present.items():
            dest = work / model_type
            if model_type in (CLASSIFICATION, REGRESSION):
                entries[model_type] = _export_tabular(model_type, src, dest, sample, machine_id, log)
            elif model_type == ANOMALY:
                entries[model_type] = _export_anomaly(src, dest, machine_id)
            else:
                entries[model_type] = _export_forecasts(src, dest, machine_id)
        libraries = list(_BASE_LIBRARIES)
        libraries += [e["format"] for e in entries.values() if e["format"] in ("lightgbm", "xgboost", "catboost")]
        if any(e["format"] == AUTOGLUON_FORMAT for e in entries.values()):
            libraries.append("autogluon.tabular")
        if TIMESERIES in entries:
            libraries.append("prophet")
        description = {
            "machine_id": machine_id,
            "created_at": created_at,
            "versions": library_versions(tuple(dict.fromkeys(libraries))),
            "models": entries,
            "absent": absent,
        }
        (work / BUNDLE_FILE).write_text(json.dumps(description, indent=1))
        manifest = _write_manifest(work, machine_id, created_at, entries)
        publish_dir(work, out_dir)
    except BaseException:
        discard_dir(work)
        raise
    info = BundleInfo(
        path=out_dir,
        machine_id=machine_id,
        created_at=created_at,
        formats={t: e["format"] for t, e in entries.items()},
        max_abs_diff={t: e["faithfulness"]["max_abs_diff"] for t, e in entries.items() if "faithfulness" in e},
        n_files=manifest["n_files"],
        total_bytes=manifest["total_bytes"],
        build_seconds=time.perf_counter() - start,
        absent=absent,
    )
    log(f"bundle: {machine_id} -> {out_dir} ({info.n_files} files, {info.size_mb:.2f} MB, {info.build_seconds:.1f} s)")
    return info


def publish_bundle(
    root: Path, machine_id: str, budget_mb: float, log: Callable[[str], None] = print
) -> tuple[BundleInfo, GateOutcome]:
    """Build the machine's bundle aside, gate its size, and only then rename it to `<root>/bundles/<machine_id>`.

    Over budget, the new bundle is discarded and the previous one stays; the outcome says so. The returned
    BundleInfo's path is the published bundle (or the discarded candidate's path when the gate failed).
    """
    final = paths.bundle_dir(root, machine_id)
    candidate = final.parent / f".candidate-{final.name}-{uuid.uuid4().hex[:8]}"
    info = build_bundle(root, machine_id, candidate, log=log)
    outcome = check_bundle_size(info.size_mb, budget_mb)
    if not outcome.passed:
        discard_dir(candidate)
        log(f"bundle: {machine_id} not published: {outcome.description}; the previous bundle stays")
        return info, outcome
    info.path = publish_dir(candidate, final)
    return info, outcome


__all__ = [
    "BundleExportError",
    "BundleInfo",
    "BundleIntegrityError",
    "NativeModel",
    "build_bundle",
    "feature_frame",
    "library_versions",
    "publish_bundle",
    "verify_bundle",
]
