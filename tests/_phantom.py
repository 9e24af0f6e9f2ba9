"""A small hand-built DSC head for the tests of the automatic steps (before and beside the
realistic simulator): brain, a dark skull gap, a bright scalp ring, arteries with partial
volume, veins that peak later with a larger area, and brighter leading frames."""

import nibabel as nib
import numpy as np

from sklearn_hemo.datasets import Patient


def _gamma(t, t0, alpha=3.0, beta=1.3):
    x = np.clip(t - t0, 0, None) / (alpha * beta)
    with np.errstate(divide="ignore"):
        return np.where(x > 0, np.exp(alpha * (np.log(np.maximum(x, 1e-12)) + 1 - x)), 0.0)


def head_phantom(pid="sub-ph", *, shape=(40, 40, 3), n_frames=50, tr=1.5, te=0.03,
                 excess=(0.25, 0.06), seed=0, affine=None, snr=40.0):
    """A Patient and its truth dict (``head``: 1 brain 2 scalp; ``aif_voxels``,
    ``vein_voxels``, ``n_nonsteady``)."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    t = np.arange(n_frames) * tr
    x, y = np.meshgrid(np.arange(nx) - (nx - 1) / 2, np.arange(ny) - (ny - 1) / 2,
                       indexing="ij")
    r = np.sqrt((x / (0.36 * nx)) ** 2 + (y / (0.42 * ny)) ** 2)
    brain2d = r < 1.0
    scalp2d = (r >= 1.12) & (r < 1.25)
    head = np.zeros(shape, np.uint8)
    head[brain2d] = 1
    head[scalp2d] = 2
    brain = head == 1
    t0 = 8 * tr
    aif = 400.0 * (_gamma(t, t0) + 0.15 * _gamma(t, t0 + 9, 3.0, 2.5))
    # tissue: delayed, dispersed, CBV 3%
    kernel = np.exp(-np.arange(0, 20, tr) / 3.0)
    kernel /= kernel.sum()
    dispersed = np.convolve(aif, kernel)[:n_frames]
    tissue = 0.03 * np.interp(t - 1.0, t, dispersed, left=0)
    conc = np.zeros(shape + (n_frames,))
    conc[brain] = tissue
    # arteries: 8 voxels in the middle cerebral territories, partial volume 0.4-1
    arteries = [(nx // 2 - 6, ny // 2 + d, k) for d in (-1, 0, 1) for k in range(nz)][:8]
    for a, b, c in arteries:
        f = 0.4 + 0.6 * rng.random()
        conc[a, b, c] = f * aif + (1 - f) * tissue
    # veins: the sinus, peaking 4 s after the tissue, 1.5 times the arterial area
    vein_curve = np.interp(t - 5.0, t, np.convolve(aif, np.exp(-np.arange(0, 20, tr) / 2.0)
                                                  / np.exp(-np.arange(0, 20, tr) / 2.0)
                                                  .sum())[:n_frames], left=0) * 1.5
    veins = [(nx // 2 + dx, int(0.42 * ny * 0.85) + ny // 2, k) for dx in (-1, 0, 1)
             for k in range(nz)][:8]
    for a, b, c in veins:
        conc[a, b, c] = vein_curve
    s0 = np.where(brain, 900.0, 0.0) + np.where(head == 2, 700.0, 0.0)
    signal = s0[..., None] * np.exp(-te * conc)
    factors = np.ones(n_frames)
    factors[: len(excess)] += np.asarray(excess)
    signal *= factors
    sigma = 900.0 / snr
    signal = np.hypot(signal + rng.normal(0, sigma, signal.shape),
                      rng.normal(0, sigma, signal.shape))
    affine = np.diag([6.0, 6.0, 6.0, 1.0]) if affine is None else affine
    dwi = nib.Nifti1Image(s0.astype(np.float32), affine)
    patient = Patient(pid, nib.Nifti1Image(signal.astype(np.float32), affine), dwi, dwi,
                      echo_time=te, repetition_time=tr)
    truth = {"head": head, "aif_voxels": np.array(arteries), "vein_voxels": np.array(veins),
             "n_nonsteady": np.int64(len(excess))}
    return patient, truth
