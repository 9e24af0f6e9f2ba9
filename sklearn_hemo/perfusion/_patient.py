"""All perfusion and permeability maps of one patient, from its source DSC signal."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import numpy as np
from sklearn.utils import Bunch

from ._deconvolution import _correction_factor, perfusion_maps
from ._leakage import correct_leakage, estimate_leakage, nonenhancing_reference
from ._permeability import permeability_measures

__all__ = ["patient_perfusion_maps", "MAP_NAMES"]

#: Names of the maps returned by :func:`patient_perfusion_maps`, in a fixed order.
MAP_NAMES = (
    "cbf",
    "cbv",
    "mtt",
    "tmax",
    "k2",
    "cbv_corrected",
    "contrast_slope",
    "final_contrast",
    "max_concentration",
    "peak_bolus_area",
    "psr",
)


def patient_perfusion_maps(patient, *, method="osvd", **kwargs):
    """CBF, CBV, MTT, Tmax, leakage K2 and permeability maps of one patient.

    The brain voxels of the source PWI are converted to concentration with
    :func:`sklearn_hemo.signal.concentration` (baseline detected on the mean brain
    signal), the patient's AIF is taken on its own frame times with
    :func:`sklearn_hemo.signal.patient_aif` (measured, or detected when absent), and the
    maps are computed on the acquisition's own time grid (no resampling: interpolation
    would smooth the bolus, and a short acquisition padded to the paper's 108 s would
    distort the areas).

    CBF, CBV, MTT and Tmax are *not* leakage-corrected: the Boxerman-Schmainda-Weisskoff
    model assumes that a voxel's curve has the shape of the whole-brain reference, which
    delayed, dispersed, long-MTT ischaemic tissue violates (Bjornerud et al., JCBFM
    31:2041, 2011); on the simulated cohort its correction lowers the CBV of the lesion
    instead of restoring it. Its ``k2`` and corrected CBV are returned as separate maps,
    features in their own right for HT prediction.

    Parameters
    ----------
    patient : Patient
        A patient of a :class:`~sklearn_hemo.datasets.Cohort`.
    method : {"osvd", "csvd", "ssvd"}, default="osvd"
        Deconvolution method, see :func:`perfusion_maps`.
    **kwargs
        Passed to :func:`perfusion_maps` (``threshold``, ``oscillation_index``,
        ``hematocrit``, ``density``).

    Returns
    -------
    maps : :class:`~sklearn.utils.Bunch`
        One float32 array on the PWI grid per name of ``MAP_NAMES``, 0 outside the brain
        mask: ``cbf`` (mL/100 mL/min), ``cbv`` (mL/100 mL), ``mtt`` (s), ``tmax`` (s),
        ``k2`` (1/s, BSW against :func:`nonenhancing_reference`), ``cbv_corrected``
        (mL/100 mL, BSW-corrected) and the :func:`permeability_measures`
        (``psr`` in %).

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.perfusion import patient_perfusion_maps
    >>> patient = make_stroke_cohort(n_patients=1, shape=(8, 8, 1), random_state=0)[0]
    >>> maps = patient_perfusion_maps(patient)
    >>> maps.cbf.shape, maps.cbf.dtype
    ((8, 8, 1), dtype('float32'))
    """
    from ..signal import concentration, patient_aif

    brain = patient.get_brain_mask()
    if not brain.any():
        raise ValueError(
            f"participant {patient.id}: the brain mask is empty; provide a brain_mask image "
            "that covers the brain."
        )
    dt = patient.repetition_time
    signal = np.asarray(patient.pwi.dataobj)[brain].astype(np.float64)
    conc = concentration(signal, patient.echo_time)
    aif = patient_aif(patient, n_timepoints=patient.n_frames, time_step=dt)
    try:
        maps = perfusion_maps(conc, aif, dt, method=method, **kwargs)
        reference = nonenhancing_reference(conc, dt)
        maps["k2"] = estimate_leakage(conc, reference, dt).k2
        corrected = correct_leakage(conc, reference, dt, maps["k2"])
        factor = _correction_factor(kwargs.get("hematocrit"), kwargs.get("density"))
        maps["cbv_corrected"] = (
            factor * 100.0 * np.trapezoid(corrected, axis=-1) / np.trapezoid(aif)
        )
    except ValueError as exc:
        raise ValueError(f"participant {patient.id}: {exc}") from None
    maps.update(permeability_measures(conc, dt, signal=signal))
    out = Bunch()
    for name in MAP_NAMES:
        full = np.zeros(brain.shape, dtype=np.float32)
        full[brain] = maps[name]
        out[name] = full
    return out


class _MapCache:
    """Maps of patients computed in this process, least recently used first out.

    Entries are keyed by the Patient object (its identity: a cohort's copies and clones
    share their patients) and the map parameters, dropped when the patient is garbage
    collected, and evicted beyond ``max_bytes`` in total.
    """

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self._entries = OrderedDict()
        self._watched = set()
        self._lock = threading.Lock()

    def get(self, patient, key, compute):
        full_key = (id(patient), key)
        with self._lock:
            if full_key in self._entries:
                self._entries.move_to_end(full_key)
                return self._entries[full_key]
        value = compute()
        with self._lock:
            self._entries[full_key] = value
            if id(patient) not in self._watched:
                self._watched.add(id(patient))
                weakref.finalize(patient, self._forget, id(patient))
            total = sum(_nbytes(v) for v in self._entries.values())
            while total > self.max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                total -= _nbytes(dropped)
        return value

    def _forget(self, patient_id):
        with self._lock:
            for full_key in [k for k in self._entries if k[0] == patient_id]:
                del self._entries[full_key]
            self._watched.discard(patient_id)

    def clear(self):
        with self._lock:
            self._entries.clear()


def _nbytes(maps):
    return sum(value.nbytes for value in maps.values())


#: Per-process cache of whole-patient maps (about 1.3 MB per map of a paper-sized patient).
_CACHE = _MapCache(max_bytes=1 << 30)


def _cached_patient_maps(patient, method="osvd"):
    """:func:`patient_perfusion_maps` of ``patient``, computed once per process (cached)."""
    def compute():
        maps = patient_perfusion_maps(patient, method=method)
        for value in maps.values():
            value.flags.writeable = False  # shared by every caller
        return maps

    return _CACHE.get(patient, ("maps", method), compute)
