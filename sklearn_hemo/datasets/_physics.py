"""The simulator's shared physics: the drawing of anatomy and perfusion, the arterial
input function, tissue curves with leakage, Rician noise and the patient they make.

Both simulators use it: the easy generator (``_simulate``) and the realistic default
(``_realistic``); a module of its own so that neither imports the other's internals
(``_simulate`` dispatches to ``_realistic``, which once imported these from it). Moved
from ``_simulate.py`` unchanged.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

from ._cohort import Patient

_FOV_MM = np.array([240.0, 240.0, 100.0])  # in-plane FOV 24 cm, 20 slices of 5 mm
_FINE_DT = 0.25  # s, grid of the exact piecewise-linear convolution recursion
_K2_REF = 2e-4  # 1/s, reference leakage of the risk logit
_LABEL_NOISE = 0.5


def _make_patient(pid, pwi, b0, b1000, ht_mask, *, echo_time, repetition_time, ht, truth,
                  brain_mask=None, aif=None, field_strength=None):
    """A :class:`Patient` of in-memory images on the simulator's grid (TR in the header)."""
    affine = _affine(pwi.shape[:3])
    pwi_img = nib.Nifti1Image(pwi, affine)
    pwi_img.header.set_xyzt_units("mm", "sec")
    pwi_img.header.set_zooms(tuple(np.abs(np.diag(affine)[:3])) + (repetition_time,))
    return Patient(
        pid, pwi_img, nib.Nifti1Image(b0, affine), nib.Nifti1Image(b1000, affine),
        echo_time=echo_time, repetition_time=repetition_time, ht=int(bool(ht)),
        brain_mask=None if brain_mask is None else nib.Nifti1Image(
            brain_mask.astype(np.uint8), affine),
        ht_mask=nib.Nifti1Image(ht_mask.astype(np.uint8), affine), aif=aif, truth=truth,
        field_strength=field_strength)


def _gamma_variate(t, alpha, beta):
    """Gamma variate with peak 1 at ``alpha * beta``; zero for ``t <= 0``."""
    t = np.maximum(t, 0.0)
    x = t / (alpha * beta)
    with np.errstate(divide="ignore"):
        return np.where(t > 0, np.exp(alpha * (np.log(x) + 1.0 - x)), 0.0)


def _aif(params, t):
    t0, amp, alpha, beta, ratio, t_rec, alpha_r, beta_r = params
    return amp * (_gamma_variate(t - t0, alpha, beta)
                  + ratio * _gamma_variate(t - t0 - t_rec, alpha_r, beta_r))


def _exp_conv_coefs(tau, dt):
    """Coefficients of the exact convolution of a piecewise-linear input with exp(-t/tau)."""
    decay = np.exp(-dt / tau)
    a = -tau * np.expm1(-dt / tau)  # integral of the kernel over one step
    b = tau * dt - tau * a  # integral of s * kernel(dt - s) over one step
    return decay, a - b / dt, b / dt


def _tissue_curves(aif_params, times, cbf, cbv, delay, beta, k2):
    """Apparent Delta R2* curves (n_voxels, n_times) of the model in the module docstring."""
    n = int(np.ceil(times.max(initial=0.0) / _FINE_DT)) + 2
    fine = np.arange(n) * _FINE_DT
    x = _aif(aif_params, fine)
    mtt = 60.0 * cbv / np.maximum(cbf, 1e-6)
    flow = cbf / 6000.0
    beta = np.maximum(beta, 1e-3)
    d_dec, d0, d1 = _exp_conv_coefs(beta, _FINE_DT)
    d0, d1 = d0 / beta, d1 / beta  # unit-area dispersion kernel
    r_dec, r0, r1 = _exp_conv_coefs(mtt, _FINE_DT)
    y = np.zeros_like(cbf)  # dispersed AIF
    z = np.zeros_like(cbf)  # dispersed AIF convolved with the residue
    area = np.zeros_like(cbf)  # running integral of the dispersed AIF
    history = np.zeros((n, cbf.size), dtype=np.float32)
    for i in range(n - 1):
        y_next = d_dec * y + d0 * x[i] + d1 * x[i + 1]
        z = r_dec * z + r0 * y + r1 * y_next
        area += 0.5 * _FINE_DT * (y + y_next)
        y = y_next
        history[i + 1] = flow * z - k2 * area
    # sample at t - delay by linear interpolation on the fine grid (0 before arrival)
    pos = np.clip((times[None, :] - delay[:, None]) / _FINE_DT, 0.0, n - 1.0)
    lo = np.minimum(pos.astype(int), n - 2)
    frac = pos - lo
    cols = np.arange(cbf.size)[:, None]
    return history[lo, cols] * (1.0 - frac) + history[lo + 1, cols] * frac


