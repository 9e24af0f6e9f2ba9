"""Contrast leakage: the Boxerman-Schmainda-Weisskoff (BSW) model.

Where the blood-brain barrier is disrupted, gadolinium leaks into the tissue; its T1
shortening lifts the late DSC signal, so the apparent concentration falls below the
purely intravascular curve. Boxerman et al. (AJNR 27:859, 2006) model a voxel's curve as
a scaled copy of the whole-brain average of *non-enhancing* voxels minus a leakage term
growing with its time integral,

    C(t) = K1 * Cbar(t) - K2 * integral_0^t Cbar(s) ds,

fit K1 and K2 by linear least squares, and add ``K2 * integral Cbar`` back to obtain the
leakage-corrected curve, whose area gives the corrected CBV.
"""

from __future__ import annotations

import numbers
from numbers import Real

import numpy as np
from scipy.integrate import cumulative_trapezoid, trapezoid
from sklearn.utils import Bunch

from ..utils.fixes import validate_params
from ..utils.validation import check_dt

__all__ = [
    "estimate_leakage",
    "estimate_leakage_arrival",
    "correct_leakage",
    "nonenhancing_reference",
]


def _check_reference(tissue, reference, dt):
    dt = check_dt(dt)
    tissue = np.asarray(tissue, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if reference.ndim != 1 or tissue.ndim < 1 or tissue.shape[-1] != reference.shape[0]:
        raise ValueError(
            f"reference must be one curve with as many time points as the tissue curves "
            f"(last axis); got reference {reference.shape} and tissue {tissue.shape}. "
            "Compute it with nonenhancing_reference."
        )
    if not (np.all(np.isfinite(reference)) and np.all(np.isfinite(tissue))):
        raise ValueError("tissue and reference curves must be finite (no NaN or inf).")
    if not trapezoid(reference) > 0:
        raise ValueError(
            "reference curve has no positive area: it must be the average concentration "
            "of non-enhancing brain voxels (see nonenhancing_reference)."
        )
    return tissue, reference, dt


@validate_params(
    {
        "tissue": ["array-like"],
        "reference": ["array-like"],
        # check_dt names the unit and refuses booleans, strings, NaN and infinity
        "dt": "no_validation",
    },
    prefer_skip_nested_validation=True,
)
def estimate_leakage(tissue, reference, dt):
    """Boxerman-Schmainda-Weisskoff leakage fit ``C = K1 Cbar - K2 int Cbar``.

    Parameters
    ----------
    tissue : array-like of shape (..., n_times)
        Concentration (Delta R2*) curves, time on the last axis.
    reference : array-like of shape (n_times,)
        ``Cbar``: whole-brain average of non-enhancing voxels (see
        :func:`nonenhancing_reference`).
    dt : float
        Seconds between samples.

    Returns
    -------
    fit : :class:`~sklearn.utils.Bunch`
        ``k1`` (dimensionless, relative blood volume against the reference) and ``k2``
        (1/s; positive for T1-dominated leakage, which lowers the apparent
        concentration, negative for T2*-dominated leakage), each of shape
        ``tissue.shape[:-1]``.

    References
    ----------
    Boxerman J.L., Schmainda K.M., Weisskoff R.M., "Relative cerebral blood volume maps
    corrected for contrast agent extravasation significantly correlate with glioma tumor
    grade, whereas uncorrected maps do not", AJNR 27:859-867, 2006.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.perfusion import estimate_leakage
    >>> t = np.arange(60) * 1.5
    >>> ref = np.where(t > 10, (t - 10) ** 3 * np.exp(-(t - 10) / 2.0), 0) / 50
    >>> integral = np.concatenate([[0], np.cumsum((ref[1:] + ref[:-1]) / 2 * 1.5)])
    >>> leaky = 1.2 * ref - 0.01 * integral
    >>> fit = estimate_leakage(leaky, ref, 1.5)
    >>> round(float(fit.k1), 3), round(float(fit.k2), 4)
    (1.2, 0.01)
    """
    tissue, reference, dt = _check_reference(tissue, reference, dt)
    integral = cumulative_trapezoid(reference, dx=dt, initial=0.0)
    design = np.column_stack([reference, -integral])
    # one pseudo-inverse for every voxel: the design depends on the reference only
    coef = tissue.reshape(-1, reference.shape[0]) @ np.linalg.pinv(design).T
    lead = tissue.shape[:-1]
    return Bunch(k1=coef[:, 0].reshape(lead), k2=coef[:, 1].reshape(lead))


def _arrived(reference, dt, delay, dispersion):
    """The reference as it reaches a voxel: shifted by ``delay`` s, then dispersed by a
    unit-area exponential kernel of time constant ``dispersion`` s (0: none)."""
    n = reference.shape[0]
    t = np.arange(n) * dt
    shifted = np.interp(t - delay, t, reference, left=0.0, right=reference[-1])
    if dispersion > 0:
        kernel = np.exp(-t / dispersion)
        shifted = np.convolve(shifted, kernel / kernel.sum())[:n]
    return shifted


@validate_params(
    {
        "tissue": ["array-like"],
        "reference": ["array-like"],
        # check_dt names the unit and refuses booleans, strings, NaN and infinity
        "dt": "no_validation",
        # a scalar is one delay or dispersion
        "delays": ["array-like", Real, None],
        "dispersions": ["array-like", Real],
    },
    prefer_skip_nested_validation=True,
)
def estimate_leakage_arrival(tissue, reference, dt, *, delays=None,
                             dispersions=(0.0, 1.0, 2.0, 4.0, 8.0)):
    """Leakage K2 fitted against the reference *as it arrives in each voxel*.

    The BSW fit of :func:`estimate_leakage` assumes that every voxel's curve has the
    timing of the whole-brain reference. A lesion curve that arrives later and is
    dispersed then leaves a residual that the integral term absorbs, so K2 is biased
    (negative for late arrival) by more than the leakage itself. Following the idea of
    Bjornerud et al. (JCBFM 31:2041, 2011), who estimate K2 with the tissue's own
    arrival and residue shape, this fit shifts and disperses the reference for every
    voxel: for each ``(delay, dispersion)`` on a grid, ``C = K1 Cref' - K2 int Cref'`` is
    solved by least squares with ``Cref'`` the delayed, dispersed reference, and every
    voxel keeps the fit with the smallest residual.

    Parameters
    ----------
    tissue : array-like of shape (..., n_times)
        Concentration curves, time on the last axis.
    reference : array-like of shape (n_times,)
        Whole-brain average of non-enhancing voxels (:func:`nonenhancing_reference`).
    dt : float
        Seconds between samples.
    delays : array-like or None, default=None
        Candidate arrival delays in seconds relative to the reference; None takes -4 s
        to +16 s in steps of half a frame.
    dispersions : sequence of float, default=(0, 1, 2, 4, 8)
        Candidate dispersion time constants in seconds.

    Returns
    -------
    fit : :class:`~sklearn.utils.Bunch`
        ``k1``, ``k2`` (1/s, positive for T1-dominated leakage), ``delay`` and
        ``dispersion`` (s) of the best fit, each of shape ``tissue.shape[:-1]``.

    See Also
    --------
    estimate_leakage : The BSW fit against the undelayed reference.

    References
    ----------
    Bjornerud A., Sorensen A.G., Mouridsen K., Emblem K.E., "T1- and T2*-dominant
    extravasation correction in DSC-MRI: Part I - theoretical considerations and
    implications for assessment of tumor hemodynamic properties", JCBFM 31:2041-2053,
    2011.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.integrate import cumulative_trapezoid
    >>> from sklearn_hemo.perfusion import estimate_leakage, estimate_leakage_arrival
    >>> t = np.arange(60) * 1.5
    >>> bolus = lambda s: np.where(t > s, (t - s) ** 3 * np.exp(-(t - s) / 2.0), 0) / 50
    >>> ref, late = bolus(10.0), bolus(16.0)      # the voxel's bolus arrives 6 s later
    >>> leaky = 1.2 * late - 0.01 * cumulative_trapezoid(late, dx=1.5, initial=0)
    >>> round(float(estimate_leakage(leaky, ref, 1.5).k2), 3)   # the delay biases it
    -0.002
    >>> fit = estimate_leakage_arrival(leaky, ref, 1.5)
    >>> round(float(fit.k2), 3), float(fit.delay)
    (0.01, 6.0)
    """
    tissue, reference, dt = _check_reference(tissue, reference, dt)
    if delays is None:
        step = dt / 2  # a grid through 0 (no shift), half a frame apart
        delays = step * np.arange(np.floor(-4.0 / step), np.ceil(16.0 / step) + 1)
    delays = np.atleast_1d(np.asarray(delays, dtype=float))
    dispersions = np.atleast_1d(np.asarray(dispersions, dtype=float))
    if delays.size == 0 or dispersions.size == 0 or (dispersions < 0).any():
        raise ValueError(
            "delays and dispersions must be non-empty and dispersions non-negative; got "
            f"delays={delays.tolist()} and dispersions={dispersions.tolist()}.")
    curves = tissue.reshape(-1, reference.shape[0])
    best = np.full(curves.shape[0], np.inf)
    out = np.zeros((4, curves.shape[0]))
    for delay in delays:
        for dispersion in dispersions:
            arrived = _arrived(reference, dt, delay, dispersion)
            integral = cumulative_trapezoid(arrived, dx=dt, initial=0.0)
            design = np.column_stack([arrived, -integral])
            coef = curves @ np.linalg.pinv(design).T
            residual = ((curves - coef @ design.T) ** 2).sum(axis=1)
            better = residual < best
            best[better] = residual[better]
            out[:2, better] = coef[better].T
            out[2, better], out[3, better] = delay, dispersion
    lead = tissue.shape[:-1]
    return Bunch(k1=out[0].reshape(lead), k2=out[1].reshape(lead),
                 delay=out[2].reshape(lead), dispersion=out[3].reshape(lead))


@validate_params(
    {
        "tissue": ["array-like"],
        "reference": ["array-like"],
        # check_dt names the unit and refuses booleans, strings, NaN and infinity
        "dt": "no_validation",
        # one per curve; a scalar for a single curve
        "k2": ["array-like", Real, None],
    },
    prefer_skip_nested_validation=True,
)
def correct_leakage(tissue, reference, dt, k2=None):
    """Leakage-corrected curves ``C(t) + K2 * integral_0^t Cbar`` (Boxerman et al. 2006).

    Parameters
    ----------
    tissue : array-like of shape (..., n_times)
        Concentration curves.
    reference : array-like of shape (n_times,)
        Non-enhancing whole-brain average curve.
    dt : float
        Seconds between samples.
    k2 : array-like of shape tissue.shape[:-1] or None, default=None
        Leakage coefficients; estimated with :func:`estimate_leakage` when None.

    Returns
    -------
    corrected : ndarray of shape tissue.shape
        Curves with the leakage term removed; their area over the AIF's gives the
        leakage-corrected CBV.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.perfusion import correct_leakage
    >>> t = np.arange(60) * 1.5
    >>> ref = np.where(t > 10, (t - 10) ** 3 * np.exp(-(t - 10) / 2.0), 0) / 50
    >>> integral = np.concatenate([[0], np.cumsum((ref[1:] + ref[:-1]) / 2 * 1.5)])
    >>> corrected = correct_leakage(1.2 * ref - 0.01 * integral, ref, 1.5)
    >>> bool(np.allclose(corrected, 1.2 * ref))
    True
    """
    tissue, reference, dt = _check_reference(tissue, reference, dt)
    if k2 is None:
        k2 = estimate_leakage(tissue, reference, dt).k2
    k2 = np.asarray(k2, dtype=float)
    if k2.shape != tissue.shape[:-1]:
        raise ValueError(f"k2 has shape {k2.shape}, expected {tissue.shape[:-1]}.")
    integral = cumulative_trapezoid(reference, dx=dt, initial=0.0)
    return tissue + k2[..., None] * integral


@validate_params(
    {
        "tissue": ["array-like"],
        # check_dt names the unit and refuses booleans, strings, NaN and infinity
        "dt": "no_validation",
        "mask": ["array-like", None],
        "exclude": [Real],
    },
    prefer_skip_nested_validation=True,
)
def nonenhancing_reference(tissue, dt, *, mask=None, exclude=0.1):
    """Whole-brain average curve of non-enhancing voxels, the BSW reference ``Cbar``.

    Boxerman et al. (2006) average voxels that do not enhance on post-contrast T1. Without
    a T1 image, this function approximates them in two passes: average the curves of
    ``mask``, fit the BSW model of every voxel against that average, then average again
    without the ``exclude`` fraction of voxels with the largest ``|K2|``.

    Parameters
    ----------
    tissue : array-like of shape (..., n_times)
        Concentration curves (e.g. a 4D volume).
    dt : float
        Seconds between samples.
    mask : array-like of bool of shape tissue.shape[:-1] or None, default=None
        Brain voxels to consider; None takes every voxel whose curve has a positive area.
    exclude : float in [0, 1), default=0.1
        Fraction of candidate voxels, the most leaky, left out of the second average.

    Returns
    -------
    reference : ndarray of shape (n_times,)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.perfusion import nonenhancing_reference
    >>> t = np.arange(40) * 1.5
    >>> bolus = np.where(t > 10, (t - 10) ** 3 * np.exp(-(t - 10) / 2.0), 0) / 50
    >>> intact = np.outer(np.linspace(0.5, 1.5, 18), bolus)    # average: bolus
    >>> leaky = bolus - np.outer([0.01, 0.02], np.cumsum(bolus) * 1.5)
    >>> curves = np.vstack([intact, leaky])
    >>> bool(np.allclose(nonenhancing_reference(curves, 1.5), bolus))
    True
    >>> bool(np.allclose(curves.mean(axis=0), bolus))    # the plain average is biased
    False
    """
    dt = check_dt(dt)
    tissue = np.asarray(tissue, dtype=float)
    if not isinstance(exclude, numbers.Real) or not 0 <= exclude < 1:
        raise ValueError(f"exclude must be a fraction in [0, 1), got {exclude!r}.")
    if mask is None:
        curves = tissue.reshape(-1, tissue.shape[-1])
        curves = curves[trapezoid(curves, axis=-1) > 0]
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != tissue.shape[:-1]:
            raise ValueError(
                f"mask has shape {mask.shape}, expected the tissue's spatial shape "
                f"{tissue.shape[:-1]}."
            )
        curves = tissue[mask]
    if curves.shape[0] == 0 or not np.all(np.isfinite(curves)):
        raise ValueError(
            "no usable voxels for the reference curve: the mask is empty, no curve has a "
            "positive area, or curves are not finite. Pass the brain mask of "
            "concentration curves."
        )
    first = curves.mean(axis=0)
    if exclude == 0 or not trapezoid(first) > 0:
        return first
    k2 = np.abs(estimate_leakage(curves, first, dt).k2)
    keep = k2 <= np.quantile(k2, 1.0 - exclude)
    return curves[keep].mean(axis=0)
