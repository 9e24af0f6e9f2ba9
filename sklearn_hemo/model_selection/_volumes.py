"""Whole-brain, patient-level results of a comparison (``compare_models(volumes=True)``).

Each compared model is refitted per outer fold with the parameters the comparison chose
there, on the same training voxels, and the held-out patients are mapped in full,
whole-brain calibrated (:func:`~sklearn_hemo.risk.cross_val_risk_map_table`,
``calibration="whole-brain"``): their predicted and annotated HT volumes, Dice and risk
scores, and per model the patient-level occurrence AUC (``volumes.csv``,
``volumes_summary.csv``); the reliability of the voxel probabilities on the held-out
whole brains (``calibration.csv``, ``calibration_summary.csv``, before and after the
prior-shift correction); and the patient-level answer, expected HT volume and
probability of any HT per held-out patient with the patient AUC and its patient-bootstrap
interval (``patients.csv``, ``patients_summary.csv``). Every row is of held-out patients
only, and every file is written by the comparison's one CSV writer.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..utils._verbosity import progress_line
from ..utils._warnings import find_stack_level
from ._report import TRUTH_ROWS

N_BINS = 10
CALIBRATION_COLUMNS = ("model", "bin", "mean_predicted", "observed_rate", "n_voxels")
CALIBRATION_SUMMARY_COLUMNS = ("model", "n_patients", "n_voxels", "observed_prevalence",
                               "mean_predicted", "brier", "brier_skill", "ece",
                               "mean_predicted_before_correction",
                               "brier_before_correction", "ece_before_correction")
PATIENT_COLUMNS = ("model", "fold", "patient_id", "ht", "probability_any_ht",
                   "expected_volume_ml", "annotated_volume_ml", "risk_score")
PATIENT_SUMMARY_COLUMNS = ("model", "n_patients", "n_bleeding", "patient_auc",
                           "patient_auc_low", "patient_auc_high")
#: patients of the report's gallery: this many bleeding and this many not
GALLERY_PER_CLASS = 3


class _WholeBrainRecorder:
    """Callback of :func:`~sklearn_hemo.risk.cross_val_risk_map_table` for one model.

    Adds up reliability counts of the held-out brains (the maps as drawn, and the same
    maps moved back to the training sample's prevalence, i.e. before the correction)
    and keeps one axial slice of the gallery's patients.
    """

    def __init__(self, setup, gallery_ids):
        from ..calibration import whole_brain_prevalence

        self.counts = np.zeros((N_BINS, 4))
        self.before = np.zeros((N_BINS, 4))
        self.gallery = {}
        self.gallery_ids = set(gallery_ids)
        self.priors = {}
        for k in np.unique(setup.fold).tolist():
            train = setup.fold != k
            self.priors[k] = (float(np.mean(setup.y[train])), whole_brain_prevalence(
                setup.cohort, sorted(set(setup.X[train, 0].tolist()))))

    def __call__(self, k, patient, risk_map):
        from ..calibration import shift_prior
        from ..metrics import calibration_counts

        risk = np.asarray(risk_map.dataobj, dtype=float)
        brain = patient.get_brain_mask()
        truth = np.asanyarray(patient.ht_mask.dataobj) > 0
        p = np.clip(risk[brain], 0.0, 1.0)
        self.counts += calibration_counts(truth[brain], p, n_bins=N_BINS)
        sample_prior, brain_prior = self.priors[k]
        self.before += calibration_counts(
            truth[brain], shift_prior(p, training_prevalence=brain_prior,
                                      prevalence=sample_prior), n_bins=N_BINS)
        if patient.id in self.gallery_ids:
            area = truth.sum(axis=(0, 1))
            z = int(np.argmax(area)) if area.any() else int(np.argmax(
                np.where(brain, risk, 0).sum(axis=(0, 1))))
            self.gallery[patient.id] = {
                "background": np.asarray(patient.dwi_b0.dataobj, dtype=np.float32)[:, :, z],
                "risk": risk[:, :, z].astype(np.float32), "truth": truth[:, :, z],
                "brain": brain[:, :, z], "z": z, "ht": patient.ht}


def _gallery_ids(cohort, X):
    """Up to :data:`GALLERY_PER_CLASS` mapped patients who bleed and as many who do not."""
    mapped = sorted(set(X[:, 0].tolist()))
    ids = []
    for label in (1, 0):
        ids += [cohort[i].id for i in mapped if cohort[i].ht == label][:GALLERY_PER_CLASS]
    return ids


def _bin_rows(name, counts):
    """Rows of ``calibration.csv`` from summed reliability counts (NA for empty bins)."""
    return [{"model": name, "bin": b, "n_voxels": int(n),
             "mean_predicted": s_pred / n if n else None,
             "observed_rate": s_obs / n if n else None}
            for b, (n, s_pred, s_obs, _) in enumerate(counts.tolist())]


def _patient_summary(name, rows, config):
    from ..metrics import bootstrap_auc

    labelled = [r for r in rows if r["ht"] is not None and r["probability_any_ht"] is not None]
    ht = np.array([r["ht"] for r in labelled], dtype=int)
    summary = {"model": name, "n_patients": len(labelled), "n_bleeding": int(ht.sum()),
               "patient_auc": None, "patient_auc_low": None, "patient_auc_high": None}
    if np.unique(ht).size == 2:
        res = bootstrap_auc(ht, [r["probability_any_ht"] for r in labelled],
                            [r["patient_id"] for r in labelled], unit="patient",
                            n_resamples=int(config.get("n_resamples", 1000)),
                            confidence_level=float(config.get("confidence_level", 0.95)),
                            random_state=int(config.get("random_state", 0)))
        summary.update(patient_auc=res.auc_roc, patient_auc_low=res.auc_roc_low,
                       patient_auc_high=res.auc_roc_high)
    return summary


def risk_map_volumes(setup, result, verbose=0):
    """Per-patient rows and per-model summaries of the out-of-fold whole-brain maps.

    Also sets on ``result`` the whole-brain calibration (``calibration``,
    ``calibration_summary``, and ``calibration_before``: the bins before the
    correction), the patient-level answer (``patients``, ``patients_summary``) and the
    report's ``gallery`` (model -> patient id -> slices).

    Parameters
    ----------
    setup : ComparisonSetup
        The replicate's setup: its zoo, voxels, labels and outer folds.
    result : ComparisonResult
        The replicate's result: the compared rows and their chosen parameters.
    verbose : int, default=0
        1 or more: a line per model as its maps start.

    Returns
    -------
    rows : list of dict
        ``model`` and the columns of :func:`~sklearn_hemo.risk.cross_val_risk_map_table`.
    summary : list of dict
        ``model`` and :func:`~sklearn_hemo.metrics.summarize_patient_table`.
    """
    from ..metrics import calibration_summary, summarize_patient_table
    from ..risk import cross_val_risk_map_table

    rows, summary = [], []
    calibration, calibration_rows, patients, patients_summary = [], [], [], []
    before_rows = []
    gallery = {}
    gallery_ids = _gallery_ids(setup.cohort, setup.X)
    for name in [name for name in result.predictions if name not in TRUTH_ROWS]:
        progress_line(f"whole-brain maps of the held-out patients: {name} ...", verbose,
                      level=1)
        pipeline = setup.zoo[name][0]
        first = pipeline.steps[0][1] if hasattr(pipeline, "steps") else pipeline
        if "cohort" not in first.get_params(deep=False):
            warnings.warn(f"volumes: {name} skipped: its first step "
                          f"({type(first).__name__}) holds no cohort, and whole-brain maps "
                          "need an extractor of voxel references such as PatchExtractor.",
                          UserWarning, stacklevel=find_stack_level())
            continue
        try:
            recorder = _WholeBrainRecorder(setup, gallery_ids)
            table = cross_val_risk_map_table(pipeline, setup.X, setup.y, setup.fold,
                                             params=result.best_params.get(name),
                                             callback=recorder)
        except (TypeError, ValueError) as exc:
            # e.g. a row whose first step reads no voxel references, or too few HT
            # patients in a training side to calibrate a score-only model
            warnings.warn(f"volumes: {name} skipped: {exc}", UserWarning,
                          stacklevel=find_stack_level())
            continue
        rows += [{"model": name, **row} for row in table]
        summary.append({"model": name, **summarize_patient_table(table)})
        calibration_rows += _bin_rows(name, recorder.counts)
        before_rows += _bin_rows(name, recorder.before)
        after, before = (calibration_summary(recorder.counts),
                         calibration_summary(recorder.before))
        prevalence = after["observed_prevalence"]
        # against the forecast "the prevalence everywhere", whose Brier is pi (1 - pi)
        skill = (1 - after["brier"] / (prevalence * (1 - prevalence))
                 if 0 < prevalence < 1 else None)
        calibration.append({
            "model": name, "n_patients": len(table), **after, "brier_skill": skill,
            "mean_predicted_before_correction": before["mean_predicted"],
            "brier_before_correction": before["brier"],
            "ece_before_correction": before["ece"]})
        mine = [{"model": name, **{c: row.get(c) for c in PATIENT_COLUMNS[1:]}}
                for row in table]
        patients += mine
        patients_summary.append(_patient_summary(name, mine, result.config))
        gallery[name] = recorder.gallery
    result.calibration, result.calibration_summary = calibration_rows, calibration
    result.calibration_before = before_rows
    result.patients, result.patients_summary = patients, patients_summary
    result.gallery = gallery
    return rows, summary


def whole_brain_files(result):
    """``{file name: text}`` of the whole-brain CSVs a result holds (none without
    ``volumes=True``)."""
    from ._report import _csv_text

    files = {}
    for name, columns, rows in (
            ("calibration.csv", CALIBRATION_COLUMNS, result.calibration),
            ("calibration_summary.csv", CALIBRATION_SUMMARY_COLUMNS,
             result.calibration_summary),
            ("patients.csv", PATIENT_COLUMNS, result.patients),
            ("patients_summary.csv", PATIENT_SUMMARY_COLUMNS, result.patients_summary)):
        if rows is not None:
            files[name] = _csv_text(columns, rows)
    return files
