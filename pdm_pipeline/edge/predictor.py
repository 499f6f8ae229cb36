"""Prediction on the edge from a signed bundle (core/bundle.py).

    predictor = EdgePredictor.load("bundle/", public_key="public_key.pem")   # verifies signature + every hash
    out = predictor.predict(read_input("recent.parquet"))                    # one row per input row
    fc = predictor.forecast(recent_rows)                                     # the next horizon after the last row

Input: raw sensor rows (the machine's sensor columns; `timestamp` and `unit_id` optional, rows in time order
within each unit), with enough history before the rows that matter: features are computed by
`core.features.compute_features`, the same code as training, over the rows given. Rows are checked first:

- a row with fewer than `min_history_rows` rows of its unit before it (itself included), or that soon after a
  gap in the timestamps longer than a window (the window restarts there), is still predicted but marked
  `warmup` (some window was not full);
- a row whose sensors are all missing, or whose unit's window holds no reading at all of some sensor, is NOT
  predicted: its outputs are empty and `status` says why ("no sensor readings", "stale: sensor X missing for
  the whole window"), because a model fed only fill values answers "healthy" about a machine it cannot see;
- a row with a reading far outside what the models learnt from (beyond the sensor's training [min, max] by more
  than RANGE_MARGIN of its width) IS predicted, but its `status` names the sensor, the reading and the training
  range ("out of training range: ..."): the models answer there by extrapolation, which nobody has checked.

A machine imported from its own file (`pdm-pipeline import`) may be given rows in that file's format: when the
bundle records the import's column names (bundle.json `source_columns`) and the input uses them instead of the
contract names, its columns are renamed (all of them, or the input is refused) and the source time column is read
as the importer read it.

Output columns, per row: failure_probability, failure_flag, rul_<time unit>, anomaly_score, anomaly_flag (those
of the models in the bundle), warmup, status; plus `timestamp` and `unit_id` when the input has them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core.features import FeatureSpec, compute_features, in_warmup, min_history_rows
from pdm_pipeline.core.schema import TIMESTAMP, UNIT_ID
from pdm_pipeline.core.timeaxis import median_step, short, unit_codes
from pdm_pipeline.edge.integrity import Trust, verify_dir
from pdm_pipeline.errors import PdmError

BUNDLE_FILE = "bundle.json"
PREPROCESSING_FILE = "preprocessing.json"
CARD_FILE = "model_card.json"
WARMUP = "warmup"
STATUS = "status"
OK = "ok"
# Peak bytes of a prediction per feature value (the features, their filled copy, each model's input slice:
# measured 39 on 200,000 rows x 176 features).
PREDICT_BYTES_PER_VALUE = 40
# Input rows sampled more than this factor finer or coarser than the training rows are refused (see _check_step).
STEP_TOLERANCE = 2.0
# Rows per unit that `predict(latest_only=True)` computes beyond the windows' history at first (x4 while the
# anomaly alarm cannot tell its state from them).
LATEST_ROWS = 256
# A reading beyond its sensor's training [min, max] by more than this share of the range's width is out of range.
RANGE_MARGIN = 0.25
OUT_OF_RANGE = "out of training range"
PUBLIC_KEY_ENV = "PDM_PUBLIC_KEY"
CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


class PredictionInputError(PdmError, ValueError):
    """Input rows the bundle cannot predict on; the message names the machine, the file or the columns."""


def read_input(path: str | Path, *, parse_times: bool = True, reading: dict[str, Any] | None = None) -> pd.DataFrame:
    """Raw sensor rows from a parquet or CSV file, with a datetime-like `timestamp` parsed (unless `parse_times`
    is False: the predictor then reads it, as its machine's import did). `reading`: a text file's separator,
    decimal mark and header as an import recorded them (bundle.json `source_columns.reading`); default CSV."""
    path = Path(path)
    if not path.is_file():
        raise PredictionInputError(f"input file {path} does not exist")
    name = path.name.lower()
    if not name.endswith(PARQUET_SUFFIXES + CSV_SUFFIXES):
        raise PredictionInputError(
            f"input file {path}: unknown format; expected {', '.join(PARQUET_SUFFIXES + CSV_SUFFIXES)}"
        )
    try:
        frame = pd.read_parquet(path) if name.endswith(PARQUET_SUFFIXES) else pd.read_csv(path, **_csv_options(reading))
    except pd.errors.EmptyDataError:
        raise PredictionInputError(f"input file {path} is empty (no header, no rows)") from None
    except UnicodeDecodeError as exc:
        raise PredictionInputError(f"input file {path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                                   f"{exc.start})") from None
    except (pd.errors.ParserError, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise PredictionInputError(f"input file {path}: cannot read it: {detail}") from None
    if reading is None and len(frame.columns) == 1 and any(sep in str(frame.columns[0]) for sep in (";", "\t", "|")):
        raise PredictionInputError(f"input file {path}: one column {str(frame.columns[0])[:80]!r}: the rows must be "
                                   "comma-separated CSV with a header (convert ';', tab or '|' separated files)")
    if parse_times and TIMESTAMP in frame.columns and not pd.api.types.is_numeric_dtype(frame[TIMESTAMP]):
        frame[TIMESTAMP] = _parse_times(frame[TIMESTAMP], f"input file {path}")
    return frame.reset_index(drop=True)  # rows by position (a parquet file may carry a repeating index)


def status_note(result: pd.DataFrame) -> str | None:
    """One line for the operator when rows are not plainly 'ok': how many, by kind (the reason before ':')."""
    if STATUS not in result.columns:
        return None
    kinds = result[STATUS].astype(str).str.split(":").str[0]
    counts = kinds[kinds != OK].value_counts()
    if counts.empty:
        return None
    listed = ", ".join(f"{kind} {n}" for kind, n in counts.items())
    return f"{int(counts.sum())} of {len(result)} rows not ok ({listed}): see the status column"


def _csv_options(reading: dict[str, Any] | None) -> dict[str, Any]:
    """pandas.read_csv arguments for a text file read as an import read it (None: plain CSV with a header)."""
    if not reading:
        return {}
    separator = reading.get("separator", ",")
    options: dict[str, Any] = {"sep": r"\s+" if separator == "whitespace" else separator,
                               "decimal": reading.get("decimal", ".")}
    if reading.get("header") is False:
        options.update(header=None, names=list(reading.get("columns") or []))
    return options


def _parse_times(values: pd.Series, where: str) -> pd.Series:
    """Date/time strings in UTC without the zone (offsets, even several across a daylight-saving switch, as the
    importer keeps them)."""
    try:
        return pd.to_datetime(values, utc=True).dt.tz_localize(None)
    except (ValueError, TypeError) as exc:
        raise PredictionInputError(f"{where}: column {TIMESTAMP!r} is not a date/time: {exc}") from exc


def default_trust(public_key: str | os.PathLike[str] | None, allow_unsigned: bool) -> Trust:
    """The public key given, else $PDM_PUBLIC_KEY; unsigned bundles only when explicitly allowed."""
    key = public_key or os.environ.get(PUBLIC_KEY_ENV)
    if key:
        return Trust.from_file(key, allow_unsigned=allow_unsigned)
    if allow_unsigned:
        return Trust(None, allow_unsigned=True)
    raise PredictionInputError(
        "no public key to check the bundle's signature: pass --public-key FILE (the training host's "
        f"<data root>/keys/public_key.pem) or set {PUBLIC_KEY_ENV}; --allow-unsigned skips the check"
    )


@dataclass
class _FeatureGroup:
    """One preprocessing (feature spec + fill values) and the runtimes that use it."""

    spec: FeatureSpec
    fill_values: dict[str, float]
    ranges: dict[str, list[float]]
    runtimes: list[Any]
    columns: list[np.ndarray]


class EdgePredictor:
    """The models of one bundle, loaded for prediction. Build it with `EdgePredictor.load(bundle_dir)`."""

    def __init__(self, bundle_dir: Path, description: dict[str, Any], groups: list[_FeatureGroup], forecaster: Any):
        self.bundle_dir = Path(bundle_dir)
        self.description = description
        self.machine_id: str = description["machine_id"]
        self.release_id: str = description.get("release_id", "")
        self._groups = groups
        self._forecaster = forecaster
        self.sensors: list[str] = list(dict.fromkeys(s for g in groups for s in g.spec.sensors))
        self.min_history_rows: int = max((min_history_rows(g.spec) for g in groups), default=1)
        # The widest training range of each sensor over the models (a reading outside it is new to all of them).
        self.sensor_ranges: dict[str, tuple[float, float]] = {}
        for group in groups:
            for sensor, (lo, hi) in group.ranges.items():
                old = self.sensor_ranges.get(sensor, (lo, hi))
                self.sensor_ranges[sensor] = (min(old[0], lo), max(old[1], hi))

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        *,
        public_key: str | os.PathLike[str] | None = None,
        trust: Trust | None = None,
        allow_unsigned: bool = False,
    ) -> EdgePredictor:
        """Verify the bundle (signature, every hash, no stray file; IntegrityError otherwise), then load it."""
        from pdm_pipeline import families

        bundle = Path(bundle_dir)
        trust = trust or default_trust(public_key, allow_unsigned)
        verify_dir(bundle, trust, "bundle")
        description = json.loads((bundle / BUNDLE_FILE).read_text())
        groups: dict[str, _FeatureGroup] = {}
        forecaster = None
        for model_type in description["models"]:
            try:
                family = families.get(model_type)
            except ValueError:
                raise PredictionInputError(
                    f"bundle {bundle} holds a {model_type!r} model, a family this installation does not know"
                ) from None
            model_dir = bundle / model_type
            card = json.loads((model_dir / CARD_FILE).read_text())
            runtime = family.load_runtime(model_dir, card)
            if not family.uses_features:
                forecaster = runtime
                continue
            prep = json.loads((model_dir / PREPROCESSING_FILE).read_text())
            key = json.dumps([prep["feature_spec"], prep["fill_values"]], sort_keys=True)
            if key not in groups:
                groups[key] = _FeatureGroup(FeatureSpec.from_dict(prep["feature_spec"]), prep["fill_values"], {}, [], [])
            group = groups[key]
            for sensor, (lo, hi) in (prep.get("sensor_ranges") or {}).items():  # models of one spec: the widest
                known = group.ranges.get(sensor, [lo, hi])
                group.ranges[sensor] = [min(known[0], lo), max(known[1], hi)]
            position = {name: i for i, name in enumerate(group.spec.feature_names)}
            missing = [c for c in runtime.inputs if c not in position]
            if missing:
                raise PredictionInputError(f"bundle {bundle}, {model_type}: inputs {missing[:5]} are not features")
            group.runtimes.append(runtime)
            group.columns.append(np.array([position[c] for c in runtime.inputs], dtype=np.intp))
        return cls(bundle, description, list(groups.values()), forecaster)

    @property
    def model_types(self) -> list[str]:
        return list(self.description["models"])

    @property
    def time_unit(self) -> str | None:
        return self.description.get("time_unit")

    @property
    def source_columns(self) -> dict[str, str]:
        """{contract column: the imported file's column} for a machine imported from its own file, else {}."""
        source = self.description.get("source_columns") or {}
        out = dict(source.get("sensors") or {})
        out.update({c: source[c] for c in (TIMESTAMP, UNIT_ID) if source.get(c)})
        return out

    def read_input(self, path: str | Path) -> pd.DataFrame:
        """`read_input` for this bundle: a file of an imported machine may be written as the machine writes it (its
        separator, decimal mark, header as the import read them) and its time column is read as the import did."""
        reading = (self.description.get("source_columns") or {}).get("reading")
        names = {*self.sensors, *self.source_columns.values()}

        def known(frame: pd.DataFrame) -> bool:
            return bool(names & {str(c).strip() for c in frame.columns})

        frame, error = None, None
        try:  # a plain CSV first (rows in the contract's names, or a source written as CSV)
            frame = read_input(path, parse_times=False)
            if not reading or known(frame):
                return frame
        except PredictionInputError as exc:
            if not reading:
                raise
            error = exc
        try:
            written = read_input(path, parse_times=False, reading=reading)
            if known(written):
                return written
        except PredictionInputError:
            pass
        if frame is None:
            assert error is not None
            raise error
        return frame

    def _named(self, column: str) -> str:
        source = self.source_columns.get(column)
        return f"{column!r} (imported from {source!r})" if source and source != column else repr(column)

    def to_contract(self, raw: pd.DataFrame, what: str = "input") -> pd.DataFrame:
        """`raw` with the imported file's column names (bundle.json `source_columns`) renamed to the contract's
        and the source time column read as the importer read it; unchanged when it uses the contract names.
        A mix of both forms is refused, naming the columns."""
        mapping = {c: s for c, s in self.source_columns.items() if c != s}
        if not mapping:
            return self._contract_times(raw, what)
        by_name = {str(c).strip(): c for c in raw.columns}  # the importer strips blanks around names
        contract = [c for c in mapping if c in raw.columns]
        source = [c for c, s in mapping.items() if s in by_name]
        both = [c for c in contract if c in source]
        if both:
            raise PredictionInputError(
                f"machine {self.machine_id}: {what} input has both the contract and the imported name of "
                + ", ".join(f"{c!r} / {mapping[c]!r}" for c in both) + ": give each column once, in one form"
            )
        if not source:
            return self._contract_times(raw, what)
        if contract:
            raise PredictionInputError(
                f"machine {self.machine_id}: {what} input mixes contract names {contract} with imported names "
                f"{[mapping[c] for c in source]}: give every column in one form (the bundle maps "
                + ", ".join(f"{s!r} -> {c!r}" for c, s in mapping.items()) + ")"
            )
        out = raw.rename(columns={by_name[mapping[c]]: c for c in source})
        if TIMESTAMP in source:
            out[TIMESTAMP] = self._source_times(pd.Series(out[TIMESTAMP]), mapping[TIMESTAMP], what)
        return self._contract_times(out, what)

    def in_input_form(self, result: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
        """`predict`'s result with, for an imported machine's rows written in its source's form, the time and unit
        columns as the input gave them (the CLIs write this): the source's own names and values, e.g. 'Time stamp'
        in its day-first text, where `predict` gives contract times (UTC; cycles as 2000-01-01 + cycles). Rows in
        the contract's names keep the contract's values (a parsed time stays a time)."""
        by_name = {str(c).strip(): c for c in raw.columns}
        out, names = result.copy(), {}
        positions = np.arange(len(raw))  # `raw` and the result share their row labels (made unique by read_input)
        where = pd.Series(positions, index=raw.index)
        for column in (TIMESTAMP, UNIT_ID):
            source = self.source_columns.get(column)
            given = by_name.get(source) if source else None
            if column in out.columns and given is not None and where.index.is_unique:
                out[column] = raw[given].to_numpy()[where.loc[out.index].to_numpy()]
                names[column] = str(given).strip()
        return out.rename(columns=names)

    def forecast_in_input_form(self, result: pd.DataFrame, raw: pd.DataFrame | None) -> pd.DataFrame:
        """`forecast`'s result with its future times written as the input writes its own (the CLIs write this):
        for an imported machine's rows under the source's names, the source's time column, in its format (a
        date in the import's format, Unix seconds, cycle numbers); otherwise unchanged."""
        source = self.source_columns.get(TIMESTAMP)
        names = {str(c).strip() for c in raw.columns} if raw is not None else set()
        column = "ds" if "ds" in result.columns else TIMESTAMP
        if column not in result.columns or not source or source not in names:
            return result
        spec = (self.description.get("source_columns") or {}).get("time") or {}
        written: Any = result[column]
        if pd.api.types.is_datetime64_any_dtype(written):
            times = pd.to_datetime(written)
            kind = spec.get("kind")
            if kind == "unix":
                written = (times - pd.Timestamp("1970-01-01")) / pd.Timedelta(1, unit=spec["unit"])
            elif kind == "cycles":
                written = (times - pd.Timestamp(spec["origin"])) / pd.Timedelta(seconds=float(spec["seconds"]))
            elif kind == "datetime" and spec.get("format"):
                written = times.dt.strftime(spec["format"])
        renames = {column: source}
        unit = self.source_columns.get(UNIT_ID)
        if UNIT_ID in result.columns and unit and unit in names:
            renames[UNIT_ID] = unit
        return result.assign(**{column: written}).rename(columns=renames)

    def _contract_times(self, raw: pd.DataFrame, what: str) -> pd.DataFrame:
        """Input in the contract's names with its `timestamp` not parsed yet: read as the import read the source
        file's own `timestamp` column (a day-first date, Unix seconds), else, or when that fails, as any date."""
        if TIMESTAMP not in raw.columns or pd.api.types.is_datetime64_any_dtype(raw[TIMESTAMP].dtype):
            return raw
        raw = raw.copy()
        if self.source_columns.get(TIMESTAMP) == TIMESTAMP:
            try:
                raw[TIMESTAMP] = self._source_times(pd.Series(raw[TIMESTAMP]), TIMESTAMP, what)
                return raw
            except PredictionInputError:
                if pd.api.types.is_numeric_dtype(raw[TIMESTAMP]):
                    raise
        if not pd.api.types.is_numeric_dtype(raw[TIMESTAMP]):
            raw[TIMESTAMP] = _parse_times(pd.Series(raw[TIMESTAMP]), f"machine {self.machine_id}: {what}")
        return raw

    def _source_times(self, values: pd.Series, column: str, what: str) -> pd.Series:
        """The source time column read as the importer read it (importer/timeline.py `timestamps`)."""
        spec = (self.description.get("source_columns") or {}).get("time") or {"kind": "datetime"}
        kind = spec.get("kind")
        try:
            if kind == "counter" or pd.api.types.is_datetime64_any_dtype(values.dtype):
                return values
            if kind in ("unix", "cycles"):
                numbers = np.asarray(values, dtype=float)
                times = (pd.to_datetime(numbers, unit=spec["unit"]) if kind == "unix" else
                         pd.Timestamp(spec["origin"]) + pd.to_timedelta(numbers * float(spec["seconds"]), unit="s"))
                return pd.Series(times, index=values.index).astype("datetime64[ns]")
            if pd.api.types.is_numeric_dtype(values):
                raise ValueError("it holds numbers, the import read dates")
            parsed = pd.to_datetime(values, format=spec.get("format"), utc=True).dt.tz_localize(None)
            return parsed.astype("datetime64[ns]")
        except (ValueError, TypeError, KeyError) as exc:
            raise PredictionInputError(
                f"machine {self.machine_id}: {what}: column {column!r} (imported as {TIMESTAMP!r}) cannot be read as "
                f"its import read it ({kind}{', format ' + repr(spec['format']) if spec.get('format') else ''}): {exc}"
            ) from None

    def _check_columns(self, raw: pd.DataFrame, needed: list[str], what: str) -> pd.DataFrame:
        """`raw` in the contract's names (`to_contract`), checked to hold every needed column, sensors numeric."""
        if not isinstance(raw, pd.DataFrame):
            raise TypeError(f"machine {self.machine_id}: {what} needs a pandas DataFrame, got {type(raw).__name__}")
        if raw.empty:
            raise PredictionInputError(f"machine {self.machine_id}: {what} got no rows")
        raw = self.to_contract(raw, what)
        missing = [c for c in needed if c not in raw.columns]
        if missing:
            raise PredictionInputError(
                f"machine {self.machine_id}: {what} input is missing column(s) {', '.join(map(self._named, missing))}; "
                f"the bundle expects {needed} (present: {list(raw.columns)})"
            )
        non_numeric = [c for c in needed if c != TIMESTAMP and not pd.api.types.is_numeric_dtype(raw[c])]
        if non_numeric:
            raise PredictionInputError(f"machine {self.machine_id}: {what}: sensor column(s) "
                                       f"{', '.join(map(self._named, non_numeric))} are not numeric")
        return raw

    def _check_memory(self, rows: int) -> None:
        """Refuse an input whose features would not fit in this host's available memory (a Pi has a few GB; an
        out-of-memory kill takes the device's other work with it)."""
        from pdm_pipeline.core.contract import available_memory_bytes

        values = rows * sum(len(g.spec.feature_names) for g in self._groups)
        need, available = values * PREDICT_BYTES_PER_VALUE, available_memory_bytes()
        if available and need > 0.8 * available:
            raise PredictionInputError(
                f"machine {self.machine_id}: {rows:,} input rows would need about {need / 1e9:.1f} GB of memory to "
                f"predict, this host has {available / 1e9:.1f} GB available: pass fewer rows (the latest prediction "
                f"of a unit needs its last {self.min_history_rows} rows, more only for the anomaly alarm's history)"
            )

    def _check_step(self, raw: pd.DataFrame) -> None:
        """Rows sampled at the training step (within a factor of STEP_TOLERANCE): the windows count rows, so 36
        rows of daily data given minute rows would be read as 36 days. Not checked without timestamps or with
        one row per unit (nothing to measure)."""
        spec = next((g.spec for g in self._groups if g.spec.step), None)
        if spec is None or TIMESTAMP not in raw.columns:
            return
        try:
            step = median_step([raw], spec.time_unit, "predict input")
        except ValueError as exc:
            if "cannot infer the sampling step" in str(exc):
                return
            raise PredictionInputError(f"machine {self.machine_id}: {exc}") from exc
        ratio = step / spec.step
        if not 1 / STEP_TOLERANCE <= ratio <= STEP_TOLERANCE:
            unit, longest = short(spec.time_unit), max(spec.windows, default=1)
            raise PredictionInputError(
                f"machine {self.machine_id}: predict input rows are {step:.4g} {unit} apart (median), the models were "
                f"trained on rows {spec.step:.4g} {unit} apart: their windows count rows ({longest} rows = "
                f"{longest * spec.step:.4g} {unit} at training), so resample the input to {spec.step:.4g} {unit}"
            )

    def _row_status(self, raw: pd.DataFrame) -> np.ndarray:
        """'ok', or why a row cannot be predicted (no readings at all, a sensor silent for its whole window) or is
        predicted by extrapolation (a reading far outside its training range)."""
        values = raw[self.sensors].to_numpy(dtype=float, na_value=np.nan)
        present = np.isfinite(values)
        status = np.full(len(raw), OK, dtype=object)
        status[~present.any(axis=1)] = "no sensor readings"
        window = self.min_history_rows
        codes = unit_codes(raw)
        counts = pd.DataFrame(present.astype(int)).groupby(codes).rolling(window, min_periods=1).sum()
        counts = counts.reset_index(level=0, drop=True).sort_index().to_numpy()
        stale = (counts == 0) & present.any(axis=1)[:, None]
        for i in np.flatnonzero(stale.any(axis=1)):
            if status[i] == OK:
                names = [self.sensors[j] for j in np.flatnonzero(stale[i])]
                status[i] = f"stale: no reading of {', '.join(names)} in the last {window} rows"
        outside = np.zeros(values.shape, dtype=bool)
        bounds = []
        for j, sensor in enumerate(self.sensors):
            lo, hi = self.sensor_ranges.get(sensor, (np.nan, np.nan))
            margin = RANGE_MARGIN * (hi - lo)
            bounds.append((lo, hi))
            if margin > 0:  # no range recorded (older bundles) or a constant sensor: nothing to compare with
                with np.errstate(invalid="ignore"):
                    outside[:, j] = (values[:, j] < lo - margin) | (values[:, j] > hi + margin)
        for i in np.flatnonzero(outside.any(axis=1)):
            if status[i] == OK:
                named = [f"{self.sensors[j]} {values[i, j]:.4g} (trained {bounds[j][0]:.4g} to {bounds[j][1]:.4g})"
                         for j in np.flatnonzero(outside[i])]
                status[i] = f"{OUT_OF_RANGE}: {', '.join(named)}"
        return status

    def predict(self, raw: pd.DataFrame, *, latest_only: bool = False) -> pd.DataFrame:
        """Predictions per input row (same index as `raw`); with `latest_only`, only each unit's last row.

        `raw` in the contract's column names or, for an imported machine, the source file's (`to_contract`).

        With `latest_only` only each unit's last rows are computed: the windows' history and LATEST_ROWS more, as
        many more as the anomaly alarm needs to know its state (a run of rows that sets it): the answer is the
        one the whole input gives (up to floating-point rounding, which depends on the batch), at a cost that
        does not grow with the input.

        Raises PredictionInputError naming missing or non-numeric sensor columns (and the expected ones), an
        empty input, rows out of time order or repeating a time.
        """
        if not self._groups:
            raise PredictionInputError(
                f"bundle {self.bundle_dir} of machine {self.machine_id} has no model that predicts per row "
                f"(it holds: {', '.join(self.model_types)})"
            )
        raw = self._check_columns(raw, self.sensors, "predict")
        self._check_step(raw)
        warm = np.zeros(len(raw), dtype=bool)
        for group in self._groups:  # checks the time order of every row, too
            try:
                warm |= in_warmup(raw, group.spec)
            except ValueError as exc:
                raise PredictionInputError(f"machine {self.machine_id}: {exc}") from exc
        if latest_only:
            codes = unit_codes(raw)
            from_end = pd.Series(codes).groupby(codes).cumcount(ascending=False).to_numpy()
            whole = from_end + pd.Series(codes).groupby(codes).cumcount().to_numpy() + 1  # the unit's rows
            history, extra = self.min_history_rows - 1, LATEST_ROWS
            while (whole > history + extra).any():
                tail = from_end < history + extra
                # a row is computed exactly when its windows are full inside the tail or its unit is whole there
                exact = (from_end < extra) | (whole <= history + extra)
                cut = (whole > history + extra)[tail][exact[tail]]
                out = self._predict(raw[tail], warm[tail], latest_only=True, exact=exact[tail], cut=cut)
                if out is not None:
                    return out
                extra *= 4
        out = self._predict(raw, warm, latest_only=latest_only)
        assert out is not None
        return out

    def _predict(
        self, raw: pd.DataFrame, warm: np.ndarray, *, latest_only: bool,
        exact: np.ndarray | None = None, cut: np.ndarray | None = None,
    ) -> pd.DataFrame | None:
        """The predictions of `raw`'s rows (each unit's last with `latest_only`). The models see only the `exact`
        rows (default all: the others only give them their windows' history); of those, the `cut` ones belong to
        units whose earlier rows were left out: None when a model with a state (the anomaly alarm) cannot tell
        its last state on them without those rows."""
        self._check_memory(len(raw))
        codes = unit_codes(raw)
        rows = np.flatnonzero(~pd.Series(codes).duplicated(keep="last").to_numpy()) if latest_only else np.arange(len(raw))
        exact = np.ones(len(raw), dtype=bool) if exact is None else exact
        status = self._row_status(raw)
        out = raw.iloc[rows][[c for c in (TIMESTAMP, UNIT_ID) if c in raw.columns]].copy()
        seen = pd.Series(status).str.startswith((OK, OUT_OF_RANGE)).to_numpy(dtype=bool)  # predicted rows
        usable = seen[rows]
        where = np.cumsum(exact) - 1  # a row's place among the exact rows (the last rows are exact)
        for group in self._groups:
            try:
                features = compute_features(raw, group.spec).fillna(group.fill_values).to_numpy(dtype=float)
            except ValueError as exc:
                raise PredictionInputError(f"machine {self.machine_id}: {exc}") from exc
            if not exact.all():
                features = features[exact]
            for runtime, columns in zip(group.runtimes, group.columns):
                stateful = getattr(runtime, "stateful", False)  # rows it cannot see must not move its state
                outputs = runtime.predict(features[:, columns], codes[exact],
                                          **({"seen": seen[exact]} if stateful else {}))
                if cut is not None and cut.any() and stateful and runtime.needs_earlier_rows(
                    {name: np.asarray(values)[cut] for name, values in outputs.items()}, codes[exact][cut],
                    seen[exact][cut],
                ):
                    return None
                for name, values in outputs.items():
                    chosen = np.asarray(values)[where[rows]].astype(float)
                    chosen[~usable] = np.nan
                    out[name] = chosen
        out[WARMUP] = warm[rows]
        out[STATUS] = status[rows]
        return out

    def forecast(self, raw: pd.DataFrame | None = None, horizon: float | None = None) -> pd.DataFrame:
        """Per-sensor forecasts after the last row of `raw` (timestamp + sensors; default: after the training
        history); `horizon` in the data's time unit (default: the trained horizon)."""
        if self._forecaster is None:
            absent = self.description.get("absent", {}).get("timeseries", "not trained")
            raise PredictionInputError(f"bundle {self.bundle_dir} of machine {self.machine_id} has no forecasts: {absent}")
        if raw is not None:
            raw = self._check_columns(raw, [TIMESTAMP, *self._forecaster.sensors], "forecast")
        from pdm_pipeline.families.forecast.series import ForecastSkipped

        try:
            return self._forecaster.forecast(recent=raw, horizon=horizon)
        except (ValueError, ForecastSkipped) as exc:
            raise PredictionInputError(f"machine {self.machine_id}: forecast: {exc}") from exc


__all__ = ["OUT_OF_RANGE", "STATUS", "WARMUP", "EdgePredictor", "PredictionInputError", "default_trust", "read_input", "status_note"]
