"""A simulated scanner export: :func:`simulate_raw_tree`.

The cohort of :func:`make_stroke_cohort` is *aligned*: PWI, DWI and the HT annotation
share one grid and one pose. A scanner gives nothing of the kind. This module writes the
same patients as a BIDS-style tree the way they would come off the scanner, with known
rigid transforms:

* acute session (``ses-acute``): the DSC series with head motion (a step of the head
  during the series and one to three spikes, up to about two voxels and a few degrees),
  and the DWI series (``b0``, ``b1000``) in a slightly different pose (another series);
* follow-up session (``ses-followup``): a GRE-like T2*-weighted image
  (``anat/*_T2starw.nii.gz``) on its own grid (finer, another field of view), the head
  repositioned by 8-17 degrees and a few mm, the haemorrhage dark; and the reader's HT
  mask drawn on it (``anat/*_label-HT_mask.nii.gz``, the aligned cohort's annotation
  carried onto the GRE grid).

The transforms (the world matrix from an acute-session point to the same point of each
acquisition) are written to ``derivatives/simulation/transforms.json``; the aligned
cohort is returned (and rebuilt by :func:`make_stroke_cohort` with the same arguments).
"""

from __future__ import annotations

import json
import os
from numbers import Integral, Real
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation
from sklearn.utils import Bunch

from .._io import atomic_write_text
from ..utils.fixes import Interval, validate_params
from ._simulate import _stroke_cohort

__all__ = ["simulate_raw_tree"]

_ACUTE, _FOLLOWUP = "ses-acute", "ses-followup"
_GRE_FOV_MM = np.array([230.0, 230.0, 110.0])
_GRE_OFFSET_MM = np.array([0.0, 6.0, -4.0])  # the follow-up's field of view is centred elsewhere


def _euler(rotation_deg, translation_mm):
    """World matrix of ITK's Euler3DTransform about the origin (R = Rz Ry Rx)."""
    out = np.eye(4)
    out[:3, :3] = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    out[:3, 3] = translation_mm
    return out


def _signs(rng, n):
    return rng.choice([-1.0, 1.0], size=n)


def _followup_pose(rng, angle_range, shift_range):
    # mostly a nod (about x, left-right) and a turn (about z), as a head repositioned in
    # the coil; total angle in angle_range
    weights = np.abs(rng.normal([0.6, 0.25, 0.75], 0.15))
    direction = weights / np.linalg.norm(weights) * _signs(rng, 3)
    angle = rng.uniform(*angle_range)
    shift = rng.uniform(*shift_range, size=3) * _signs(rng, 3)
    rot = direction * angle
    # rescale the Euler angles so that the total angle is the one drawn
    total = np.degrees(Rotation.from_euler("xyz", rot, degrees=True).magnitude())
    scale = angle / max(float(total), 1e-9)
    rot = rot * scale
    return rot, shift, _euler(rot, shift)


def _resample(data, affine, matrix, grid, grid_affine, order, mode="constant"):
    """``data`` (on ``affine``) seen in the pose ``matrix`` on ``grid``: the value at grid
    point x is that of the reference at inv(matrix) x (``mode``: outside the reference,
    zero or, ``"nearest"``, its edge continued)."""
    to_ref = np.linalg.inv(affine) @ np.linalg.inv(matrix) @ grid_affine
    return ndimage.affine_transform(np.asarray(data, np.float32), to_ref[:3, :3],
                                    offset=to_ref[:3, 3], output_shape=tuple(grid),
                                    order=order, mode=mode, cval=0.0)


