"""Global switches of the package, as scikit-learn's ``get_config`` / ``set_config`` /
``config_context``.

======================  ===============================================  ==================
key                     what it does                                     default
======================  ===============================================  ==================
``max_image_voxels``    largest number of voxels (x * y * z * frames) an  ``SKLEARN_HEMO_MAX_
                        image header may declare; more is refused before  VOXELS``, else 2**28
                        anything is read (``_safety.check_declared_image``)
``check_on_first_use``  every new ``Cohort`` gets the voxel checks of     False (the command
                        ``Cohort.validate()`` on first use                line sets it)
``cache_bytes``         byte budget of the per-process patient cache      2**30
``aif_vof``             correct detected AIFs for partial volume by the   ``SKLEARN_HEMO_AIF_
                        venous output function                            VOF``, else True
``motion_correction``   correct head motion of DSC series when a cohort   ``SKLEARN_HEMO_
                        is read (``Patient.pwi``; cached)                 MOTION_CORRECTION``,
                                                                          else True
======================  ===============================================  ==================

The environment variables stay the defaults. ``aif_vof`` and ``motion_correction`` are
carried by their environment variables themselves, so that the worker processes of a
comparison (which inherit the environment) see them too.
"""

from __future__ import annotations

import contextlib
import os
import threading
from numbers import Integral

from .utils.fixes import Interval, validate_params

__all__ = ["get_config", "set_config", "config_context"]

MAX_VOXELS_ENV = "SKLEARN_HEMO_MAX_VOXELS"
VOF_ENV = "SKLEARN_HEMO_AIF_VOF"
MOTION_ENV = "SKLEARN_HEMO_MOTION_CORRECTION"
#: Default of ``max_image_voxels``: about 268 million, nine times a paper-sized patient
#: (128 x 128 x 20 x 90 frames, 29.5 million).
DEFAULT_MAX_IMAGE_VOXELS = 1 << 28
_OFF = ("0", "off", "false", "no")

_lock = threading.Lock()
_explicit = {}  # keys set by set_config; the others read their default when asked


def _max_voxels_from_env():
    raw = os.environ.get(MAX_VOXELS_ENV)
    if raw is None:
        return DEFAULT_MAX_IMAGE_VOXELS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_VOXELS_ENV}={raw!r} is not an integer; set it to a "
                         "number of voxels, e.g. 268435456.") from None
    if value < 1:
        raise ValueError(f"{MAX_VOXELS_ENV}={raw!r} must be positive.")
    return value


def switch(name):
    """One switch, without validation (the package's own hot paths)."""
    if name == "check_on_first_use":
        return bool(_explicit.get(name, False))
    if name == "max_image_voxels":
        return _explicit.get(name) or _max_voxels_from_env()
    return get_config()[name]


def env_switch(name):
    """Whether the on/off environment variable ``name`` is on (unset counts as on): the
    one reading of ``VOF_ENV`` and ``MOTION_ENV``, which the library's steps and the
    worker processes of a comparison (inheriting the environment) share."""
    return os.environ.get(name, "").strip().lower() not in _OFF


@validate_params({}, prefer_skip_nested_validation=True)
def get_config():
    """The current values of the package's global switches.

    Returns
    -------
    config : dict
        ``max_image_voxels`` (int), ``check_on_first_use`` (bool), ``cache_bytes``
        (int), ``aif_vof`` and ``motion_correction`` (bool); see :func:`set_config`.

    See Also
    --------
    set_config : Set them.
    config_context : Set them within a ``with`` block.

    Examples
    --------
    >>> from sklearn_hemo import get_config
    >>> sorted(get_config())
    ['aif_vof', 'cache_bytes', 'check_on_first_use', 'max_image_voxels', 'motion_correction']
    """
    from ._cache import CACHE

    with _lock:
        explicit = dict(_explicit)
    return {
        "max_image_voxels": explicit.get("max_image_voxels") or _max_voxels_from_env(),
        "check_on_first_use": bool(explicit.get("check_on_first_use", False)),
        "cache_bytes": int(CACHE.max_bytes),
        "aif_vof": env_switch(VOF_ENV),
        "motion_correction": env_switch(MOTION_ENV),
    }


_CONSTRAINTS = {
    "max_image_voxels": [Interval(Integral, 1, None, closed="left"), None],
    "check_on_first_use": ["boolean", None],
    "cache_bytes": [Interval(Integral, 0, None, closed="left"), None],
    "aif_vof": ["boolean", None],
    "motion_correction": ["boolean", None],
}


