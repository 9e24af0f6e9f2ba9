"""In-memory view of a cohort: :class:`Patient`, :class:`Cohort` and the AIF record.

A cohort is the first link of the data chain (files -> cohort -> voxel references ->
features -> estimator -> maps). It holds *references* to images: file-backed patients load
their NIfTI files lazily through nibabel (memory-mapped where the format allows), so a
:class:`Cohort` is cheap to pickle, to ``copy.deepcopy`` (scikit-learn's ``clone`` deep-copies
constructor parameters such as ``PatchExtractor(cohort)``) and to send to joblib workers.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..exceptions import CohortError
from ..utils._verbosity import DEPRECATED, progress_bar, resolve_verbose

__all__ = ["ArterialInputFunction", "CohortError", "Patient", "Cohort"]


@dataclass(frozen=True, eq=False)
class ArterialInputFunction:
    """An arterial input function given with a patient (``aif.tsv``).

    Parameters
    ----------
    time : ndarray of shape (n_points,)
        Sample times in seconds from the start of the PWI scan.
    values : ndarray of shape (n_points,)
        Concentration (arbitrary units, ``kind="concentration"``) or raw signal
        (``kind="signal"``) at those times.
    kind : {"concentration", "signal"}
        What ``values`` holds.

    Examples
    --------
    >>> from sklearn_hemo.datasets import ArterialInputFunction
    >>> aif = ArterialInputFunction([0.0, 1.8, 3.6], [0.0, 40.0, 10.0])
    >>> aif.kind, float(aif.values.max())
    ('concentration', 40.0)
    """

    time: np.ndarray
    values: np.ndarray
    kind: str = "concentration"

    def __post_init__(self):
        time = np.asarray(self.time, dtype=float)
        values = np.asarray(self.values, dtype=float)
        if time.ndim != 1 or values.shape != time.shape:
            raise ValueError(
                f"AIF time and values must be 1D of equal length, got {time.shape} and "
                f"{values.shape}."
            )
        if self.kind not in ("concentration", "signal"):
            raise ValueError(
                f"AIF kind must be 'concentration' or 'signal', got {self.kind!r}."
            )
        object.__setattr__(self, "time", time)
        object.__setattr__(self, "values", values)


_IMAGE_FIELDS = ("pwi", "dwi_b0", "dwi_b1000", "brain_mask", "ht_mask")


class Patient:
    """One participant: images, acquisition parameters, label and (simulated) truth.

    Each image argument is either a nibabel image (in memory) or a path to a NIfTI
    file, loaded lazily on first access and dropped again when the patient is pickled.

    Parameters
    ----------
    id : str
        Participant id, e.g. ``"sub-001"``.
    pwi : nibabel image or path
        4D source DSC signal ``(x, y, z, t)``.
    dwi_b0, dwi_b1000 : nibabel image or path
        3D diffusion images on the PWI grid.
    echo_time : float
        Echo time in seconds (e.g. 0.030).
    repetition_time : float
        Time between PWI frames in seconds (e.g. 1.8).
    ht : int or None
        Patient-level HT label (1 bleeds at follow-up), None when unknown.
    brain_mask : nibabel image, path or None
        3D brain mask; derived from the images when None (see
        :meth:`get_brain_mask`).
    ht_mask : nibabel image, path or None
        3D follow-up HT annotation; None at prediction time.
    aif : ArterialInputFunction or None
        Measured AIF; detected from the brain when None.
    n_nonsteady : int or None, default=None
        Leading PWI frames acquired before steady state, to drop (``pwi.json``'s
        ``NonSteadyStateFrames``; 0 when the sidecar says that the scanner or the user
        already discarded them). None detects them from the signal (see
        :func:`~sklearn_hemo.signal.steady_state_frames`).
    truth : dict, path or None
        Ground truth of a simulated patient (see
        :func:`~sklearn_hemo.datasets.make_stroke_cohort`); None for real data. A path
        names a ``truth.npz`` file, read lazily (without pickle) on first access.
    slice_timing : array-like of shape (n_slices,) or None
        Acquisition time of each slice (third image axis) within a frame, in seconds from
        the start of the frame (BIDS ``SliceTiming``, kept in ``pwi.json``). When given,
        slice ``k`` of frame ``f`` was acquired at ``frame_times[f] + slice_timing[k]``
        (:meth:`slice_frame_times`) and the resampling onto the common time grid uses
        those times. None: every slice at the frame time.
    field_strength : float or None, default=None
        Main magnetic field in tesla (BIDS ``MagneticFieldStrength`` in ``pwi.json``), or
        None when unknown. With a known field the pipeline may convert ``Delta R2*`` to
        gadolinium concentration (:mod:`sklearn_hemo.relaxivity`).
    motion_correction : bool or None, default=None
        Whether :attr:`pwi` gives the DSC series corrected for head motion (every frame
        registered rigidly to a pre-bolus reference by
        :func:`~sklearn_hemo.registration.correct_motion`, computed on first access and
        cached on disk by content, never in the cohort's folder; see
        :mod:`sklearn_hemo._motion`). None follows the environment variable
        ``SKLEARN_HEMO_MOTION_CORRECTION`` (on unless ``off``). A series that
        ``import.json`` records as corrected at import is not corrected again; grids
        under 4096 voxels per frame, or without SimpleITK, are read as they are.

    Examples
    --------
    >>> import nibabel as nib, numpy as np
    >>> from sklearn_hemo.datasets import Patient
    >>> pwi = nib.Nifti1Image(np.ones((4, 4, 2, 30), np.float32), np.eye(4))
    >>> b0 = nib.Nifti1Image(np.ones((4, 4, 2), np.float32), np.eye(4))
    >>> p = Patient("sub-001", pwi, b0, b0, echo_time=0.03, repetition_time=1.5, ht=0)
    >>> p.shape, p.n_frames, p.frame_times[:3]
    ((4, 4, 2), 30, array([0. , 1.5, 3. ]))
    """

    def __init__(
        self,
        id,
        pwi,
        dwi_b0,
        dwi_b1000,
        *,
        echo_time,
        repetition_time,
        ht=None,
        brain_mask=None,
        ht_mask=None,
        aif=None,
        truth=None,
        slice_timing=None,
        n_nonsteady=None,
        field_strength=None,
        motion_correction=None,
    ):
        self.id = str(id)
        if motion_correction is not None and not isinstance(motion_correction,
                                                            (bool, np.bool_)):
            raise ValueError(f"participant {self.id}: motion_correction must be None, True "
                             f"or False, got {motion_correction!r}.")
        self.motion_correction = None if motion_correction is None else bool(
            motion_correction)
        if field_strength is not None:
            if isinstance(field_strength, bool) or not isinstance(
                    field_strength, numbers.Real) or not (
                    math.isfinite(field_strength) and field_strength > 0):
                raise ValueError(f"participant {self.id}: field_strength must be None or a "
                                 f"positive number of tesla, got {field_strength!r}.")
            field_strength = float(field_strength)
        self.field_strength = field_strength
        self.slice_timing = None if slice_timing is None else np.array(
            slice_timing, dtype=float).reshape(-1)
        self.echo_time = float(echo_time)
        self.repetition_time = float(repetition_time)
        self.ht = None if ht is None else int(ht)
        self.aif = aif
        if n_nonsteady is not None and (isinstance(n_nonsteady, bool) or int(n_nonsteady)
                                        != n_nonsteady or n_nonsteady < 0):
            raise ValueError(f"participant {self.id}: n_nonsteady must be None or an integer "
                             f">= 0, got {n_nonsteady!r}.")
        self.n_nonsteady = None if n_nonsteady is None else int(n_nonsteady)
        self._truth_source = Path(truth) if isinstance(truth, (str, os.PathLike)) else None
        self._truth = None if self._truth_source is not None else truth
        self._sources = {}
        self._images = {}
        for name, value in zip(
            _IMAGE_FIELDS, (pwi, dwi_b0, dwi_b1000, brain_mask, ht_mask), strict=True
        ):
            if value is None:
                self._sources[name] = None
            elif isinstance(value, (str, os.PathLike)):
                self._sources[name] = Path(value)
            else:
                self._sources[name] = None
                self._images[name] = value

    #: A check run once, on the first access to any image (see
    #: ``sklearn_hemo._safety.validate_lazily``); None when nothing is pending.
    _on_first_use = None
    #: Class default for patients pickled before the attribute existed.
    field_strength = None
    #: Class default for patients pickled before the attribute existed.
    motion_correction = None

    # -- images, loaded lazily -------------------------------------------------
    def _image(self, name):
        check = self._on_first_use
        if check is not None:
            self._on_first_use = None  # the check itself reads the images
            try:
                check(self)
            except BaseException:
                self._on_first_use = check
                raise
        if name in self._images:
            return self._images[name]
        path = self._sources[name]
        if path is None:
            return None
        try:
            img = nib.load(path, mmap=True)
        except Exception as exc:  # nibabel raises many types; re-raise as ours
            raise CohortError(
                f"participant {self.id}: cannot read {path} ({exc}). Check that the file "
                "is a complete NIfTI image (re-export or re-copy it)."
            ) from exc
        self._images[name] = img
        return img

    @property
    def pwi(self):
        """4D source DSC signal image, corrected for head motion (see
        ``motion_correction``): the one door every reader of the series goes through."""
        raw = self._image("pwi")
        if raw is None:
            return None
        from .._motion import pwi_view

        return pwi_view(self, raw)

    @property
    def raw_pwi(self):
        """4D DSC signal image as given (file or memory), before the load-time motion
        correction of :attr:`pwi`; what :func:`~sklearn_hemo.datasets.save_cohort`
        writes."""
        return self._image("pwi")

    dwi_b0 = property(lambda self: self._image("dwi_b0"), doc="DWI b=0 image.")
    dwi_b1000 = property(lambda self: self._image("dwi_b1000"), doc="DWI b=1000 image.")
    brain_mask = property(
        lambda self: self._image("brain_mask"), doc="Brain mask image, or None."
    )
    ht_mask = property(lambda self: self._image("ht_mask"), doc="HT annotation image, or None.")

    @property
    def truth(self):
        """Ground-truth dict of a simulated patient (loaded lazily from file), or None."""
        if self._truth is None and self._truth_source is not None:
            try:
                with np.load(self._truth_source, allow_pickle=False) as npz:
                    self._truth = {key: npz[key] for key in npz.files}
            except Exception as exc:  # zipfile/numpy raise many types on damaged files
                raise CohortError(
                    f"participant {self.id}: cannot read {self._truth_source} ({exc}). "
                    "Re-copy the file or delete it (it is optional)."
                ) from exc
        return self._truth

    @truth.setter
    def truth(self, value):
        self._truth_source = None
        self._truth = value

    def source(self, name):
        """Path of the file behind image ``name``, or None when it lives in memory."""
        return self._sources[name]

    @property
    def shape(self):
        """Spatial shape ``(x, y, z)`` of the PWI grid."""
        return tuple(self.pwi.shape[:3])

    @property
    def n_frames(self):
        """Number of PWI time frames."""
        return int(self.pwi.shape[3])

    @property
    def affine(self):
        """Voxel-to-world affine of the PWI grid."""
        return self.pwi.affine

    @property
    def frame_times(self):
        """Acquisition time of each PWI frame in seconds, the first frame at t = 0."""
        return np.arange(self.n_frames) * self.repetition_time

    def slice_frame_times(self, k):
        """Acquisition time of each PWI frame of slice ``k``, in seconds.

        ``frame_times + slice_timing[k]``; the frame times themselves without
        ``slice_timing``.

        Examples
        --------
        >>> import nibabel as nib, numpy as np
        >>> from sklearn_hemo.datasets import Patient
        >>> pwi = nib.Nifti1Image(np.ones((2, 2, 2, 3), np.float32), np.eye(4))
        >>> b0 = nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4))
        >>> p = Patient("sub-1", pwi, b0, b0, echo_time=0.03, repetition_time=1.5,
        ...             slice_timing=[0.0, 0.75])
        >>> p.slice_frame_times(1)
        array([0.75, 2.25, 3.75])
        """
        times = self.frame_times
        if self.slice_timing is None:
            return times
        return times + float(self.slice_timing[k])

    def get_brain_mask(self):
        """Boolean brain mask on the PWI grid.

        The ``brain_mask`` image when given; otherwise derived from the temporal median
        of the first 8 PWI frames (a baseline image that neither a few non-steady leading
        frames nor an early bolus frame disturb, and that later head motion does not blur)
        with a method made for EPI: Otsu's threshold, an in-plane erosion by about 10 mm
        (at least 2 voxels: it cuts the bridges between the brain and the scalp ring), the
        largest connected component, a dilation back by as much inside the thresholded
        head, and the filling of holes (ventricles, vessels). When the image has
        no dark background (the darker Otsu class is more than half as bright as the
        brighter one, e.g. a field of view cropped to the brain), every voxel with signal
        is brain. The derived mask is computed once per process (see
        :func:`sklearn_hemo._cache.clear_cache`).

        Raises
        ------
        CohortError
            When the mask must be derived and the PWI holds NaN or inf (the
            threshold would be NaN and the mask silently empty).
        """
        if self.brain_mask is not None:
            return np.asarray(self.brain_mask.dataobj) > 0
        from .._cache import cached

        return cached(self, ("derived_brain_mask",), self._derive_brain_mask).copy()

    def _derive_brain_mask(self):
        data = self.pwi.dataobj
        n_first = min(8, self.n_frames)
        baseline = np.empty(self.shape, dtype=np.float32)
        for k in range(self.shape[2]):  # one slice at a time: bounded memory
            baseline[:, :, k] = np.median(
                np.asarray(data[:, :, k, :n_first], dtype=np.float32), axis=-1)
        if not np.isfinite(baseline).all():
            raise CohortError(
                f"participant {self.id}: the PWI holds NaN or inf "
                f"({self.source('pwi') or 'in-memory pwi'}), so no brain mask can be derived. "
                "Fix the image or provide brain_mask.nii.gz; Cohort.validate() lists such "
                "problems."
            )
        zooms = np.sqrt((np.asarray(self.affine)[:3, :3] ** 2).sum(axis=0))
        return _epi_brain_mask(baseline, zooms)

    # -- cheap copies --------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_motion_state", None)  # rebuilt on first access (its cache is on disk)
        # file-backed images are reloaded lazily on the other side
        state["_images"] = {
            k: v for k, v in self._images.items() if self._sources.get(k) is None
        }
        if self._truth_source is not None:
            state["_truth"] = None
        return state

    def validate(self):
        """Check headers, acquisition and voxel data; raise :class:`CohortError` if bad.

        Reads every image (NaN/inf, non-positive pre-bolus baseline in the brain,
        unreadable files, labels that contradict the annotation, an annotation with
        values other than 0 and 1, too few frames, an implausible echo time). The
        command line runs the same checks on each patient it reads. Returns ``self``.
        """
        from .._safety import check_patient_voxels
        from ._validation import check_patient

        self._on_first_use = None  # checked right here, not again on first use
        check_patient(self)
        check_patient_voxels(self)  # check_patient_data and the pipeline's own needs
        return self

    def __repr__(self):
        return (f"Patient(id={self.id!r}, ht={self.ht}, shape={self.shape}, "
                f"n_frames={self.n_frames})")


def _otsu_threshold(values, n_bins=256):
    """Otsu's threshold of 1D ``values`` (maximises the between-class variance)."""
    counts, edges = np.histogram(values, bins=n_bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    weight_low = np.cumsum(counts).astype(float)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[np.argmax(between[:-1])]) if n_bins > 1 else float(centres[0])


