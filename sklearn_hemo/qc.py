"""Per-patient quality control of the automatic steps, and its visual report.

The features of every model rest on automatic steps that can go wrong on a real scan
without a word: the brain mask (:meth:`~sklearn_hemo.datasets.Patient.get_brain_mask`),
the leading non-steady frames (:func:`~sklearn_hemo.signal.steady_state_frames`), the bolus
arrival and the detected AIF (:func:`~sklearn_hemo.signal.detect_aif`). :func:`patient_qc`
reads a patient exactly as the features do (the same cached mask, dropped frames and AIF:
it calls the same code) and adds plausibility measures of its perfusion maps;
:func:`write_qc_report` draws one PNG per patient and an ``index.html`` that links them
with a table of the warnings, in the manner of the visual reports of MRIQC and fMRIPrep.
QC sits beside the pipeline, not inside it: nothing here changes a feature.
"""

from __future__ import annotations

import html
import os
import urllib.parse
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from .datasets import Cohort, Patient
from .utils._verbosity import DEPRECATED, DEPRECATED_FLAG, progress_bar, resolve_verbose
from .utils.fixes import Interval, validate_params

__all__ = ["PatientQC", "patient_qc", "qc_summary", "write_qc_report", "PLAUSIBILITY_LIMITS"]

#: Share of brain voxels above which a plausibility measure warns (see :func:`patient_qc`);
#: ``prebolus_concentration`` is relative to the peak of the mean brain concentration.
PLAUSIBILITY_LIMITS = {
    "negative_cbv": 0.05,
    "negative_cbf": 0.05,
    "tmax_at_end": 0.05,
    "tmax_at_zero": 0.5,
    "negative_tmax": 0.05,
    "prebolus_concentration": 0.05,
    "high_cbf": 0.25,
    "high_cbv": 0.25,
}

#: Values beyond which CBF (mL/100 mL/min) and CBV (mL/100 mL) are implausible in brain
#: tissue (grey matter about 60 and 4; Leenders et al. 1990).
_HIGH_CBF, _HIGH_CBV = 150.0, 15.0

#: A voxel's CBV counts as negative when it lies below 0 by more than this many standard
#: errors of its estimate (one-sided 1 %): a correct map, whose true CBV is >= 0, has at
#: most 1 % of its voxels there, whatever the SNR (see :func:`_negative_cbv_share`).
_NEGATIVE_CBV_Z = 2.326

_DESCRIPTIONS = {
    "negative_cbv": "of brain voxels have a CBV below 0 by more than "
                    f"{_NEGATIVE_CBV_Z:.1f} standard errors of their noise (a baseline "
                    "off its steady state, a signal that rises above it: T1 leakage, "
                    "drift?)",
    "negative_cbf": "of brain voxels have a negative CBF",
    "tmax_at_end": "of brain voxels have a Tmax at the end of the acquisition",
    "tmax_at_zero": "of brain voxels have a Tmax of 0 (an AIF that does not precede the "
                    "tissue?)",
    "negative_tmax": "of brain voxels have a negative Tmax (tissue bolus before the AIF: a "
                     "late AIF, e.g. a vein?)",
    "prebolus_concentration": "is the mean brain pre-bolus concentration relative to its "
                              "peak (baseline not at steady state?)",
    "high_cbf": f"of brain voxels have a CBF above {_HIGH_CBF:g} mL/100 mL/min (a "
                "partial-volume or saturated AIF underestimates the arterial peak and "
                "inflates CBF; absolute values are unreliable, check the AIF in the QC "
                "report or provide aif.tsv)",
    "high_cbv": f"of brain voxels have a CBV above {_HIGH_CBV:g} mL/100 mL (see high_cbf)",
}


