"""Deconvolution of tissue concentration curves by the arterial input function.

Indicator-dilution model (Ostergaard et al., MRM 36:715, 1996): the tissue concentration
is the flow-scaled residue convolved with the arterial concentration,

    C_t(t) = (CBF / 6000) * (C_a (x) R)(t),

with CBF in mL/100 mL/min (6000 = 100 mL * 60 s/min), R(0) = 1 and time in seconds. On
samples ``dt`` apart the convolution reads ``C_t = A @ k`` with ``A = dt * C_a`` arranged
as a convolution matrix and ``k = CBF/6000 * R`` (per second). Truncated singular value
decomposition (SVD) of ``A`` inverts it stably.

All voxels share the AIF, so ``A`` is decomposed once per call and every voxel is one row
of a matrix product: no per-voxel SVD.
"""

from __future__ import annotations

import numbers
from numbers import Real

import numpy as np
from scipy.integrate import trapezoid
from scipy.linalg import circulant, svd, toeplitz
from sklearn.utils import Bunch

from ..utils.fixes import validate_params
from ..utils.validation import check_dt

__all__ = ["perfusion_maps", "deconvolve"]

_METHODS = ("ssvd", "csvd", "osvd")
# Relative singular values below this are numerically zero: never inverted.
_RANK_FLOOR = 1e-10
_CHUNK = 2048



def _check_curves(tissue, aif, dt, method):
    dt = check_dt(dt)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
    tissue = np.asarray(tissue, dtype=float)
    aif = np.asarray(aif, dtype=float)
    if aif.ndim != 1:
        raise ValueError(
            f"aif must be one curve of shape (n_times,), got shape {aif.shape}; pass the "
            "patient's arterial concentration curve."
        )
    if tissue.ndim < 1 or tissue.shape[-1] != aif.shape[0]:
        raise ValueError(
            f"tissue curves (last axis time, shape {tissue.shape}) and aif (shape "
            f"{aif.shape}) must have the same number of time points; resample them to "
            "one grid first (sklearn_hemo.signal)."
        )
    if aif.shape[0] < 3:
        raise ValueError(f"need at least 3 time points, got {aif.shape[0]}.")
    if not np.all(np.isfinite(aif)):
        raise ValueError("aif contains NaN or infinite values; clean or re-detect the AIF.")
    if not np.all(np.isfinite(tissue)):
        bad = np.argwhere(~np.isfinite(tissue))[0]
        raise ValueError(
            f"tissue contains NaN or infinite values (first at index {tuple(bad)}); mask "
            "those voxels out or fix the concentration conversion."
        )
    if trapezoid(aif) <= 0 or aif.max() <= 0:
        raise ValueError(
            "aif has no positive bolus (its area is not positive); check that it is a "
            "concentration curve (not a signal) and that the AIF detection succeeded."
        )
    return tissue, aif, dt


def _convolution_matrix(aif, dt, method):
    """``dt`` times the AIF convolution matrix: Toeplitz for sSVD, circulant otherwise.

    The circulant version zero-pads both curves to ``L = 2N`` (Wu et al., MRM 50:164,
    2003) so that circular convolution equals linear convolution, and a tissue bolus
    arriving *before* or *after* the arterial one only shifts the residue (circularly)
    instead of truncating it: the delay-insensitivity of cSVD and oSVD.
    """
    n = aif.shape[0]
    # Ostergaard et al. (1996) eq. 8: the AIF varies linearly between samples, so each
    # matrix entry is a Simpson-weighted average of three neighbouring AIF samples
    padded = np.concatenate([[0.0], aif, [0.0]])
    aif = (padded[:-2] + 4.0 * padded[1:-1] + padded[2:]) / 6.0
    if method == "ssvd":
        return dt * toeplitz(aif, np.zeros(n))
    return dt * circulant(np.concatenate([aif, np.zeros(n)]))


