"""The ``sklearn-hemo`` command line: simulate, import, qc, compare, train, predict.

Each sub-command lives in its own ``_add_<name>`` / ``_run_<name>`` pair below; the
heavy imports happen inside ``_run_<name>`` so that ``sklearn-hemo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import sys


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="sklearn-hemo",
        description="Voxel-wise prediction of hemorrhagic transformation from source PWI.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of a one-line "
                        "message")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
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


@contextlib.contextmanager
def _aif_correction(args):
    """``--no-aif-correction``: the environment variable every step (and worker) reads,
    for the duration of the command only."""
    import os

    from ._motion import MOTION_ENV
    from .signal import VOF_ENV

    switched = [env for env, flag in ((VOF_ENV, "no_aif_correction"),
                                      (MOTION_ENV, "no_motion_correction"))
                if getattr(args, flag, False)]  # --no-motion-correction likewise
    before = {env: os.environ.get(env) for env in switched}
    for env in switched:
        os.environ[env] = "off"
    try:
        yield
    finally:
        for env, value in before.items():
            if value is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = value


def _add_verbosity(p, quiet_help="no progress bar",
                   verbose_help="more progress output: by default a progress bar (verbose "
                   "1); -v also one line per finished patient or task (verbose 2)"):
    """``--quiet`` and ``-v/--verbose`` (count) of a long-running command."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--quiet", action="store_true", help=quiet_help + " (verbose 0)")
    group.add_argument("-v", "--verbose", action="count", default=0, help=verbose_help)


def _verbose(args):
    """The library's ``verbose`` from ``--quiet`` (0) and ``-v`` (default 1, -v 2, ...)."""
    return 0 if args.quiet else 1 + args.verbose


# -- simulate ------------------------------------------------------------------------
def _add_simulate(sub):
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
    p.set_defaults(func=_run_simulate)


def _claim_cohort_folder(folder, overwrite, command, what, inputs=()):
    """Refuse, before any work, a cohort output folder this command may not write into:
    not a folder, not writable, inside an input, or holding files sklearn-hemo did not
    write (e.g. patient folders without participants.tsv) unless --overwrite. The one
    guard of the library (:func:`sklearn_hemo._safety.claim_folder`); claims the folder,
    so that an interrupted run may be rerun into it."""
    from ._safety import OutputError, claim_folder

    try:
        claim_folder(folder, command, overwrite=overwrite, inputs=inputs, what=what)
    except OutputError as exc:
        raise SystemExit(f"sklearn-hemo {command}: {_cli_words(exc)}") from None


def _cli_words(exc):
    """The message of a library guard, in the words of the command line."""
    return str(exc).replace("overwrite=True (--overwrite)", "--overwrite")


def _run_simulate_raw(args):
    from .datasets import simulate_raw_tree

    if args.paper or args.difficulty != "realistic":
        raise SystemExit("sklearn-hemo simulate: --raw writes realistic patients of the "
                         "default or --shape geometry; drop --paper and --difficulty.")
    kwargs = {"n_patients": args.n_patients or 2, "random_state": args.random_state,
              "overwrite": args.overwrite}
    if args.shape is not None:
        kwargs["shape"] = tuple(args.shape)
    try:
        raw = simulate_raw_tree(args.out_dir, **kwargs)
    except (FileExistsError, ValueError) as exc:
        raise SystemExit(f"sklearn-hemo simulate: {exc}") from None
    print(f"wrote a raw tree of {len(raw.transforms)} participant(s) to {raw.path}; "
          f"transforms in {raw.path / 'derivatives' / 'simulation' / 'transforms.json'}")
    return 0


