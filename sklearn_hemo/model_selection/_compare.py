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
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import sklearn
from joblib import cpu_count, delayed, parallel_config
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, ParameterGrid
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from threadpoolctl import threadpool_limits

from ..base import is_row_wise_voxel_transformer
from ..datasets import Cohort
from ..utils._versions import StratifiedGroupKFold  # folds stratified on sklearn < 1.8
from ._distributed import run_unordered
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
    _digest,
    _json_default,
    cohort_signature,
    fingerprint,
    model_key,
)
from ._zoo import DEFAULT_ROWS, FAMILIES, PROTOCOLS, make_model_zoo

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


def _check_disjoint(groups, train, test, where):
    shared = np.intersect1d(np.asarray(groups)[train], np.asarray(groups)[test])
    if shared.size:
        raise AssertionError(
            f"{where}: patients {shared[:5].tolist()} are in both the training and the "
            "test part; this would leak voxels of one patient across the split."
        )


def _consumes_groups(estimator):
    return bool(estimator.get_metadata_routing().consumes("fit", ["groups"]))


def _positive_scores(estimator, X):
    """Score of the positive class (label 1): probability or decision value."""
    classes = list(estimator.classes_)
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(X)[:, classes.index(1)]
    scores = estimator.decision_function(X)
    # decision_function of a binary classifier is positive towards classes_[1]
    return scores if classes.index(1) == 1 else -scores


def _final_step(estimator):
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def _reports_steps(estimator):
    """Whether the final estimator records its optimiser steps (``n_steps_``)."""
    return bool(getattr(type(_final_step(estimator)), "_reports_n_steps", False))


def _steps_scorer(estimator, X, y):
    """Not a score: the optimiser steps of the fitted network, read out of the search."""
    return float(_final_step(estimator).n_steps_)


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
    inner_score, fit_steps = None, []
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
            metrics = {"score": scoring, "steps": _steps_scorer} if steps else scoring
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
        else:
            # a single candidate has nothing to select: fit it directly
            model = clone(pipeline).set_params(**candidates[0])
            params = {"groups": groups[train]} if _consumes_groups(model) else {}
            model.fit(X[train], y[train], **params)
            best = candidates[0]
            n_fits = 1
        if steps:
            fit_steps.append(int(_final_step(model).n_steps_))  # the refit, last
        fit_time = time.perf_counter() - start
        start = time.perf_counter()
        scores = np.asarray(_positive_scores(model, X[test]), dtype=float)
    if not np.isfinite(scores).all():
        raise ValueError(
            f"fold {k}: the model produced NaN or infinite scores for "
            f"{int((~np.isfinite(scores)).sum())} voxels."
        )
    return {"scores": scores, "test": test, "best_params": best,
            "inner_score": inner_score, "fit_time": fit_time,
            "score_time": time.perf_counter() - start, "n_candidates": len(candidates),
            "n_fits": n_fits, "optimiser_steps": fit_steps if steps else None}


def _prepare(pipeline, grid, X, cohort, cache, precompute=True):
    """What one model's tasks run on: ``(pipeline, inputs, cohort, cohort_params)``.

    When the first step is a stateless, row-wise extractor of voxel references (its
    :class:`~sklearn_hemo.base.HemoInputTags` say ``row_wise`` and ``voxel_references``,
    as :class:`~sklearn_hemo.preprocessing.PatchExtractor`'s do; ``requires_fit=False``
    alone is not enough: a batch-dependent ``FunctionTransformer`` has it too) and the
    grid does not search its parameters, its features are computed once for all sampled
    voxels (shared by every row with the same extractor) and the tasks run the rest of the
    pipeline on them. A stateless, row-wise extractor gives every voxel the same features
    whether it is transformed alone or with others, so nothing leaks across folds; the
    saving is large (each inner fit would otherwise re-read every training patient).

    Otherwise the pipeline runs on the voxel references, and the cohort it holds is sent
    once as its own argument (joblib's dask backend scatters large arguments by identity)
    rather than pickled inside every task.
    """
    name, first = pipeline.steps[0]
    searched = any(key.split("__")[0] == name for key in grid)
    if (precompute and len(pipeline.steps) > 1 and not searched
            and is_row_wise_voxel_transformer(first)):
        key = _features_key(first)
        if key not in cache:
            cache[key] = clone(first).fit_transform(X)
        return clone(Pipeline(pipeline.steps[1:])), cache[key], None, []
    names = [param for param, value in pipeline.get_params(deep=True).items()
             if value is cohort]
    pipeline = clone(pipeline)
    if names:
        pipeline.set_params(**dict.fromkeys(names, None))
    return pipeline, X, (cohort if names else None), names