def _osvd_residues(padded, u, s, vt, oscillation_index, min_threshold):
    """Per-voxel truncation chosen by the oscillation index, evaluated incrementally.

    Components are added in order of decreasing singular value; at each distinct level
    (circulant singular values come in equal pairs) the residues of every voxel and their
    oscillation index (Wu et al. 2003, eq. 10)

        O = 1 / (L f_max) * sum_t |f(t) - 2 f(t-1) + f(t-2)|

    are updated with two small matrix products. A voxel keeps the lowest threshold whose
    residue has ``O <= oscillation_index`` (the smallest P_SVD of Wu's iteration); voxels
    that never get there, including those without a positive residue peak (zero or
    pure-noise curves), keep the strongest truncation.
    """
    n_use = int((s > max(min_threshold, _RANK_FLOOR) * s[0]).sum())
    # ends of the groups of equal singular values, as component counts
    gaps = np.flatnonzero(s[1:n_use] < s[: n_use - 1] * (1 - 1e-9)) + 1
    ends = np.append(gaps, n_use)
    coef = (padded @ u[:, :n_use]) / s[:n_use]
    # the search runs in float32: it only ranks thresholds, and halves memory traffic
    coef32 = coef.astype(np.float32)
    v = vt[:n_use].astype(np.float32)
    d2v = v[:, 2:] - 2 * v[:, 1:-1] + v[:, :-2]
    m, size = padded.shape
    k = np.zeros((m, size), np.float32)
    d2 = np.zeros((m, size - 2), np.float32)
    step_k, step_d2 = np.empty_like(k), np.empty_like(d2)
    chosen = np.full(m, ends[0])
    start = 0
    for end in ends:
        k += np.matmul(coef32[:, start:end], v[start:end], out=step_k)
        d2 += np.matmul(coef32[:, start:end], d2v[start:end], out=step_d2)
        fmax = k.max(axis=1)
        total = np.abs(d2, out=step_d2).sum(axis=1)
        chosen[(total <= oscillation_index * size * fmax) & (fmax > 0)] = end
        start = end
    keep = np.arange(n_use) < chosen[:, None]
    return (coef * keep) @ vt[:n_use]


@validate_params(
    {
        "tissue": ["array-like"],
        "aif": ["array-like"],
        # check_dt names the unit and refuses booleans, strings, NaN and infinity
        "dt": "no_validation",
        # the method's own message lists the methods; its range checks name the fix
        "method": [str],
        "threshold": [Real, None],
        "oscillation_index": [Real],
    },
    prefer_skip_nested_validation=True,
)
def deconvolve(tissue, aif, dt, *, method="osvd", threshold=None, oscillation_index=0.095):
    """Flow-scaled residue functions ``k(t) = CBF/6000 * R(t)`` by truncated SVD.

    Parameters
    ----------
    tissue : array-like of shape (..., n_times)
        Tissue concentration curves, time on the last axis.
    aif : array-like of shape (n_times,)
        Arterial concentration curve on the same time grid.
    dt : float
        Seconds between samples.
    method : {"osvd", "csvd", "ssvd"}, default="osvd"
        ``"ssvd"``: standard truncated SVD of the lower-triangular (Toeplitz) convolution
        matrix (Ostergaard et al. 1996); biased by a tissue-AIF delay. ``"csvd"``: SVD of
        the block-circulant matrix of the zero-padded curves (Wu et al. 2003),
        delay-insensitive. ``"osvd"``: cSVD with a per-voxel threshold chosen by the
        oscillation index (Wu et al. 2003).
    threshold : float or None, default=None
        Singular values below ``threshold * max`` are discarded. None means 0.2 for
        ``ssvd`` (Ostergaard et al. 1996), 0.1 for ``csvd`` (the circulant spectrum decays
        more slowly; 0.2 underestimates high flows beyond OSIPI's tolerance) and 0.0 for
        ``osvd``, where it is the lowest threshold the search may reach.
    oscillation_index : float, default=0.095
        oSVD only: largest accepted oscillation index of a residue (Wu et al. 2003, their
        eq. 10). Lower values smooth more and lower high flows: 0.035, another common
        choice, still passes the OSIPI reference but with larger CBF errors.

    Returns
    -------
    residue : ndarray of shape (..., n_times) or (..., 2 * n_times)
        ``k(t)`` in 1/s; the circulant methods return the zero-padded length, where
        samples past ``n_times`` hold residue mass of tissue boluses arriving *before*
        the AIF (circularly wrapped).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.perfusion import deconvolve
    >>> t = np.arange(60) * 1.0
    >>> aif = np.where(t > 5, (t - 5) ** 3 * np.exp(-(t - 5) / 1.5), 0)
    >>> residue = np.exp(-t / 4.0)
    >>> tissue = 50 / 6000 * np.convolve(aif, residue)[:60]
    >>> k = deconvolve(tissue, aif, 1.0, method="csvd")
    >>> k.shape
    (120,)
    """
    tissue, aif, dt = _check_curves(tissue, aif, dt, method)
    return _deconvolve(tissue, aif, dt, method, threshold, oscillation_index)


def _check_threshold(threshold, method):
    if threshold is None:
        return {"ssvd": 0.2, "csvd": 0.1, "osvd": 0.0}[method]
    if not isinstance(threshold, numbers.Real) or not 0 <= threshold < 1:
        raise ValueError(f"threshold must be a number in [0, 1), got {threshold!r}.")
    return float(threshold)


