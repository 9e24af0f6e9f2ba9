"""Voxel orientation for display, shared by the risk overlays (:mod:`sklearn_hemo.plotting`)
and the quality-control pictures (:mod:`sklearn_hemo.qc`).

Package-internal: no matplotlib here, only nibabel's orientation arithmetic.
"""

from __future__ import annotations

import numpy as np


def to_ras(volume, affine):
    """``volume`` (3D, or more with extra trailing axes) reoriented to the closest RAS+
    voxel order of ``affine`` (first axis from the patient's left to right,
    second posterior to anterior, third inferior to superior), with nibabel."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    transform = ornt_transform(io_orientation(np.asarray(affine)), axcodes2ornt("RAS"))
    return apply_orientation(np.asanyarray(volume), transform)


def radiological_view(ras, k):
    """Axial slice ``k`` of a RAS volume as an image array for ``imshow(origin="lower")``
    in the radiological convention: the patient's right on the left, anterior up."""
    return np.asarray(ras[::-1, :, k]).T
