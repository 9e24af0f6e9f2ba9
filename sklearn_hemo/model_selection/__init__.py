"""Model selection: the model zoo and the patient-grouped nested comparison."""

from ._compare import compare_models
from ._plan import SCALING_LAWS, ComparisonPlan, plan_comparison
from ._report import (
    PAPER_TABLE,
    ComparisonResult,
    paired_differences,
    read_predictions,
    stability_table,
    summarize_predictions,
)
from ._zoo import DEFAULT_ROWS, N_CANDIDATES, PROTOCOLS, ZOO_ROWS, make_model_zoo

__all__ = [
    "ComparisonPlan",
    "ComparisonResult",
    "DEFAULT_ROWS",
    "N_CANDIDATES",
    "PAPER_TABLE",
    "PROTOCOLS",
    "SCALING_LAWS",
    "ZOO_ROWS",
    "compare_models",
    "make_model_zoo",
    "paired_differences",
    "plan_comparison",
    "read_predictions",
    "stability_table",
    "summarize_predictions",
]