def _run_simulate(args):
    from .datasets import PAPER_COHORT, CohortError, make_stroke_cohort

    if args.raw:
        return _run_simulate_raw(args)
    _claim_cohort_folder(args.out_dir, args.overwrite, "simulate", "OUT_DIR")
    size = dict(PAPER_COHORT) if args.paper else {}  # else make_stroke_cohort's defaults
    if args.n_patients is not None:
        size["n_patients"] = args.n_patients
    if args.shape is not None:
        size["shape"] = tuple(args.shape)
    try:
        cohort = make_stroke_cohort(
            **size,
            difficulty=args.difficulty,
            ht_prevalence=args.ht_prevalence,
            snr="auto" if args.snr is None else args.snr,
            random_state=args.random_state,
            out_dir=args.out_dir,
            overwrite=args.overwrite,
            n_jobs=args.n_jobs,
            verbose=_verbose(args),
        )
    except (FileExistsError, CohortError, ValueError) as exc:
        raise SystemExit(f"sklearn-hemo simulate: {exc}") from None
    print(f"wrote {len(cohort)} patients ({int((cohort.ht == 1).sum())} with HT) to "
          f"{cohort.path}")
    return 0


# -- compare -------------------------------------------------------------------------
def _add_compare(sub):
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
    p.add_argument("--protocol", choices=("standard", "quick", "paper"), default="standard",
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
                   help="balanced voxels (default: standard and quick 4000, paper 50000)")
    p.add_argument("--n-outer", type=int, metavar="K",
                   help="outer folds (standard and quick 5, paper 10)")
    p.add_argument("--n-inner", type=int, metavar="K",
                   help="inner folds (standard 3, quick 2, paper 5)")
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
    p.set_defaults(func=_run_compare)


def _compare_cohort(args, seed=None):
    """The cohort to compare on: --data, or the simulated default (cached for paper)."""
    import json
    from pathlib import Path

    from .datasets import PAPER_COHORT, load_cohort, make_stroke_cohort

    if args.data:
        return load_cohort(args.data)
    seed = args.random_state if seed is None else seed
    if args.protocol != "paper":
        print("simulating the default cohort (make_stroke_cohort defaults, "
              f"random_state={seed}) ...", flush=True)
        # patients in parallel on the compare's workers: the same cohort whatever n_jobs
        return make_stroke_cohort(random_state=seed, verbose=_verbose(args),
                                  n_jobs=args.n_jobs)
    # paper size: ~35 MB per patient, so on disk, simulated once and reused by reruns
    name = "cohort" if seed == args.random_state else f"cohort-seed{seed}"
    folder, marker = Path(args.out) / name, Path(args.out) / f"{name}.json"
    spec = {**PAPER_COHORT, "shape": list(PAPER_COHORT["shape"]), "random_state": seed}
    if marker.exists():
        if json.loads(marker.read_text()) != spec:
            raise ValueError(
                f"{folder} holds a simulated cohort made with other settings than {spec}; "
                f"remove it (and {name}.json) or choose another --out.")
        return load_cohort(folder)
    # no marker: never simulated, or interrupted while simulating; (re)write it all
    print(f"simulating the paper-sized cohort ({PAPER_COHORT['n_patients']} patients, "
          f"{PAPER_COHORT['shape']}) into {folder} ...", flush=True)
    cohort = make_stroke_cohort(**PAPER_COHORT, random_state=seed,
                                out_dir=folder, overwrite=True, verbose=_verbose(args))
    from ._io import atomic_write_text
    from ._safety import OwnedFolder

    with OwnedFolder.of(args.out, "compare").writing([marker.name]):  # recorded as ours
        atomic_write_text(marker, json.dumps(spec) + "\n")
    return cohort


def _claim_compare_out(args):
    """Check --out before any work: writable, not inside the data, not someone else's."""
    import os

    from ._safety import OutputError, claim_folder

    settings = {"data": None if args.data is None else os.path.abspath(args.data),
                "protocol": args.protocol,
                "models": None if args.models is None else list(args.models),
                "random_state": args.random_state, "n_samples": args.n_samples,
                "n_outer": args.n_outer, "n_inner": args.n_inner,
                "n_resamples": args.n_resamples}
    try:
        return claim_folder(args.out, "compare", settings=settings,
                            inputs=[args.data] if args.data else [], overwrite=args.overwrite,
                            what="--out")
    except OutputError as exc:
        raise SystemExit(f"sklearn-hemo compare: {_cli_words(exc)}") from None


