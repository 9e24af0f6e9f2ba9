"""Distributed backends of compare_models: ray equals serial; cohorts travel as paths."""

import builtins
import pickle
import warnings

import numpy as np
import pytest

from sklearn_hemo.datasets import load_cohort, make_stroke_cohort, save_cohort
from sklearn_hemo.model_selection import compare_models, make_model_zoo
from sklearn_hemo.preprocessing import PatchExtractor

SMALL = {"n_patients": 8, "shape": (32, 32, 2), "ht_prevalence": 0.6, "n_frames": 40,
         "random_state": 0}
RUN = {"n_outer": 3, "n_inner": 2, "n_samples": 200, "n_resamples": 200, "random_state": 0}


@pytest.fixture(scope="module")
def in_memory():
    return make_stroke_cohort(**SMALL)


@pytest.fixture(scope="module")
def on_disk(in_memory, tmp_path_factory):
    return load_cohort(save_cohort(in_memory, tmp_path_factory.mktemp("cohort") / "c"))


def test_a_file_backed_cohort_pickles_as_paths(in_memory, on_disk):
    # what a worker receives with a task: the extractor and its cohort, once read here
    extractor = PatchExtractor(on_disk, inputs="pwi+aif+dwi")
    refs = np.array([[p, 16, 16, 0] for p in range(len(on_disk))])
    extractor.fit_transform(refs)  # the patients' images are read (and cached) here
    volume_bytes = sum(np.asarray(p.pwi.dataobj).nbytes for p in on_disk)
    sent = len(pickle.dumps(extractor))
    # the in-memory cohort carries its volumes: the check below can fail
    assert len(pickle.dumps(PatchExtractor(in_memory))) > volume_bytes / 2
    # paths and headers: about a kilobyte a patient, not its volumes
    assert sent < 2000 * len(on_disk) < volume_bytes / 20


def test_ray_local_runtime_equals_serial(on_disk):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install "
                                            "'sklearn-hemo[ray]')")
    zoo = make_model_zoo(on_disk, models=["linear", "svm"], random_state=0)
    serial = compare_models(on_disk, zoo, oracle=False, **RUN)
    assert not ray.is_initialized()
    print_before = builtins.print
    # without precomputed features every task gets the pipeline and the cohort itself
    distributed = compare_models(on_disk, zoo, oracle=False, backend="ray", n_jobs=2,
                                 precompute_features=False, **RUN)
    assert not ray.is_initialized()  # the runtime it started is shut down
    # ray's driver swaps the builtin print (for its progress bars): it must be put back
    assert builtins.print is print_before
    assert distributed.table == serial.table
    for name in zoo:
        np.testing.assert_array_equal(distributed.predictions[name]["score"],
                                      serial.predictions[name]["score"])
    assert distributed.best_params == serial.best_params


def test_device_reaches_only_the_lstm_rows(in_memory):
    # building the zoo needs no GPU: the device is a parameter of the LSTM rows only
    zoo = make_model_zoo(in_memory, models=["lstm-pwi", "linear", "svm"], device="cuda")
    assert zoo["lstm-pwi"][0].named_steps["model"].device == "cuda"
    for name in ("linear", "svm"):
        params = zoo[name][0].get_params(deep=True)
        assert not any(key.endswith("device") for key in params), name


def _cuda_available():
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_available(),
                    reason="no CUDA device (torch.cuda.is_available() is False); this "
                           "check runs on a GPU machine")
def test_lstm_rows_on_cuda_give_the_cpu_table_within_float32(in_memory):
    models = ["lstm-pwi", "linear"]
    cpu = compare_models(in_memory, models, oracle=False, device="cpu", **RUN)
    gpu = compare_models(in_memory, models, oracle=False, device="cuda", **RUN)
    # the classic rows stay on the CPU: bit-identical
    np.testing.assert_array_equal(gpu.predictions["linear"]["score"],
                                  cpu.predictions["linear"]["score"])
    # the LSTM: the same network within float32 rounding (reductions ordered differently)
    np.testing.assert_allclose(gpu.predictions["lstm-pwi"]["score"],
                               cpu.predictions["lstm-pwi"]["score"], atol=1e-4)
    for got, want in zip(gpu.table, cpu.table, strict=True):
        assert got["model"] == want["model"]
        assert got["auc_roc"] == pytest.approx(want["auc_roc"], abs=1e-3)


def test_loky_workers_are_not_restarted_as_leaking_when_a_network_row_starts():
    # The README's main command printed loky's "A worker stopped while some jobs were
    # given to the executor ... memory leak" in every run: loky restarts a worker that
    # grew 300 MB past its memory after its first task, and workers that had simulated
    # the cohort (or whose first task was a linear fit) grew that much when a network
    # row imported torch and trained. compare's workers import the rows' estimator
    # modules first, in workers of their own.
    from joblib import parallel_config

    # without psutil loky never measures a worker's memory, and the trap cannot spring
    pytest.importorskip("psutil", reason="loky checks worker memory only with psutil")
    # workers of their own for the simulation (another idle timeout: another executor),
    # so that what earlier tests left in the shared workers does not hide the trap
    with parallel_config(backend="loky", idle_worker_timeout=299):
        cohort = make_stroke_cohort(n_patients=8, shape=(24, 24, 3), ht_prevalence=0.5,
                                    random_state=0, n_jobs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compare_models(cohort, protocol="quick", models=["linear", "lstm-pwi"], n_jobs=2,
                       n_samples=400, n_resamples=10, random_state=0)
    stopped = [str(w.message) for w in caught if "worker stopped" in str(w.message)]
    assert not stopped, stopped


def test_task_modules_name_every_step_once_sorted():
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from sklearn_hemo.model_selection._distributed import import_modules, task_modules

    pipelines = [Pipeline([("scale", StandardScaler()), ("model", SVC())]), SVC()]
    modules = task_modules(pipelines)
    assert modules == tuple(sorted({StandardScaler.__module__, SVC.__module__}))
    import_modules(modules + ("no_such_module_here",))  # the task reports it, not this
