"""Motion correction of the DSC series when a cohort is read: a cached step.

:func:`~sklearn_hemo.datasets.import_cohort` writes motion-corrected series into the
cohorts it makes; a cohort already in the layout (saved by :func:`save_cohort`, simulated
by :func:`make_stroke_cohort`, copied from elsewhere) gets the same correction
(:func:`sklearn_hemo.registration.correct_motion`) when its PWI is first read for
processing. :attr:`Patient.pwi <sklearn_hemo.datasets.Patient.pwi>` is the one door
every reader goes through (features, AIF, brain mask, perfusion maps, QC, risk maps), so
it returns the corrected series: an image with the source's header and affine whose
voxels are computed on first access.

* **Cached on disk, keyed by content.** The corrected series and its record (the
  displacement of every frame) are kept in :func:`cache_dir` (``SKLEARN_HEMO_CACHE_DIR``,
  else ``$XDG_CACHE_HOME/sklearn-hemo``, else ``~/.cache/sklearn-hemo``), under
  ``motion/`` and a key made of the SHA-256 of the PWI file (of its voxels and affine for
  an in-memory series) and the settings of the correction. The correction runs once per
  series, whatever process asks (joblib workers read the file their parent wrote), and
  is reproducible (one thread, seeded sampling). Nothing is ever written into the
  cohort's folder; the input files are only read.
* **Not twice.** A patient of a cohort whose ``import.json`` records a motion
  correction (or ``--register none``, the user's choice) is read as it is.
* **A switch.** ``load_cohort(..., motion_correction=False)``, ``Patient(...,
  motion_correction=False)``, the environment variable ``SKLEARN_HEMO_MOTION_CORRECTION=off``
  (read when the patient has no setting of its own; the CLI's ``--no-motion-correction``
  sets it for the run) turn it off.
* **Skipped** when SimpleITK (the ``[registration]`` extra) is missing, and on grids
  under 4096 voxels per frame (too few for a registration; the tests' tiny cohorts), as
  at import. :func:`motion_record` says why, and the QC report shows it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np

# MOTION_ENV (``off``, ``0``, ``false`` or ``no`` turns the correction off for patients
# without a setting of their own) is read the one way the config reads it
from ._config import MOTION_ENV, env_switch

__all__ = ["MOTION_ENV", "CACHE_DIR_ENV", "cache_dir", "motion_enabled", "motion_record",
           "pwi_view", "SETTINGS"]

#: Environment variable naming the package's on-disk cache folder.
CACHE_DIR_ENV = "SKLEARN_HEMO_CACHE_DIR"
#: The correction's settings: part of the cache key (a new version recomputes).
SETTINGS = {"version": 1, "function": "correct_motion", "n_bins": 32, "random_state": 0}
#: frames of fewer voxels are not registered (as at import)
MIN_VOXELS = 4096


def motion_enabled(setting=None):
    """Whether to correct: ``setting`` when a bool, else the environment variable."""
    if setting is not None:
        return bool(setting)
    return env_switch(MOTION_ENV)


def cache_dir():
    """The package's on-disk cache folder (not created here)."""
    explicit = os.environ.get(CACHE_DIR_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "sklearn-hemo"


_IMPORT_LOGS = {}


def _import_record(patient):
    """The registration record ``import.json`` keeps for this file-backed patient."""
    source = patient.source("pwi")
    if source is None or source.parent.name != patient.id:
        return None
    log = source.parent.parent / "import.json"
    try:
        stamp = log.stat().st_mtime_ns
    except OSError:
        return None
    cached = _IMPORT_LOGS.get(log)
    if cached is None or cached[0] != stamp:
        try:
            participants = json.loads(log.read_text(encoding="utf-8")).get("participants", {})
        except (OSError, ValueError, AttributeError):
            participants = {}
        cached = (stamp, participants if isinstance(participants, dict) else {})
        _IMPORT_LOGS[log] = cached
    record = cached[1].get(patient.id)
    if not isinstance(record, dict):
        return None
    registration = record.get("registration")
    return registration if isinstance(registration, dict) else None


def _skip_reason(patient, raw):
    """Why the series is read as it is (None: it is corrected); header-only checks."""
    if len(raw.shape) != 4:
        return "not a 4D series"
    if not motion_enabled(getattr(patient, "motion_correction", None)):
        setting = getattr(patient, "motion_correction", None)
        return ("motion correction switched off" if setting is not None
                else f"motion correction switched off ({MOTION_ENV})")
    imported = _import_record(patient)
    if imported is not None:
        if "motion" in imported:
            return "corrected at import"
        if imported.get("mode") == "none":
            return "imported with register='none'"
    if int(np.prod(raw.shape[:3])) < MIN_VOXELS:
        return f"grid {tuple(raw.shape[:3])} too small for motion correction (< {MIN_VOXELS} " \
               "voxels)"
    from .registration import has_registration

    if not has_registration():
        return "SimpleITK not installed (pip install \"sklearn-hemo[registration]\")"
    return None


class CorrectedSeries:
    """Array proxy of a motion-corrected DSC series: computed, or read from the on-disk
    cache, on first access (see the module docstring)."""

    is_proxy = True

    def __init__(self, pid, raw, source, memo=None):
        self.pid = pid
        self.raw = raw
        self.source = source
        # the key, kept by the patient so that it travels with it to joblib workers
        # (hashing 60 series again for every task would cost more than reading them)
        self.memo = {} if memo is None else memo
        self._data = None
        self.record = None

    @property
    def shape(self):
        return tuple(self.raw.shape)

    @property
    def ndim(self):
        return len(self.raw.shape)

    @property
    def dtype(self):
        return np.dtype(self.raw.get_data_dtype()) if self._data is None else self._data.dtype

    def key(self):
        """Content hash of the source series and the correction's settings."""
        if self.source is not None:
            stat = self.source.stat()
            stamp = (str(self.source), stat.st_size, stat.st_mtime_ns)
        else:
            # an in-memory series is never changed in place (no setter replaces it)
            stamp = ("memory", tuple(self.raw.shape))
        known = self.memo.get("key")
        if known is not None and known[0] == stamp and known[1] == SETTINGS:
            return known[2]
        key = self._hash()
        self.memo["key"] = (stamp, dict(SETTINGS), key)
        return key

    def _hash(self):
        digest = hashlib.sha256(json.dumps(SETTINGS, sort_keys=True).encode())
        if self.source is not None:
            from ._io import sha256_file

            digest.update(sha256_file(self.source).encode())
        else:
            data = np.ascontiguousarray(np.asarray(self.raw.dataobj))
            digest.update(repr((data.shape, data.dtype.str)).encode())
            digest.update(np.ascontiguousarray(self.raw.affine, dtype=np.float64).tobytes())
            digest.update(memoryview(data).cast("B"))
        return digest.hexdigest()

    def load(self):
        """The corrected voxels (read-only) and their record; computed once."""
        if self._data is not None:
            return self._data
        folder = cache_dir() / "motion"
        key = self.key()
        array, meta = folder / f"{key}.npy", folder / f"{key}.json"
        data = record = None
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(meta.read_text(encoding="utf-8"))
            data = np.load(array, mmap_mode="r", allow_pickle=False)
            if data.shape != self.shape:
                data = record = None
        if data is None:
            data, record = self._compute()
            try:
                from ._io import atomic_path, atomic_write_text

                with atomic_path(array) as tmp:
                    np.save(tmp, data, allow_pickle=False)
                atomic_write_text(meta, json.dumps(record) + "\n")
            except OSError:  # a read-only home: corrected again by the next process
                pass
        data = np.asarray(data)
        if data.flags.writeable:
            data.flags.writeable = False
        record = {**record, "cache_key": key}
        self._data, self.record = data, record
        return data

    def _compute(self):
        from .registration import correct_motion

        corrected, info = correct_motion(self.raw, n_bins=SETTINGS["n_bins"],
                                         warn_mm=None, pid=self.pid,
                                         random_state=SETTINGS["random_state"])
        return np.asarray(corrected.dataobj), info

    def __array__(self, dtype=None, copy=None):
        data = self.load()
        return data if dtype is None else data.astype(dtype)

    def __getitem__(self, index):
        return self.load()[index]


def pwi_view(patient, raw):
    """What :attr:`Patient.pwi` returns for the source series ``raw``: ``raw`` itself when
    it is not corrected (see :func:`motion_record` for why), else an image of the same
    header and affine whose voxels are corrected on first access."""
    import nibabel as nib

    state = patient.__dict__.get("_motion_state")
    setting = (getattr(patient, "motion_correction", None), motion_enabled())
    if state is not None and state[0] is raw and state[3] == setting:
        return state[1]
    reason = _skip_reason(patient, raw)
    view = raw
    if reason is None:
        proxy = CorrectedSeries(patient.id, raw, patient.source("pwi"),
                                memo=patient.__dict__.setdefault("_motion_key", {}))
        view = nib.Nifti1Image(proxy, raw.affine, header=raw.header.copy())
    patient.__dict__["_motion_state"] = (raw, view, reason, setting)
    return view


def motion_record(patient, *, compute=True):
    """What happened to the patient's DSC series before processing, for QC.

    Returns None for a series that is not 4D; else a dict shaped like the registration
    record of ``import.json``: ``{"step": "load", "motion": {...}}`` with the
    displacements (mm) of every frame after a load-time correction, ``{"step":
    "import", "motion": {...}}`` when ``import.json`` records one, or ``{"step": None,
    "motion_skipped": reason}``. ``compute=False`` does not run a pending correction
    (the record is then ``{"step": "load", "pending": True}``).
    """
    raw = patient.raw_pwi
    if raw is None or len(raw.shape) != 4:
        return None
    view = pwi_view(patient, raw)
    if view is raw:
        reason = patient.__dict__["_motion_state"][2]
        imported = _import_record(patient)
        if reason == "corrected at import" and imported is not None:
            return {"step": "import", "motion": imported["motion"]}
        return {"step": None, "motion_skipped": reason}
    proxy = view.dataobj
    if proxy.record is None and not compute:
        return {"step": "load", "pending": True}
    proxy.load()
    motion = {k: v for k, v in proxy.record.items() if k != "matrices"}
    return {"step": "load", "motion": motion, "matrices": proxy.record.get("matrices")}