def _frame_motion(rng, n_frames, zooms):
    """Per-frame pose of the head during the DSC series: a step and spikes."""
    rotations = np.zeros((n_frames, 3))
    shifts = np.zeros((n_frames, 3))
    onset = int(rng.integers(n_frames // 3, 2 * n_frames // 3 + 1))
    step_shift = rng.uniform(1.0, 1.8, size=2) * zooms[:2] * _signs(rng, 2)
    shifts[onset:, :2] = step_shift
    shifts[onset:, 2] = rng.uniform(-1.0, 1.0)
    rotations[onset:] = [rng.uniform(-1.5, 1.5), rng.uniform(-1.0, 1.0),
                         rng.uniform(1.0, 3.0) * rng.choice([-1.0, 1.0])]
    for t in rng.choice(np.arange(1, n_frames), size=int(rng.integers(1, 4)), replace=False):
        shifts[t, :2] += rng.uniform(0.8, 1.5, size=2) * zooms[:2] * _signs(rng, 2)
        rotations[t, 2] += rng.uniform(0.5, 2.0) * rng.choice([-1.0, 1.0])
    return rotations, shifts


def _save(img, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def _dict(rot, shift, matrix):
    return {"rotation_deg": np.round(rot, 4).tolist(),
            "translation_mm": np.round(shift, 4).tolist(),
            "matrix": np.round(matrix, 6).tolist()}


@validate_params(
    {
        "out_dir": [str, os.PathLike],
        "n_patients": [Interval(Integral, 1, None, closed="left")],
        "shape": [tuple, list],
        "followup_angle": [tuple, list],
        "followup_shift": [tuple, list],
        "snr": [Interval(Real, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "overwrite": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def simulate_raw_tree(out_dir, n_patients=2, shape=(48, 48, 8), *, followup_angle=(8.0, 17.0),
                      followup_shift=(1.0, 6.0), snr=30.0, random_state=0, overwrite=False):
    """Write simulated patients as a scanner would give them: a BIDS-style tree, unaligned.

    The patients are those of ``make_stroke_cohort(n_patients, shape,
    random_state=random_state)`` (the realistic default; see below for motion), the
    *aligned* cohort. Per
    participant ``sub-NNN`` the tree holds:

    * ``ses-acute/perf/*_dsc.nii.gz`` (and its JSON sidecar): the DSC series with head
      motion: from a random frame of the middle third on, the head stays moved by 1-1.8
      voxels in-plane and 1-3 degrees, and one to three single frames jump by 0.8-1.5
      voxels (the frames keep the grid and the affine, as a scanner records them);
    * ``ses-acute/dwi/*_dwi.nii.gz`` with ``.bval``: b0 and b1000 in another pose
      (0.5-3 degrees, 0.5-3 mm; where its slab reaches beyond the aligned cohort's, the
      edge slice is continued rather than left empty);
    * ``ses-followup/anat/*_T2starw.nii.gz``: a T2*-weighted image on its own grid
      (field of view 230 x 230 x 110 mm, 4/3 of the in-plane matrix and twice the slices,
      centred elsewhere), the head turned by ``followup_angle`` degrees and moved by
      ``followup_shift`` mm per axis, haemorrhage hypointense, Rician noise at ``snr``;
    * ``ses-followup/anat/*_label-HT_mask.nii.gz``: the reader's HT annotation (that of
      the aligned cohort) on the GRE grid (empty for patients without HT);
    * ``participants.tsv`` (``participant_id``, ``ht``) and
      ``derivatives/simulation/transforms.json``: per participant the world matrix
      mapping a point of the acute session (the aligned cohort's frame) to the same
      anatomical point of the follow-up GRE (``followup``), of the DWI (``dwi``) and of
      each DSC frame (``dsc``), with their Euler angles (degrees) and translations (mm).

    The aligned patients are those of the realistic cohort without its own simulated
    head motion (30 % of its patients move; here the draw is kept and no one moves), so
    that the tree's motion is the only one and is known.

    Parameters
    ----------
    out_dir : path-like
        The tree to write.
    n_patients : int >= 1, default=2
        Number of participants.
    shape : tuple of 3 int, default=(48, 48, 8)
        The acute matrix (that of the aligned cohort).
    followup_angle : (low, high), default=(8.0, 17.0)
        Range of the follow-up head rotation, degrees.
    followup_shift : (low, high), default=(1.0, 6.0)
        Range of the follow-up translation per axis, mm.
    snr : float >= 1, default=30.0
        Signal-to-noise ratio of the GRE image.
    random_state : int >= 0, default=0
        Seed of the patients and of the transforms.
    overwrite : bool, default=False
        Write into a non-empty ``out_dir``.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``aligned`` (the aligned :class:`Cohort`, in memory), ``transforms`` (as written to
        ``transforms.json``) and ``path`` (``out_dir``).

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_hemo.datasets import simulate_raw_tree
    >>> raw = simulate_raw_tree(tempfile.mkdtemp(), 1, (24, 24, 6), random_state=0)
    >>> sorted(raw.transforms["sub-001"])
    ['aligned_id', 'dsc', 'dwi', 'followup']
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty. Choose an empty folder, or pass "
                              "overwrite=True (--overwrite).")
    shape = tuple(int(v) for v in shape)
    for name, spec in (("followup_angle", followup_angle), ("followup_shift", followup_shift)):
        if len(spec) != 2 or not 0 <= spec[0] <= spec[1]:
            raise ValueError(f"{name} must be a (low, high) range with 0 <= low <= high, got "
                             f"{spec!r}.")
    # still patients: the raw tree's own head motion is its registration problem
    aligned = _stroke_cohort(n_patients, shape, random_state=random_state, n_jobs=1,
                             motion_share=0.0)
    transforms = {}
    rows = ["participant_id\tht"]
    for k, patient in enumerate(aligned):
        rng = np.random.default_rng([int(random_state), 31, k])
        pid = f"sub-{k + 1:03d}"
        affine = patient.affine
        zooms = np.abs(np.diag(affine)[:3])
        # -- follow-up GRE and the reader's mask on its grid ----------------------------
        rot, shift, pose = _followup_pose(rng, followup_angle, followup_shift)
        gre_shape = (max(4, round(shape[0] * 4 / 3)), max(4, round(shape[1] * 4 / 3)),
                     max(2, 2 * shape[2]))
        gre_zooms = _GRE_FOV_MM / np.asarray(gre_shape, float)
        gre_affine = np.diag(np.append(gre_zooms, 1.0))
        gre_affine[:3, 3] = -gre_zooms * (np.asarray(gre_shape) - 1) / 2.0 + _GRE_OFFSET_MM
        truth = patient.truth
        bleed = ndimage.gaussian_filter(truth["ht_clean"].astype(np.float32), 0.7)
        contrast = np.where(truth["tissue"] == 2, 1.15, 1.0)  # grey matter brighter on T2*
        gre_ref = truth["s0"] * contrast * (1.0 - 0.7 * np.clip(bleed * 1.5, 0, 1))
        gre = _resample(gre_ref, affine, pose, gre_shape, gre_affine, order=1)
        sigma = float(np.percentile(gre_ref, 99)) / snr
        gre = np.abs(gre + sigma * rng.standard_normal(gre.shape)
                     + 1j * sigma * rng.standard_normal(gre.shape))
        ht_mask = np.asarray(patient.ht_mask.dataobj) > 0
        mask = _resample(ht_mask.astype(np.float32), affine, pose, gre_shape, gre_affine,
                         order=0) > 0.5
        anat = out / pid / _FOLLOWUP / "anat"
        _save(nib.Nifti1Image(np.rint(gre).astype(np.int16), gre_affine),
              anat / f"{pid}_{_FOLLOWUP}_T2starw.nii.gz")
        _save(nib.Nifti1Image(mask.astype(np.uint8), gre_affine),
              anat / f"{pid}_{_FOLLOWUP}_label-HT_mask.nii.gz")
        # -- DWI, another series of the acute session -----------------------------------
        dwi_rot = rng.uniform(0.5, 3.0, size=3) * _signs(rng, 3) * [0.5, 0.5, 1.0]
        dwi_shift = rng.uniform(0.5, 3.0, size=3) * _signs(rng, 3)
        dwi_pose = _euler(dwi_rot, dwi_shift)
        # the head goes on beyond the 100 mm slab of the aligned cohort: where the DWI's
        # slab reaches past it, the edge slice is continued, not zero-filled (a scanner
        # images anatomy there; a zero-filled sixth of the slab was a mismatch that held
        # the DWI registration over a millimetre from the truth, issue 31)
        dwi = np.stack([_resample(img.get_fdata(), affine, dwi_pose, shape, affine, order=1,
                                  mode="nearest")
                        for img in (patient.dwi_b0, patient.dwi_b1000)], axis=-1)
        folder = out / pid / _ACUTE / "dwi"
        _save(nib.Nifti1Image(np.rint(dwi).astype(np.int16), affine),
              folder / f"{pid}_{_ACUTE}_dwi.nii.gz")
        (folder / f"{pid}_{_ACUTE}_dwi.bval").write_text("0 1000\n", encoding="utf-8")
        # -- DSC with head motion --------------------------------------------------------
        pwi = np.asarray(patient.raw_pwi.dataobj)
        n_frames = pwi.shape[-1]
        rotations, shifts = _frame_motion(rng, n_frames, zooms)
        moved = np.array(pwi, copy=True)
        matrices = []
        for t in range(n_frames):
            matrix = _euler(rotations[t], shifts[t])
            matrices.append(np.round(matrix, 6).tolist())
            if np.any(rotations[t]) or np.any(shifts[t]):
                frame = _resample(pwi[..., t], affine, matrix, shape, affine, order=1)
                moved[..., t] = np.clip(np.rint(frame), -32768, 32767).astype(pwi.dtype)
        img = nib.Nifti1Image(moved, affine, header=patient.raw_pwi.header.copy())
        folder = out / pid / _ACUTE / "perf"
        _save(img, folder / f"{pid}_{_ACUTE}_dsc.nii.gz")
        sidecar = {"EchoTime": patient.echo_time, "RepetitionTime": patient.repetition_time}
        if patient.field_strength is not None:  # as dcm2niix writes it
            sidecar["MagneticFieldStrength"] = patient.field_strength
        (folder / f"{pid}_{_ACUTE}_dsc.json").write_text(json.dumps(sidecar),
                                                          encoding="utf-8")
        rows.append(f"{pid}\t{int(patient.ht)}")
        transforms[pid] = {
            "aligned_id": patient.id,
            "followup": {**_dict(rot, shift, pose), "shape": list(gre_shape),
                         "affine": np.round(gre_affine, 6).tolist()},
            "dwi": _dict(dwi_rot, dwi_shift, dwi_pose),
            "dsc": {"rotation_deg": np.round(rotations, 4).tolist(),
                    "translation_mm": np.round(shifts, 4).tolist(),
                    "moved_frames": [int(t) for t in np.flatnonzero(
                        np.any(rotations != 0, axis=1) | np.any(shifts != 0, axis=1))],
                    "matrices": matrices},
        }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "participants.tsv", "\n".join(rows) + "\n")
    log = out / "derivatives" / "simulation"
    log.mkdir(parents=True, exist_ok=True)
    atomic_write_text(log / "transforms.json", json.dumps(
        {"convention": "matrix: world (mm) point of the acute session -> same point in "
                       "the acquisition; Euler angles x, y, z in degrees (z applied first)",
         "participants": transforms}, indent=1) + "\n")
    return Bunch(aligned=aligned, transforms=transforms, path=out)