def _run_compare(args):
    import os
    import time

    from .datasets import CohortError
    from .model_selection import compare_models

    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("sklearn-hemo compare: --device cuda, but torch finds no CUDA "
                             "device; install a CUDA build of PyTorch or use --device cpu.")
    if args.repeats < 1:
        raise SystemExit("sklearn-hemo compare: --repeats must be at least 1.")
    start = time.perf_counter()
    owned = _claim_compare_out(args)
    try:
        cohort = _compare_cohort(args)
        shown = _cohort_qc_warnings(cohort, owned=None if args.dry_run else owned)
        if args.repeats > 1 and not args.data:
            # every replicate simulates its own cohort with its seed (the first is cohort)
            def cohorts(seed, first=cohort):
                return first if seed == args.random_state else _compare_cohort(args, seed)
        else:
            cohorts = cohort
            if args.repeats > 1:
                print(f"--data: the {args.repeats} replicates share the cohort; each draws "
                      "a new voxel sample, folds and model seeds.", flush=True)
        with _each_warning_once(shown):
            result = compare_models(
                cohorts, args.models, protocol=args.protocol, n_outer=args.n_outer,
                n_inner=args.n_inner, n_samples=args.n_samples,
                n_resamples=args.n_resamples, n_jobs=args.n_jobs, backend=args.backend,
                scheduler=args.scheduler, device=args.device, out_dir=args.out,
                random_state=args.random_state, verbose=_verbose(args),
                dry_run=args.dry_run, volumes=args.volumes and not args.dry_run,
                reference=args.reference, repeats=args.repeats,
                overwrite=args.overwrite)
    except (CohortError, ValueError, ImportError) as exc:
        raise SystemExit(f"sklearn-hemo compare: {exc}") from None
    except KeyboardInterrupt:
        print(f"\ninterrupted: the finished (model, fold) results are saved in {args.out}; "
              "rerun the same command to resume.", file=sys.stderr)
        return 130
    print()
    print(result)
    if args.dry_run:
        print(f"\nNothing was run. Wrote the plan to {args.out}/plan.json.")
        return 0
    if args.volumes:
        _print_volumes(result, args.out)
    sample = getattr(result, "run", {}).get("run", {}).get("sample")
    if sample:
        print(f"\n{sample['voxels_drawn']} voxels from {sample['patients']} patients "
              f"({sample['bleeding_patients']} with HT voxels).")
    if sample and sample["voxels_drawn"] < sample["voxels_asked"]:
        print(f"warning: {sample['voxels_asked']} voxels were asked for but only "
              f"{sample['voxels_drawn']} could be drawn (too few HT voxels in the cohort).")
    print(f"\nThe results on one page: {args.out}/report.html")
    print(f"AUCs in %, patient-bootstrap 95% intervals; paired differences against "
          f"{getattr(result, 'config', {}).get('reference')} in differences.csv and "
          "table.md. Wrote "
          f"table.csv, table.md, differences.csv, run.json, predictions.csv, folds.csv, "
          f"fold_scores.csv, best_params.json and roc_pr.png"
          + (", lstm_curves.png" if os.path.exists(os.path.join(args.out, "lstm_curves.png"))
             else "")
          + (", stability.csv" if getattr(result, "stability", None) else "")
          + f" to {args.out} in {time.perf_counter() - start:.0f} s.")
    return 0


