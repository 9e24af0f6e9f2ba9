"""Features from pre-defined perfusion maps: :class:`PerfusionMapExtractor`.

The paper's premise is that the source PWI signal carries more than pre-defined maps
(CBV, Tmax, permeability). This transformer gives the classic models those maps instead
of the source curves, through the same voxel-reference contract as
:class:`~sklearn_hemo.preprocessing.PatchExtractor`, so that a model comparison answers
"does source PWI beat maps?" on any cohort.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from .._cache import patient_volume
from ..base import BaseVoxelTransformer
from ..datasets import Cohort
from ..perfusion._patient import MAP_NAMES, cached_patient_maps
from ..utils.fixes import Interval, StrOptions
from ._patches import (
    _brain_inside,
    _check_dwi_grid,
    _dwi_reference,
    _gather_patches,
)

__all__ = ["PerfusionMapExtractor"]


class PerfusionMapExtractor(BaseVoxelTransformer):
    """Patches of perfusion and permeability maps, from voxel references.

    For each voxel reference ``(patient index, i, j, k)`` the transformer reads the
    ``patch_size x patch_size`` in-plane neighbourhood of each requested map of the
    patient (:func:`~sklearn_hemo.perfusion.patient_perfusion_maps`: CBF, CBV, MTT,
    Tmax by SVD deconvolution of the source signal, leakage K2, corrected CBV and the
    permeability measures), optionally followed by the DWI b0 and b1000 patches, the same
    DWI columns as :class:`~sklearn_hemo.preprocessing.PatchExtractor`.

    Column layout (``get_feature_names_out``), ``P = patch_size**2``:

    ====================  ==============================================================
    ``{map}_p{p}``        ``P`` columns per map, in the order of ``maps``; ``p`` runs
                          over the neighbours ``(di, dj)`` in row-major order (``p = 4``
                          is the centre of a 3 x 3 patch)
    ``dwi_b0_p{p}``       ``P`` columns, with ``dwi=True``
    ``dwi_b1000_p{p}``    ``P`` columns, with ``dwi=True``
    ====================  ==============================================================

    Neighbours beyond the edge of the volume replicate the nearest voxel. Maps are 0
    outside the brain mask, so with ``mask_neighbours=True`` (the default) neighbours
    outside the patient's brain mask (:meth:`~sklearn_hemo.datasets.Patient.get_brain_mask`)
    take the values of the patch centre, in every block (maps and DWI), instead of
    reading as tissue with zero perfusion.

    The transformer is stateless (``fit`` only validates). A patient's maps are computed
    on first use, for the whole brain, and kept in a per-process cache (least recently
    used out beyond 1 GiB, dropped with the cohort) shared by clones, so cross-validation
    computes them once per patient and method.

    Parameters
    ----------
    cohort : Cohort or None, default=None
        The cohort that voxel references point into. Required by ``fit`` and
        ``transform``; None only so that the estimator can be constructed without data.
    maps : tuple of str, default=("cbf", "cbv", "mtt", "tmax", "k2")
        Maps to read, a subset of :data:`sklearn_hemo.perfusion.MAP_NAMES`: ``"cbf"``,
        ``"cbv"``, ``"mtt"``, ``"tmax"``, ``"k2"``, ``"cbv_corrected"``,
        ``"contrast_slope"``, ``"final_contrast"``, ``"max_concentration"``,
        ``"peak_bolus_area"``, ``"psr"``.
    patch_size : int, default=3
        Odd width of the in-plane neighbourhood.
    method : {"osvd", "csvd", "ssvd"}, default="osvd"
        Deconvolution method of the maps (see :func:`~sklearn_hemo.perfusion.perfusion_maps`).
    dwi : bool, default=False
        Append the DWI b0 and b1000 patches.
    mask_neighbours : bool, default=True
        Neighbours outside the patient's brain mask (``patient.get_brain_mask()``) take
        the values of the patch centre, as neighbours beyond the volume border take those
        of the nearest voxel; this applies whether the centre itself is inside the mask or
        not. False reads the raw neighbours (0 in the maps outside the brain).
    dwi_normalization : "brain-median-b0" or None, default="brain-median-b0"
        With ``dwi=True``: divide b0 and b1000 by the median b0 over the patient's brain
        mask (removes the scanner gain, as :class:`PatchExtractor` does by default);
        ``None`` reads raw intensities.

    Attributes
    ----------
    n_features_in_ : int
        Always 4 (set by ``fit``).
    feature_names_in_ : ndarray of str
        Names of the 4 reference columns when ``X`` was a DataFrame with string column
        names (set by ``fit``).

    See Also
    --------
    PatchExtractor : The source-signal features of the same voxels.
    sklearn_hemo.perfusion.patient_perfusion_maps : The maps themselves.

    Notes
    -----
    As for :class:`PatchExtractor`, the input is voxel references, not a feature array,
    so the ``two_d_array`` input tag is False and scikit-learn's random-float estimator
    checks do not apply; ``requires_fit`` is False.

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.preprocessing import PerfusionMapExtractor
    >>> from sklearn_hemo.sampling import sample_voxels
    >>> cohort = make_stroke_cohort(n_patients=6, shape=(16, 16, 2), random_state=0)
    >>> X, y, groups = sample_voxels(cohort, n_samples=10, random_state=0)
    >>> extractor = PerfusionMapExtractor(cohort, maps=("cbv", "tmax"))
    >>> extractor.fit_transform(X).shape
    (10, 18)
    >>> extractor.get_feature_names_out()[[0, 4, 17]].tolist()
    ['cbv_p0', 'cbv_p4', 'tmax_p8']
    """

    _parameter_constraints: dict = {
        "cohort": [Cohort, None],
        "maps": [tuple, list],
        "patch_size": [Interval(Integral, 1, None, closed="left")],
        "method": [StrOptions({"osvd", "csvd", "ssvd"})],
        "dwi": ["boolean"],
        "dwi_normalization": [StrOptions({"brain-median-b0"}), None],
        "mask_neighbours": ["boolean"],
    }

    def __init__(self, cohort=None, *, maps=("cbf", "cbv", "mtt", "tmax", "k2"), patch_size=3,
                 method="osvd", dwi=False, mask_neighbours=True,
                 dwi_normalization="brain-median-b0"):
        self.cohort = cohort
        self.maps = maps
        self.patch_size = patch_size
        self.method = method
        self.dwi = dwi
        self.dwi_normalization = dwi_normalization
        self.mask_neighbours = mask_neighbours

    def __setstate__(self, state):
        # a pickle or bundle saved before this option existed read raw DWI
        super().__setstate__({"dwi_normalization": None, **state})

    def _check_params(self):
        super()._check_params()
        names = list(self.maps)
        unknown = [m for m in names if m not in MAP_NAMES]
        if not names or unknown or len(set(names)) != len(names):
            raise ValueError(
                f"maps must be a non-empty tuple of distinct names among {MAP_NAMES}, got "
                f"{tuple(self.maps)!r}" + (f" (unknown: {unknown})." if unknown else ".")
            )
        return names

    def transform(self, X):
        """Map patches of the referenced voxels.

        Parameters
        ----------
        X : array-like of int of shape (n_samples, 4)
            Voxel references (patient index, i, j, k) into ``cohort``.

        Returns
        -------
        features : ndarray of float32 of shape (n_samples, n_features)
            In the column layout of the class docstring.
        """
        names = self._check_params()
        refs = self._transform_refs(X)
        n_patch = self.patch_size**2
        out = np.empty((len(refs), len(self.get_feature_names_out())), dtype=np.float32)
        for p in np.unique(refs[:, 0]):
            rows = np.flatnonzero(refs[:, 0] == p)
            patient = self.cohort[int(p)]
            ijk = refs[rows, 1:]
            inside = _brain_inside(patient) if self.mask_neighbours else None
            maps = cached_patient_maps(patient, self.method)
            blocks = [maps[name] for name in names]
            if self.dwi:
                _check_dwi_grid(patient)
                # file-backed DWI is read (decompressed) once per process, as PatchExtractor does
                scale = (_dwi_reference(patient)
                         if self.dwi_normalization == "brain-median-b0" else 1.0)
                blocks += [patient_volume(patient, "dwi_b0") / scale,
                           patient_volume(patient, "dwi_b1000") / scale]
            for b, volume in enumerate(blocks):
                out[rows, b * n_patch: (b + 1) * n_patch] = _gather_patches(
                    volume, ijk, self.patch_size, inside)
        return out

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns (see the class docstring).

        Parameters
        ----------
        input_features : None
            Ignored (the output names do not depend on the reference columns).

        Returns
        -------
        names : ndarray of str objects
        """
        blocks = self._check_params()
        if self.dwi:
            blocks += ["dwi_b0", "dwi_b1000"]
        n_patch = self.patch_size**2
        return np.asarray([f"{b}_p{p}" for b in blocks for p in range(n_patch)], dtype=object)
