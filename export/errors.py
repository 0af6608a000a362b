"""The two ways an export run can fail, each with the exit code the command returns.

`ExportError` (exit 2) is a request that cannot be carried out as given: an unknown model, a
missing, corrupted or mismatched checkpoint, missing data. `CheckFailed` (exit 1) is an export
that was carried out but did not prove itself: parity outside tolerance, or an INT8 model that
lost too much accuracy. Messages say what was wrong and what to do.
"""
from __future__ import annotations


class ExportError(Exception):
    exit_code = 2


class CheckFailed(Exception):
    exit_code = 1
