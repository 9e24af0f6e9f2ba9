"""Volumetric and patient-level measures computed from voxel-wise risk maps.

A risk map (see :func:`sklearn_hemo.risk.predict_risk_map`) gives, for every brain voxel,
the predicted probability of hemorrhagic transformation (HT). Clinicians read it as
volumes and as one number per patient; this module turns maps into those numbers and
compares them with the follow-up annotation (``ht_mask``) when there is one.

Conventions, used by every function here:

* a voxel is *predicted HT* when its risk is ``>= threshold``;
* volumes are in millilitres, the voxel size taken from the image header zooms (mm);
* the *patient risk score* is the ``percentile``-th percentile (99 by default) of the
  voxel risks inside the brain mask: a patient bleeds when a small but real part of the
  brain is at high risk, which a mean over the whole brain would dilute, while a high
  percentile is not driven by one noisy voxel as the maximum would be.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import nibabel as nib
import numpy as np
from sklearn.metrics import roc_auc_score

from ..utils.fixes import Interval, validate_params

__all__ = [
    "voxel_volume_ml",
    "predicted_volume",
    "mask_volume",
    "patient_risk_score",
    "dice_score",
    "volume_error",
    "occurrence_auc",
    "patient_table",
    "summarize_patient_table",
]

# parameter constraints shared by the measures (scikit-learn's validate_params)
_PROBABILITY = Interval(numbers.Real, 0, 1, closed="both")
_PERCENTILE = Interval(numbers.Real, 0, 100, closed="both")


def _is_image(obj):
    return isinstance(obj, nib.spatialimages.SpatialImage)


@validate_params(
    {"image": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def voxel_volume_ml(image):
    """Volume of one voxel of ``image`` in millilitres, from the header zooms.

    Parameters
    ----------
    image : nibabel image or sequence of 3 floats
        An image (its first three zooms, in mm, are used) or the voxel size in mm.

    Returns
    -------
    volume : float
        Voxel volume in mL (1 mL = 1000 mm^3).

    Examples
    --------
    >>> import nibabel as nib, numpy as np
    >>> from sklearn_hemo.metrics import voxel_volume_ml
    >>> img = nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.diag([2., 2., 5., 1.]))
    >>> voxel_volume_ml(img)
    0.02
    """
    if _is_image(image):
        zooms = image.header.get_zooms()[:3]
    else:
        zooms = image
    zooms = np.asarray(zooms, dtype=float).ravel()
    if zooms.shape != (3,) or not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise ValueError(
            f"voxel size must be three positive finite lengths in mm, got {zooms.tolist()}; "
            "fix the image header zooms (pixdim) or pass voxel_size=(dx, dy, dz)."
        )
    return float(np.prod(zooms) / 1000.0)


def _array(obj, name):
    """Return the data of an image or array as a float array, with a clear error."""
    if _is_image(obj):
        data = np.asanyarray(obj.dataobj)
    else:
        data = np.asarray(obj)
    if data.ndim != 3:
        raise ValueError(f"{name} must be a 3D image or array, got shape {data.shape}.")
    if not np.issubdtype(data.dtype, np.bool_) and not np.all(np.isfinite(data)):
        raise ValueError(f"{name} contains NaN or infinite values; fix the image first.")
    return data


def _check_same_shape(a, b, name_a, name_b):
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; both must be "
            "on the same (PWI) grid."
        )


def _check_threshold(threshold):
    if not isinstance(threshold, numbers.Real) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}.")


def _resolve_voxel_volume(image, voxel_size):
    if voxel_size is not None:
        return voxel_volume_ml(voxel_size)
    if _is_image(image):
        return voxel_volume_ml(image)
    raise TypeError(
        "cannot tell the voxel size of a plain array: pass a nibabel image (its header "
        "zooms give the voxel size) or voxel_size=(dx, dy, dz) in mm."
    )


@validate_params(
    {"risk_map": ["array-like"], "threshold": [_PROBABILITY], "voxel_size": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def predicted_volume(risk_map, threshold=0.5, *, voxel_size=None):
    """Predicted HT volume in mL: the volume of voxels whose risk is ``>= threshold``.

    Parameters
    ----------
    risk_map : nibabel image or ndarray of shape (x, y, z)
        Voxel-wise HT probability.
    threshold : float, default=0.5
        Risk at or above which a voxel counts as predicted HT.
    voxel_size : sequence of 3 floats or None, default=None
        Voxel size in mm; required when ``risk_map`` is a plain array.

    Returns
    -------
    volume : float
        Predicted HT volume in mL.

    Examples
    --------
    >>> import nibabel as nib, numpy as np
    >>> from sklearn_hemo.metrics import predicted_volume
    >>> risk = np.zeros((10, 10, 2), np.float32); risk[:5, :2, 0] = 0.9
    >>> img = nib.Nifti1Image(risk, np.diag([2., 2., 5., 1.]))
    >>> predicted_volume(img, threshold=0.5)
    0.2
    """
    _check_threshold(threshold)
    voxel_ml = _resolve_voxel_volume(risk_map, voxel_size)
    data = _array(risk_map, "risk_map")
    return float(np.count_nonzero(data >= threshold) * voxel_ml)


@validate_params(
    {"mask": ["array-like"], "voxel_size": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def mask_volume(mask, *, voxel_size=None):
    """Volume in mL of the non-zero voxels of a binary mask (e.g. ``ht_mask``).

    Parameters
    ----------
    mask : nibabel image or ndarray of shape (x, y, z)
        Binary mask; any non-zero value counts.
    voxel_size : sequence of 3 floats or None, default=None
        Voxel size in mm; required when ``mask`` is a plain array.

    Returns
    -------
    volume : float
        Volume in mL.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.metrics import mask_volume
    >>> mask_volume(np.ones((10, 10, 10)), voxel_size=(1, 1, 1))
    1.0
    """
    voxel_ml = _resolve_voxel_volume(mask, voxel_size)
    return float(np.count_nonzero(_array(mask, "mask")) * voxel_ml)


@validate_params(
    {"risk_map": ["array-like"], "brain_mask": ["array-like", None], "percentile": [_PERCENTILE]},
    prefer_skip_nested_validation=True,
)
def patient_risk_score(risk_map, brain_mask=None, *, percentile=99.0):
    """One HT risk number per patient: a high percentile of the voxel risks in the brain.

    Parameters
    ----------
    risk_map : nibabel image or ndarray of shape (x, y, z)
        Voxel-wise HT probability.
    brain_mask : nibabel image, ndarray or None, default=None
        Voxels to summarise; when None, every voxel of the map (so pass the mask: a
        risk map is 0 outside the brain and those zeros would pull the score down).
    percentile : float, default=99.0
        Which percentile of the in-brain voxel risks is the score (100 is the maximum).

    Returns
    -------
    score : float
        Patient-level risk in [0, 1] when the map is a probability map.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.metrics import patient_risk_score
    >>> risk = np.zeros((10, 10, 1)); risk[0, :, 0] = 0.8
    >>> patient_risk_score(risk, risk > -1, percentile=95)
    0.8
    """
    if not isinstance(percentile, numbers.Real) or not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile!r}.")
    data = _array(risk_map, "risk_map")
    if brain_mask is None:
        values = data.ravel()
    else:
        mask = _array(brain_mask, "brain_mask") != 0
        _check_same_shape(data, mask, "risk_map", "brain_mask")
        values = data[mask]
    if values.size == 0:
        raise ValueError("the brain mask is empty: there is no voxel to score.")
    return float(np.percentile(values, percentile))


def _binary_prediction(risk_map, threshold):
    _check_threshold(threshold)
    return _array(risk_map, "risk_map") >= threshold


@validate_params(
    {"risk_map": ["array-like"], "ht_mask": ["array-like"], "threshold": [_PROBABILITY]},
    prefer_skip_nested_validation=True,
)
def dice_score(risk_map, ht_mask, threshold=0.5):
    """Dice overlap of the thresholded risk map with the HT annotation.

    Parameters
    ----------
    risk_map : nibabel image or ndarray of shape (x, y, z)
        Voxel-wise HT probability.
    ht_mask : nibabel image or ndarray of shape (x, y, z)
        Follow-up HT annotation (non-zero = HT).
    threshold : float, default=0.5
        Risk at or above which a voxel counts as predicted HT.

    Returns
    -------
    dice : float
        ``2 |P & T| / (|P| + |T|)``; 1.0 when both the prediction and the annotation
        are empty (nothing to find, nothing found).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.metrics import dice_score
    >>> risk = np.zeros((4, 4, 1)); risk[:2, :, 0] = 0.9
    >>> truth = np.zeros((4, 4, 1)); truth[:1, :, 0] = 1
    >>> round(dice_score(risk, truth), 3)
    0.667
    """
    pred = _binary_prediction(risk_map, threshold)
    truth = _array(ht_mask, "ht_mask") != 0
    _check_same_shape(pred, truth, "risk_map", "ht_mask")
    denominator = np.count_nonzero(pred) + np.count_nonzero(truth)
    if denominator == 0:
        return 1.0
    return float(2.0 * np.count_nonzero(pred & truth) / denominator)


@validate_params(
    {"risk_map": ["array-like"], "ht_mask": ["array-like"], "threshold": [_PROBABILITY],
     "voxel_size": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def volume_error(risk_map, ht_mask, threshold=0.5, *, voxel_size=None):
    """Signed volume error in mL: predicted HT volume minus annotated HT volume.

    Parameters
    ----------
    risk_map : nibabel image or ndarray of shape (x, y, z)
        Voxel-wise HT probability.
    ht_mask : nibabel image or ndarray of shape (x, y, z)
        Follow-up HT annotation on the same grid.
    threshold : float, default=0.5
        Risk at or above which a voxel counts as predicted HT.
    voxel_size : sequence of 3 floats or None, default=None
        Voxel size in mm; required when neither argument is a nibabel image.

    Returns
    -------
    error : float
        Positive when the map over-estimates the bleed.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.metrics import volume_error
    >>> risk = np.zeros((10, 10, 10)); risk[:2] = 0.9
    >>> truth = np.zeros((10, 10, 10)); truth[:1] = 1
    >>> volume_error(risk, truth, voxel_size=(1, 1, 1))
    0.1
    """
    if voxel_size is None and not _is_image(risk_map) and _is_image(ht_mask):
        voxel_size = ht_mask.header.get_zooms()[:3]
    pred = predicted_volume(risk_map, threshold, voxel_size=voxel_size)
    truth_data = _array(ht_mask, "ht_mask")
    _check_same_shape(_array(risk_map, "risk_map"), truth_data, "risk_map", "ht_mask")
    voxel_ml = _resolve_voxel_volume(risk_map, voxel_size)
    return float(pred - np.count_nonzero(truth_data) * voxel_ml)


@validate_params(
    {"scores": ["array-like"], "labels": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def occurrence_auc(scores, labels):
    """Patient-level AUC-ROC of risk scores against whether each patient bled.

    Parameters
    ----------
    scores : array-like of shape (n_patients,)
        Patient risk scores (e.g. :func:`patient_risk_score`).
    labels : array-like of shape (n_patients,)
        1 when the patient had HT at follow-up, else 0.

    Returns
    -------
    auc : float
        Area under the ROC curve.

    Examples
    --------
    >>> from sklearn_hemo.metrics import occurrence_auc
    >>> occurrence_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(
            f"scores and labels must be 1D of equal length, got {scores.shape} and "
            f"{labels.shape}."
        )
    if np.unique(labels).size < 2:
        raise ValueError(
            "occurrence AUC needs patients with and without HT; these "
            f"{labels.size} patients all have label {labels[:1].tolist()}."
        )
    return float(roc_auc_score(labels, scores))


