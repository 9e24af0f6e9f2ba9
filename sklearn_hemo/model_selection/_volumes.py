"""Whole-brain, patient-level results of a comparison (``compare_models(volumes=True)``).

Each compared model is refitted per outer fold with the parameters the comparison chose
there, on the same training voxels, and the held-out patients are mapped in full: their
predicted and annotated HT volumes, Dice and risk scores, and per model the patient-level
occurrence AUC. The rows are written by the comparison's one CSV writer
(``volumes.csv``, ``volumes_summary.csv``).
"""

from __future__ import annotations

import warnings

from ..utils._verbosity import progress_line
from ..utils._warnings import find_stack_level
from ._report import TRUTH_ROWS


def risk_map_volumes(setup, result, verbose=0):
    """Per-patient rows and per-model summaries of the out-of-fold whole-brain maps.

    Parameters
    ----------
    setup : ComparisonSetup
        The replicate's setup: its zoo, voxels, labels and outer folds.
    result : ComparisonResult
        The replicate's result: the compared rows and their chosen parameters.
    verbose : int, default=0
        1 or more: a line per model as its maps start.

    Returns
    -------
    rows : list of dict
        ``model`` and the columns of :func:`~sklearn_hemo.maps.cross_val_risk_map_table`.
    summary : list of dict
        ``model`` and :func:`~sklearn_hemo.metrics.summarize_patient_table`.
    """
    from ..metrics import summarize_patient_table
    from ..risk import cross_val_risk_map_table

    rows, summary = [], []
    for name in [name for name in result.predictions if name not in TRUTH_ROWS]:
        progress_line(f"whole-brain maps of the held-out patients: {name} ...", verbose,
                      level=1)
        pipeline = setup.zoo[name][0]
        first = pipeline.steps[0][1] if hasattr(pipeline, "steps") else pipeline
        if "cohort" not in first.get_params(deep=False):
            warnings.warn(f"volumes: {name} skipped: its first step "
                          f"({type(first).__name__}) holds no cohort, and whole-brain maps "
                          "need an extractor of voxel references such as PatchExtractor.",
                          UserWarning, stacklevel=find_stack_level())
            continue
        try:
            table = cross_val_risk_map_table(pipeline, setup.X, setup.y, setup.fold,
                                             params=result.best_params.get(name))
        except (TypeError, ValueError) as exc:
            # e.g. a row whose first step reads no voxel references, or too few HT
            # patients in a training side to calibrate a score-only model
            warnings.warn(f"volumes: {name} skipped: {exc}", UserWarning,
                          stacklevel=find_stack_level())
            continue
        rows += [{"model": name, **row} for row in table]
        summary.append({"model": name, **summarize_patient_table(table)})
    return rows, summary
