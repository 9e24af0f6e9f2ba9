"""From source DSC signal to concentration curves on a common time grid, and the AIF.

This module holds the signal processing that Yu et al. (MICCAI 2019) applied before
learning: the concentration ``C(t) = -(1/TE) ln(I(t) / I0)`` with ``I0`` the mean of the
pre-bolus frames, linear interpolation of every curve onto 60 points 1.8 s apart, and the
arterial input function (AIF), given with the patient (``aif.tsv``) or detected in the
brain.

Conventions
-----------
* Time is the last axis of every array of curves: ``(..., n_frames)``.
* Times are seconds from the start of the PWI scan; the first frame is at t = 0.
* Concentration is the change of transverse relaxation rate ``Delta R2*`` in 1/s (the
  proportionality constant between ``Delta R2*`` and contrast-agent concentration is
  taken as 1, as in :mod:`sklearn_hemo.datasets`).
* Float32 input stays float32 (a paper-sized patient holds 20 million samples); other
  inputs are computed in float64.

Package-internal steps
----------------------
The functions without a leading underscore that are not in ``__all__``
(:func:`patient_timing`, :func:`steady_frame_times`, :func:`patient_grid_offset`,
:func:`patient_time_plan`, :func:`padding_note`, :func:`patient_aif_on_grid`,
:func:`patient_aif_detection`, and the unchecked kernels :func:`concentration_unchecked`,
:func:`time_grid` and :func:`apply_interp_plan`) are the steps the feature extractors
(:mod:`sklearn_hemo.preprocessing`), the perfusion maps (:mod:`sklearn_hemo.perfusion`)
and quality control (:mod:`sklearn_hemo.qc`) share, so that all three read a patient the
same way. They are not part of the public API and may change between releases.
"""

from __future__ import annotations

import numbers
import os
import warnings
from numbers import Integral, Real

import numpy as np
from scipy.integrate import trapezoid
from sklearn.utils import Bunch, check_random_state

from ._config import VOF_ENV, env_switch
from .datasets import ArterialInputFunction, Patient
from .utils._warnings import find_stack_level
from .utils.fixes import StrOptions, validate_params
from .utils.validation import check_integer

__all__ = [
    "aif_curve",
    "aif_from_tsv",
    "bolus_arrival",
    "concentration",
    "detect_aif",
    "detect_vof",
    "patient_aif",
    "resample_time",
    "steady_state_frames",
]


# -- helpers -------------------------------------------------------------------------------
def _as_float(values, name):
    """``values`` as a float array (float32 kept), refusing NaN and infinity."""
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {values.dtype}.")
    dtype = np.float32 if values.dtype == np.float32 else np.float64
    values = values.astype(dtype, copy=False)
    if values.ndim == 0 or values.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one time frame on its last axis, got "
                         f"shape {values.shape}.")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values. Replace them (for example "
                         "by interpolating the missing frames) before calling this function.")
    return values


def _check_times(times, n_frames, name="times"):
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or times.size != n_frames:
        raise ValueError(f"{name} must be 1D with one time per frame ({n_frames}), got shape "
                         f"{times.shape}.")
    if not np.isfinite(times).all() or np.any(np.diff(times) <= 0):
        raise ValueError(f"{name} must be finite and strictly increasing (seconds from the "
                         "start of the scan).")
    return times


