"""``studies/many_records.py``, loaded once for the tests of many records (it is a script, not
a module of the package), and how many records their shared folder holds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_STUDY = Path(__file__).resolve().parent.parent / "studies" / "many_records.py"
_spec = importlib.util.spec_from_file_location("many_records", _STUDY)
assert _spec is not None and _spec.loader is not None
many_records = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(many_records)

#: Records in the ``many_records_folder`` fixture.
MANY = 2000
