"""Calibration of voxel probabilities: reliability bins, Brier score, ECE.

The counts of :func:`calibration_counts` add up: the counts of several patients (or
several chunks of one) summed are the counts of all their voxels, so a whole cohort's
reliability table is built one map at a time without keeping the maps.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from ..utils.fixes import Interval, validate_params

__all__ = ["calibration_counts", "calibration_summary", "expected_calibration_error"]

#: Columns of :func:`calibration_counts`.
COUNT_COLUMNS = ("n", "sum_predicted", "sum_observed", "sum_squared_error")


@validate_params(
    {"y_true": ["array-like"], "y_prob": ["array-like"],
     "n_bins": [Interval(Integral, 1, None, closed="left")]},
    prefer_skip_nested_validation=True,
)
def calibration_counts(y_true, y_prob, *, n_bins=10):
    """Per-bin sums of a reliability table, to be added over patients.

    Bins are of equal width on [0, 1] (bin ``b`` holds ``b/n_bins <= p < (b+1)/n_bins``,
    the last also ``p = 1``).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary outcomes (1 = HT).
    y_prob : array-like of shape (n_samples,)
        Predicted probabilities of the outcome, in [0, 1].
    n_bins : int, default=10
        Number of bins.

    Returns
    -------
    counts : ndarray of shape (n_bins, 4)
        Per bin: voxels, sum of probabilities, sum of outcomes, sum of squared errors
        ``(p - y)**2`` (the columns of ``COUNT_COLUMNS``).

    Examples
    --------
    >>> from sklearn_hemo.metrics import calibration_counts
    >>> calibration_counts([0, 1, 1], [0.05, 0.95, 0.5], n_bins=2)[:, 0]
    array([1., 2.])
    """
    y = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_prob, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true and y_prob differ in length: {y.size} and {p.size}.")
    if np.any(~np.isfinite(p) | (p < 0) | (p > 1)):
        raise ValueError("y_prob must hold probabilities in [0, 1].")
    index = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    counts = np.zeros((n_bins, 4))
    counts[:, 0] = np.bincount(index, minlength=n_bins)
    counts[:, 1] = np.bincount(index, weights=p, minlength=n_bins)
    counts[:, 2] = np.bincount(index, weights=y, minlength=n_bins)
    counts[:, 3] = np.bincount(index, weights=(p - y) ** 2, minlength=n_bins)
    return counts


@validate_params({"counts": ["array-like"]}, prefer_skip_nested_validation=True)
def calibration_summary(counts):
    """Brier score, expected calibration error and prevalence from reliability counts.

    Parameters
    ----------
    counts : array-like of shape (n_bins, 4)
        Output of :func:`calibration_counts` (possibly summed over patients).

    Returns
    -------
    summary : dict
        ``n_voxels``, ``observed_prevalence`` (mean outcome), ``mean_predicted``,
        ``brier`` (mean squared error of the probabilities) and ``ece`` (expected
        calibration error: the voxel-weighted mean over bins of ``|mean predicted -
        observed rate|``); NaN when there are no voxels.

    Examples
    --------
    >>> from sklearn_hemo.metrics import calibration_counts, calibration_summary
    >>> s = calibration_summary(calibration_counts([0, 0, 1, 1], [0.5] * 4))
    >>> s["ece"], s["brier"]
    (0.0, 0.25)
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[1] != 4:
        raise ValueError(f"counts must have shape (n_bins, 4), got {counts.shape}.")
    n = counts[:, 0].sum()
    if n == 0:
        nan = float("nan")
        return {"n_voxels": 0, "observed_prevalence": nan, "mean_predicted": nan,
                "brier": nan, "ece": nan}
    return {
        "n_voxels": int(n),
        "observed_prevalence": float(counts[:, 2].sum() / n),
        "mean_predicted": float(counts[:, 1].sum() / n),
        "brier": float(counts[:, 3].sum() / n),
        "ece": float(np.abs(counts[:, 1] - counts[:, 2]).sum() / n),
    }


@validate_params(
    {"y_true": ["array-like"], "y_prob": ["array-like"],
     "n_bins": [Interval(Integral, 1, None, closed="left")]},
    prefer_skip_nested_validation=True,
)
def expected_calibration_error(y_true, y_prob, *, n_bins=10):
    """Expected calibration error over equal-width bins (Naeini et al. 2015).

    ``sum_b n_b / n * |mean predicted in b - observed rate in b|``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary outcomes.
    y_prob : array-like of shape (n_samples,)
        Probabilities in [0, 1].
    n_bins : int, default=10
        Number of bins.

    Returns
    -------
    ece : float
        In [0, 1].

    Examples
    --------
    >>> from sklearn_hemo.metrics import expected_calibration_error
    >>> round(expected_calibration_error([0, 0, 0, 1], [0.5, 0.5, 0.5, 0.5]), 3)
    0.25
    """
    return calibration_summary(calibration_counts(y_true, y_prob, n_bins=n_bins))["ece"]