@dataclass
class PatientQC:
    """What the automatic steps found for one patient (see :func:`patient_qc`).

    Attributes
    ----------
    id : str
        Participant id.
    brain_mask : ndarray of bool of shape (x, y, z)
        The brain mask the features use.
    aif_voxels : ndarray of int of shape (n, 3)
        Voxels averaged into the detected AIF (empty when ``aif.tsv`` gives it).
    aif : ndarray of shape (n_kept,)
        The AIF concentration (1/s) on ``times``.
    tissue : ndarray of shape (n_kept,)
        Concentration of the mean brain signal on ``times``.
    times : ndarray of shape (n_kept,)
        Times (s) of the kept frames, 0 at the first steady-state frame.
    n_nonsteady : int
        Leading frames dropped as not at steady state.
    arrival : int
        Index (among all frames) of the first bolus frame.
    mean_signal : ndarray of shape (n_frames,)
        Mean brain signal of all frames, dropped ones included.
    measured_aif : bool
        Whether the AIF comes from ``aif.tsv`` rather than detection.
    aif_raw : ndarray of shape (n_kept,)
        The detected AIF before its partial-volume correction (the mean curve of its
        voxels; equal to ``aif`` for a measured AIF).
    vof : ndarray of shape (n_kept,) or None
        The venous output function the AIF's area was matched to (None without one).
    vof_voxels : ndarray of int of shape (m, 3)
        Voxels averaged into the VOF (empty without one).
    units : str
        Units of ``aif``, ``aif_raw`` and ``vof``: ``"mM"`` (whole-blood concentration,
        the patient's field strength known) or ``"1/s"`` (``Delta R2*``).
    measures : dict
        Plausibility measures: shares of brain voxels with a CBV below 0 beyond its noise
        (more than 2.3 standard errors, :data:`PLAUSIBILITY_LIMITS`), negative CBF, Tmax
        at the end of the acquisition, at 0 or negative, the relative pre-bolus
        concentration, and
        ``padding_s`` (seconds of the common time grid after the last frame).
    maps : Bunch or None
        The perfusion maps (:func:`~sklearn_hemo.perfusion.patient_perfusion_maps`).
    warnings : list of str
        Every warning, each naming the participant.
    notes : list of str
        What the automatic steps did as designed (dropped non-steady frames, the
        partial-volume correction, refused AIF candidates): shown in the report, not
        warnings.
    findings : list of tuple
        One ``(kind, value)`` per warning, in the same order: its kind (a name of
        :data:`PLAUSIBILITY_LIMITS`, or ``"aif_late"``, ``"aif_flat_top"``,
        ``"no_vof"``, ``"aif_candidates"``, ``"no_bolus"``, ``"padding"``,
        ``"motion"``, ``"other"``) and its size when it has one (the share, the seconds
        or the mm), else None. :func:`qc_summary` groups them.
    motion : dict or None
        The head motion of the DSC series and its correction: ``step`` (``"load"``, the
        cached correction when the series is read; ``"import"``, recorded in
        ``import.json``; None, not corrected) with ``motion`` (``displacement_mm`` and
        ``framewise_displacement_mm`` per frame, ``corrected_frames``) or
        ``motion_skipped`` (why not). None for a series that is not 4D.

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.qc import patient_qc
    >>> qc = patient_qc(make_stroke_cohort(n_patients=1, shape=(12, 12, 2),
    ...                                    random_state=0)[0])
    >>> qc.brain_mask.shape, qc.aif_voxels.shape[1]
    ((12, 12, 2), 3)
    """

    id: str
    brain_mask: np.ndarray
    aif_voxels: np.ndarray
    aif: np.ndarray
    tissue: np.ndarray
    times: np.ndarray
    n_nonsteady: int
    arrival: int
    mean_signal: np.ndarray
    measured_aif: bool
    measures: dict = field(default_factory=dict)
    maps: object = None
    warnings: list = field(default_factory=list)
    aif_raw: np.ndarray = None
    vof: np.ndarray = None
    vof_voxels: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    units: str = "1/s"
    notes: list = field(default_factory=list)
    findings: list = field(default_factory=list)
    motion: dict = None


#: Largest displacement (mm) of a DSC frame from the reference pose above which QC warns.
MOTION_WARN_MM = 1.0


def _motion_findings(patient, record):
    """The warning (above :data:`MOTION_WARN_MM`) and the note of the motion record."""
    if not record or "motion" not in record:
        return [], []
    motion = record["motion"]
    shift = [float(v) for v in motion.get("displacement_mm", [])]
    worst = max(shift, default=0.0)
    n_moved = len(motion.get("corrected_frames", []))
    where = "at load (cached)" if record.get("step") == "load" else "at import"
    warnings, notes = [], []
    if worst > MOTION_WARN_MM:
        frames = [t for t, d in enumerate(shift) if d > MOTION_WARN_MM]
        warnings.append(f"participant {patient.id}: the head moved by up to {worst:.1f} mm "
                        f"during the DSC series (frames {frames} beyond "
                        f"{MOTION_WARN_MM:g} mm); {n_moved} frame(s) were realigned {where} "
                        "by rigid registration. Check the motion plot of the QC page.")
    if n_moved:
        notes.append(f"participant {patient.id}: DSC motion corrected {where}: {n_moved} "
                     f"frame(s) realigned to the pre-bolus reference (largest displacement "
                     f"{worst:.2f} mm).")
    return warnings, notes


#: Kinds of the warnings that are not plausibility measures: a text they contain -> kind.
_KINDS = (
    ("rises at", "aif_late"),
    ("flat-topped", "aif_flat_top"),
    ("no venous output function", "no_vof"),
    ("arterial candidate curve", "aif_candidates"),
    ("no bolus found", "no_bolus"),
    ("before the end of the common time grid", "padding"),
    ("during the DSC series", "motion"),
)


def _kind(message):
    for text, kind in _KINDS:
        if text in message:
            return kind
    return "other"


