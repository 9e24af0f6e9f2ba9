"""The ``sklearn-hemo`` command line: simulate, import, qc, compare, train, predict.

Each sub-command lives in its own ``_add_<name>`` / ``_run_<name>`` pair below; the
heavy imports happen inside ``_run_<name>`` so that ``sklearn-hemo --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import sys


def _verbose(args):
    """The library's ``verbose`` from ``--quiet`` (0) and ``-v`` (default 1, -v 2, ...)."""
    return 0 if args.quiet else 1 + args.verbose


# -- simulate ------------------------------------------------------------------------
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
def _compare_cohort(args, seed=None):
    """The cohort to compare on: --data, or the simulated default (cached for paper)."""
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
    from ._safety import OwnedFolder
    from .model_selection._runs import simulated_cohort_in

    name = "cohort" if seed == args.random_state else f"cohort-seed{seed}"
    spec = {**PAPER_COHORT, "shape": list(PAPER_COHORT["shape"]), "random_state": seed}
    return simulated_cohort_in(args.out, name, spec, OwnedFolder.of(args.out, "compare"),
                               verbose=max(_verbose(args), 0))


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
        from .model_selection._runs import volumes_text

        print(volumes_text(result, args.out))
    from .model_selection._runs import after_table_text

    text = after_table_text(getattr(result, "run", {}))  # the sample, the network rows' note
    if text:
        print(text)
    print(f"\nThe results on one page: {args.out}/report.html")
    print(f"AUCs in %, patient-bootstrap 95% intervals; paired differences against "
          f"{getattr(result, 'config', {}).get('reference')} in differences.csv and "
          f"table.md. Wrote {', '.join(getattr(result, 'files', []))} to {args.out} in "
          f"{time.perf_counter() - start:.0f} s.")
    return 0


# -- train ---------------------------------------------------------------------------
def _train_params(args, grid):
    """Pipeline parameters for ``train``: --params, --params-from or the grid's first point."""
    import json

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
        from .model_selection._runs import params_from_comparison

        try:
            return params_from_comparison(args.params_from, args.model), args.params_from
        except (OSError, ValueError) as exc:
            raise SystemExit(f"sklearn-hemo train: {exc}") from None
    grid = list(ParameterGrid(grid)) if grid else [{}]
    return grid[0], "first grid point"


def _check_train_out(args):
    """Refuse a --out that training could not write, before the (long) fit."""
    from ._safety import OutputError
    from .model_selection._runs import check_bundle_out

    try:
        check_bundle_out(args.out, args.data, args.overwrite)
    except OutputError as exc:
        raise SystemExit(f"sklearn-hemo train: {exc}") from None
    except FileExistsError as exc:
        raise SystemExit(f"sklearn-hemo train: --out {exc}".replace(
            "even with overwrite", "even with --overwrite")) from None


def _run_train(args):
    from .datasets import CohortError, load_cohort
    from .model_selection import PROTOCOLS, make_model_zoo
    from .persistence import save_model

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
    # `or` would turn an explicit --n-samples 0 into the default instead of an error
    n_samples = (PROTOCOLS[args.protocol]["n_samples"] if args.n_samples is None
                 else args.n_samples)
    from .model_selection._runs import train_zoo_row

    try:
        with _each_warning_once(shown):
            pipeline, record = train_zoo_row(
                cohort, args.model, pipeline, n_samples=n_samples,
                random_state=args.random_state, calibration=args.calibration,
                verbose=_verbose(args), describe=f"parameters ({source}): "
                f"{params or 'defaults'}")
    except ValueError as exc:  # e.g. no HT voxel to balance, too few patients to calibrate
        raise SystemExit(f"sklearn-hemo train: {exc}") from None
    metadata = {"model": args.model, "protocol": args.protocol, "params": params,
                "params_source": source, "n_samples": record["n_samples"],
                "random_state": args.random_state, "patients": list(cohort.ids),
                "data": str(args.data), "calibration": args.calibration,
                "whole_brain_prevalence": record["whole_brain_prevalence"],
                "bleeding_fraction": record["bleeding_fraction"]}
    try:
        out = save_model(pipeline, args.out, overwrite=args.overwrite, metadata=metadata)
    except (FileExistsError, OSError) as exc:
        message = str(exc).replace("pass overwrite=True", "pass --overwrite")
        raise SystemExit(f"sklearn-hemo train: {message}") from None
    print(f"saved {args.model} to {out}")
    return 0


# -- predict -------------------------------------------------------------------------
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
    from .model_selection._runs import patient_answer_line

    print(patient_answer_line(patient, risk, metadata, args.prevalence))
    print(f"wrote {args.out}")
    if args.png:
        print(f"wrote {args.png}")
    return 0


# -- compare --volumes (whole-brain, patient-level results of a comparison) -----------
# -- import --------------------------------------------------------------------------
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
def _each_warning_once(qc_listed=False):
    """Within the block, each warning text appears at most once (every model reads the
    same patients, so per-patient notes would repeat once per row), and no
    :class:`~sklearn_hemo.exceptions.QCWarning` once the QC pass listed them."""
    import warnings

    from .exceptions import QCWarning

    with warnings.catch_warnings():
        warnings.simplefilter("once", UserWarning)
        if qc_listed:
            warnings.simplefilter("ignore", QCWarning)
        yield


def _cohort_qc_warnings(cohort, owned=None):
    """The QC pass before compare and train (``model_selection._runs.cohort_qc``): prints
    its summary when it found something; True once it ran (its findings are listed)."""
    from .model_selection._runs import cohort_qc

    lines, messages, loud = cohort_qc(cohort, owned)
    if loud:
        print("\n".join(lines), file=sys.stderr)
    return bool(lines or messages)


def _build_parser():
    from ._cli_parsers import build_parser

    return build_parser({"simulate": _run_simulate, "import": _run_import, "qc": _run_qc,
                         "compare": _run_compare, "train": _run_train,
                         "predict": _run_predict})


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
    from ._config import config_context

    # every patient a command reads gets the voxel checks of Cohort.validate(), lazily:
    # the first time the command uses it; --no-aif/motion-correction: for this command only
    switches = {"check_on_first_use": True, **{
        key: False for key, flag in (("aif_vof", "no_aif_correction"),
                                     ("motion_correction", "no_motion_correction"))
        if getattr(args, flag, False)}}
    try:
        with config_context(**switches):
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