# -- train ---------------------------------------------------------------------------
def _add_train(sub):
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
    p.add_argument("--protocol", choices=("quick", "standard", "paper"), default="quick",
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
    p.set_defaults(func=_run_train)


def _train_params(args, grid):
    """Pipeline parameters for ``train``: --params, --params-from or the grid's first point."""
    import json
    from collections import Counter
    from pathlib import Path

    from sklearn.model_selection import ParameterGrid

    if args.params is not None:
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"sklearn-hemo train: --params is not valid JSON ({exc}).") from None
        if not isinstance(params, dict):
            raise SystemExit("sklearn-hemo train: --params must be a JSON object.")
        return params, "--params"
    if args.params_from is not None:
        path = Path(args.params_from)
        try:
            chosen = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"sklearn-hemo train: cannot read {path} ({exc}).") from None
        per_fold = chosen.get(args.model) if isinstance(chosen, dict) else None
        if not per_fold or not isinstance(per_fold, dict) or not all(
                isinstance(v, dict) for v in per_fold.values()):
            raise SystemExit(
                f"sklearn-hemo train: {path} has no parameters for {args.model!r} (it has "
                f"{sorted(chosen) if isinstance(chosen, dict) else '?'}). Run compare with "
                "this model or pass --params.")
        # the most frequent choice across outer folds; ties go to the earliest fold
        votes = Counter(json.dumps(v, sort_keys=True) for v in per_fold.values())
        return json.loads(votes.most_common(1)[0][0]), str(path)
    grid = list(ParameterGrid(grid)) if grid else [{}]
    return grid[0], "first grid point"


def _check_train_out(args):
    """Refuse a --out that training could not write, before the (long) fit."""
    from pathlib import Path

    from ._safety import OutputError, check_bundle_folder, check_writable_dir, is_inside
    from .persistence import read_manifest

    out = Path(args.out)
    try:
        if is_inside(out, args.data):
            raise OutputError(f"--out {out} lies inside the cohort folder {args.data}; the "
                              "command never writes into its inputs. Choose a folder "
                              "outside it.")
        if (out.exists() or out.is_symlink()) and not args.overwrite:
            raise OutputError(f"--out {out} already exists. Choose another folder, or "
                              "pass --overwrite to replace the model bundle there.")
        check_bundle_folder(out, args.overwrite, read_manifest)  # save_model's guard
        check_writable_dir(out.parent, "--out")
    except OutputError as exc:
        raise SystemExit(f"sklearn-hemo train: {exc}") from None
    except FileExistsError as exc:
        raise SystemExit(f"sklearn-hemo train: --out {exc}".replace(
            "even with overwrite", "even with --overwrite")) from None


def _run_train(args):
    from .datasets import CohortError, load_cohort
    from .model_selection import PROTOCOLS, make_model_zoo
    from .persistence import save_model
    from .risk import with_probabilities
    from .sampling import sample_voxels

    _check_train_out(args)
    try:
        cohort = load_cohort(args.data)
        zoo = make_model_zoo(cohort, args.protocol, models=[args.model],
                             random_state=args.random_state)
    except (CohortError, ValueError) as exc:
        raise SystemExit(f"sklearn-hemo train: {exc}") from None
    shown = _cohort_qc_warnings(cohort)
    pipeline, grid = zoo[args.model]
    params, source = _train_params(args, grid)
    try:
        pipeline.set_params(**params)
    except ValueError as exc:
        raise SystemExit(f"sklearn-hemo train: parameters from {source}: {exc}") from None
    verbose = _verbose(args)
    final_name, final = pipeline.steps[-1]
    from .neural import LSTMClassifier

    # -v: the network's per-epoch table while it trains (reset before saving, so the
    # bundle is the same whatever the verbosity)
    talks = isinstance(final, LSTMClassifier) and verbose >= 2
    if talks:
        pipeline.set_params(**{f"{final_name}__verbose": verbose - 1})
    # `or` would turn an explicit --n-samples 0 into the default instead of an error
    n_samples = (PROTOCOLS[args.protocol]["n_samples"] if args.n_samples is None
                 else args.n_samples)
    try:
        import sklearn

        with _each_warning_once(shown):
            X, y, groups = sample_voxels(cohort, n_samples=n_samples, balance=True,
                                         random_state=args.random_state)
            from .calibration import bleeding_fraction, whole_brain_prevalence

            # the balanced sample's prior, moved to the whole brains of the training cohort
            prevalence = (whole_brain_prevalence(cohort) if args.calibration == "whole-brain"
                          else None)
            pipeline = with_probabilities(pipeline, y, groups, prevalence=prevalence)
            if verbose >= 1:
                print(f"training {args.model} on {len(y)} voxels ({int(sum(y))} HT) from "
                      f"{len(set(groups.tolist()))} patients; parameters ({source}): "
                      f"{params or 'defaults'}", flush=True)
            with sklearn.config_context(enable_metadata_routing=True):
                # the LSTM rows' early stopping holds out whole patients: route them
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
    except ValueError as exc:  # e.g. no HT voxel to balance, too few patients to calibrate
        raise SystemExit(f"sklearn-hemo train: {exc}") from None
    metadata = {"model": args.model, "protocol": args.protocol, "params": params,
                "params_source": source, "n_samples": int(len(y)),
                "random_state": args.random_state, "patients": list(cohort.ids),
                "data": str(args.data), "calibration": args.calibration,
                "whole_brain_prevalence": prevalence,
                "bleeding_fraction": bleeding_fraction(cohort)}
    try:
        out = save_model(pipeline, args.out, overwrite=args.overwrite, metadata=metadata)
    except (FileExistsError, OSError) as exc:
        message = str(exc).replace("pass overwrite=True", "pass --overwrite")
        raise SystemExit(f"sklearn-hemo train: {message}") from None
    print(f"saved {args.model} to {out}")
    return 0


