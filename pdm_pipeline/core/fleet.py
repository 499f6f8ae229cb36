"""Pooled fleet models: one classifier and one RUL regressor trained on every machine of a fleet.

A fleet is the machines whose metadata (or profile) names the same `machine_type` (the importer sets it for a
group column: AI4I's `ai4i_H`, `ai4i_L`, `ai4i_M` form the fleet `ai4i`). Machines of one fleet share sensors and
physics but each may have few failures of its own; a model trained on all of them sees many more.

Training (`train_fleet`, the `fleet_models` asset): each member's data is loaded, labelled and featurized exactly
as in its own run; train rows of all members are pooled (val rows too, for early stopping), with one 0/1 column
per member (`machine__<id>`), so the model can still learn what is particular to a machine; rows without time
order also get each member's copy of every feature (`member_copies`: one split can then place a member's own
limit). Pooling needs the
members to share their sensors and sampling step; the pooled models take the features every member computes
(windows capped by each member's own unit lengths differ in their longest window). The classifier also needs one
label definition (an importer-given label, or the same method and horizon: set `horizon` to pool RUL-based
labels); otherwise that family is not pooled and the reason is recorded. The pooled models are written, signed,
to `data/fleets/<fleet>/<release>/` with a `current` pointer (the same atomic switch as a machine's release).

Use (`pooled_for`, in each machine's own run): when the machine's fleet has a pooled model and `pooling` is
"auto", the family trains the machine's own model as well and compares both on THIS machine's val rows (PR-AUC
for the classifier; for the regressor a one-sided paired t-test of squared errors over the val units, as one
lifecycle's errors move together); the better one ships (with its threshold calibrated on this machine's val
rows), still evaluated, gated and released per machine. `pooling` "fleet" forces the pooled model,
"machine" ignores it. The pooled model never saw any test row of any member.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core import keys, paths
from pdm_pipeline.core.config import TrainingConfig
from pdm_pipeline.core.contract import ContractError, load_machine
from pdm_pipeline.edge.integrity import verify_dir, write_manifest
from pdm_pipeline.errors import PdmError
from pdm_pipeline.families.base import CARD_FILE, PREPROCESSING_FILE, TrainView

log = logging.getLogger(__name__)

POOLED_FAMILIES = ("classification", "regression")
MIN_MEMBERS = 2
FLEET_FILE = "fleet.json"
# Members' median sampling steps may differ by this share and still pool (jitter of one clock).
STEP_TOLERANCE = 0.01
MACHINE_PREFIX = "machine__"


def machine_column(machine_id: str) -> str:
    return f"{MACHINE_PREFIX}{machine_id}"


def fleet_of(metadata: Any) -> str | None:
    fleet = getattr(metadata, "machine_type", None)
    return fleet if fleet and paths.is_valid_machine_id(fleet) else None


def fleet_members(root: Path, fleet: str) -> list[str]:
    """Machines under the data root whose metadata or profile names this machine type."""
    members = []
    for machine_id in paths.list_machine_dirs(root):
        if not paths.is_valid_machine_id(machine_id):
            continue
        for file in (paths.metadata_path(root, machine_id), paths.profile_path(root, machine_id)):
            try:
                if json.loads(file.read_text()).get("machine_type") == fleet:
                    members.append(machine_id)
                    break
            except (OSError, ValueError, AttributeError):
                continue
    return members


def fleets(root: Path) -> dict[str, list[str]]:
    """Every fleet with at least MIN_MEMBERS machines under the data root."""
    out: dict[str, list[str]] = {}
    for machine_id in paths.list_machine_dirs(root):
        if not paths.is_valid_machine_id(machine_id):
            continue
        try:
            fleet = json.loads(paths.metadata_path(root, machine_id).read_text()).get("machine_type")
            if fleet is None and paths.profile_path(root, machine_id).is_file():
                fleet = json.loads(paths.profile_path(root, machine_id).read_text()).get("machine_type")
        except (OSError, ValueError, AttributeError):
            continue
        if fleet and paths.is_valid_machine_id(fleet):
            out.setdefault(fleet, []).append(machine_id)
    return {f: m for f, m in out.items() if len(m) >= MIN_MEMBERS}


@dataclass
class PooledModel:
    """A released pooled model a machine may adopt."""

    fleet: str
    model_type: str
    path: Path
    card: dict[str, Any]
    members: list[str]
    release_id: str


@dataclass
class FleetResult:
    fleet: str
    members: list[str]
    release_id: str | None
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    inputs: str = ""  # what the pooled models take, in words (shown in the fleet_models asset)
    retired: str | None = None  # the previous pooled release, withdrawn because this training released nothing


# ---------------------------------------------------------------------------------------------- training


def _same_steps(steps: list[float | None]) -> bool:
    """One sampling step (within STEP_TOLERANCE), or no time order for every member."""
    if all(step is None for step in steps):
        return True
    if any(step is None or step <= 0 for step in steps):
        return False
    return max(steps) <= min(steps) * (1 + STEP_TOLERANCE)  # type: ignore[type-var]


def _common_feature_names(prepared: list[tuple[Any, Any, Any]]) -> list[str]:
    """The features every member computes, in the first member's order. A feature's name fixes its computation
    (sensor, statistic, window in samples) and the members share one step, so a shared name means the same
    feature on every member. Each member's default windows are capped by its own unit lengths (e.g. 104 and 105
    samples), so their longest windows rarely coincide: the pooled model takes the windows all of them have,
    and each machine still compares it with its own model (all its windows) on its own held-out rows."""
    shared = set.intersection(*(set(f.feature_names) for _, _, f in prepared))
    return [name for name in prepared[0][2].feature_names if name in shared]


def member_copies(common: list[str], columns: list[str]) -> dict[str, tuple[str, str]]:
    """Rows without time order: one copy of every shared feature per member (`<feature>@<machine column>`),
    holding the feature on that member's rows and missing elsewhere -> (feature, machine column).

    Why: members of a fleet share their physics but not always their limits (AI4I's overstrain limit is 11,000 minNm
    on L, 12,000 on M, 13,000 on H). With only the one-hot machine columns a tree must split on the machine and on
    the feature, and the machine split gains little on its own, so among many inputs and with shallow trees the
    limit learnt on the largest member is often applied to the others (on AI4I's split seed 0, 3 of the 4 false
    alarms were L's overstrain limit on H and M rows; with the copies 1 is left, 11,779 on M, and M's overstrain
    failure at 12,383 is missed: M's limit now rests on M's own few failures). A member's copy lets one split place
    that member's own limit, while the shared feature still carries what all members have in common (the feature
    augmentation of Daume III, "Frustratingly easy domain adaptation", 2007). Measured through the pipeline's fit
    (`tabular.fit_predictor`, rows without time order, val F1 threshold) on 16 random rule datasets made for the
    check (2-4 members of unequal size, 4-6 raw measurements and their pairwise products and differences, 2-3
    failure limits of which most are shifted per member, 0.1-0.4 % random failures), F1 on 100,000 unseen rows each:
    0.902 -> 0.924, better on 15, worse on 1. On 16 where every limit is shared: 0.946 -> 0.943 (7 better, 3 worse).
    AI4I, 5 split seeds: 0.851 -> 0.856 (3 better, 1 worse). Only for rows without time order, whose inputs are a
    few raw measurements and their pairwise products and differences: time-ordered members have hundreds of window
    features, which the copies would multiply by the number of members + 1."""
    return {f"{feature}@{column}": (feature, column) for column in columns for feature in common}


def with_member_copies(frame: pd.DataFrame, copies: dict[str, tuple[str, str]], own: str) -> pd.DataFrame:
    """`frame` (one member's rows; `own` its machine column) with the member copies appended: its own copies
    repeat their feature, the other members' are missing."""
    if not copies:
        return frame
    added = pd.DataFrame({copy: (frame[source] if member == own else np.nan) for copy, (source, member) in copies.items()},
                         index=frame.index, dtype="float32")
    return pd.concat([frame, added], axis=1)


def _pooled_view(fleet: str, prepared: list[tuple[Any, Any, Any]]) -> tuple[TrainView | None, str | None, str | None]:
    """(view, reason the classifier cannot pool, reason nothing can pool) over the members' train and val rows."""
    from pdm_pipeline.core.pipeline import sensor_ranges, train_view

    specs = [f.spec for _, _, f in prepared]
    if any(set(spec.sensors) != set(specs[0].sensors) for spec in specs):
        return None, None, "the members do not share their sensors"
    steps = {(spec.time_unit, spec.step) for spec in specs}
    if len({unit for unit, _ in steps}) > 1 or not _same_steps([step for _, step in steps]):
        described = ", ".join(f"{d.machine_id}: {f.spec.step} {f.spec.time_unit}" for d, _, f in prepared)
        return None, None, (f"the members sample at different steps ({described}): a window of n samples would "
                            "not mean one duration")
    common = _common_feature_names(prepared)
    columns = [machine_column(d.machine_id) for d, _, _ in prepared]
    copies = member_copies(common, columns) if all(spec.step is None for spec in specs) else {}
    frames: dict[str, list[pd.DataFrame]] = {"train": [], "val": []}
    raw: dict[str, list[pd.DataFrame]] = {"train": [], "val": []}
    members: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    for index, (data, _, features) in enumerate(prepared):
        own = machine_column(data.machine_id)
        for split in frames:
            part = features.frames[split].copy()
            for column in columns:
                part[column] = 1.0 if column == own else 0.0
            frames[split].append(with_member_copies(part, copies, own))
            raw[split].append(data.splits[split])
            members[split].append(np.full(len(part), index))
    def rule(definition: Any) -> str | None:  # what the label means (not the rate it had on each machine)
        if definition is None:
            return None
        d = definition.to_dict()
        return json.dumps({k: d[k] for k in ("method", "horizon", "time_unit", "alarm_levels")}, sort_keys=True)

    definitions = {rule(labels.definition) for _, labels, _ in prepared}
    label_reason = None
    if None in definitions:
        unlabelled = [data.machine_id for data, labels, _ in prepared if labels.definition is None]
        label_reason = f"member(s) {', '.join(unlabelled)} have no usable label"
    elif len(definitions) > 1:
        label_reason = ("the members' label definitions differ (each chose its own horizon on train): set `horizon` "
                        "to pool the classifier")
    first_data, first_labels, first_features = prepared[0]
    view = train_view(first_data, first_labels, first_features)
    view = replace(
        view,
        machine_id=f"fleet {fleet}",
        raw={s: pd.concat(v, ignore_index=True) for s, v in raw.items()},
        frames={s: pd.concat(v, ignore_index=True) for s, v in frames.items()},
        feature_names=[*common, *copies, *columns],
        preprocessing={
            **view.preprocessing, "pooled_feature_names": common, "member_copies": copies,
            "sensor_ranges": sensor_ranges(raw["train"], first_features.spec.sensors),
        },
        label_skipped_reason=label_reason,
        pooled={},
        row_members={s: np.concatenate(v) for s, v in members.items()},
    )
    return view, label_reason, None


def train_fleet(root: Path, fleet: str, config: TrainingConfig | None = None, run_id: str | None = None) -> FleetResult:
    """Train and release the pooled models of one fleet (see the module docstring)."""
    from pdm_pipeline import families
    from pdm_pipeline.core.pipeline import new_run_id, prepare_features, prepare_labels
    from pdm_pipeline.core.release import _switch, new_release_id

    config = (config or TrainingConfig()).validate()
    root = Path(root)
    members = fleet_members(root, fleet)
    if len(members) < MIN_MEMBERS:
        raise PdmError(f"fleet {fleet!r} has {len(members)} machine(s) under {root}: pooling needs {MIN_MEMBERS}+")
    prepared = []
    for machine_id in members:
        try:
            data = load_machine(root, machine_id)
        except ContractError as exc:
            log.warning(f"fleet {fleet}: {machine_id} left out: {exc}")
            continue
        labels = prepare_labels(data, config)
        prepared.append((data, labels, prepare_features(data, labels, config)))
    result = FleetResult(fleet, [d.machine_id for d, _, _ in prepared], None)
    if len(prepared) < MIN_MEMBERS:
        result.skipped = dict.fromkeys(POOLED_FAMILIES, "fewer than 2 members with valid data")
        return _retire(root, result)
    view, label_reason, reason = _pooled_view(fleet, prepared)
    if view is None:
        result.skipped = dict.fromkeys(POOLED_FAMILIES, reason or "")
        return _retire(root, result)
    shared = len(view.preprocessing["pooled_feature_names"])
    copies = len(view.preprocessing["member_copies"])
    result.inputs = (f"{shared} shared features, {copies} member copies ({len(result.members)} x {shared}), "
                     f"{len(result.members)} machine columns" if copies else
                     f"{shared} shared features, {len(result.members)} machine columns")
    run_id = run_id or new_run_id()
    base = paths.fleet_dir(root, fleet)
    staging = base / f".staging-{run_id}"
    signing_key = keys.signing_key(root)
    for model_type in POOLED_FAMILIES:
        family = families.get(model_type)
        if model_type == "classification" and label_reason:
            result.skipped[model_type] = label_reason
            continue
        out = staging / model_type
        try:
            summary = family.train(view, out, replace(config, pooling="machine"))
        except families.ModelSkipped as exc:
            result.skipped[model_type] = str(exc)
            shutil.rmtree(out, ignore_errors=True)
            continue
        (out / PREPROCESSING_FILE).write_text(json.dumps(view.preprocessing, indent=1))
        (out / FLEET_FILE).write_text(json.dumps({
            "fleet": fleet, "members": result.members,
            "machine_columns": [machine_column(m) for m in result.members],
            "member_copies": view.preprocessing.get("member_copies", {}),
        }, indent=1))
        write_manifest(out, signing_key, {"fleet": fleet, "model_type": model_type})
        result.models[model_type] = summary
        log.info(f"fleet {fleet}: pooled {family.title} trained on {len(result.members)} machines")
    if not result.models:
        shutil.rmtree(staging, ignore_errors=True)
        return _retire(root, result)
    release_id = new_release_id(run_id)
    base.mkdir(parents=True, exist_ok=True)
    with _FleetLock(base):
        staging.rename(base / release_id)
        _switch(base, release_id)
        for old in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")
                          and not p.is_symlink())[:-3]:
            shutil.rmtree(old, ignore_errors=True)
    result.release_id = release_id
    return result


