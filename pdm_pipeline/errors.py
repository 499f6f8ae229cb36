"""The one base class of every error a user can cause and fix: bad data, bad settings, bad files.

The CLI, the sensor and the pre-queue checks catch `PdmError` (and only it): its message names what is wrong
and where, so it is printed as it is, with exit code 2 and no traceback. Any other exception is a bug in
pdm-pipeline and keeps its traceback.

Every user-facing error class of the project derives from `PdmError` (most also from `ValueError`, which they
were before, so existing `except ValueError` callers keep working).
"""

from __future__ import annotations


class PdmError(Exception):
    """Something the user can fix: the message names the machine, file, column, option or setting at fault."""


class SettingsError(PdmError, ValueError):
    """A training or gate setting that is unknown, of the wrong type or out of range; the message names it."""