# -- predict -------------------------------------------------------------------------
def _add_predict(sub):
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
    p.set_defaults(func=_run_predict)


def _run_predict(args):
    import os

    import nibabel as nib

    from ._io import atomic_path
    from .datasets import CohortError, load_patient
    from .metrics import dice_score, patient_risk_score, predicted_volume
    from .persistence import BundleError, load_model
    from .risk import predict_risk_map

    if not 0.0 <= args.threshold <= 1.0:  # also NaN: checked before anything is written
        raise SystemExit(f"sklearn-hemo predict: --threshold {args.threshold} must be a "
                         "risk between 0 and 1 (e.g. 0.5).")
    if not args.out.endswith((".nii", ".nii.gz")):
        # checked first: nibabel picks the format from the suffix, after the whole map
        raise SystemExit(f"sklearn-hemo predict: --out {args.out} must end with .nii.gz or "
                         ".nii (a NIfTI risk map), e.g. risk.nii.gz.")
    from ._safety import OutputError, check_output_file, validate_lazily
    from .persistence import read_manifest

    try:
        # cheap (headers, manifest): a missing patient or a folder that is no bundle is
        # named first; the voxels are checked when the map first reads them
        patient = validate_lazily(load_patient(args.patient))
        read_manifest(args.model)
        for option, path in (("--out", args.out), ("--png", args.png)):
            if path is not None:
                check_output_file(path, inputs=[args.patient, args.model],
                                  overwrite=args.overwrite, what=option)
        if args.png is not None and os.path.realpath(args.png) == os.path.realpath(args.out):
            raise OutputError("--png and --out name the same file; give two names.")
    except (OutputError, BundleError, CohortError) as exc:
        raise SystemExit(f"sklearn-hemo predict: {exc}") from None
    try:
        model = load_model(args.model)
        metadata = read_manifest(args.model).get("metadata") or {}
        risk = predict_risk_map(model, patient, chunk_size=args.chunk_size,
                                prevalence=args.prevalence)
    except (BundleError, CohortError, ValueError, TypeError) as exc:
        raise SystemExit(f"sklearn-hemo predict: {exc}") from None
    import contextlib

    # the map and its picture are written as a pair: both, or (on any failure) neither
    with contextlib.ExitStack() as stack:
        nib.save(risk, stack.enter_context(atomic_path(args.out)))
        if args.png:
            from .plotting import save_risk_overlay

            save_risk_overlay(stack.enter_context(atomic_path(args.png)), risk,
                              patient.dwi_b0, patient.ht_mask, title=f"{patient.id}: HT risk")
    summary = (f"participant {patient.id}: predicted HT volume "
               f"{predicted_volume(risk, args.threshold):.2f} mL at risk >= {args.threshold}, "
               f"risk score {patient_risk_score(risk, patient.get_brain_mask()):.3f}")
    if patient.ht_mask is not None:
        summary += f", Dice {dice_score(risk, patient.ht_mask, args.threshold):.3f}"
    print(summary)
    print(_patient_answer_line(patient, risk, metadata, args.prevalence))
    print(f"wrote {args.out}")
    if args.png:
        print(f"wrote {args.png}")
    return 0


