"""Dagster layer: wires the plain-Python core into an asset graph partitioned by machine_id.

One file per concern: partitions, resources, assets/ (source data, preparation, models, evaluation, release),
checks/ (data quality, Pi size, model quality), sensors, schedules, definitions.
"""