def _features_key(extractor):
    return _digest(_canonical(extractor))


@contextlib.contextmanager
def _backend(backend, scheduler, n_jobs):
    """Enter the joblib backend; yield the ``n_jobs`` to give ``Parallel``."""
    if backend == "loky":
        if scheduler is not None:
            raise ValueError("scheduler= is for backend='dask' or 'ray', not 'loky'.")
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


def _cpu_count():
    return cpu_count()


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


def _resolve_zoo(cohort, models, protocol, random_state, device):
    if models is None or (isinstance(models, (list, tuple)) and
                          all(isinstance(m, str) for m in models)):
        return make_model_zoo(cohort, protocol, models=list(DEFAULT_ROWS) if models is None
                              else list(models), random_state=random_state, device=device)
    if isinstance(models, dict):
        for name, row in models.items():
            if not (isinstance(row, tuple) and len(row) == 2 and isinstance(row[1], dict)):
                raise TypeError(
                    f"models[{name!r}] must be a (pipeline, param_grid) tuple as returned "
                    "by make_model_zoo."
                )
            if "__" in name or "/" in name or name in TRUTH_ROWS:
                raise ValueError(
                    f"model name {name!r} is not allowed (no '__' or '/', not "
                    f"{' or '.join(map(repr, TRUTH_ROWS))})."
                )
        return dict(models)
    raise TypeError(
        "models must be None, a list of zoo row names or a dict name -> (pipeline, grid), "
        f"got {type(models).__name__}."
    )


def _outer_folds(y, groups, n_outer, seed):
    n_patients = np.unique(groups).size
    if n_outer > n_patients:
        raise ValueError(
            f"n_outer={n_outer} outer folds need at least {n_outer} patients with sampled "
            f"voxels, got {n_patients}; lower n_outer or add patients."
        )
    fold = np.full(len(y), -1)
    outer = StratifiedGroupKFold(n_splits=n_outer, shuffle=True, random_state=seed)
    for k, (train, test) in enumerate(outer.split(np.zeros(len(y)), y, groups)):
        _check_disjoint(groups, train, test, f"outer fold {k}")
        fold[test] = k
    return fold


