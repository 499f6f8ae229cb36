"""Import real sensor data (CSV, whitespace-separated text or parquet, in any layout) into the project's data contract.

`import_data` reads a file or a directory of files, maps the user's columns onto the contract (see
contract.py), splits the rows into train/val/test, and writes, per machine:

- ``synthetic/<machine_id>/{train,val,test}.parquet``: ``timestamp`` (absent without time order), ``unit_id``
  (string, when there are units), one float64 column per sensor, and ``rul``, ``failure_status``,
  ``anomaly_window`` when asked for;
- ``metadata/<machine_id>_metadata.json`` (SDV single-table metadata plus ``time_order``, ``time_unit``,
  ``machine_type``, ``rul_parameters`` and ``source``: file, import time, options, column map);
- ``metadata/<machine_id>_profile.json`` when thresholds or a machine type are given.

Modules, along the seams of the work: `options` (ImportOptions and their checks), `reading` (files, separators,
files without header), `columns` (roles and sensor names), `timeline` (time axis, duplicates, RUL), `splits`,
`build` (machines, metadata, profile), `writing` (staging, contract check, atomic commit), `api` (import_data,
import_frame) and `recipes` (AI4I 2020, NAB, SKAB, C-MAPSS).

Choices, in the order a user meets them:

- Reading. Column names are stripped of surrounding blanks. A directory is read file by file (``*.csv``,
  ``*.tsv``, ``*.parquet``, sorted by name, hidden files skipped); all files must have the same columns. A single
  file may also be ``.txt`` / ``.dat``. Without ``unit_column``, every file of a directory is one unit whose id is
  the file stem. Text is read as UTF-8 and a byte-order mark is dropped. `separator` is any string, or
  "whitespace" (any run of spaces/tabs; blanks at line ends make no empty column, as in NASA C-MAPSS).
  ``header=False``: the file has no header row and `columns` names its columns (the count must match). `decimal`
  "," reads decimal commas (usually with separator ";"); it may not equal the separator.
- Sensor names are sanitized (`sanitize_column_name`): "Air temperature [K]" -> "air_temperature_K". `rename`
  gives a name by hand. A sensor that would take a reserved name (timestamp, rul, unit_id, failure_status,
  anomaly_window) is an error: such a column is a target or a time axis and must never become a feature.
- Without `sensor_columns`, every numeric column not used otherwise is a sensor; a non-numeric column that is
  neither used nor listed in `drop_columns` is an error (nothing is dropped silently). Labels are never sensors:
  a column named like a label (anomaly, changepoint, label, labels, target, failure, fault, machine failure,
  class; case-insensitive) must be declared: `label_column`, `eval_label_column`, `ignore_label_columns` (not
  imported, recorded in the metadata's source notes), `drop_columns`, or listed in `sensor_columns`.
- Time axis. `time_column`: datetimes (parsed by pandas; time zones are converted to UTC and dropped), and
  `time_unit` (seconds, minutes, hours or days; default hours) is the unit of rul and horizons. `cycle_column`:
  a cycle/step counter kept as a number in ``timestamp``, `time_unit` (or `cycle_unit`) "cycles" (default) or
  "steps"; units usually all start from the same origin. The old `cycle_unit` values "s", "min", "h", "d" still
  turn the counter into datetimes (2000-01-01 + cycle x unit) with time_unit seconds/minutes/hours/days.
  Neither column means no time order: no ``timestamp`` column, ``"time_order": false``, no ``time_unit``. The
  time and cycle columns are never sensors.
- Labels (`label_column` -> ``failure_status``, `eval_label_column` -> ``anomaly_window``) must hold 0/1 or
  booleans; anything else is an error. Non-zero values are not turned into 1 silently because a -1/1 coding
  or a multi-class failure code would be misread; map them to 0/1 before importing. Rows labelled anomalous
  stay in the data (models that need normal data leave them out themselves).
- Timestamps must be unique per unit. A repeated timestamp is an error unless `duplicate_timestamps` is
  "first" or "last" (one row of each is kept, in file order; the number dropped goes to the metadata).
- Missing sensor values are kept as NaN (the importer invents nothing); the count per sensor is recorded in
  the metadata's ``source`` and the contract validator's ``max_nan_share`` decides downstream.
- `compute_rul`: each unit (or the whole file without units) runs to failure at its last row; ``rul`` is the
  time to that row in the data's time unit, optionally capped at `rul_cap` (same unit; the old `rul_cap_hours`
  is accepted for clock data). ``rul_parameters.max_operational`` is the cap, else the longest such life (also
  written as ``max_operational_hours`` when the unit is hours).
- Splits. "chronological": one global time cut (not per unit), so every test row is later than every val
  row and every val row later than every train row; rows sharing a timestamp stay together. It is refused
  for cycle counters with several units (their clocks all start at the same origin: use "unit"). "unit":
  whole units to splits by `ratios` of the unit count, units ordered by first timestamp (then first
  appearance; for cycle/step counters then unit id), so the test units are the latest. "column": the
  `split_column` values train/val/test (case-insensitive). "random": only without time order (it would leak the
  future), seeded, stratified on the label when there is one. "first_rows": the first `train_rows` rows of each
  unit (or file) are train, the last `val_share` (default 0.2) of them val, every later row test (SKAB's
  protocol); every unit needs more than `train_rows` rows. Every split must get rows.
- ``rul_parameters.sampling_step`` is the median step between consecutive rows of a unit in the train split, in
  the data's time unit; clock data also get ``sampling_interval_minutes``.
- Machine type: `machine_type` goes to the metadata (top-level ``machine_type``) and the profile. With
  `group_column` and no machine type, the machine type is `machine_id` (the prefix of the machines made), so
  the machines of one import form one fleet.
- Writing is atomic per import: all files are written to a staging directory under the data root, checked
  with the contract validator, then moved in. An existing machine is replaced only with ``overwrite=True``;
  its old metadata is removed first and the new metadata is moved in last, so a half-written machine never
  has metadata.
"""

