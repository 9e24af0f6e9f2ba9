"""Vessel curves of one patient: screening of AIF candidates, the venous output function
and the partial-volume correction of the AIF.

Package-internal kernels behind :func:`sklearn_hemo.signal.detect_aif` (its ``exclude``),
:func:`sklearn_hemo.signal.detect_vof` and the patient AIF of
:func:`sklearn_hemo.signal.patient_aif`. Nothing here reads a patient: arrays in, arrays
out.

Screening (:func:`screen_curves`)
---------------------------------
A voxel's curve is refused as an AIF (or VOF) candidate when it is

* **clipped**: its signal falls to the noise floor during the bolus (below
  ``floor_sigma`` times the noise standard deviation; magnitude images are Rician and
  carry no information on the true signal there, Gudbjartsson & Patz 1995), so the peak
  of its ``Delta R2*`` is cut off: the saturated, flat-topped curves of Mouridsen et al.
  (2006) and of the FAIR-Unipd toolbox's peak criterion (Peruzzo et al. 2011);
* **noisy**: the peak ``Delta R2*`` is less than ``min_cnr`` times the standard deviation
  of its pre-bolus frames (a contrast-to-noise ratio; the irregularity criterion of
  Mouridsen 2006 and Peruzzo 2011 removes the same curves), or a spike: the peak more
  than 2.5 times that of its 3-frame running median;
* **drifting**: its pre-bolus frames trend (the linear trend over the baseline exceeds
  ``max_drift`` of the peak, and three of its standard errors), its tail sinks below zero
  (the mean of the last 15 % of the frames is below ``-max_drift`` of the peak) or never
  comes down (that mean is above half of the peak): motion, a spike or leakage, not
  blood (after the first pass a vessel's curve returns to a low, positive level, Bleeker
  et al. 2011).

Partial-volume correction (:func:`partial_volume_aif`)
------------------------------------------------------
At the default 5 mm voxels an artery fills at most half a voxel. The magnitudes of blood
and tissue add (Chen et al. 2005; van Osch et al. 2005), so the normalised signal of the
averaged arterial voxels is

    r(t) = (1 - w) m(t) + w exp(-TE R_a(t))

with ``w`` the blood share of the baseline signal, ``m(t)`` the normalised signal of the
tissue around the artery (the mean brain signal stands in for it) and ``R_a`` the
``Delta R2*`` of arterial blood. Averaging voxels in the signal domain keeps this form
(``w`` becomes the mean share), which is why the AIF voxels are averaged as signal, not
as ``Delta R2*``. Its ``-ln(r) / TE`` is not ``R_a``: it saturates at ``-ln(1 - w) / TE``
and flattens the peak. Given ``w``, the model is inverted,
``R_a = -ln((r - (1 - w) m) / w) / TE`` (the argument held above its noise). The signal
never falls below its tissue part, so ``w >= max_t (m - r - 2 noise) / m``: a lower
bound close to ``w`` when the arterial peak is dark. Within it ``w`` is the largest that
gives the AIF the area of the venous output function (VOF): the superior
sagittal sinus is wide enough to fill a voxel, and the same bolus passes through artery
and vein, so the time integrals of the arterial and venous concentrations are equal (van
Osch et al. 2001; Knutsson et al. 2010). The areas are taken over the whole acquisition
(first pass and recirculation: the simulated curves, like most clinical ones, do not
reach a steady state within it). Frames where the blood signal is below the noise (the
argument held at twice the noise of the ratio) carry no measure: a single one is a
spike, interpolated; a run of them is a first-pass peak too dark to measure, filled by a
gamma variate fitted to the first pass around it (:func:`fill_held_peak`). ``w`` is not
taken below 0.1 (the inversion would amplify the noise more than tenfold). The curve is
then scaled to the venous area exactly (a residue when no ``w`` reaches it), as van Osch
2001 scale theirs.

References
----------
Thompson HK, Starmer CF, Whalen RE, McIntosh HD. Indicator transit time considered as a
gamma variate. Circ Res 1964; 14:502-515. Benner T, Heiland S, Erb G, Forsting M, Sartor
K. Accuracy of gamma-variate fits to concentration-time curves from dynamic
susceptibility-contrast enhanced MRI. Magn Reson Imaging 1997; 15:307-317.
Gudbjartsson H, Patz S. The Rician distribution of noisy MRI data. MRM 1995; 34:910-914.
Mouridsen K, Christensen S, Gyldensted L, Ostergaard L. Automatic selection of arterial
input function using cluster analysis. MRM 2006; 55:524-531.
Peruzzo D, Bertoldo A, Zanderigo F, Cobelli C. Automatic selection of arterial input
function on dynamic contrast-enhanced MR images. Comput Methods Programs Biomed 2011;
104:e148-e157.
Bleeker EJW, van Buchem MA, Webb AG, van Osch MJP. Phase-based arterial input function
measurements for dynamic susceptibility contrast MRI. MRM 2010; 64:358-368, and Bleeker
EJW, van Buchem MA, van Osch MJP. Optimal location for arterial input function
measurements near the middle cerebral artery in first-pass perfusion MRI. JCBFM 2009;
29:840-852.
van Osch MJP, Vonken EPA, Bakker CJG, Viergever MA. Correcting partial volume artifacts
of the arterial input function in quantitative cerebral perfusion MRI. MRM 2001;
45:477-485.
van Osch MJP, van der Grond J, Bakker CJG. Partial volume effects on arterial input
functions: shape and amplitude distortions and their correction. JMRI 2005; 22:704-709.
Chen JJ, Smith MR, Frayne R. The impact of partial-volume effects in dynamic
susceptibility contrast magnetic resonance perfusion imaging. JMRI 2005; 22:390-399.
Knutsson L, Stahlberg F, Wirestam R. Absolute quantification of perfusion using dynamic
susceptibility contrast MRI: pitfalls and possibilities. MAGMA 2010; 23:1-21.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.integrate import trapezoid
from sklearn.utils import Bunch

#: Screening thresholds (module docstring).
FLOOR_SIGMA = 3.0
MIN_CNR = 5.0
MAX_DRIFT = 0.1
#: A curve is flat-topped when at least this many frames lie within FLAT_FRACTION of its
#: peak (a gamma-variate first pass sampled every 1.2-2 s has one or two there).
FLAT_FRAMES = 3
FLAT_FRACTION = 0.05


def noise_sigma(signal, baseline):
    """Noise standard deviation of the signal: per curve, and its median over curves.

    From the frame-to-frame differences of the pre-bolus frames (robust: the median
    absolute deviation, divided by sqrt(2) for a difference of two frames).
    """
    base = signal[:, baseline].astype(np.float64)
    if base.shape[1] < 3:
        spread = np.zeros(base.shape[0])
    else:
        diffs = np.diff(base, axis=1)
        centre = np.median(diffs, axis=1, keepdims=True)
        spread = 1.4826 * np.median(np.abs(diffs - centre), axis=1) / np.sqrt(2.0)
    return spread, float(np.median(spread)) if spread.size else 0.0


def screen_curves(signal, curves, times, baseline, *, floor_sigma=FLOOR_SIGMA,
                  min_cnr=MIN_CNR, max_drift=MAX_DRIFT):
    """Clipped, noisy and drifting curves (module docstring); a Bunch of bool arrays.

    ``signal`` (n, t) source signal, ``curves`` (n, t) its ``Delta R2*``, ``baseline`` the
    slice of pre-bolus frames. ``ok`` is the complement of the three.
    """
    n, n_t = curves.shape
    _, sigma = noise_sigma(signal, baseline)
    clipped = signal.min(axis=1) < floor_sigma * sigma if sigma > 0 else np.zeros(n, bool)
    peak = curves.max(axis=1)
    # the shared baseline ends at the foot of the mean brain curve, and an artery may rise
    # up to two frames before it: those frames are left out of the baseline statistics
    start, stop, _ = baseline.indices(n_t)
    quiet = slice(start, max(stop - 2, start + min(2, stop - start)))
    base = curves[:, quiet]
    base_sd, _ = noise_sigma(curves, quiet)  # robust: frame-to-frame differences
    noisy = peak < min_cnr * np.maximum(base_sd, 1e-12)
    # a spike (motion, a bad frame): the peak far above that of the 3-frame running median
    smooth_peak = ndimage.median_filter(curves, size=(1, 3), mode="nearest").max(axis=1)
    noisy |= peak > 2.5 * np.maximum(smooth_peak, 1e-12)
    drift = np.zeros(n, dtype=bool)
    # a drift must be large against the peak and significant against the noise (three
    # standard errors), so that a short, noisy baseline does not count as one
    if base.shape[1] >= 4:
        t = times[quiet] - times[quiet].mean()
        sxx = max(float((t**2).sum()), 1e-12)
        slope = (base * t).sum(axis=1) / sxx
        change = np.abs(slope) * float(np.ptp(times[quiet]))
        error = 3.0 * base_sd / np.sqrt(sxx) * float(np.ptp(times[quiet]))
        drift |= (change > max_drift * np.abs(peak)) & (change > error)
    tail = max(2, int(round(0.15 * n_t)))
    if n_t > tail + 2:
        level = curves[:, -tail:].mean(axis=1)
        drift |= (level < -max_drift * np.abs(peak)) & (level < -3.0 * base_sd / np.sqrt(tail))
        # a bolus passes: a curve that never comes down (its tail above half of its peak,
        # a peak taken on the 3-frame running median so that a motion spike does not
        # count) is a drift, e.g. a voxel at the brain's edge that moves out of the brain
        drift |= level > 0.5 * smooth_peak
    return Bunch(clipped=clipped, noisy=noisy, drifting=drift,
                 ok=~(clipped | noisy | drift), sigma=sigma)


def flat_top(curve, fraction=FLAT_FRACTION, n_frames=FLAT_FRAMES):
    """Whether ``curve`` has at least ``n_frames`` consecutive frames within ``fraction``
    of its peak around the peak (a saturated, clipped first pass)."""
    curve = np.asarray(curve, dtype=float)
    peak = int(np.argmax(curve))
    top = curve[peak]
    if not top > 0:
        return False
    near = curve >= (1.0 - fraction) * top
    lo = peak
    while lo > 0 and near[lo - 1]:
        lo -= 1
    hi = peak
    while hi < curve.size - 1 and near[hi + 1]:
        hi += 1
    return hi - lo + 1 >= n_frames


def rise_time(curves, times, fraction=0.5):
    """Time at which each curve first reaches ``fraction`` of its peak (rising edge)."""
    curves = np.atleast_2d(curves)
    n = curves.shape[1]
    peak = np.argmax(curves, axis=1)
    level = fraction * curves[np.arange(curves.shape[0]), peak]
    frames = np.arange(n)
    below = (curves < level[:, None]) & (frames[None, :] < peak[:, None])
    last_below = np.where(below, frames[None, :], -1).max(axis=1)
    return times[np.clip(last_below + 1, 0, n - 1)]


def fall_time(curves, times, fraction=0.5):
    """Time at which each curve first falls back below ``fraction`` of its peak after it
    (falling edge), interpolated linearly between the frames on either side of the
    crossing; the last frame's time when it never does."""
    curves = np.atleast_2d(curves)
    n = curves.shape[1]
    rows = np.arange(curves.shape[0])
    peak = np.argmax(curves, axis=1)
    level = fraction * curves[rows, peak]
    frames = np.arange(n)
    below = (curves < level[:, None]) & (frames[None, :] > peak[:, None])
    first = np.where(below, frames[None, :], n).min(axis=1)
    crossed = first < n
    after = np.minimum(first, n - 1)
    before = np.maximum(after - 1, 0)
    high, low = curves[rows, before], curves[rows, after]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(high > low, (high - level) / (high - low), 1.0)
    share = np.clip(share, 0.0, 1.0)
    when = times[before] + share * (times[after] - times[before])
    return np.where(crossed, when, times[n - 1])


