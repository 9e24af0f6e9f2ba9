"""Volumetric and patient-level measures of risk maps (sklearn_hemo.metrics._volumes)."""

import nibabel as nib
import numpy as np
import pytest

from sklearn_hemo.datasets import Cohort, Patient
from sklearn_hemo.metrics import (
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

ZOOMS = (2.0, 3.0, 5.0)  # 30 mm^3 = 0.03 mL per voxel


def _img(data, zooms=ZOOMS):
    return nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.diag([*zooms, 1.0]))


def _patient(pid, ht, ht_mask=None, shape=(6, 5, 4)):
    pwi = nib.Nifti1Image(np.full((*shape, 8), 100, np.float32), np.diag([*ZOOMS, 1.0]))
    b0 = _img(np.ones(shape))
    brain = np.zeros(shape, np.uint8)
    brain[1:5, 1:4, :] = 1  # 4 * 3 * 4 = 48 brain voxels
    return Patient(pid, pwi, b0, b0, echo_time=0.03, repetition_time=1.5, ht=ht,
                   brain_mask=_img(brain),
                   ht_mask=None if ht_mask is None else _img(ht_mask))


def test_voxel_volume_from_header_zooms():
    assert voxel_volume_ml(_img(np.zeros((2, 2, 2)))) == pytest.approx(0.03)
    assert voxel_volume_ml((1, 1, 1)) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="voxel size"):
        voxel_volume_ml((1, 0, 1))


def test_predicted_volume_counts_voxels_at_or_above_threshold():
    risk = np.zeros((4, 4, 4))
    risk[0, 0, :4] = [0.49, 0.5, 0.7, 1.0]
    assert predicted_volume(_img(risk), 0.5) == pytest.approx(3 * 0.03)
    assert predicted_volume(risk, 0.5, voxel_size=(1, 1, 1)) == pytest.approx(0.003)
    with pytest.raises(TypeError, match="voxel_size"):
        predicted_volume(risk, 0.5)
    with pytest.raises(ValueError, match="threshold"):
        predicted_volume(_img(risk), 1.5)


def test_nan_map_is_refused():
    risk = np.zeros((2, 2, 2))
    risk[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        predicted_volume(_img(risk))


def test_dice_and_volume_error():
    risk = np.zeros((10, 10, 10))
    risk[:2] = 0.9  # 200 voxels predicted
    truth = np.zeros((10, 10, 10))
    truth[1:3] = 1  # 200 annotated, 100 shared
    assert dice_score(risk, truth) == pytest.approx(0.5)
    assert dice_score(np.zeros((2, 2, 2)), np.zeros((2, 2, 2))) == 1.0
    assert dice_score(risk, np.zeros_like(truth)) == 0.0
    assert volume_error(_img(risk), _img(truth)) == pytest.approx(0.0)
    assert volume_error(risk, np.zeros_like(truth), voxel_size=(1, 1, 1)) == pytest.approx(0.2)
    assert mask_volume(_img(truth)) == pytest.approx(200 * 0.03)
    with pytest.raises(ValueError, match="same"):
        dice_score(risk, truth[:5])


def test_patient_risk_score_is_a_percentile_inside_the_brain():
    risk = np.zeros((10, 10, 1))
    brain = np.zeros((10, 10, 1), bool)
    brain[:, :5] = True  # 50 brain voxels
    risk[:, :5] = np.linspace(0, 0.98, 50).reshape(10, 5, 1)
    assert patient_risk_score(risk, brain, percentile=100) == pytest.approx(0.98)
    assert patient_risk_score(risk, brain, percentile=50) == pytest.approx(
        np.median(risk[brain]))
    # without the mask, the zeros outside the brain drag the median down
    assert patient_risk_score(risk, percentile=50) < patient_risk_score(risk, brain,
                                                                         percentile=50)
    with pytest.raises(ValueError, match="empty"):
        patient_risk_score(risk, np.zeros_like(brain))


def test_occurrence_auc_needs_both_classes():
    assert occurrence_auc([0.1, 0.9, 0.2, 0.8], [0, 1, 0, 1]) == 1.0
    with pytest.raises(ValueError, match="with and without HT"):
        occurrence_auc([0.1, 0.2], [1, 1])


def test_patient_table_and_summary():
    shape = (6, 5, 4)
    bleed = np.zeros(shape)
    bleed[1:3, 1:3, 0] = 1  # 4 voxels, 0.12 mL
    patients = Cohort([_patient("sub-1", 1, bleed), _patient("sub-2", 0, np.zeros(shape)),
                       _patient("sub-3", None)])
    maps = []
    for level in (0.9, 0.2, 0.6):
        risk = np.zeros(shape, np.float32)
        risk[1:3, 1:2, 0] = level  # 2 voxels at `level`
        risk[3, 3, 3] = 0.05
        maps.append(_img(risk))
    rows = patient_table(maps, patients, threshold=0.5, percentile=100)
    assert [r["patient_id"] for r in rows] == ["sub-1", "sub-2", "sub-3"]
    first = rows[0]
    assert first["risk_score"] == pytest.approx(0.9)
    assert first["predicted_volume_ml"] == pytest.approx(2 * 0.03)
    assert first["annotated_volume_ml"] == pytest.approx(4 * 0.03)
    assert first["volume_error_ml"] == pytest.approx(-2 * 0.03)
    assert first["dice"] == pytest.approx(2 * 2 / (2 + 4))
    assert rows[1]["predicted_volume_ml"] == 0.0 and rows[1]["dice"] == 1.0
    assert rows[2]["dice"] is None and rows[2]["ht"] is None

    summary = summarize_patient_table(rows)
    assert summary["n_patients"] == 3
    assert summary["occurrence_auc"] == 1.0  # sub-3 has no label and is left out
    assert summary["dice_mean"] == pytest.approx(first["dice"])  # bleeding patients only
    assert summary["volume_abs_error_mean_ml"] == pytest.approx((0.06 + 0.0) / 2)

    with pytest.raises(ValueError, match="one map per"):
        patient_table(maps[:2], patients)
    with pytest.raises(TypeError, match="nibabel image"):
        patient_table([np.zeros(shape)] * 3, patients)
