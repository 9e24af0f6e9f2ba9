"""The library work behind the command line's ``compare`` and ``train``.

``cli.py`` parses arguments, claims output folders, calls these and prints; what they
compute (the QC pass before a run and its cache, the paper-sized cohort simulated once
into the results folder, the parameters a comparison chose, the training recipe of one
zoo row) lives here so that it can be called, and tested, without the command line.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

from .._io import atomic_write_text
from ..utils._verbosity import progress_line

#: Where the QC pass before a comparison is cached in the results folder: the summary
#: lines, the messages to silence and the key of the cohort and settings it was run on.
QC_CACHE = ".qc_summary.json"


def _qc_key(cohort):
    from ..signal import VOF_ENV, vof_correction_default
    from ._resume import _digest, cohort_signature

    return _digest({"cohort": cohort_signature(cohort), VOF_ENV: vof_correction_default()})


def cohort_qc(cohort, owned=None):
    """The QC pass of compare and train: :func:`~sklearn_hemo.qc.patient_qc` (with maps)
    on every patient, summarised by :func:`~sklearn_hemo.qc.qc_summary`.

    Returns ``(lines, messages, loud)``: the summary lines (and one per failed patient),
    every warning and note text the pass met (the run silences them when the library
    raises them again), and whether the summary is worth printing (some warning or
    failure: a clean cohort is quiet). With ``owned`` (compare's
    :class:`~sklearn_hemo._safety.OwnedFolder`) the summary is written there as
    ``qc_summary.txt`` (``report.html`` shows it) together with :data:`QC_CACHE`, and a
    rerun on the same cohort and settings reads them instead of running the pass again
    (a resumed run would otherwise recompute every patient's maps).
    """
    key = _qc_key(cohort) if owned is not None else None
    if owned is not None:
        cached = _read_qc_cache(owned.path / QC_CACHE, key)
        if cached is not None:
            return cached
    lines, messages, loud = _run_qc(cohort)
    if owned is not None and lines:
        with owned.writing(["qc_summary.txt", QC_CACHE]):
            atomic_write_text(owned.path / "qc_summary.txt", "\n".join(lines) + "\n")
            atomic_write_text(owned.path / QC_CACHE, json.dumps(
                {"key": key, "lines": lines, "messages": messages, "loud": loud}) + "\n")
    return lines, messages, loud


def _read_qc_cache(path, key):
    try:
        cached = json.loads(Path(path).read_text(encoding="utf-8"))
        if cached["key"] == key and (Path(path).parent / "qc_summary.txt").is_file():
            return list(cached["lines"]), list(cached["messages"]), bool(cached["loud"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _run_qc(cohort):
    from ..qc import patient_qc, qc_summary

    messages, results, failed = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for patient in cohort:
            try:
                qc = patient_qc(patient)
            except ValueError as exc:  # e.g. an empty mask: the run itself will refuse
                messages.append(str(exc))
                failed.append(str(exc))
                continue
            results.append(qc)
            # the notes too: the summary counted them, the run need not repeat them
            messages += qc.warnings + qc.notes
    report = "the report of `sklearn-hemo qc --data DIR --out REPORT`"
    lines = [qc_summary(results, report=report)] if results else []
    lines += [f"QC failed: {message}" for message in failed]
    loud = bool(lines) and bool(failed or any(qc.warnings for qc in results))
    return lines, messages, loud


def simulated_cohort_in(out_dir, name, spec, owned=None, verbose=0):
    """A cohort simulated once into ``out_dir/name`` and reused by reruns.

    ``spec`` (the :func:`~sklearn_hemo.datasets.make_stroke_cohort` arguments) is
    recorded in ``out_dir/name.json`` once the cohort is complete; a rerun with the same
    spec loads it, one with another spec is refused, and a missing record (never
    simulated, or interrupted) simulates it all again. ``owned``: the output folder's
    :class:`~sklearn_hemo._safety.OwnedFolder`, which records the marker as its own.
    """
    from ..datasets import load_cohort, make_stroke_cohort

    folder, marker = Path(out_dir) / name, Path(out_dir) / f"{name}.json"
    if marker.exists():
        if json.loads(marker.read_text()) != spec:
            raise ValueError(
                f"{folder} holds a simulated cohort made with other settings than {spec}; "
                f"remove it (and {name}.json) or choose another --out.")
        return load_cohort(folder)
    progress_line(f"simulating the paper-sized cohort ({spec.get('n_patients')} patients, "
                  f"{tuple(spec.get('shape', ()))}) into {folder} ...", verbose, level=0)
    params = {**spec, "shape": tuple(spec["shape"])} if "shape" in spec else dict(spec)
    cohort = make_stroke_cohort(**params, out_dir=folder, overwrite=True, verbose=verbose)
    if owned is None:
        atomic_write_text(marker, json.dumps(spec) + "\n")
    else:
        with owned.writing([marker.name]):  # recorded as ours
            atomic_write_text(marker, json.dumps(spec) + "\n")
    return cohort


def params_from_comparison(path, model):
    """The parameters a comparison chose for ``model`` in most outer folds (ties: the
    earliest fold), read from its ``best_params.json``. Raises ValueError (or OSError)
    when the file has none for that row."""
    path = Path(path)
    chosen = json.loads(path.read_text(encoding="utf-8"))
    per_fold = chosen.get(model) if isinstance(chosen, dict) else None
    if not per_fold or not isinstance(per_fold, dict) or not all(
            isinstance(v, dict) for v in per_fold.values()):
        raise ValueError(
            f"{path} has no parameters for {model!r} (it has "
            f"{sorted(chosen) if isinstance(chosen, dict) else '?'}). Run compare with "
            "this model or pass --params.")
    votes = Counter(json.dumps(v, sort_keys=True) for v in per_fold.values())
    return json.loads(votes.most_common(1)[0][0])


def train_zoo_row(cohort, model, pipeline, *, n_samples, random_state=0,
                  calibration="whole-brain", verbose=0, describe=""):
    """Fit ``pipeline`` (a zoo row, its parameters set) the way ``train`` does.

    A balanced voxel sample of ``n_samples`` from every patient; probabilities for
    estimators without them (Platt scaling on patient-grouped out-of-fold scores),
    moved to the cohort's whole-brain HT prevalence with ``calibration="whole-brain"``
    (:func:`~sklearn_hemo.risk.with_probabilities`); the patients routed to a final step
    that asks for them (an LSTM's early stopping, when a user switches it on). With
    ``verbose >= 2`` an LSTM prints its per-epoch table while training, reset before
    returning so that the fitted model is the same whatever the verbosity.

    Returns ``(fitted pipeline, record)``: ``record`` holds ``n_samples`` (drawn),
    ``whole_brain_prevalence`` and ``bleeding_fraction`` for the bundle's metadata.
    """
    import sklearn

    from ..calibration import bleeding_fraction, whole_brain_prevalence
    from ..neural import LSTMClassifier
    from ..risk import with_probabilities
    from ..sampling import sample_voxels

    final_name, final = pipeline.steps[-1]
    talks = isinstance(final, LSTMClassifier) and verbose >= 2
    if talks:
        pipeline.set_params(**{f"{final_name}__verbose": verbose - 1})
    X, y, groups = sample_voxels(cohort, n_samples=n_samples, balance=True,
                                 random_state=random_state)
    # the balanced sample's prior, moved to the whole brains of the training cohort
    prevalence = whole_brain_prevalence(cohort) if calibration == "whole-brain" else None
    pipeline = with_probabilities(pipeline, y, groups, prevalence=prevalence)
    progress_line(f"training {model} on {len(y)} voxels ({int(sum(y))} HT) from "
                  f"{len(set(groups.tolist()))} patients; {describe}", verbose, level=1)
    with sklearn.config_context(enable_metadata_routing=True):
        # an LSTM with early stopping holds out whole patients: route them
        routed = pipeline.get_metadata_routing().consumes("fit", ["groups"])
        if routed:
            pipeline.fit(X, y, groups=groups)
    if not routed:
        pipeline.fit(X, y)
    if talks:
        final.set_params(verbose=0)
        # the whole-brain wrapper fitted a clone of the network: quiet that one too
        fitted = getattr(pipeline.steps[-1][1], "estimator_", None)
        if fitted is not None:
            fitted.set_params(verbose=0)
    return pipeline, {"n_samples": int(len(y)), "whole_brain_prevalence": prevalence,
                      "bleeding_fraction": bleeding_fraction(cohort)}


def patient_answer_line(patient, risk, metadata, prevalence):
    """predict's patient-level answer: probability of any HT and expected volume."""
    from ..calibration import patient_answer

    whole_brain = prevalence is not None or metadata.get("calibration") == "whole-brain"
    if not whole_brain:
        return (f"participant {patient.id}: no patient-level answer: the model's "
                "probabilities are of its balanced training sample (trained with "
                "--calibration sample); pass --prevalence P to move them to whole brains.")
    answer = patient_answer(risk, patient.get_brain_mask(),
                            bleeding_fraction=metadata.get("bleeding_fraction"))
    any_ht = ("not available (the bundle records no bleeding fraction)"
              if answer["probability_any_ht"] is None
              else f"{answer['probability_any_ht']:.3f}")
    return (f"participant {patient.id}: probability of any HT {any_ht}; expected HT volume "
            f"{answer['expected_volume_ml']:.2f} mL (whole-brain calibrated probabilities "
            "summed; no interval: voxel outcomes within a patient are not independent)")


def volumes_text(result, out):
    """The per-model summary of ``compare_models(volumes=True)`` that ``compare
    --volumes`` prints (its files are written with the comparison's)."""
    lines = []

    def fmt(value, spec):
        return "NA" if value is None else format(value, spec)

    lines.append("\nmodel                occurrence AUC  mean Dice (HT)  mean |volume error| mL")
    for s in result.volumes_summary or []:
        lines.append(f"{s['model']:20} {fmt(s['occurrence_auc'], '.3f'):>14}  "
                     f"{fmt(s['dice_mean'], '.3f'):>14}  "
                     f"{fmt(s['volume_abs_error_mean_ml'], '.2f'):>22}")
    lines.append(f"Wrote volumes.csv and volumes_summary.csv to {out} (risk >= 0.5 is "
                 "predicted HT; risk score = 99th percentile of in-brain voxel risk).")
    answers = {r["model"]: r for r in result.patients_summary or []}
    lines.append("\nmodel                ECE whole brain (before)  patient AUC [95% CI]")
    for s in result.calibration_summary or []:
        a = answers.get(s["model"], {})
        auc = ("NA" if a.get("patient_auc") is None else
               f"{a['patient_auc']:.3f} [{a['patient_auc_low']:.3f}, "
               f"{a['patient_auc_high']:.3f}]")
        before = fmt(s["ece_before_correction"], ".4f")
        lines.append(f"{s['model']:20} {fmt(s['ece'], '.4f'):>7} ({before})          {auc}")
    lines.append(f"Wrote calibration.csv, calibration_summary.csv, calibration.png, "
                 f"patients.csv and patients_summary.csv to {out} (held-out patients, "
                 "whole-brain calibrated maps).")
    return "\n".join(lines)


def after_table_text(record):
    """What ``compare`` prints after the table from its ``run.json`` record: the voxel
    sample (``run.sample``), and which rows are one trained network per fit."""
    from ._report import network_seed_note

    sample = (record or {}).get("run", {}).get("sample")
    text = ""
    if sample:
        text = (f"\n{sample['voxels_drawn']} voxels from {sample['patients']} patients "
                f"({sample['bleeding_patients']} with HT voxels).")
        if sample["voxels_drawn"] < sample["voxels_asked"]:
            text += (f"\nwarning: {sample['voxels_asked']} voxels were asked for but only "
                     f"{sample['voxels_drawn']} could be drawn (too few HT voxels in the "
                     "cohort).")
    note = network_seed_note(record)
    return f"{text}\n{note}" if note else text


def check_bundle_out(out, data, overwrite):
    """Refuse (OutputError, FileExistsError) a bundle folder ``train`` could not write,
    before the (long) fit: inside the cohort ``data``, existing without ``overwrite``,
    another kind of folder, or not writable."""
    from .._safety import OutputError, check_bundle_folder, check_writable_dir, is_inside
    from ..persistence import read_manifest

    out = Path(out)
    if is_inside(out, data):
        raise OutputError(f"--out {out} lies inside the cohort folder {data}; the "
                          "command never writes into its inputs. Choose a folder "
                          "outside it.")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise OutputError(f"--out {out} already exists. Choose another folder, or "
                          "pass --overwrite to replace the model bundle there.")
    check_bundle_folder(out, overwrite, read_manifest)  # save_model's guard
    check_writable_dir(out.parent, "--out")
