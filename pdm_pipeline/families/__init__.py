"""The model-family registry: every model type the pipeline trains, evaluates, gates, releases and bundles.

    from pdm_pipeline import families
    for family in families.all_families(): ...

Adding a model type = a package beside these (see `base.py` for what it holds) + one line in `_BUILT_IN`.
Tests may `register()` a family for the duration of a test (`registered(...)` context manager).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pdm_pipeline.families import anomaly, classifier, forecast, regressor
from pdm_pipeline.families.base import ModelFamily, ModelSkipped, QualityGate

# The built-in families, in graph order.
_BUILT_IN: tuple[ModelFamily, ...] = (classifier.FAMILY, regressor.FAMILY, anomaly.FAMILY, forecast.FAMILY)

_REGISTRY: dict[str, ModelFamily] = {}


def register(family: ModelFamily) -> ModelFamily:
    """Add a family; raises ValueError when its model type or asset name is already taken."""
    for other in _REGISTRY.values():
        if other.model_type == family.model_type or other.asset_name == family.asset_name:
            raise ValueError(f"a family named {family.model_type!r} / {family.asset_name!r} is already registered")
    _REGISTRY[family.model_type] = family
    return family


def unregister(model_type: str) -> None:
    _REGISTRY.pop(model_type, None)


@contextmanager
def registered(family: ModelFamily) -> Iterator[ModelFamily]:
    """Register `family` for the duration of a with-block (tests)."""
    register(family)
    try:
        yield family
    finally:
        unregister(family.model_type)


def all_families() -> list[ModelFamily]:
    return list(_REGISTRY.values())


def model_types() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get(model_type: str) -> ModelFamily:
    """The family of a model type; raises ValueError naming the known ones."""
    try:
        return _REGISTRY[model_type]
    except KeyError:
        raise ValueError(f"unknown model type {model_type!r}; expected one of {', '.join(_REGISTRY)}") from None


def by_asset(asset_name: str) -> ModelFamily:
    for family in _REGISTRY.values():
        if family.asset_name == asset_name:
            return family
    raise ValueError(f"no model family has the asset {asset_name!r}")


def quality_gate_names() -> tuple[str, ...]:
    return tuple(gate.name for family in _REGISTRY.values() for gate in family.quality_gates)


for _family in _BUILT_IN:
    register(_family)

__all__ = [
    "ModelFamily",
    "ModelSkipped",
    "QualityGate",
    "all_families",
    "by_asset",
    "get",
    "model_types",
    "quality_gate_names",
    "register",
    "registered",
    "unregister",
]