def _negative_cbv_share(cbv, signal, baseline, echo_time, dt, z=_NEGATIVE_CBV_Z):
    """Share of voxels whose CBV is below 0 beyond the noise of its estimate.

    The CBV of a voxel is proportional to the area of its concentration curve
    ``C = -ln(S / S0) / TE`` over every kept frame (``S0`` the mean of the ``baseline``
    frames), so the area is a linear combination ``sum_t c_t x_t`` of the frames'
    ``x_t = -ln(S_t) / TE``: the trapezoidal weight of each frame, less, on the baseline
    frames, the whole duration over their number (the baseline's own error shifts the
    whole curve). With white noise of standard deviation ``sigma`` on the signal (the
    median over voxels of the robust frame-to-frame estimate on the baseline,
    :func:`sklearn_hemo._vessels.noise_sigma`), ``x_t`` has ``sigma / (S0 TE)`` and the
    area ``sigma / (S0 TE) sqrt(sum_t c_t^2)``. A voxel counts when its CBV is negative
    and its area below ``-z`` of those standard errors. At a low SNR the white matter
    (CBV about 2 mL/100 mL) has a standard error of the same size, so a share of
    merely negative voxels measures the noise, not the map; a map biased below zero
    (a baseline off its steady state, a signal that rises above it) still counts.
    """
    from ._vessels import noise_sigma

    signal = np.asarray(signal, dtype=np.float64)
    cbv = np.asarray(cbv, dtype=np.float64)
    if signal.ndim != 2 or signal.shape[1] < 2 or cbv.size == 0:
        return float(np.mean(cbv < 0)) if cbv.size else 0.0
    n = signal.shape[1]
    start, stop, _ = baseline.indices(n)
    n_base = max(stop - start, 1)
    weights = np.full(n, float(dt))
    weights[[0, -1]] = 0.5 * float(dt)
    coefficients = weights.copy()
    coefficients[start:stop] -= weights.sum() / n_base
    s0 = signal[:, start:stop].mean(axis=1)
    _, sigma = noise_sigma(signal, baseline)
    x = -np.log(np.clip(signal, 1e-6, None)) / float(echo_time)
    area = x @ coefficients  # the map's concentration area (its units aside)
    error = sigma / (np.maximum(s0, 1e-12) * float(echo_time)) \
        * float(np.sqrt((coefficients**2).sum()))
    return float(np.mean((cbv < 0) & (area < -z * error)))


