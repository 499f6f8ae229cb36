"""Matplotlib figures turned into markdown images, so the Dagster UI (or any markdown viewer) shows them."""

from __future__ import annotations

import base64
import io
from typing import Any


def new_figure(width: float = 7.0, height: float = 4.0, ncols: int = 1) -> tuple[Any, Any]:
    """A figure and axes on the non-interactive Agg backend (safe in workers without a display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(ncols=ncols, figsize=(width, height), dpi=90)
    return fig, ax


def figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def png_markdown(png: bytes, title: str) -> str:
    """Markdown with the PNG inlined as a data URI (rendered by Dagster's markdown metadata)."""
    b64 = base64.b64encode(png).decode("ascii")
    return f"**{title}**\n\n![{title}](data:image/png;base64,{b64})"


def figure_markdown(fig: Any, title: str) -> str:
    return png_markdown(figure_png(fig), title)
