"""Patient-grouped nested comparison of the zoo: out-of-fold scores, CIs, resumable.

Protocol (the paper's): a balanced sample of voxels is drawn from the cohort; an outer
cross-validation over *patients* gives every sampled voxel an out-of-fold score; inside
every outer training set an inner ``GridSearchCV``, also over patients, picks the
hyperparameters. Both loops are :class:`~sklearn.model_selection.StratifiedGroupKFold`:
grouped by patient (a patient's voxels are all on one side) and stratified on the voxel
labels, so every fold holds HT voxels even with few HT patients. The patient ``groups``
reach the inner search (and any estimator that asks for them, e.g. the LSTM's early
stopping) through scikit-learn's metadata routing, enabled only for the duration of the
fit. Every split, outer and inner, is checked: a patient on both sides raises.

The outer test voxels are the sampled voxels of the held-out patients, i.e. the balanced
sample itself (as in the paper, which reports AUCs on its balanced voxel set). AUC-PR
therefore reads against a prevalence of one half, not against the rare-HT prevalence of
whole brains.

Work is split into (model, outer fold) tasks that run on joblib (loky, dask or ray);
each finished task is written to disk at once, so a rerun skips it (see ``_resume``).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import sklearn
from joblib import delayed, parallel_config
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, ParameterGrid
from threadpoolctl import threadpool_limits

from ..datasets import Cohort
from ..utils._training import final_step
from ..utils._verbosity import (
    DEPRECATED,
    DEPRECATED_FLAG,
    progress_bar,
    progress_line,
    resolve_verbose,
)
from ..utils._versions import StratifiedGroupKFold  # folds stratified on sklearn < 1.8
from ..utils.fixes import Interval, StrOptions, validate_params
from ._curves import final_train_loss, loss_curves, test_loss_curve, warn_plateau
from ._distributed import import_modules, run_unordered, task_modules
from ._outputs import write_all_outputs
from ._report import (
    TRUTH_ROWS,
    ComparisonResult,
    inputs_label,
    paired_differences,
    stability_table,
    summarize_predictions,
    write_outputs,
)
from ._resume import (
    PartStore,
    _canonical,
    _json_default,
    claim_results_folder,
    cohort_signature,
    fingerprint,
    model_key,
)
from ._setup import (
    _check_disjoint,
    _consumes_groups,
    _cpu_count,
    _format_seconds,
    _n_workers,
    _positive_scores,
    _prepare,
    make_setup,
)
from ._zoo import PROTOCOLS, ZOO

__all__ = ["compare_models"]


class _PatientGroupedKFold(StratifiedGroupKFold):
    """``StratifiedGroupKFold`` that refuses any split sharing a patient."""

    def split(self, X, y=None, groups=None):
        for train, test in super().split(X, y, groups):
            _check_disjoint(groups, train, test, "inner cross-validation split")
            _check_both_classes(y, train, "an inner training split", "n_inner")
            yield train, test


def _check_both_classes(y, rows, where, knob):
    if np.unique(np.asarray(y)[rows]).size < 2:
        raise ValueError(
            f"{where} holds voxels of a single class: too few patients with HT voxels "
            f"for this many folds. Lower {knob}, sample more voxels or add HT patients."
        )


def _reports_steps(estimator):
    """Whether the final estimator records its optimiser steps (``n_steps_``)."""
    return bool(getattr(type(final_step(estimator)), "_reports_n_steps", False))


def _steps_scorer(estimator, X, y):
    """Not a score: the optimiser steps of the fitted network, read out of the search."""
    return float(final_step(estimator).n_steps_)


def _final_loss_scorer(estimator, X, y):
    """Not a score: the final training loss of the fitted network (a plateau check)."""
    return final_train_loss(final_step(estimator))


def _fit_part(pipeline, grid, cohort, cohort_params, X, y, groups, fold, k, n_inner,
              scoring, seed):
    """Fit one model on all outer folds but ``k`` and score fold ``k``."""
    if cohort_params:
        pipeline = pipeline.set_params(**dict.fromkeys(cohort_params, cohort))
    train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
    _check_disjoint(groups, train, test, f"outer fold {k}")
    _check_both_classes(y, train, f"the training part of outer fold {k}", "n_outer")
    candidates = list(ParameterGrid(grid))
    steps = _reports_steps(pipeline)
    start = time.perf_counter()
    inner_score, fit_steps, inner_losses = None, [], []
    with sklearn.config_context(enable_metadata_routing=True):
        if len(candidates) > 1:
            n_train_patients = np.unique(groups[train]).size
            if n_train_patients < n_inner:
                raise ValueError(
                    f"the training part of outer fold {k} holds {n_train_patients} "
                    f"patient(s), too few for n_inner={n_inner} inner folds of whole "
                    "patients. Lower --n-inner / n_inner or --n-outer, or add patients.")
            inner = _PatientGroupedKFold(n_splits=n_inner, shuffle=True, random_state=seed)
            # the optimiser steps of every inner fit come back as a second "score"
            metrics = ({"score": scoring, "steps": _steps_scorer,
                        "final_train_loss": _final_loss_scorer} if steps else scoring)
            search = GridSearchCV(pipeline, grid, scoring=metrics, cv=inner, n_jobs=1,
                                  refit="score" if steps else True, error_score="raise")
            search.fit(X[train], y[train], groups=groups[train])
            model, best = search.best_estimator_, search.best_params_
            inner_score = float(search.best_score_)
            n_fits = len(candidates) * n_inner + 1
            if steps:
                results = search.cv_results_
                fit_steps = [int(results[f"split{i}_test_steps"][c])
                             for c in range(len(candidates)) for i in range(n_inner)]
                inner_losses = [float(results[f"split{i}_test_final_train_loss"][c])
                                for c in range(len(candidates)) for i in range(n_inner)]
        else:
            # a single candidate has nothing to select: fit it directly
            model = clone(pipeline).set_params(**candidates[0])
            params = {"groups": groups[train]} if _consumes_groups(model) else {}
            model.fit(X[train], y[train], **params)
            best = candidates[0]
            n_fits = 1
        if steps:
            fit_steps.append(int(final_step(model).n_steps_))  # the refit, last
        fit_time = time.perf_counter() - start
        start = time.perf_counter()
        scores = np.asarray(_positive_scores(model, X[test]), dtype=float)
        curves = loss_curves(final_step(model)) if steps else None
        if curves is not None:  # the loss on the outer test fold, epoch by epoch
            curves["test_loss"] = test_loss_curve(model, X[test], y[test])
    if not np.isfinite(scores).all():
        raise ValueError(
            f"fold {k}: the model produced NaN or infinite scores for "
            f"{int((~np.isfinite(scores)).sum())} voxels."
        )
    return {"scores": scores, "test": test, "best_params": best,
            "inner_score": inner_score, "fit_time": fit_time,
            "score_time": time.perf_counter() - start, "n_candidates": len(candidates),
            "n_fits": n_fits, "optimiser_steps": fit_steps if steps else None,
            # learning curves of the refit and the inner fits' final losses (_curves)
            "loss_curves": curves,
            "inner_final_train_loss": inner_losses if steps else None}


@contextlib.contextmanager
def _backend(backend, scheduler, n_jobs, worker_imports=()):
    """Enter the joblib backend; yield the ``n_jobs`` to give ``Parallel``.

    loky's workers import ``worker_imports`` (:func:`._distributed.import_modules`)
    before their first task; workers started otherwise (the cohort's simulation, the
    time estimate) are not reused for the tasks.
    """
    if backend == "loky":
        if scheduler is not None:
            raise ValueError("scheduler= is for backend='dask' or 'ray', not 'loky'.")
        with parallel_config(backend="loky", initializer=import_modules,
                             initargs=(tuple(worker_imports),)):
            yield n_jobs
        return
    if backend == "dask":
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError as exc:
            raise ImportError(
                "backend='dask' needs dask.distributed: pip install 'sklearn-hemo[distributed]'."
            ) from exc
        cluster = None
        if scheduler is None:
            n_workers = max(1, n_jobs if n_jobs > 0 else (_cpu_count() + 1 + n_jobs))
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
        client = Client(cluster if cluster is not None else scheduler)
        try:
            with parallel_config(backend="dask"):
                yield -1
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
        return
    try:
        import ray
        from ray.util.joblib import register_ray
    except ImportError as exc:
        raise ImportError(
            "backend='ray' needs ray: pip install 'sklearn-hemo[ray]' or "
            "pip install 'ray[default]' (or use backend='dask')."
        ) from exc
    register_ray()
    started = not ray.is_initialized()
    if started:
        from ._distributed import init_ray

        restore = init_ray(ray, scheduler, n_jobs)
    try:
        with parallel_config(backend="ray"):
            yield -1 if n_jobs == 1 else n_jobs
    finally:
        if started:
            ray.shutdown()
            restore()


def _truth_scores(cohort, X):
    """Scores of the :data:`TRUTH_ROWS` a simulated cohort supports (none for real data).

    Easy simulated cohorts define no observable risk; their latent bound is the
    ``susceptibility`` (the voxel's probability given that its patient bleeds).
    """
    rows = {}
    for name, key in TRUTH_ROWS.items():
        keys = [key] + (["susceptibility"] if name == "latent-bound" else [])
        for candidate in keys:
            if all(p.truth is not None and candidate in p.truth for p in cohort):
                rows[name] = _truth_at(cohort, X, candidate)
                break
    return rows


def _truth_at(cohort, X, key):
    scores = np.empty(len(X))
    for patient in np.unique(X[:, 0]):
        rows = X[:, 0] == patient
        values = np.asarray(cohort[int(patient)].truth[key], dtype=float)
        scores[rows] = values[X[rows, 1], X[rows, 2], X[rows, 3]]
    return scores


def _estimate_seconds(prepared, zoo, y, groups, fold, n_inner, n_workers, seed):
    """Wall time of the pending work, from two small timed fits per model and the dry
    run's time model (``_plan.py``: the same scaling law per row, ``t = a + b W(n)``,
    calibrated in the regime the full-size fits use).

    Each model's first grid candidate is timed on n and 2n voxels; the law extrapolates
    to the outer-training size, and every part costs ``n_candidates x n_inner`` inner
    fits on (n_inner - 1) / n_inner of it plus the refit. ``plan_comparison`` (the dry
    run) calibrates every candidate, the training budgets and the workers side by side:
    this is its cheap form, for the estimate printed before a run.
    """
    from ._plan import _affine, _law, _work

    rng = np.random.RandomState(seed)
    n_train = int(np.mean([np.sum(fold != k) for k in np.unique(fold)]))
    n_small = max(50, min(500, n_train // 8))
    total = 0.0
    for name, n_parts in prepared.items():
        pipeline, inputs, cohort, cohort_params = n_parts[0]
        candidates = list(ParameterGrid(zoo[name][1]))
        law, extra = _law(final_step(pipeline), n_train, name)
        step = pipeline.steps[-1][0] + "__" if hasattr(pipeline, "steps") else ""
        points = []
        for n in (n_small, 2 * n_small):
            rows = rng.choice(len(y), size=min(n, len(y)), replace=False)
            model = clone(pipeline).set_params(**candidates[0])
            model.set_params(**{step + key: value for key, value in extra.items()})
            if cohort_params:
                model.set_params(**dict.fromkeys(cohort_params, cohort))
            start = time.perf_counter()
            with sklearn.config_context(enable_metadata_routing=True):
                params = {"groups": groups[rows]} if _consumes_groups(model) else {}
                model.fit(inputs[rows], y[rows], **params)
            points.append((_work(law, len(rows))[0], time.perf_counter() - start))
        a, b = _affine(points)

        def cost(n, a=a, b=b, law=law):
            return a + b * _work(law, n)[0]

        fits = len(candidates) * n_inner * cost(n_train * (n_inner - 1) / n_inner) \
            if len(candidates) > 1 else 0.0
        total += (fits + cost(n_train)) * n_parts[1]
    return total / max(1, n_workers)


@validate_params(
    {
        "cohort": "no_validation",
        "models": [None, list, tuple, dict],
        "protocol": [StrOptions(set(PROTOCOLS))],
        "n_outer": [Interval(Integral, 2, None, closed="left"), None],
        "n_inner": [Interval(Integral, 2, None, closed="left"), None],
        "n_samples": [Interval(Integral, 2, None, closed="left"), None],
        "scoring": [str, callable],
        "n_resamples": [Interval(Integral, 2, None, closed="left")],
        "bootstrap_unit": [StrOptions({"patient", "voxel"})],
        "confidence_level": [Interval(Real, 0, 1, closed="neither")],
        "oracle": ["boolean"],
        "n_jobs": [Integral],
        "backend": [StrOptions({"loky", "dask", "ray"})],
        "scheduler": [str, None],
        "device": [str],
        "out_dir": "no_validation",
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "verbose": ["verbose"],
        "plot": ["boolean"],
        "precompute_features": ["boolean"],
        "dry_run": ["boolean"],
        "reference": [str, None],
        "repeats": [Interval(Integral, 1, None, closed="left")],
        "volumes": ["boolean"],
        "overwrite": ["boolean"],
        "progress": DEPRECATED_FLAG,
        "estimate_time": DEPRECATED_FLAG,
    },
    # the models given are fitted here: their own parameters must still be checked
    prefer_skip_nested_validation=False,
)
def compare_models(cohort, models=None, *, protocol="standard", n_outer=None, n_inner=None,
                   n_samples=None, scoring="roc_auc", n_resamples=1000,
                   bootstrap_unit="patient", confidence_level=0.95, oracle=True, n_jobs=1,
                   backend="loky", scheduler=None, device="cpu", out_dir=None,
                   random_state=0, verbose=0, plot=True, precompute_features=True,
                   reference=None, repeats=1, dry_run=False, volumes=False,
                   overwrite=False, progress=DEPRECATED, estimate_time=DEPRECATED):
    """Patient-grouped nested comparison of models, with bootstrap confidence intervals.

    Draws a balanced sample of voxels, gives every voxel an out-of-fold score from each
    model under an outer patient-grouped cross-validation with an inner patient-grouped
    ``GridSearchCV``, and summarises AUC-ROC and AUC-PR with 95 % intervals from a
    patient (cluster) bootstrap that uses the same resamples for every model.

    Parameters
    ----------
    cohort : Cohort or callable
        The patients (each with an ``ht_mask``, the voxel labels), or a function
        ``seed -> Cohort`` (e.g. ``lambda seed: make_stroke_cohort(random_state=seed)``),
        called with the seed of each replicate so that ``repeats`` draws new cohorts.
    models : list of str, dict or None, default=None
        ``None``: the rows of :data:`~sklearn_hemo.model_selection.DEFAULT_ROWS` (every
        zoo row but the ROI leakage proxy) for ``protocol``; a list of row
        names; or a dict ``name -> (pipeline, param_grid)`` of your own (pipelines take
        voxel references, like the zoo's).
    protocol : {"standard", "quick", "paper"}, default="standard"
        Grid sizes of the zoo and default sizes of the protocol (see
        :data:`~sklearn_hemo.model_selection.PROTOCOLS`): ``standard`` 4,000 voxels, 5
        outer and 2 inner folds, 4 candidates per tuned family; ``quick`` (a smoke run)
        4,000 voxels, 5 outer and 2 inner folds, 2 candidates; ``paper`` 50,000 voxels,
        10 outer and 5 inner folds, 4 candidates.
    n_outer, n_inner : int or None, default=None
        Outer and inner folds (over patients); None takes the protocol's.
    n_samples : int or None, default=None
        Voxels sampled, half HT and half non-HT; None takes the protocol's.
    scoring : str or callable, default="roc_auc"
        Score the inner search maximises.
    n_resamples : int, default=1000
        Bootstrap resamples for the intervals.
    bootstrap_unit : {"patient", "voxel"}, default="patient"
        Resample patients (cluster bootstrap) or voxels (too narrow; for comparison).
    confidence_level : float, default=0.95
        Coverage of the intervals.
    oracle : bool, default=True
        On a simulated cohort, add the rows scored by its truth (:data:`TRUTH_ROWS`):
        ``oracle``, the observable risk (the best any model can do from the images), and
        ``latent-bound``, the latent risk that also knows factors no image shows. Neither
        reads the outcome; easy cohorts have only the latent bound.
    n_jobs : int, default=1
        Parallel (model, fold) tasks; -1 uses every core (or every dask worker).
    backend : {"loky", "dask", "ray"}, default="loky"
        joblib backend of the tasks. ``"dask"`` connects to ``scheduler`` or starts a
        ``LocalCluster`` of ``n_jobs`` worker processes; ``"ray"`` uses
        ``ray.util.joblib`` (``scheduler`` is then a ray address) and, without one, starts
        a local ray runtime of ``n_jobs`` CPUs without dashboard.
    scheduler : str or None, default=None
        Address of a running dask scheduler (e.g. ``"tcp://10.0.0.1:8786"``) or ray
        cluster.
    device : str, default="cpu"
        Torch device of the LSTM rows (``"cuda"`` on a GPU machine).
    out_dir : path-like or None, default=None
        Folder for the outputs and the resume cache (``parts/``). None keeps everything
        in memory (no resume). It may not lie inside the cohort's folder, and a folder
        holding files this package did not write there is refused unless ``overwrite``
        (see :func:`sklearn_hemo._safety.claim_folder`).
    random_state : int, default=0
        Seed of the sampling, the folds, the models and the bootstrap. Results (and the
        resume cache) depend on it.
    verbose : int, default=0
        0 silent; 1 progress bars (features, then (model, fold) tasks with an ETA), the
        replicate being run and, before the tasks, an estimate of the wall time from
        small timed fits; 2 also one line per finished (model, fold) task. Bars and lines
        go to standard error (lines through ``tqdm.write``); what must be known whatever
        ``verbose`` is (a model skipped by ``volumes``, a figure not written) is a
        ``UserWarning`` that names the caller's line.
    plot : bool, default=True
        Write ``roc_pr.png`` into ``out_dir`` when matplotlib is installed.
    precompute_features : bool, default=True
        Compute the features of a pipeline's first step once for all sampled voxels when
        that step learns nothing (e.g. ``PatchExtractor``) and is not searched over, and
        fit the rest of the pipeline on them. Same results (the extractor is stateless and
        row-wise), far less reading of images; False runs every pipeline on the voxel
        references.
    reference : str or None, default=None
        Row the paired differences are taken against; None takes ``lstm-pwi+aif+dwi``
        when it is compared, else the first row.
    repeats : int, default=1
        Independent replicates: replicate ``r`` uses the seed ``random_state + r`` for
        the cohort (when ``cohort`` is a callable), the voxel sample, the folds, the
        models and the bootstrap. Each replicate's files go to
        ``out_dir/replicates/seed-<seed>/`` and resume like one run; the summary over
        replicates is ``result.stability`` (``stability.csv``).
    dry_run : bool, default=False
        Run nothing: return the plan of :func:`plan_comparison` (tasks, fits per model,
        projected time for ``n_jobs`` workers and peak memory of a task, from a short
        calibration), written to ``out_dir/plan.json`` when ``out_dir`` is given.
    volumes : bool, default=False
        Also refit each compared model per outer fold (its chosen parameters, the same
        training voxels) and map the held-out patients in full: per patient the
        predicted and annotated HT volume, Dice and risk score
        (:func:`~sklearn_hemo.maps.cross_val_risk_map_table`), per model the
        patient-level occurrence AUC (``result.volumes``, ``result.volumes_summary``;
        ``volumes.csv`` and ``volumes_summary.csv``). Costs about one more outer fit per
        model and fold, and is not resumed; with ``repeats > 1``, of the first replicate.
        A model that cannot be mapped (e.g. a first step that reads no voxel references)
        is skipped with a warning. The maps are whole-brain calibrated (prior shift to the
        whole-brain prevalence of each fold's training patients, see
        :mod:`sklearn_hemo.calibration`); also measured: their reliability
        (``calibration.csv``, ``calibration_summary.csv``, ``calibration.png``) and the
        patient-level answer (``patients.csv``, ``patients_summary.csv``).
    overwrite : bool, default=False
        Write into an ``out_dir`` that holds files this package did not write there
        (same-named files are replaced; nothing else is deleted).
    progress : bool
        Deprecated since 0.1, removed in 0.2: use ``verbose`` (``progress=True`` is
        ``verbose=1``).
    estimate_time : bool
        Deprecated since 0.1, removed in 0.2: use ``verbose`` (``estimate_time=True`` is
        ``verbose=1``, which also shows the progress bars).

    Returns
    -------
    result : ComparisonResult or ComparisonPlan
        ``table`` (one dict per model), ``fold_table``, ``predictions``, ``folds``,
        ``best_params``, ``replicates`` (bootstrap AUCs, same draws for every model),
        ``differences`` (paired differences against ``reference``), ``run`` (what was
        done, as in ``run.json``), with ``repeats > 1`` ``stability`` and, with
        ``volumes=True``, ``volumes`` and ``volumes_summary``; these are of the first
        replicate (seed ``random_state``);
        a :class:`ComparisonPlan` with ``dry_run=True``.

    Raises
    ------
    AssertionError
        If any split, outer or inner, puts one patient on both sides.
    ValueError
        If there are fewer patients than outer folds, or a training split lacks a class.

    Notes
    -----
    * **Folds.** Outer and inner splits are ``StratifiedGroupKFold`` over patients
      (grouped like ``GroupKFold``, and stratified on the voxel labels so every fold has
      HT voxels). The inner search gets the patient ``groups`` through metadata routing,
      so do estimators that request them (the LSTM rows, for patient-grouped early
      stopping). A grid with a single candidate has nothing to select: it is fitted
      directly, without an inner search.
    * **Test voxels.** Each voxel of the balanced sample is scored by the model of the
      outer fold that held its patient out; the AUCs are computed on the balanced sample
      (half HT), as the paper reports them, not on whole brains (see
      :mod:`sklearn_hemo.risk` for whole-volume risk maps).
    * **Resume.** With ``out_dir``, every finished (model, outer fold) is written at once
      to ``out_dir/parts/<run key>/``, the run key being a hash of the cohort ids and
      labels, its images (path, size, modification time) and the whole content of every
      sidecar read (``pwi.json``, ``aif.tsv``), the package version, the sampled voxels,
      the folds, ``n_inner``, ``scoring``, ``protocol`` and ``random_state``. A rerun
      with the same settings skips finished parts and gives the identical table; a
      changed setting or input gets a new key, so stale parts are never reused
      (they stay on disk until removed). A part whose model definition (pipeline
      parameters or grid) changed is recomputed. An interrupted run loses only the
      tasks in flight.
    * **Parallelism.** The (model, fold) tasks run on joblib; each fit inside a task is
      single-threaded for torch (``make_model_zoo(torch_num_threads=1)``), so results do
      not depend on ``n_jobs`` or the backend.
    * **Files.** Every CSV (``table.csv``, ``predictions.csv``, ``volumes.csv``, ...) is
      written by one writer: floats as Python's ``repr`` (they read back bit for bit),
      and a missing value (None or NaN, e.g. the AUC of a fold whose test voxels hold a
      single class) as ``NA``, the missing-value mark of R and of pandas' ``read_csv``.

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.model_selection import compare_models
    >>> cohort = make_stroke_cohort(n_patients=8, shape=(32, 32, 2), ht_prevalence=0.6,
    ...                             n_frames=40, difficulty="easy", random_state=0)
    >>> result = compare_models(cohort, ["linear"], n_outer=3, n_inner=2, n_samples=200,
    ...                         n_resamples=100, random_state=0)
    >>> [(row["model"], row["n_patients"], row["n_voxels"]) for row in result.table]
    [('linear', 8, 200), ('latent-bound', 8, 200)]
    >>> print(result.to_markdown())  # doctest: +ELLIPSIS
    | model | paper's name | inputs | AUC-ROC (95% CI) | AUC-PR (95% CI) | paper AUC-ROC ...
    """
    verbose = resolve_verbose(verbose, "compare_models", progress=progress,
                              estimate_time=estimate_time)
    owned = None if out_dir is None else claim_results_folder(out_dir, cohort, overwrite)
    if dry_run:
        from ._plan import plan_comparison

        with owned.writing(["plan.json"]) if owned is not None else contextlib.nullcontext():
            return plan_comparison(_cohort_for(cohort, random_state), models,
                                   protocol=protocol, n_outer=n_outer, n_inner=n_inner,
                                   n_samples=n_samples, n_jobs=n_jobs, device=device,
                                   random_state=random_state,
                                   precompute_features=precompute_features,
                                   out_dir=out_dir)
    options = _RunOptions(
        models=models, protocol=protocol, n_outer=n_outer, n_inner=n_inner,
        n_samples=n_samples, scoring=scoring, n_resamples=n_resamples,
        bootstrap_unit=bootstrap_unit, confidence_level=confidence_level, oracle=oracle,
        n_jobs=n_jobs, backend=backend, scheduler=scheduler, device=device, out_dir=out_dir,
        verbose=verbose, precompute_features=precompute_features, reference=reference)
    if repeats == 1:
        result = _compare_once(_cohort_for(cohort, random_state), random_state, options,
                               volumes=volumes)
        if out_dir is not None:
            with owned.writing(changed=True):
                result.files = write_all_outputs(result, out_dir, plot=plot)
        return result
    results = []
    for r in range(repeats):
        seed = random_state + r
        progress_line(f"replicate {r + 1} of {repeats} (seed {seed})", verbose, level=1)
        result = _compare_once(_cohort_for(cohort, seed), seed, options,
                               volumes=volumes and r == 0)
        if out_dir is not None:
            with owned.writing(changed=True):
                write_outputs(result, Path(out_dir) / "replicates" / f"seed-{seed}",
                              plot=False, volumes=False)
        results.append(result)
    main = results[0]
    main.stability = stability_table([res.table for res in results])
    main.run["replicates"] = {
        "n": repeats, "seeds": [random_state + r for r in range(repeats)],
        "cohort_changes": callable(cohort) and not isinstance(cohort, Cohort),
        "runs": [res.run["run"] for res in results],
    }
    if out_dir is not None:
        with owned.writing(changed=True):
            main.files = write_all_outputs(main, out_dir, plot=plot)
    return main


@dataclass(frozen=True, eq=False)
class _RunOptions:
    """How :func:`compare_models` runs and summarises a replicate: everything but the
    cohort and the seed, fixed once for all replicates."""

    models: object
    protocol: str
    n_outer: object
    n_inner: object
    n_samples: object
    scoring: object
    n_resamples: int
    bootstrap_unit: str
    confidence_level: float
    oracle: bool
    n_jobs: int
    backend: str
    scheduler: object
    device: str
    out_dir: object
    verbose: int
    precompute_features: bool
    reference: object


def _cohort_for(cohort, seed):
    """The cohort of the replicate with ``seed``: ``cohort(seed)`` when it is callable."""
    if isinstance(cohort, Cohort) or not callable(cohort):
        return cohort
    made = cohort(seed)
    if not isinstance(made, Cohort):
        raise TypeError(
            f"cohort(seed) must return a Cohort, got {type(made).__name__}; pass a Cohort "
            "or a function seed -> Cohort such as lambda s: make_stroke_cohort(random_state=s)."
        )
    return made


def _compare_once(cohort, random_state, options, volumes=False):
    """One replicate of :func:`compare_models` (nothing written but the parts).

    As scikit-learn's searches (``fit -> evaluate_candidates -> _format_results``): the
    setup is drawn once (:func:`~._setup.make_setup`), finished parts are loaded (resume),
    the pending tasks run with their hooks (:func:`_run_tasks`), and the parts are
    summarised (:func:`_format_results`).
    """
    setup = make_setup(cohort, options.models, options.protocol, options.n_outer,
                       options.n_inner, options.n_samples, random_state, options.device)
    store = _part_store(setup, options)
    keys = {name: model_key(*row) for name, row in setup.zoo.items()}
    parts, todo = _load_parts(setup, store, keys)
    prepared = _prepare_pending(setup, todo, options)
    hooks = [_SaveParts(store, keys)] if store is not None else []
    if options.verbose >= 1:
        hooks.insert(0, _TimeEstimate(options.n_jobs, options.verbose))
    hooks.append(_ProgressBar(options.verbose, total=len(setup.tasks())))
    parts.update(_run_tasks(setup, todo, prepared, options, hooks=hooks))
    result = _format_results(setup, parts, options)
    if volumes:
        from ._volumes import risk_map_volumes

        result.volumes, result.volumes_summary = risk_map_volumes(setup, result,
                                                                  options.verbose)
    return result


def _part_store(setup, options):
    """The resume cache of this replicate in ``out_dir/parts/`` (None without out_dir)."""
    if options.out_dir is None:
        return None
    cohort = setup.cohort
    config = {"cohort": list(cohort.ids), "ht": cohort.ht, "X": setup.X, "y": setup.y,
              "fold": setup.fold, "n_inner": setup.n_inner, "scoring": options.scoring,
              "random_state": setup.random_state, "protocol": setup.protocol}
    description = {"protocol": setup.protocol, "random_state": setup.random_state,
                   "n_patients": len(cohort), **setup.settings, "models": list(setup.zoo),
                   "cohort_path": None if cohort.path is None else str(cohort.path)}
    return PartStore(options.out_dir,
                     fingerprint(cohort_content=cohort_signature(cohort), **config),
                     description, cohort_path=cohort.path)


def _load_parts(setup, store, keys):
    """Finished parts from the resume cache, and the (model, fold) tasks still to run."""
    parts, todo = {}, []
    for name, k in setup.tasks():
        part = None if store is None else store.load(name, k, keys[name])
        if part is None:
            todo.append((name, k))
        else:
            parts[name, k] = part
    return parts, todo


def _prepare_pending(setup, todo, options):
    """Model -> ``_prepare``'s (pipeline, inputs, cohort, cohort_params), for the models
    with pending tasks; features shared by rows with the same extractor are computed once."""
    cache, prepared = {}, {}
    pending = list(dict.fromkeys(n for n, _ in todo))
    if pending:
        pending = progress_bar(pending, options.verbose, desc="features", unit="model",
                               leave=False)
    for name in pending:
        prepared[name] = _prepare(*setup.zoo[name], setup.X, setup.cohort, cache,
                                  options.precompute_features)
    return prepared


# -- hooks of the task loop (as skorch's callbacks) ------------------------------------
class _Hook:
    """A hook of :func:`_run_tasks`: each method is called at its point of the loop.

    ``on_run_begin(setup, todo, prepared)`` before the backend starts; ``on_task_end(name,
    k, part)`` in the main process as each task arrives (in completion order);
    ``on_run_end()`` always, also after an error or an interrupt.
    """

    def on_run_begin(self, setup, todo, prepared):
        pass

    def on_task_end(self, name, k, part):
        pass

    def on_run_end(self):
        pass


class _SaveParts(_Hook):
    """Resume: write each finished part to the store at once."""

    def __init__(self, store, keys):
        self.store, self.keys = store, keys

    def on_task_end(self, name, k, part):
        _save_part(self.store, name, k, self.keys[name], part)


class _TimeEstimate(_Hook):
    """``verbose >= 1``: the wall time of the pending tasks, from small timed fits."""

    def __init__(self, n_jobs, verbose):
        self.n_jobs, self.verbose = n_jobs, verbose

    def on_run_begin(self, setup, todo, prepared):
        n_workers = _n_workers(self.n_jobs)
        pending = {name: (prepared[name], sum(1 for n, _ in todo if n == name))
                   for name in prepared}
        seconds = _estimate_seconds(pending, setup.zoo, setup.y, setup.groups, setup.fold,
                                    setup.n_inner, n_workers, setup.seeds[0])
        progress_line(f"Estimated time for {len(todo)} (model, fold) tasks: about "
                      f"{_format_seconds(seconds)} on {n_workers} worker(s) "
                      "(extrapolated from small timed fits; the progress bar refines it).",
                      self.verbose, level=1)


class _ProgressBar(_Hook):
    """``verbose >= 1``: a bar over all tasks (resumed ones counted as done) with an ETA;
    ``verbose >= 2``: also a line per finished task."""

    def __init__(self, verbose, total):
        self.verbose, self.total, self.bar = verbose, total, None

    def on_run_begin(self, setup, todo, prepared):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, initial=self.total - len(todo), desc="compare",
                        unit="fold", disable=self.verbose < 1, dynamic_ncols=True)

    def on_task_end(self, name, k, part):
        inner = part.get("inner_score")
        progress_line(f"{name} fold {k}: fitted in {part['fit_time']:.1f} s"
                      + ("" if inner is None else f", inner score {inner:.3f}"),
                      self.verbose)
        self.bar.set_postfix_str(f"{name} fold {k}", refresh=False)
        self.bar.update()

    def on_run_end(self):
        if self.bar is not None:
            self.bar.close()


def _run_tasks(setup, todo, prepared, options, *, hooks=()):
    """Run the pending (model, fold) tasks on the backend; return their parts.

    Each part comes back JSON-normalised (so fresh and resumed parts are the same values)
    and is handed to every hook's ``on_task_end`` as it arrives (the resume hook saves
    it there, so an interrupted run loses only the tasks in flight).
    """
    done = {}
    if not todo:
        return done
    try:
        for hook in hooks:
            hook.on_run_begin(setup, todo, prepared)
        imports = task_modules(pipeline for pipeline, _ in setup.zoo.values())
        with _backend(options.backend, options.scheduler, options.n_jobs,
                      imports) as parallel_jobs:
            tasks = (
                delayed(_tagged)(name, k, prepared[name][0], setup.zoo[name][1],
                                 prepared[name][2], prepared[name][3], prepared[name][1],
                                 setup.y, setup.groups, setup.fold, k, setup.n_inner,
                                 options.scoring, setup.inner_seed(k))
                for name, k in todo
            )
            for name, k, part in run_unordered(tasks, parallel_jobs, options.backend):
                part = _normalise(part)
                for hook in hooks:
                    hook.on_task_end(name, k, part)
                done[name, k] = part
    finally:
        for hook in hooks:
            hook.on_run_end()
    return done


def _format_results(setup, parts, options):
    """The :class:`ComparisonResult` of a replicate from its parts (fresh and resumed)."""
    cohort, X, y, fold = setup.cohort, setup.X, setup.y, setup.fold
    predictions, best_params, fold_info = {}, {}, {}
    patient_of = np.asarray(cohort.ids)[setup.groups]
    for name in setup.zoo:
        scores = np.empty(len(X))
        best_params[name] = {}
        for k in range(setup.n_outer):
            part = parts[name, k]
            scores[part["test"]] = part["scores"]
            best_params[name][str(k)] = part["best_params"]
            fold_info[name, k] = part
        predictions[name] = _prediction_record(patient_of, X, fold, y, scores)
    for name, truth_scores in (_truth_scores(cohort, X) if options.oracle else {}).items():
        predictions[name] = _prediction_record(patient_of, X, fold, y, truth_scores)

    inputs = {name: inputs_label(name, pipeline) for name, (pipeline, _) in setup.zoo.items()}
    inputs.update({name: inputs_label(name) for name in TRUTH_ROWS})
    table, fold_table, replicates = summarize_predictions(
        predictions, inputs=inputs, n_resamples=options.n_resamples,
        unit=options.bootstrap_unit, confidence_level=options.confidence_level,
        random_state=setup.random_state, fold_info=fold_info)
    scoring = options.scoring
    result = ComparisonResult(
        table=table, fold_table=fold_table, predictions=predictions,
        folds=_patient_folds(patient_of, fold),
        best_params=best_params, replicates=replicates,
        config={"protocol": setup.protocol, "random_state": setup.random_state,
                **setup.settings,
                "scoring": scoring if isinstance(scoring, str) else repr(scoring),
                "n_resamples": options.n_resamples, "bootstrap_unit": options.bootstrap_unit,
                "confidence_level": options.confidence_level,
                "n_patients_cohort": len(cohort)},
        out_dir=options.out_dir,
    )
    result.differences = paired_differences(
        table, replicates, reference=_reference(options.reference, list(predictions)))
    result.run = _run_record(setup, parts, options)
    result.config["reference"] = result.differences[0]["reference"] if result.differences \
        else None
    return result


def _reference(reference, names):
    if reference is None:
        return "lstm-pwi+aif+dwi" if "lstm-pwi+aif+dwi" in names else names[0]
    if reference not in names:
        raise ValueError(
            f"reference={reference!r} is not a compared row; choose one of {names}.")
    return reference


def _versions():
    """Versions of Python and of the libraries a result depends on."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("sklearn-hemo", "scikit-learn", "numpy", "scipy", "torch", "skorch",
                    "nibabel", "joblib"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    from .. import __version__

    found["sklearn-hemo"] = __version__  # the imported copy, not the installed one
    return found


