"""The plan of a comparison, before it runs: tasks, fits, time and memory per model.

:func:`plan_comparison` (also ``compare_models(..., dry_run=True)`` and
``sklearn-hemo compare --dry-run``) draws the same voxel sample and the same outer folds
as :func:`~sklearn_hemo.model_selection.compare_models` would, counts the work, and times
a short calibration on this machine. The steps, each a function below:

* **Fits** (``_count_row``). A (model, outer fold) task with ``c > 1`` grid candidates
  runs ``c x n_inner`` inner fits and one refit; a single candidate is one fit. A model
  runs ``n_outer`` tasks. Its scaling law is the zoo record's (``ZooRow.scaling_law``),
  else read from the estimator's class.
* **Calibration** (``_calibrate_row``). Every grid candidate is fitted on ``n_cal`` and
  ``2 n_cal`` voxels of a few patients, warm and single-threaded as tasks run them, and
  scores ``2 n_cal`` voxels. Training budgets that cost linearly are cut (the LSTM's
  ``max_epochs`` to 2 or ``max_steps`` to 20, a forest's ``n_estimators`` to 20) and scaled
  back, the first candidate also fitted once with its whole budget so that only the
  per-epoch or per-tree part scales (a step budget is projected whole: an upper bound
  when early stopping ends the fit sooner). Fits shorter than
  :data:`_REPEAT_BELOW_SECONDS` are timed three times (the median); while the larger
  fit stays under :data:`_MIN_FIT_SECONDS`, both sizes double (at most
  :data:`_MAX_DOUBLINGS` times). A row that reads images is also timed with an empty
  patient cache (:data:`_COLD_READS` fits).
* **Scaling law.** Time is ``a + b W(n)`` with ``W`` the documented work of the estimator
  (:data:`SCALING_LAWS`): linear (LSTM, least squares), ``n log n`` (forests), ``n^2``
  (LIBSVM's exact SVC), ``n^3`` (exact SR-KDA kernel), ``n m^2 + m^3`` (``m`` Nystroem
  landmarks).
* **Side by side.** With ``n_jobs > 1`` a row's round of calibration fits is timed again
  in ``n_jobs`` loky workers at once (at least :data:`_PROBE_SECONDS`, at most
  :data:`_MAX_PROBE_ROUNDS` rounds), and its tasks are multiplied by that time over the
  calibration's own round (``_contention``).
* **Projection** (``_project``, ``_schedule``). Features of a stateless first step are
  projected linearly in the patients; tasks are dealt to ``n_jobs`` workers in
  submission order, as joblib does; the total is the features' time plus the last
  worker's finishing time.
* **Memory** (``_task_memory``). The resident memory a calibration fit adds, extrapolated
  with the law's memory work (times the trees of a forest), plus the task's inputs, the
  patient cache a task that reads images fills (at most
  :data:`~sklearn_hemo._cache.CACHE_BYTES`) and a fresh worker; a worker's peak keeps
  every row's first-call memory and the caches.

Why each rule is there (the measurements that asked for it) is in
``benchmarks/plan_calibration_notes.md``. The projection is as good as the calibration:
on a machine shared with other jobs, the calibration and the run see different loads.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np
import sklearn
from sklearn.base import clone
from sklearn.model_selection import ParameterGrid

from .._cache import CACHE
from ..datasets import Cohort
from ..utils._training import final_step
from ..utils.fixes import Interval, StrOptions, validate_params
from ._setup import (
    _consumes_groups,
    _format_seconds,
    _n_workers,
    _positive_scores,
    _prepare,
    make_setup,
)
from ._zoo import PROTOCOLS, ZOO

__all__ = ["ComparisonPlan", "plan_comparison", "SCALING_LAWS"]

#: Documented cost model of each estimator family: time and memory as functions of the
#: training voxels ``n`` (``m``: Nystroem landmarks, capped at ``n``).
SCALING_LAWS = {
    "linear": "time a + b n (LSTM: per epoch; least squares: n d^2); memory linear in n",
    "n log n": "random forest: time a + b n log n per tree; memory linear in n x trees",
    "n^2": "LIBSVM exact SVC: time a + b n^2; memory linear in n (bounded kernel cache)",
    "n^3": "exact kernel (SR-KDA): time a + b n^3; memory n^2",
    "nystroem": "Nystroem landmarks: time a + b (n m^2 + m^3); memory n m + m^2",
}

# training budgets whose cost is linear: (parameter, calibration value, scales memory).
# A network trained on a step budget (max_steps) is calibrated on 20 steps and scaled to
# max_steps, in place of its epochs: an upper bound when it stops early
_BUDGETS = {"max_epochs": (2, False), "n_estimators": (20, True), "max_steps": (20, False)}

#: A calibration fit shorter than this (wall seconds) is timed three times (the median).
_REPEAT_BELOW_SECONDS = 0.5
#: While the larger calibration fit is shorter than this, both sizes double...
_MIN_FIT_SECONDS = 0.5
#: ... at most this many times.
_MAX_DOUBLINGS = 3
#: Cold fits (empty patient cache) of a row that reads images, averaged.
_COLD_READS = 2
#: Seconds of fitting in each worker per side-by-side measurement (a memory-bound fit
#: varies by 25 % from one minute to the next on a shared machine; a longer probe averages
#: more of it)...
_PROBE_SECONDS = 10.0
#: ... in at most this many rounds (one fit per candidate).
_MAX_PROBE_ROUNDS = 30


def _law_kind(name, estimator):
    """The scaling law of a row: the zoo's record (``ZooRow.scaling_law``) for a zoo row,
    else read from the estimator's class (a pipeline of the caller's own)."""
    from sklearn.svm import SVC

    from ..discriminant import SRKDAClassifier
    from ..svm import ScalableSVC
    from ..utils.fixes import BaseForest

    if name in ZOO:
        return ZOO[name].scaling_law
    if isinstance(estimator, (ScalableSVC, SVC)):
        return "svm"
    if isinstance(estimator, SRKDAClassifier):
        return "srkda"
    if isinstance(estimator, BaseForest):
        return "n log n"
    return "linear"


def _law(estimator, n_target, name=None):
    """``(law, calibration params)`` of an estimator fitted on ``n_target`` voxels."""
    kind = _law_kind(name, estimator)
    if kind == "svm":
        max_exact = getattr(estimator, "max_exact_samples", None)
        if max_exact is None or n_target <= max_exact:  # LIBSVM's SVC
            return "n^2", {}
        # calibrate the Nystroem path even on small samples
        return ("nystroem", estimator.n_components), {"max_exact_samples": 1}
    if kind == "srkda":
        if estimator.n_components is None:
            return "n^3", {}
        return ("nystroem", estimator.n_components), {}
    return kind, {}


def _work(law, n):
    """Time work ``W(n)`` and memory work of a law at ``n`` voxels."""
    n = float(max(n, 1))
    if isinstance(law, tuple):  # ("nystroem", m)
        m = min(float(law[1]), n)
        return n * m * m + m ** 3, n * m + m * m
    if law == "n log n":
        return n * math.log2(max(n, 2.0)), n
    if law == "n^2":
        return n * n, n
    if law == "n^3":
        return n ** 3, n * n
    return n, n


def _law_name(law):
    return f"nystroem(m={law[1]})" if isinstance(law, tuple) else law


def _affine(points):
    """``(a, b)`` of ``t = a + b w`` through two ``(w, t)`` points, both >= 0.

    When noise makes the larger size look cheaper, the cost is taken as proportional to
    the work of the larger size (no overhead), which errs towards more time, not less.
    When the cost grows faster than the law between the two sizes (the line would cross
    zero above ``w = 0``), it is taken as proportional through the larger size, the one
    nearer the tasks' sizes.
    """
    (w1, t1), (w2, t2) = points
    if w2 > w1 and t2 > t1:
        b = (t2 - t1) / (w2 - w1)
        a = t1 - b * w1
        if a >= 0:
            return a, b
        return 0.0, t2 / w2
    return 0.0, max(t2, t1) / max(w2, 1e-300)


def _rss_bytes():
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()
    except OSError:  # not Linux: the peak so far is the best there is
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None elsewhere (looked up once per process: finding
    the C library runs ``ldconfig``)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without it)
        return None


def _release_free_memory():
    """Hand the C allocator's free pages back to the system (glibc only; else nothing).

    A warm process reuses the memory earlier work freed without growing its resident
    size, so a fit measured after other fits would seem to cost nothing; a fresh worker
    has no such pages to reuse.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class _PeakRSS:
    """Resident memory added while the block runs (polled every 5 ms)."""

    def __enter__(self):
        self.before = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        self.added = max(self.peak - self.before, 0)


