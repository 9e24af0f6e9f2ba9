"""The argument parser of the ``sklearn-hemo`` command line (``cli.py`` runs the commands).

Choices and defaults that the library defines are read from it (the protocols and their
sizes from :data:`~sklearn_hemo.model_selection.PROTOCOLS`), so that the help cannot fall
behind. Only argparse here: ``sklearn-hemo --help`` stays fast.
"""

from __future__ import annotations

import argparse

from ._protocols import PROTOCOLS


def _by_protocol(key):
    """``standard 5, quick 5, paper 10``: a protocol size for every protocol."""
    return ", ".join(f"{name} {PROTOCOLS[name][key]}" for name in _PROTOCOL_ORDER)


# the default first, as the help has always listed them
_PROTOCOL_ORDER = ("standard", *[name for name in PROTOCOLS if name != "standard"])


def _add_verbosity(p, quiet_help="no progress bar",
                   verbose_help="more progress output: by default a progress bar (verbose "
                   "1); -v also one line per finished patient or task (verbose 2)"):
    """``--quiet`` and ``-v/--verbose`` (count) of a long-running command."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--quiet", action="store_true", help=quiet_help + " (verbose 0)")
    group.add_argument("-v", "--verbose", action="count", default=0, help=verbose_help)


def _add_simulate(sub, run):
    p = sub.add_parser(
        "simulate",
        help="write a simulated stroke cohort to OUT_DIR",
        description="Write a simulated acute-stroke cohort (source DSC-PWI, DWI, HT labels "
        "and ground truth) to OUT_DIR in the cohort layout, one patient at a time.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--n-patients", type=int, default=None, metavar="N",
                   help="number of patients (default 60; 155 with --paper)")
    p.add_argument("--shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="spatial matrix (default 48 48 8; 128 128 20 with --paper)")
    p.add_argument("--difficulty", choices=("realistic", "easy"), default="realistic",
                   help="realistic (default: a head, vessels, motion, no AIF or mask "
                   "handed over, a reader's annotation) or easy (the clean generator)")
    p.add_argument("--paper", action="store_true",
                   help="the size of Yu et al. 2019: 155 patients, 128 x 128 x 20")
    p.add_argument("--ht-prevalence", type=float, default=0.26, metavar="P",
                   help="target fraction of bleeding patients (default 0.26)")
    p.add_argument("--snr", type=float, default=None,
                   help="signal-to-noise ratio (default: 15-60 per patient when "
                   "realistic, 30 when easy)")
    p.add_argument("--random-state", type=int, default=0, metavar="S",
                   help="seed (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="write over a cohort already in OUT_DIR")
    p.add_argument("--n-jobs", type=int, default=1, metavar="N",
                   help="patients simulated in parallel (-1: all cores; same result)")
    p.add_argument("--raw", action="store_true",
                   help="write a BIDS-style tree as a scanner gives it instead (DSC with "
                   "head motion, DWI, follow-up T2*w with the HT mask in its own pose; "
                   "transforms in derivatives/simulation); import it with "
                   "'sklearn-hemo import'. Default 2 patients")
    _add_verbosity(p)
    p.set_defaults(func=run)


def _add_compare(sub, run):
    p = sub.add_parser(
        "compare",
        help="the main job: patient-grouped nested comparison of the model zoo",
        description="Compare the models of the paper's Table 1 under patient-grouped nested "
        "cross-validation, with patient-bootstrap 95% confidence intervals and paired "
        "differences against a reference row. Writes table.csv, table.md, "
        "differences.csv, run.json, predictions.csv, folds.csv, fold_scores.csv, "
        "best_params.json and roc_pr.png (and stability.csv with --repeats) into --out; "
        "rerunning the same command resumes an interrupted run. Without --data it "
        "simulates the default cohort (the paper's size with --protocol paper, written "
        "once to OUT/cohort).",
    )
    p.add_argument("--data", metavar="DIR", help="cohort folder (default: simulate one)")
    p.add_argument("--protocol", choices=_PROTOCOL_ORDER, default="standard",
                   help="standard (default): 4 candidates per tuned family, the paper's "
                   "network trained to convergence, about 10 min on 2 cores; quick: a smoke "
                   "run of a minute or two; paper: the paper's protocol (hours)")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help="zoo rows to compare (default: every row but roi-leakage-proxy)")
    p.add_argument("--reference", metavar="NAME", default=None,
                   help="row the paired differences are taken against (default "
                   "lstm-pwi+aif+dwi when compared, else the first row)")
    p.add_argument("--repeats", type=int, default=1, metavar="N",
                   help="independent replicates (new cohort seed and CV seed each; "
                   "resumable); writes stability.csv (default 1)")
    p.add_argument("--n-jobs", type=int, default=-1, metavar="N",
                   help="parallel (model, fold) tasks; -1 = all cores or workers (default "
                   "-1; results do not depend on it)")
    p.add_argument("--backend", choices=("loky", "dask", "ray"), default="loky",
                   help="joblib backend of the tasks (default loky)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="dask scheduler (tcp://host:8786) or ray address; default: a local "
                   "cluster")
    p.add_argument("--device", default="cpu", metavar="cpu|cuda",
                   help="torch device of the LSTM rows (default cpu)")
    p.add_argument("--random-state", type=int, default=0, metavar="S", help="seed (default 0)")
    p.add_argument("--out", default="hemo-results", metavar="DIR",
                   help="output and resume folder (default ./hemo-results)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out folder holding other files or the results of "
                   "a run with other settings (same-named files are replaced)")
    p.add_argument("--n-samples", type=int, metavar="N",
                   help=f"balanced voxels (default: {_by_protocol('n_samples')})")
    p.add_argument("--n-outer", type=int, metavar="K",
                   help=f"outer folds (default: {_by_protocol('n_outer')})")
    p.add_argument("--n-inner", type=int, metavar="K",
                   help=f"inner folds (default: {_by_protocol('n_inner')})")
    p.add_argument("--n-resamples", type=int, default=1000, metavar="B",
                   help="bootstrap resamples (default 1000)")
    _add_verbosity(p, quiet_help="no progress bar and no time estimate")
    p.add_argument("--dry-run", action="store_true",
                   help="run nothing: print the plan (tasks, fits per model, time projected "
                   "for --n-jobs workers from a short calibration, peak memory of a task) "
                   "and write it to OUT/plan.json")
    p.add_argument("--volumes", action="store_true",
                   help="also refit each model per outer fold and map the held-out patients "
                   "in full: volumes, Dice, patient-level occurrence AUC (volumes.csv, "
                   "volumes_summary.csv); costs about one more outer fit per model and fold")
    p.set_defaults(func=run)


def _add_train(sub, run):
    p = sub.add_parser(
        "train",
        help="fit one model-zoo row on every patient of a cohort and save it",
        description="Fit one row of the model zoo on a balanced voxel sample drawn from "
        "every patient of the cohort in DIR, and save it as a model bundle (loads without "
        "running code from the file; see sklearn_hemo.persistence). Hyperparameters: "
        "--params, else --params-from, else the first point of the row's grid for "
        "--protocol. Rows without predict_proba (linear, sr-kda, svm) are given "
        "probabilities by Platt scaling on patient-grouped out-of-fold scores.",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="cohort folder")
    p.add_argument("--model", required=True, metavar="NAME",
                   help="zoo row, e.g. lstm-pwi+aif+dwi, linear, sr-kda, random-forest, svm")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="bundle folder to write")
    p.add_argument("--protocol", choices=tuple(PROTOCOLS), default="quick",
                   help="zoo settings and default sample size (default quick)")
    p.add_argument("--n-samples", type=int, default=None, metavar="N",
                   help="training voxels, half HT (default: the protocol's)")
    params = p.add_mutually_exclusive_group()
    params.add_argument("--params", metavar="JSON",
                        help='pipeline parameters, e.g. \'{"model__C": 10}\'')
    params.add_argument("--params-from", metavar="FILE",
                        help="best_params.json of 'sklearn-hemo compare': the parameters "
                        "chosen in most outer folds for this row")
    p.add_argument("--random-state", type=int, default=0, metavar="S", help="seed (default 0)")
    p.add_argument("--calibration", choices=("whole-brain", "sample"), default="whole-brain",
                   help="whole-brain (default): the model's probabilities are moved from the "
                   "balanced sample to the whole-brain HT prevalence of the cohort (prior "
                   "shift; see sklearn_hemo.calibration), so a map reads as a probability on "
                   "a whole brain; sample: probabilities of the balanced (half HT) sample")
    p.add_argument("--overwrite", action="store_true", help="replace a bundle in MODEL_DIR")
    _add_verbosity(p, quiet_help="no progress line",
                   verbose_help="more progress output: by default one line before the fit "
                   "(verbose 1); -v also the network's per-epoch table for the LSTM rows "
                   "(verbose 2; -vv adds its batch progress bar)")
    p.set_defaults(func=run)


def _add_predict(sub, run):
    p = sub.add_parser(
        "predict",
        help="write the voxel-wise HT risk map of one patient",
        description="Load a model bundle written by 'train' and write the HT probability "
        "of every brain voxel of the patient in SUB_DIR (cohort layout: pwi.nii.gz, "
        "pwi.json, dwi_b0.nii.gz, dwi_b1000.nii.gz, ...) as a NIfTI image on the PWI grid.",
    )
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="bundle from 'train'")
    p.add_argument("--patient", required=True, metavar="SUB_DIR", help="patient folder")
    p.add_argument("--out", required=True, metavar="RISK_NII", help="e.g. risk.nii.gz")
    p.add_argument("--png", metavar="PNG",
                   help="also draw axial slices of the map over DWI b0 (HT annotation "
                   "outlined when the folder has ht_mask.nii.gz)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="risk counted as predicted HT in the printed volume (default 0.5)")
    p.add_argument("--chunk-size", type=int, default=16_384, metavar="N",
                   help="voxels scored at once; bounds memory (default 16384)")
    p.add_argument("--prevalence", type=float, default=None, metavar="P",
                   help="move the model's probabilities to this whole-brain HT prevalence "
                   "when drawing the map (for a bundle trained with --calibration sample); "
                   "default: the bundle's own calibration")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing --out / --png files (never inputs)")
    p.set_defaults(func=run)


def _add_import(sub, run):
    p = sub.add_parser(
        "import",
        help="import a BIDS-style tree (or dcm2niix output with --map) into a cohort",
        description="Read a BIDS-style tree (sub-*/[ses-*/]perf/*_dsc.nii.gz, "
        "dwi/*_dwi.nii.gz with .bval, the HT annotation, participants.tsv) and write the "
        "cohort layout to --out: DWI split into b0 and b1000, DWI and masks resampled onto "
        "the PWI grid. SRC is never written.",
    )
    p.add_argument("source", metavar="SRC")
    p.add_argument("--out", required=True, metavar="DIR", help="cohort folder to write")
    p.add_argument("--map", default=None, metavar="TSV",
                   help="table of participant, role, path for a tree that is not BIDS "
                   "(roles: pwi, dwi, dwi_b0, dwi_b1000, ht_mask, brain_mask)")
    p.add_argument("--ht-pattern", default=None, metavar="GLOB",
                   help="where the HT annotations are, relative to SRC (default "
                   "'sub-*/[ses-*/]anat/*_label-HT_mask.nii*'; [part/] is optional)")
    p.add_argument("--session", default=None, metavar="SES",
                   help="session of the PWI and DWI (e.g. ses-acute) when there are several")
    p.add_argument("--b-tolerance", type=float, default=100.0, metavar="B",
                   help="tolerance on b-values in s/mm2 (default 100)")
    p.add_argument("--mask-interpolation", choices=("fraction", "nearest"),
                   default="fraction", help="how masks reach the PWI grid (default: "
                   "covered fraction >= 0.5)")
    p.add_argument("--overwrite", action="store_true",
                   help="write over a cohort already in DIR")
    p.add_argument("--register", choices=("auto", "all", "none"), default="auto",
                   help="rigid registration (needs sklearn-hemo[registration]): auto "
                   "(default) corrects DSC motion and registers a follow-up annotation "
                   "through its T2*w image; all also registers the DWI; none: affines only")
    _add_verbosity(p)
    p.set_defaults(func=run)


def _add_qc(sub, run):
    p = sub.add_parser(
        "qc",
        help="write a visual quality-control report of a cohort's automatic steps",
        description="For every patient of the cohort in DIR: the brain mask, the dropped "
        "non-steady frames, the AIF voxels and curves and the CBF/CBV/Tmax maps as the "
        "features use them, one PNG each, and an index.html with a table of warnings.",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="cohort folder")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder")
    p.add_argument("--no-maps", action="store_true",
                   help="skip the perfusion maps and their plausibility checks (faster)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a report already in --out")
    _add_verbosity(p)
    p.set_defaults(func=run)


def build_parser(runners):
    parser = argparse.ArgumentParser(
        prog="sklearn-hemo",
        description="Voxel-wise prediction of hemorrhagic transformation from source PWI.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of a one-line "
                        "message")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, add in _COMMANDS.items():
        add(sub, runners[name])
    for command in sub.choices.values():  # also accepted after the command's name
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the full traceback of an error")
    for name in ("qc", "compare", "train", "predict"):  # the commands that read an AIF
        sub.choices[name].add_argument(
            "--no-aif-correction", action="store_true",
            help="do not correct detected AIFs for partial volume by the venous output "
            "function (sets SKLEARN_HEMO_AIF_VOF=off for the run; see "
            "sklearn_hemo.signal.patient_aif)")
        sub.choices[name].add_argument(
            "--no-motion-correction", action="store_true",
            help="read each DSC series as it is, without the cached rigid correction of "
            "head motion applied when a cohort not imported with it is read (sets "
            "SKLEARN_HEMO_MOTION_CORRECTION=off for the run)")
    return parser


_COMMANDS = {"simulate": _add_simulate, "import": _add_import, "qc": _add_qc,
             "compare": _add_compare, "train": _add_train, "predict": _add_predict}
