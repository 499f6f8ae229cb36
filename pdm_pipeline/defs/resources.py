"""Resources: where the data lives, how to train, and the limits of every gate.

`TrainingResource` and `GatesResource` are GENERATED from the core's `TrainingConfig` and `GateSettings` (field
names, types, defaults and help texts), so a setting is defined once and the launchpad, the CLI's `--set` and
the core can never disagree. They are set once per run in the launchpad (under `resources`).
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import dagster as dg
from pydantic import Field

from pdm_pipeline.core import paths
from pdm_pipeline.core.config import GateSettings, TrainingConfig, build_gate_settings, build_training_config
from pdm_pipeline.defs.reexecution import check_reexecution


class DataRootResource(dg.ConfigurableResource):
    """The data root: `data_dir` if set, else $PDM_DATA_DIR, else ./data."""

    data_dir: str | None = Field(default=None, description="Data root; default $PDM_DATA_DIR or ./data")

    @property
    def root(self) -> Path:
        return paths.data_root(self.data_dir)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Tag the run with the host and pid of the process executing it, so a run whose worker is killed
        (kill -9, OOM) is found dead and failed by the recovery sweep: Dagster's run monitoring cannot check the
        health of a worker started by the default run launcher. Only for the in-process executor, where this
        process is the run's worker (a step process of another executor ends while its run goes on)."""
        import os
        import socket

        run, instance = context.dagster_run, context.instance
        if run is not None:
            check_unchecked_run(run, instance)
            check_reexecution(instance, run)
        if run is None or instance is None or os.environ.get("PDM_EXECUTOR", "in_process") != "in_process":
            return
        mine = {"pdm/host": socket.gethostname(), "pdm/pid": str(os.getpid())}
        if any((run.tags or {}).get(k) != v for k, v in mine.items()):  # a retry carries its dead parent's
            instance.add_run_tags(run.run_id, mine)


_CHECKED_HERE: set[str] = set()


def check_unchecked_run(run: Any, instance: Any = None) -> None:
    """A run no entry point checked (`dagster job execute`, `dagster asset materialize`, a direct call: no
    `pdm/checked` tag) meets the run queue's checks here, before any step's work: the same messages, as a failure."""
    from pdm_pipeline.defs.coordinator import CHECKED_TAG, refusal

    if (run.tags or {}).get(CHECKED_TAG) or run.run_id in _CHECKED_HERE:
        return
    reason = refusal(run, instance=instance)
    if reason is None:
        _CHECKED_HERE.add(run.run_id)  # (the data root and the IO manager both start: read the data once)
    else:
        raise dg.Failure(description=f"not run: {reason} (checked when the run started: it did not come through the "
                                     "run queue, e.g. `dagster job execute` or `dagster asset materialize`)")


def _config_type(kind: Any) -> Any:
    """A dataclass field type as a Dagster config type (tuples become lists)."""
    origin = get_origin(kind)
    if origin is tuple:
        return list[get_args(kind)[0]]
    args = get_args(kind)
    if type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return _config_type(inner) | None
    return kind


def _resource_class(name: str, settings: type, doc: str, build: Any) -> type[dg.ConfigurableResource]:
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {"__doc__": doc, "__module__": __name__}
    hints = get_type_hints(settings)
    for f in fields(settings):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        if isinstance(default, tuple):
            default = list(default)
        choices = f.metadata.get("choices")
        # Fixed choices become an enum in the launchpad: a wrong word is refused when the run is launched.
        annotations[f.name] = Literal[tuple(choices)] if choices else _config_type(hints[f.name])
        namespace[f.name] = Field(default=default, description=f.metadata.get("help", ""))
    namespace["__annotations__"] = annotations

    def settings_value(self: Any) -> Any:
        """The validated core settings (raises SettingsError naming every bad field)."""
        return build({f.name: getattr(self, f.name) for f in fields(settings)})

    namespace["settings"] = settings_value
    return type(name, (dg.ConfigurableResource,), namespace)


_TrainingBase = _resource_class(
    "TrainingResource", TrainingConfig,
    "Training settings for every model of the run (generated from pdm_pipeline.core.config.TrainingConfig).",
    build_training_config,
)
_GatesBase = _resource_class(
    "GatesResource", GateSettings,
    "Limits of the data-quality checks, the Pi size gates and the quality gates (from core.config.GateSettings).",
    build_gate_settings,
)


class TrainingResource(_TrainingBase):  # type: ignore[misc, valid-type]
    """Training settings for every model of the run (fields generated from core.config.TrainingConfig)."""

    def settings(self) -> TrainingConfig:
        return build_training_config({f.name: getattr(self, f.name) for f in fields(TrainingConfig)})


class GatesResource(_GatesBase):  # type: ignore[misc, valid-type]
    """Limits of every gate (fields generated from core.config.GateSettings)."""

    def settings(self) -> GateSettings:
        return build_gate_settings({f.name: getattr(self, f.name) for f in fields(GateSettings)})


def training_config(resource: Any) -> TrainingConfig:
    return resource.settings()


def gate_settings(resource: Any) -> GateSettings:
    return resource.settings()
