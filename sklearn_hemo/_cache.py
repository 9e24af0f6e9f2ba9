"""Per-process cache of what is computed from one patient's images.

Reading a patient's PWI (decompressing a ``.nii.gz``), deriving its brain mask, detecting
its bolus arrival or computing its perfusion maps costs far more than using the result,
and cross-validation asks for the same patients again at every fit and score. The
transformers therefore keep those per-patient results in one shared :class:`PatientCache`,
:data:`CACHE`, of at most :data:`CACHE_BYTES` bytes per process.

It is module-level state: estimators do not carry it, so pickling, ``clone`` and joblib
workers see none of it (each worker process fills its own). Values are shared by every
caller and must be read-only arrays, or dicts / tuples of them.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping

import nibabel as nib
import numpy as np

__all__ = ["PatientCache", "CACHE", "CACHE_BYTES", "clear_cache"]

#: Byte budget of :data:`CACHE` (1 GiB): the maps of a paper-sized patient take about
#: 15 MB, its raw int16 PWI about 130 MB. Change it with ``CACHE.max_bytes = ...``.
CACHE_BYTES = 1 << 30


def _nbytes(value):
    """Bytes held by the arrays of a cached value (arrays, mappings, tuples, lists)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, Mapping):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


def _read_only(value):
    """``value`` with every array in it made read-only (in place), for sharing."""
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif isinstance(value, Mapping):
        for v in value.values():
            _read_only(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            _read_only(v)
    return value


class PatientCache:
    """Values computed from patients in this process, least recently used first out.

    Entries are keyed by the Patient object (its identity: a cohort's copies and clones
    share their patients) and a key tuple of the parameters the value depends on. They
    are dropped when the patient is garbage collected, and evicted, least recently used
    first, beyond ``max_bytes`` in total; a value larger than ``max_bytes`` on its own is
    returned without being stored. Thread-safe: two threads may compute the same value
    at once, and the last one stored wins (values are deterministic).
    """

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self._entries = OrderedDict()  # (id, key) -> (patient weakref, value, nbytes)
        self._watched = {}  # id -> weakref of the live patient with that id
        self._pending = []  # finalised patients seen while the lock was held
        self._nbytes = 0
        self._lock = threading.Lock()

    def get(self, patient, key, compute):
        """The value of ``(patient, key)``, from ``compute()`` on a miss (then stored)."""
        full_key = (id(patient), key)
        with self._lock:
            self._purge_pending()
            entry = self._entries.get(full_key)
            # the weakref check guards against a new patient reusing a dead one's id
            if entry is not None and entry[0]() is patient:
                self._entries.move_to_end(full_key)
                return entry[1]
        value = compute()
        size = _nbytes(value)
        if size > self.max_bytes:
            return value
        with self._lock:
            self._purge_pending()
            ref = self._watched.get(id(patient))
            if ref is None or ref() is not patient:
                ref = weakref.ref(patient)
                self._watched[id(patient)] = ref
                weakref.finalize(patient, self._forget, id(patient), ref)
            old = self._entries.pop(full_key, None)
            if old is not None:
                self._nbytes -= old[2]
            self._entries[full_key] = (ref, value, size)
            self._nbytes += size
            while self._nbytes > self.max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                self._nbytes -= dropped[2]
        return value

    def _forget(self, patient_id, ref):
        # a finalizer may run from the garbage collector while this very thread holds
        # the lock: never block, defer to the next access instead
        if not self._lock.acquire(blocking=False):
            self._pending.append((patient_id, ref))
            return
        try:
            self._pending.append((patient_id, ref))
            self._purge_pending()
        finally:
            self._lock.release()

    def _purge_pending(self):
        """Drop the entries of finalised patients (the lock is held)."""
        while self._pending:
            patient_id, ref = self._pending.pop()
            for full_key in [k for k, e in self._entries.items()
                             if k[0] == patient_id and e[0] is ref]:
                self._nbytes -= self._entries.pop(full_key)[2]
            if self._watched.get(patient_id) is ref:
                del self._watched[patient_id]

    def __len__(self):
        with self._lock:
            self._purge_pending()
            return len(self._entries)

    @property
    def nbytes(self):
        """Bytes held by the cached arrays."""
        with self._lock:
            self._purge_pending()
            return self._nbytes

    def clear(self):
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
            self._nbytes = 0


#: The cache shared by the transformers of this process.
CACHE = PatientCache(max_bytes=CACHE_BYTES)


def clear_cache():
    """Drop every cached per-patient value of this process (e.g. after editing files)."""
    CACHE.clear()


def cached(patient, key, compute):
    """``compute()`` for ``(patient, key)`` through :data:`CACHE`, made read-only."""
    return CACHE.get(patient, key, lambda: _read_only(compute()))


# -- per-patient volumes, shared by the feature extractors and quality control ----------
def patient_volume(patient, name):
    """The voxel array of the patient's image ``name``, read once per process.

    A file-backed image (a nibabel array proxy: a ``.nii.gz`` is decompressed at every
    read) is read through the shared cache, read-only; an in-memory one is returned as it
    is, at no cost.
    """
    img = getattr(patient, name)
    if nib.is_proxy(img.dataobj):
        return cached(patient, ("volume", name), lambda: np.asarray(img.dataobj))
    return np.asarray(img.dataobj)


def patient_brain(patient):
    """:meth:`Patient.get_brain_mask` as a read-only C-contiguous bool array (cached)."""
    return cached(patient, ("brain_mask",),
                  lambda: np.ascontiguousarray(patient.get_brain_mask(), dtype=bool))
