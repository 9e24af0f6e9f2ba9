"""Putting a patient's 3D images onto its PWI grid through the affines.

Shared by :func:`~sklearn_hemo.datasets.import_cohort` (which writes the resampled images)
and ``load_cohort(..., resample=True)`` (which resamples in memory); kept apart from both
so that the reader and the importer do not import each other.
"""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np

from ..exceptions import CohortError
from ..utils._warnings import find_stack_level

_SUPERSAMPLE = 3  # sub-voxels per axis when a mask's covered fraction is measured


def _squeeze_shape(shape):
    shape = tuple(shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _voxel_centres(shape, affine, target_affine):
    """Coordinates of the ``shape`` grid's voxel centres in the voxels of ``target_affine``."""
    ijk = np.indices(shape, dtype=float).reshape(3, -1)
    transform = np.linalg.solve(target_affine, affine)
    return transform[:3, :3] @ ijk + transform[:3, 3:]


def _inside(pwi_shape, pwi_affine, src_shape, src_affine):
    """Which PWI voxel centres lie within the source image's field of view."""
    coords = _voxel_centres(pwi_shape, pwi_affine, src_affine)
    size = np.asarray(src_shape[:3], dtype=float)[:, None]
    return np.all((coords >= -0.5) & (coords <= size - 0.5), axis=0).reshape(pwi_shape)


def _check_overlap(pid, path, img, pwi):
    shape = _squeeze_shape(img.shape)
    inside = _inside(pwi.shape[:3], pwi.affine, shape, img.affine)
    if not inside.any():
        raise CohortError(
            f"participant {pid}: {path} does not overlap the PWI field of view at all (their "
            "affines place them in different parts of scanner space). Check that both come "
            "from the same participant and session, or register the image to the PWI first."
        )


def _as_3d(img):
    data = np.asanyarray(img.dataobj)
    return data.reshape(_squeeze_shape(data.shape))


def resample_to_grid(data, affine, shape, target_affine, *, kind="image",
                     mask_interpolation="fraction", mask_threshold=0.5):
    """Resample a 3D array onto the grid ``(shape, target_affine)`` through the affines.

    ``kind="image"``: linear interpolation; PWI voxels whose centre lies outside the
    source field of view are 0. ``kind="mask"``: ``mask_interpolation="fraction"`` takes
    the fraction of each target voxel covered by the mask (nearest neighbour on
    ``_SUPERSAMPLE**3`` sub-voxels) and keeps the voxels where it reaches
    ``mask_threshold``; ``"nearest"`` takes the mask value at the voxel centre. Returns
    float32 for images, uint8 (0/1) for masks.
    """
    from nibabel.processing import resample_from_to

    shape = tuple(int(n) for n in shape[:3])
    if kind == "image":
        src = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
        out = resample_from_to(src, (shape, target_affine), order=1, mode="nearest")
        out = np.asarray(out.dataobj, dtype=np.float32)
        out[~_inside(shape, target_affine, data.shape, affine)] = 0
        return out
    # a border of zeros: nearest-neighbour sampling keeps the outer half of the edge
    # voxels (scipy's "constant" mode would drop it) and reads 0 beyond the field of view
    padded = np.pad((np.asarray(data) > 0).astype(np.uint8), 1)
    shift = np.eye(4)
    shift[:3, 3] = -1
    src = nib.Nifti1Image(padded, affine @ shift)
    if mask_interpolation == "nearest":
        out = resample_from_to(src, (shape, target_affine), order=0, mode="nearest")
        return (np.asarray(out.dataobj) > 0).astype(np.uint8)
    s = _SUPERSAMPLE
    sub = np.diag([1.0 / s, 1.0 / s, 1.0 / s, 1.0])
    sub[:3, 3] = 0.5 / s - 0.5  # sub-voxel centres spread evenly over each voxel
    fine = resample_from_to(src, (tuple(n * s for n in shape), target_affine @ sub), order=0,
                            mode="nearest")
    fraction = np.asarray(fine.dataobj, dtype=np.float32).reshape(
        shape[0], s, shape[1], s, shape[2], s).mean(axis=(1, 3, 5))
    return (fraction >= mask_threshold - 1e-6).astype(np.uint8)


def resample_patient_images(patient, *, mask_interpolation="fraction", mask_threshold=0.5):
    """Put a patient's 3D images that are off the PWI grid onto it, in memory.

    Used by ``load_cohort(..., resample=True)``; warns naming each resampled file.
    """
    pwi = patient.pwi
    if pwi is None or len(pwi.shape) != 4:
        return patient  # check_patient reports it
    grid, affine = tuple(pwi.shape[:3]), pwi.affine
    for name in ("dwi_b0", "dwi_b1000", "brain_mask", "ht_mask"):
        img = getattr(patient, name)
        if img is None:
            continue
        shape = _squeeze_shape(img.shape)
        if len(shape) != 3:
            continue  # check_patient reports it
        if shape == grid and np.allclose(img.affine, affine, atol=1e-3):
            continue
        where = patient.source(name) or f"{name} (in memory)"
        _check_overlap(patient.id, where, img, pwi)
        kind = "image" if name.startswith("dwi") else "mask"
        data = resample_to_grid(_as_3d(img), img.affine, grid, affine, kind=kind,
                                mask_interpolation=mask_interpolation,
                                mask_threshold=mask_threshold)
        patient._images[name] = nib.Nifti1Image(data, affine)
        patient._sources[name] = None
        warnings.warn(f"participant {patient.id}: {where} is not on the PWI grid; resampled "
                      "onto it in memory through the affines ("
                      f"{'linear' if kind == 'image' else mask_interpolation}).",
                      UserWarning, stacklevel=find_stack_level())
    return patient