def _run_record(setup, parts, options):
    """What a run did, for ``run.json``: cohort, sample, folds, seeds, models, versions."""
    cohort, zoo, protocol, settings = setup.cohort, setup.zoo, setup.protocol, setup.settings
    X, y, groups, fold, seeds = setup.X, setup.y, setup.groups, setup.fold, setup.seeds
    random_state, scoring = setup.random_state, options.scoring
    n_resamples, bootstrap_unit = options.n_resamples, options.bootstrap_unit
    ht = np.asarray(cohort.ht)
    bleeding = np.unique(groups[y == 1])
    models = {}
    for name, (pipeline, grid) in zoo.items():
        final = final_step(pipeline)
        folds = [parts[name, k] for k in range(settings["n_outer"])]
        n_candidates = len(ParameterGrid(grid))
        steps = [part.get("optimiser_steps") for part in folds]
        models[name] = {
            "family": ZOO[name].family if name in ZOO else "custom",
            "tuned": n_candidates > 1,
            "pipeline": [[step, f"{type(est).__module__}.{type(est).__qualname__}"]
                         for step, est in getattr(pipeline, "steps", [("model", final)])],
            "estimator": f"{type(final).__module__}.{type(final).__qualname__}",
            "params": _canonical(final)["params"] if hasattr(final, "get_params") else {},
            "grid": json.loads(json.dumps(grid, default=_json_default)),
            "n_candidates": n_candidates,
            "n_inner": settings["n_inner"] if n_candidates > 1 else 0,
            "n_fits": int(sum(part.get("n_fits", 0) for part in folds)),
            "fit_seconds": float(sum(part.get("fit_time", 0.0) for part in folds)),
            "best_params": {str(k): part.get("best_params") for k, part in enumerate(folds)},
            "optimiser_steps": None if all(v is None for v in steps) else {
                str(k): v for k, v in enumerate(steps)},
        }
        curves = [part.get("loss_curves") for part in folds]
        if any(c is not None for c in curves):
            # per outer fold: the refit's per-epoch train_loss / valid_loss / test_loss
            # (the outer test fold's, computed after training), and the final training
            # loss of every inner fit
            models[name]["loss_curves"] = {str(k): c for k, c in enumerate(curves)}
            models[name]["inner_final_train_loss"] = {
                str(k): part.get("inner_final_train_loss") for k, part in enumerate(folds)}
            for k, part in enumerate(folds):
                warn_plateau(name, k, part.get("loss_curves"),
                             part.get("inner_final_train_loss"))
    run = {
        "protocol": protocol, "random_state": random_state,
        "scoring": scoring if isinstance(scoring, str) else repr(scoring),
        "n_resamples": n_resamples, "bootstrap_unit": bootstrap_unit,
        "cohort": {
            "path": None if cohort.path is None else str(cohort.path),
            "n_patients": len(cohort), "n_bleeding_patients": int((ht == 1).sum()),
        },
        "sample": {
            "voxels_asked": int(settings["n_samples"]), "voxels_drawn": int(len(X)),
            "ht_voxels": int(y.sum()), "patients": int(np.unique(groups).size),
            "bleeding_patients": int(bleeding.size),
        },
        "folds": {"n_outer": settings["n_outer"], "n_inner": settings["n_inner"],
                  "kind": "StratifiedGroupKFold over patients (outer and inner)",
                  "outer_seed": int(seeds[0]),
                  "inner_seeds": [int(v) for v in seeds[1:]],
                  "patients_per_fold": [int(np.unique(groups[fold == k]).size)
                                        for k in range(settings["n_outer"])]},
    }
    return {"run": run, "models": models, "versions": _versions()}


