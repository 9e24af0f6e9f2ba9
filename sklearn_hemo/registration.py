"""Rigid registration of the series of a patient, and motion correction of the DSC series.

The images of a stroke work-up are not acquired in one pose: the head moves between the
acute session and the follow-up a day later (where the haemorrhage is annotated), between
the DWI and the PWI series, and during the DSC series itself. This module aligns them with
rigid (six-parameter) registration by SimpleITK (Mattes mutual information, since the
contrasts differ; regular-step gradient descent from the images' centres of mass). It is
an optional dependency: ``pip install "sklearn-hemo[registration]"``.

Conventions: images are :mod:`nibabel` images in scanner (world) millimetres. A transform
is the 4 x 4 world matrix ``T`` mapping a point of the *fixed* image to the same anatomical
point in the *moving* image (ITK's convention). The moving image is put on the fixed grid
by giving it the affine ``inv(T) @ moving.affine`` (:func:`aligned_affine`) and resampling
through affines as usual. Rotations are reported as the Euler angles (x, y, z, applied z
first) in degrees and the total angle; translations as the displacement of the fixed
image's centre, in mm.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np

from .utils._warnings import find_stack_level
from .utils.fixes import Interval, StrOptions, validate_params

__all__ = ["RigidTransform", "aligned_affine", "correct_motion", "euler_matrix",
           "has_registration", "mean_displacement", "prebolus_frames", "prebolus_median",
           "register_rigid", "rotation_angle"]

EXTRA_MESSAGE = (
    "image registration needs SimpleITK, an optional dependency: install it with "
    "pip install \"sklearn-hemo[registration]\" (or pip install SimpleITK), or import "
    "with register='none' (--register none) to resample through the affines only."
)
#: mean head radius (mm) of the framewise displacement of Power et al. (2012)
_HEAD_RADIUS_MM = 50.0
#: frames whose estimated displacement stays below this (mm) are kept as acquired: the
#: estimate's own noise on still frames of the default geometry is about 0.1 mm
_STILL_MM = 0.25
#: ... or this fraction of the smallest voxel side, when larger (0.5 mm at 5 mm, 0.75 mm
#: at 7.5 mm: on coarse grids still frames are estimated further from the identity)
_STILL_VOXELS = 0.1
#: the motion reference is the median of at most this many first steady pre-bolus frames:
#: the pose closest in time to the series acquired before the DSC (the DWI), and a median
#: that one frame which jumped does not move
_N_REFERENCE = 5
#: smoothing (mm) of both images when a DSC frame is registered and compared to the
#: reference: at the identity, interpolation alone makes a peak of mutual information on
#: the raw images that holds the optimiser and outweighs a true shift of under a voxel
_MOTION_SMOOTH_MM = 4.0
#: voxels sampled per iteration when a DSC frame is registered
_MOTION_SAMPLES = 2500


def _sitk():
    try:
        import SimpleITK as sitk
    except ImportError as exc:  # pragma: no cover - exercised where the extra is absent
        raise ImportError(EXTRA_MESSAGE) from exc
    return sitk


@validate_params({}, prefer_skip_nested_validation=True)
def has_registration():
    """Whether the optional registration dependency (SimpleITK) is installed.

    Returns
    -------
    available : bool
        True when ``import SimpleITK`` works (the ``[registration]`` extra).

    Examples
    --------
    >>> from sklearn_hemo.registration import has_registration
    >>> isinstance(has_registration(), bool)
    True
    """
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class RigidTransform:
    """A rigid transform found by :func:`register_rigid`.

    Attributes
    ----------
    matrix : ndarray of shape (4, 4)
        World (mm) matrix mapping a point of the fixed image to the same point of the
        moving image.
    rotation_deg : tuple of 3 float
        Euler angles about x, y and z, degrees.
    translation_mm : tuple of 3 float
        Displacement of the fixed image's centre, mm.
    similarity_before, similarity_after : float
        Mattes mutual information of the images (nats, higher is better) before
        registration (identity in world space) and after.
    converged : bool
        Whether the optimiser stopped on its own criterion (not on its iteration limit
        or an error).
    stop : str
        The optimiser's stopping condition, in words.
    extra : dict
        ``starts``: the mutual information each start of :func:`register_rigid` reached.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.registration import RigidTransform, euler_matrix
    >>> t = RigidTransform(euler_matrix((0, 0, 10), (2, 0, 0)), (0, 0, 10), (2, 0, 0),
    ...                    0.4, 0.7)
    >>> round(t.angle_deg, 1), round(t.gain, 2)
    (10.0, 0.75)
    """

    matrix: np.ndarray
    rotation_deg: tuple
    translation_mm: tuple
    similarity_before: float
    similarity_after: float
    converged: bool = True
    stop: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def angle_deg(self):
        """Total rotation angle, degrees."""
        return rotation_angle(self.matrix[:3, :3])

    @property
    def gain(self):
        """Relative gain of mutual information, ``after / before - 1``."""
        before = self.similarity_before
        return float(self.similarity_after / before - 1.0) if before > 0 else float("inf")

    def to_dict(self):
        """A JSON-ready summary (for ``import.json``)."""
        return {
            "rotation_deg": [round(float(v), 3) for v in self.rotation_deg],
            "angle_deg": round(self.angle_deg, 3),
            "translation_mm": [round(float(v), 3) for v in self.translation_mm],
            "similarity_before": round(float(self.similarity_before), 5),
            "similarity_after": round(float(self.similarity_after), 5),
            "similarity": "Mattes mutual information (nats)",
            "converged": bool(self.converged),
            "matrix": np.round(self.matrix, 6).tolist(),
        }


@validate_params({"rotation": ["array-like"]}, prefer_skip_nested_validation=True)
def rotation_angle(rotation):
    """Angle (degrees) of a 3 x 3 rotation matrix.

    Parameters
    ----------
    rotation : array-like of shape (3, 3)
        A rotation matrix (e.g. the upper-left block of a rigid transform).

    Returns
    -------
    angle : float
        The rotation's total angle about its axis, degrees.

    Examples
    --------
    >>> from sklearn_hemo.registration import euler_matrix, rotation_angle
    >>> round(rotation_angle(euler_matrix((0, 0, 30), (0, 0, 0))[:3, :3]), 6)
    30.0
    """
    cos = (np.trace(np.asarray(rotation, float)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


@validate_params(
    {"rotation_deg": ["array-like"], "translation_mm": ["array-like"],
     "centre": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def euler_matrix(rotation_deg, translation_mm, centre=(0.0, 0.0, 0.0)):
    """4 x 4 world matrix of a rotation about ``centre`` followed by a translation.

    ITK's Euler3DTransform (ZYX order): ``R = Rz @ Ry @ Rx``.

    Parameters
    ----------
    rotation_deg : array-like of 3 float
        Euler angles about x, y and z, degrees (z applied first).
    translation_mm : array-like of 3 float
        Translation, mm.
    centre : array-like of 3 float, default=(0, 0, 0)
        Centre of the rotation, mm.

    Returns
    -------
    matrix : ndarray of shape (4, 4)

    Examples
    --------
    >>> from sklearn_hemo.registration import euler_matrix
    >>> euler_matrix((0, 0, 90), (1, 0, 0)).round(6)[:3, 3].tolist()
    [1.0, 0.0, 0.0]
    """
    ax, ay, az = np.radians(np.asarray(rotation_deg, float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rot = rz @ ry @ rx  # ITK ComputeZYX: R = Rz Ry Rx
    centre = np.asarray(centre, float)
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = centre + np.asarray(translation_mm, float) - rot @ centre
    return out


@validate_params({"matrix": ["array-like"], "points": ["array-like"]},
                 prefer_skip_nested_validation=True)
def mean_displacement(matrix, points):
    """Mean distance (mm) a rigid world ``matrix`` moves ``points`` by.

    Parameters
    ----------
    matrix : array-like of shape (4, 4)
        A world transform (mm).
    points : array-like of shape (n, 3)
        World points (mm), e.g. the voxels of the head.

    Returns
    -------
    distance : float
        Mean Euclidean displacement, mm.

    Examples
    --------
    >>> from sklearn_hemo.registration import euler_matrix, mean_displacement
    >>> mean_displacement(euler_matrix((0, 0, 0), (3, 4, 0)), [[0, 0, 0], [10, 0, 0]])
    5.0
    """
    points = np.asarray(points, float)
    moved = points @ np.asarray(matrix)[:3, :3].T + np.asarray(matrix)[:3, 3]
    return float(np.linalg.norm(moved - points, axis=1).mean())


@validate_params({"affine": ["array-like"], "matrix": ["array-like"]},
                 prefer_skip_nested_validation=True)
def aligned_affine(affine, matrix):
    """The affine that puts a moving image on the fixed image's world frame.

    Parameters
    ----------
    affine : array-like of shape (4, 4)
        The moving image's affine.
    matrix : array-like of shape (4, 4)
        The transform found by :func:`register_rigid` (fixed point to moving point).

    Returns
    -------
    affine : ndarray of shape (4, 4)
        ``inv(matrix) @ affine``: resampling the moving data with this affine onto the
        fixed grid aligns it.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.registration import aligned_affine
    >>> shift = np.eye(4)
    >>> shift[0, 3] = 5.0  # the moving image is 5 mm further along x
    >>> float(aligned_affine(np.eye(4), shift)[0, 3])
    -5.0
    """
    return np.linalg.inv(np.asarray(matrix, float)) @ np.asarray(affine, float)


# -- SimpleITK plumbing -----------------------------------------------------------------------
def _to_sitk(data, affine):
    sitk = _sitk()
    data = np.asarray(data, dtype=np.float32)
    affine = np.asarray(affine, float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = affine[:3, :3] / spacing
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in affine[:3, 3]])
    image.SetDirection([float(v) for v in direction.ravel()])
    return image


def _from_sitk(image):
    sitk = _sitk()
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def _euler_to_matrix(transform):
    rot = np.asarray(transform.GetMatrix(), float).reshape(3, 3)
    centre = np.asarray(transform.GetCenter(), float)
    translation = np.asarray(transform.GetTranslation(), float)
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = centre + translation - rot @ centre
    return out


def _grid_centre(image):
    size = np.asarray(image.GetSize(), float)
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint(
        [float(v) for v in (size - 1) / 2.0]))


#: SimpleITK's interpolators by the names :func:`register_rigid` takes
_INTERPOLATORS = {"linear": "sitkLinear", "bspline": "sitkBSpline"}


def _method(n_bins, sampling, n_iter, seed, mask=None, learning_rate=1.0, min_step=1e-4,
            interpolator="linear", moving_mask=None):
    sitk = _sitk()
    method = sitk.ImageRegistrationMethod()
    # one thread: the metric's sums in one order, and the two cores of a small machine
    # left to the other patients of a parallel import
    method.SetNumberOfThreads(1)
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(n_bins))
    if sampling < 1.0:
        method.SetMetricSamplingStrategy(method.RANDOM)
        # seed 0 is SimpleITK's "wall clock" (a different sample every run): shift by one
        method.SetMetricSamplingPercentage(float(sampling), int(seed) + 1)
    else:
        method.SetMetricSamplingStrategy(method.NONE)
    if mask is not None:
        method.SetMetricFixedMask(mask)
    if moving_mask is not None:
        method.SetMetricMovingMask(moving_mask)
    method.SetInterpolator(getattr(sitk, _INTERPOLATORS[interpolator]))
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=float(learning_rate), minStep=float(min_step),
        numberOfIterations=int(n_iter),
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    return method


def _similarity(fixed, moving, transform, n_bins, mask=None, interpolator="linear",
                moving_mask=None):
    """Mattes MI (positive, nats) on all fixed voxels, for a comparable before/after."""
    method = _method(n_bins, 1.0, 1, 0, mask, interpolator=interpolator,
                     moving_mask=moving_mask)
    method.SetInitialTransform(transform, inPlace=False)
    try:
        return -float(method.MetricEvaluate(fixed, moving))
    except RuntimeError:  # no valid point: the images do not overlap
        return 0.0


def _register(fixed, moving, *, init, n_bins, sampling, n_iter, seed, levels, mask=None,
              initial=None, smooth_mm=0.0, learning_rate=1.0, interpolator="linear",
              moving_mask=None):
    sitk = _sitk()
    if initial is not None:
        start = initial
    elif init == "moments":
        start = sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform(),
            sitk.CenteredTransformInitializerFilter.MOMENTS)
    else:
        start = sitk.Euler3DTransform()
        start.SetCenter(_grid_centre(fixed).tolist())
    identity = sitk.Euler3DTransform()
    identity.SetCenter(_grid_centre(fixed).tolist())
    similarity = {"interpolator": interpolator, "moving_mask": moving_mask}
    before = _similarity(fixed, moving, identity, n_bins, mask, **similarity)
    method = _method(n_bins, sampling, n_iter, seed, mask, learning_rate, **similarity)
    if levels > 1 or smooth_mm:
        shrink = [2 ** k for k in range(levels - 1, -1, -1)]
        method.SetShrinkFactorsPerLevel(shrink)
        # 2.5 mm of smoothing per unit of shrink, none at full resolution
        method.SetSmoothingSigmasPerLevel([2.5 * k if k > 1 else float(smooth_mm)
                                           for k in shrink])
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    transform = sitk.Euler3DTransform(start)
    method.SetInitialTransform(transform, inPlace=True)
    converged = True
    try:
        method.Execute(fixed, moving)
        stop = method.GetOptimizerStopConditionDescription()
        converged = "Maximum number of iterations" not in stop
    except RuntimeError as exc:
        stop, converged = f"failed: {exc}".splitlines()[0], False
        transform = identity
    after = _similarity(fixed, moving, transform, n_bins, mask, **similarity)
    matrix = _euler_to_matrix(transform)
    centre = _grid_centre(fixed)
    angles = (transform.GetAngleX(), transform.GetAngleY(), transform.GetAngleZ())
    return RigidTransform(
        matrix=matrix, rotation_deg=tuple(float(np.degrees(a)) for a in angles),
        translation_mm=tuple(float(v) for v in matrix[:3, :3] @ centre + matrix[:3, 3]
                             - centre),
        similarity_before=before, similarity_after=after, converged=converged, stop=stop)


def _as_3d_data(img, name):
    shape = tuple(img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise ValueError(f"{name} must be a 3D image, got shape {img.shape}.")
    return np.asarray(img.dataobj, dtype=np.float32).reshape(shape)


@validate_params(
    {
        "fixed": [object],
        "moving": [object],
        "init": [StrOptions({"moments", "geometry"})],
        "n_bins": [Interval(Integral, 4, None, closed="left")],
        "sampling": [Interval(Real, 0, 1, closed="right")],
        "n_iter": [Interval(Integral, 1, None, closed="left")],
        "levels": [Interval(Integral, 1, 4, closed="both")],
        "smooth_mm": [Interval(Real, 0, None, closed="left")],
        "n_starts": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "interpolator": [StrOptions(set(_INTERPOLATORS))],
        "exclude_zeros": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def register_rigid(fixed, moving, *, init="moments", n_bins=32, sampling=0.5, n_iter=500,
                   levels=3, smooth_mm=0.0, n_starts=3, random_state=0,
                   interpolator="linear", exclude_zeros=False):
    """Rigidly register ``moving`` to ``fixed`` by Mattes mutual information (SimpleITK).

    The images may have different grids, resolutions and contrasts (a follow-up GRE to
    the acute DWI b0, a DSC frame to the pre-bolus median). The optimiser is SimpleITK's
    regular-step gradient descent on the six Euler parameters, started from the images'
    centres of mass (``init="moments"``) or from their world alignment, over ``levels``
    resolutions. Needs the optional extra
    ``[registration]``.

    Parameters
    ----------
    fixed : nibabel image, 3D
        The reference.
    moving : nibabel image, 3D
        The image to align to it.
    init : {"moments", "geometry"}, default="moments"
        Start from the centres of mass (large misalignments) or from the identity in
        world space (small ones, e.g. DSC frames).
    n_bins : int >= 4, default=32
        Histogram bins of the mutual information.
    sampling : float in (0, 1], default=0.5
        Fraction of the fixed voxels sampled (at random) per iteration.
    n_iter : int >= 1, default=500
        Iterations per level.
    levels : int in [1, 4], default=3
        Resolution levels (shrink factors 4, 2, 1 with 10, 5 and 0 mm of smoothing for
        three).
    smooth_mm : float >= 0, default=0.0
        Gaussian smoothing (mm) of both images at full resolution. For small
        misalignments on a grid the images share (``init="geometry"``, ``levels=1``), a
        few mm keep the optimiser off the peak that interpolation alone makes at the
        identity (``correct_motion`` uses 4 mm and the DWI registration of
        :func:`~sklearn_hemo.datasets.import_cohort` too).
    n_starts : int >= 1, default=3
        Registrations run with different voxel samples; the one with the highest mutual
        information on all voxels is kept (one sample can stop short of the optimum: on
        the simulated follow-ups the best of three is within 1 degree and 1 mm where a
        single run sometimes reaches 2).
    random_state : int >= 0, default=0
        Seed of the voxel sampling.
    interpolator : {"linear", "bspline"}, default="linear"
        How the moving image is read between its voxels (by the optimiser and by the
        similarity before and after). ``"bspline"`` (cubic B-spline, about twice the
        time) for a small misalignment of images on a shared coarse grid: linear
        interpolation blurs the moving image by an amount that depends on the sub-voxel
        offset, a bias towards the voxel grid. On simulated DWIs zero-filled at the
        edges of their 12.5 mm slices it took the mean residual from 1.3 to 0.9 mm;
        without the zeros both are within 0.7 mm (the DWI registration of
        :func:`~sklearn_hemo.datasets.import_cohort` uses it).
    exclude_zeros : bool, default=False
        Leave out of the similarity the moving voxels that are exactly zero: what a
        resliced or distortion-corrected series fills outside the field of view it
        acquired (the DWI registration of :func:`~sklearn_hemo.datasets.import_cohort`
        does; a zero-filled edge slice otherwise counts as anatomy that does not match).

    Returns
    -------
    transform : RigidTransform
        The matrix (fixed world point to moving world point), its angles and translation,
        and the mutual information before and after.

    Raises
    ------
    ImportError
        SimpleITK is not installed (the message names the extra).

    Examples
    --------
    >>> import nibabel as nib, numpy as np
    >>> from scipy import ndimage
    >>> from sklearn_hemo.registration import register_rigid
    >>> ball = np.zeros((32, 32, 16), np.float32)
    >>> ball[8:24, 10:22, 4:12] = 1
    >>> ball = ndimage.gaussian_filter(ball, 1.5)
    >>> fixed = nib.Nifti1Image(ball, np.diag([2.0, 2.0, 4.0, 1.0]))
    >>> moving = nib.Nifti1Image(np.roll(ball, 2, axis=0), np.diag([2.0, 2.0, 4.0, 1.0]))
    >>> t = register_rigid(fixed, moving)  # the moving image is 4 mm further along x
    >>> round(t.translation_mm[0]), round(t.angle_deg)
    (4, 0)
    """
    fixed_data = _as_3d_data(fixed, "fixed")
    moving_data = _as_3d_data(moving, "moving")
    fixed_image = _to_sitk(fixed_data, fixed.affine)
    moving_image = _to_sitk(moving_data, moving.affine)
    moving_mask = None
    if exclude_zeros and (moving_data == 0).any():
        moving_mask = _to_sitk((moving_data != 0).astype(np.float32), moving.affine) > 0.5
    runs = [_register(fixed_image, moving_image, init=init, n_bins=n_bins,
                      sampling=float(sampling), n_iter=n_iter, seed=random_state + k,
                      levels=levels, smooth_mm=float(smooth_mm),
                      learning_rate=0.5 if init == "geometry" else 1.0,
                      interpolator=interpolator, moving_mask=moving_mask)
            for k in range(n_starts if sampling < 1 else 1)]
    best = max(runs, key=lambda run: run.similarity_after)
    best.extra["starts"] = [round(run.similarity_after, 5) for run in runs]
    return best


# -- motion correction -----------------------------------------------------------------------
def _smoothed(volume, zooms):
    """``volume`` smoothed by a Gaussian of ``_MOTION_SMOOTH_MM`` (any number of slices)."""
    from scipy import ndimage

    return ndimage.gaussian_filter(np.asarray(volume, np.float32),
                                   _MOTION_SMOOTH_MM / np.asarray(zooms, float), mode="nearest")


def _register_frame(fixed, moving, start, *, n_bins, seed):
    """One DSC frame on the (smoothed) reference: a short regular-step descent from
    ``start`` (the previous frame's pose) on about 2,500 sampled voxels (about 20
    iterations of 1 ms on the default geometry)."""
    sitk = _sitk()
    sampling = min(1.0, _MOTION_SAMPLES / float(np.prod(fixed.GetSize())))
    method = _method(n_bins, sampling, 200, seed, learning_rate=0.5, min_step=1e-3)
    method.SetShrinkFactorsPerLevel([1])
    method.SetSmoothingSigmasPerLevel([_MOTION_SMOOTH_MM])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    transform = sitk.Euler3DTransform(start)
    method.SetInitialTransform(transform, inPlace=True)
    try:
        method.Execute(fixed, moving)
    except RuntimeError:
        return None
    return transform


@validate_params({"series": ["array-like"]}, prefer_skip_nested_validation=True)
def prebolus_frames(series):
    """Steady pre-bolus frames (start, stop) of a 4D series, from its total signal.

    The sum over the whole field of view does not change when the head moves inside it,
    while the bolus lowers it: its curve finds the bolus whatever the motion. Leading
    frames brighter than the baseline by 2 % (not yet at steady state) are skipped; the
    bolus starts where the curve first falls by a tenth of its depth.

    Parameters
    ----------
    series : array-like of shape (x, y, z, t)
        The DSC series.

    Returns
    -------
    start, stop : int
        The steady pre-bolus frames are ``series[..., start:stop]``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.registration import prebolus_frames
    >>> curve = np.r_[130.0, 100, 100, 100, 100, 60, 40, 70, 90, 95, 98]
    >>> prebolus_frames(np.ones((4, 4, 2, 1)) * curve)
    (1, 5)
    """
    series = np.asarray(series)
    curve = series.reshape(-1, series.shape[-1]).astype(np.float64).sum(axis=0)
    n = curve.size
    start = 0
    settled = float(np.percentile(curve, 75))  # the baseline and the recovered tail
    while start < n - 2 and curve[start] > 1.02 * settled:
        start += 1
    low = start + int(np.argmin(curve[start:]))
    base = float(np.median(curve[start: max(start + 1, (start + low) // 2)]))
    below = np.flatnonzero(curve[start: low + 1] < base - 0.1 * (base - curve[low]))
    stop = start + int(below[0]) if below.size and base > curve[low] else n
    return start, max(stop, start + 1)


@validate_params(
    {"series": ["array-like"], "start": [Interval(Integral, 0, None, closed="left")],
     "stop": [Interval(Integral, 1, None, closed="left")]},
    prefer_skip_nested_validation=True,
)
def prebolus_median(series, start, stop):
    """Median of the frames ``start:stop``: a frame that jumped does not blur it.

    Parameters
    ----------
    series : array-like of shape (x, y, z, t)
        The DSC series.
    start, stop : int
        The frames, e.g. from :func:`prebolus_frames`.

    Returns
    -------
    median : ndarray of float32 of shape (x, y, z)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.registration import prebolus_median
    >>> series = np.ones((2, 2, 1, 5)) * np.array([1.0, 2, 9, 3, 4])
    >>> float(prebolus_median(series, 0, 4)[0, 0, 0])
    2.5
    """
    series = np.asarray(series)
    if stop <= start:
        raise ValueError(f"stop ({stop}) must exceed start ({start}).")
    return np.median(series[..., start:stop], axis=-1).astype(np.float32)


def _points(mask, affine, limit=4000):
    idx = np.argwhere(mask)
    if len(idx) > limit:
        idx = idx[np.linspace(0, len(idx) - 1, limit).astype(int)]
    return idx @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def _power_fd(matrices):
    """Framewise displacement of Power et al. (2012) between consecutive frames (mm)."""
    out = [0.0]
    for prev, cur in zip(matrices[:-1], matrices[1:], strict=True):
        rel = np.linalg.inv(prev) @ cur
        angles = _euler_angles(rel[:3, :3])
        out.append(float(np.abs(rel[:3, 3]).sum()
                         + _HEAD_RADIUS_MM * np.abs(angles).sum()))
    return out


def _euler_angles(rot):
    """Euler angles (rad, ZYX as ITK) of a rotation matrix."""
    ay = -np.arcsin(np.clip(rot[2, 0], -1, 1))
    ax = np.arctan2(rot[2, 1], rot[2, 2])
    az = np.arctan2(rot[1, 0], rot[0, 0])
    return np.array([ax, ay, az])


@validate_params(
    {
        "pwi": [object],
        "reference": [None, "array-like"],
        "n_bins": [Interval(Integral, 4, None, closed="left")],
        "warn_mm": [Interval(Real, 0, None, closed="left"), None],
        "pid": [str, None],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def correct_motion(pwi, *, reference=None, n_bins=32, warn_mm=1.0, pid=None,
                   random_state=0):
    """Correct the head motion of a DSC series: every frame registered to a pre-bolus median.

    The reference is the median of the first (at most five) steady pre-bolus frames
    (found on the total signal, :func:`prebolus_frames`), so it holds no contrast, is in
    the pose closest in time to the series acquired before the DSC, and one frame that
    jumped does not move it. Each frame is registered to it rigidly by Mattes mutual
    information, which compares the distributions of intensities rather than the
    intensities themselves: the drop of signal during the first pass changes the
    histogram of the brain but not where the head, the scalp and the ventricles are, and
    is not taken for motion. Both images are smoothed by 4 mm (on the raw images the
    interpolation alone makes a peak of mutual information at the identity, larger than
    the gain of a true sub-voxel shift), and each frame starts from the previous frame's
    pose (head motion is mostly a slow drift; about 20 iterations of SimpleITK's
    regular-step gradient descent, a tenth of the voxels sampled). A frame is resampled
    (linear) only when its estimated displacement exceeds 0.25 mm (or a tenth of the
    smallest voxel side, when larger) and the registration raises the similarity of the
    smoothed images; other frames are kept as acquired.
    On the default simulated geometry (48 x 48 x 8, 5 mm voxels) this takes about 2-3 s
    per patient on one core. Needs the optional extra ``[registration]``.

    Parameters
    ----------
    pwi : nibabel image, 4D
        The DSC series.
    reference : array-like of shape pwi.shape[:3] or None, default=None
        A reference volume on the PWI grid; None: the pre-bolus median.
    n_bins : int >= 4, default=32
        Histogram bins of the mutual information.
    warn_mm : float >= 0 or None, default=1.0
        Warn (naming ``pid``) when a frame's displacement exceeds this many mm; None
        never warns (the load-time correction leaves the warning to the QC report).
    pid : str or None, default=None
        The participant, for the warning.
    random_state : int >= 0, default=0
        Seed of the voxel sampling.

    Returns
    -------
    corrected : nibabel image
        The series with every moved frame realigned, same grid, header and data type.
    info : dict
        ``displacement_mm`` (per frame: mean displacement of the head voxels from the
        reference pose), ``framewise_displacement_mm`` (per frame: Power's framewise
        displacement from the previous frame), ``rotation_deg`` and ``translation_mm``
        (per frame), ``corrected_frames`` (resampled frames), ``reference_frames`` (the
        frames of the reference median, ``[start, stop)``), ``prebolus_frames`` (all
        steady pre-bolus frames), ``matrices`` (4 x 4, fixed point to moving point).

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.registration import correct_motion
    >>> p = make_stroke_cohort(1, (24, 24, 8), random_state=0)[0]
    >>> corrected, info = correct_motion(p.pwi)  # doctest: +SKIP
    >>> len(info["displacement_mm"]) == p.n_frames  # doctest: +SKIP
    True
    """
    sitk = _sitk()
    if len(pwi.shape) != 4:
        raise ValueError(f"pwi must be a 4D series, got shape {pwi.shape}.")
    data = np.asarray(pwi.dataobj)
    series = data.astype(np.float32)
    affine = pwi.affine
    start, prebolus_stop = prebolus_frames(series)
    stop = min(prebolus_stop, start + _N_REFERENCE)
    if reference is None:
        ref = prebolus_median(series, start, stop)
    else:
        ref = np.asarray(reference, dtype=np.float32)
        if ref.shape != series.shape[:3]:
            raise ValueError(f"reference has shape {ref.shape}, not the PWI grid "
                             f"{series.shape[:3]}.")
    fixed = _to_sitk(ref, affine)
    zooms = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    # the estimate's noise on still frames grows with the voxel: a tenth of one at least
    still_mm = max(_STILL_MM, _STILL_VOXELS * float(zooms.min()))
    fixed_smooth = _to_sitk(_smoothed(ref, zooms), affine)
    level = np.percentile(ref, 99)
    head = ref > 0.1 * level if level > 0 else np.ones(ref.shape, bool)
    points = _points(head, affine)
    identity = sitk.Euler3DTransform()
    identity.SetCenter(_grid_centre(fixed).tolist())
    out = series.copy()
    matrices, displacement, rotations, translations, moved = [], [], [], [], []
    previous = identity
    for t in range(series.shape[-1]):
        moving = _to_sitk(series[..., t], affine)
        # from the previous frame's pose: head motion is mostly a slow drift
        found = _register_frame(fixed, moving, previous, n_bins=n_bins,
                                seed=random_state + t)
        keep = found is None
        if not keep:
            shift = mean_displacement(_euler_to_matrix(found), points)
            keep = shift < still_mm
        if not keep:
            # realigned only if it raises the similarity of the smoothed images (the
            # raw ones favour the identity, see _MOTION_SMOOTH_MM)
            smooth = _to_sitk(_smoothed(series[..., t], zooms), affine)
            keep = not (_similarity(fixed_smooth, smooth, found, n_bins)
                        > _similarity(fixed_smooth, smooth, identity, n_bins))
        matrix = np.eye(4) if keep else _euler_to_matrix(found)
        previous = identity if keep else found
        if not keep:
            resampled = sitk.Resample(moving, fixed, found, sitk.sitkLinear, 0.0)
            out[..., t] = _from_sitk(resampled)
            moved.append(t)
        matrices.append(matrix)
        displacement.append(round(mean_displacement(matrix, points), 4))
        rotations.append([round(float(np.degrees(a)), 4) for a in _euler_angles(matrix[:3, :3])])
        translations.append([round(float(v), 4) for v in matrix[:3, 3]])
    if np.issubdtype(data.dtype, np.integer):
        info_t = np.iinfo(data.dtype)
        out = np.clip(np.rint(out), info_t.min, info_t.max).astype(data.dtype)
    else:
        out = out.astype(data.dtype)
    import nibabel as nib

    corrected = nib.Nifti1Image(out, affine, header=pwi.header.copy())
    info = {
        "displacement_mm": displacement,
        "framewise_displacement_mm": [round(v, 4) for v in _power_fd(matrices)],
        "rotation_deg": rotations,
        "translation_mm": translations,
        "corrected_frames": moved,
        "reference_frames": [start, stop],
        "prebolus_frames": [start, prebolus_stop],
        "matrices": [np.round(m, 6).tolist() for m in matrices],
    }
    worst = max(displacement) if displacement else 0.0
    if warn_mm is not None and worst > warn_mm:
        frames = [t for t, d in enumerate(displacement) if d > warn_mm]
        who = f"participant {pid}: " if pid else ""
        warnings.warn(f"{who}the head moved by up to {worst:.1f} mm during the DSC series "
                      f"(frames {frames} beyond {warn_mm:g} mm); the frames were realigned "
                      "by rigid registration. Check the motion plot of the QC page.",
                      UserWarning, stacklevel=find_stack_level())
    return corrected, info