def _rician(rng, clean, sigma):
    if sigma == 0:
        return clean
    sigma = np.float32(sigma)
    real = rng.standard_normal(clean.shape, dtype=np.float32)
    real *= sigma
    real += clean
    imag = rng.standard_normal(clean.shape, dtype=np.float32)
    imag *= sigma
    return np.hypot(real, imag, out=real)


def _to_int16(values):
    return np.clip(np.rint(values), 0, np.iinfo(np.int16).max).astype(np.int16)


def _grid(shape):
    axes = [(np.arange(n) + 0.5) / n * 2.0 - 1.0 for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def _smooth_field(rng, shape, sigma_frac):
    """Zero-mean, unit-variance Gaussian random field, correlation ~ sigma_frac of the FOV."""
    noise = rng.standard_normal(shape)
    sigma = [sigma_frac * n / 2.0 for n in shape]
    field = ndimage.gaussian_filter(noise, sigma, mode="reflect", truncate=3.0)
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def _draw_anatomy(rng, shape, severity, *, axes=(0.8, 0.92), lesion_spec=None):
    """Brain, tissue classes, lesion and leakage maps (see the module docstring).

    ``axes`` are the in-plane semi-axes of the brain in units of half the field of view;
    ``lesion_spec`` (realistic cohorts) overrides the severity-driven lesion size and leakage
    with ``{"r_core", "ratio", "leak_fraction", "k2_max"}``. The default arguments give
    the ``difficulty="easy"`` anatomy, draw for draw.
    """
    x, y, z = _grid(shape)
    size = rng.uniform(0.92, 1.0)
    radius = np.sqrt((x / (axes[0] * size)) ** 2 + (y / (axes[1] * size)) ** 2
                     + (z / 1.15) ** 2)
    radius = radius * (1.0 + 0.04 * _smooth_field(rng, shape, 0.3))
    brain = radius < 1.0
    ribbon = 0.22 + 0.05 * _smooth_field(rng, shape, 0.2)
    grey = brain & ((1.0 - radius < ribbon) | (_smooth_field(rng, shape, 0.15) > 1.3))
    tissue = np.where(brain, np.where(grey, 1, 2), 0).astype(np.uint8)

    patient_factor = rng.uniform(0.85, 1.15)
    cbf_n = np.where(grey, 60.0, 25.0) * patient_factor
    cbf_n = cbf_n * (1 + 0.08 * _smooth_field(rng, shape, 0.2))
    cbv_n = np.where(grey, 4.0, 2.0) * patient_factor
    cbv_n = cbv_n * (1 + 0.08 * _smooth_field(rng, shape, 0.2))
    adc_n = np.where(grey, 0.85e-3, 0.72e-3) * (1 + 0.03 * _smooth_field(rng, shape, 0.2))
    delay = np.clip(0.5 + 0.3 * _smooth_field(rng, shape, 0.4), 0.0, 1.5)

    # lesion: one irregular ellipsoid in one hemisphere, larger in more severe patients
    side = rng.choice([-1.0, 1.0])
    centre = np.array([side * rng.uniform(0.25, 0.5), rng.uniform(-0.45, 0.45),
                       rng.uniform(-0.3, 0.3)])
    centre[:2] *= np.asarray(axes) / (0.8, 0.92)  # the same place in a smaller brain
    r_core = (0.15 + 0.15 * severity) * rng.uniform(0.85, 1.15)
    ratio = rng.uniform(1.3, 1.8)
    if lesion_spec is not None:
        r_core, ratio = lesion_spec["r_core"], lesion_spec["ratio"]
    dist = np.sqrt(((x - centre[0]) / r_core) ** 2 + ((y - centre[1]) / r_core) ** 2
                   + ((z - centre[2]) / (1.5 * r_core)) ** 2)
    dist = dist * (1.0 + 0.2 * _smooth_field(rng, shape, 0.25))
    nearest = tuple(np.clip(((centre + 1.0) / 2.0 * shape).astype(int), 0, np.array(shape) - 1))
    dist[nearest] = 0.0  # the lesion always covers the voxel at its centre
    core = brain & (dist < 1.0)
    penumbra = brain & ~core & (dist < ratio)
    depth = np.clip(1.0 - dist, 0.0, 1.0)  # 0 at the core border, 1 at its centre
    toward = np.clip((ratio - dist) / (ratio - 1.0), 0.0, 1.0)  # 1 at the core border

    cbf_ratio = np.ones(shape)
    cbv_ratio = np.ones(shape)
    adc_ratio = np.ones(shape)
    wobble = _smooth_field(rng, shape, 0.2)
    cbf_ratio[penumbra] = np.clip(0.7 - 0.4 * toward + 0.03 * wobble, 0.3, 0.7)[penumbra]
    cbv_ratio[penumbra] = (1.15 - 0.35 * toward)[penumbra]
    delay[penumbra] = np.clip(3.0 + 7.0 * toward + 0.5 * wobble, 3.0, 10.0)[penumbra]
    cbf_ratio[core] = (0.3 - 0.25 * depth)[core]
    cbv_ratio[core] = (0.7 - 0.4 * depth)[core]
    adc_ratio[core] = (0.75 - 0.3 * depth)[core]
    delay[core] = (8.0 + 3.0 * depth)[core]
    tissue[penumbra] = 3
    tissue[core] = 4

    # blood-brain-barrier leakage in part of the lesion, more in severe patients
    lesion = core | penumbra
    k2 = np.zeros(shape)
    leak_field = _smooth_field(rng, shape, 0.25)
    leak_fraction = np.clip(0.15 + 0.5 * severity + 0.1 * rng.standard_normal(), 0.05, 0.9)
    k2_max = 1e-4 * (0.5 + 1.5 * severity) * rng.lognormal(0.0, 0.3)
    if lesion_spec is not None:
        leak_fraction, k2_max = lesion_spec["leak_fraction"], lesion_spec["k2_max"]
    if lesion.any():
        threshold = np.quantile(leak_field[lesion], 1.0 - leak_fraction)
        leaky = lesion & (leak_field >= threshold)
        strength = np.where(core, 1.0, 0.4 + 0.6 * toward) * np.clip(
            1.0 + 0.3 * leak_field, 0.3, None)
        k2[leaky] = (k2_max * strength)[leaky]

    cbf = np.where(brain, cbf_n * cbf_ratio, 0.0)
    cbv = np.where(brain, cbv_n * cbv_ratio, 0.0)
    mtt = np.where(brain, 60.0 * cbv / np.maximum(cbf, 1e-6), 0.0)
    beta = np.where(brain, 0.5 + 0.35 * delay, 0.0)
    delay = np.where(brain, delay, 0.0)
    tmax = np.where(brain, _tmax(delay, mtt, beta), 0.0)
    return {
        "tissue": tissue,
        "cbf": cbf,
        "cbv": cbv,
        "mtt": mtt,
        "tmax": tmax,
        "delay": delay,
        "dispersion": beta,
        "k2": k2,
        "adc": np.where(brain, adc_n * adc_ratio, 0.0),
        "_cbv_normal": cbv_n,
        "_adc_normal": adc_n,
        **({} if lesion_spec is None else {"_radius": radius, "_leak_field": leak_field,
                                           "_dist": dist, "_ratio": ratio}),
    }


def _tmax(delay, mtt, beta):
    """Time of the maximum of the dispersed residue: ``delay + t*`` (module docstring)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t_star = np.where(np.isclose(mtt, beta), mtt,
                          np.log(mtt / beta) * beta * mtt / (mtt - beta))
    return delay + np.nan_to_num(t_star)


def _affine(shape):
    zooms = _FOV_MM / np.asarray(shape, dtype=float)
    affine = np.diag(np.append(zooms, 1.0))
    affine[:3, 3] = -zooms * (np.asarray(shape) - 1) / 2.0
    return affine


def _draw(rng, spec, integer=False):
    low, high = spec
    if integer:
        return rng.integers(int(low), int(high) + 1)
    return rng.uniform(low, high)
