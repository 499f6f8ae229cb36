"""The release of one machine: gates, metrics cards, one atomic switch, the edge bundle and the champion.

Used identically by the Dagster graph (`machine_release` asset) and by any core caller (`run_machine`, the
benchmark), so no path publishes an ungated model or one without its metrics card.

    data/releases/<machine_id>/
        <release_id>/                       immutable once written
            <model_type>/                   each model: files, model_card.json, preprocessing.json,
                                            metrics.json, signed manifest
            bundle/                         the edge bundle (core/bundle.py), signed
            release.json, release.sig       what came from where, every gate, every metric
        current -> <release_id>             one symlink, replaced atomically
        .building-<release_id>/             a release being written (never read)
        .lock                               serialises releases of this machine

Rules
    Per model: a trained and evaluated model is released when none of its ERROR gates fails (Pi size budget,
    quality gates named strict); WARN gates only tell. A model that was skipped, failed to train, failed to
    evaluate or failed an ERROR gate keeps its previous version (carried into the new release, hard-linked), and
    the release says which and why. Then, for the release as a whole: all its models within the total budget,
    the bundle within its budget. If nothing new passes, or a whole-release gate fails, nothing changes: the
    previous release stays current. Otherwise the release directory is written aside (`.building-*`), renamed
    into place, and `current` switches to it with one `os.replace` of a symlink: a reader that resolves
    `current` sees the whole old or the whole new set, at every instant, whatever is killed when.
Recovery
    `recover_machine` (run at the start of every release, and by the startup sweep) removes `.building-*`
    directories and leftover temporary links, removes a release killed between its rename and its switch (its
    `.switching-<id>` marker says so), and re-points a dangling or missing `current` at the newest complete release.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pdm_pipeline import families
from pdm_pipeline.core import keys, paths
from pdm_pipeline.core.bundle import BundleInfo, build_bundle, link_tree
from pdm_pipeline.core.config import GateSettings
from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.core.gates import (
    ERROR,
    WARN,
    GateOutcome,
    check_bundle_size,
    check_model_size,
    check_total_size,
    data_quality,
    quality_gates,
    skipped_quality_gates,
)
from pdm_pipeline.edge.integrity import Trust, sign_bytes, verify_dir, write_manifest
from pdm_pipeline.errors import PdmError
from pdm_pipeline.families.base import CARD_FILE, EXCLUDED, METRICS_FILE, NOT_RUN, PREPROCESSING_FILE, TrainedModel

log = logging.getLogger(__name__)

RELEASE_FILE = "release.json"
RELEASE_SIGNATURE = "release.sig"
CURRENT = "current"
KEEP_RELEASES = 3
RELEASED, KEPT, NONE = "released", "kept previous", "none"


@dataclass
class ModelDecision:
    model_type: str
    # How training went: trained / skipped / failed.
    status: str
    # released (new model), kept previous (the previous release's model stays), none (no model at all).
    action: str
    reason: str
    gates: list[GateOutcome] = field(default_factory=list)
    source_release: str | None = None
    size_mb: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    # Released although its test evaluation could not be made (why): the release warns.
    untested: str | None = None

    @property
    def warnings(self) -> list[GateOutcome]:
        return [g for g in self.gates if g.warns]

    @property
    def blocked_by(self) -> list[GateOutcome]:
        return [g for g in self.gates if g.blocks]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "action": self.action, "reason": self.reason,
            "source_release": self.source_release, "size_mb": self.size_mb, "metrics": self.metrics,
            "gates": [g.as_dict() for g in self.gates], "untested": self.untested,
        }


@dataclass
class ReleaseResult:
    machine_id: str
    published: bool
    release_id: str | None
    path: Path | None
    previous_release: str | None
    decisions: dict[str, ModelDecision]
    release_gates: list[GateOutcome]
    reason: str
    bundle: BundleInfo | None = None
    champion: dict[str, Any] = field(default_factory=dict)

    @property
    def all_gates(self) -> list[GateOutcome]:
        return [g for d in self.decisions.values() for g in d.gates] + self.release_gates

    @property
    def blocked(self) -> bool:
        """A gate stopped something (a model kept its previous version, or the whole release)."""
        return any(g.blocks for g in self.all_gates) or not self.published

    @property
    def outcome(self) -> str:
        """published / published with warnings / blocked (exit codes 0 / 3 / 4 of the CLI).

        A model released without test metrics is a warning: nothing measured how it does."""
        if self.blocked:
            return "blocked"
        left_out = (NOT_RUN, EXCLUDED)  # not trained on purpose: nothing to warn about
        if any(g.warns for g in self.all_gates) or any(
                (d.action != RELEASED and d.status not in left_out) or (d.action == RELEASED and d.untested)
                for d in self.decisions.values()):
            return "published with warnings"
        return "published"

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine_id": self.machine_id, "published": self.published, "outcome": self.outcome,
            "release_id": self.release_id, "previous_release": self.previous_release, "reason": self.reason,
            "models": {t: d.as_dict() for t, d in self.decisions.items()},
            "release_gates": [g.as_dict() for g in self.release_gates],
            "champion": self.champion,
        }


# ---------------------------------------------------------------------------------------------- reading


def current_release_dir(root: Path, machine_id: str) -> Path | None:
    """The resolved directory of the machine's current release (read from it, not through `current`)."""
    link = paths.current_release(root, machine_id)
    if not link.is_symlink() and not link.exists():
        return None
    target = link.resolve()
    return target if (target / RELEASE_FILE).is_file() else None