def _epi_brain_mask(baseline, zooms, erosion_mm=10.0):
    """Brain mask of a baseline EPI image (see :meth:`Patient.get_brain_mask`)."""
    from scipy import ndimage

    positive = baseline > 0
    if not positive.any():
        return positive
    values = baseline[positive].astype(np.float64)
    if values.max() - values.min() <= 1e-6 * values.max():
        return positive  # a uniform image: nothing to separate
    threshold = _otsu_threshold(values)
    head = baseline > threshold
    dark, bright = baseline[positive & ~head], baseline[head]
    if dark.size == 0 or bright.size == 0 or dark.mean() > 0.5 * bright.mean():
        return positive  # no background in the field of view
    # in-plane (3 x 3 square) structuring element: slices are thick and few
    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[:, :, 1] = True
    radius = max(2, int(np.ceil(erosion_mm / max(min(zooms[0], zooms[1]), 1e-6) - 1e-6)))
    core = ndimage.binary_erosion(head, plane, iterations=radius)
    while not core.any() and radius > 1:  # a small volume: erode less
        radius -= 1
        core = ndimage.binary_erosion(head, plane, iterations=radius)
    if not core.any():  # a tiny volume: nothing survives the erosion
        core = head
    labels, n = ndimage.label(core)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        core = labels == 1 + int(np.argmax(sizes))
    mask = ndimage.binary_dilation(core, plane, iterations=radius, mask=head) | core
    for k in range(mask.shape[2]):
        mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return ndimage.binary_fill_holes(mask)


