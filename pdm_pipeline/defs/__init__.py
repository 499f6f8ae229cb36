"""Dagster layer: wires the plain-Python core into an asset graph partitioned by machine_id.

One file per concern: partitions, resources, io_manager, assets/ (source data, preparation, one step per model
family, release, fleet), checks/ (gate outcomes as check results), jobs, sensors, schedules, recovery, launch,
definitions. Importing it first installs the warning filters of `quiet.py`.
"""

from pdm_pipeline.defs import quiet

quiet.install()
