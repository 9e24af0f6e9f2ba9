"""How hard is the simulated default cohort? The difficulty report of the simulator.

For the default cohort of :func:`~sklearn_hemo.datasets.make_stroke_cohort` (and,
with ``--paper-slice``, a slice of a paper-sized cohort: its first patients on the
128 x 128 x 20 grid) this prints, on the balanced voxel sample that ``sklearn-hemo
compare`` draws (:func:`~sklearn_hemo.sampling.sample_voxels` with the quick protocol's
4,000 voxels and seed 0):

* the AUC-ROC of ``truth["observable_risk"]`` (the best any model can do from the
  images; target 0.85-0.93, the paper's best model reached 0.894) and of the latent risk
  (it also knows the unobserved factors, never the outcome);
* the AUC-ROC of lesion membership alone (core or penumbra; target <= 0.85) and of each
  true map alone (CBF, CBV, Tmax, K2, ADC, each in its better direction; each <= 0.88);
* the patient-level AUC of lesion volume (target 0.6-0.85) and of very-low-CBV volume
  (Souza 2012: 0.73 for the low-rCBF volume);
* Cohen's kappa of the reader's ``ht_mask`` against the clean ``ht_clean`` over brain
  voxels (target 0.55-0.7), and the number of HT patients.

The targets come from published figures (module docstring of
``sklearn_hemo.datasets._simulate``), never from a model's score. Run
``python benchmarks/simulator_difficulty.py`` (about a minute) or add ``--paper-slice 16``.
"""

from __future__ import annotations

import argparse
import time

import nibabel as nib
import numpy as np
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from sklearn_hemo.datasets import PAPER_COHORT, Cohort, Patient, make_stroke_cohort
from sklearn_hemo.model_selection import PROTOCOLS
from sklearn_hemo.sampling import sample_voxels

TARGETS = {
    "observable risk": "0.85-0.93",
    "lesion membership": "<= 0.85",
    "CBF": "<= 0.88", "CBV": "<= 0.88", "Tmax": "<= 0.88", "|K2|": "<= 0.88",
    "ADC": "<= 0.88",
    "patient: lesion volume": "0.6-0.85",
    "patient: very-low-CBV volume": "about 0.70-0.75",
    "kappa ht_mask vs ht_clean": "0.55-0.7",
    "kappa, median over HT patients": "0.55-0.7",
}


def _auc(y, score):
    """AUC-ROC in the better direction (a marker may point either way)."""
    auc = roc_auc_score(y, score)
    return max(auc, 1.0 - auc)


def difficulty(cohort, n_samples, random_state=0):
    """The measures of the module docstring as an ordered dict name -> value."""
    X, y, _ = sample_voxels(cohort, n_samples=n_samples, random_state=random_state)
    values = {key: np.empty(len(X)) for key in
              ("observable_risk", "latent_risk", "lesion", "cbf", "cbv", "tmax", "k2", "adc")}
    lesion_ml, low_cbv_ml, truth_pairs = [], [], ([], [])
    ht = cohort.ht
    for index, patient in enumerate(cohort):
        truth = patient.truth
        rows = X[:, 0] == index
        ijk = tuple(X[rows, 1:].T)
        values["lesion"][rows] = truth["tissue"][ijk] >= 3
        values["k2"][rows] = np.abs(truth["k2"][ijk])
        for key in ("observable_risk", "latent_risk", "cbf", "cbv", "tmax", "adc"):
            values[key][rows] = truth[key][ijk]
        voxel_ml = float(np.prod(patient.pwi.header.get_zooms()[:3])) / 1000.0
        brain = truth["tissue"] > 0
        lesion_ml.append((truth["tissue"] >= 3).sum() * voxel_ml)
        low_cbv_ml.append(float((brain & (truth["tissue"] >= 3) & (truth["cbv"] < 0.5 * np.median(
            truth["cbv"][truth["tissue"] == 1]))).sum()) * voxel_ml)
        truth_pairs[0].append(truth["ht_clean"][brain] > 0)
        truth_pairs[1].append(np.asarray(patient.ht_mask.dataobj)[brain] > 0)
    return {
        "voxels drawn": len(y),
        "HT patients": f"{int((ht == 1).sum())} of {len(cohort)}",
        "observable risk": _auc(y, values["observable_risk"]),
        "latent risk (bound)": _auc(y, values["latent_risk"]),
        "lesion membership": _auc(y, values["lesion"]),
        "CBF": _auc(y, values["cbf"]),
        "CBV": _auc(y, values["cbv"]),
        "Tmax": _auc(y, values["tmax"]),
        "|K2|": _auc(y, values["k2"]),
        "ADC": _auc(y, values["adc"]),
        "patient: lesion volume": roc_auc_score(ht, lesion_ml),
        "patient: very-low-CBV volume": roc_auc_score(ht, low_cbv_ml),
        "kappa ht_mask vs ht_clean": cohen_kappa_score(np.concatenate(truth_pairs[0]),
                                                       np.concatenate(truth_pairs[1])),
        "kappa, median over HT patients": float(np.median(
            [cohen_kappa_score(a, b) for a, b, label in zip(*truth_pairs, ht) if label == 1])),
    }


def _with_true_brain(cohort):
    """The same patients with the simulator's brain (``truth["head"] == 1``) as mask."""
    patients = []
    for p in cohort:
        mask = nib.Nifti1Image((p.truth["head"] == 1).astype(np.uint8), p.affine)
        patients.append(Patient(p.id, p.pwi, p.dwi_b0, p.dwi_b1000, echo_time=p.echo_time,
                                repetition_time=p.repetition_time, ht=p.ht,
                                brain_mask=mask, ht_mask=p.ht_mask, truth=p.truth))
    return Cohort(patients)


def _print(title, measures):
    print(f"\n{title}")
    print(f"  {'measure':32s} {'value':>12s}  target")
    for name, value in measures.items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"  {name:32s} {shown:>12s}  {TARGETS.get(name, '')}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--paper-slice", type=int, default=0, metavar="N",
                        help="also report the first N patients of a paper-sized cohort")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--truth-mask", action="store_true",
                        help="sample inside the true brain (head == 1) instead of the mask "
                        "the pipeline derives (shows how much the derived mask matters)")
    args = parser.parse_args(argv)
    n_samples = PROTOCOLS["quick"]["n_samples"]
    start = time.perf_counter()
    cohort = make_stroke_cohort(random_state=args.random_state, n_jobs=args.n_jobs)
    seconds = time.perf_counter() - start
    if args.truth_mask:
        cohort = _with_true_brain(cohort)
    _print(f"default cohort (seed {args.random_state}, simulated in {seconds:.1f} s)",
           difficulty(cohort, n_samples))
    if args.paper_slice:
        cohort = make_stroke_cohort(args.paper_slice, PAPER_COHORT["shape"],
                                    random_state=args.random_state, n_jobs=args.n_jobs)
        if args.truth_mask:
            cohort = _with_true_brain(cohort)
        _print(f"paper-sized slice: first {args.paper_slice} patients on "
               f"{PAPER_COHORT['shape']}", difficulty(cohort, n_samples))


if __name__ == "__main__":
    main()