def read_release(release_dir: Path, trust: Trust | None = None) -> dict[str, Any]:
    """release.json of a release directory, its signature checked when `trust` is given."""
    data = (Path(release_dir) / RELEASE_FILE).read_bytes()
    if trust is not None:
        signature_file = Path(release_dir) / RELEASE_SIGNATURE
        signature = signature_file.read_bytes() if signature_file.is_file() else None
        trust.verify(data, signature, f"release {release_dir}", (RELEASE_FILE, RELEASE_SIGNATURE))
    return json.loads(data)


def verify_release(release_dir: Path, trust: Trust) -> dict[str, Any]:
    """Check a release as a whole: its signed release.json, each model directory it lists, and its bundle.

    Raises IntegrityError naming what is inconsistent (a model missing or changed, a bundle from elsewhere)."""
    from pdm_pipeline.edge.integrity import IntegrityError

    description = read_release(release_dir, trust)
    for model_type, entry in description["models"].items():
        if entry["action"] == NONE:
            if (Path(release_dir) / model_type).exists():
                raise IntegrityError(f"release {release_dir}: {model_type}/ exists but the release lists none")
            continue
        model_dir = Path(release_dir) / model_type
        if not model_dir.is_dir():
            raise IntegrityError(f"release {release_dir}: {model_type}/ is listed but missing")
        manifest = verify_dir(model_dir, trust, f"{model_type} model")
        if manifest["files"].get(METRICS_FILE, {}).get("sha256") != entry.get("metrics_sha256"):
            raise IntegrityError(f"release {release_dir}: {model_type}/ is not the model this release lists")
    bundle = Path(release_dir) / "bundle"
    manifest = verify_dir(bundle, trust, "bundle")
    if manifest.get("release_id") != description["release_id"]:
        raise IntegrityError(f"release {release_dir}: its bundle belongs to release {manifest.get('release_id')}")
    return description


# ---------------------------------------------------------------------------------------------- locking, recovery


@contextlib.contextmanager
def machine_lock(root: Path, machine_id: str, timeout_s: float = 600.0) -> Iterator[None]:
    """An exclusive lock on the machine's releases (released by the OS when the holder dies)."""
    directory = paths.releases_dir(root, machine_id)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"machine {machine_id}: another release holds {directory / '.lock'}") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def complete_releases(root: Path, machine_id: str) -> list[Path]:
    """Release directories with a release.json, oldest first: in the order they were made (each records its
    `sequence`, one more than the highest before it), then by id (a date). Not by id alone: an id dated by a
    clock that was ahead would stay the "newest" for good."""
    directory = paths.releases_dir(root, machine_id)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".") and
             not p.is_symlink() and (p / RELEASE_FILE).is_file()]
    return sorted(found, key=lambda p: (release_sequence(p), p.name))