@validate_params(
    {
        "patient": [Patient],
        "maps": ["boolean"],
        "n_timepoints": [Interval(Integral, 1, None, closed="left")],
        "time_step": [Interval(Real, 0, None, closed="neither")],
    },
    prefer_skip_nested_validation=True,
)
def patient_qc(patient, *, maps=True, n_timepoints=60, time_step=1.8):
    """Quality control of one patient: mask, dropped frames, AIF, plausibility, warnings.

    Everything comes from the code paths of the features (and their per-process cache):
    the brain mask of :class:`~sklearn_hemo.preprocessing.PatchExtractor`, the steady
    state and bolus arrival of its time plan, the AIF of
    :func:`~sklearn_hemo.signal.patient_aif` and the maps of
    :class:`~sklearn_hemo.preprocessing.PerfusionMapExtractor`.

    Warnings (returned, not emitted) name the patient and the measure: an AIF that does
    not rise before the tissue, a flat-topped (saturated) AIF, a patient without a
    venous output function (no partial-volume correction), every arterial candidate
    clipped, noisy or drifting, and each plausibility measure above its limit
    in :data:`PLAUSIBILITY_LIMITS`: the share of brain voxels with a
    CBV below 0 by more than 2.3 standard errors of its noise (propagated from the
    pre-bolus frames: a noisy but correct map has at most 1 % there, while a merely
    negative CBV is common in the white matter of a low-SNR scan), a negative CBF, a
    CBF above 150 mL/100 mL/min or a CBV above 15 mL/100 mL (the signature of a
    partial-volume AIF), with Tmax at the end of the acquisition,
    negative (the tissue before the AIF) or, for more than half of the brain, at 0, and a
    mean pre-bolus brain concentration far from 0. Steps that worked as designed are
    ``notes``, not warnings: the dropped non-steady leading frames, a scan shorter than
    the common time grid (padded, with its length), the partial-volume correction and
    the refused AIF candidates.

    Parameters
    ----------
    patient : Patient
        The patient.
    maps : bool, default=True
        Compute the perfusion maps and their plausibility measures (the slow part).
    n_timepoints, time_step : int, float, default=60, 1.8
        The common time grid of the features (for the padding check).

    Returns
    -------
    qc : PatientQC

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.qc import patient_qc
    >>> patient = make_stroke_cohort(n_patients=1, shape=(32, 32, 3), random_state=0)[0]
    >>> qc = patient_qc(patient, maps=False)
    >>> qc.n_nonsteady == int(patient.truth["n_nonsteady"]), bool(qc.brain_mask.any())
    (True, True)
    >>> print(qc.notes[0])  # doctest: +ELLIPSIS
    participant sub-001: the first 1 PWI frame(s) are not at steady state ...
    """
    from ._cache import cached, patient_brain, patient_volume
    from ._motion import motion_record
    from .signal import (
        concentration,
        padding_note,
        patient_aif_detection,
        patient_aif_on_grid,
        patient_field_strength,
        patient_time_plan,
        patient_timing,
        steady_frame_times,
        time_grid,
    )

    brain = np.asarray(patient_brain(patient))
    data = patient_volume(patient, "pwi")
    motion = motion_record(patient)
    timing = cached(patient, ("timing",), lambda: patient_timing(patient, data, brain))
    start = timing.n_nonsteady
    times = steady_frame_times(patient, start)
    warnings = list(timing.notes)
    findings = [(_kind(w), None) for w in warnings]
    notes = list(getattr(timing, "info", ()))
    baseline = slice(0, max(timing.arrival - start, 1))
    tissue = concentration(timing.mean_signal[start:], patient.echo_time, baseline=baseline)
    vof, vof_voxels = None, np.zeros((0, 3), dtype=np.int64)
    units = "mM" if patient_field_strength(patient) is not None else "1/s"
    if patient.aif is not None:
        aif = patient_aif_on_grid(patient, times.size, patient.repetition_time, 0.0, timing, data)
        voxels = np.zeros((0, 3), dtype=np.int64)
        raw = aif
    else:
        found = patient_aif_detection(patient, timing, data)
        aif, voxels = np.asarray(found.curve), np.asarray(found.voxels)
        raw, vof = np.asarray(found.raw), found.vof
        vof_voxels = np.asarray(found.vof_voxels)
        tissue = np.asarray(found.tissue)
        warnings += list(found.notes)
        findings += [(_kind(w), None) for w in found.notes]
        notes += list(found.info)
    grid = time_grid(n_timepoints, float(time_step), 0.0)
    _, padding = patient_time_plan(patient, timing, grid)
    note = padding_note(patient, padding, grid)
    if note is not None:  # the designed handling of a short scan: a note, not a warning
        notes.append(note)
    moved, corrected = _motion_findings(patient, motion)
    warnings += moved
    findings += [("motion", max(float(v) for v in motion["motion"]["displacement_mm"]))
                 for _ in moved]
    notes += corrected
    measures = {"padding_s": padding}
    peak = float(np.max(tissue)) if tissue.size else 0.0
    pre = tissue[baseline]
    measures["prebolus_concentration"] = (
        float(np.mean(np.abs(pre))) / peak if peak > 0 and pre.size else 0.0)
    perfusion = None
    if maps:
        from .perfusion._patient import cached_patient_maps

        perfusion = cached_patient_maps(patient)
        inside = brain
        if inside.any():
            duration = float(times[-1])
            tmax = perfusion.tmax[inside]
            measures["negative_cbv"] = _negative_cbv_share(
                perfusion.cbv[inside], data[inside][:, start:], baseline,
                patient.echo_time, patient.repetition_time)
            measures["negative_cbf"] = float(np.mean(perfusion.cbf[inside] < 0))
            measures["high_cbf"] = float(np.mean(perfusion.cbf[inside] > _HIGH_CBF))
            measures["high_cbv"] = float(np.mean(perfusion.cbv[inside] > _HIGH_CBV))
            measures["tmax_at_end"] = float(np.mean(
                tmax >= duration - patient.repetition_time / 2))
            measures["tmax_at_zero"] = float(np.mean(np.abs(tmax) <= 1e-6))
            measures["negative_tmax"] = float(np.mean(tmax < -1e-6))
    for name, limit in PLAUSIBILITY_LIMITS.items():
        value = measures.get(name)
        if value is not None and value > limit:
            warnings.append(
                f"participant {patient.id}: {name} = {100 * value:.1f}% "
                f"{_DESCRIPTIONS[name]}; the limit is {100 * limit:.0f}%.")
            findings.append((name, float(value)))
    return PatientQC(
        id=patient.id, brain_mask=brain.copy(), aif_voxels=voxels.astype(np.int64),
        aif=np.asarray(aif, dtype=np.float64), tissue=np.asarray(tissue, dtype=np.float64),
        times=times, n_nonsteady=int(start), arrival=int(timing.arrival),
        mean_signal=np.asarray(timing.mean_signal), measured_aif=patient.aif is not None,
        measures=measures, maps=perfusion, warnings=warnings,
        aif_raw=np.asarray(raw, dtype=np.float64),
        vof=None if vof is None else np.asarray(vof, dtype=np.float64),
        vof_voxels=vof_voxels.astype(np.int64), units=units, notes=notes,
        findings=findings, motion=motion)


