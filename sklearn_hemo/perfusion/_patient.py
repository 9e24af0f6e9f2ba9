"""All perfusion and permeability maps of one patient, from its source DSC signal."""

from __future__ import annotations

import numpy as np
from scipy.integrate import trapezoid
from sklearn.utils import Bunch

from .._cache import CACHE, cached
from ..datasets import Patient
from ..exceptions import QCWarning
from ..utils._warnings import find_stack_level
from ..utils.fixes import StrOptions, validate_params
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


@validate_params(
    {"patient": [Patient], "method": [StrOptions({"osvd", "csvd", "ssvd"})]},
    # **kwargs go to perfusion_maps: let it check them
    prefer_skip_nested_validation=False,
)
def patient_perfusion_maps(patient, *, method="osvd", **kwargs):
    """CBF, CBV, MTT, Tmax, leakage K2 and permeability maps of one patient.

    Leading non-steady frames are dropped (see
    :func:`sklearn_hemo.signal.steady_state_frames`), the brain voxels of the source PWI
    are converted to concentration with :func:`sklearn_hemo.signal.concentration`
    (baseline: the steady pre-bolus frames of the mean brain signal), the patient's AIF
    is taken on its own kept frame times with :func:`sklearn_hemo.signal.patient_aif`
    (measured, or detected when absent: the same AIF as the patch features), and the
    maps are computed on the acquisition's own time grid (no resampling: interpolation
    would smooth the bolus, and a short acquisition padded to the paper's 108 s would
    distort the areas).

    Absolute or relative: when the patient's field strength is known
    (``MagneticFieldStrength`` in ``pwi.json``; see
    :func:`sklearn_hemo.signal.patient_field_strength`) the AIF is whole-blood
    concentration in mM (:func:`sklearn_hemo.relaxivity.blood_concentration`) and the
    tissue curves tissue concentration in mM
    (:func:`sklearn_hemo.relaxivity.tissue_concentration`), so CBF and CBV are absolute
    (no haematocrit correction unless ``hematocrit`` is passed). Without it both stay
    ``Delta R2*`` (kappa 1, arterial and tissue relaxivity taken equal) and the maps are
    relative, as in Yu et al. The AIF is the one of the features: detected, screened
    and corrected for partial volume by the venous output function
    (:func:`sklearn_hemo.signal.patient_aif`).

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
    import warnings

    from ..signal import concentration, patient_aif_on_grid, patient_timing

    brain = patient.get_brain_mask()
    if not brain.any():
        raise ValueError(
            f"participant {patient.id}: the brain mask is empty; provide a brain_mask image "
            "that covers the brain."
        )
    dt = patient.repetition_time
    data = np.asarray(patient.pwi.dataobj)
    timing = patient_timing(patient, data, brain)
    for note in timing.notes:
        warnings.warn(note, QCWarning, stacklevel=find_stack_level())
    start = timing.n_nonsteady  # leading non-steady frames are dropped
    signal = data[brain][:, start:].astype(np.float64)
    conc = _tissue_units(patient, concentration(
        signal, patient.echo_time, baseline=slice(0, max(timing.arrival - start, 1))))
    aif = patient_aif_on_grid(patient, signal.shape[1], dt, 0.0, timing, data)
    try:
        maps = perfusion_maps(conc, aif, dt, method=method, **kwargs)
        reference = nonenhancing_reference(conc, dt)
        maps["k2"] = estimate_leakage(conc, reference, dt).k2
        corrected = correct_leakage(conc, reference, dt, maps["k2"])
        factor = _correction_factor(kwargs.get("hematocrit"), kwargs.get("density"))
        maps["cbv_corrected"] = (
            factor * 100.0 * trapezoid(corrected, axis=-1) / trapezoid(aif)
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


def _tissue_units(patient, curves):
    """Tissue ``Delta R2*`` curves as tissue concentration (mM) when the patient's field
    strength is known (:func:`sklearn_hemo.signal.patient_field_strength`), else as
    they are (kappa 1)."""
    from ..signal import patient_field_strength

    field = patient_field_strength(patient)
    if field is None:
        return curves
    from ..relaxivity import tissue_concentration

    return np.asarray(tissue_concentration(curves, field))


#: The per-process cache shared with the other transformers (see sklearn_hemo._cache).
_CACHE = CACHE


def _arrival_k2(patient):
    """Leakage K2 of every brain voxel fitted against the reference delayed and
    dispersed to the voxel's own arrival (:func:`estimate_leakage_arrival`), on the PWI
    grid (0 outside the brain)."""
    from ..signal import concentration
    from ._leakage import estimate_leakage_arrival

    brain = patient.get_brain_mask()
    dt = patient.repetition_time
    conc = _tissue_units(patient, concentration(
        np.asarray(patient.pwi.dataobj)[brain].astype(np.float64), patient.echo_time))
    try:
        k2 = estimate_leakage_arrival(conc, nonenhancing_reference(conc, dt), dt).k2
    except ValueError as exc:
        raise ValueError(f"participant {patient.id}: {exc}") from None
    full = np.zeros(brain.shape, dtype=np.float32)
    full[brain] = k2
    return full


def _cached_arrival_k2(patient):
    """:func:`_arrival_k2` of ``patient``, computed once per process (cached)."""
    return cached(patient, ("k2_arrival",), lambda: _arrival_k2(patient))


def cached_patient_maps(patient, method="osvd"):
    """:func:`patient_perfusion_maps` of ``patient``, computed once per process (cached)."""
    # read-only: shared by every caller
    from ..signal import vof_correction_default

    return cached(patient, ("maps", method, vof_correction_default()),
                  lambda: patient_perfusion_maps(patient, method=method))
