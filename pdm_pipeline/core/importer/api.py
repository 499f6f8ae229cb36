"""The two entry points: import a file or directory, or a DataFrame already in memory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from pdm_pipeline.core.importer.build import build_machines
from pdm_pipeline.core.importer.options import ImportOptions
from pdm_pipeline.core.importer.reading import frame_table, read_source
from pdm_pipeline.core.importer.writing import write_machines


def import_data(source: Path, root: Path, options: ImportOptions, *, overwrite: bool = False) -> list[str]:
    """Import a CSV/text/parquet file or a directory of them into the contract under `root`; return the machine ids.

    Raises ImportOptionsError naming the file, column or option for any bad input, before anything is
    written. An existing machine is replaced only with ``overwrite=True``.
    """
    source = Path(source)
    options.validate()
    table = read_source(source, options)
    machines = build_machines(table, options, {"file": str(source)})
    return write_machines(Path(root), machines, overwrite)


def import_frame(
    frame: pd.DataFrame,
    root: Path,
    options: ImportOptions,
    *,
    source: str,
    source_notes: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Like `import_data` for a DataFrame already in memory; `source` names it in messages and metadata.

    `source_notes` are added to the metadata's "source" entry (e.g. where extra columns came from).
    """
    options.validate()
    table = frame_table(frame, source)
    machines = build_machines(table, options, {"file": source, **(source_notes or {})})
    return write_machines(Path(root), machines, overwrite)