from __future__ import annotations

from pdm_pipeline.core.importer.api import import_data, import_frame
from pdm_pipeline.core.importer.build import DATETIME_FORMAT
from pdm_pipeline.core.importer.columns import looks_like_label, sanitize_column_name
from pdm_pipeline.core.importer.options import (
    CYCLE_TIME_UNITS,
    CYCLE_UNITS,
    DUPLICATE_POLICIES,
    LABEL_LIKE_NAMES,
    SPLIT_MODES,
    THRESHOLD_KEYS,
    WHITESPACE,
    ImportOptions,
    ImportOptionsError,
)
from pdm_pipeline.core.importer.reading import FILE_SUFFIXES, SOURCE_SUFFIXES, read_file
from pdm_pipeline.core.importer.recipes import (
    AI4I_DROPPED,
    AI4I_GROUP,
    AI4I_LABEL,
    CMAPSS_COLUMNS,
    NAB_SENSOR,
    NAB_WINDOWS_KEY,
    SKAB_COLUMNS,
    import_ai4i2020,
    import_cmapss,
    import_nab,
    import_nab_machine_temperature,
    import_skab,
    nab_windows_key,
)
from pdm_pipeline.core.importer.timeline import CYCLE_ORIGIN

__all__ = [
    "AI4I_DROPPED",
    "AI4I_GROUP",
    "AI4I_LABEL",
    "CMAPSS_COLUMNS",
    "CYCLE_ORIGIN",
    "CYCLE_TIME_UNITS",
    "CYCLE_UNITS",
    "DATETIME_FORMAT",
    "DUPLICATE_POLICIES",
    "FILE_SUFFIXES",
    "LABEL_LIKE_NAMES",
    "NAB_SENSOR",
    "NAB_WINDOWS_KEY",
    "SKAB_COLUMNS",
    "SOURCE_SUFFIXES",
    "SPLIT_MODES",
    "THRESHOLD_KEYS",
    "WHITESPACE",
    "ImportOptions",
    "ImportOptionsError",
    "import_ai4i2020",
    "import_cmapss",
    "import_data",
    "import_frame",
    "import_nab",
    "import_nab_machine_temperature",
    "import_skab",
    "looks_like_label",
    "nab_windows_key",
    "read_file",
    "sanitize_column_name",
]