@validate_params(
    {"risk_maps": [Sequence], "patients": [Sequence], "threshold": [_PROBABILITY],
     "percentile": [_PERCENTILE]},
    prefer_skip_nested_validation=True,
)
def patient_table(risk_maps, patients, *, threshold=0.5, percentile=99.0):
    """Per-patient volumetric table from risk maps.

    Parameters
    ----------
    risk_maps : sequence of nibabel images
        One risk map per patient, in the order of ``patients``.
    patients : sequence of :class:`~sklearn_hemo.datasets.Patient` (e.g. a Cohort)
        The patients the maps belong to; their brain mask bounds the risk score and
        their ``ht_mask`` (when not None) gives Dice and volume error.
    threshold : float, default=0.5
        Risk at or above which a voxel counts as predicted HT.
    percentile : float, default=99.0
        Percentile of in-brain voxel risks used as the patient risk score.

    Returns
    -------
    rows : list of dict
        One dict per patient with keys ``patient_id``, ``ht`` (label or None),
        ``risk_score``, ``predicted_volume_ml``, ``annotated_volume_ml``,
        ``volume_error_ml`` and ``dice``; the last three are None when the patient has
        no ``ht_mask``.

    See Also
    --------
    summarize_patient_table : cohort-level summary (occurrence AUC, mean Dice).
    sklearn_hemo.risk.predict_risk_maps : maps for many patients of a cohort.

    Examples
    --------
    >>> from sklearn_hemo.metrics import patient_table
    >>> rows = patient_table(maps, cohort)  # doctest: +SKIP
    >>> rows[0]["predicted_volume_ml"]  # doctest: +SKIP
    3.2
    """
    patients = list(patients)
    risk_maps = list(risk_maps)
    if len(risk_maps) != len(patients):
        raise ValueError(
            f"got {len(risk_maps)} risk maps for {len(patients)} patients; pass one map per "
            "patient, in the same order."
        )
    rows = []
    for img, patient in zip(risk_maps, patients, strict=True):
        if not _is_image(img):
            raise TypeError(
                f"risk map of participant {patient.id} must be a nibabel image (its header "
                f"gives the voxel size), got {type(img).__name__}."
            )
        risk = _array(img, f"risk map of participant {patient.id}")
        brain = patient.get_brain_mask()
        _check_same_shape(risk, brain, f"risk map of participant {patient.id}", "brain mask")
        row = {
            "patient_id": patient.id,
            "ht": patient.ht,
            "risk_score": patient_risk_score(risk, brain, percentile=percentile),
            "predicted_volume_ml": predicted_volume(img, threshold),
            "annotated_volume_ml": None,
            "volume_error_ml": None,
            "dice": None,
        }
        if patient.ht_mask is not None:
            truth = _array(patient.ht_mask, f"ht_mask of participant {patient.id}")
            _check_same_shape(risk, truth, f"risk map of participant {patient.id}", "ht_mask")
            row["annotated_volume_ml"] = float(np.count_nonzero(truth) * voxel_volume_ml(img))
            row["volume_error_ml"] = row["predicted_volume_ml"] - row["annotated_volume_ml"]
            row["dice"] = dice_score(risk, truth, threshold)
        rows.append(row)
    return rows


