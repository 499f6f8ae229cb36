"""Pooled fleet models: one classifier / RUL regressor trained on every machine of a fleet (same machine type).

Filled in by the fleet asset (issue: pooled fleet models); until a fleet has pooled models, machines train on
their own data only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pooled_for(root: Path, data: Any) -> dict[str, Any]:
    """Model type -> pooled model of the machine's fleet that this machine may use (none yet)."""
    return {}
