"""Metrics: AUCs with patient-level bootstrap confidence intervals, volumetric and
patient-level measures of risk maps (one private module per topic)."""

from ._bootstrap import bootstrap_auc, bootstrap_weights, weighted_auc
from ._calibration import (
    calibration_counts,
    calibration_summary,
    expected_calibration_error,
)
from ._volumes import (
    dice_score,
    mask_volume,
    occurrence_auc,
    patient_risk_score,
    patient_table,
    predicted_volume,
    summarize_patient_table,
    volume_error,
    voxel_volume_ml,
)

__all__ = [
    "bootstrap_auc",
    "bootstrap_weights",
    "weighted_auc",
    "voxel_volume_ml",
    "predicted_volume",
    "mask_volume",
    "patient_risk_score",
    "dice_score",
    "volume_error",
    "occurrence_auc",
    "patient_table",
    "summarize_patient_table",
    "calibration_counts",
    "calibration_summary",
    "expected_calibration_error",
]
