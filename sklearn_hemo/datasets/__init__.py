"""Cohorts: the simulated stroke cohort, reading/writing cohorts on disk, import."""

from ._cohort import ArterialInputFunction, Cohort, CohortError, Patient
from ._import import import_cohort
from ._layout import load_cohort, load_patient, save_cohort
from ._raw import simulate_raw_tree
from ._simulate import PAPER_COHORT, make_stroke_cohort, simulated_concentration

__all__ = [
    "ArterialInputFunction",
    "Cohort",
    "CohortError",
    "PAPER_COHORT",
    "Patient",
    "import_cohort",
    "load_cohort",
    "load_patient",
    "make_stroke_cohort",
    "save_cohort",
    "simulate_raw_tree",
    "simulated_concentration",
]
