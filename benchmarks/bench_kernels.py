"""Benchmark: exact SR-KDA, Nystroem SR-KDA and SVC on the same data, side by side.

For each training size the script fits and scores, on one fixed held-out test set:

* ``srkda-exact``: :class:`~sklearn_hemo.discriminant.SRKDAClassifier` with the full
  kernel (``8 n^2`` bytes: skipped where it exceeds ``--max-kernel-gib``);
* ``srkda-nystroem``: the same estimator with ``--n-components`` Nystroem landmarks;
* ``svc``: :class:`sklearn.svm.SVC` (LIBSVM, RBF, ``gamma="scale"``), the paper's SVM
  (skipped above ``--max-svc-samples``; its time there is extrapolated as ``n^2``);
* ``svc-nystroem``: :class:`~sklearn_hemo.svm.ScalableSVC` forced onto its large-n path
  (Nystroem + linear SVM), the substitute used past its sample-size threshold.

It prints fit and predict times, test AUC-ROC and memory: the peak of traced (numpy)
allocations during fit + predict (``tracemalloc``; LIBSVM's own C buffers are invisible to
it), the process's peak resident size, and the theoretical size of the dominant arrays.
Targets (issue 5): at n = 20,000, Nystroem SR-KDA at least 10x faster than SVC, and its
AUC within 0.01 of exact SR-KDA on the same split.

Every (method, size) runs in a fresh process, so peak memory and caches do not leak from
one run into the next; BLAS is limited to ``--threads`` threads (LIBSVM is single-threaded).

The data are synthetic voxels laid out like ``PatchExtractor(inputs="pwi+aif+dwi")``
(618 columns: nine neighbouring 60-point bolus curves time-major, the AIF, two 3x3 DWI
patches), driven by a few latent tissue parameters, with a non-linear, noisy label.
``--data classification`` uses :func:`sklearn.datasets.make_classification` instead.

Both SR-KDA variants use the same ``--alpha`` (default 10): the estimator default, 0.01,
nearly interpolates the training labels, where a rank-``m`` approximation differs from
the exact kernel by its implicit regularisation rather than by its accuracy.

Run ``python benchmarks/bench_kernels.py --sizes 2000 --n-test 1000`` for a smoke test;
the full run is ``--sizes 5000 10000 20000 50000``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

METHODS = ("srkda-exact", "srkda-nystroem", "svc", "svc-nystroem")
TARGET_SPEEDUP = 10.0
TARGET_AUC_GAP = 0.01
TARGET_SIZE = 20_000
MIB = 2**20


def make_curve_dataset(n_samples, random_state=0):
    """Synthetic 618-column voxels in the ``pwi+aif+dwi`` layout, with binary labels.

    Latent per voxel: bolus delay, width and flow, a leakage slope (late signal that does
    not return to baseline) and a DWI injury level. The label is drawn from a logistic
    risk in which leakage, injury, low flow and the leakage x injury interaction matter.
    """
    rng = np.random.default_rng(random_state)
    t = np.arange(60) * 1.8
    delay = rng.uniform(0.0, 10.0, n_samples)
    width = rng.uniform(3.0, 9.0, n_samples)
    flow = rng.lognormal(0.0, 0.5, n_samples)
    leak = rng.beta(2.0, 2.0, n_samples)
    injury = rng.beta(2.0, 3.0, n_samples)
    aif_shift = rng.normal(0.0, 1.0, n_samples)
    logit = (
        6.0 * (leak - 0.5) + 4.0 * (injury - 0.4) - 1.5 * np.log(flow)
        + 4.0 * leak * injury - 1.0
    )
    y = (rng.random(n_samples) < 1.0 / (1.0 + np.exp(-logit))).astype(int)

    def bolus(arrival, w, amplitude):
        s = np.clip(t[None, :] - 15.0 - arrival[:, None], 0.0, None)
        scale = w[:, None] / 3.0
        # Gamma variate with shape 3, normalised to a peak of `amplitude`.
        return amplitude[:, None] * (s / scale) ** 3 * np.exp(-s / scale) / (27 * np.exp(-3.0))

    X = np.empty((n_samples, 618), dtype=np.float32)
    tail = 0.4 * leak[:, None] * np.clip(t[None, :] - 15.0 - delay[:, None], 0.0, None) / t[-1]
    for p in range(9):  # time-major: column 9 * tt + p
        jitter = 1.0 + 0.1 * rng.standard_normal(n_samples)
        curve = bolus(delay + 0.3 * rng.standard_normal(n_samples), width, flow * jitter)
        X[:, p:540:9] = curve + tail + 0.08 * rng.standard_normal((n_samples, 60))
    X[:, 540:600] = bolus(aif_shift, np.full(n_samples, 3.0), np.full(n_samples, 4.0))
    X[:, 540:600] += 0.05 * rng.standard_normal((n_samples, 60))
    X[:, 600:609] = (1.0 - 0.3 * injury)[:, None] + 0.05 * rng.standard_normal((n_samples, 9))
    X[:, 609:618] = (0.5 + 0.8 * injury)[:, None] + 0.05 * rng.standard_normal((n_samples, 9))
    return X, y


def make_data(kind, n_samples, random_state=0):
    if kind == "curves":
        return make_curve_dataset(n_samples, random_state)
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples, n_features=618, n_informative=40, n_redundant=100, class_sep=0.7,
        flip_y=0.05, random_state=random_state,
    )
    return X.astype(np.float32), y


def make_estimator(method, args):
    from sklearn.svm import SVC

    from sklearn_hemo.discriminant import SRKDAClassifier
    from sklearn_hemo.svm import ScalableSVC

    if method == "srkda-exact":
        return SRKDAClassifier(alpha=args.alpha, random_state=0)
    if method == "srkda-nystroem":
        return SRKDAClassifier(alpha=args.alpha, n_components=args.n_components, random_state=0)
    if method == "svc":
        return SVC(C=args.C)
    return ScalableSVC(C=args.C, max_exact_samples=0, n_components=args.n_components,
                       random_state=0)


def theoretical_mib(method, n_train, n_features, args):
    """Size of the dominant float64 arrays of each method, block buffers included (MiB)."""
    from sklearn_hemo.discriminant import _GAMMA_SAMPLE_SIZE, SRKDAClassifier

    m = min(args.n_components, n_train)
    rows = SRKDAClassifier()._rows_per_block  # rows per block under working_memory
    # Cai's default width: distances within a sample of at most 3000 training rows.
    gamma_sample = 8 * min(n_train, _GAMMA_SAMPLE_SIZE) ** 2
    if method == "srkda-exact":
        # K and X_fit_, plus one block of kernel rows being computed.
        block = 24 * min(n_train, rows(n_train)) * n_train
        return (8 * (n_train * n_train + n_train * n_features) + block) / MIB
    if method == "srkda-nystroem":
        # Phi^T Phi, the normalisation, the landmarks, plus one block of features.
        block = 24 * min(n_train, rows(m)) * m
        return (8 * (2 * m * m + m * n_features) + max(block, gamma_sample)) / MIB
    if method == "svc-nystroem":
        # Nystroem.transform of the whole training set: Phi and the kernel temporaries.
        return 8 * (3 * n_train * m + m * m) / MIB
    return 200.0  # LIBSVM kernel cache (cache_size), plus support vectors


def run_one(method, n_train, data_path, args):
    """Fit and score one method in this (fresh) process; return timings and memory."""
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    data = np.load(data_path, mmap_mode="r")
    X_test, y_test = np.asarray(data["X"][: args.n_test]), np.asarray(data["y"][: args.n_test])
    rows = slice(args.n_test, args.n_test + n_train)
    X_train, y_train = np.asarray(data["X"][rows]), np.asarray(data["y"][rows])
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    estimator = make_estimator(method, args)
    with threadpool_limits(args.threads):
        tracemalloc.start()
        start = time.perf_counter()
        estimator.fit(X_train, y_train)
        fitted = time.perf_counter()
        scores = estimator.decision_function(X_test)
        done = time.perf_counter()
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {
        "method": method,
        "n_train": n_train,
        "fit_s": fitted - start,
        "predict_s": done - fitted,
        "auc": float(roc_auc_score(y_test, scores)),
        "traced_peak_mib": traced_peak / MIB,
        # Linux reports ru_maxrss in KiB.
        "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "theory_mib": theoretical_mib(method, n_train, X_train.shape[1], args),
    }


def skip_reason(method, n_train, args, results):
    if method == "srkda-exact" and 8 * n_train**2 / 2**30 > args.max_kernel_gib:
        return f"skipped: K needs {8 * n_train**2 / 2**30:.2f} GiB > --max-kernel-gib"
    if method == "svc" and n_train > args.max_svc_samples:
        done = [r for r in results if r["method"] == "svc" and "fit_s" in r]
        if done:
            last = done[-1]
            guess = (last["fit_s"] + last["predict_s"]) * (n_train / last["n_train"]) ** 2
            return f"skipped: > --max-svc-samples (~{guess:.0f} s if n^2)"
        return "skipped: > --max-svc-samples"
    return None


def print_row(r):
    if "fit_s" not in r:
        print(f"{r['n_train']:>7} {r['method']:<15} {r['note']}", flush=True)
        return
    print(
        f"{r['n_train']:>7} {r['method']:<15} {r['fit_s']:9.2f} {r['predict_s']:9.2f} "
        f"{r['fit_s'] + r['predict_s']:9.2f} {r['auc']:7.4f} {r['traced_peak_mib']:10.0f} "
        f"{r['rss_peak_mib']:9.0f} {r['theory_mib']:9.0f}",
        flush=True,
    )


def summarise(results):
    """Speed-up and AUC-gap ratios per size, and the issue's targets at n = 20,000."""
    by = {(r["method"], r["n_train"]): r for r in results if "fit_s" in r}
    total = {k: r["fit_s"] + r["predict_s"] for k, r in by.items()}
    lines = []
    for n in sorted({r["n_train"] for r in results}):
        parts = []
        if ("svc", n) in total and ("srkda-nystroem", n) in total:
            speedup = total["svc", n] / total["srkda-nystroem", n]
            parts.append(f"SVC / Nystroem SR-KDA time = {speedup:.1f}x")
            if n == TARGET_SIZE:
                ok = "met" if speedup >= TARGET_SPEEDUP else "MISSED"
                parts[-1] += f" (target >= {TARGET_SPEEDUP:.0f}x: {ok})"
        if ("srkda-exact", n) in total and ("srkda-nystroem", n) in total:
            speedup = total["srkda-exact", n] / total["srkda-nystroem", n]
            gap = abs(by["srkda-exact", n]["auc"] - by["srkda-nystroem", n]["auc"])
            parts.append(f"exact / Nystroem SR-KDA time = {speedup:.1f}x, |AUC gap| = {gap:.4f}")
            if n == TARGET_SIZE:
                ok = "met" if gap <= TARGET_AUC_GAP else "MISSED"
                parts[-1] += f" (target <= {TARGET_AUC_GAP}: {ok})"
        if parts:
            lines.append(f"n = {n}: " + "; ".join(parts))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000, 50000])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--n-components", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--data", choices=["curves", "classification"], default="curves")
    parser.add_argument("--max-kernel-gib", type=float, default=4.0)
    parser.add_argument("--max-svc-samples", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, seconds: checks that the script runs (the tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.n_test, args.n_components = [300], 200, 50

    X, y = make_data(args.data, args.n_test + max(args.sizes))
    print(f"data: {args.data}, {X.shape[1]} features, test n = {args.n_test}, "
          f"positive rate {y.mean():.2f}; BLAS threads = {args.threads}")
    print(f"{'n':>7} {'method':<15} {'fit_s':>9} {'pred_s':>9} {'total_s':>9} {'AUC':>7} "
          f"{'traced_MiB':>10} {'rss_MiB':>9} {'theory':>9}")
    results = []
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "data.npz"
        np.savez(data_path, X=X, y=y)
        del X, y
        for n_train in sorted(args.sizes):
            for method in args.methods:
                reason = skip_reason(method, n_train, args, results)
                if reason:
                    result = {"method": method, "n_train": n_train, "note": reason}
                else:
                    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                        result = pool.submit(run_one, method, n_train, data_path, args).result()
                results.append(result)
                print_row(result)
    for line in summarise(results):
        print(line)
    if args.json is not None:
        from sklearn_hemo._io import atomic_write_text

        atomic_write_text(args.json, json.dumps({"args": vars(args) | {"json": str(args.json)},
                                                 "results": results}, indent=2))


if __name__ == "__main__":
    main()