# -- the summary a person reads -------------------------------------------------------------
_LABELS = {
    "negative_cbv": "negative CBV in too many brain voxels",
    "negative_cbf": "negative CBF in too many brain voxels",
    "tmax_at_end": "Tmax at the end of the acquisition in too many voxels",
    "tmax_at_zero": "Tmax of 0 in most of the brain",
    "negative_tmax": "negative Tmax in too many voxels (a late AIF?)",
    "prebolus_concentration": "mean brain concentration far from 0 before the bolus",
    "high_cbf": f"CBF above {_HIGH_CBF:g} mL/100 mL/min in too many voxels",
    "high_cbv": f"CBV above {_HIGH_CBV:g} mL/100 mL in too many voxels",
    "aif_late": "the AIF does not rise before the tissue (a vein?)",
    "aif_flat_top": "flat-topped (saturated) AIF",
    "no_vof": "no venous output function: AIF not corrected for partial volume",
    "aif_candidates": "every AIF candidate clipped, noisy or drifting",
    "no_bolus": "no bolus in the mean brain signal",
    "padding": "scan shorter than the common time grid (padded)",
    "motion": f"head moved by more than {MOTION_WARN_MM:g} mm during the DSC series "
              "(realigned)",
    "other": "other",
}
#: Notes (steps that worked as designed): a text they contain -> what they say.
_NOTE_KINDS = (
    ("not at steady state", "non-steady leading frames dropped"),
    ("corrected for partial volume", "AIF corrected for partial volume by the VOF"),
    ("candidates refused", "clipped, noisy or drifting AIF candidates refused"),
    ("before the end of the common time grid", "scan shorter than the time grid (padded)"),
    ("DSC motion corrected", "DSC head motion corrected (frames realigned)"),
)


def _format_value(kind, value):
    if value is None:
        return ""
    if kind == "padding":
        return f" ({value:.0f} s)"
    if kind == "motion":
        return f" ({value:.1f} mm)"
    return f" ({100 * value:.1f}%)"