def _worker_baseline_bytes():
    """Peak resident memory of a fresh Python that imports what a task imports."""
    package_root = str(Path(__file__).resolve().parents[2])
    code = ("import resource, sys; import sklearn_hemo.model_selection, sklearn_hemo.neural, "
            "sklearn_hemo.preprocessing, sklearn.ensemble, torch; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                       os.environ.get("PYTHONPATH")]))}
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=300, env=env, check=True)
        value = int(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return value * (1 if sys.platform == "darwin" else 1024)


def _calibration_rows(y, groups, n_cal, rng):
    """``2 n_cal`` sampled rows from as few patients as give both classes."""
    need = 2 * n_cal
    patients = rng.permutation(np.unique(groups))
    chosen, n_pos, n_neg = [], 0, 0
    for patient in patients:
        rows = groups == patient
        chosen.append(patient)
        n_pos += int(y[rows].sum())
        n_neg += int((1 - y[rows]).sum())
        if n_pos >= need // 4 and n_neg >= need // 4 and n_pos + n_neg >= need:
            break
    rows = np.flatnonzero(np.isin(groups, chosen))
    pos, neg = rows[y[rows] == 1], rows[y[rows] == 0]
    n_p = min(len(pos), max(need // 2, need - len(neg)))
    picked = np.concatenate([rng.choice(pos, n_p, replace=False),
                             rng.choice(neg, min(len(neg), need - n_p), replace=False)])
    return rng.permutation(picked), len(chosen)


def _fit_timed(pipeline, params, inputs, y, groups, cohort, cohort_params, cold=False,
               repeat=False):
    """Fit a clone on ``inputs`` as a task would (one BLAS thread): ``(model, (wall, CPU)
    seconds, added resident bytes)``. ``cold``: with an empty per-patient cache, as in a fresh
    worker. ``repeat``: a fit shorter than :data:`_REPEAT_BELOW_SECONDS` is timed three times,
    and the median of each clock (and the largest memory) is returned."""
    from threadpoolctl import threadpool_limits

    from .._cache import clear_cache

    def fit_once():
        model = clone(pipeline).set_params(**params)
        if cohort_params:
            model.set_params(**dict.fromkeys(cohort_params, cohort))
        if cold:
            clear_cache()
        fit_params = {"groups": groups} if _consumes_groups(model) else {}
        _release_free_memory()
        with _PeakRSS() as rss:
            start, cpu = time.perf_counter(), time.process_time()
            model.fit(inputs, y, **fit_params)
            seconds = (time.perf_counter() - start, time.process_time() - cpu)
        return model, seconds, rss.added

    with sklearn.config_context(enable_metadata_routing=True), threadpool_limits(limits=1):
        with warnings.catch_warnings():
            # tiny calibration fits may not converge; the time is what counts here
            warnings.simplefilter("ignore")
            runs = [fit_once()]
            if repeat and runs[0][1][0] < _REPEAT_BELOW_SECONDS:
                runs += [fit_once(), fit_once()]
    return runs[-1][0], _median_clocks(run[1] for run in runs), max(run[2] for run in runs)


def _median_clocks(timings):
    """``(wall, CPU)`` medians of ``(wall, CPU)`` timings."""
    timings = list(timings)
    return tuple(float(np.median([t[clock] for t in timings])) for clock in (0, 1))


def _score_seconds(model, inputs):
    start, cpu = time.perf_counter(), time.process_time()
    with sklearn.config_context(enable_metadata_routing=True):
        _positive_scores(model, inputs)
    return time.perf_counter() - start, time.process_time() - cpu


class _CalibrationSamples:
    """The calibration's voxels at each size, and their features (computed once per size
    and extractor, as ``compare_models`` computes them once per run)."""

    def __init__(self, X, y, groups, cohort, seed, precompute):
        self.X, self.y, self.groups, self.cohort = X, y, groups, cohort
        self.seed, self.precompute = seed, precompute
        self._rows, self._features = {}, {}

    def rows(self, n_cal):
        """``2 n_cal`` rows (fewer if the sample has fewer) and the patients they are from;
        the same seed at every size, so a larger size takes the patients of a smaller one
        first."""
        if n_cal not in self._rows:
            self._rows[n_cal] = _calibration_rows(self.y, self.groups, n_cal,
                                                  np.random.RandomState(self.seed))
        return self._rows[n_cal]

    def prepare(self, pipeline, grid, n_cal):
        """``(rows, prepared pipeline, inputs, cohort, cohort params, feature seconds)``;
        the seconds are those of features no earlier row shared (else 0)."""
        rows, _ = self.rows(n_cal)
        cache = self._features.setdefault(n_cal, {})
        keys_before, start = set(cache), time.perf_counter()
        prepared, inputs, held, cohort_params = _prepare(
            pipeline, grid, self.X[rows], self.cohort, cache, self.precompute)
        seconds = time.perf_counter() - start if set(cache) != keys_before else 0.0
        return rows, prepared, inputs, held, cohort_params, seconds


def _probe_fits(pipeline, candidates, inputs, y, groups, cohort, cohort_params, rounds,
                cold=False):
    """Median over ``rounds`` of the (wall, CPU) seconds of one fit of every candidate
    (a list of parameter dicts), in this process (a worker's)."""
    def one_round():
        clocks = [_fit_timed(pipeline, params, inputs, y, groups, cohort, cohort_params,
                             cold=cold)[1] for params in candidates]
        return tuple(sum(c[clock] for c in clocks) for clock in (0, 1))

    return _median_clocks(one_round() for _ in range(rounds))


def _contention(fit_args, n_workers, rounds=3, cold=False, reference=None):
    """``(wall, CPU)`` factor of a row's fits when ``n_workers`` copies run at once.

    A model's tasks are submitted one after another, so its tasks mostly run beside each
    other: on this machine's shared caches and memory bandwidth a fit can be much slower
    than alone (LIBSVM's kernel rows stream the training features; an LSTM batch fits in
    cache). ``fit_args``: as :func:`_probe_fits`'s, the candidates a list of parameter
    dicts. Timed in ``n_workers`` loky workers: one warm-up fit of the first candidate
    (start-up, first-call costs, a row's patient cache), then ``rounds`` rounds of one fit
    per candidate in every worker at once, summed over the candidates so that each weighs
    as much as it costs, as in a task's mix of fits.

    ``reference``: the ``(wall, CPU)`` seconds of one such round in the calibration (the
    times the projection is built on); the factor is the side-by-side time over it, and
    may be below 1 when the calibration's round ran slow. Dividing by the same fits timed
    alone in a worker instead multiplied two noisy clocks: LIBSVM on PWI patches took
    2.6 s and 4.0 s alone a minute apart, 4.1-4.4 s side by side. None: the round is also
    timed in one worker alone and the factor is the ratio, never below 1 (a row whose
    fits read images: ``cold``, each timed fit starts from an empty patient cache, and
    its reference is not a round of these fits).
    1 for one worker.
    """
    if n_workers <= 1:
        return (1.0, 1.0)
    from joblib import Parallel, delayed

    probe = delayed(_probe_fits)
    pipeline, candidates, *data = fit_args
    with Parallel(n_jobs=n_workers, backend="loky") as parallel:
        parallel(probe(pipeline, candidates[:1], *data, 1) for _ in range(n_workers))
        # a round alone in a worker, when there is no calibration round to compare with;
        # then a slow-down, which is at least 1
        floor = 1.0 if reference is None else 0.0
        if reference is None:
            reference = parallel(probe(*fit_args, rounds, cold) for _ in range(1))[0]
        together = parallel(probe(*fit_args, rounds, cold) for _ in range(n_workers))
    together = _median_clocks(together)
    return tuple(max(floor, together[clock] / reference[clock]) if reference[clock] > 0
                 else 1.0 for clock in (0, 1))


def _calibrate_row(pipeline, grid, candidates, cut, samples, n_cal, n_max,
                   whole_params=None, n_workers=1):
    """Time one row's calibration fits (module notes): the first candidate at ``n_cal``
    and ``2 n_cal``, doubling both while the larger fit is cheap, then every other
    candidate at the two final sizes. ``cut``: the cut training budgets and regime
    parameters; ``whole_params``: the regime parameters with the whole budgets (None: no
    budget was cut). Returns what :func:`_project` and the memory model read."""
    level, levels = n_cal, []

    def fit_candidate(i, times, memory, scoring=None):
        # a candidate at both sizes: how its cost grows with the voxels is its own
        # (LIBSVM's iterations grow faster with a larger C); then, unless scoring is
        # None, its scoring, which depends on the fitted model (a SVC's support vectors)
        for rows_ in (small, np.arange(len(rows))):
            model, clocks, added = _fit_timed(prepared, {**candidates[i], **cut},
                                              inputs[rows_], y_cal[rows_], g_cal[rows_],
                                              held, cohort_params, repeat=cold is None)
            times.append((i, len(rows_), clocks))
            memory.append((len(rows_), added))
        if scoring is not None:
            scoring.append(_score_seconds(model, inputs))

    while True:
        rows, prepared, inputs, held, cohort_params, seconds = samples.prepare(
            pipeline, grid, level)
        y_cal, g_cal = samples.y[rows], samples.groups[rows]
        small = np.arange(min(level, len(rows)))
        first_params = {**candidates[0], **cut}
        if level == n_cal:
            feature_seconds = seconds
            cold, cache_per_patient, warmup, cal_bytes = None, 0, None, None
            cal_patients = np.unique(g_cal).size
            if cohort_params:
                # the tasks read images themselves: a fresh worker reads each training
                # patient once (then its cache serves), so time that read on the
                # calibration patients, and weigh what it leaves in the cache
                # (twice: one cold read of two patients varied by 15 % either way)
                cold = _median_clocks(
                    _fit_timed(prepared, first_params, inputs, y_cal, g_cal, held,
                               cohort_params, cold=True)[1] for _ in range(_COLD_READS))
                cache_per_patient = CACHE.nbytes / max(cal_patients, 1)
                cal_bytes = sum(_image_bytes(samples.cohort[g]) for g in np.unique(g_cal))
            else:
                # untimed warm-up: first-call costs (torch kernels, lazy imports) are paid
                # once per worker, not per fit; they are charged to the first task on each
                # worker
                _, warmup, warmup_added = _fit_timed(prepared, first_params, inputs[small],
                                                     y_cal[small], g_cal[small], held,
                                                     cohort_params)
        # scored here only where it is not fitted again below (a row that reads images
        # has one size and no warm refit); the doubling levels' scoring would be dropped
        times, memory, scoring = [], [], []
        fit_candidate(0, times, memory, scoring if cold is not None else None)
        if level == n_cal:
            one_off = (np.zeros(2) if warmup is None
                       else np.maximum(np.asarray(warmup) - np.asarray(times[0][2]), 0.0))
            one_off_bytes = 0 if warmup is None else max(warmup_added - memory[0][1], 0)
        big_seconds = times[1][2][0]
        levels.append([len(small), len(rows), round(big_seconds, 4)])
        # a cheap fit is timed again on twice the voxels (module notes); a row that reads
        # images is not (its fits are the reading)
        if (cohort_params or big_seconds >= _MIN_FIT_SECONDS
                or len(levels) > _MAX_DOUBLINGS or 4 * level > n_max
                or len(rows) < 2 * level):
            break
        level *= 2
    if cold is None:
        # the first candidate again, now warm at the final sizes: the first fit at a new
        # size pays allocations the tasks pay once, and a fit just over the repeat
        # threshold is timed once (the paper LSTM's first fit at 1,600 voxels took 0.51 s,
        # the other learning rates, of the same cost, 0.32-0.34 s); its memory stays that
        # of the first fits
        times = []
        fit_candidate(0, times, [], scoring)
    for i in range(1, len(candidates)):
        fit_candidate(i, times, memory, scoring)
    # inner folds score every candidate alike; the refit scores an average one
    score_per_voxel = np.mean(scoring, axis=0) / len(rows)
    whole = None
    if whole_params is not None:
        # the first candidate with its whole training budget at the larger size (module
        # notes): what the cut budget saves is then measured, not assumed
        _, clocks, _ = _fit_timed(prepared, {**candidates[0], **whole_params}, inputs,
                                  y_cal, g_cal, held, cohort_params, repeat=True)
        whole = (len(rows), clocks)
    if cold is None:
        # every candidate at the larger size, as the tasks mix them
        round_clocks = [sum(c[clock] for i, n, c in times if n == len(rows))
                        for clock in (0, 1)]
        contention = _contention((prepared, [{**c, **cut} for c in candidates], inputs,
                                  y_cal, g_cal, held, cohort_params), n_workers,
                                 rounds=_probe_rounds(round_clocks[0]),
                                 reference=round_clocks)
    else:  # one cold fit of the smaller size: reading patients is slow
        contention = _contention((prepared, [first_params], inputs[small], y_cal[small],
                                  g_cal[small], held, cohort_params), n_workers, rounds=1,
                                 cold=True)
    return {"times": times, "memory": memory, "whole_budget": whole, "n_cal": len(small),
            "n_big": len(rows), "contention": contention,
            "score_per_voxel": score_per_voxel, "one_off": one_off,
            "one_off_bytes": one_off_bytes, "cold": cold,
            "cal_patients": np.unique(g_cal).size, "cache_per_patient": cache_per_patient,
            "cal_bytes": cal_bytes,
            "inputs": inputs, "levels": levels, "feature_seconds": feature_seconds}


def _probe_rounds(round_seconds):
    """Rounds (one fit per candidate) per side-by-side measurement: at least 3 (a median),
    and at least :data:`_PROBE_SECONDS` of fitting, so that the workers' fits overlap for
    most of it (loky starts them tens of milliseconds apart)."""
    if round_seconds <= 0:
        return _MAX_PROBE_ROUNDS
    return int(np.clip(math.ceil(_PROBE_SECONDS / round_seconds), 3, _MAX_PROBE_ROUNDS))


def _image_bytes(patient):
    """Bytes of a patient's images once decoded, from their headers: what a task that
    reads the patient decodes (mostly the 4D PWI)."""
    total = 0
    for name in ("pwi", "dwi_b0", "dwi_b1000"):
        image = getattr(patient, name)
        if image is not None:
            total += math.prod(image.shape) * image.get_data_dtype().itemsize
    return int(total)


def _budget_params(estimator, prefix):
    """Calibration values of linear training budgets, and the factors to scale back:
    the fit time's, and the fitted model's size (memory and scoring time: trees)."""
    params, time_factor, memory_factor = {}, 1.0, 1.0
    steps = getattr(estimator, "max_steps", None)
    for name, (value, scales_memory) in _BUDGETS.items():
        full = getattr(estimator, name, None)
        if name == "max_epochs" and isinstance(steps, int):
            continue  # the step budget sets the length (its epochs are only a cap)
        if name == "max_steps" and isinstance(full, int):
            params[prefix + "min_steps"] = 0  # the cut budget may not wait for min_steps
        if isinstance(full, int) and full > value:
            params[prefix + name] = value
            time_factor *= full / value
            if scales_memory:
                memory_factor *= full / value
    return params, time_factor, memory_factor


def _schedule(durations, n_workers):
    """Finishing time of tasks dealt in order to the first free of ``n_workers``."""
    free = [0.0] * max(1, n_workers)
    for seconds in durations:
        i = int(np.argmin(free))
        free[i] += float(seconds)
    return float(max(free))


def _project(clock, cal, candidates, n_train, n_test, n_inner, n_workers, train_bytes):
    """Seconds of each task of one model on ``clock`` (0: wall, 1: CPU), from its
    calibration ``cal``; ``train_bytes``: each task's training patients' image bytes."""
    law, times = cal["law"], cal["times"]
    searched = len(candidates) > 1
    # each candidate's cut-budget fits at the two calibration sizes
    cut = [{n: c[clock] for i_, n, c in times if i_ == i} for i in range(len(candidates))]
    units = cal["time_factor"]  # whole budget / cut budget
    fixed = 0.0
    if cal.get("whole_budget") is not None:
        # t = F + B u: the cut and the whole budget at one size separate what a fit pays
        # once (F: building the network, the first epoch's allocations) from what it pays
        # per epoch or tree (u), which alone scales with the budget; F is the first
        # candidate's, and is taken as every candidate's
        n_whole, clocks = cal["whole_budget"]
        per_cut = max(clocks[clock] - cut[0][n_whole], 0.0) / (units - 1)
        fixed = max(cut[0][n_whole] - per_cut, 0.0)
    # each candidate's law (overhead / slope split of its budget-dependent part) from its
    # own two sizes
    curves = [_affine([(_work(law, n)[0], max(t - fixed, 0.0)) for n, t in c.items()])
              for c in cut]

    def fit_seconds(n):
        """Seconds of one fit of every candidate on ``n`` voxels, whole budgets."""
        return sum(fixed + units * (a + b * _work(law, n)[0]) for a, b in curves)

    per_task = []
    for k, (n_tr, n_te) in enumerate(zip(n_train, n_test, strict=True)):
        inner = n_tr * (n_inner - 1) / n_inner
        # inner: every candidate on every inner split; refit: an average candidate
        seconds = (n_inner * fit_seconds(inner) + fit_seconds(n_tr) / len(curves)
                   if searched else fit_seconds(n_tr))
        # inner folds score n_tr in total per candidate; the refit scores the test part
        n_scored = (n_tr * len(candidates) if searched else 0) + n_te
        factor = cal["size_factor"] * (n_tr / cal["n_big"] if law == "n^2" else 1.0)
        seconds += n_scored * cal["score_per_voxel"][clock] * factor
        if k < n_workers:  # each worker's first task of this model
            seconds += cal["one_off"][clock]
        if cal["cold"] is not None:
            # reading: (cold - warm) per image byte of the calibration patients, for the
            # training patients' bytes (patients differ: series of 45 to 85 frames)
            warm = [c[clock] for i, n, c in times if i == 0 and n == cal["n_big"]][0]
            per_byte = max(cal["cold"][clock] - warm, 0.0) / max(cal["cal_bytes"], 1)
            seconds += per_byte * train_bytes[k]
        # the row's tasks run side by side on n_jobs workers, which share caches and
        # memory bandwidth: measured, not assumed (module notes)
        per_task.append(float(seconds * cal.get("contention", (1.0, 1.0))[clock]))
    return per_task


class ComparisonPlan:
    """What a comparison will do and its projected time and memory, before it runs.

    Returned by :func:`plan_comparison` and ``compare_models(..., dry_run=True)``;
    printed as a table by ``sklearn-hemo compare --dry-run``, which also writes
    :meth:`to_dict` as ``plan.json``.

    Parameters
    ----------
    rows : list of dict
        One per model: ``model``, ``law``, ``tasks``, ``candidates``,
        ``fits_per_task``, ``fits``, ``train_voxels``, ``calibration`` (sizes and
        seconds, the sizes tried, the whole-budget fit), ``seconds_per_task``,
        ``seconds`` (all its tasks on one worker), ``peak_task_mb`` and its parts
        ``peak_task_parts_mb``. Times and memory are None without calibration.
    settings : dict
        ``protocol``, ``n_outer``, ``n_inner``, ``n_samples`` (voxels actually sampled),
        ``n_patients``, ``n_jobs``, ``random_state``, ``device``.
    totals : dict
        ``tasks``, ``fits``, ``features_seconds``, ``task_seconds`` (sum over tasks),
        ``projected_seconds`` (for ``n_jobs`` workers), ``peak_worker_mb`` and its parts
        ``peak_worker_parts_mb`` (a fresh worker, every row's first-call memory, the
        patient caches, the largest task's inputs and fit).
    machine : dict
        Where the calibration ran: platform, CPUs, load average, calibration seconds.

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.model_selection import plan_comparison
    >>> cohort = make_stroke_cohort(n_patients=8, shape=(32, 32, 2), ht_prevalence=0.6,
    ...                             n_frames=40, random_state=0)
    >>> plan = plan_comparison(cohort, ["random-forest"], n_outer=3, n_inner=2,
    ...                        n_samples=200, calibrate=False)
    >>> row = plan.rows[0]
    >>> row["candidates"], row["fits_per_task"], row["fits"]
    (2, 5, 15)
    """

    def __init__(self, rows, settings, totals, machine):
        self.rows = rows
        self.settings = settings
        self.totals = totals
        self.machine = machine

    def to_dict(self):
        """The plan as JSON-ready dict (what ``plan.json`` holds).

        Returns
        -------
        plan : dict
            ``settings``, ``rows``, ``totals``, ``machine`` and ``scaling_laws``.

        Examples
        --------
        >>> plan = ComparisonPlan([], {"n_jobs": 1}, {"tasks": 0}, {})
        >>> sorted(plan.to_dict())
        ['machine', 'rows', 'scaling_laws', 'settings', 'totals']
        """
        return {"settings": self.settings, "rows": self.rows, "totals": self.totals,
                "machine": self.machine, "scaling_laws": SCALING_LAWS}

    def write(self, path):
        """Write :meth:`to_dict` as JSON to ``path`` (atomically).

        Parameters
        ----------
        path : path-like
            File to write, e.g. ``out/plan.json``.

        Returns
        -------
        path : Path
            The file written.

        Examples
        --------
        >>> plan = ComparisonPlan([], {"n_jobs": 1}, {"tasks": 0}, {})
        >>> plan.write("/tmp/plan.json")  # doctest: +SKIP
        """
        from .._io import atomic_write_text

        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def __str__(self):
        def fmt_s(value):
            if value is None:
                return "-"
            return f"{value:.1f} s" if value < 60 else _format_seconds(value)

        def fmt_mb(value):
            return "-" if value is None else f"{value:,.0f}"

        s = self.settings
        lines = [
            f"plan: {s['n_patients']} patients, {s['n_samples']} voxels, "
            f"{s['n_outer']} outer x {s['n_inner']} inner folds, protocol {s['protocol']}, "
            f"{s['n_jobs']} worker(s), device {s['device']}",
            f"{'model':20} {'law':16} {'tasks':>5} {'cand':>4} {'fits/task':>9} "
            f"{'fits':>6} {'per task':>12} {'model total':>12} {'peak MB':>8}",
        ]
        for r in self.rows:
            lines.append(
                f"{r['model']:20} {r['law']:16} {r['tasks']:5d} {r['candidates']:4d} "
                f"{r['fits_per_task']:9d} {r['fits']:6d} {fmt_s(r['seconds_per_task']):>12} "
                f"{fmt_s(r['seconds']):>12} {fmt_mb(r['peak_task_mb']):>8}")
        t = self.totals
        lines.append(f"{t['tasks']} tasks, {t['fits']} fits; features (serial, before the "
                     f"tasks) {fmt_s(t['features_seconds'])}; all tasks on one worker "
                     f"{fmt_s(t['task_seconds'])}")
        lines.append(f"projected total on {s['n_jobs']} worker(s): "
                     f"{fmt_s(t['projected_seconds'])}; peak memory per worker "
                     f"{fmt_mb(t['peak_worker_mb'])} MB")
        if self.machine.get("calibration_seconds") is not None:
            lines.append(f"(calibrated in {self.machine['calibration_seconds']:.0f} s on "
                         f"{self.machine['cpus']} CPU(s), load {self.machine['load']}; a "
                         "busier or idler machine changes the times)")
        return "\n".join(lines)

    def __repr__(self):
        return (f"ComparisonPlan({len(self.rows)} models, {self.totals.get('tasks')} tasks, "
                f"projected {self.totals.get('projected_seconds')} s)")


@validate_params(
    {
        # as compare_models (its setup and sample are the same)
        "cohort": [Cohort],
        "models": [None, list, tuple, dict],
        "protocol": [StrOptions(set(PROTOCOLS))],
        "n_outer": [Interval(Integral, 2, None, closed="left"), None],
        "n_inner": [Interval(Integral, 2, None, closed="left"), None],
        "n_samples": [Interval(Integral, 2, None, closed="left"), None],
        "n_jobs": [Integral],
        "device": [str],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "precompute_features": ["boolean"],
        "calibrate": ["boolean"],
        "calibration_samples": [Interval(Integral, 1, None, closed="left"), None],
        "out_dir": [str, os.PathLike, None],
    },
    # the calibration fits the models, which nothing has validated yet: let them check
    # their parameters (as scikit-learn's cross_validate)
    prefer_skip_nested_validation=False,
)
def plan_comparison(cohort, models=None, *, protocol="quick", n_outer=None, n_inner=None,
                    n_samples=None, n_jobs=1, device="cpu", random_state=0,
                    precompute_features=True, calibrate=True, calibration_samples=None,
                    out_dir=None):
    """The plan of :func:`compare_models` without running it: fits, time and memory.

    Draws the voxel sample and the outer folds exactly as :func:`compare_models` does
    with the same arguments, counts the fits of every (model, outer fold) task, and
    projects each model's time and a task's peak memory from a short calibration on this
    machine (see the module notes and :data:`SCALING_LAWS` for the cost model).

    Parameters
    ----------
    cohort : Cohort
        The patients, as for :func:`compare_models`.
    models : list of str, dict or None, default=None
        As for :func:`compare_models`.
    protocol : {"quick", "paper"}, default="quick"
        As for :func:`compare_models`.
    n_outer, n_inner, n_samples : int or None, default=None
        As for :func:`compare_models`.
    n_jobs : int, default=1
        Workers the projection deals the tasks to (-1: every core).
    device : str, default="cpu"
        Torch device of the LSTM rows (the calibration runs on it).
    random_state : int, default=0
        As for :func:`compare_models`.
    precompute_features : bool, default=True
        As for :func:`compare_models`.
    calibrate : bool, default=True
        Time the calibration fits; False only counts tasks and fits (times and memory
        are then None).
    calibration_samples : int or None, default=None
        ``n_cal``, the smaller calibration size (the larger is twice it). None: a quarter
        of the smallest outer training part, between 100 and 400 voxels. A row whose
        fits are cheap doubles both sizes, up to three times (module notes).
    out_dir : path-like or None, default=None
        Write ``plan.json`` there.

    Returns
    -------
    plan : ComparisonPlan
        Rows per model, totals and the machine the calibration ran on.

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.model_selection import plan_comparison
    >>> cohort = make_stroke_cohort(n_patients=8, shape=(32, 32, 2), ht_prevalence=0.6,
    ...                             n_frames=40, random_state=0)
    >>> plan = plan_comparison(cohort, ["linear"], n_outer=3, n_inner=2, n_samples=200)
    >>> plan.rows[0]["fits"], plan.totals["projected_seconds"] > 0
    (3, True)
    """
    started = time.perf_counter()
    ctx = _plan_context(cohort, models, protocol, n_outer, n_inner, n_samples, random_state,
                        device, n_jobs, calibration_samples, precompute_features)
    rows, feature_seconds, durations, cpu_durations = [], 0.0, [], []
    worker = {"first_call": 0.0, "cache": 0.0, "task": 0.0}
    baseline = _worker_baseline_bytes() if calibrate else None
    for name, (pipeline, grid) in ctx.setup.zoo.items():
        row, law, extra, candidates = _count_row(name, pipeline, grid, ctx)
        rows.append(row)
        if not calibrate:
            continue
        seconds, per_task, per_task_cpu = _calibrate_and_project(
            row, pipeline, grid, candidates, law, extra, ctx, baseline, worker)
        feature_seconds += seconds
        durations.extend(per_task)
        cpu_durations.extend(per_task_cpu)
    totals = _plan_totals(rows, calibrate, worker, baseline, feature_seconds, durations,
                          cpu_durations, ctx.n_workers)
    settings = ctx.setup.settings
    plan_settings = {"protocol": protocol, **settings, "n_samples": int(len(ctx.setup.y)),
                     "n_samples_requested": settings["n_samples"],
                     "n_patients": ctx.n_patients, "n_jobs": ctx.n_workers,
                     "random_state": random_state, "device": device,
                     "precompute_features": precompute_features}
    machine = {"platform": platform.platform(), "python": platform.python_version(),
               "cpus": os.cpu_count(),
               "load": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg")
               else None,
               "calibration_seconds": (time.perf_counter() - started) if calibrate else None}
    plan = ComparisonPlan(rows, plan_settings, totals, machine)
    if out_dir is not None:
        plan.write(Path(out_dir) / "plan.json")
    return plan


# -- the steps of plan_comparison ------------------------------------------------------
class _PlanContext:
    """What every row's plan reads: the run's setup (sample, folds, zoo), the training
    sizes of its outer folds, the calibration sample and what a task decodes."""

    def __init__(self, **values):
        self.__dict__.update(values)


def _plan_context(cohort, models, protocol, n_outer, n_inner, n_samples, random_state,
                  device, n_jobs, calibration_samples, precompute_features):
    """The same settings, sample and folds as the run it plans, and the calibration's."""
    setup = make_setup(cohort, models, protocol, n_outer, n_inner, n_samples, random_state,
                       device)
    settings, X, y, groups = setup.settings, setup.X, setup.y, setup.groups
    fold = setup.fold
    n_train = np.array([np.sum(fold != k) for k in range(settings["n_outer"])])
    if calibration_samples is None:
        calibration_samples = int(np.clip(n_train.min() // 4, 100, 400))
    n_cal = int(min(calibration_samples, len(y) // 2))
    samples = _CalibrationSamples(X, y, groups, cohort, setup.seeds[0], precompute_features)
    # what a task that reads images decodes (the sample's groups index the cohort)
    patient_bytes = {g: _image_bytes(cohort[g]) for g in np.unique(groups)}
    return _PlanContext(
        setup=setup, n_inner=settings["n_inner"], n_train=n_train,
        n_test=len(y) - n_train, n_workers=max(1, _n_workers(n_jobs)), n_cal=n_cal,
        samples=samples, cal_patients=samples.rows(n_cal)[1],
        n_patients=int(np.unique(groups).size),
        train_patients=[np.unique(groups[fold != k]).size for k in range(len(n_train))],
        train_bytes=[sum(patient_bytes[g] for g in np.unique(groups[fold != k]))
                     for k in range(len(n_train))])


def _count_row(name, pipeline, grid, ctx):
    """A row's fits (candidates, inner folds, tasks) and its scaling law; no timing."""
    n_inner_, n_train, settings = ctx.n_inner, ctx.n_train, ctx.setup.settings
    candidates = list(ParameterGrid(grid)) or [{}]
    searched = len(candidates) > 1
    fits_per_task = len(candidates) * n_inner_ + 1 if searched else 1
    law, extra = _law(final_step(pipeline), int(n_train.max()), name)
    row = {"model": name, "law": _law_name(law), "tasks": settings["n_outer"],
           "candidates": len(candidates), "fits_per_task": fits_per_task,
           "fits": fits_per_task * settings["n_outer"],
           "train_voxels": int(round(n_train.mean())),
           "inner_train_voxels": (int(round(n_train.mean() * (n_inner_ - 1) / n_inner_))
                                  if searched else None),
           "calibration": None, "seconds_per_task": None, "seconds": None,
           "cpu_seconds": None, "peak_task_mb": None}
    return row, law, extra, candidates


def _calibrate_and_project(row, pipeline, grid, candidates, law, extra, ctx, baseline,
                           worker):
    """Calibrate one row, project its tasks (wall and CPU seconds per task) and bound its
    memory; fills ``row`` and adds the row's share to ``worker``. Returns the features'
    projected seconds and the per-task durations."""
    n_train = ctx.n_train
    step = pipeline.steps[-1][0] + "__" if hasattr(pipeline, "steps") else ""
    budget, time_factor, size_factor = _budget_params(final_step(pipeline), step)
    extra = {step + key: value for key, value in extra.items()}
    whole = None
    # (not for a step budget: early stopping ends the whole-budget fit anywhere, so it
    # cannot separate the once-per-fit part; the projection is then an upper bound)
    if time_factor > 1 and step + "max_steps" not in budget:
        whole = {**extra, **{key: getattr(final_step(pipeline), key[len(step):])
                             for key in budget}}
    cal = _calibrate_row(pipeline, grid, candidates, {**budget, **extra}, ctx.samples,
                         ctx.n_cal, int(n_train.max()), whole,
                         min(ctx.n_workers, len(n_train)))
    feature_seconds = cal.pop("feature_seconds") * ctx.n_patients / ctx.cal_patients
    calibration = {"law": law, **cal, "time_factor": time_factor,
                   "size_factor": size_factor}
    per_task, per_task_cpu = (
        _project(clock, calibration, candidates, n_train, ctx.n_test, ctx.n_inner,
                 ctx.n_workers, ctx.train_bytes)
        for clock in (0, 1))
    parts = _task_memory(cal, law, size_factor, int(n_train.max()), len(ctx.setup.y),
                         max(ctx.train_patients), baseline)
    worker["first_call"] += cal["one_off_bytes"]
    worker["cache"] += parts["patient_cache"]
    worker["task"] = max(worker["task"], parts["inputs"] + parts["fit"])
    row.update({
        "calibration": _calibration_record(cal, budget, time_factor),
        "seconds_per_task": float(np.mean(per_task)),
        "seconds": float(np.sum(per_task)),
        "cpu_seconds": float(np.sum(per_task_cpu)),
        "peak_task_mb": sum(parts.values()) / 2**20,
        "peak_task_parts_mb": {key: value / 2**20 for key, value in parts.items()},
    })
    return feature_seconds, per_task, per_task_cpu


def _task_memory(cal, law, size_factor, n_big, n_samples, max_train_patients, baseline):
    """The parts of a task's peak resident memory, in bytes: a fresh worker, first-call
    costs, the inputs, the fit (the calibration's memory law at the largest training size)
    and the per-patient cache a task that reads images fills."""
    memory = cal["memory"]
    # the most any candidate added at each size (a forest of unpruned trees is larger)
    (n1, m1), (n2, m2) = ((n, max(m for n_, m in memory if n_ == n))
                          for n in (cal["n_cal"], cal["n_big"]))
    ma, mb = _affine([(_work(law, n1)[1], float(m1)), (_work(law, n2)[1], float(m2))])
    if mb < 0:
        # a model does not shrink with more data: the larger size measured less only
        # through the noise of resident memory, so charge the most either size added
        ma, mb = float(max(m1, m2)), 0.0
    # a bound: never below what a calibration fit was seen to add (resident memory
    # reuses pages freed earlier in the process, so one size can read low)
    model_bytes = size_factor * max(ma + mb * _work(law, n_big)[1], float(max(m1, m2)))
    inputs = cal["inputs"]
    item = inputs.dtype.itemsize * (inputs.shape[1] if inputs.ndim == 2 else 1)
    input_bytes = item * (n_samples + n_big)
    # a task that reads images fills the cache with its training patients (bounded)
    cache_bytes = min(cal["cache_per_patient"] * max_train_patients, CACHE.max_bytes)
    return {"worker_baseline": baseline or 0, "first_call": cal["one_off_bytes"],
            "inputs": input_bytes, "fit": model_bytes, "patient_cache": cache_bytes}


def _calibration_record(cal, budget, time_factor):
    """What ``plan.json`` records of a row's calibration."""
    times, cold, memory = cal["times"], cal["cold"], cal["memory"]
    return {"voxels": [cal["n_cal"], cal["n_big"]],
            "patients": cal["cal_patients"],
            "sizes_tried": cal["levels"],
            "fit_seconds": [[n, round(c[0], 4)] for _, n, c in times],
            "fit_cpu_seconds": [[n, round(c[1], 4)] for _, n, c in times],
            "first_call_seconds": [round(float(v), 4) for v in cal["one_off"]],
            "cold_read_seconds": None if cold is None else list(cold),
            "budget": budget, "budget_factor": time_factor,
            "whole_budget_seconds": (
                None if cal["whole_budget"] is None
                else [cal["whole_budget"][0], round(cal["whole_budget"][1][0], 4)]),
            "score_seconds_per_voxel": float(cal["score_per_voxel"][0]),
            "contention": [round(v, 3) for v in cal["contention"]],
            "added_rss_mb": [[n, round(m / 2**20, 1)] for n, m in memory],
            "cache_mb_per_patient": cal["cache_per_patient"] / 2**20}


def _plan_totals(rows, calibrate, worker, baseline, feature_seconds, durations,
                 cpu_durations, n_workers):
    """The plan's totals: tasks, fits, projected time and a worker's peak memory."""
    peak_worker = None
    worker_parts = None
    if calibrate and rows:
        worker["cache"] = min(worker["cache"], CACHE.max_bytes)
        peak_worker = (baseline or 0) + sum(worker.values())
        worker_parts = {"worker_baseline": (baseline or 0) / 2**20,
                        **{key: value / 2**20 for key, value in worker.items()}}
    calibrated = calibrate and bool(rows)
    return {
        "tasks": sum(r["tasks"] for r in rows),
        "fits": sum(r["fits"] for r in rows),
        "features_seconds": feature_seconds if calibrate else None,
        "task_seconds": float(np.sum(durations)) if calibrated else None,
        "task_cpu_seconds": float(np.sum(cpu_durations)) if calibrated else None,
        "projected_seconds": (float(feature_seconds) + _schedule(durations, n_workers)
                              if calibrated else None),
        "peak_worker_mb": None if peak_worker is None else peak_worker / 2**20,
        "peak_worker_parts_mb": worker_parts,
    }