def _check_positive(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 \
            or not np.isfinite(value):
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    return float(value)



# -- bolus arrival -------------------------------------------------------------------------
# The numbers below are constrained to their type only (Real, Integral): the functions' own
# checks then give the range, refuse booleans and NaN, and name the fix.
@validate_params(
    {
        "curves": ["array-like"],
        "kind": [StrOptions({"signal", "concentration"})],
        "threshold": [Real],
        "n_sigma": [Real],
    },
    prefer_skip_nested_validation=True,
)
def bolus_arrival(curves, *, kind="signal", threshold=0.05, n_sigma=3.0):
    """Number of pre-bolus frames of each curve (the index of its first bolus frame).

    The bolus is located at the deepest signal drop (``kind="signal"``) or the highest
    concentration (``kind="concentration"``), frame ``p``. The reference level is the mean
    of the first half of the frames before ``p`` (the baseline holds most of them: the
    first-pass rise lasts a few seconds), its noise the standard deviation of those
    frames. Walking back from ``p``, the bolus starts at the first frame of the contiguous
    run whose deviation from the reference exceeds both ``threshold`` times the deviation
    at ``p`` and ``n_sigma`` times the noise.

    On the mean curve of many voxels (as :func:`concentration` with ``baseline="auto"``
    uses it) the noise is small, so the arrival is the foot of the earliest first passes.

    Parameters
    ----------
    curves : array-like of shape (..., n_frames)
        Source signal or concentration curves, time on the last axis.
    kind : {"signal", "concentration"}, default="signal"
        Whether the bolus is a drop (signal) or a rise (concentration).
    threshold : float in (0, 1), default=0.05
        Fraction of the bolus depth that marks its arrival.
    n_sigma : float >= 0, default=3.0
        Multiple of the baseline noise that marks its arrival.

    Returns
    -------
    arrival : int or ndarray of int with shape ``curves.shape[:-1]``
        Between 1 and ``n_frames``: the first frame always counts as pre-bolus (the
        ``I(0)`` of Yu et al.), and ``n_frames`` means that no bolus was found (a flat
        curve), so the whole series is baseline.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.signal import bolus_arrival
    >>> signal = np.array([100, 101, 99, 100, 90, 60, 70, 95, 99, 100.0])
    >>> int(bolus_arrival(signal))
    4
    """
    if kind not in ("signal", "concentration"):
        raise ValueError(f"kind must be 'signal' or 'concentration', got {kind!r}.")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) \
            or not 0 < threshold < 1:
        raise ValueError(f"threshold must be a number in (0, 1), got {threshold!r}.")
    if isinstance(n_sigma, bool) or not isinstance(n_sigma, numbers.Real) or not n_sigma >= 0:
        raise ValueError(f"n_sigma must be a number >= 0, got {n_sigma!r}.")
    values = _as_float(curves, "curves").astype(np.float64)
    if kind == "signal":
        values = -values  # make the bolus a rise in both cases
    shape = values.shape[:-1]
    n_frames = values.shape[-1]
    values = values.reshape(-1, n_frames)
    rows = np.arange(values.shape[0])
    peak = np.argmax(values, axis=1)
    # reference: frames [0, ceil(peak / 2)), at least the first frame
    n_ref = np.maximum((peak + 1) // 2, 1)
    frames = np.arange(n_frames)
    in_ref = frames[None, :] < n_ref[:, None]
    reference = np.where(in_ref, values, 0).sum(axis=1) / n_ref
    deviation = values - reference[:, None]
    noise = np.sqrt(np.where(in_ref, deviation**2, 0).sum(axis=1) / n_ref)
    depth = deviation[rows, peak]
    level = np.maximum(threshold * depth, n_sigma * noise)
    quiet = (deviation <= level[:, None]) & (frames[None, :] < peak[:, None])
    last_quiet = np.where(quiet, frames[None, :], -1).max(axis=1)
    arrival = np.maximum(last_quiet + 1, 1)
    arrival[depth <= level] = n_frames  # flat, or no bolus above the noise
    arrival = arrival.reshape(shape)
    return int(arrival) if arrival.ndim == 0 else arrival


# -- steady state --------------------------------------------------------------------------
@validate_params(
    {"signal": ["array-like"], "n_sigma": [Real], "min_excess": [Real]},
    prefer_skip_nested_validation=True,
)
def steady_state_frames(signal, *, n_sigma=5.0, min_excess=0.02):
    """Number of leading frames acquired before the magnetisation reached steady state.

    The first frames of an EPI series are often brighter than the rest of the baseline
    (T1 saturation has not settled). Kept in the pre-bolus baseline they raise ``I0``,
    which shifts every concentration curve upward (a positive "concentration" before the
    bolus) and inflates CBV. The curves given are averaged into one mean curve; its
    steady baseline level is the median of the second half of the frames before the
    bolus arrival (:func:`bolus_arrival`, on the curve clipped from above at its median
    pre-peak level so that the bright frames do not hide the bolus), its
    noise the robust (MAD) spread of its frame-to-frame differences there. Leading
    frames count as non-steady, from the first one on and as long as they exceed that
    level by more than both ``n_sigma`` times the noise and ``min_excess`` times the
    level. At most half of the pre-bolus frames are counted.

    Parameters
    ----------
    signal : array-like of shape (..., n_frames)
        Source DSC signal (a curve, voxel curves or a 4D volume of brain voxels), time on
        the last axis.
    n_sigma : float >= 0, default=5.0
        Margin over the baseline in multiples of its noise.
    min_excess : float >= 0, default=0.02
        Margin over the baseline as a fraction of its level (a slow drift of the signal,
        e.g. from head motion, stays below it).

    Returns
    -------
    n_nonsteady : int
        Number of leading frames to drop (0 when the series starts at steady state).

    See Also
    --------
    sklearn_hemo.qc.patient_qc : the count used for a patient (on its mean brain signal;
        ``pwi.json``'s ``NonSteadyStateFrames`` takes precedence).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.signal import steady_state_frames
    >>> signal = np.array([140, 112, 100, 101, 99, 100, 100, 70, 60, 85, 97, 99.0])
    >>> steady_state_frames(signal)
    2
    >>> steady_state_frames(signal[2:])
    0
    """
    for name, value in (("n_sigma", n_sigma), ("min_excess", min_excess)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
    values = _as_float(signal, "signal").astype(np.float64)
    n_frames = values.shape[-1]
    mean = values.reshape(-1, n_frames).mean(axis=0)
    return _leading_excess(mean, n_sigma, min_excess)[0]


def _leading_excess(mean, n_sigma=5.0, min_excess=0.02):
    """Leading non-steady frame count of a mean signal curve, and its reference level."""
    n_frames = mean.size
    if n_frames < 4:
        return 0, float(mean[0])
    # bright leading frames would inflate the reference and the noise of the bolus
    # arrival (its foot, not its peak, bounds the baseline): clip the curve from above at
    # the median level before its deepest drop (the bolus is a drop: unchanged)
    peak = int(np.argmin(mean))
    ceiling = float(np.median(mean[: max(peak, 1)]))
    arrival = bolus_arrival(np.minimum(mean, ceiling), kind="signal")
    if arrival >= n_frames:  # no bolus: the whole series is baseline
        arrival = n_frames
    cap = arrival // 2
    window = mean[cap:arrival]
    if cap < 1 or window.size < 2:
        return 0, float(mean[min(cap, n_frames - 1)])
    level = float(np.median(window))
    diffs = np.diff(window)
    noise = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / np.sqrt(2)
    margin = max(n_sigma * noise, min_excess * abs(level))
    count = 0
    while count < cap and mean[count] > level + margin:
        count += 1
    return count, level


def _baseline_slice(values, baseline):
    """Frames of the pre-bolus baseline as a slice, from the ``baseline`` argument."""
    n_frames = values.shape[-1]
    if baseline is None or (isinstance(baseline, str) and baseline == "auto"):
        mean_curve = values.reshape(-1, n_frames).mean(axis=0)
        return slice(0, bolus_arrival(mean_curve, kind="signal"))
    if isinstance(baseline, numbers.Integral) and not isinstance(baseline, bool):
        if not 1 <= baseline <= n_frames:
            raise ValueError(f"baseline must count between 1 and {n_frames} frames, got "
                             f"{baseline}.")
        return slice(0, int(baseline))
    if isinstance(baseline, slice):
        start, stop, step = baseline.indices(n_frames)
        if len(range(start, stop, step)) == 0:
            raise ValueError(f"baseline {baseline} selects no frame of {n_frames}.")
        return slice(start, stop, step)
    raise ValueError(f"baseline must be 'auto', None, a number of frames or a slice, got "
                     f"{baseline!r}.")


# -- concentration -------------------------------------------------------------------------
@validate_params(
    {
        "signal": ["array-like"],
        "echo_time": [Real],
        "baseline": [StrOptions({"auto"}), None, Integral, slice],
        "clip_fraction": [Real],
        "return_info": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def concentration(signal, echo_time, *, baseline="auto", clip_fraction=1e-3,
                  return_info=False):
    """Concentration curves ``C(t) = -(1/TE) ln(I(t) / I0)`` from source DSC signal.

    ``I0`` is the mean of each curve over the pre-bolus frames.

    Non-positive intensities have no logarithm. They are never turned into NaN or
    infinity: a sample below ``clip_fraction * I0`` (in particular any zero or negative
    sample) is raised to that floor, which caps the concentration at
    ``-ln(clip_fraction) / TE``; symmetrically, a sample above ``I0 / clip_fraction``
    (impossible in DSC, but a baseline barely above 0 produces it) is lowered to that
    ceiling. A curve whose baseline ``I0`` is not positive (no signal, e.g. outside the
    head) gets a concentration of 0 everywhere. Clipped samples and invalid curves are
    counted in the ``info`` returned with ``return_info=True``.

    Parameters
    ----------
    signal : array-like of shape (..., n_frames)
        Source signal, time on the last axis (a single curve, a list of voxel curves or a
        whole 4D volume).
    echo_time : float
        Echo time TE in seconds.
    baseline : "auto", None, int or slice, default="auto"
        Pre-bolus frames. ``"auto"`` (or None) detects the bolus arrival once, with
        :func:`bolus_arrival`, on the mean of all the curves given, so that every curve
        shares the same baseline frames; an int ``n`` takes the first ``n`` frames; a
        slice takes those frames.
    clip_fraction : float in (0, 1), default=1e-3
        Floor of the signal as a fraction of the curve's baseline (and inverse of the
        ceiling), see above.
    return_info : bool, default=False
        Also return a :class:`~sklearn.utils.Bunch` with ``baseline`` (the slice of
        frames used), ``n_clipped`` (samples clipped to the floor or the ceiling) and
        ``n_invalid_baseline`` (curves with a non-positive baseline, set to 0).

    Returns
    -------
    concentration : ndarray of the shape of ``signal``
        ``Delta R2*`` in 1/s; float32 for float32 input, float64 otherwise.
    info : Bunch
        Only with ``return_info=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.signal import concentration
    >>> c = np.array([0, 0, 0, 0, 5, 20, 10, 2, 0, 0.0])
    >>> signal = 500 * np.exp(-0.03 * c)
    >>> np.allclose(concentration(signal, 0.03), c)
    True
    >>> _, info = concentration([100, 100, 0, 100.0], 0.03, baseline=2, return_info=True)
    >>> int(info.n_clipped)
    1
    """
    echo_time = _check_positive(echo_time, "echo_time")
    if isinstance(clip_fraction, bool) or not isinstance(clip_fraction, numbers.Real) \
            or not 0 < clip_fraction < 1:
        raise ValueError(f"clip_fraction must be a number in (0, 1), got {clip_fraction!r}.")
    values = _as_float(signal, "signal")
    frames = _baseline_slice(values, baseline)
    out, clipped, valid = concentration_unchecked(values, echo_time, frames, clip_fraction)
    if return_info:
        return out, Bunch(baseline=frames, n_clipped=int(clipped.sum()),
                          n_invalid_baseline=int(valid.size - np.count_nonzero(valid)))
    return out


def concentration_unchecked(signal, echo_time, frames, clip_fraction=1e-3, out=None):
    """:func:`concentration` of a finite real array, without argument checks.

    ``out`` receives the result (a float array of ``signal``'s shape; it may be ``signal``
    itself when that is a float array to overwrite); None allocates float32 for float32
    input and float64 otherwise. Returns ``out``, the number of clipped samples per curve
    and whether each curve's baseline is positive (both of shape ``signal.shape[:-1]``).
    """
    if out is None:
        out = np.empty(signal.shape, np.float32 if signal.dtype == np.float32 else np.float64)
    dtype = out.dtype
    i0 = signal[..., frames].mean(axis=-1, keepdims=True, dtype=np.float64).astype(dtype)
    valid = i0 > 0
    with np.errstate(over="ignore"):  # a ratio that overflows is clipped below
        np.divide(signal, np.where(valid, i0, 1), out=out)  # I(t) / I0
    floor, ceiling = dtype.type(clip_fraction), dtype.type(1.0 / clip_fraction)
    clipped = np.zeros(out.shape[:-1], dtype=np.intp)
    # two fast whole-array reductions; the per-curve count only when something is outside
    if out.size and (out.min() < floor or out.max() > ceiling):
        outside = (out < floor) | (out > ceiling)
        outside &= valid
        clipped = np.count_nonzero(outside, axis=-1)
    np.clip(out, floor, ceiling, out=out)
    np.log(out, out=out)
    out *= dtype.type(-1.0 / echo_time)
    if not valid.all():
        out[np.broadcast_to(~valid, out.shape)] = 0
    return out, clipped, valid[..., 0]


# -- time grid -----------------------------------------------------------------------------
def time_grid(n_timepoints, time_step, offset=0.0):
    return offset + np.arange(n_timepoints) * time_step


def _interp_plan(times, grid):
    """Left frame index and weight of each grid time for linear interpolation.

    Matches :func:`numpy.interp`: before the first frame the first value is held, after the
    last frame the last one.
    """
    times = np.asarray(times, dtype=float)
    n = times.size
    if n == 1:
        return np.zeros(grid.size, dtype=np.intp), np.zeros(grid.size)
    left = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, n - 2)
    weight = (grid - times[left]) / (times[left + 1] - times[left])
    # hold the end values outside the acquisition
    weight = np.clip(weight, 0.0, 1.0)
    after = grid >= times[-1]
    left[after], weight[after] = n - 1, 0.0
    return left, weight


def apply_interp_plan(values, left, weight, out=None):
    """Interpolate ``values (..., n_frames)`` with a plan from :func:`_interp_plan`."""
    n = values.shape[-1]
    if not weight.any() and left.size == n and np.array_equal(left, np.arange(n)):
        # the grid is the frames themselves (the paper's acquisition): nothing to do
        if out is None:
            return values
        out[...] = values
        return out
    lower = np.take(values, left, axis=-1)
    if not weight.any():  # the grid falls on frames: a plain selection, exactly
        if out is None:
            return lower
        out[...] = lower
        return out
    upper = np.take(values, np.minimum(left + 1, n - 1), axis=-1)
    upper -= lower
    upper *= weight.astype(values.dtype)
    upper += lower
    if out is None:
        return upper
    out[...] = upper
    return out


def _offset(align, curves, times, kind):
    if align is None:
        return 0.0
    if isinstance(align, str) and align == "arrival":
        n = curves.shape[-1]
        mean_curve = curves.reshape(-1, n).mean(axis=0)
        return float(times[bolus_arrival(mean_curve, kind=kind) - 1])
    if isinstance(align, numbers.Real) and not isinstance(align, bool) and np.isfinite(align):
        return float(align)
    raise ValueError(f"align must be None, 'arrival' or a time in seconds, got {align!r}.")


@validate_params(
    {
        "curves": ["array-like"],
        "times": ["array-like"],
        "n_timepoints": [Integral],
        "time_step": [Real],
        "align": [None, StrOptions({"arrival"}), Real],
    },
    prefer_skip_nested_validation=True,
)
def resample_time(curves, times, n_timepoints=60, time_step=1.8, *, align=None):
    """Linear interpolation of curves onto the grid ``t_k = offset + k * time_step``.

    With the defaults this is the paper's common grid: 60 points 1.8 s apart from the
    start of the scan (t = 0 at the first frame). Grid points after the last frame hold
    the last value (and points before the first frame the first value), exactly as
    :func:`numpy.interp` does: a short acquisition is extended by its last sample rather
    than extrapolated.

    Parameters
    ----------
    curves : array-like of shape (..., n_frames)
        Curves, time on the last axis.
    times : array-like of shape (n_frames,)
        Frame times in seconds from the start of the scan, strictly increasing (for a
        patient: ``patient.frame_times``; for the voxels of slice ``k`` of a patient whose
        ``pwi.json`` gives ``SliceTiming``, ``patient.slice_frame_times(k)``, which shifts
        the slice's frames by its acquisition offset, as
        :class:`~sklearn_hemo.preprocessing.PatchExtractor` does).
    n_timepoints : int, default=60
        Number of grid points.
    time_step : float, default=1.8
        Grid spacing in seconds.
    align : None, "arrival" or float, default=None
        Grid offset. None: the grid starts at t = 0. ``"arrival"``: it starts at the last
        pre-bolus frame of the mean of ``curves`` (treated as concentration, see
        :func:`bolus_arrival`), which removes differences of injection timing. A float: the
        offset in seconds.

    Returns
    -------
    resampled : ndarray of shape (..., n_timepoints)
        float32 for float32 input, float64 otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.signal import resample_time
    >>> resample_time([0.0, 10.0, 20.0], [0.0, 2.0, 4.0], n_timepoints=4, time_step=1.5)
    array([ 0. ,  7.5, 15. , 20. ])
    """
    original = np.asarray(curves)
    values = _as_float(original, "curves")
    times = _check_times(times, values.shape[-1])
    n_timepoints = check_integer(n_timepoints, "n_timepoints", 1)
    time_step = _check_positive(time_step, "time_step")
    grid = time_grid(n_timepoints, time_step, _offset(align, values, times, "concentration"))
    left, weight = _interp_plan(times, grid)
    out = apply_interp_plan(values, left, weight)
    return out.copy() if np.may_share_memory(out, original) else out


# -- arterial input function ---------------------------------------------------------------
@validate_params({"path": [str, os.PathLike]}, prefer_skip_nested_validation=True)
def aif_from_tsv(path):
    """Read an ``aif.tsv`` file of the cohort layout.

    Parameters
    ----------
    path : path-like
        Tab-separated file with a header: a ``time`` column (seconds from the start of the
        PWI scan) and exactly one of ``concentration`` or ``signal``.

    Returns
    -------
    aif : ArterialInputFunction

    Examples
    --------
    >>> from sklearn_hemo.signal import aif_from_tsv
    >>> aif = aif_from_tsv("sub-001/aif.tsv")  # doctest: +SKIP
    >>> aif.kind  # doctest: +SKIP
    'concentration'
    """
    from pathlib import Path

    from .datasets._layout import read_aif

    path = Path(path)
    return read_aif(path, path.parent.name or str(path))


@validate_params(
    {
        "aif": [ArterialInputFunction],
        "echo_time": [Real, None],
        "n_timepoints": [Integral],
        "time_step": [Real],
        "align": [None, StrOptions({"arrival"}), Real],
    },
    prefer_skip_nested_validation=True,
)
def aif_curve(aif, *, echo_time=None, n_timepoints=60, time_step=1.8, align=None):
    """Concentration of an :class:`~sklearn_hemo.datasets.ArterialInputFunction` on the grid.

    A ``"signal"`` AIF is first converted with :func:`concentration` (automatic
    baseline); a ``"concentration"`` AIF is used as is. Both are then resampled with
    :func:`resample_time` from their own sample times.

    Parameters
    ----------
    aif : ArterialInputFunction
        Measured AIF, e.g. ``patient.aif``.
    echo_time : float or None, default=None
        Echo time in seconds; required for a ``"signal"`` AIF.
    n_timepoints, time_step, align
        As in :func:`resample_time`.

    Returns
    -------
    curve : ndarray of shape (n_timepoints,)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.datasets import ArterialInputFunction
    >>> from sklearn_hemo.signal import aif_curve
    >>> aif = ArterialInputFunction(np.arange(5) * 2.0, [0, 0, 50, 20, 5.0])
    >>> aif_curve(aif, n_timepoints=3, time_step=3.0)
    array([ 0., 25., 20.])
    """
    if not isinstance(aif, ArterialInputFunction):
        raise TypeError(f"aif must be an ArterialInputFunction, got {type(aif).__name__}.")
    values = aif.values
    if aif.kind == "signal":
        if echo_time is None:
            raise ValueError("a 'signal' AIF needs the echo_time (seconds) to become a "
                             "concentration; pass echo_time=patient.echo_time.")
        values = concentration(values, echo_time)
    return resample_time(values, aif.time, n_timepoints, time_step, align=align)


def _roughness(curves, times):
    """Integral of the squared second derivative (finite differences on ``times``)."""
    if curves.shape[-1] < 3:
        return np.zeros(curves.shape[0])
    slope = np.diff(curves, axis=-1) / np.diff(times)
    second = np.diff(slope, axis=-1) / (0.5 * (times[2:] - times[:-2]))
    return (second**2 * (0.5 * (times[2:] - times[:-2]))).sum(axis=-1)


def _rise_time(curves, times, fraction=0.5):
    """Time (s) at which each curve first reaches ``fraction`` of its peak, on the rising
    edge of that peak (:func:`sklearn_hemo._vessels.rise_time`).

    Unlike the time to peak it is not moved by a saturated, flat-topped arterial peak
    (whose maximum may come late in the plateau) nor by a broad recirculation.
    """
    from ._vessels import rise_time

    return rise_time(curves, times, fraction)


def _arterial_window(values, times, area):
    """Early filter and arterial window of :func:`detect_aif` (steps 0 and 1).

    Returns ``early`` (bool per curve: its rising edge comes before the median curve's,
    and not more than two frames before the foot of the mean curve, and its falling edge
    before the median curve's) and ``window`` (bool
    per frame: from that earliest admissible arrival to the last frame before the median
    curve reaches half of its peak).
    """
    from ._vessels import fall_time

    reference = np.median(values, axis=0)
    rise = _rise_time(values, times)
    tissue_rise = _rise_time(reference[None], times)[0]
    # no artery fills before the bolus reaches the brain: a curve rising more than two
    # frames before the foot of the mean curve is an artefact (motion, a noise spike)
    foot = bolus_arrival(values.mean(axis=0), kind="concentration")
    first = times[max(foot - 3, 0)]
    # the arterial bolus also passes before the tissue's: the tissue curve is the
    # arterial one convolved with a causal residue, which delays and widens it, so an
    # artery falls back below half of its peak no later than the median curve; a curve
    # still high after the tissue bolus has passed (a drift at the brain's edge, motion,
    # leakage) holds its "early" contrast for another reason
    fall = fall_time(values, times)
    tissue_fall = fall_time(reference[None], times)[0]
    early = (rise < tissue_rise) & (rise >= first) & (fall <= tissue_fall) & (area > 0)
    window = (times >= first) & (times < tissue_rise)
    if not window.any():  # the tissue rises at once: keep its half-rise frame
        window = (times >= first) & (times <= tissue_rise)
    return early, window


@validate_params(
    {
        "curves": ["array-like"],
        "times": ["array-like"],
        "method": [StrOptions({"arterial", "cluster"})],
        "n_voxels": [Integral],
        "voxel_fraction": [Real],
        "reject_late": ["boolean"],
        "auc_quantile": [Real],
        "roughness_quantile": [Real],
        "n_clusters": [Integral],
        "n_rounds": [Integral],
        "peak_fraction": [Real],
        "random_state": ["random_state"],
        "exclude": ["array-like", None],
        "return_indices": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def detect_aif(curves, times, *, method="arterial", n_voxels=2, voxel_fraction=0.8,
               reject_late=True, auc_quantile=0.9, roughness_quantile=0.75, n_clusters=8,
               n_rounds=1, peak_fraction=0.3, random_state=0, exclude=None,
               return_indices=False):
    """Arterial input function found automatically among brain concentration curves.

    Arteries bring the bolus before the tissue fills, and partial volume dilutes them
    (a 2 mm-radius artery fills at most half of a 5 mm voxel), which lowers and broadens
    their curve and biases CBF upward (Chen et al. 2005). The default
    method (``"arterial"``) therefore ranks the early curves by how much contrast agent
    they hold before the tissue, the signature of arterial blood:

    0. (``reject_late``) keep the curves whose bolus rises earlier than that of the
       median curve of all those given (the brain's typical tissue): the time at which a
       curve first reaches half of its peak, on the rising edge, comes before the median
       curve's, but not more than two frames before the foot of the mean curve
       (:func:`bolus_arrival`; earlier "boluses" are motion or noise). Veins, which
       drain the tissue, rise after it, however high and large their curve; ischaemic,
       delayed tissue goes too. The rising edge, not the time to peak, is compared
       because a saturated arterial curve is flat-topped (its maximum may come late in
       the plateau). The bolus must also have passed first: the curve falls back below
       half of its peak no later than the median curve does (the tissue curve is the
       arterial one convolved with a causal residue, which delays and widens it;
       Ostergaard et al. 1996; a saturated peak widens an arterial curve, hence no
       stricter bound). A curve that rises early but stays high after the tissue bolus (a
       drifting voxel at the brain's edge in a moving head, leakage) goes: it holds
       early contrast without being arterial (the early, narrow, high bolus of an
       artery: Mouridsen et al. 2006, Bleeker et al. 2009). When no curve passes, this
       step is skipped;
    1. the arterial window: the frames from that earliest admissible arrival to the last
       one before the median curve reaches half of its peak. The area of a curve over
       this window (its *early area*) is the contrast that passed through the voxel
       before the tissue filled: it grows with the voxel's share of arterial blood, while
       tissue (still filling), veins (later still) and noise (zero mean) add little;
    2. partial-volume-aware choice: the curve with the largest early area, with at most
       ``n_voxels - 1`` others whose early area is at least ``voxel_fraction`` of it
       (the least diluted arteries; averaging them lowers the noise). The AIF is their
       mean (not normalised) curve.

    ``method="cluster"`` is the cluster analysis of Mouridsen et al. (2006), after step 0
    when ``reject_late``: keep the curves whose area under the curve (AUC) is in the top
    ``1 - auc_quantile``; drop the ``1 - roughness_quantile`` roughest ones (the integral
    of the squared second derivative of the area-normalised curve); cluster the
    area-normalised curves with k-means (``n_clusters``) and keep the cluster whose
    centroid rises first (ties: the smallest first moment, then the highest peak),
    ``n_rounds`` times; average the ``peak_fraction`` of its curves with the highest
    peaks. At coarse resolution its total-AUC filter favours high-volume tissue (and,
    without step 0, large veins) over partial-volume arteries, whose area is small: on
    the realistic simulated cohort (5 mm) it finds arteries less often than the default.

    Unlike the original, the search covers every curve given (not two selected slices).

    Parameters
    ----------
    curves : array-like of shape (n_curves, n_frames)
        Concentration curves of brain voxels.
    times : array-like of shape (n_frames,)
        Frame times in seconds.
    method : {"arterial", "cluster"}, default="arterial"
        Early-area ranking (steps 0-2) or the cluster analysis.
    n_voxels : int, default=2
        ``"arterial"``: most curves averaged into the AIF.
    voxel_fraction : float in (0, 1], default=0.8
        ``"arterial"``: a curve joins the best one when its early area is at least this
        fraction of the best one's.
    reject_late : bool, default=True
        Apply the physiological criteria of step 0.
    auc_quantile : float in [0, 1), default=0.9
        ``"cluster"``: curves with an AUC below this quantile are discarded.
    roughness_quantile : float in (0, 1], default=0.75
        ``"cluster"``: curves rougher than this quantile (of the remaining ones) are
        discarded.
    n_clusters : int, default=8
        ``"cluster"``: clusters of k-means (fewer when fewer curves remain).
    n_rounds : int, default=1
        ``"cluster"``: rounds of clustering.
    peak_fraction : float in (0, 1], default=0.3
        ``"cluster"``: fraction of the final cluster, highest peaks first, averaged into
        the AIF (at least one curve).
    random_state : int, RandomState instance or None, default=0
        ``"cluster"``: seed of k-means; the default makes the AIF reproducible.
    exclude : array-like of bool of shape (n_curves,) or None, default=None
        Curves never chosen, whatever their rank: e.g. those clipped at the noise floor,
        noisy or drifting (the screening of :func:`patient_aif`, see
        :mod:`sklearn_hemo._vessels`). ``ValueError`` when it excludes every curve.
    return_indices : bool, default=False
        Also return the indices of the curves averaged into the AIF.

    Returns
    -------
    aif : ndarray of shape (n_frames,)
        The detected AIF (same units as ``curves``).
    indices : ndarray of int
        Only with ``return_indices=True``.

    References
    ----------
    K. Mouridsen, S. Christensen, L. Gyldensted, L. Ostergaard, "Automatic selection of
    arterial input function using cluster analysis", Magn Reson Med 55(3):524-531, 2006,
    doi:10.1002/mrm.20759.

    J. J. Chen, M. R. Smith, R. Frayne, "The impact of partial-volume effects in dynamic
    susceptibility contrast magnetic resonance perfusion imaging", J Magn Reson Imaging
    22(3):390-399, 2005, doi:10.1002/jmri.20393.

    L. Ostergaard, R. M. Weisskoff, D. A. Chesler, C. Gyldensted, B. R. Rosen, "High
    resolution measurement of cerebral blood flow using intravascular tracer bolus
    passages. Part I", Magn Reson Med 36(5):715-725, 1996, doi:10.1002/mrm.1910360510.

    E. J. W. Bleeker, M. A. van Buchem, M. J. P. van Osch, "Optimal location for arterial
    input function measurements near the middle cerebral artery in first-pass perfusion
    MRI", J Cereb Blood Flow Metab 29(4):840-852, 2009, doi:10.1038/jcbfm.2008.155.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.signal import detect_aif
    >>> t = np.arange(40) * 1.5
    >>> def bolus(t0, width, height):
    ...     x = np.clip(t - t0, 0, None) / width
    ...     return height * x**3 * np.exp(3 * (1 - x))
    >>> rng = np.random.default_rng(0)
    >>> tissue = [bolus(12, 4, 5) + rng.normal(0, 0.2, t.size) for _ in range(300)]
    >>> arteries = [bolus(9, 2, 60) + rng.normal(0, 0.2, t.size) for _ in range(30)]
    >>> aif, idx = detect_aif(np.array(tissue + arteries), t, return_indices=True)
    >>> int(np.argmax(aif)), bool(aif.max() > 40), bool((idx >= 300).all())
    (7, True, True)
    """
    from sklearn.cluster import KMeans

    values = _as_float(curves, "curves").astype(np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"curves must be 2D (n_curves, n_frames) with at least one curve, "
                         f"got shape {values.shape}.")
    times = _check_times(times, values.shape[1])
    if method not in ("arterial", "cluster"):
        raise ValueError(f"method must be 'arterial' or 'cluster', got {method!r}.")
    for name, q, low_ok in (("auc_quantile", auc_quantile, True),
                            ("roughness_quantile", roughness_quantile, False),
                            ("voxel_fraction", voxel_fraction, False),
                            ("peak_fraction", peak_fraction, False)):
        if isinstance(q, bool) or not isinstance(q, numbers.Real) or not (
                (0 <= q < 1) if low_ok else (0 < q <= 1)):
            raise ValueError(f"{name} must be a number in {'[0, 1)' if low_ok else '(0, 1]'}, "
                             f"got {q!r}.")
    n_clusters = check_integer(n_clusters, "n_clusters", 1)
    n_rounds = check_integer(n_rounds, "n_rounds", 1)
    n_voxels = check_integer(n_voxels, "n_voxels", 1)
    random_state = check_random_state(random_state)

    area = trapezoid(values, times, axis=1) if values.shape[1] > 1 else values[:, 0]
    if not (area > 0).any():
        raise ValueError("no curve has a positive area under the curve: these do not look "
                         "like concentration curves (pass concentration, not signal).")
    allowed = np.ones(values.shape[0], dtype=bool)
    if exclude is not None:
        allowed = ~np.asarray(exclude, dtype=bool).reshape(-1)
        if allowed.size != values.shape[0]:
            raise ValueError(f"exclude must hold one bool per curve ({values.shape[0]}), "
                             f"got {allowed.size}.")
        if not (allowed & (area > 0)).any():
            raise ValueError("every curve with a positive area is excluded; no AIF "
                             "candidate is left.")
    # the cluster analysis takes the AUC quantile over every curve, as in the original
    pool = np.flatnonzero((area > 0) & allowed) if method == "arterial" \
        else np.flatnonzero(allowed)
    window = None
    if values.shape[1] >= 3:
        early, window = _arterial_window(values, times, area)
        early &= allowed
        if reject_late and early.any():
            pool = np.flatnonzero(early)
    if method == "arterial":
        if window is None:  # fewer than 3 frames: no timing, the whole curve
            window = np.ones(values.shape[1], dtype=bool)
        if window.sum() > 1:
            early_area = trapezoid(values[:, window], times[window], axis=1)
        else:
            step = float(np.median(np.diff(times))) if times.size > 1 else 1.0
            early_area = values[:, window].sum(axis=1) * step
        order = pool[np.argsort(-early_area[pool], kind="stable")]
        best = early_area[order[0]]
        if best > 0:
            order = order[early_area[order] >= voxel_fraction * best]
        candidates = np.sort(order[:n_voxels])
        aif = values[candidates].mean(axis=0)
        return (aif, candidates) if return_indices else aif

    candidates = pool[(area[pool] >= np.quantile(area[pool], auc_quantile))
                      & (area[pool] > 0)]
    normalised = values[candidates] / area[candidates, None]
    rough = _roughness(normalised, times)
    keep = rough <= np.quantile(rough, roughness_quantile)
    candidates, normalised = candidates[keep], normalised[keep]
    for _ in range(n_rounds):
        k = min(n_clusters, len(np.unique(normalised, axis=0)))
        if k < 2:
            break
        km = KMeans(n_clusters=k, n_init=4, random_state=random_state).fit(normalised)
        centres = km.cluster_centers_
        first_moment = (centres * times).sum(axis=1) / centres.sum(axis=1)
        rise = _rise_time(centres, times) if reject_late else first_moment
        # ties go to the smallest first moment, then to the highest peak
        best = np.lexsort((-centres.max(axis=1), first_moment, rise))[0]
        chosen = km.labels_ == best
        candidates, normalised = candidates[chosen], normalised[chosen]
    peaks = values[candidates].max(axis=1)
    n_keep = max(1, int(np.ceil(peak_fraction * candidates.size)))
    candidates = np.sort(candidates[np.argsort(-peaks, kind="stable")[:n_keep]])
    aif = values[candidates].mean(axis=0)
    if return_indices:
        return aif, candidates
    return aif


@validate_params(
    {
        "curves": ["array-like"],
        "times": ["array-like"],
        "n_voxels": [Integral],
        "voxel_fraction": [Real],
        "exclude": ["array-like", None],
        "return_indices": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def detect_vof(curves, times, *, n_voxels=1, voxel_fraction=0.8, exclude=None,
               return_indices=False):
    """Venous output function (VOF) found automatically among brain concentration curves.

    Large veins, the superior sagittal sinus first, drain the bolus after the tissue and
    are wide enough to fill a voxel with blood, so their curve is the whole-blood
    concentration with little partial volume (van Osch et al. 2001). Among the curves
    whose bolus rises (half of the peak, on the rising edge) no earlier than that of the
    median curve (the typical tissue; arteries rise before it), whose bolus passes (the
    peak, on the 3-frame running median, at least three times the mean of the last third
    of the frames: a plateau is motion or drift) and that ``exclude`` does not refuse,
    the one with the largest area is taken, with at most ``n_voxels - 1``
    others whose area is at least ``voxel_fraction`` of it; the VOF is their mean. A vein
    must stand out: its area at least 3 times the median area of all the curves (whole
    blood against the few percent of blood in tissue), else none is found.

    Parameters
    ----------
    curves : array-like of shape (n_curves, n_frames)
        Concentration curves of brain voxels.
    times : array-like of shape (n_frames,)
        Frame times in seconds.
    n_voxels : int, default=1
        Most curves averaged into the VOF. The default takes the single largest: a vein
        is rarely wider than a voxel or two, and averaging its neighbours, diluted by
        partial volume, lowers the area the AIF is matched to.
    voxel_fraction : float in (0, 1], default=0.8
        A curve joins the largest one when its area is at least this fraction of it.
    exclude : array-like of bool of shape (n_curves,) or None, default=None
        Curves never chosen (e.g. clipped at the noise floor).
    return_indices : bool, default=False
        Also return the indices of the curves averaged.

    Returns
    -------
    vof : ndarray of shape (n_frames,) or None
        The mean venous curve, None when no curve qualifies.
    indices : ndarray of int
        Only with ``return_indices=True`` (empty when none is found).

    References
    ----------
    M. J. P. van Osch, E. P. A. Vonken, C. J. G. Bakker, M. A. Viergever, "Correcting
    partial volume artifacts of the arterial input function in quantitative cerebral
    perfusion MRI", Magn Reson Med 45(3):477-485, 2001, doi:10.1002/1522-2594(200103)45:3.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.signal import detect_vof
    >>> t = np.arange(40) * 1.5
    >>> def bolus(t0, width, height):
    ...     x = np.clip(t - t0, 0, None) / width
    ...     return height * x**3 * np.exp(3 * (1 - x))
    >>> curves = np.array([bolus(12, 4, 5)] * 50 + [bolus(9, 2, 30), bolus(17, 4, 40)])
    >>> vof, idx = detect_vof(curves, t, return_indices=True)
    >>> idx.tolist()
    [51]
    """
    from ._vessels import select_vof

    values = _as_float(curves, "curves").astype(np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"curves must be 2D (n_curves, n_frames) with at least one curve, "
                         f"got shape {values.shape}.")
    times = _check_times(times, values.shape[1])
    n_voxels = check_integer(n_voxels, "n_voxels", 1)
    if isinstance(voxel_fraction, bool) or not 0 < voxel_fraction <= 1:
        raise ValueError(f"voxel_fraction must be a number in (0, 1], got {voxel_fraction!r}.")
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=bool).reshape(-1)
        if exclude.size != values.shape[0]:
            raise ValueError(f"exclude must hold one bool per curve ({values.shape[0]}), "
                             f"got {exclude.size}.")
    indices = select_vof(values, times, n_voxels=n_voxels, voxel_fraction=voxel_fraction,
                         exclude=exclude)
    vof = values[indices].mean(axis=0) if indices.size else None
    return (vof, indices) if return_indices else vof


# -- per patient ---------------------------------------------------------------------------
def _brain_mean_signal(data, brain):
    """Mean PWI signal over the brain, one slice at a time (bounded memory); None if empty."""
    total = np.zeros(data.shape[-1])
    count = 0
    for k in range(data.shape[2]):
        mask = np.asarray(brain[:, :, k]) > 0  # a bool array or a mask image's proxy
        n = int(np.count_nonzero(mask))
        if n:
            total += np.asarray(data[:, :, k, :])[mask].sum(axis=0, dtype=np.float64)
            count += n
    return total / count if count else None


def patient_timing(patient, data=None, brain=None):
    """Steady state and bolus arrival of ``patient``, from its mean brain signal.

    Returns a Bunch: ``n_nonsteady`` (leading frames dropped: ``patient.n_nonsteady``
    when the sidecar sets it, else :func:`steady_state_frames`), ``arrival`` (index of
    the first bolus frame, counted from the first frame of the file, at least
    ``n_nonsteady + 1``), ``mean_signal`` (the mean brain curve), ``notes`` (warning
    messages naming the patient, for the caller to emit) and ``info`` (what was done as
    designed, e.g. the dropped non-steady frames: notes for the QC report, not warnings).
    """
    if brain is None:
        brain = patient.get_brain_mask()
    mean = _brain_mean_signal(patient.pwi.dataobj if data is None else data, brain)
    if mean is None:
        raise ValueError(f"participant {patient.id}: the brain mask is empty. Provide a "
                         "brain_mask image that covers the brain.")
    n_frames = mean.size
    notes, info = [], []
    declared = getattr(patient, "n_nonsteady", None)
    if declared is not None:
        n_nonsteady = int(declared)
        if not 0 <= n_nonsteady <= n_frames - 2:
            raise ValueError(
                f"participant {patient.id}: NonSteadyStateFrames is {n_nonsteady}, but the "
                f"PWI has {n_frames} frames; it must leave at least 2. Fix pwi.json.")
    else:
        n_nonsteady, level = _leading_excess(mean)
        if n_nonsteady:
            excess = 100.0 * (mean[0] / level - 1.0) if level > 0 else float("nan")
            info.append(
                f"participant {patient.id}: the first {n_nonsteady} PWI frame(s) are not at "
                f"steady state (frame 0 is {excess:.0f}% above the baseline); they are "
                f"dropped from the baseline and the curves, and times count from frame "
                f"{n_nonsteady}. Set \"NonSteadyStateFrames\" in pwi.json to override.")
    arrival = n_nonsteady + bolus_arrival(mean[n_nonsteady:], kind="signal")
    if arrival >= n_frames:
        notes.append(f"participant {patient.id}: no bolus found in the mean brain signal; "
                     "every frame is treated as baseline (concentration near 0). Check the "
                     "PWI series.")
    return Bunch(n_nonsteady=n_nonsteady, arrival=int(arrival), mean_signal=mean,
                 notes=tuple(notes), info=tuple(info))


def _patient_arrival(patient, data=None, brain=None):
    """Index of the first bolus frame of ``patient`` (see :func:`patient_timing`)."""
    return patient_timing(patient, data, brain).arrival


def steady_frame_times(patient, n_nonsteady):
    """Times of the kept frames, the first steady-state frame at t = 0."""
    times = patient.frame_times
    return times[n_nonsteady:] - times[n_nonsteady]


def patient_grid_offset(patient, align, timing):
    """Grid offset in seconds for a patient (``align`` of :func:`patient_aif`)."""
    if align is None:
        return 0.0
    if isinstance(align, str) and align == "arrival":
        times = patient.frame_times
        start = timing.n_nonsteady
        return float(times[max(timing.arrival - 1, start)] - times[start])
    return _offset(align, None, None, None)


def patient_time_plan(patient, timing, grid):
    """Interpolation plan of the kept frames onto ``grid`` (indices into all frames), and
    the seconds of ``grid`` after the last frame (held at its value).

    With ``patient.slice_timing`` the plan is a list, one per slice: each slice's frames
    at their own acquisition times (frame time plus the slice's offset).
    """
    times = steady_frame_times(patient, timing.n_nonsteady)
    offsets = getattr(patient, "slice_timing", None)
    if offsets is None:
        left, weight = _interp_plan(times, grid)
        return (left + timing.n_nonsteady, weight), float(max(grid[-1] - times[-1], 0.0))
    plans = []
    for k in range(patient.shape[2]):
        left, weight = _interp_plan(times + float(offsets[k]), grid)
        plans.append((left + timing.n_nonsteady, weight))
    last = times[-1] + float(np.min(offsets))
    return plans, float(max(grid[-1] - last, 0.0))


def padding_note(patient, padding, grid):
    """Warning text for a scan shorter than the common time grid, or None."""
    if padding <= 1e-6:
        return None
    return (f"participant {patient.id}: the PWI series ends {padding:.1f} s before the end "
            f"of the common time grid ({grid[-1]:.1f} s after the first steady-state "
            "frame); those grid points repeat the last frame's value (padding).")


# VOF_ENV (from _config) turns off the partial-volume correction of detected AIFs by the
# venous output function (values "0", "off", "false" or "no"); joblib workers inherit
# it. :func:`patient_aif` also takes ``partial_volume=False``.

#: Arterial voxels averaged (as signal) into a detected AIF.
_N_AIF_VOXELS = 4


def vof_correction_default():
    """Whether detected AIFs are corrected by the venous output function (``VOF_ENV``)."""
    return env_switch(VOF_ENV)


def patient_field_strength(patient):
    """The field strength (T) that converts ``patient``'s curves to concentration, or None.

    None when the patient has no ``field_strength`` (``MagneticFieldStrength`` in
    ``pwi.json``), and when its ``aif.tsv`` gives a concentration (whose units are the
    user's): ``Delta R2*`` then stands for concentration (kappa 1) and the maps are
    relative, as before.
    """
    field = getattr(patient, "field_strength", None)
    if field is None:
        return None
    if patient.aif is not None and patient.aif.kind != "signal":
        return None
    from .relaxivity import BLOOD_RELAXIVITY, FIELD_TOLERANCE

    if not any(abs(float(field) - f) <= FIELD_TOLERANCE for f in BLOOD_RELAXIVITY):
        # no published blood relaxivity at this field: relative maps, said once per call
        warnings.warn(
            f"participant {patient.id}: no blood and tissue relaxivities are known at "
            f"{float(field):g} T (only at {', '.join(f'{f:g}' for f in BLOOD_RELAXIVITY)} T), "
            "so Delta R2* stands for concentration and CBF and CBV are relative. Remove "
            "MagneticFieldStrength from pwi.json to silence this.",
            UserWarning, stacklevel=find_stack_level())
        return None
    return float(field)


def _blood_units(field):
    """``Delta R2*`` of whole blood -> the AIF's units (mM with a field, else itself)."""
    if field is None:
        return lambda r: np.asarray(r, dtype=np.float64)
    from .relaxivity import blood_concentration

    return lambda r: np.asarray(blood_concentration(np.asarray(r, dtype=np.float64), field))


def _detect_patient_aif(patient, timing, data=None, partial_volume=True):
    """The detected AIF of ``patient`` on its kept frames (a Bunch, see below).

    The candidates are screened (clipped at the noise floor, noisy, drifting: see
    :mod:`sklearn_hemo._vessels`), the arterial voxels chosen by :func:`detect_aif`
    among the rest and averaged as normalised signal; with ``partial_volume`` the venous
    output function (:func:`detect_vof`) gives the area the partial-volume model is
    inverted to (:func:`sklearn_hemo._vessels.partial_volume_aif`). With a field strength
    (:func:`patient_field_strength`) the curves are whole-blood concentrations in mM
    (:func:`sklearn_hemo.relaxivity.blood_concentration`), else ``Delta R2*`` (1/s).

    Returns a Bunch: ``curve`` (the AIF on ``times``), ``raw`` (the uncorrected mean
    curve of the AIF voxels), ``times`` (kept frame times, 0 at the first steady-state
    frame), ``voxels`` (int (n, 3)), ``vof`` (the venous curve or None), ``vof_voxels``,
    ``tissue`` (mean brain ``Delta R2*``), ``units`` ("mM" or "1/s"), ``blood_share``
    and ``scale`` of the correction (None without one), ``n_rejected`` (candidates
    refused by the screening, by reason), ``notes`` (warnings naming the patient) and
    ``info`` (what was done as designed, for the QC report).
    """
    from ._vessels import flat_top, partial_volume_aif, screen_curves, select_vof

    brain = patient.get_brain_mask()
    data = np.asarray(patient.pwi.dataobj) if data is None else data
    start = timing.n_nonsteady
    times = steady_frame_times(patient, start)
    if getattr(patient, "slice_timing", None) is not None:
        # the detected AIF mixes slices: place it at the brain's mean slice offset
        per_slice = brain.reshape(-1, brain.shape[2]).sum(axis=0)
        times = times + float(np.average(patient.slice_timing, weights=per_slice))
    signal = data[brain][:, start:].astype(np.float32)
    base = slice(0, max(timing.arrival - start, 1))
    curves = concentration(signal, patient.echo_time, baseline=base)
    te = float(patient.echo_time)
    notes, info = [], []
    screen = screen_curves(signal, curves, times, base)
    rejected = {name: int(np.count_nonzero(screen[name]))
                for name in ("clipped", "noisy", "drifting")}
    tissue = curves.mean(axis=0, dtype=np.float64)
    # the screened choice must still be arterial: even a partial-volume artery carries
    # far more contrast than tissue (a few percent of blood); when only the refused
    # curves are (every artery clipped), a refused artery beats a tissue "AIF"
    indices = None
    try:
        _, indices = detect_aif(curves, times, n_voxels=_N_AIF_VOXELS, exclude=~screen.ok,
                                return_indices=True)
    except ValueError:
        pass
    if indices is None or curves[indices].mean(axis=0).max() < 2.0 * tissue.max():
        try:
            _, indices = detect_aif(curves, times, n_voxels=_N_AIF_VOXELS,
                                    return_indices=True)
        except ValueError as exc:
            raise ValueError(f"participant {patient.id}: no AIF could be detected ({exc}). "
                             "Provide a measured AIF in aif.tsv.") from None
        if not screen.ok[indices].all():
            notes.append(
                f"participant {patient.id}: every arterial candidate curve is clipped at "
                "the noise floor, noisy or drifting; the AIF is taken among them anyway. "
                "Check the QC report (sklearn-hemo qc) or provide aif.tsv.")
    voxels = np.argwhere(brain)[indices].astype(np.int64)
    field = patient_field_strength(patient)
    to_units = _blood_units(field)
    # average as signal (the partial-volume model stays linear), each voxel normalised
    # by its own baseline
    s0 = signal[:, base].mean(axis=1, dtype=np.float64)
    s0 = np.where(s0 > 0, s0, 1.0)
    ratio = (signal[indices] / s0[indices, None]).mean(axis=0, dtype=np.float64)
    noise = float(ratio[base].std()) if ratio[base].size > 1 else 0.0
    raw = to_units(-np.log(np.clip(ratio, 1e-3, None)) / te)
    curve, vof, vof_voxels, share, scale = raw, None, np.zeros((0, 3), np.int64), None, None
    if partial_volume:
        taken = np.zeros(curves.shape[0], dtype=bool)
        taken[indices] = True
        # a vein holds at least the contrast of the partial-volume arteries
        found = select_vof(curves, times, exclude=~screen.ok | taken,
                           min_area=float(trapezoid(-np.log(np.clip(ratio, 1e-3, None)) / te,
                                                    times)))
        area = 0.0
        if found.size:
            venous = (signal[found] / s0[found, None]).mean(axis=0, dtype=np.float64)
            vof = to_units(-np.log(np.clip(venous, 1e-3, None)) / te)
            area = float(trapezoid(vof, times))
        if area > 0:
            mean = signal.mean(axis=0, dtype=np.float64)
            tissue_ratio = mean / max(float(mean[base].mean()), 1e-12)
            pv = partial_volume_aif(ratio, tissue_ratio, times, te, area, to_units,
                                    noise=noise)
            curve, share, scale = pv.curve, pv.share, pv.scale
            vof_voxels = np.argwhere(brain)[found].astype(np.int64)
            info.append(f"participant {patient.id}: AIF corrected for partial volume by "
                        f"the venous output function ({found.size} voxel(s)): blood share "
                        f"{share:.2f} of the arterial voxels' signal, area matched to the "
                        f"vein's (x{scale:.2f} after the inversion).")
        else:
            vof = None
            notes.append(
                f"participant {patient.id}: no venous output function (a large vein such "
                "as the superior sagittal sinus, unclipped) was found, so the AIF is not "
                "corrected for partial volume: absolute CBF and CBV are unreliable "
                "(relative maps hold). Check the QC report or provide aif.tsv.")
    if any(rejected.values()):
        info.append(f"participant {patient.id}: AIF candidates refused: "
                    + ", ".join(f"{n} {name}" for name, n in rejected.items() if n) + ".")
    if flat_top(curve):
        notes.append(
            f"participant {patient.id}: the AIF is flat-topped (3 or more frames within 5% "
            "of its peak): its peak is saturated or clipped, which underestimates the "
            "arterial concentration and overestimates CBF. Check the QC report or provide "
            "aif.tsv.")
    # the rising edges (half of the peak), as in detect_aif: a saturated arterial curve
    # is flat-topped, so its maximum may come late in the plateau
    aif_rise, tissue_rise = _rise_time(np.stack([curve, tissue]), times)
    if aif_rise >= tissue_rise:
        notes.append(
            f"participant {patient.id}: the detected AIF rises at {aif_rise:.1f} s (half "
            f"of its peak), not before the mean brain tissue ({tissue_rise:.1f} s); it may "
            "be a vein or tissue. Check the QC report (sklearn-hemo qc) or provide aif.tsv.")
    return Bunch(curve=np.asarray(curve, dtype=np.float64), raw=np.asarray(raw, np.float64),
                 times=times, voxels=voxels, vof=vof, vof_voxels=vof_voxels, tissue=tissue,
                 units="mM" if field is not None else "1/s", field_strength=field,
                 blood_share=share, scale=scale, n_rejected=rejected, notes=tuple(notes),
                 info=tuple(info))


def patient_aif_detection(patient, timing, data=None, partial_volume=None):
    """:func:`_detect_patient_aif` through the per-process cache (one AIF per patient);
    ``partial_volume=None`` reads :func:`vof_correction_default`."""
    from ._cache import cached

    if partial_volume is None:
        partial_volume = vof_correction_default()
    key = ("aif_detection", timing.n_nonsteady, timing.arrival, bool(partial_volume))
    return cached(patient, key, lambda: _detect_patient_aif(patient, timing, data,
                                                            bool(partial_volume)))


@validate_params(
    {
        "patient": [Patient],
        "n_timepoints": [Integral],
        "time_step": [Real],
        "align": [None, StrOptions({"arrival"}), Real],
        "arrival": [Integral, None],
        "partial_volume": ["boolean", None],
    },
    prefer_skip_nested_validation=True,
)
def patient_aif(patient, n_timepoints=60, time_step=1.8, *, align=None, arrival=None,
                partial_volume=None):
    """The AIF of a patient as a concentration curve on the common time grid.

    The measured AIF (``patient.aif``, from ``aif.tsv``) when present, converted with
    :func:`aif_curve`; otherwise detected with :func:`detect_aif` among the concentration
    curves of the brain (baseline: the steady-state frames before the bolus arrival of the
    mean brain signal). The grid starts at the first steady-state frame: leading
    non-steady frames (see :func:`steady_state_frames`) are dropped, as for the tissue.

    Parameters
    ----------
    patient : Patient
        The patient.
    n_timepoints : int, default=60
        Number of grid points.
    time_step : float, default=1.8
        Grid spacing in seconds.
    align : None, "arrival" or float, default=None
        Grid offset: None starts at the first steady-state frame; ``"arrival"`` at the
        last pre-bolus frame of the patient's mean brain signal (the offset that
        :class:`~sklearn_hemo.preprocessing.PatchExtractor` uses for the tissue curves with
        ``align="arrival"``); a float is an offset in seconds.
    arrival : int or None, default=None
        Index of the first bolus frame if already known (skips its detection; the
        series is then taken to start at steady state).
    partial_volume : bool or None, default=None
        Correct a detected AIF for partial volume with the venous output function
        (:func:`detect_vof`; module :mod:`sklearn_hemo._vessels` for the model and its
        references). None reads the environment variable ``SKLEARN_HEMO_AIF_VOF``
        ("off" turns it off for every step of the pipeline, joblib workers included);
        the default is on. A measured AIF is never changed.

    Returns
    -------
    curve : ndarray of shape (n_timepoints,)
        float64: whole-blood concentration in mM when the patient's field strength is
        known (:func:`patient_field_strength`, converted with
        :func:`sklearn_hemo.relaxivity.blood_concentration`), else ``Delta R2*`` in 1/s.

    Notes
    -----
    A detected AIF is chosen among screened curves (those clipped at the noise floor,
    noisy or drifting are refused; Mouridsen et al. 2006, Peruzzo et al. 2011), averaged
    as signal, and, with ``partial_volume``, the partial-volume model of its voxels is
    inverted so that its area equals that of the venous output function (van Osch et al.
    2001). A patient without a usable vein warns and keeps the uncorrected curve.

    Examples
    --------
    >>> import nibabel as nib, numpy as np
    >>> from sklearn_hemo.datasets import ArterialInputFunction, Patient
    >>> from sklearn_hemo.signal import patient_aif
    >>> img = nib.Nifti1Image(np.full((2, 2, 1, 5), 100.0), np.eye(4))
    >>> dwi = nib.Nifti1Image(np.ones((2, 2, 1)), np.eye(4))
    >>> aif = ArterialInputFunction([0.0, 1.8, 3.6], [0.0, 40.0, 10.0])
    >>> p = Patient("sub-01", img, dwi, dwi, echo_time=0.03, repetition_time=1.8, aif=aif)
    >>> patient_aif(p, n_timepoints=4)
    array([ 0., 40., 10., 10.])
    """
    n_timepoints = check_integer(n_timepoints, "n_timepoints", 1)
    time_step = _check_positive(time_step, "time_step")
    if arrival is None:
        timing = patient_timing(patient)
    else:
        timing = Bunch(n_nonsteady=0, arrival=check_integer(arrival, "arrival", 1), notes=(),
                       info=())
    offset = patient_grid_offset(patient, align, timing)
    return patient_aif_on_grid(patient, n_timepoints, time_step, offset, timing,
                               partial_volume=partial_volume)


def patient_aif_on_grid(patient, n_timepoints, time_step, offset, timing, data=None,
                        partial_volume=None):
    """:func:`patient_aif` with the grid offset in seconds (from the first steady-state
    frame); ``data`` is the PWI array when already loaded."""
    if patient.aif is not None:
        shift = float(patient.frame_times[timing.n_nonsteady])
        curve = aif_curve(patient.aif, echo_time=patient.echo_time,
                          n_timepoints=n_timepoints, time_step=time_step,
                          align=offset + shift).astype(np.float64)
        return _blood_units(patient_field_strength(patient))(curve)
    found = patient_aif_detection(patient, timing, data, partial_volume)
    return resample_time(found.curve, found.times, n_timepoints, time_step, align=offset)