def release_sequence(release: Path) -> int:
    """The release's place in its machine's order (0 for releases made before the order was recorded)."""
    try:
        sequence = json.loads((release / RELEASE_FILE).read_text()).get("sequence", 0)
    except (OSError, ValueError, AttributeError):
        return 0
    return sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else 0


def recover_machine(root: Path, machine_id: str) -> list[str]:
    """Remove what an interrupted release left behind; re-point a dangling `current`. Call under the lock.

    Returns what was done, in words (for the log)."""
    directory = paths.releases_dir(root, machine_id)
    done: list[str] = []
    if not directory.is_dir():
        return done
    for leftover in directory.iterdir():
        name = leftover.name
        if name.startswith((".building-", f".{CURRENT}.tmp-", f"{DEPLOY_PENDING}.tmp-")):
            if leftover.is_symlink() or leftover.is_file():
                leftover.unlink(missing_ok=True)
            else:
                shutil.rmtree(leftover, ignore_errors=True)
            done.append(f"removed interrupted {name}")
        elif leftover.is_dir() and not leftover.is_symlink() and not name.startswith(".") and \
                not (leftover / RELEASE_FILE).is_file():  # (`current` is a link: re-pointed below)
            # Never written by a release (those are renamed into place with their release.json): a release that
            # lost its release.json, or someone else's directory. Moved aside, not deleted: it may hold the only
            # copy of a machine's models.
            aside = directory / f".broken-{name}-{int(time.time())}"
            os.replace(leftover, aside)
            done.append(f"{name} has no {RELEASE_FILE}: moved aside to {aside.name} (not a release any more)")
    done += _remove_unswitched(root, machine_id)
    link = directory / CURRENT
    if link.is_symlink() and not (link.resolve() / RELEASE_FILE).is_file():
        complete = complete_releases(root, machine_id)
        if complete:
            _switch(directory, complete[-1].name)
            done.append(f"current re-pointed to {complete[-1].name}")
        else:
            link.unlink()
            done.append("dangling current removed")
    elif not link.is_symlink() and not link.exists() and (complete := complete_releases(root, machine_id)):
        # the link was lost (a copy or backup restore that drops symlinks): the newest whole release was current
        _switch(directory, complete[-1].name)
        done.append(f"current was missing: pointed to the newest whole release {complete[-1].name}")
    return done


# Written before a release is renamed into place, removed once `current` points at it: a release whose marker is
# still there and that is not current was killed between its rename and its switch (never current, its run failed).
# Only such a release is ever removed: a newer release that is not current (a rollback by hand, a damaged
# release.json) has no marker and is left alone.
SWITCHING = ".switching-"


def _remove_unswitched(root: Path, machine_id: str) -> list[str]:
    """Remove a release killed between its rename and its switch (its SWITCHING marker says so)."""
    directory = paths.releases_dir(root, machine_id)
    link = directory / CURRENT
    live = os.readlink(link) if link.is_symlink() else None
    done: list[str] = []
    for marker in directory.glob(f"{SWITCHING}*"):
        release_id = marker.name[len(SWITCHING):]
        release = directory / release_id
        if release_id != live and release.is_dir() and not release.is_symlink():
            shutil.rmtree(release, ignore_errors=True)
            done.append(f"removed {release_id}: renamed into place but never switched to (its run stopped before "
                        "the switch)")
        marker.unlink(missing_ok=True)
    return done


def _switch(directory: Path, release_id: str) -> None:
    tmp = directory / f".{CURRENT}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(release_id, tmp)
    os.replace(tmp, directory / CURRENT)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _collect_garbage(root: Path, machine_id: str) -> None:
    complete = complete_releases(root, machine_id)
    current = current_release_dir(root, machine_id)
    for old in complete[:-KEEP_RELEASES]:
        if current is None or old.resolve() != current:
            shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- decisions