def _patient_answer_line(patient, risk, metadata, prevalence):
    """predict's patient-level answer: probability of any HT and expected volume."""
    from .calibration import patient_answer

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


# -- compare --volumes (whole-brain, patient-level results of a comparison) -----------
def _print_volumes(result, out):
    """The per-model summary of ``compare_models(volumes=True)`` (its files are written
    with the comparison's)."""

    def fmt(value, spec):
        return "NA" if value is None else format(value, spec)

    print("\nmodel                occurrence AUC  mean Dice (HT)  mean |volume error| mL")
    for s in result.volumes_summary or []:
        print(f"{s['model']:20} {fmt(s['occurrence_auc'], '.3f'):>14}  "
              f"{fmt(s['dice_mean'], '.3f'):>14}  {fmt(s['volume_abs_error_mean_ml'], '.2f'):>22}")
    print(f"Wrote volumes.csv and volumes_summary.csv to {out} (risk >= 0.5 is predicted HT; "
          "risk score = 99th percentile of in-brain voxel risk).")
    answers = {r["model"]: r for r in result.patients_summary or []}
    print("\nmodel                ECE whole brain (before)  patient AUC [95% CI]")
    for s in result.calibration_summary or []:
        a = answers.get(s["model"], {})
        auc = ("NA" if a.get("patient_auc") is None else
               f"{a['patient_auc']:.3f} [{a['patient_auc_low']:.3f}, "
               f"{a['patient_auc_high']:.3f}]")
        before = fmt(s["ece_before_correction"], ".4f")
        print(f"{s['model']:20} {fmt(s['ece'], '.4f'):>7} ({before})          {auc}")
    print(f"Wrote calibration.csv, calibration_summary.csv, calibration.png, patients.csv and "
          f"patients_summary.csv to {out} (held-out patients, whole-brain calibrated maps).")


# -- import --------------------------------------------------------------------------
def _add_import(sub):
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
    p.set_defaults(func=_run_import)


def _run_import(args):
    from .datasets import CohortError, import_cohort
    from .datasets._import import DEFAULT_HT_PATTERN

    _claim_cohort_folder(args.out, args.overwrite, "import", "--out", inputs=[args.source])
    try:
        cohort = import_cohort(
            args.source, args.out, mapping=args.map,
            ht_pattern=args.ht_pattern or DEFAULT_HT_PATTERN, session=args.session,
            b_tolerance=args.b_tolerance, mask_interpolation=args.mask_interpolation,
            overwrite=args.overwrite, register=args.register, verbose=_verbose(args),
        )
    except (FileExistsError, CohortError, ValueError, ImportError) as exc:
        raise SystemExit(f"sklearn-hemo import: {exc}") from None
    n_ht = int((cohort.ht == 1).sum())
    print(f"imported {len(cohort)} participant(s) ({n_ht} with HT) to {cohort.path}; "
          f"decisions in {cohort.path / 'import.json'}")
    return 0




# -- qc ------------------------------------------------------------------------------
def _add_qc(sub):
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
    p.set_defaults(func=_run_qc)