def select_vof(curves, times, *, n_voxels=1, voxel_fraction=0.8, exclude=None,
               min_area=0.0):
    """Indices of the venous curves (see :func:`sklearn_hemo.signal.detect_vof`); empty
    when no curve qualifies (``min_area``: the largest must hold at least this area, e.g.
    that of the partial-volume AIF, which a vein, less diluted, exceeds)."""
    n = curves.shape[0]
    area = trapezoid(curves, times, axis=1)
    reference = np.median(curves, axis=0)
    tissue_rise = rise_time(reference[None], times)[0]
    late = rise_time(curves, times) >= tissue_rise
    # a bolus, not a plateau: the peak (on the 3-frame running median, so that a spike
    # does not count) at least three times the mean of the last third of the frames
    smooth = ndimage.median_filter(curves, size=(1, 3), mode="nearest")
    third = max(1, curves.shape[1] // 3)
    peaked = smooth.max(axis=1) >= 3.0 * np.maximum(curves[:, -third:].mean(axis=1), 0.0)
    keep = late & peaked & (area > 0)
    if exclude is not None:
        keep &= ~np.asarray(exclude, dtype=bool)
    pool = np.flatnonzero(keep)
    if pool.size == 0:
        return np.zeros(0, dtype=np.intp)
    # a vein holds far more contrast than any tissue (whole blood against a few percent
    # of blood): it must stand out of the late curves, not be their upper tail
    typical = float(np.median(area[area > 0])) if (area > 0).any() else 0.0
    order = pool[np.argsort(-area[pool], kind="stable")]
    best = area[order[0]]
    if not best > max(3.0 * typical, min_area):
        return np.zeros(0, dtype=np.intp)
    order = order[area[order] >= voxel_fraction * best]
    return np.sort(order[:n_voxels]).astype(np.intp)[: max(1, min(n_voxels, n))]


def invert_partial_volume(ratio, tissue_ratio, echo_time, share, floor):
    """``R_a`` of the model ``r = (1 - w) m + w exp(-TE R_a)`` for blood share ``w``;
    also whether each frame was held at the floor."""
    argument = (ratio - (1.0 - share) * tissue_ratio) / share
    held = argument < floor
    return -np.log(np.maximum(argument, floor)) / echo_time, held


def _gamma_variate(t, t0, amplitude, alpha, beta):
    """Gamma variate of peak ``amplitude`` at ``t0 + alpha beta`` (0 before ``t0``)."""
    x = np.clip(t - t0, 0.0, None) / (alpha * beta)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = amplitude * np.exp(alpha * (np.log(np.maximum(x, 1e-12)) + 1.0 - x))
    return np.where(x > 0, out, 0.0)


def _gamma_variate_jacobian(t, t0, amplitude, alpha, beta):
    """Derivatives of :func:`_gamma_variate` in its four parameters, columns in order.

    With ``x = (t - t0) / (alpha beta)`` and ``f = A exp(alpha (ln x + 1 - x))``:
    ``df/dt0 = -f (1/x - 1) / beta``, ``df/dA = f / A``, ``df/dalpha = f ln x`` and
    ``df/dbeta = -f alpha (1 - x) / beta``; all 0 before ``t0``. Exact derivatives spare
    the fit the finite differences that were most of the AIF detection's time."""
    f = _gamma_variate(t, t0, amplitude, alpha, beta)
    x = np.maximum(np.clip(t - t0, 0.0, None) / (alpha * beta), 1e-12)
    return np.column_stack([-f * (1.0 / x - 1.0) / beta, f / amplitude, f * np.log(x),
                            -f * alpha * (1.0 - x) / beta])


def _runs(mask):
    """(first, last) index of each run of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def split_held(curve, held):
    """The first-pass run of ``held`` frames (a bool mask) and the curve with every other
    held frame (noise dips, spikes) interpolated from its kept neighbours.

    The first-pass run is the run of at least two frames nearest the peak of the 3-frame
    running median of ``curve`` (a single held frame is a spike, not a dark peak)."""
    curve = np.asarray(curve, dtype=float).copy()
    first_pass = np.zeros(curve.size, dtype=bool)
    runs = [(a, b) for a, b in _runs(held) if b > a]
    if runs:
        peak = int(np.argmax(ndimage.median_filter(curve, size=3, mode="nearest")))
        a, b = min(runs, key=lambda run: 0 if run[0] <= peak <= run[1]
                   else min(abs(run[0] - peak), abs(run[1] - peak)))
        first_pass[a: b + 1] = True
    other = held & ~first_pass
    known = ~held
    if other.any() and known.sum() >= 2:
        frames = np.arange(curve.size)
        curve[other] = np.interp(frames[other], frames[known], curve[known])
    return curve, first_pass


def fill_held_peak(curve, held, times, *, max_gain=4.0):
    """The ``held`` frames (the first-pass peak too dark to invert) replaced by a gamma
    variate fitted to the first pass around them (Thompson et al. 1964; Benner et al.
    1997; the FAIR-Unipd toolbox fits one to its AIF), never below their held value and
    at most ``max_gain`` times the largest kept value; unchanged when the fit fails."""
    from scipy.optimize import least_squares

    if not held.any():
        return curve
    kept = ~held
    top = float(curve[kept].max()) if kept.any() else 0.0
    frames = np.flatnonzero(held)
    first, last = int(frames[0]), int(frames[-1])
    shape = None
    rising = np.flatnonzero(kept[:first] & (curve[:first] < 0.1 * top))
    start = int(rising[-1]) if rising.size else 0
    after = np.flatnonzero(kept & (np.arange(curve.size) > last) & (curve < 0.4 * top))
    stop = int(after[0]) if after.size else curve.size - 1
    fit = np.zeros(curve.size, dtype=bool)
    fit[start: stop + 1] = True
    fit &= kept
    if fit.sum() >= 4 and top > 0:
        t_peak = float(times[(first + last) // 2])
        t0 = float(times[start])

        def residual(p):
            return _gamma_variate(times[fit], *p) - curve[fit]

        def jacobian(p):
            return _gamma_variate_jacobian(times[fit], *p)

        try:
            result = least_squares(
                residual, [t0, 1.5 * top, 3.0, max((t_peak - t0) / 3.0, 0.2)], jac=jacobian,
                bounds=([times[0] - 5.0, top, 1.0, 0.1], [t_peak, max_gain * top, 8.0, 8.0]))
            if result.success:
                shape = np.clip(_gamma_variate(times, *result.x) - curve, 0.0, None) * held
        except ValueError:
            shape = None
    if shape is None:
        return curve
    return curve + shape


def partial_volume_aif(ratio, tissue_ratio, times, echo_time, target_area, to_units,
                       *, noise=0.0, min_share=0.1):
    """The AIF corrected for partial volume, given the area of the venous curve.

    ``ratio``: mean normalised signal of the AIF voxels; ``tissue_ratio``: normalised
    signal of the surrounding tissue; ``to_units``: ``Delta R2*`` of blood to the AIF's
    units (identity, or :func:`sklearn_hemo.relaxivity.blood_concentration`);
    ``target_area``: the VOF's area in those units; ``noise``: standard deviation of
    ``ratio`` over the baseline. Returns a Bunch: ``curve``, ``share`` (the blood share
    ``w``), ``held`` (frames held at the noise floor) and ``scale`` (the final scaling
    to the venous area).
    """
    ratio = np.asarray(ratio, dtype=float)
    tissue_ratio = np.asarray(tissue_ratio, dtype=float)

    def curve_for(share):
        # the blood signal w exp(-TE R_a) is known to within the noise of the ratio: the
        # argument is held above twice that noise (at most 0.5: R_a stays positive)
        floor = min(max(2.0 * noise / share, 1e-3), 0.5)
        r_a, held = invert_partial_volume(ratio, tissue_ratio, echo_time, share, floor)
        curve, first_pass = split_held(to_units(r_a), held)
        return fill_held_peak(curve, first_pass, times), first_pass

    # the voxel's signal never falls below its tissue part (beyond the noise): the
    # deepest drop bounds the share from below, w >= (m - r - 2 noise) / m, which is
    # close to w itself when the arterial peak is dark
    # (on the 3-frame running median: a spike is no drop)
    smooth = ndimage.median_filter(ratio, size=3, mode="nearest")
    lowest = float(np.max((tissue_ratio - smooth - 2.0 * noise)
                          / np.maximum(tissue_ratio, 1e-12)))
    min_share = min(max(min_share, lowest), 1.0)
    # the area grows as the share falls: the largest share that reaches the venous area
    # (the least correction); when none does, the share of the largest area
    shares = np.geomspace(1.0, min_share, 40) if min_share < 1.0 else np.ones(1)
    areas = np.array([trapezoid(curve_for(w)[0], times) for w in shares])
    reached = np.flatnonzero(areas >= target_area)
    if reached.size == 0:
        share = float(shares[int(np.argmax(areas))])
    elif reached[0] == 0:
        share = 1.0
    else:
        hi, lo = float(shares[reached[0] - 1]), float(shares[reached[0]])
        # area(hi) < target <= area(lo); to 1 part in a million of the share (about 16
        # halvings of the step between neighbours): the curve is scaled to the area next
        while hi / lo > 1.0 + 1e-6:
            mid = np.sqrt(lo * hi)
            if trapezoid(curve_for(mid)[0], times) >= target_area:
                lo = mid
            else:
                hi = mid
        share = lo
    curve, held = curve_for(share)
    got = trapezoid(curve, times)
    if not got > 0:  # nothing left to invert: the measured curve, scaled (van Osch 2001)
        curve = to_units(-np.log(np.clip(ratio, 1e-3, None)) / echo_time)
        share, held = 1.0, np.zeros(ratio.size, dtype=bool)
        got = trapezoid(curve, times)
    scale = target_area / got if got > 0 else 1.0
    return Bunch(curve=curve * scale, share=float(share), held=held, scale=float(scale))