def _patient_folds(patient_of, fold):
    _, first = np.unique(patient_of, return_index=True)
    order = np.sort(first)
    return {str(patient_of[i]): int(fold[i]) for i in order}


def _prediction_record(patient_of, X, fold, y, scores):
    return {"patient": patient_of, "ijk": X[:, 1:4], "fold": fold, "y_true": y,
            "score": scores}


def _save_part(store, name, k, key, part):
    store.save(name, k, key, part)


def _tagged(name, k, *args):
    # One BLAS thread per task, whatever the backend: a BLAS reduction split over a
    # different number of threads sums in another order, so serial, loky and dask runs
    # would differ in the last bits; pinned, they are identical.
    with threadpool_limits(limits=1):
        cpu = time.process_time()
        part = _fit_part(*args)
        # CPU seconds of the task in its worker: with the wall times, what a shared
        # machine's load did to it (compared with the dry-run plan's projection)
        part["cpu_time"] = time.process_time() - cpu
        return name, k, part


def _normalise(part):
    meta = {key: value for key, value in part.items() if key not in ("scores", "test")}
    meta = json.loads(json.dumps(meta, default=_json_default))
    return {"scores": np.asarray(part["scores"], dtype=float),
            "test": np.asarray(part["test"], dtype=np.int64), **meta}
