"""Patch features of voxels: :class:`PatchExtractor` and its reusable building blocks.

Voxel references ``X`` (an integer array ``(n_samples, 4)``: patient index, i, j, k) go in;
float32 feature rows in the fixed column layout of Yu et al. (MICCAI 2019) come out:

* ``pwi_t{tt:02d}_p{p}``: the concentration of the in-plane ``patch_size x patch_size``
  neighbourhood on the common time grid, time-major (``p`` runs over ``(di, dj)`` in
  row-major order, ``p = 4`` is the centre of a 3 x 3 patch);
* ``aif_t{tt:02d}``: the patient's arterial input function on the same grid;
* ``dwi_b0_p{p}``, ``dwi_b1000_p{p}``: the DWI patches.

Neighbours beyond the edge of the volume replicate the nearest voxel; neighbours outside
the patient's brain mask take the value of the patch centre (``mask_neighbours=True``),
so that brain-edge patches do not read the background noise around the head.

The private helpers :func:`_neighbour_index` and :func:`_gather_patches` are shared with
the other voxel-reference transformer of this subpackage; the voxel-reference check is
:func:`sklearn_hemo.utils.validation.check_voxel_refs` and the shared ``fit`` and tags are
those of :class:`sklearn_hemo.base.BaseVoxelTransformer`.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np

from .._cache import cached, patient_brain, patient_volume
from ..base import BaseVoxelTransformer
from ..datasets import Cohort
from ..exceptions import QCWarning
from ..signal import (
    apply_interp_plan,
    concentration_unchecked,
    padding_note,
    patient_aif_on_grid,
    patient_grid_offset,
    patient_time_plan,
    patient_timing,
    time_grid,
    vof_correction_default,
)
from ..utils._warnings import find_stack_level
from ..utils.fixes import Interval, StrOptions
from ..utils.validation import check_voxel_refs

__all__ = ["PatchExtractor"]

INPUTS = ("pwi", "pwi+aif", "pwi+dwi", "pwi+aif+dwi")
_BLOCK = 512  # voxels per gather block: the (block, P, T) buffer stays in cache
_CHUNK = 8192  # voxels per transform chunk: bounds the temporaries of one step


# -- shared building blocks ----------------------------------------------------------------

def _offsets(patch_size):
    """In-plane offsets ``(di, dj)`` of a patch, row-major (p = 0 .. patch_size**2 - 1)."""
    half = patch_size // 2
    d = np.arange(-half, half + 1)
    di, dj = np.meshgrid(d, d, indexing="ij")
    return di.ravel(), dj.ravel()


def _neighbour_coords(ijk, shape, patch_size):
    """Coordinates ``(i, j, k)`` of the in-plane neighbours, each ``(n, P)``.

    Edges replicate the nearest voxel: coordinates are clipped to ``shape``.
    """
    di, dj = _offsets(patch_size)
    i = np.clip(ijk[:, 0, None] + di, 0, shape[0] - 1)
    j = np.clip(ijk[:, 1, None] + dj, 0, shape[1] - 1)
    k = np.broadcast_to(ijk[:, 2, None], i.shape)
    return i, j, k


def _neighbour_index(ijk, shape, patch_size, inside=None):
    """Flat C-order indices ``(n, P)`` of the in-plane neighbours.

    Edges of the volume replicate the nearest voxel. With ``inside`` (a boolean array of
    ``shape``, the brain mask), a neighbour where ``inside`` is False gets the index of
    its patch centre, so it reads the centre's values (whether the centre itself is
    inside or not).
    """
    half = patch_size // 2
    di, dj = _offsets(patch_size)
    base = (ijk[:, 0] * shape[1] + ijk[:, 1]) * shape[2] + ijk[:, 2]
    index = base[:, None] + (di * shape[1] + dj) * shape[2]
    # only voxels near the in-plane border need their neighbours clipped
    border = ((ijk[:, 0] < half) | (ijk[:, 0] >= shape[0] - half)
              | (ijk[:, 1] < half) | (ijk[:, 1] >= shape[1] - half))
    if border.any():
        i, j, k = _neighbour_coords(ijk[border], shape, patch_size)
        index[border] = (i * shape[1] + j) * shape[2] + k
    if inside is not None:
        # one boolean gather per neighbour: cheap next to the (n, T, P) gathers it guards
        outside = ~np.ravel(inside)[index]
        if outside.any():
            centre = index[:, index.shape[1] // 2].copy()
            np.copyto(index, centre[:, None], where=outside)
    return index


def _take_patches(volume, index):
    """Values ``(n, P)`` of a 3D ``volume`` at flat C-order indices ``index``."""
    if volume.flags.c_contiguous:  # one flat take instead of three fancy indices
        return np.take(volume.reshape(-1), index)
    return volume[np.unravel_index(index, volume.shape)]



def _check_dwi_grid(patient):
    """Raise a ValueError naming the participant when a DWI image is off the PWI grid.

    Reads headers only (no voxels), so it is cheap to run on every call.
    """
    for name in ("dwi_b0", "dwi_b1000"):
        img = getattr(patient, name)
        if tuple(img.shape[:3]) != patient.shape or img.ndim != 3:
            raise ValueError(f"participant {patient.id}: {name} has shape {img.shape}, "
                             f"but the PWI grid is {patient.shape}. Resample the DWI onto "
                             "the PWI grid.")



def _brain_inside(patient):
    """The patient's brain mask as a C-contiguous boolean array on the PWI grid."""
    inside = patient_brain(patient)
    if inside.shape != tuple(patient.shape):
        raise ValueError(f"participant {patient.id}: the brain mask has shape {inside.shape}, "
                         f"but the PWI grid is {tuple(patient.shape)}. Resample the mask onto "
                         "the PWI grid, or pass mask_neighbours=False.")
    return inside


