"""Input checks shared by several subpackages.

Each raises a ``ValueError`` or ``TypeError`` whose message names the parameter (and, for
voxel references, the row and the participant) and says what to pass instead.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils.validation import check_array, validate_data

__all__ = ["check_integer", "check_dt", "check_voxel_refs"]


def check_integer(value, name, minimum=1):
    """Return ``value`` as an ``int``, refusing booleans, non-integers and small values.

    Parameters
    ----------
    value : object
        The value to check; any :class:`numbers.Integral` but ``bool`` is accepted.
    name : str
        Parameter name, used in the error message.
    minimum : int, default=1
        Smallest accepted value.

    Returns
    -------
    value : int

    Raises
    ------
    ValueError
        ``value`` is not an integer (``True`` and ``2.0`` are refused) or is below
        ``minimum``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.utils.validation import check_integer
    >>> check_integer(np.int64(60), "n_timepoints")
    60
    >>> check_integer(0, "n_patients")
    Traceback (most recent call last):
    ...
    ValueError: n_patients must be an integer >= 1, got 0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_dt(dt):
    """Return the time between frames ``dt`` as a positive finite ``float`` (seconds).

    Parameters
    ----------
    dt : float
        Seconds between consecutive time points; booleans are refused.

    Returns
    -------
    dt : float

    Raises
    ------
    ValueError
        ``dt`` is not a real number, is not finite or is not positive.

    Examples
    --------
    >>> from sklearn_hemo.utils.validation import check_dt
    >>> check_dt(1.8)
    1.8
    >>> check_dt(0)
    Traceback (most recent call last):
    ...
    ValueError: dt must be a positive number of seconds between frames, got 0.
    """
    if not isinstance(dt, numbers.Real) or isinstance(dt, bool) or not np.isfinite(dt) or dt <= 0:
        raise ValueError(
            f"dt must be a positive number of seconds between frames, got {dt!r}."
        )
    return float(dt)


def check_voxel_refs(X, cohort, *, estimator=None, reset=True):
    """Validate voxel references against a cohort.

    Parameters
    ----------
    X : array-like of shape (n_samples, 4)
        Integer voxel references (patient index, i, j, k).
    cohort : Cohort
        The cohort the references point into.
    estimator : estimator or None, default=None
        When given, ``X`` goes through :func:`sklearn.utils.validation.validate_data`,
        which records (``reset=True``) or checks ``n_features_in_`` and
        ``feature_names_in_``.
    reset : bool, default=True
        Passed to ``validate_data``.

    Returns
    -------
    refs : ndarray of int64, shape (n_samples, 4)

    Raises
    ------
    TypeError
        ``cohort`` is not a :class:`~sklearn_hemo.datasets.Cohort`, or ``X`` does not hold
        integers.
    ValueError
        No cohort, wrong shape, no sample, a patient index outside the cohort or a
        coordinate outside the patient's volume; the message names the row, the
        participant and the fix.

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.utils.validation import check_voxel_refs
    >>> cohort = make_stroke_cohort(2, (8, 8, 1), difficulty="easy", random_state=0)
    >>> check_voxel_refs([[1, 0, 7, 0]], cohort)
    array([[1, 0, 7, 0]])
    >>> check_voxel_refs([[2, 0, 0, 0]], cohort)
    Traceback (most recent call last):
    ...
    ValueError: X[0] refers to patient index 2, but the cohort has 2 patients (indices 0 to 1); 1 rows are affected. Use references built on this cohort.
    """  # noqa: E501
    # the class only, not the datasets package: datasets' modules use these checks too
    from ..datasets._cohort import Cohort

    name = type(estimator).__name__ if estimator is not None else "voxel references"
    if cohort is None:
        raise ValueError(f"{name} needs a cohort to resolve voxel references: pass "
                         "cohort=... (a sklearn_hemo.datasets.Cohort).")
    if not isinstance(cohort, Cohort):
        raise TypeError(f"cohort must be a sklearn_hemo.datasets.Cohort, got "
                        f"{type(cohort).__name__}. Wrap the patients with Cohort([...]).")
    kwargs = dict(dtype=None, ensure_2d=True, ensure_min_samples=1)
    if estimator is not None:
        X = validate_data(estimator, X, reset=reset, **kwargs)
    else:
        X = check_array(X, **kwargs)
    if not np.issubdtype(X.dtype, np.integer):
        raise TypeError(
            f"X must hold integer voxel references (patient index, i, j, k), got dtype "
            f"{X.dtype}. Build X with sklearn_hemo.sampling.sample_voxels, or cast whole "
            "numbers with X.astype(int)."
        )
    if X.shape[1] != 4:
        raise ValueError(f"X must have 4 columns (patient index, i, j, k), got shape "
                         f"{X.shape}.")
    refs = X.astype(np.int64, copy=False)
    patients = refs[:, 0]
    bad = np.flatnonzero((patients < 0) | (patients >= len(cohort)))
    if bad.size:
        row = bad[0]
        raise ValueError(
            f"X[{row}] refers to patient index {patients[row]}, but the cohort has "
            f"{len(cohort)} patients (indices 0 to {len(cohort) - 1}); {bad.size} rows are "
            "affected. Use references built on this cohort."
        )
    shapes = np.zeros((len(cohort), 3), dtype=np.int64)
    for p in np.flatnonzero(np.bincount(patients, minlength=len(cohort))):
        shapes[p] = cohort[p].shape
    limits = shapes[patients]
    bad = np.flatnonzero(((refs[:, 1:] < 0) | (refs[:, 1:] >= limits)).any(axis=1))
    if bad.size:
        row = bad[0]
        patient = cohort[patients[row]]
        raise ValueError(
            f"X[{row}] = {tuple(refs[row].tolist())} lies outside the volume of participant "
            f"{patient.id} (shape {patient.shape}); {bad.size} rows are affected. Voxel "
            "coordinates (i, j, k) must index the PWI grid of their patient."
        )
    return refs
