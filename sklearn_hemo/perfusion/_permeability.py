"""Curve-shape permeability measures used to predict hemorrhagic transformation.

Scalzo et al. (Magn Reson Imaging 31:961, 2013) predicted HT from permeability features
read directly off the DSC curves of the lesion: the contrast slope of the late phase,
the final contrast, the maximum concentration, the area of the bolus peak and the
percentage of signal recovery. The operational definitions below are this package's,
written so that every measure is a vectorised reduction over the time axis.
"""

from __future__ import annotations

import numbers
from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch

from ..utils.fixes import validate_params
from ..utils.validation import check_dt

__all__ = ["permeability_measures"]


def _check_fraction(value, name):
    if not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value!r}.")
    return float(value)


def _tail(n, fraction, minimum):
    return min(n, max(minimum, int(round(fraction * n))))


@validate_params(
    {
        "concentration": ["array-like"],
        # check_dt names the unit and refuses booleans, strings, NaN and infinity
        "dt": "no_validation",
        "signal": ["array-like", None],
        "n_baseline": [Integral, None],
        "late_fraction": [Real],
        "final_fraction": [Real],
    },
    prefer_skip_nested_validation=True,
)
def permeability_measures(
    concentration,
    dt,
    *,
    signal=None,
    n_baseline=None,
    late_fraction=1 / 3,
    final_fraction=0.1,
):
    """Permeability measures of DSC curves (contrast slope, final contrast, ...).

    With ``C(t)`` the concentration, ``p`` its maximum frame and ``n`` frames:

    - ``max_concentration``: ``C(p)``, the peak height.
    - ``peak_bolus_area``: trapezoidal area (concentration x s) of ``C`` over the bolus
      peak, the contiguous frames around ``p`` where ``C >= C(p) / 2``.
    - ``contrast_slope``: least-squares slope (concentration per s) of ``C`` over the
      late phase, the last ``late_fraction`` of the frames; leakage of contrast into the
      tissue makes it depart from the slow wash-out of intact tissue.
    - ``final_contrast``: mean ``C`` over the last ``final_fraction`` of the frames
      (at least 2), the residual contrast at the end of the acquisition.
    - ``psr`` (only with ``signal``): percentage of signal recovery,
      ``100 (S1 - Smin) / (S0 - Smin)``, with ``S0`` the mean pre-bolus signal (first
      ``n_baseline`` frames), ``Smin`` the minimum and ``S1`` the mean of the final frames
      (Lupo et al. 2005). A curve without signal drop (``S0 <= Smin``) has PSR 100.

    Parameters
    ----------
    concentration : array-like of shape (..., n_times)
        Concentration (Delta R2*) curves, time on the last axis.
    dt : float
        Seconds between samples.
    signal : array-like of shape (..., n_times) or None, default=None
        The source DSC signal of the same voxels; needed for ``psr`` only.
    n_baseline : int or None, default=None
        Pre-bolus frames of ``signal``; None takes ``max(2, n_times // 12)`` (5 of the
        paper's 60 frames, 9 s at 1.8 s).
    late_fraction : float in (0, 1], default=1/3
        Share of final frames making up the late phase of ``contrast_slope``.
    final_fraction : float in (0, 1], default=0.1
        Share of final frames averaged for ``final_contrast`` and ``S1``.

    Returns
    -------
    measures : :class:`~sklearn.utils.Bunch`
        ``contrast_slope``, ``final_contrast``, ``max_concentration``,
        ``peak_bolus_area`` and, with ``signal``, ``psr``; each of shape
        ``concentration.shape[:-1]`` and finite.

    References
    ----------
    Scalzo F. et al., "Multi-center prediction of hemorrhagic transformation in acute
    ischemic stroke using permeability imaging features", Magn Reson Imaging 31:961-969,
    2013.
    Lupo J.M. et al., "Dynamic susceptibility-weighted perfusion imaging of high-grade
    gliomas: characterization of spatial heterogeneity", AJNR 26:1446-1454, 2005.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.perfusion import permeability_measures
    >>> t = np.arange(60) * 1.8
    >>> c = np.where(t > 10, (t - 10) ** 3 * np.exp(-(t - 10) / 2.0), 0) / 50
    >>> m = permeability_measures(c + 0.002 * t, 1.8, signal=500 * np.exp(-0.03 * c))
    >>> round(float(m.contrast_slope), 4), round(float(m.psr))
    (0.002, 100)
    """
    dt = check_dt(dt)
    conc = np.asarray(concentration, dtype=float)
    if conc.ndim < 1 or conc.shape[-1] < 3:
        raise ValueError(
            f"concentration must have at least 3 time points on its last axis, got shape "
            f"{conc.shape}."
        )
    if not np.all(np.isfinite(conc)):
        raise ValueError("concentration contains NaN or infinite values.")
    late_fraction = _check_fraction(late_fraction, "late_fraction")
    final_fraction = _check_fraction(final_fraction, "final_fraction")
    lead, n = conc.shape[:-1], conc.shape[-1]
    c = conc.reshape(-1, n)
    t = np.arange(n) * dt
    idx = np.arange(n)

    peak = c.argmax(axis=1)
    cmax = c[np.arange(c.shape[0]), peak]
    below = c < (cmax / 2)[:, None]
    left = np.where(below & (idx < peak[:, None]), idx, -1).max(axis=1) + 1
    right = np.where(below & (idx > peak[:, None]), idx, n).min(axis=1) - 1
    window = (idx >= left[:, None]) & (idx <= right[:, None])
    rows = np.arange(c.shape[0])
    # trapezoid over the window: full weight inside, half weight at both ends
    area = dt * ((c * window).sum(axis=1) - 0.5 * (c[rows, left] + c[rows, right]))

    n_late = _tail(n, late_fraction, 2)
    t_late = t[-n_late:] - t[-n_late:].mean()
    slope = (c[:, -n_late:] @ t_late) / (t_late @ t_late)

    n_final = _tail(n, final_fraction, 2)
    out = Bunch(
        contrast_slope=slope.reshape(lead),
        final_contrast=c[:, -n_final:].mean(axis=1).reshape(lead),
        max_concentration=cmax.reshape(lead),
        peak_bolus_area=area.reshape(lead),
    )
    if signal is not None:
        out["psr"] = _psr(signal, conc.shape, n_baseline, n_final)
    return out


def _psr(signal, shape, n_baseline, n_final):
    s = np.asarray(signal, dtype=float)
    if s.shape != shape:
        raise ValueError(
            f"signal has shape {s.shape}, expected that of the concentration {shape}."
        )
    if not np.all(np.isfinite(s)):
        raise ValueError("signal contains NaN or infinite values.")
    n = shape[-1]
    if n_baseline is None:
        n_baseline = max(2, n // 12)
    if not isinstance(n_baseline, numbers.Integral) or not 1 <= n_baseline < n:
        raise ValueError(
            f"n_baseline must be an integer number of pre-bolus frames in [1, {n}), got "
            f"{n_baseline!r}."
        )
    s = s.reshape(-1, n)
    s0 = s[:, :n_baseline].mean(axis=1)
    smin = s.min(axis=1)
    s1 = s[:, -n_final:].mean(axis=1)
    drop = s0 - smin
    with np.errstate(divide="ignore", invalid="ignore"):
        psr = np.where(drop > 0, 100.0 * (s1 - smin) / drop, 100.0)
    return psr.reshape(shape[:-1])