@validate_params(
    {
        "results": [list],
        "report": [str, os.PathLike, None],
        "n_worst": [Interval(Integral, 0, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def qc_summary(results, *, report=None, n_worst=3):
    """A summary of the QC of a cohort that a person reads: one line per kind of finding.

    Each kind of warning (see :attr:`PatientQC.findings`) gets one line with its count of
    patients and the ``n_worst`` worst (largest share or padding; in cohort order when
    the kind has no size), then one line counts the notes: steps that worked as
    designed (dropped non-steady frames, the partial-volume correction), which are not
    warnings.

    Parameters
    ----------
    results : list of PatientQC
        From :func:`patient_qc` or :func:`write_qc_report`.
    report : path-like or None, default=None
        Where the per-patient report is (named in the first line), e.g. its
        ``index.html``.
    n_worst : int, default=3
        Patients named per kind.

    Returns
    -------
    summary : str
        Several lines, no trailing newline.

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.qc import patient_qc, qc_summary
    >>> cohort = make_stroke_cohort(n_patients=2, shape=(12, 12, 2), difficulty="easy",
    ...                             random_state=0)
    >>> print(qc_summary([patient_qc(p, maps=False) for p in cohort]))
    QC of 2 patient(s): none with warnings.
      notes (as designed): scan shorter than the time grid (padded) in 2 patient(s)
    """
    for qc in results:
        if not isinstance(qc, PatientQC):
            raise TypeError(f"results must hold PatientQC objects, got {type(qc).__name__}.")
    by_kind = {}
    for qc in results:
        seen = {}
        for kind, value in qc.findings:
            if kind not in seen or (value is not None and (seen[kind] is None
                                                            or value > seen[kind])):
                seen[kind] = value
        for kind, value in seen.items():
            by_kind.setdefault(kind, []).append((qc.id, value))
    n_warn = sum(bool(qc.warnings) for qc in results)
    where = f"; per-patient details in {report}" if report is not None else ""
    head = (f"QC of {len(results)} patient(s): "
            + (f"{n_warn} with warnings" if n_warn else "none with warnings") + where + ".")
    lines = [head]
    for kind in sorted(by_kind, key=lambda k: (-len(by_kind[k]), k)):
        items = by_kind[kind]
        sized = [item for item in items if item[1] is not None]
        worst = sorted(sized, key=lambda item: -item[1])[:n_worst] if sized \
            else items[:n_worst]
        names = ", ".join(f"{pid}{_format_value(kind, value)}" for pid, value in worst)
        more = ", ..." if len(items) > len(worst) else ""
        lines.append(f"  {kind}: {len(items)} patient(s), {_LABELS.get(kind, kind)}"
                     + (f"; worst: {names}{more}" if sized else f": {names}{more}"))
    counts = {}
    for qc in results:
        for label in {label for note in qc.notes for text, label in _NOTE_KINDS
                      if text in note}:
            counts[label] = counts.get(label, 0) + 1
    if counts:
        lines.append("  notes (as designed): " + "; ".join(
            f"{label} in {counts[label]} patient(s)" for _, label in _NOTE_KINDS
            if label in counts))
    return "\n".join(lines)


# -- the visual report ---------------------------------------------------------------------
def _plot_patient(qc, patient):
    """The QC figure of one patient (matplotlib Figure)."""
    from matplotlib.figure import Figure

    from ._orientation import radiological_view, to_ras

    affine = patient.affine
    data = np.asarray(patient.pwi.dataobj)
    kept = data[..., qc.n_nonsteady: max(qc.arrival, qc.n_nonsteady + 1)]
    baseline = to_ras(kept.mean(axis=-1, dtype=np.float64), affine)
    mask = to_ras(qc.brain_mask, affine)
    marks = np.zeros(qc.brain_mask.shape, dtype=bool)
    if qc.aif_voxels.size:
        marks[tuple(qc.aif_voxels.T)] = True
    marks = to_ras(marks, affine)
    veins = np.zeros(qc.brain_mask.shape, dtype=bool)
    if qc.vof_voxels.size:
        veins[tuple(qc.vof_voxels.T)] = True
    veins = to_ras(veins, affine)
    n_z = baseline.shape[2]
    # the slice with the most AIF voxels, then the one with the most VOF voxels (else
    # the largest brain section)
    order = np.argsort(-marks.sum(axis=(0, 1)), kind="stable") if marks.any() \
        else np.array([n_z // 2])
    by_veins = np.argsort(-veins.sum(axis=(0, 1)), kind="stable") if veins.any() \
        else np.array([], dtype=int)
    by_size = np.argsort(-mask.sum(axis=(0, 1)), kind="stable")
    second = next((int(k) for k in list(by_veins) + list(by_size)
                   if int(k) != int(order[0])), None)
    slices = sorted({int(order[0])} | ({second} if second is not None else set()))
    maps = qc.maps
    n_map = 3 if maps is not None else 0
    fig = Figure(figsize=(4.0 * max(len(slices) + 1, n_map), 7.6), layout="constrained")
    grid = fig.add_gridspec(2, max(len(slices) + 1, n_map))
    low, high = np.percentile(baseline[baseline > 0] if (baseline > 0).any() else baseline,
                              [1, 99])
    for col, k in enumerate(slices):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(radiological_view(baseline, k), cmap="gray", vmin=low,
                  vmax=max(high, low + 1), origin="lower", interpolation="nearest")
        if mask[:, :, k].any():
            ax.contour(radiological_view(mask, k).astype(float), levels=[0.5],
                       colors="yellow", linewidths=0.8)  # origin=None: pixel centres
        rows, cols = np.nonzero(radiological_view(marks, k))
        if rows.size:
            ax.scatter(cols, rows, s=28, facecolors="none", edgecolors="red", linewidths=1.2)
        rows, cols = np.nonzero(radiological_view(veins, k))
        if rows.size:
            ax.scatter(cols, rows, s=28, marker="s", facecolors="none",
                       edgecolors="deepskyblue", linewidths=1.2)
        ax.set_title(f"slice {k}: mask (yellow), AIF (red), VOF (blue)", fontsize=8)
        ax.text(0.01, 0.5, "R", transform=ax.transAxes, color="white", fontsize=10,
                va="center")
        ax.text(0.97, 0.5, "L", transform=ax.transAxes, color="white", fontsize=10,
                va="center")
        ax.set_axis_off()
    ax = fig.add_subplot(grid[0, len(slices)])
    all_times = patient.frame_times - patient.frame_times[qc.n_nonsteady]
    ax.plot(qc.times, qc.aif, color="red", label="AIF" + (" (aif.tsv)" if qc.measured_aif
                                                           else f" ({len(qc.aif_voxels)} vx)"))
    if qc.aif_raw is not None and not qc.measured_aif and qc.vof is not None:
        ax.plot(qc.times, qc.aif_raw, color="red", lw=0.8, ls="--",
                label="AIF before partial-volume correction")
    if qc.vof is not None:
        ax.plot(qc.times, qc.vof, color="deepskyblue",
                label=f"VOF ({len(qc.vof_voxels)} vx)")
    ax.plot(qc.times, qc.tissue * (qc.aif.max() / max(qc.tissue.max(), 1e-12)),
            color="black", label="mean brain (scaled)")
    ax.set_xlabel("time from the first steady-state frame (s)")
    ax.set_ylabel("blood concentration (mM)" if qc.units == "mM"
                  else "concentration (Delta R2*, 1/s)")
    ax2 = ax.twinx()
    ax2.plot(all_times, qc.mean_signal, color="grey", lw=0.8, ls="--",
             label="mean brain signal")
    if qc.n_nonsteady:
        ax2.plot(all_times[: qc.n_nonsteady], qc.mean_signal[: qc.n_nonsteady], "x",
                 color="magenta", label=f"{qc.n_nonsteady} dropped frame(s)")
    ax2.set_ylabel("signal (a.u.)", color="grey")
    ax.axvline(all_times[max(qc.arrival - 1, 0)], color="blue", lw=0.6, ls=":")
    lines = ax.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper right")
    ax.set_title("AIF, VOF and tissue curves", fontsize=9)
    if maps is not None:
        k = slices[-1]
        for col, (name, unit) in enumerate((("cbf", "mL/100 mL/min"), ("cbv", "mL/100 mL"),
                                            ("tmax", "s"))):
            volume = to_ras(np.asarray(maps[name]), affine)
            values = volume[mask]
            top = np.percentile(values, 98) if values.size else 1.0
            ax = fig.add_subplot(grid[1, col])
            shown = np.ma.masked_where(~radiological_view(mask, k),
                                       radiological_view(volume, k))
            bottom = min(0.0, float(np.percentile(values, 2))) if values.size else 0.0
            image = ax.imshow(shown, cmap="viridis", vmin=bottom, vmax=max(top, bottom + 1e-6),
                              origin="lower", interpolation="nearest")
            fig.colorbar(image, ax=ax, shrink=0.8, label=unit)
            ax.set_title(f"{name.upper()}, axial slice {k}", fontsize=9)
            ax.set_axis_off()
    fig.suptitle(f"{qc.id}: {len(qc.warnings)} warning(s)", fontsize=11)
    return fig


def _import_motion(cohort):
    """``{participant: registration record}`` of the cohort's ``import.json``, if any."""
    import json

    path = getattr(cohort, "path", None)
    log = Path(path) / "import.json" if path is not None else None
    if log is None or not log.is_file():
        return {}
    try:
        participants = json.loads(log.read_text(encoding="utf-8")).get("participants", {})
    except (ValueError, AttributeError):
        return {}
    return {pid: (rec or {}).get("registration", {}) for pid, rec in participants.items()
            if isinstance(rec, dict)}


def _motion_cell(record, width=160, height=36, limit=1.0):
    """The head-motion cell: largest displacement, realigned frames, an inline plot."""
    if not record:
        return "n/a"
    motion = record.get("motion")
    if not motion:
        return html.escape(str(record.get("motion_skipped", "not corrected")))
    where = {"load": " (at load)", "import": " (at import)"}.get(record.get("step"), "")
    shift = np.asarray(motion.get("displacement_mm", []), dtype=float)
    if not shift.size:
        return "n/a"
    top = max(float(shift.max()), 2 * limit)
    xs = np.linspace(2, width - 2, shift.size)
    ys = height - 2 - (height - 4) * shift / top
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    line = height - 2 - (height - 4) * limit / top
    colour = "#c0392b" if shift.max() > limit else "#2c7a2c"
    svg = (f'<svg width="{width}" height="{height}" role="img" aria-label="displacement '
           f'per frame"><line x1="0" x2="{width}" y1="{line:.1f}" y2="{line:.1f}" '
           f'stroke="#999" stroke-dasharray="3,3"/><polyline fill="none" stroke="{colour}" '
           f'points="{points}"/></svg>')
    framewise = np.asarray(motion.get("framewise_displacement_mm", []), dtype=float)
    fd = f", framewise displacement up to {framewise.max():.2f} mm" if framewise.size else ""
    return (f"max {shift.max():.2f} mm, {len(motion.get('corrected_frames', []))} "
            f"frame(s) realigned{where}{fd}<br>{svg}")


@validate_params(
    {
        "cohort": [Cohort],
        "out_dir": [str, os.PathLike],
        "overwrite": ["boolean"],
        "maps": ["boolean"],
        "dpi": [Interval(Real, 0, None, closed="neither")],
        "verbose": [Integral],  # resolve_verbose's message names the function
        "progress": DEPRECATED_FLAG,
    },
    prefer_skip_nested_validation=True,
)
def write_qc_report(cohort, out_dir, *, overwrite=False, maps=True, dpi=80, verbose=0,
                    progress=DEPRECATED):
    """Write one QC PNG per patient and an ``index.html`` that links them.

    Each PNG shows the steady baseline image (radiological convention: the patient's
    right on the left, from the affine) with the brain-mask outline and the AIF voxels,
    the AIF and mean tissue curves with the dropped leading frames, and the CBF, CBV and
    Tmax maps. ``index.html`` lists every patient with its dropped frames, AIF voxel
    count, mask size, head motion (the displacement of each DSC frame found by
    :func:`~sklearn_hemo.datasets.import_cohort`, from the cohort's ``import.json``, or
    by the cached correction when the series was read, :attr:`PatientQC.motion`) and
    warnings, and links each PNG.

    Parameters
    ----------
    cohort : Cohort
        The patients.
    out_dir : path-like
        Output folder (created).
    overwrite : bool, default=False
        Allow replacing a report (``index.html``) already in ``out_dir``, and writing
        into a folder holding files this package did not write there (only same-named
        files are replaced; nothing else is deleted). ``out_dir`` may not lie inside the
        cohort's folder.
    maps : bool, default=True
        Compute and draw the perfusion maps and their plausibility measures.
    dpi : int, default=80
        Resolution of the PNGs.
    verbose : int, default=0
        0 silent; 1 a progress bar; 2 also one line per patient reported. Bars and lines go to
        standard error; warnings are raised whatever ``verbose`` is.
    progress : bool
        Deprecated, use ``verbose`` (``progress=True`` is ``verbose=1``); removed in 0.2.

    Returns
    -------
    results : list of PatientQC
        In cohort order.

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.qc import write_qc_report
    >>> cohort = make_stroke_cohort(n_patients=2, shape=(12, 12, 2), random_state=0)
    >>> results = write_qc_report(cohort, "/tmp/sklearn-hemo-doc-qc", overwrite=True)
    >>> len(results)
    2
    """
    from ._io import atomic_path, atomic_write_text
    from ._safety import check_participant_id, claim_folder

    verbose = resolve_verbose(verbose, "write_qc_report", progress=progress)
    out = Path(out_dir)
    index = out / "index.html"
    if index.exists() and not overwrite:
        raise FileExistsError(f"{index} already exists; choose another folder or pass "
                              "overwrite=True (--overwrite) to replace the report.")
    for patient in cohort:  # ids name files and links: checked before anything is written
        check_participant_id(patient.id)
    owned = claim_folder(out, "qc", overwrite=overwrite,
                         inputs=[cohort.path] if cohort.path is not None else [])
    patients = progress_bar(cohort, verbose, desc="qc", unit="patient",
                            line=lambda p: f"qc of {p.id} written")
    motion = _import_motion(cohort)
    results, rows = [], []
    for patient in patients:
        qc = patient_qc(patient, maps=maps)
        fig = _plot_patient(qc, patient)
        name = f"{patient.id}_qc.png"
        with owned.writing([name]), atomic_path(out / name) as tmp:
            fig.savefig(tmp, dpi=dpi)
        results.append(qc)
        items = "".join(f"<li>{html.escape(w)}</li>" for w in qc.warnings) or "<li>none</li>"
        noted = "".join(f"<li>{html.escape(n)}</li>" for n in qc.notes)
        status = "warn" if qc.warnings else "ok"
        rows.append(
            f'<tr class="{status}"><td><a href="{_anchor_link(patient.id)}">'
            f"{html.escape(patient.id)}</a></td><td>{qc.n_nonsteady}</td>"
            f"<td>{'aif.tsv' if qc.measured_aif else len(qc.aif_voxels)}</td>"
            f"<td>{len(qc.vof_voxels)}</td>"
            f"<td>{int(qc.brain_mask.sum())}</td>"
            f"<td>{_motion_cell(qc.motion or motion.get(patient.id))}</td>"
            f"<td>{len(qc.warnings)}</td>"
            f"<td><ul>{items}</ul>"
            + (f'<ul class="note">{noted}</ul>' if noted else "") + "</td></tr>")
    figures = "\n".join(
        f'<section id="{_anchor(qc.id)}"><h2>{html.escape(qc.id)}</h2>'
        f'<a href="{_file_link(qc.id + "_qc.png")}"><img src="{_file_link(qc.id + "_qc.png")}" '
        f'alt="QC of {html.escape(qc.id)}"></a></section>' for qc in results)
    n_warn = sum(bool(qc.warnings) for qc in results)
    summary = html.escape(qc_summary(results))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sklearn-hemo QC report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #bbb; padding: 0.3em 0.6em; vertical-align: top; }}
tr.warn td:first-child {{ background: #fde2b8; }} tr.ok td:first-child {{ background: #d8f0d2; }}
img {{ max-width: 100%; border: 1px solid #ccc; }} ul {{ margin: 0; padding-left: 1.2em; }}
ul.note {{ color: #555; font-size: 90%; }}
</style></head><body>
<h1>Quality control: {len(results)} patient(s), {n_warn} with warnings</h1>
<pre>{summary}</pre>
<p>Brain mask, dropped non-steady frames, AIF and VOF voxels and perfusion maps as the
features use them; grey notes are steps that worked as designed. Images in radiological
convention (the patient's right on the left). Head motion: the displacement of each DSC
frame from the pre-bolus reference (mm; a line beyond 1 mm in red), found by
<code>sklearn-hemo import</code> (read from the cohort's <code>import.json</code>) or by
the cached correction when the series was read (at load); the realigned frames are those
every feature uses.</p>
<table><thead><tr><th>participant</th><th>dropped frames</th><th>AIF voxels</th>
<th>VOF voxels</th><th>mask voxels</th><th>head motion</th><th>warnings</th>
<th>details</th></tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
{figures}
</body></html>
"""
    with owned.writing([index.name]):
        atomic_write_text(index, page)
    return results


def _file_link(name):
    """A link to file ``name`` beside the page: ``./`` + the percent-quoted name, so that
    no id can become a URL scheme (``javascript:``), a query (``?``), a fragment (``#``)
    or an escape (``%``)."""
    return html.escape("./" + urllib.parse.quote(name, safe=""), quote=True)


def _anchor(pid):
    """The ``id`` attribute of a patient's section (percent-quoted, as its link)."""
    return html.escape(urllib.parse.quote(pid, safe=""), quote=True)


def _anchor_link(pid):
    return "#" + _anchor(pid)