def _dwi_reference(patient):
    """The patient's DWI scale: the median b0 over the brain mask (cached per process).

    DWI intensities carry a scanner gain that differs between patients (the b0 medians of
    the simulated default run from about 700 to 1,400); dividing both b0 and b1000 by the
    patient's brain-median b0 removes it and keeps their ratio (the diffusion contrast).
    """

    def compute():
        b0 = patient_volume(patient, "dwi_b0")
        brain = patient_brain(patient)
        values = np.asarray(b0, dtype=np.float64)[brain] if brain.shape == b0.shape \
            else np.asarray(b0, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        median = float(np.median(values)) if values.size else np.nan
        if not np.isfinite(median) or median <= 0:
            raise ValueError(
                f"participant {patient.id}: the median b0 over the brain mask is {median!r}, "
                "so the DWI cannot be normalised by it; check dwi_b0.nii.gz and the brain "
                "mask, or pass dwi_normalization=None to read raw intensities.")
        return np.float64(median)

    return float(cached(patient, ("dwi_b0_brain_median",), compute))


def _unit_area(aif, time_step, patient):
    """The AIF divided by its area (trapezoid rule, ``time_step`` seconds apart).

    Each patient has one AIF, and its area varies many-fold between patients (dose,
    partial volume, the detected artery) without predicting HT: left raw it is a patient
    fingerprint that a model can learn in place of voxels. Divided by its area only its
    shape is left. A curve without a positive area is returned as it is, with a warning.
    """
    from scipy.integrate import trapezoid

    area = float(trapezoid(np.asarray(aif, dtype=np.float64), dx=float(time_step)))
    if not np.isfinite(area) or area <= 0:
        warnings.warn(
            f"participant {patient.id}: the AIF on the time grid has area {area!r}, so it "
            "cannot be normalised to unit area; its raw values are used.",
            UserWarning, stacklevel=find_stack_level())
        return aif
    return (np.asarray(aif, dtype=np.float64) / area).astype(aif.dtype)


def _gather_rows(rows, index, out):
    """``out[n, t, p] = rows[index[n, p], t]``, block by block.

    The interleaving of time and neighbour is a small transpose per voxel; doing it on
    blocks of ``_BLOCK`` voxels (a contiguous row gather into a cached buffer, then one
    strided copy) runs at several times the speed of an element-wise fancy index.

    Parameters
    ----------
    rows : ndarray of shape (m, T), C-contiguous
    index : ndarray of int of shape (n, P), valid row numbers
    out : ndarray of shape (n, T, P), may be a strided view
    """
    n, n_patch = index.shape
    buffer = np.empty((min(_BLOCK, n), n_patch, rows.shape[1]), dtype=rows.dtype)
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        block = buffer[: stop - start]
        # indices are valid by construction; mode="clip" writes straight into ``block``
        np.take(rows, index[start:stop], axis=0, out=block, mode="clip")
        np.copyto(out[start:stop].transpose(0, 2, 1), block)
    return out


def _gather_patches(volume, ijk, patch_size, inside=None):
    """In-plane patches of a 3D or 4D volume at voxels ``ijk``.

    Edges of the volume replicate the nearest voxel; with ``inside``, neighbours outside
    that mask take the value of the patch centre.

    Parameters
    ----------
    volume : ndarray of shape (X, Y, Z) or (X, Y, Z, T)
        A map or a series on the voxel grid (any memory order; a 4D volume that is not
        C-contiguous is copied once).
    ijk : ndarray of int of shape (n, 3)
        Centre voxels, inside the volume.
    patch_size : int
        Odd patch width.
    inside : ndarray of bool of shape (X, Y, Z) or None, default=None
        The brain mask; None reads every neighbour as it is.

    Returns
    -------
    patches : ndarray of shape (n, P) or (n, T, P)
        ``P = patch_size**2`` neighbours in row-major ``(di, dj)`` order; a 4D volume gives
        the time-major layout of the PWI columns.
    """
    volume = np.asarray(volume)
    ijk = np.asarray(ijk)
    index = _neighbour_index(ijk, volume.shape[:3], patch_size, inside)
    if volume.ndim == 3:
        return _take_patches(volume, index)
    rows = np.ascontiguousarray(volume).reshape(-1, volume.shape[3])
    out = np.empty((len(ijk), volume.shape[3], index.shape[1]), dtype=volume.dtype)
    return _gather_rows(rows, index, out)


class _Workspace:
    """Reusable volume-sized scratch arrays of :meth:`PatchExtractor._fill`."""

    def __init__(self, shape):
        size = int(np.prod(shape))
        self.needed = np.zeros(size, dtype=bool)
        self.lookup = np.empty(size, dtype=np.intp)


class _Context:
    """What one transform call computes once per patient."""

    def __init__(self, patient, timing, plan, aif, dwi_scale=1.0):
        self.patient = patient
        self.dwi_scale = dwi_scale  # DWI values are divided by it (1: raw intensities)
        # pre-bolus frames at steady state (the non-steady leading frames are never read:
        # the time plan starts after them)
        self.baseline = slice(timing.n_nonsteady, max(timing.arrival, timing.n_nonsteady + 1))
        self.plan = plan
        self.aif = aif


# The shared scikit-learn API lives in sklearn_hemo.base; the old private name stays
# importable from here.
_VoxelReferenceTransformer = BaseVoxelTransformer


# -- the transformer -----------------------------------------------------------------------
class PatchExtractor(BaseVoxelTransformer):
    """Patch features of voxels for the HT models, from voxel references.

    For each voxel reference ``(patient index, i, j, k)`` the transformer reads the
    patient's source PWI signal, turns it into concentration
    (:func:`~sklearn_hemo.signal.concentration`, baseline before the bolus arrival of the
    patient's mean brain signal) and resamples it onto ``n_timepoints`` points
    ``time_step`` seconds apart (:func:`~sklearn_hemo.signal.resample_time`), for the
    voxel and its in-plane neighbours; when the patient has ``slice_timing`` (``SliceTiming``
    in ``pwi.json``) the frames of slice ``k`` are placed at
    ``patient.slice_frame_times(k)``. It optionally appends the patient's AIF on the same
    grid (:func:`~sklearn_hemo.signal.patient_aif`), normalised to unit area by default,
    and the DWI b0 and b1000 patches, divided by the patient's brain-median b0 by default
    (see ``aif_normalization`` and ``dwi_normalization``). This is the data preparation of
    Yu et al. (MICCAI 2019), with these two per-patient normalisations added.

    Column layout (``get_feature_names_out``), ``T = n_timepoints`` and
    ``P = patch_size**2``:

    ======================  ==========================================================
    ``pwi_t{tt}_p{p}``      ``T * P`` columns, time-major: column ``tt * P + p``;
                            ``p`` runs over the neighbours ``(di, dj)`` in row-major
                            order (``p = 4`` is the centre of a 3 x 3 patch)
    ``aif_t{tt}``           ``T`` columns, with ``"aif"`` in ``inputs``
    ``dwi_b0_p{p}``         ``P`` columns, with ``"dwi"`` in ``inputs``
    ``dwi_b1000_p{p}``      ``P`` columns, with ``"dwi"`` in ``inputs``
    ======================  ==========================================================

    With the defaults the widths are 540 (``"pwi"``), 600 (``"pwi+aif"``), 558
    (``"pwi+dwi"``) and 618 (``"pwi+aif+dwi"``). Neighbours beyond the edge of the volume
    replicate the nearest voxel. With ``mask_neighbours=True`` (the default) neighbours
    outside the patient's brain mask (:meth:`~sklearn_hemo.datasets.Patient.get_brain_mask`)
    take the values of the patch centre, in every block (PWI and DWI columns): at the edge
    of the brain the raw neighbours are background noise (near-zero signal, whose
    "concentration" is meaningless), which models would otherwise read as tissue.

    The transformer is stateless: it holds the cohort (cheap to clone: a cohort's deep
    copy is itself) and, in every ``transform`` call, reads each referenced patient once
    and computes the concentration only of the voxels that the requested patches touch
    (voxel chunks in raster order, so that neighbouring patches share their curves).
    ``fit`` only validates.

    Parameters
    ----------
    cohort : Cohort or None, default=None
        The cohort that voxel references point into. Required by ``fit`` and
        ``transform``; None only so that the estimator can be constructed without data.
    patch_size : int, default=3
        Odd width of the in-plane neighbourhood.
    inputs : {"pwi", "pwi+aif", "pwi+dwi", "pwi+aif+dwi"}, default="pwi+aif+dwi"
        Blocks of columns, the paper's four modes.
    n_timepoints : int, default=60
        Points of the common time grid.
    time_step : float, default=1.8
        Spacing of the grid in seconds.
    align : None or "arrival", default=None
        None: the grid starts at the first frame of each patient (the paper). ``"arrival"``:
        it starts at the last pre-bolus frame of the patient's mean brain signal, for the
        tissue curves and the AIF alike.
    mask_neighbours : bool, default=True
        Neighbours outside the patient's brain mask (``patient.get_brain_mask()``) take
        the values of the patch centre, as neighbours beyond the volume border take those
        of the nearest voxel; this applies whether the centre itself is inside the mask or
        not. False reads the raw neighbours (the behaviour before this option).
    aif_normalization : "area" or None, default="area"
        ``"area"``: the AIF block is the patient's AIF on the time grid divided by its
        area (trapezoid rule over the grid, in seconds), so only its shape is left. Each
        patient has one AIF and its area varies many-fold between patients (dose,
        partial volume, the artery detected) without predicting HT; raw, it identifies
        the patient, and in a balanced sample, whose HT voxels come only from bleeding
        patients, knowing the patient predicts the label. ``None``: the raw
        concentration (the behaviour before this option existed). Do not scale the AIF
        columns one by one afterwards (a per-column ``StandardScaler``): across voxels
        they are constant
        within a patient, and standardising each time point amplifies the small
        differences between patients' curves back into a fingerprint; scale them as one
        block (:class:`~sklearn_hemo.neural.BlockScaler`).
    dwi_normalization : "brain-median-b0" or None, default="brain-median-b0"
        ``"brain-median-b0"``: the b0 and b1000 values are divided by the median b0 over
        the patient's brain mask, which removes the scanner gain (it differs between
        patients and scanners) and keeps the b1000 / b0 ratio. ``None``: raw intensities
        (the behaviour before this option existed).

    Attributes
    ----------
    n_features_in_ : int
        Always 4 (set by ``fit``).
    feature_names_in_ : ndarray of str
        Names of the 4 reference columns when ``X`` was a DataFrame with string column
        names (set by ``fit``).

    See Also
    --------
    sklearn_hemo.sampling.sample_voxels : Balanced voxel references for training.
    sklearn_hemo.signal.concentration : The signal to concentration conversion.

    Notes
    -----
    Estimator tags: the input is a 2D integer array, but not a *feature* array that can be
    filled with arbitrary numbers (each row must address a voxel of the cohort). As
    scikit-learn does for its text and dict vectorizers, the ``two_d_array`` input tag is
    therefore False, which tells :func:`~sklearn.utils.estimator_checks.check_estimator`
    that its generic random-float checks do not apply; this package tests the same
    properties on voxel references instead. ``requires_fit`` is False.

    A patient whose PWI has non-positive samples in requested voxels gets them clipped as
    :func:`~sklearn_hemo.signal.concentration` documents, with a warning that counts them.

    ``transform`` keeps what it derives from each patient once (the decompressed PWI and
    DWI arrays of file-backed images, the brain mask, the bolus arrival, the AIF on the
    grid) in a per-process cache of at most 1 GiB, shared with
    :class:`PerfusionMapExtractor` and keyed by the Patient object, so that the repeated
    fits and scores of a cross-validation do not re-read a ``.nii.gz`` cohort. Entries go
    with their patient, least recently used first beyond the budget, or all at once with
    ``sklearn_hemo._cache.clear_cache()`` (after replacing files on disk). Features do
    not depend on it: they are bit-identical with and without.

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.preprocessing import PatchExtractor
    >>> from sklearn_hemo.sampling import sample_voxels
    >>> cohort = make_stroke_cohort(n_patients=6, shape=(16, 16, 2), random_state=0)
    >>> X, y, groups = sample_voxels(cohort, n_samples=10, random_state=0)
    >>> features = PatchExtractor(cohort).fit_transform(X)
    >>> features.shape, features.dtype
    ((10, 618), dtype('float32'))
    >>> PatchExtractor(cohort, inputs="pwi").get_feature_names_out()[[0, 4, 539]].tolist()
    ['pwi_t00_p0', 'pwi_t00_p4', 'pwi_t59_p8']
    """

    _parameter_constraints: dict = {
        "cohort": [Cohort, None],
        "patch_size": [Interval(Integral, 1, None, closed="left")],
        "inputs": [StrOptions(set(INPUTS))],
        "n_timepoints": [Interval(Integral, 1, None, closed="left")],
        "time_step": [Interval(Real, 0, None, closed="neither")],
        "align": [StrOptions({"arrival"}), None],
        "mask_neighbours": ["boolean"],
        "aif_normalization": [StrOptions({"area"}), None],
        "dwi_normalization": [StrOptions({"brain-median-b0"}), None],
    }

    def __init__(self, cohort=None, *, patch_size=3, inputs="pwi+aif+dwi", n_timepoints=60,
                 time_step=1.8, align=None, mask_neighbours=True, aif_normalization="area",
                 dwi_normalization="brain-median-b0"):
        self.cohort = cohort
        self.patch_size = patch_size
        self.inputs = inputs
        self.n_timepoints = n_timepoints
        self.time_step = time_step
        self.align = align
        self.mask_neighbours = mask_neighbours
        self.aif_normalization = aif_normalization
        self.dwi_normalization = dwi_normalization

    def __setstate__(self, state):
        # a pickle or bundle saved before these options existed read raw AIF and DWI
        super().__setstate__({"aif_normalization": None, "dwi_normalization": None,
                              **state})

    # -- sklearn API (fit, tags: BaseVoxelTransformer) -----------------------------
    def transform(self, X):
        """Patch features of the referenced voxels.

        Parameters
        ----------
        X : array-like of int of shape (n_samples, 4)
            Voxel references (patient index, i, j, k) into ``cohort``.

        Returns
        -------
        features : ndarray of float32 of shape (n_samples, n_features)
            In the column layout of the class docstring.
        """
        self._check_params()
        refs = self._transform_refs(X)
        n_features = self._n_features_out()
        out = np.empty((len(refs), n_features), dtype=np.float32)
        buffer = np.empty((min(_CHUNK, len(refs)), n_features), dtype=np.float32)
        order = np.argsort(refs[:, 0], kind="stable")
        sorted_patients = refs[order, 0]
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(sorted_patients)) + 1,
                                 [len(order)]])
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            patient = self.cohort[int(sorted_patients[lo])]
            rows = order[lo:hi]
            # read-only when file-backed: the per-process cache keeps the decompressed arrays
            data = patient_volume(patient, "pwi")
            context = self._context(patient, data, use_cache=True)
            dwi = None
            if "dwi" in self.inputs:
                dwi = (patient_volume(patient, "dwi_b0"), patient_volume(patient, "dwi_b1000"))
            # raster order, so that the voxels of a chunk share their neighbours
            voxel = np.ravel_multi_index(tuple(refs[rows, 1:].T), patient.shape)
            if np.any(np.diff(voxel) < 0):
                rows = rows[np.argsort(voxel, kind="stable")]
            workspace = _Workspace(patient.shape)
            inside = _brain_inside(patient) if self.mask_neighbours else None
            # chunks keep every temporary small and reused (cache, no page faults)
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start: start + _CHUNK]
                direct = chunk[-1] - chunk[0] == len(chunk) - 1 and np.all(np.diff(chunk) == 1)
                target = out[chunk[0]: chunk[-1] + 1] if direct else buffer[: len(chunk)]
                self._fill(context, data, dwi, refs[chunk, 1:], target, workspace, inside)
                if not direct:
                    out[chunk] = target
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
        self._check_params()
        n_patch = self.patch_size**2
        times = range(self.n_timepoints)
        names = [f"pwi_t{t:02d}_p{p}" for t in times for p in range(n_patch)]
        if "aif" in self.inputs:
            names += [f"aif_t{t:02d}" for t in times]
        if "dwi" in self.inputs:
            names += [f"dwi_b0_p{p}" for p in range(n_patch)]
            names += [f"dwi_b1000_p{p}" for p in range(n_patch)]
        return np.asarray(names, dtype=object)

    # -- whole volumes -------------------------------------------------------------------
    def iter_volume(self, patient_index, *, chunk_size=4096):
        """Features of every brain voxel of one patient, chunk by chunk.

        The volume is read row block by row block of one slice at a time (with the rows
        that the patches need around them), through nibabel's array proxy, so memory is
        bounded by ``chunk_size`` and not by the volume: the 4D patch array of a whole
        patient is never built. Only a patient without a measured AIF, with ``"aif"`` in
        ``inputs``, needs one full read first to detect its AIF, and a patient without a
        brain mask image one read of its first frames to derive the mask.

        With compressed ``.nii.gz`` files each block decompresses the file up to that
        block; store PWI uncompressed (``.nii``) for fast whole-volume passes.

        Parameters
        ----------
        patient_index : int
            Position of the patient in ``cohort``.
        chunk_size : int, default=4096
            Most voxels per chunk (a chunk covers whole rows of a slice, so the bound is
            ``max(chunk_size, n_columns_of_a_row)``).

        Yields
        ------
        ijk : ndarray of int64 of shape (n_chunk, 3)
            Brain voxels of the chunk; slice by slice (``k``), then in C order of
            ``(i, j)``.
        features : ndarray of float32 of shape (n_chunk, n_features)
            Their features, as ``transform`` gives for ``(patient_index, i, j, k)``.

        Examples
        --------
        >>> from sklearn_hemo.datasets import make_stroke_cohort
        >>> from sklearn_hemo.preprocessing import PatchExtractor
        >>> cohort = make_stroke_cohort(n_patients=1, shape=(12, 12, 2), random_state=0)
        >>> extractor = PatchExtractor(cohort, inputs="pwi")
        >>> n = sum(len(ijk) for ijk, _ in extractor.iter_volume(0, chunk_size=50))
        >>> n == int(cohort[0].get_brain_mask().sum())
        True
        """
        self._check_params()
        if self.cohort is None:
            check_voxel_refs(np.zeros((1, 4), dtype=int), None, estimator=self)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, Integral) \
                or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
        if isinstance(patient_index, bool) or not isinstance(patient_index, Integral) \
                or not 0 <= patient_index < len(self.cohort):
            raise ValueError(f"patient_index must be an integer in [0, {len(self.cohort)}), "
                             f"got {patient_index!r}.")
        patient = self.cohort[int(patient_index)]
        data = patient.pwi.dataobj
        brain = patient.brain_mask.dataobj if patient.brain_mask is not None \
            else patient.get_brain_mask()
        context = self._context(patient, data, brain)
        n_rows, n_cols, n_slices = patient.shape
        half = self.patch_size // 2
        rows_per_block = max(1, chunk_size // n_cols)
        use_dwi = "dwi" in self.inputs
        for k in range(n_slices):
            mask = np.asarray(brain[:, :, k]) > 0
            for r0 in range(0, n_rows, rows_per_block):
                r1 = min(n_rows, r0 + rows_per_block)
                ii, jj = np.nonzero(mask[r0:r1])
                if ii.size == 0:
                    continue
                lo, hi = max(0, r0 - half), min(n_rows, r1 + half)
                raw = np.asarray(data[lo:hi, :, k: k + 1, :])
                dwi = None
                if use_dwi:
                    dwi = tuple(np.asarray(img.dataobj[lo:hi, :, k: k + 1])
                                for img in (patient.dwi_b0, patient.dwi_b1000))
                local = np.column_stack([ii + (r0 - lo), jj, np.zeros_like(ii)])
                features = np.empty((ii.size, self._n_features_out()), dtype=np.float32)
                # the block's own mask: the same neighbours as transform's whole-volume one
                inside = np.ascontiguousarray(mask[lo:hi, :, None]) \
                    if self.mask_neighbours else None
                self._fill(context, raw, dwi, local, features, inside=inside, z0=k)
                ijk = np.column_stack([ii + r0, jj, np.full_like(ii, k)]).astype(np.int64)
                for s in range(0, ii.size, chunk_size):
                    yield ijk[s: s + chunk_size], features[s: s + chunk_size]

    # -- internals -----------------------------------------------------------------------
    def _n_features_out(self):
        n_patch = self.patch_size**2
        width = self.n_timepoints * n_patch
        if "aif" in self.inputs:
            width += self.n_timepoints
        if "dwi" in self.inputs:
            width += 2 * n_patch
        return width

    def _context(self, patient, data, brain=None, *, use_cache=False):
        """Per-patient quantities of one call: baseline frames, time plan, AIF.

        With ``use_cache`` (``transform``: ``data`` is the whole PWI array) the bolus
        arrival and the AIF come from the per-process cache; the warnings and checks run
        on every call.
        """
        if "dwi" in self.inputs:
            _check_dwi_grid(patient)
        if use_cache:
            timing = cached(patient, ("timing",), lambda: patient_timing(
                patient, data, patient_brain(patient)))
        else:
            timing = patient_timing(patient, data, brain)
        for note in timing.notes:
            warnings.warn(note, QCWarning, stacklevel=find_stack_level())
        offset = patient_grid_offset(patient, self.align, timing)
        grid = time_grid(self.n_timepoints, float(self.time_step), offset)
        plan, padding = patient_time_plan(patient, timing, grid)
        note = padding_note(patient, padding, grid)
        if note is not None:
            warnings.warn(note, QCWarning, stacklevel=find_stack_level())
        aif = None
        if "aif" in self.inputs:
            full = data if isinstance(data, np.ndarray) else None  # not a proxy

            def compute():
                curve = patient_aif_on_grid(patient, self.n_timepoints, float(self.time_step),
                                    offset, timing, full).astype(np.float32)
                if self.aif_normalization == "area":
                    curve = _unit_area(curve, self.time_step, patient)
                return curve

            # the VOF switch changes a detected AIF: a stale one must not be served
            key = ("patch_aif", self.n_timepoints, float(self.time_step), offset,
                   self.aif_normalization, vof_correction_default())
            aif = cached(patient, key, compute) if use_cache else compute()
        dwi_scale = 1.0
        if "dwi" in self.inputs and self.dwi_normalization == "brain-median-b0":
            dwi_scale = _dwi_reference(patient)
        return _Context(patient, timing, plan, aif, dwi_scale)

    def _fill(self, context, raw, dwi, ijk, out, workspace=None, inside=None, z0=0):
        """Write the features of voxels ``ijk`` of the block ``raw`` into ``out``.

        ``raw`` is the PWI signal ``(bx, by, bz, F)`` of a block of the volume that holds
        every existing neighbour of the voxels (the whole volume, or rows with their
        halo): neighbour coordinates are clipped to the block. ``dwi`` holds the two DWI
        blocks or is None; ``workspace`` is a :class:`_Workspace` of the block's shape to
        reuse, or None; ``inside`` is the brain mask of the block (neighbours outside it
        read the centre) or None; ``z0`` is the slice of the volume where the block
        starts (for per-slice time plans, ``SliceTiming``).
        """
        patient = context.patient
        shape = raw.shape[:3]
        n, n_patch, n_t = len(ijk), self.patch_size**2, self.n_timepoints
        index = _neighbour_index(ijk, shape, self.patch_size, inside)
        if workspace is None:
            workspace = _Workspace(shape)
        # concentration only for the voxels the patches touch, each once
        needed = workspace.needed
        needed[index.ravel()] = True
        first, last = int(index.min()), int(index.max()) + 1  # compact for sorted chunks
        flat = first + np.flatnonzero(needed[first:last])
        needed[flat] = False  # clean for the next chunk
        if flat.size == needed.size and raw.flags.c_contiguous:
            curves = raw.reshape(-1, raw.shape[-1])  # a view: not to be overwritten
            target = None
        else:
            curves = raw[np.unravel_index(flat, shape)]  # a copy
            target = curves if curves.dtype == np.float32 else None
        if target is None:
            target = np.empty(curves.shape, dtype=np.float32)
        lookup = workspace.lookup
        lookup[flat] = np.arange(flat.size)
        conc, clipped, _ = concentration_unchecked(curves, patient.echo_time, context.baseline,
                                          out=target)
        if isinstance(context.plan, list):  # SliceTiming: each slice its own plan
            rows = np.empty((len(conc), self.n_timepoints), dtype=conc.dtype)
            slices = np.unravel_index(flat, shape)[2] + z0
            for k in np.unique(slices):
                chosen = slices == k
                rows[chosen] = apply_interp_plan(conc[chosen], *context.plan[k])
        else:
            rows = apply_interp_plan(conc, *context.plan)
        del conc
        position = lookup[index]
        pwi = out[:, : n_t * n_patch].reshape(n, n_t, n_patch)
        _gather_rows(np.ascontiguousarray(rows), position, pwi)
        column = n_t * n_patch
        if context.aif is not None:
            out[:, column: column + n_t] = context.aif
            column += n_t
        if dwi is not None:
            for volume in dwi:
                out[:, column: column + n_patch] = _take_patches(volume, index)
                if context.dwi_scale != 1.0:
                    out[:, column: column + n_patch] /= np.float32(context.dwi_scale)
                column += n_patch
        centre = np.zeros(flat.size, dtype=bool)
        centre[position[:, n_patch // 2]] = True
        n_bad = int(clipped[centre].sum())
        if n_bad:
            warnings.warn(
                f"participant {patient.id}: {n_bad} PWI samples of the requested voxels are "
                "zero, negative or below 1e-3 of their baseline; they were clipped (see "
                "sklearn_hemo.signal.concentration), which caps their concentration.",
                UserWarning, stacklevel=find_stack_level())