def _estimate_seconds(prepared, zoo, y, groups, fold, n_inner, n_workers, seed):
    """Wall time of the pending work, extrapolated from two small fits per model.

    Each model's first grid candidate is timed on n and 2n voxels; a fixed overhead plus a
    per-voxel cost extrapolates to the outer-training size, and every part costs
    ``n_candidates x n_inner`` inner fits on (n_inner - 1) / n_inner of it plus the refit.
    """
    rng = np.random.RandomState(seed)
    n_train = int(np.mean([np.sum(fold != k) for k in np.unique(fold)]))
    n_small = max(50, min(500, n_train // 8))
    total = 0.0
    for name, n_parts in prepared.items():
        pipeline, inputs, cohort, cohort_params = n_parts[0]
        candidates = list(ParameterGrid(zoo[name][1]))
        times = []
        for n in (n_small, 2 * n_small):
            rows = rng.choice(len(y), size=min(n, len(y)), replace=False)
            model = clone(pipeline).set_params(**candidates[0])
            if cohort_params:
                model.set_params(**dict.fromkeys(cohort_params, cohort))
            start = time.perf_counter()
            with sklearn.config_context(enable_metadata_routing=True):
                params = {"groups": groups[rows]} if _consumes_groups(model) else {}
                model.fit(inputs[rows], y[rows], **params)
            times.append(time.perf_counter() - start)
        # affine in the voxels: a fixed overhead plus a per-voxel cost (every row of the
        # paper protocol is linear in n; the kernel rows switch to Nystroem when large)
        slope = max(times[1] - times[0], 0.0) / n_small
        overhead = max(times[0] - slope * n_small, 0.0)

        def cost(n, a=overhead, b=slope):
            return a + b * n

        fits = len(candidates) * n_inner * cost(n_train * (n_inner - 1) / n_inner) \
            if len(candidates) > 1 else 0.0
        total += (fits + cost(n_train)) * n_parts[1]
    return total / max(1, n_workers)


def _format_seconds(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}min" if hours else f"{rest // 60}min {rest % 60:02d}s"


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
        "progress": ["boolean"],
        "estimate_time": ["boolean"],
        "plot": ["boolean"],
        "precompute_features": ["boolean"],
        "dry_run": ["boolean"],
        "reference": [str, None],
        "repeats": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def compare_models(cohort, models=None, *, protocol="standard", n_outer=None, n_inner=None,
                   n_samples=None, scoring="roc_auc", n_resamples=1000,
                   bootstrap_unit="patient", confidence_level=0.95, oracle=True, n_jobs=1,
                   backend="loky", scheduler=None, device="cpu", out_dir=None,
                   random_state=0, progress=False, estimate_time=False, plot=True,
                   precompute_features=True, reference=None, repeats=1,
                   dry_run=False):
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
        outer and 3 inner folds, 4 candidates per tuned family; ``quick`` (a smoke run)
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
        in memory (no resume).
    random_state : int, default=0
        Seed of the sampling, the folds, the models and the bootstrap. Results (and the
        resume cache) depend on it.
    progress : bool, default=False
        Show a progress bar over (model, fold) tasks with an ETA.
    estimate_time : bool, default=False
        Print an estimate of the wall time before starting, from small timed fits.
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

    Returns
    -------
    result : ComparisonResult or ComparisonPlan
        ``table`` (one dict per model), ``fold_table``, ``predictions``, ``folds``,
        ``best_params``, ``replicates`` (bootstrap AUCs, same draws for every model),
        ``differences`` (paired differences against ``reference``), ``run`` (what was
        done, as in ``run.json``) and, with ``repeats > 1``, ``stability``; these are
        of the first replicate (seed ``random_state``);
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
      :mod:`sklearn_hemo.maps` for whole-volume risk maps).
    * **Resume.** With ``out_dir``, every finished (model, outer fold) is written at once
      to ``out_dir/parts/<run key>/``, the run key being a hash of the cohort ids and
      labels, the sampled voxels, the folds, ``n_inner``, ``scoring``, ``protocol`` and
      ``random_state``. A rerun with the same settings skips finished parts and gives the
      identical table; a changed setting gets a new key, so stale parts are never reused
      (they stay on disk until removed). A part whose model definition (pipeline
      parameters or grid) changed is recomputed. An interrupted run loses only the
      tasks in flight.
    * **Parallelism.** The (model, fold) tasks run on joblib; each fit inside a task is
      single-threaded for torch (``make_model_zoo(torch_num_threads=1)``), so results do
      not depend on ``n_jobs`` or the backend.

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
    options = dict(models=models, protocol=protocol, n_outer=n_outer, n_inner=n_inner,
                   n_samples=n_samples, scoring=scoring, n_resamples=n_resamples,
                   bootstrap_unit=bootstrap_unit, confidence_level=confidence_level,
                   oracle=oracle, n_jobs=n_jobs, backend=backend, scheduler=scheduler,
                   device=device, progress=progress, estimate_time=estimate_time,
                   precompute_features=precompute_features, reference=reference)
    if dry_run:
        from ._plan import plan_comparison

        return plan_comparison(_cohort_for(cohort, random_state), models, protocol=protocol,
                               n_outer=n_outer, n_inner=n_inner, n_samples=n_samples,
                               n_jobs=n_jobs, device=device, random_state=random_state,
                               precompute_features=precompute_features, out_dir=out_dir)
    if repeats == 1:
        result = _compare_once(_cohort_for(cohort, random_state), random_state=random_state,
                               out_dir=out_dir, **options)
        if out_dir is not None:
            write_outputs(result, out_dir, plot=plot)
        return result
    results = []
    for r in range(repeats):
        seed = random_state + r
        if progress:
            print(f"replicate {r + 1} of {repeats} (seed {seed})", flush=True)
        result = _compare_once(_cohort_for(cohort, seed), random_state=seed, out_dir=out_dir,
                               **options)
        if out_dir is not None:
            write_outputs(result, Path(out_dir) / "replicates" / f"seed-{seed}", plot=False)
        results.append(result)
    main = results[0]
    main.stability = stability_table([res.table for res in results])
    main.run["replicates"] = {
        "n": repeats, "seeds": [random_state + r for r in range(repeats)],
        "cohort_changes": callable(cohort) and not isinstance(cohort, Cohort),
        "runs": [res.run["run"] for res in results],
    }
    if out_dir is not None:
        write_outputs(main, out_dir, plot=plot)
    return main


def _setup(cohort, models, protocol, n_outer, n_inner, n_samples, random_state, device):
    """What a run (or its plan) works on: the protocol's settings with the overrides, the
    zoo, the balanced voxel sample, the seeds (outer first, then one per outer fold) and
    each voxel's outer fold."""
    from ..sampling import sample_voxels

    settings = dict(PROTOCOLS[protocol])
    for key, value in (("n_outer", n_outer), ("n_inner", n_inner), ("n_samples", n_samples)):
        if value is not None:
            settings[key] = value
    zoo = _resolve_zoo(cohort, models, protocol, random_state, device)
    with warnings.catch_warnings():
        if n_samples is None:
            # the protocol's size is an upper bound: a small cohort gives all its HT voxels
            warnings.filterwarnings("ignore", message=".*HT voxels are available",
                                    category=UserWarning)
        X, y, groups = sample_voxels(cohort, n_samples=settings["n_samples"], balance=True,
                                     random_state=random_state)
    X, y, groups = np.asarray(X), np.asarray(y).astype(int), np.asarray(groups)
    seeds = np.random.RandomState(random_state).randint(np.iinfo(np.int32).max,
                                                        size=settings["n_outer"] + 1)
    fold = _outer_folds(y, groups, settings["n_outer"], seeds[0])
    return settings, zoo, X, y, groups, seeds, fold


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


def _compare_once(cohort, *, models, protocol, n_outer, n_inner, n_samples, scoring,
                  n_resamples, bootstrap_unit, confidence_level, oracle, n_jobs, backend,
                  scheduler, device, out_dir, random_state, progress, estimate_time,
                  precompute_features, reference):
    """One replicate of :func:`compare_models` (nothing written but the parts)."""
    settings, zoo, X, y, groups, seeds, fold = _setup(
        cohort, models, protocol, n_outer, n_inner, n_samples, random_state, device)
    ids = np.asarray(cohort.ids)

    config = {"cohort": list(cohort.ids), "ht": cohort.ht, "X": X, "y": y, "fold": fold,
              "n_inner": settings["n_inner"], "scoring": scoring,
              "random_state": random_state, "protocol": protocol}
    store = None
    if out_dir is not None:
        description = {"protocol": protocol, "random_state": random_state,
                       "n_patients": len(cohort), **settings, "models": list(zoo),
                       "cohort_path": None if cohort.path is None else str(cohort.path)}
        store = PartStore(out_dir, fingerprint(cohort_content=cohort_signature(cohort),
                                              **config), description)

    keys = {name: model_key(*row) for name, row in zoo.items()}
    parts, todo = {}, []
    for name in zoo:
        for k in range(settings["n_outer"]):
            part = None if store is None else store.load(name, k, keys[name])
            if part is None:
                todo.append((name, k))
            else:
                parts[name, k] = part

    cache, prepared = {}, {}
    pending = list(dict.fromkeys(n for n, _ in todo))
    if progress and pending:
        from tqdm.auto import tqdm

        pending = tqdm(pending, desc="features", unit="model", leave=False)
    for name in pending:
        prepared[name] = _prepare(*zoo[name], X, cohort, cache, precompute_features)
    del cache
    if estimate_time and todo:
        n_workers = n_jobs if n_jobs > 0 else _cpu_count() + 1 + n_jobs
        pending = {name: (prepared[name], sum(1 for n, _ in todo if n == name))
                   for name in prepared}
        seconds = _estimate_seconds(pending, zoo, y, groups, fold, settings["n_inner"],
                                    n_workers, seeds[0])
        print(f"Estimated time for {len(todo)} (model, fold) tasks: about "
              f"{_format_seconds(seconds)} on {n_workers} worker(s) "
              "(extrapolated from small timed fits; the progress bar refines it).",
              flush=True)
    _run_tasks(todo, zoo, prepared, y, groups, fold, settings, scoring, seeds, store, keys,
               parts, n_jobs, backend, scheduler, progress,
               total=len(zoo) * settings["n_outer"])

    predictions, best_params, fold_info = {}, {}, {}
    patient_of = ids[groups]
    for name in zoo:
        scores = np.empty(len(X))
        best_params[name] = {}
        for k in range(settings["n_outer"]):
            part = parts[name, k]
            scores[part["test"]] = part["scores"]
            best_params[name][str(k)] = part["best_params"]
            fold_info[name, k] = part
        predictions[name] = _prediction_record(patient_of, X, fold, y, scores)
    for name, truth_scores in (_truth_scores(cohort, X) if oracle else {}).items():
        predictions[name] = _prediction_record(patient_of, X, fold, y, truth_scores)

    inputs = {name: inputs_label(name, pipeline) for name, (pipeline, _) in zoo.items()}
    inputs.update({name: inputs_label(name) for name in TRUTH_ROWS})
    table, fold_table, replicates = summarize_predictions(
        predictions, inputs=inputs, n_resamples=n_resamples, unit=bootstrap_unit,
        confidence_level=confidence_level, random_state=random_state,
        fold_info=fold_info)
    result = ComparisonResult(
        table=table, fold_table=fold_table, predictions=predictions,
        folds=_patient_folds(patient_of, fold),
        best_params=best_params, replicates=replicates,
        config={"protocol": protocol, "random_state": random_state, **settings,
                "scoring": scoring if isinstance(scoring, str) else repr(scoring),
                "n_resamples": n_resamples, "bootstrap_unit": bootstrap_unit,
                "confidence_level": confidence_level, "n_patients_cohort": len(cohort)},
        out_dir=out_dir,
    )
    result.differences = paired_differences(
        table, replicates, reference=_reference(reference, list(predictions)))
    result.run = _run_record(cohort, zoo, protocol, settings, X, y, groups, fold, seeds,
                             parts, random_state, scoring, n_resamples, bootstrap_unit)
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


def _run_record(cohort, zoo, protocol, settings, X, y, groups, fold, seeds, parts,
                random_state, scoring, n_resamples, bootstrap_unit):
    """What a run did, for ``run.json``: cohort, sample, folds, seeds, models, versions."""
    ht = np.asarray(cohort.ht)
    bleeding = np.unique(groups[y == 1])
    models = {}
    for name, (pipeline, grid) in zoo.items():
        final = _final_step(pipeline)
        folds = [parts[name, k] for k in range(settings["n_outer"])]
        n_candidates = len(ParameterGrid(grid))
        steps = [part.get("optimiser_steps") for part in folds]
        models[name] = {
            "family": FAMILIES.get(name, "custom"),
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


def _run_tasks(todo, zoo, prepared, y, groups, fold, settings, scoring, seeds, store, keys,
               parts, n_jobs, backend, scheduler, progress, total):
    """Run the pending (model, fold) tasks, saving each as soon as it arrives."""
    if not todo:
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=total - len(todo), desc="compare", unit="fold",
               disable=not progress, dynamic_ncols=True)
    try:
        with _backend(backend, scheduler, n_jobs) as parallel_jobs:
            tasks = (
                delayed(_tagged)(name, k, prepared[name][0], zoo[name][1], prepared[name][2],
                                 prepared[name][3], prepared[name][1], y, groups, fold, k,
                                 settings["n_inner"], scoring, int(seeds[k + 1]))
                for name, k in todo
            )
            for name, k, part in run_unordered(tasks, parallel_jobs, backend):
                # JSON round trip now, so fresh and resumed parts are the same values
                part = _normalise(part)
                if store is not None:
                    _save_part(store, name, k, keys[name], part)
                parts[name, k] = part
                bar.set_postfix_str(f"{name} fold {k}", refresh=False)
                bar.update()
    finally:
        bar.close()


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
