"""Suite-wide settings.

Profile "ci" — loaded by ``make test`` (``--hypothesis-profile=ci``, which the project's CI runs)
and whenever ``CI`` is set: Hypothesis runs derandomized with NO example database, so every run
tests the same examples, and a failure an earlier run saved in ``.hypothesis/`` is neither replayed
nor added to (the failure count cannot grow from run to run). Plain ``pytest`` runs keep drawing
new examples (and keep the database), which is how the properties keep finding new corners."""
from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