def _run_qc(args):
    import os
    import warnings

    from ._safety import OutputError, claim_output_dir
    from .datasets import CohortError, load_cohort
    from .qc import write_qc_report

    try:  # before any work: not inside the data, not a folder of someone else's files
        claim_output_dir(args.out, "qc", {"data": os.path.abspath(args.data)},
                         inputs=[args.data], overwrite=args.overwrite)
    except OutputError as exc:
        raise SystemExit(f"sklearn-hemo qc: {_cli_words(exc)}") from None
    try:
        cohort = load_cohort(args.data)
        with warnings.catch_warnings():  # the report lists them; print them once below
            warnings.simplefilter("ignore", UserWarning)
            results = write_qc_report(cohort, args.out, overwrite=args.overwrite,
                                      maps=not args.no_maps, verbose=_verbose(args))
    except (CohortError, ValueError, FileExistsError, ImportError) as exc:
        raise SystemExit(f"sklearn-hemo qc: {exc}") from None
    from .qc import qc_summary

    print(qc_summary(results, report=os.path.join(args.out, "index.html")), file=sys.stderr)
    print(f"wrote {len(results)} QC figures and index.html to {args.out}")
    return 0


@contextlib.contextmanager
def _each_warning_once(shown=()):
    """Within the block, each warning text appears at most once (every model reads the
    same patients, so per-patient notes would repeat once per row), and not at all when
    the QC summary already printed it."""
    import re
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("once", UserWarning)
        for message in shown:
            warnings.filterwarnings("ignore", message=re.escape(message) + r"\Z",
                                    category=UserWarning)
        yield


def _cohort_qc_warnings(cohort, owned=None):
    """The warnings of :func:`sklearn_hemo.qc.patient_qc` for every patient: compare and
    train print their summary (:func:`sklearn_hemo.qc.qc_summary`) before they start and
    silence the same texts when the library raises them again. With ``owned`` (compare's
    output folder) the summary is also written there as ``qc_summary.txt``, which
    ``report.html`` shows."""
    import warnings

    from .qc import patient_qc, qc_summary

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
    if lines and (failed or any(qc.warnings for qc in results)):  # a clean cohort: quiet
        print("\n".join(lines), file=sys.stderr)
    if owned is not None and lines:
        from ._io import atomic_write_text

        with owned.writing(["qc_summary.txt"]):
            atomic_write_text(owned.path / "qc_summary.txt", "\n".join(lines) + "\n")
    return messages




_COMMANDS = [_add_simulate, _add_import, _add_qc, _add_compare]
_COMMANDS += [_add_train, _add_predict]


def main(argv=None):
    """Entry point of the ``sklearn-hemo`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ._safety import checking_on_first_use

    try:
        # every patient a command reads gets the voxel checks of Cohort.validate(),
        # lazily: the first time the command uses it
        with checking_on_first_use(), _aif_correction(args):
            return args.func(args) or 0
    except SystemExit as stop:
        # a command turned an error into a one-line message; --debug shows the original
        if args.debug and isinstance(stop.__context__, Exception):
            raise stop.__context__ from None
        raise
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"\nsklearn-hemo {args.command}: interrupted; nothing half-done was saved.",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - bad input must not end in a traceback
        if args.debug:
            raise
        raise SystemExit(_error_message(args.command, exc)) from None


def _error_message(command, exc):
    """One-line message for an error no command turned into one itself."""
    from .datasets import CohortError

    text = str(exc) or type(exc).__name__
    if isinstance(exc, (CohortError, ValueError)) and not isinstance(
            exc, (UnicodeError,)):
        return f"sklearn-hemo {command}: {text}"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return (f"sklearn-hemo {command}: {exc.strerror or text}{where}. Check the path, its "
                "permissions and the free disk space.")
    if isinstance(exc, MemoryError):
        return (f"sklearn-hemo {command}: out of memory. Use smaller inputs or fewer "
                "parallel jobs (rerun with --debug for the traceback).")
    return (f"sklearn-hemo {command}: {type(exc).__name__}: {text} (rerun with --debug for "
            "the traceback, and report it if the input looks fine).")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