def decide(
    trained: Mapping[str, TrainedModel], evaluations: Mapping[str, Evaluation], settings: GateSettings,
    previous: dict[str, Any] | None, not_trained: Mapping[str, str] | None = None,
) -> dict[str, ModelDecision]:
    """Per family: released / kept previous / none, with every gate outcome. `not_trained`: why a family that
    is missing from `trained` was not trained (default "not trained in this run")."""
    decisions: dict[str, ModelDecision] = {}
    previous_models = (previous or {}).get("models", {})
    for family in families.all_families():
        t = family.model_type
        model = trained.get(t)
        evaluation = evaluations.get(t)
        had = previous_models.get(t, {}).get("action") in (RELEASED, KEPT)
        keep = KEPT if had else NONE
        source = (previous_models.get(t, {}).get("source_release") if had else None)
        if model is None:
            decisions[t] = ModelDecision(t, NOT_RUN, keep, (not_trained or {}).get(t, "not trained in this run"),
                                         source_release=source)
            continue
        if model.skipped:
            gates = [check_model_size(t, None, settings.budget_mb(t), model.reason)]
            gates += skipped_quality_gates(t, model.reason or "not trained", settings)
            decisions[t] = ModelDecision(t, model.status, keep, model.reason or model.status, gates, source)
            continue
        gates = [check_model_size(t, model.size_mb, settings.budget_mb(t))]
        if evaluation is None or evaluation.failed_reason:
            reason = evaluation.failed_reason if evaluation else "not evaluated"
            gates += skipped_quality_gates(t, reason, settings)
            decisions[t] = ModelDecision(t, "failed", keep, reason, gates, source, model.size_mb)
            continue
        if evaluation.skipped_reason:
            gates += skipped_quality_gates(t, evaluation.skipped_reason, settings)
        else:
            gates += quality_gates(t, evaluation.metrics, settings)
        blocked = [g for g in gates if g.blocks]
        unchecked = [g.name for g in gates if g.skipped and g.severity == ERROR] if evaluation.skipped_reason else []
        if blocked or unchecked:
            reason = "blocked by " + "; ".join(
                [g.line() for g in blocked]
                + ([f"strict gate(s) {', '.join(unchecked)} not checked: {evaluation.skipped_reason}"] if unchecked else []))
            decisions[t] = ModelDecision(t, model.status, keep, reason, gates, source, model.size_mb,
                                         evaluation.flat_metrics())
        else:
            reason = ("passed its blocking gates" if not evaluation.skipped_reason else
                      f"released WITHOUT test metrics (its quality gates are not strict): {evaluation.skipped_reason}")
            decisions[t] = ModelDecision(t, model.status, RELEASED, reason, gates, None,
                                         model.size_mb, evaluation.flat_metrics(), evaluation.skipped_reason)
    return decisions


# ---------------------------------------------------------------------------------------------- release


def new_release_id(run_id: str) -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{run_id[:8]}"