def _deconvolve(tissue, aif, dt, method, threshold, oscillation_index):
    threshold = _check_threshold(threshold, method)
    if method == "osvd" and (
        not isinstance(oscillation_index, numbers.Real) or oscillation_index <= 0
    ):
        raise ValueError(
            f"oscillation_index must be a positive number, got {oscillation_index!r}."
        )
    n = aif.shape[0]
    lead = tissue.shape[:-1]
    flat = tissue.reshape(-1, n)
    a = _convolution_matrix(aif, dt, method)
    u, s, vt = svd(a)
    size = a.shape[0]
    out = np.empty((flat.shape[0], size))
    if method != "osvd":
        keep = s > max(threshold, _RANK_FLOOR) * s[0]
        # the truncated pseudo-inverse, shared by every voxel
        pinv = (vt[keep].T / s[keep]) @ u[:, keep].T
    for start in range(0, flat.shape[0], _CHUNK):
        block = flat[start : start + _CHUNK]
        if size != n:
            block = np.concatenate([block, np.zeros_like(block)], axis=1)
        if method == "osvd":
            out[start : start + _CHUNK] = _osvd_residues(
                block, u, s, vt, oscillation_index, threshold
            )
        else:
            out[start : start + _CHUNK] = block @ pinv.T
    return out.reshape(*lead, size)


