"""Machines are dynamic partitions: a machine appears when its data appears (sensor, demo or CLI)."""

import dagster as dg

MACHINES_PARTITION_NAME = "machines"

machines_partitions = dg.DynamicPartitionsDefinition(name=MACHINES_PARTITION_NAME)