def _import_source(root: Path, machine_id: str, data: Any) -> dict[str, Any] | None:
    """The import notes of the machine's metadata (`source`, importer/build.py): from the data trained on, else its
    metadata file; None for a machine that was not imported."""
    metadata = getattr(data, "metadata", None)
    if metadata is not None:
        return metadata.extra.get("source")
    try:
        return json.loads(paths.metadata_path(root, machine_id).read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None


class ReleaseRefused(PdmError):
    """A release's precondition did not hold once it held the machine's lock: nothing was written."""


def release_machine(
    root: Path,
    machine_id: str,
    trained: Mapping[str, TrainedModel],
    evaluations: Mapping[str, Evaluation],
    settings: GateSettings,
    *,
    run_id: str,
    data: Any = None,
    features: Any = None,
    data_version: str | None = None,
    tracking_uri: str | None = None,
    smoke_test: bool = True,
    not_trained: Mapping[str, str] | None = None,
    precondition: Callable[[], str | None] | None = None,
) -> ReleaseResult:
    """Gate every model, write the release aside, switch `current` atomically, bundle, promote champions.

    `precondition` is called once the machine's lock is held, before anything is written: a reason it returns is
    raised as ReleaseRefused (a check of the machine's current release, e.g. that no other run published since
    the reused work was done, holds until the switch only when made under the lock)."""
    root = Path(root)
    signing_key = keys.signing_key(root)
    trust = keys.local_trust(root)
    directory = paths.releases_dir(root, machine_id)
    with machine_lock(root, machine_id):
        if precondition is not None and (refusal := precondition()) is not None:
            raise ReleaseRefused(refusal)
        for line in recover_machine(root, machine_id):
            log.warning(f"{machine_id}: recovery: {line}")
        previous_dir = current_release_dir(root, machine_id)
        previous = _trusted_previous(machine_id, previous_dir, trust)
        if previous is None:
            previous_dir = None
        decisions = decide(trained, evaluations, settings, previous, not_trained)
        previous_id = previous["release_id"] if previous else None
        # The data's blocking checks, again: whatever trained these models (a run that selected only the steps
        # after the data, one that loaded an earlier stored dataset, a core caller), nothing trained on data that
        # fails one is released.
        failed = [g for g in data_quality(data, settings) if g.blocks] if data is not None else []
        if failed:
            return _finish(root, machine_id, run_id, ReleaseResult(
                machine_id, False, None, None, previous_id, decisions, failed,
                "not released: the data fails its blocking check(s) " + "; ".join(g.line() for g in failed)
                + ("; the previous release stays" if previous else "")))
        new_models = [t for t, d in decisions.items() if d.action == RELEASED]
        if not new_models:
            reason = "no new model passed its blocking gates: the previous release stays" if previous else \
                "no model passed its blocking gates: nothing released"
            return _finish(root, machine_id, run_id, ReleaseResult(
                machine_id, False, None, None, previous_id, decisions, [], reason))

        release_id = new_release_id(run_id)
        building = directory / f".building-{release_id}"
        building.mkdir(parents=True)
        final = directory / release_id
        try:
            sizes = _assemble(building, decisions, trained, evaluations, previous_dir, previous, signing_key, trust,
                              data)
            total = check_total_size(sizes, settings.total_budget_mb)
            release_gates = [total]
            if total.blocks:
                shutil.rmtree(building, ignore_errors=True)
                return _finish(root, machine_id, run_id, ReleaseResult(
                    machine_id, False, None, None, previous_id, decisions, release_gates,
                    f"not released: {total.description}; the previous release stays"))
            bundle = build_bundle(building, machine_id, release_id, signing_key, _import_source(root, machine_id, data))
            bundle_gate = check_bundle_size(bundle.size_mb, settings.bundle_budget_mb)
            release_gates.append(bundle_gate)
            if bundle_gate.blocks:
                shutil.rmtree(building, ignore_errors=True)
                return _finish(root, machine_id, run_id, ReleaseResult(
                    machine_id, False, None, None, previous_id, decisions, release_gates,
                    f"not released: {bundle_gate.description}; the previous release stays"))
            if smoke_test and data is not None:
                _smoke_test(bundle.path, data, trust)
            description = {
                "machine_id": machine_id,
                "release_id": release_id,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "run_id": run_id,
                "data_version": data_version,
                "previous_release": previous_id,
                "sequence": max((release_sequence(p) for p in complete_releases(root, machine_id)), default=0) + 1,
                "models": {t: {**d.as_dict(), "source_release": release_id if d.action == RELEASED else d.source_release,
                               "metrics_sha256": _metrics_sha(building / t)}
                           for t, d in decisions.items()},
                "release_gates": [g.as_dict() for g in release_gates],
                "bundle": {"formats": bundle.formats, "size_mb": bundle.size_mb, "n_files": bundle.n_files},
            }
            payload = json.dumps(description, indent=1, sort_keys=True, default=str).encode()
            (building / RELEASE_FILE).write_bytes(payload)
            (building / RELEASE_SIGNATURE).write_bytes(sign_bytes(signing_key, payload))
            switching = directory / f"{SWITCHING}{release_id}"
            switching.write_text(run_id)
            os.replace(building, final)
            if tracking_uri:  # until the registry says `deployed` = this release, recovery knows what to set
                _write_deploy_pending(directory, release_id, tracking_uri, trained, decisions)
            _switch(directory, release_id)
            switching.unlink(missing_ok=True)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            link = directory / CURRENT
            if final.is_dir() and not (link.is_symlink() and os.readlink(link) == release_id):
                shutil.rmtree(final, ignore_errors=True)  # in place but never switched to: not a release
            (directory / f"{SWITCHING}{release_id}").unlink(missing_ok=True)
            raise
        bundle.path = final / "bundle"
        for d in decisions.values():
            if d.action == RELEASED:
                d.source_release = release_id
        result = ReleaseResult(
            machine_id, True, release_id, final, previous_id, decisions, release_gates,
            f"release {release_id}: new {', '.join(new_models)}"
            + (f"; kept previous {', '.join(t for t, d in decisions.items() if d.action == KEPT)}"
               if any(d.action == KEPT for d in decisions.values()) else ""),
            bundle,
        )
        _collect_garbage(root, machine_id)
        log.info(f"{machine_id}: {result.reason}")
        if tracking_uri:  # under the lock: the registry follows the switches in their order
            _promote(tracking_uri, directory, result, trained, evaluations, data, features, data_version, trust)
    return _finish(root, machine_id, run_id, result)


def _trusted_previous(machine_id: str, previous_dir: Path | None, trust: Trust) -> dict[str, Any] | None:
    """The current release's description, or None when there is none or it fails its signature (damaged or
    edited): then nothing is carried from it (a Pi would refuse it too) and this release replaces it whole; it
    stays on disk until garbage collection. It blocked every later release of the machine."""
    from pdm_pipeline.edge.integrity import IntegrityError

    if previous_dir is None:
        return None
    try:
        return read_release(previous_dir, trust)
    except (IntegrityError, OSError, ValueError) as exc:
        log.error(f"{machine_id}: the current release cannot be trusted, nothing is carried from it: {exc}")
        return None


def _promote(tracking_uri: str, directory: Path, result: ReleaseResult, trained: Mapping[str, TrainedModel],
             evaluations: Mapping[str, Evaluation], data: Any, features: Any, data_version: str | None,
             trust: Trust) -> None:
    """Register the new models and point MLflow's `deployed` at this release. The release is live already: a
    registry that fails (disk full, server down) is a warning, not a failed run, and the deploy marker stays for
    the recovery sweep to set the aliases."""
    from pdm_pipeline.core.champion import promote_champions

    try:
        result.champion = promote_champions(tracking_uri, result, trained, evaluations, data, features,
                                            data_version or "", trust)
    except Exception as exc:
        log.error(f"{result.machine_id}: release {result.release_id} is live, but the MLflow registry did not "
                  f"follow: {type(exc).__name__}: {exc}", exc_info=True)
        result.release_gates.append(GateOutcome(
            "registry_follows_release", False, WARN,
            f"release {result.release_id} is live, the MLflow registry did not follow ({type(exc).__name__}: "
            f"{str(exc)[:200]}): the recovery sweep sets 'deployed' once it can"))
        return
    (directory / DEPLOY_PENDING).unlink(missing_ok=True)


# Written beside `current` before a switch, removed once the MLflow registry's `deployed` aliases point at the
# new release: a process killed in between leaves it, and the recovery sweep sets the aliases from it.
DEPLOY_PENDING = ".deploy-pending.json"


def _write_deploy_pending(directory: Path, release_id: str, tracking_uri: str, trained: Mapping[str, TrainedModel],
                          decisions: Mapping[str, ModelDecision]) -> None:
    import socket

    runs = {t: trained[t].summary.get("mlflow_run_id") for t, d in decisions.items()
            if d.action == RELEASED and t in trained and trained[t].summary.get("mlflow_run_id")}
    pending = {"release_id": release_id, "tracking_uri": tracking_uri, "mlflow_runs": runs,
               "host": socket.gethostname(), "pid": os.getpid()}
    tmp = directory / f"{DEPLOY_PENDING}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(pending))
    os.replace(tmp, directory / DEPLOY_PENDING)


def read_deploy_pending(root: Path, machine_id: str) -> dict[str, Any] | None:
    try:
        return json.loads((paths.releases_dir(root, machine_id) / DEPLOY_PENDING).read_text())
    except (OSError, ValueError):
        return None


def _finish(root: Path, machine_id: str, run_id: str, result: ReleaseResult) -> ReleaseResult:
    shutil.rmtree(paths.staging_dir(root, machine_id, run_id), ignore_errors=True)
    return result


def _metrics_sha(model_dir: Path) -> str | None:
    from pdm_pipeline.edge.integrity import file_sha256

    file = model_dir / METRICS_FILE
    return file_sha256(file) if file.is_file() else None


def _assemble(
    building: Path,
    decisions: dict[str, ModelDecision],
    trained: Mapping[str, TrainedModel],
    evaluations: Mapping[str, Evaluation],
    previous_dir: Path | None,
    previous: dict[str, Any] | None,
    signing_key: bytes,
    trust: Trust,
    data: Any = None,
) -> dict[str, float]:
    """Put every model of the release into `building`: new ones with their metrics card (re-signed), kept
    ones hard-linked from the previous release once they pass `_carry_problem`. Returns the size of each (MB)."""
    sizes: dict[str, float] = {}
    for t, decision in decisions.items():
        dest = building / t
        if decision.action == RELEASED:
            model = trained[t]
            link_tree(model.path, dest)
            metrics = evaluations[t].card()
            (dest / METRICS_FILE).unlink(missing_ok=True)
            (dest / METRICS_FILE).write_text(json.dumps(metrics, indent=1, default=float))
            write_manifest(dest, signing_key, {"model_type": t, "release_gates": [g.as_dict() for g in decision.gates]})
        elif decision.action == KEPT and previous_dir is not None and (previous_dir / t).is_dir():
            problem = _carry_problem(previous_dir / t, t, trust, data)
            if problem:
                log.error(f"{t}: the previous model is not carried into the new release: {problem}")
                decision.action, decision.source_release = NONE, None
                decision.reason = f"{decision.reason}; the previous model is not carried forward: {problem}"
                continue
            link_tree(previous_dir / t, dest)
        elif decision.action == KEPT:
            decision.action, decision.reason = NONE, f"{decision.reason}; no previous model to keep"
            continue
        else:
            continue
        sizes[t] = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 1e6
        decision.size_mb = sizes[t]
    return sizes


def _carry_problem(model_dir: Path, model_type: str, trust: Trust, data: Any) -> str | None:
    """Why a previous release's model must not be carried into a new one (None when it may be): its files no longer
    match its signed manifest (the new release would re-sign a changed model), or it reads a sensor the machine's
    data no longer has (its predictions would fail)."""
    from pdm_pipeline.edge.integrity import IntegrityError

    try:
        verify_dir(model_dir, trust, f"previous {model_type} model")
    except IntegrityError as exc:
        return f"it fails its integrity check: {exc}"
    if data is None:
        return None
    # a family that predicts from features reads its feature spec's sensors; the forecasts read their card's
    uses_features = families.get(model_type).uses_features
    file = model_dir / (PREPROCESSING_FILE if uses_features else CARD_FILE)
    content = json.loads(file.read_text()) if file.is_file() else {}
    spec = (content.get("feature_spec") or {}) if uses_features else content
    needed = set(spec.get("sensors") or [])
    missing = sorted(needed - set(data.sensors))
    return f"it reads sensor(s) {missing} that the data no longer has" if missing else None


def _smoke_test(bundle: Path, data: Any, trust: Trust) -> None:
    """Load the bundle through the edge predictor (verifying it) and predict the last val row with its history."""
    from pdm_pipeline.edge.predictor import EdgePredictor

    predictor = EdgePredictor.load(bundle, trust=trust)
    if predictor.sensors:
        val = data.splits["val"]
        predictor.predict(val.iloc[-max(predictor.min_history_rows, 1):], latest_only=True)


def pooled_models(root: Path, data: Any) -> dict[str, Any]:
    """The fleet's pooled models this machine may use (see core/fleet.py); empty when there are none."""
    from pdm_pipeline.core import fleet

    return fleet.pooled_for(root, data)