@validate_params(
    {
        "tissue": ["array-like"],
        "aif": ["array-like"],
        # check_dt names the unit and refuses booleans, strings, NaN and infinity
        "dt": "no_validation",
        "method": [str],
        "threshold": [Real, None],
        "oscillation_index": [Real],
        "mask": ["array-like", None],
        # a pair (large_vessel, small_vessel): its own message shows one
        "hematocrit": "no_validation",
        "density": [Real, None],
        "leakage_reference": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def perfusion_maps(
    tissue,
    aif,
    dt,
    *,
    method="osvd",
    threshold=None,
    oscillation_index=0.095,
    mask=None,
    hematocrit=None,
    density=None,
    leakage_reference=None,
):
    """CBF, CBV, MTT and Tmax of concentration curves, by SVD deconvolution.

    Units follow the indicator-dilution convention shared with the simulated cohort
    and OSIPI's DSC reference data: ``C_t(t) = CBF/6000 * (C_a (x) R)(t)``, so that

    - ``CBF = 6000 * max_t k(t)`` in mL/100 mL/min (``k`` the deconvolved flow-scaled
      residue, per second; see :func:`deconvolve`),
    - ``CBV = 100 * area(C_t) / area(C_a)`` in mL/100 mL (trapezoidal areas),
    - ``MTT = 60 * CBV / CBF`` in seconds (central volume theorem),
    - ``Tmax = argmax_t k(t)`` in seconds: the tissue-AIF delay for an undispersed
      bolus. With the circulant methods a residue peak in the wrapped half of the padded
      window means the tissue bolus came *before* the AIF's and gives a negative Tmax.

    When the bolus disperses between the artery and the tissue (a unit-area transport
    function ``D``), the deconvolved residue is ``CBF/6000 * (D (x) R)``, whose peak is
    below ``CBF/6000``: CBF is underestimated by no fault of the deconvolution (Calamante
    et al. 2000). For an exponential ``D`` of time constant ``b`` and ``R = exp(-t/MTT)``
    the peak is ``exp(-t*/MTT)`` with ``t* = ln(MTT/b) b MTT / (MTT - b)``: 0.74 of the
    flow for ``b = 0.5`` s and MTT 4 s, 0.63 for ``b = 1`` s. Truncation under noise
    lowers it further; CBV is unaffected.

    Parameters
    ----------
    tissue : array-like of shape (..., n_times)
        Tissue concentration curves (e.g. a 4D volume), time on the last axis.
    aif : array-like of shape (n_times,)
        Arterial concentration curve on the same time grid, same units.
    dt : float
        Seconds between samples.
    method : {"osvd", "csvd", "ssvd"}, default="osvd"
        Deconvolution method, see :func:`deconvolve`.
    threshold : float or None, default=None
        Relative SVD truncation, see :func:`deconvolve`.
    oscillation_index : float, default=0.095
        oSVD acceptance level of a residue's oscillation index, see :func:`deconvolve`.
    mask : array-like of bool of shape tissue.shape[:-1], default=None
        Voxels to compute; the others are 0 in every map. None computes all.
    hematocrit : tuple (large_vessel, small_vessel) or None, default=None
        Hematocrit correction of CBF and CBV by ``(1 - H_large) / (1 - H_small)``
        (0.45 and 0.25 are common values, factor 0.733). Off by default.
    density : float or None, default=None
        Brain tissue density in g/mL (commonly 1.04); when given, CBF and CBV are
        per 100 g instead of per 100 mL. Off by default.
    leakage_reference : array-like of shape (n_times,) or None, default=None
        When given, the Boxerman-Schmainda-Weisskoff leakage correction is applied first
        against this non-enhancing whole-brain average curve (see
        :func:`nonenhancing_reference`), and every map comes from the corrected curves.

    Returns
    -------
    maps : :class:`~sklearn.utils.Bunch`
        ``cbf`` (mL/100 mL/min), ``cbv`` (mL/100 mL), ``mtt`` (s) and ``tmax`` (s),
        each of shape ``tissue.shape[:-1]``, all finite. MTT is 0 where CBF is 0. With
        ``leakage_reference`` also ``k2`` (1/s, see :func:`estimate_leakage`) and
        ``cbv_uncorrected``.

    References
    ----------
    Ostergaard L. et al., "High resolution measurement of cerebral blood flow using
    intravascular tracer bolus passages. Part I", Magn Reson Med 36:715-725, 1996.
    Wu O. et al., "Tracer arrival timing-insensitive technique for estimating flow in MR
    perfusion-weighted imaging using singular value decomposition with a block-circulant
    deconvolution matrix", Magn Reson Med 50:164-174, 2003.
    Calamante F., Gadian D. G., Connelly A., "Delay and dispersion effects in dynamic
    susceptibility contrast MRI: simulations using singular value decomposition", Magn
    Reson Med 44:466-473, 2000.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.perfusion import perfusion_maps
    >>> t = np.arange(0, 60, 0.1)               # fine grid for the exact convolution
    >>> aif = np.where(t > 5, (t - 5) ** 3 * np.exp(-(t - 5) / 1.5), 0)
    >>> residue = np.exp(-t / 4.0)                # MTT 4 s, CBF 50: CBV 3.33
    >>> tissue = 50 / 6000 * 0.1 * np.convolve(aif, residue)[:600]
    >>> maps = perfusion_maps(tissue[::10], aif[::10], 1.0)   # sampled every second
    >>> sorted(maps)
    ['cbf', 'cbv', 'mtt', 'tmax']
    >>> round(float(maps.cbv), 2)
    3.37
    >>> round(float(maps.cbf), 1)  # truncated SVD smooths the 4 s residue's peak at 1 s
    43.7
    """
    tissue, aif, dt = _check_curves(tissue, aif, dt, method)
    factor = _correction_factor(hematocrit, density)
    lead = tissue.shape[:-1]
    if mask is None:
        selected = tissue.reshape(-1, aif.shape[0])
    else:
        mask = np.asarray(mask)
        if mask.shape != lead:
            raise ValueError(
                f"mask has shape {mask.shape}, expected the tissue's spatial shape {lead}."
            )
        mask = mask.astype(bool)
        selected = tissue[mask]
    extra = {}
    if leakage_reference is not None:
        from ._leakage import correct_leakage, estimate_leakage

        fit = estimate_leakage(selected, leakage_reference, dt)
        extra["k2"] = fit.k2
        extra["cbv_uncorrected"] = (
            factor * 100.0 * trapezoid(selected, axis=-1) / trapezoid(aif)
        )
        selected = correct_leakage(selected, leakage_reference, dt, fit.k2)
    k = _deconvolve(selected, aif, dt, method, threshold, oscillation_index)
    n, size = aif.shape[0], k.shape[-1]
    peak = k.argmax(axis=-1)
    # wrapped peaks (circulant methods): tissue bolus earlier than the arterial one
    lag = np.where(peak < n, peak, peak - size)
    cbf = factor * 6000.0 * np.maximum(k.max(axis=-1), 0.0)
    cbv = factor * 100.0 * trapezoid(selected, axis=-1) / trapezoid(aif)
    with np.errstate(divide="ignore", invalid="ignore"):
        mtt = np.where(cbf > 0, 60.0 * cbv / cbf, 0.0)
    values = {"cbf": cbf, "cbv": cbv, "mtt": mtt, "tmax": lag * dt, **extra}
    maps = Bunch()
    for name, value in values.items():
        if mask is None:
            maps[name] = value.reshape(lead)
        else:
            full = np.zeros(lead)
            full[mask] = value
            maps[name] = full
    return maps


def _correction_factor(hematocrit, density):
    factor = 1.0
    if hematocrit is not None:
        try:
            large, small = (float(h) for h in hematocrit)
        except (TypeError, ValueError):
            raise ValueError(
                "hematocrit must be a pair (large_vessel, small_vessel), e.g. (0.45, 0.25), "
                f"got {hematocrit!r}."
            ) from None
        if not (0 <= large < 1 and 0 <= small < 1):
            raise ValueError(f"hematocrit values must lie in [0, 1), got {hematocrit!r}.")
        factor *= (1 - large) / (1 - small)
    if density is not None:
        if not isinstance(density, numbers.Real) or not density > 0:
            raise ValueError(f"density must be a positive number in g/mL, got {density!r}.")
        factor /= float(density)
    return factor