@validate_params(
    {"rows": [Sequence]},
    prefer_skip_nested_validation=True,
)
def summarize_patient_table(rows):
    """Cohort-level summary of a :func:`patient_table`.

    Parameters
    ----------
    rows : list of dict
        Output of :func:`patient_table`.

    Returns
    -------
    summary : dict
        ``n_patients``; ``occurrence_auc`` (risk score vs patient HT label, over patients
        with a known label; None when they are not of both classes); ``dice_mean`` (over
        patients whose annotation is non-empty, as Dice is uninformative when there is
        nothing to find; None when there are none); ``volume_abs_error_mean_ml`` (over
        annotated patients; None when there are none).

    Examples
    --------
    >>> from sklearn_hemo.metrics import summarize_patient_table
    >>> rows = [
    ...     {"ht": 1, "risk_score": 0.9, "annotated_volume_ml": 2.0, "dice": 0.5,
    ...      "volume_error_ml": -1.0},
    ...     {"ht": 0, "risk_score": 0.2, "annotated_volume_ml": 0.0, "dice": 1.0,
    ...      "volume_error_ml": 0.5},
    ... ]
    >>> summarize_patient_table(rows)["occurrence_auc"]
    1.0
    """
    labelled = [r for r in rows if r["ht"] is not None]
    labels = np.array([r["ht"] for r in labelled], dtype=int)
    auc = None
    if np.unique(labels).size == 2:
        auc = occurrence_auc([r["risk_score"] for r in labelled], labels)
    with_bleed = [r for r in rows if r["annotated_volume_ml"]]
    annotated = [r for r in rows if r["volume_error_ml"] is not None]
    return {
        "n_patients": len(rows),
        "occurrence_auc": auc,
        "dice_mean": float(np.mean([r["dice"] for r in with_bleed])) if with_bleed else None,
        "volume_abs_error_mean_ml": (
            float(np.mean([abs(r["volume_error_ml"]) for r in annotated])) if annotated else None
        ),
    }
