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

__all__ = ["PatientQC", "patient_qc", "write_qc_report", "PLAUSIBILITY_LIMITS"]

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

_DESCRIPTIONS = {
    "negative_cbv": "of brain voxels have a negative CBV",
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
    measures : dict
        Plausibility measures: shares of brain voxels with negative CBV or CBF, with Tmax
        at the end of the acquisition, at 0 or negative, the relative pre-bolus
        concentration, and
        ``padding_s`` (seconds of the common time grid after the last frame).
    maps : Bunch or None
        The perfusion maps (:func:`~sklearn_hemo.perfusion.patient_perfusion_maps`).
    warnings : list of str
        Every warning, each naming the participant.

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

    Warnings (returned, not emitted) name the patient and the measure: non-steady
    leading frames dropped, an AIF that does not peak before the tissue, a scan shorter
    than the common time grid (padding, with its length), and each plausibility measure
    above its limit in :data:`PLAUSIBILITY_LIMITS`: the share of brain voxels with a
    negative CBV or CBF, with a CBF above 150 mL/100 mL/min or a CBV above 15 mL/100 mL
    (the signature of a partial-volume AIF), with Tmax at the end of the acquisition,
    negative (the tissue before the AIF) or, for more than half of the brain, at 0, and a
    mean pre-bolus brain concentration far from 0.

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
    >>> print(qc.warnings[0])  # doctest: +ELLIPSIS
    participant sub-001: the first 1 PWI frame(s) are not at steady state ...
    """
    from ._cache import cached, patient_brain, patient_volume
    from .signal import (
        concentration,
        padding_note,
        patient_aif_detection,
        patient_aif_on_grid,
        patient_time_plan,
        patient_timing,
        steady_frame_times,
        time_grid,
    )

    brain = np.asarray(patient_brain(patient))
    data = patient_volume(patient, "pwi")
    timing = cached(patient, ("timing",), lambda: patient_timing(patient, data, brain))
    start = timing.n_nonsteady
    times = steady_frame_times(patient, start)
    warnings = list(timing.notes)
    baseline = slice(0, max(timing.arrival - start, 1))
    tissue = concentration(timing.mean_signal[start:], patient.echo_time, baseline=baseline)
    if patient.aif is not None:
        aif = patient_aif_on_grid(patient, times.size, patient.repetition_time, 0.0, timing, data)
        voxels = np.zeros((0, 3), dtype=np.int64)
    else:
        found = patient_aif_detection(patient, timing, data)
        aif, voxels = np.asarray(found.curve), np.asarray(found.voxels)
        tissue = np.asarray(found.tissue)
        warnings += list(found.notes)
    grid = time_grid(n_timepoints, float(time_step), 0.0)
    _, padding = patient_time_plan(patient, timing, grid)
    note = padding_note(patient, padding, grid)
    if note is not None:
        warnings.append(note)
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
            measures["negative_cbv"] = float(np.mean(perfusion.cbv[inside] < 0))
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
    return PatientQC(
        id=patient.id, brain_mask=brain.copy(), aif_voxels=voxels.astype(np.int64),
        aif=np.asarray(aif, dtype=np.float64), tissue=np.asarray(tissue, dtype=np.float64),
        times=times, n_nonsteady=int(start), arrival=int(timing.arrival),
        mean_signal=np.asarray(timing.mean_signal), measured_aif=patient.aif is not None,
        measures=measures, maps=perfusion, warnings=warnings)


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
    n_z = baseline.shape[2]
    # the slices with the most AIF voxels, then the middle of the brain
    order = np.argsort(-marks.sum(axis=(0, 1)), kind="stable") if marks.any() \
        else np.array([n_z // 2])
    by_size = np.argsort(-mask.sum(axis=(0, 1)), kind="stable")
    second = next((int(k) for k in by_size if int(k) != int(order[0])), None)
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
        ax.set_title(f"slice {k}: mask (yellow), AIF voxels (red)", fontsize=8)
        ax.text(0.01, 0.5, "R", transform=ax.transAxes, color="white", fontsize=10,
                va="center")
        ax.text(0.97, 0.5, "L", transform=ax.transAxes, color="white", fontsize=10,
                va="center")
        ax.set_axis_off()
    ax = fig.add_subplot(grid[0, len(slices)])
    all_times = patient.frame_times - patient.frame_times[qc.n_nonsteady]
    ax.plot(qc.times, qc.aif, color="red", label="AIF" + (" (aif.tsv)" if qc.measured_aif
                                                           else f" ({len(qc.aif_voxels)} vx)"))
    ax.plot(qc.times, qc.tissue * (qc.aif.max() / max(qc.tissue.max(), 1e-12)),
            color="black", label="mean brain (scaled)")
    ax.set_xlabel("time from the first steady-state frame (s)")
    ax.set_ylabel("concentration (1/s)")
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
    ax.set_title("AIF and tissue curves", fontsize=9)
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
    return (f"max {shift.max():.2f} mm, {len(motion.get('corrected_frames', []))} "
            f"frame(s) realigned<br>{svg}")


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
    :func:`~sklearn_hemo.datasets.import_cohort`, from the cohort's ``import.json``, when
    there is one) and warnings, and links each PNG.

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
        status = "warn" if qc.warnings else "ok"
        rows.append(
            f'<tr class="{status}"><td><a href="{_anchor_link(patient.id)}">'
            f"{html.escape(patient.id)}</a></td><td>{qc.n_nonsteady}</td>"
            f"<td>{'aif.tsv' if qc.measured_aif else len(qc.aif_voxels)}</td>"
            f"<td>{int(qc.brain_mask.sum())}</td>"
            f"<td>{_motion_cell(motion.get(patient.id))}</td><td>{len(qc.warnings)}</td>"
            f"<td><ul>{items}</ul></td></tr>")
    figures = "\n".join(
        f'<section id="{_anchor(qc.id)}"><h2>{html.escape(qc.id)}</h2>'
        f'<a href="{_file_link(qc.id + "_qc.png")}"><img src="{_file_link(qc.id + "_qc.png")}" '
        f'alt="QC of {html.escape(qc.id)}"></a></section>' for qc in results)
    n_warn = sum(bool(qc.warnings) for qc in results)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sklearn-hemo QC report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #bbb; padding: 0.3em 0.6em; vertical-align: top; }}
tr.warn td:first-child {{ background: #fde2b8; }} tr.ok td:first-child {{ background: #d8f0d2; }}
img {{ max-width: 100%; border: 1px solid #ccc; }} ul {{ margin: 0; padding-left: 1.2em; }}
</style></head><body>
<h1>Quality control: {len(results)} patient(s), {n_warn} with warnings</h1>
<p>Brain mask, dropped non-steady frames, AIF voxels and perfusion maps as the features
use them. Images in radiological convention (the patient's right on the left). Head
motion: the displacement of each DSC frame from the pre-bolus reference found by
<code>sklearn-hemo import</code> (mm; frames beyond 1 mm in red, all of them realigned in
the cohort), read from the cohort's <code>import.json</code>.</p>
<table><thead><tr><th>participant</th><th>dropped frames</th><th>AIF voxels</th>
<th>mask voxels</th><th>head motion (import)</th><th>warnings</th><th>details</th></tr>
</thead><tbody>
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
