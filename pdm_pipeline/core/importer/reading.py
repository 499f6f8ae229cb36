"""Reading sources: CSV / whitespace-separated text (with or without header) and parquet, one file or a directory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pdm_pipeline.core.importer.options import WHITESPACE, ImportOptions, ImportOptionsError

# What a directory is read from (sorted by name, hidden files skipped).
SOURCE_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".parquet")
# A single file may also be plain text (e.g. NASA C-MAPSS train_FD001.txt). Directories skip these: they usually
# also hold a README.txt.
FILE_SUFFIXES: tuple[str, ...] = (*SOURCE_SUFFIXES, ".txt", ".dat")


@dataclass
class Table:
    """The rows to import with, for messages, the file and 0-based row in that file of every row."""

    frame: pd.DataFrame
    label: str
    file_names: list[str]
    file_index: np.ndarray
    file_rows: np.ndarray
    # Unit ids taken from the file stems of a directory read without unit_column.
    file_units: pd.Series | None = None
    # Per file: the text line of its first row (2 below a header, else 1); None for parquet and frames, whose rows
    # are named by their 0-based position.
    first_lines: list[int | None] | None = None

    def where(self, position: int) -> str:
        """'<file> line <n>' (text, as an editor numbers it) or '<file> row <n>' (0-based) for a frame's row."""
        index, row = int(self.file_index[position]), int(self.file_rows[position])
        first = self.first_lines[index] if self.first_lines else None
        if first is None:
            return f"{self.file_names[index]} row {row}"
        return f"{self.file_names[index]} line {first + row}"


def read_file(
    path: Path,
    separator: str = ",",
    *,
    header: bool = True,
    columns: Sequence[str] | None = None,
    decimal: str = ".",
) -> pd.DataFrame:
    """One text file (UTF-8, BOM dropped) or parquet file, with column names stripped of blanks.

    `separator` "whitespace" splits on any run of spaces/tabs (blanks at line ends make no empty column). With
    `header=False` the file has no header row and `columns` names its columns: their count must match the file's.
    """
    path = Path(path)
    is_parquet = path.suffix.lower() == ".parquet"
    if is_parquet and (not header or columns is not None):
        raise ImportOptionsError(
            f"{path}: header=False and columns apply to text files; a parquet file names its columns itself"
        )
    try:
        if is_parquet:
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(
                path,
                sep=r"\s+" if separator == WHITESPACE else separator,
                encoding="utf-8-sig",
                header=0 if header else None,
                decimal=decimal,
            )
    except pd.errors.EmptyDataError:
        what = "no header, no rows" if header else "no rows"
        raise ImportOptionsError(f"{path}: the file is empty ({what})") from None
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise ImportOptionsError(f"{path}: not UTF-8 text (byte {byte:#04x} at offset {exc.start})") from None
    except (pd.errors.ParserError, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ImportOptionsError(f"{path}: cannot read the file: {detail}") from None
    if not header:
        assert columns is not None  # ImportOptions.validate() guarantees it
        if frame.shape[1] != len(columns):
            raise ImportOptionsError(
                f"{path}: expected {len(columns)} columns (one per name in columns) but found {frame.shape[1]} "
                f"in the file (separator {separator!r}, no header row); give one name per column, in order"
            )
        frame.columns = list(columns)
    frame.columns = [str(c).strip() for c in frame.columns]
    duplicated = sorted(set(frame.columns[frame.columns.duplicated()]))
    if header and not is_parquet:  # pandas renames a repeated header name ("a", "a.1"): read the names as written
        names = pd.read_csv(path, sep=r"\s+" if separator == WHITESPACE else separator, encoding="utf-8-sig",
                            header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
        written = [str(n).strip() for n in names]
        duplicated = sorted({n for n in written if n and written.count(n) > 1} | set(duplicated))
    if duplicated:
        raise ImportOptionsError(f"{path}: column name(s) {duplicated} appear more than once")
    return frame


def read_with(path: Path, options: ImportOptions) -> pd.DataFrame:
    """`read_file` with the reading options of an import."""
    return read_file(
        path, options.separator, header=options.header, columns=options.columns, decimal=options.decimal
    )


def source_files(source: Path) -> list[Path]:
    """The file itself, or the data files of a directory (sorted by name); raise when there is nothing to read."""
    if not source.exists():
        raise ImportOptionsError(f"source {source} does not exist")
    if source.is_file():
        if source.suffix.lower() not in FILE_SUFFIXES:
            raise ImportOptionsError(
                f"{source}: unsupported file type {source.suffix!r}; expected {', '.join(FILE_SUFFIXES)}"
            )
        return [source]
    files = sorted(
        p for p in source.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SOURCE_SUFFIXES
    )
    if not files:
        raise ImportOptionsError(f"source directory {source} holds no {', '.join(SOURCE_SUFFIXES)} file")
    stems = [p.stem for p in files]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:
        raise ImportOptionsError(f"source directory {source}: several files share the stem(s) {twins}")
    return files


def read_source(source: Path, options: ImportOptions) -> Table:
    """Read a file or a directory (files concatenated; the file stem is the unit id without unit_column)."""
    files = source_files(source)
    frames = [read_with(path, options) for path in files]
    columns = list(frames[0].columns)
    for path, frame in zip(files[1:], frames[1:]):
        missing = [c for c in columns if c not in frame.columns]
        extra = [c for c in frame.columns if c not in columns]
        if missing or extra:
            raise ImportOptionsError(
                f"{path}: columns differ from {files[0].name} (missing {missing}, extra {extra}); "
                "all files of a directory must have the same columns"
            )
    file_index = np.repeat(np.arange(len(frames)), [len(f) for f in frames])
    file_units = None
    if source.is_dir() and options.unit_column is None:
        file_units = pd.Series(np.array([p.stem for p in files], dtype=object)[file_index], dtype=object)
    return Table(
        frame=pd.concat([f[columns] for f in frames], ignore_index=True),
        label=str(source),
        file_names=[str(p) for p in files],
        file_index=file_index,
        file_rows=np.concatenate([np.arange(len(f)) for f in frames]),
        file_units=file_units,
        first_lines=[None if p.suffix.lower() == ".parquet" else (2 if options.header else 1) for p in files],
    )


def frame_table(frame: pd.DataFrame, source: str) -> Table:
    """A DataFrame already in memory as a table; `source` names it in messages."""
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c).strip() for c in frame.columns]
    return Table(frame, source, [source], np.zeros(len(frame), dtype=np.int64), np.arange(len(frame)))