class Cohort(Sequence):
    """An ordered collection of :class:`Patient`.

    The position of a patient in the cohort is its *patient index*, the first column
    of the voxel references ``X`` that every transformer of this package reads.

    A cohort is treated as immutable: ``copy.deepcopy`` returns the same object (so
    ``sklearn.base.clone`` of a transformer holding a cohort does not copy volumes) and
    pickling file-backed patients sends paths, not voxels.

    Parameters
    ----------
    patients : sequence of Patient
        The participants, with unique ids.
    path : path-like or None
        The folder the cohort was loaded from, if any.

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> cohort = make_stroke_cohort(n_patients=3, shape=(8, 8, 1), random_state=0)
    >>> cohort.ids
    ['sub-001', 'sub-002', 'sub-003']
    >>> cohort.validate() is cohort
    True
    """

    def __init__(self, patients, path=None):
        patients = list(patients)
        seen = set()
        for p in patients:
            if not isinstance(p, Patient):
                raise TypeError(f"Cohort takes Patient objects, got {type(p).__name__}.")
            if p.id in seen:
                raise CohortError(
                    f"participant {p.id} appears twice; participant ids must be unique."
                )
            seen.add(p.id)
        from .._safety import guard_new_cohort

        guard_new_cohort(patients)  # one folder under two ids; lazy checks in the CLI
        self._patients = tuple(patients)
        self.path = None if path is None else Path(path)

    def __len__(self):
        return len(self._patients)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Cohort(self._patients[index], path=self.path)
        return self._patients[index]

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    @property
    def ids(self):
        """Participant ids in cohort order."""
        return [p.id for p in self._patients]

    @property
    def ht(self):
        """Patient-level HT labels (-1 where unknown) as an int array."""
        return np.array([-1 if p.ht is None else p.ht for p in self._patients], dtype=int)

    def validate(self, verbose=0, *, progress=DEPRECATED):
        """Read every patient's data and check it (see :meth:`Patient.validate`).

        :func:`~sklearn_hemo.datasets.load_cohort` checks headers, grids and sidecars at
        once; this also reads the voxels, which takes as long as reading the cohort.

        Parameters
        ----------
        verbose : int, default=0
            0 silent; 1 a progress bar; 2 also one line per patient checked. Bars and
            lines go to standard error.
        progress : bool
            Deprecated, use ``verbose`` (``progress=True`` is ``verbose=1``); removed
            in 0.2.

        Returns
        -------
        self : Cohort

        Raises
        ------
        CohortError
            For the first problem found, naming the participant, the file and the fix.
        """
        verbose = resolve_verbose(verbose, "Cohort.validate", progress=progress)
        patients = progress_bar(self._patients, verbose, line=lambda p: f"checked {p.id}",
                                desc="validating", unit="patient")
        for patient in patients:
            patient.validate()
        return self

    def index(self, patient_id):
        """Patient index of participant ``patient_id``."""
        try:
            return self.ids.index(patient_id)
        except ValueError:
            raise KeyError(f"no participant {patient_id!r} in this cohort") from None

    def __repr__(self):
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"Cohort(n_patients={len(self)}, n_ht={int((self.ht == 1).sum())}{where})"

