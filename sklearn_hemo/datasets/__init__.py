"""Cohorts: the simulated stroke cohort and reading/writing cohorts on disk."""

from ._cohort import ArterialInputFunction, Cohort, CohortError, Patient

__all__ = ["ArterialInputFunction", "Cohort", "CohortError", "Patient"]