@validate_params(_CONSTRAINTS, prefer_skip_nested_validation=True)
def set_config(max_image_voxels=None, check_on_first_use=None, cache_bytes=None,
               aif_vof=None, motion_correction=None):
    """Set the package's global switches; None leaves a switch as it is.

    Parameters
    ----------
    max_image_voxels : int or None, default=None
        Largest number of voxels (x * y * z * frames) an image header may declare; a
        header declaring more is refused before anything is read or allocated (a gzip
        bomb, a forged header). Default: ``SKLEARN_HEMO_MAX_VOXELS``, else 2**28.
    check_on_first_use : bool or None, default=None
        Whether every new :class:`~sklearn_hemo.datasets.Cohort` gets the voxel checks of
        ``Cohort.validate()`` lazily, the first time each patient is used (the command
        line sets it for every command).
    cache_bytes : int or None, default=None
        Byte budget of the per-process cache of what is computed from one patient
        (default 1 GiB).
    aif_vof : bool or None, default=None
        Whether detected AIFs are corrected for partial volume by the venous output
        function (:func:`~sklearn_hemo.signal.patient_aif`). Set through the environment
        variable ``SKLEARN_HEMO_AIF_VOF``, which worker processes inherit.
    motion_correction : bool or None, default=None
        Whether a DSC series not already corrected at import is realigned (rigidly, to
        its pre-bolus frames, cached on disk) when a cohort is read
        (:attr:`~sklearn_hemo.datasets.Patient.pwi`). Set through the environment
        variable ``SKLEARN_HEMO_MOTION_CORRECTION``; a patient's own
        ``motion_correction`` takes precedence.

    Returns
    -------
    None

    See Also
    --------
    get_config : The current values.
    config_context : Set them within a ``with`` block.

    Examples
    --------
    >>> from sklearn_hemo import get_config, set_config
    >>> before = get_config()["cache_bytes"]
    >>> set_config(cache_bytes=256 * 2**20)
    >>> get_config()["cache_bytes"]
    268435456
    >>> set_config(cache_bytes=before)
    """
    new = {name: value for name, value in
           {"max_image_voxels": max_image_voxels, "check_on_first_use": check_on_first_use,
            "cache_bytes": cache_bytes, "aif_vof": aif_vof,
            "motion_correction": motion_correction}.items() if value is not None}
    with _lock:
        for name in ("max_image_voxels", "check_on_first_use"):
            if name in new:
                _explicit[name] = new[name]
    if "cache_bytes" in new:
        from ._cache import CACHE

        CACHE.max_bytes = new["cache_bytes"]
    if "aif_vof" in new:
        os.environ[VOF_ENV] = "on" if new["aif_vof"] else "off"
    if "motion_correction" in new:
        os.environ[MOTION_ENV] = "on" if new["motion_correction"] else "off"


@validate_params(_CONSTRAINTS, prefer_skip_nested_validation=True)
def config_context(*, max_image_voxels=None, check_on_first_use=None, cache_bytes=None,
                   aif_vof=None, motion_correction=None):
    """Set global switches within a ``with`` block; they return to their values after.

    Parameters
    ----------
    max_image_voxels, check_on_first_use, cache_bytes, aif_vof, motion_correction : \
            default=None
        As in :func:`set_config`; None leaves a switch as it is.

    Returns
    -------
    context : context manager

    See Also
    --------
    set_config : Set them for good.
    get_config : The current values.

    Examples
    --------
    >>> from sklearn_hemo import config_context, get_config
    >>> with config_context(aif_vof=False):
    ...     get_config()["aif_vof"]
    False
    """
    return _context(dict(max_image_voxels=max_image_voxels,
                         check_on_first_use=check_on_first_use, cache_bytes=cache_bytes,
                         aif_vof=aif_vof, motion_correction=motion_correction))


@contextlib.contextmanager
def _context(new_config):
    envs = (VOF_ENV, MOTION_ENV)
    with _lock:
        saved = dict(_explicit)
    env_before = {env: os.environ.get(env) for env in envs}
    cache_before = get_config()["cache_bytes"]
    set_config(**new_config)
    try:
        yield
    finally:
        with _lock:
            _explicit.clear()
            _explicit.update(saved)
        if new_config["cache_bytes"] is not None:
            set_config(cache_bytes=cache_before)
        for env, value in env_before.items():
            if value is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = value
