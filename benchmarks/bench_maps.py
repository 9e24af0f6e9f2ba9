"""Whole-volume risk maps: time against the model's own inference, and peak memory.

One simulated patient of the size of Yu et al. (128 x 128 x 20, 60 frames, TR 1.8 s) is
written in the cohort layout and read back file-backed, as ``sklearn-hemo predict`` reads
a patient. For each model, in one run:

* ``map``: wall time of :func:`sklearn_hemo.maps.predict_risk_map` (chunked features
  read block by block from the files, model applied chunk by chunk, map assembled);
* ``model``: wall time of the fitted model alone (every step after the PatchExtractor)
  on the features of the same brain voxels, extracted beforehand (not timed) and passed
  in one array.

Both are reported as wall time and as CPU time of the process (less sensitive to other
jobs on a shared machine); each is the best of ``--repeat`` interleaved runs.

Target: ``map / model <= 1.5``, i.e. reading and assembling cost at most half the
inference. This holds when inference dominates, as with the paper's LSTM; with a linear
model inference is nearly free and the ratio measures feature extraction instead
(reported for reference).

Memory: in a fresh process per size, the peak resident memory (``ru_maxrss``) added by
drawing the map of a file-backed patient, after imports and model loading, and the peak
of numpy/Python allocations (``tracemalloc``) during the call, for two volume sizes
(20 and 40 slices of 128 x 128). Target: the same at both sizes (flat), under 2 GB.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_maps.py [--quick]`` (``--quick``: 64 x 64
volumes).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_hemo.datasets import Cohort, load_patient, make_stroke_cohort
from sklearn_hemo.maps import brain_voxel_refs, predict_risk_map
from sklearn_hemo.neural import LSTMClassifier
from sklearn_hemo.persistence import load_model, save_model
from sklearn_hemo.preprocessing import PatchExtractor
from sklearn_hemo.sampling import sample_voxels

INPUTS = "pwi+aif+dwi"


def fit_models(random_state=0):
    """A tiny LSTM pipeline and a linear one, fitted on a small simulated cohort."""
    cohort = make_stroke_cohort(n_patients=6, shape=(32, 32, 4), ht_prevalence=0.5,
                                random_state=random_state)
    X, y, _ = sample_voxels(cohort, n_samples=340, random_state=random_state)  # 170 HT

    def pipeline(model):
        return Pipeline([("features", PatchExtractor(cohort, inputs=INPUTS)),
                         ("scale", StandardScaler()), ("model", model)]).fit(X, y)

    return {
        # one torch thread, as the model zoo uses: on a shared machine, torch's spinning
        # worker threads otherwise make both timings erratic
        "lstm": pipeline(LSTMClassifier(INPUTS, hidden_size=16, max_epochs=1,
                                        batch_size=1024, torch_num_threads=1,
                                        random_state=random_state)),
        "linear": pipeline(LogisticRegression(max_iter=500)),
    }


def write_patient(folder, shape, random_state=0):
    """One paper-like patient (60 frames at TR 1.8 s) on disk; returns its folder."""
    make_stroke_cohort(n_patients=1, shape=shape, n_frames=60, repetition_time=1.8,
                       ht_prevalence=1.0, random_state=random_state, out_dir=folder,
                       overwrite=True)
    return Path(folder) / "sub-001"


def time_model(pipeline, patient, repeat):
    """Best-of-``repeat`` seconds of the map and of the model alone on pre-extracted
    features; the two are interleaved so that both see the same machine load."""
    # the features of the same voxels, from a copy of the extractor pointed at the patient
    refs = brain_voxel_refs(patient)
    extractor = copy.copy(pipeline.named_steps["features"])
    features = extractor.set_params(cohort=Cohort([patient])).transform(refs)
    rest = pipeline[1:]
    timings = {"map": [], "model": []}
    for _ in range(repeat):
        with timed(timings["map"]):
            risk = predict_risk_map(pipeline, patient)
        with timed(timings["model"]):
            proba = rest.predict_proba(features)[:, 1]
    np.testing.assert_allclose(
        np.asarray(risk.dataobj)[refs[:, 1], refs[:, 2], refs[:, 3]], proba, atol=1e-5)
    best = {key: tuple(np.min(values, axis=0)) for key, values in timings.items()}
    return best["map"], best["model"], len(refs)


@contextlib.contextmanager
def timed(into):
    """Append (wall seconds, CPU seconds of this process) of the block to ``into``."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    into.append((time.perf_counter() - wall, time.process_time() - cpu))


def _rss_mb():
    """Current resident memory of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


class PeakRSS:
    """Poll the resident memory every few milliseconds while the block runs."""

    def __enter__(self):
        self.peak, self._stop = _rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def child(model_dir, patient_dir):
    """Run in a fresh process: peak memory of one map; prints JSON."""
    model = load_model(model_dir)
    patient = load_patient(patient_dir)
    predict_risk_map(model, patient, mask=np.zeros(patient.shape, bool))  # warm-up
    before = _rss_mb()
    tracemalloc.start()
    with PeakRSS() as rss:
        start = time.perf_counter()
        risk = predict_risk_map(model, patient)
        seconds = time.perf_counter() - start
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"shape": list(risk.shape), "seconds": seconds,
                      "rss_before_mb": before, "rss_peak_mb": rss.peak,
                      "traced_peak_mb": traced / 2**20}))


def memory(model_dir, patient_dir):
    out = subprocess.run([sys.executable, __file__, "--child", str(model_dir),
                          str(patient_dir)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the memory probe failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 x 64 volumes")
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    side = 64 if args.quick else 128
    models = fit_models()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = write_patient(tmp / "small", (side, side, 20))
        patient = load_patient(small)
        print(f"patient {patient.shape} x {patient.n_frames} frames, "
              f"{int(patient.get_brain_mask().sum())} brain voxels (file-backed .nii.gz)")
        print(f"{'':17}{'wall time':^27}  {'CPU time':^27}")
        print(f"{'model':8} {'voxels':>8} {'map s':>8} {'model s':>8} {'ratio':>8}  "
              f"{'map s':>8} {'model s':>8} {'ratio':>8}  target")
        for name, pipeline in models.items():
            (map_w, map_c), (model_w, model_c), n = time_model(pipeline, patient, args.repeat)
            print(f"{name:8} {n:8d} {map_w:8.2f} {model_w:8.2f} {map_w / model_w:8.2f}  "
                  f"{map_c:8.2f} {model_c:8.2f} {map_c / model_c:8.2f}  <= 1.5"
                  + ("" if name == "lstm" else " (inference-bound models only)"))

        print("\npeak memory of one map in a fresh process (lstm):")
        model_dir = save_model(models["lstm"], tmp / "lstm-model")
        large = write_patient(tmp / "large", (side, side, 40))
        print(f"{'shape':>16} {'map s':>7} {'RSS before MB':>14} {'RSS peak MB':>12} "
              f"{'added MB':>9} {'traced MB':>10}")
        for folder in (small, large):
            m = memory(model_dir, folder)
            print(f"{str(tuple(m['shape'])):>16} {m['seconds']:7.2f} {m['rss_before_mb']:14.0f} "
                  f"{m['rss_peak_mb']:12.0f} {m['rss_peak_mb'] - m['rss_before_mb']:9.0f} "
                  f"{m['traced_peak_mb']:10.0f}")
        print("target: flat across sizes, peak < 2048 MB")


if __name__ == "__main__":
    main()