def _retire(root: Path, result: FleetResult) -> FleetResult:
    """Withdraw the fleet's current pooled release when a new training of the fleet released nothing: its models
    were fitted on members, sensors or labels that no longer pool, and members must stop choosing them (one
    unlink of the `current` pointer; the release directory stays for inspection)."""
    base = paths.fleet_dir(root, result.fleet)
    current = base / "current"
    if not current.is_symlink():
        return result
    with _FleetLock(base):
        if current.is_symlink():
            result.retired = current.resolve().name
            current.unlink()
            log.warning(f"fleet {result.fleet}: nothing pools any more; pooled release {result.retired} withdrawn")
    return result


class _FleetLock:
    """An exclusive lock on a fleet's releases (released by the OS when the holder dies)."""

    def __init__(self, base: Path) -> None:
        self.path = base / ".lock"

    def __enter__(self) -> None:
        import fcntl

        self.handle = self.path.open("a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


# ---------------------------------------------------------------------------------------------- use


def pooled_for(root: Path, data: Any) -> dict[str, PooledModel]:
    """Model type -> the released pooled model of the machine's fleet (verified), when there is one."""
    fleet = fleet_of(data.metadata)
    if fleet is None:
        return {}
    current = paths.fleet_dir(root, fleet) / "current"
    if not current.is_symlink():
        return {}
    release = current.resolve()
    trust = keys.local_trust(root)
    out = {}
    for model_type in POOLED_FAMILIES:
        model_dir = release / model_type
        if not model_dir.is_dir():
            continue
        verify_dir(model_dir, trust, f"pooled {model_type} model of fleet {fleet}")
        card = json.loads((model_dir / CARD_FILE).read_text())
        members = json.loads((model_dir / FLEET_FILE).read_text())["members"]
        out[model_type] = PooledModel(fleet, model_type, model_dir, card, members, release.name)
    return out


def machine_copy(pooled: PooledModel, view: TrainView, dest: Path) -> dict[str, Any] | None:
    """Copy a pooled model into `dest` for one machine: its card with the machine's identity columns as
    constant inputs and its member copies (`member_copies`) as copied inputs: the machine's own copies repeat
    their feature, the other members' copies are missing (null). None when the machine's features cannot feed
    it."""
    described = json.loads((pooled.path / FLEET_FILE).read_text())
    columns = set(described["machine_columns"])
    copies = {c: tuple(v) for c, v in (described.get("member_copies") or {}).items()}
    needed = [c for c in pooled.card["input_columns"] if c not in columns and c not in copies]
    if not set(needed) <= set(view.feature_names):
        return None
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    model_file = pooled.card["model_file"]
    source = pooled.path / model_file
    if source.is_dir():
        shutil.copytree(source, dest / model_file)
    else:
        shutil.copy2(source, dest / model_file)
    own = machine_column(view.machine_id)
    card = dict(pooled.card)
    inputs = pooled.card["input_columns"]
    card["constant_inputs"] = {
        **{c: (1.0 if c == own else 0.0) for c in inputs if c in columns},
        **{c: None for c in inputs if c in copies and copies[c][1] != own},
    }
    card["copied_inputs"] = {c: copies[c][0] for c in inputs if c in copies and copies[c][1] == own}
    card["source"] = "fleet"
    prep = pooled.path / PREPROCESSING_FILE
    card["fleet"] = {"fleet": pooled.fleet, "release": pooled.release_id, "members": pooled.members,
                     "machine_in_fleet": own in columns,
                     # what the pooled model learnt from: every member's train rows (the edge's out-of-range status)
                     "sensor_ranges": (json.loads(prep.read_text()).get("sensor_ranges") or {}) if prep.is_file() else {}}
    return card


def adopt(pooled_dir: Path, out_dir: Path, own_card: dict[str, Any]) -> None:
    """Replace the machine's own model file in `out_dir` by the pooled one staged in `pooled_dir`."""
    own = out_dir / own_card["model_file"]
    if own.is_dir():
        shutil.rmtree(own)
    else:
        own.unlink(missing_ok=True)
    for item in pooled_dir.iterdir():
        item.rename(out_dir / item.name)
    shutil.rmtree(pooled_dir, ignore_errors=True)


def discard(pooled_dir: Path) -> None:
    shutil.rmtree(pooled_dir, ignore_errors=True)
