"""Model selection: the model zoo and the patient-grouped nested comparison."""

from ._compare import compare_models
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
    "ComparisonResult",
    "DEFAULT_ROWS",
    "N_CANDIDATES",
    "PAPER_TABLE",
    "PROTOCOLS",
    "ZOO_ROWS",
    "compare_models",
    "make_model_zoo",
    "paired_differences",
    "read_predictions",
    "stability_table",
    "summarize_predictions",
]
