"""Shared test helpers: family views built from hand-made frames, pictures inlined in markdown."""

from __future__ import annotations

import base64
import re
from typing import Any

import pandas as pd

from pdm_pipeline.core.contract import MachineMetadata
from pdm_pipeline.core.schema import LABEL, RUL, TIMESTAMP, UNIT_ID
from pdm_pipeline.families.base import TestView, TrainView

INLINE_PNG = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def inline_pngs(markdown: str) -> list[bytes]:
    return [base64.b64decode(b64) for b64 in INLINE_PNG.findall(markdown)]


def assert_picture(markdown: str) -> None:
    images = inline_pngs(markdown)
    assert len(images) == 1, markdown[:200]
    assert images[0].startswith(b"\x89PNG\r\n\x1a\n")


def metadata(sensors: list[str], *, time_unit: str = "hours", time_order: bool = True, has_rul: bool = True,
             critical: tuple[str, ...] = (), machine_id: str = "m1") -> MachineMetadata:
    columns: dict[str, Any] = {s: {"sdtype": "numerical"} for s in sensors}
    return MachineMetadata(
        machine_id=machine_id, columns=columns, sensors=tuple(sensors), has_rul=has_rul, has_unit=True,
        has_label=False, time_order=time_order, rul_parameters={}, critical_sensors=critical, time_unit=time_unit,
    )


def views(
    frames: dict[str, pd.DataFrame], feature_names: list[str], *, time_unit: str = "hours",
    raw: dict[str, pd.DataFrame] | None = None, label_skipped_reason: str | None = None, machine_id: str = "m1",
    critical: tuple[str, ...] = (),
) -> tuple[TrainView, TestView]:
    """A TrainView (train, val) and a TestView (test) of frames that hold the features and pass-through columns."""
    raw = raw or frames
    sensors = [c for c in raw["train"].columns if c not in (TIMESTAMP, UNIT_ID, RUL, LABEL, "leak", "anomaly_window")]
    meta = metadata(sensors, time_unit=time_unit, has_rul=RUL in frames["train"].columns, machine_id=machine_id,
                    critical=critical)
    train = TrainView(
        machine_id=machine_id, metadata=meta, profile=None,
        raw={s: raw[s] for s in ("train", "val")}, frames={s: frames[s] for s in ("train", "val")},
        feature_names=list(feature_names), preprocessing={}, label_skipped_reason=label_skipped_reason,
    )
    test = TestView(
        machine_id=machine_id, metadata=meta,
        history=pd.concat([raw["train"], raw["val"]], ignore_index=True), raw_test=raw["test"], test=frames["test"],
    )
    return train, test
