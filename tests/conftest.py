"""Shared fixtures: a tiny simulated cohort, in memory and on disk.

Both are session-scoped and must be treated as read-only.
"""

import os
import tempfile

import pytest

from sklearn_hemo.datasets import make_stroke_cohort, save_cohort

# the load-time motion correction caches corrected series on disk: in a folder of the
# run's own, never in the home of whoever runs the suite (subprocesses inherit it)
os.environ.setdefault("SKLEARN_HEMO_CACHE_DIR", tempfile.mkdtemp(prefix="sklearn-hemo-cache-"))

TINY = {"n_patients": 6, "shape": (12, 12, 2), "random_state": 0, "ht_prevalence": 0.5}


@pytest.fixture(scope="session")
def tiny_cohort():
    """Six simulated patients on a 12 x 12 x 2 grid (3 bleed, 3 do not), random_state=0."""
    return make_stroke_cohort(**TINY, difficulty="easy")


@pytest.fixture(scope="session")
def tiny_cohort_dir(tiny_cohort, tmp_path_factory):
    """``tiny_cohort`` saved in the cohort layout; returns the folder (a pathlib.Path)."""
    return save_cohort(tiny_cohort, tmp_path_factory.mktemp("tiny_cohort"))
