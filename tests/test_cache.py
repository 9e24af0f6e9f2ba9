"""The per-process patient cache and its use by PatchExtractor."""

import gc
import pickle

import nibabel as nib
import numpy as np
import pytest
from sklearn.base import clone

from sklearn_hemo import _cache
from sklearn_hemo._cache import PatientCache, cached, clear_cache
from sklearn_hemo.datasets import Cohort, Patient, load_cohort
from sklearn_hemo.preprocessing import PatchExtractor, PerfusionMapExtractor, _patches


class _Dummy:
    """A stand-in patient: any weak-referenceable object."""


def test_lru_eviction_by_bytes():
    cache = PatientCache(max_bytes=100)
    a, b = _Dummy(), _Dummy()
    calls = []

    def value(tag, n=40):
        def compute():
            calls.append(tag)
            return {"x": np.zeros(n, dtype=np.uint8)}
        return compute

    cache.get(a, ("k", 1), value("a1"))
    cache.get(b, ("k", 1), value("b1"))
    cache.get(a, ("k", 1), value("a1"))  # hit: a1 becomes most recently used
    assert calls == ["a1", "b1"] and cache.nbytes == 80
    cache.get(a, ("k", 2), value("a2"))  # 120 bytes > 100: b1, the oldest, goes
    assert cache.nbytes == 80 and len(cache) == 2
    cache.get(a, ("k", 1), value("a1"))
    cache.get(b, ("k", 1), value("b1"))
    assert calls == ["a1", "b1", "a2", "b1"]
    big = cache.get(a, ("big",), value("big", n=101))  # over the budget: not stored
    assert big["x"].size == 101 and cache.nbytes == 80
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_entries_are_dropped_with_their_patient():
    cache = PatientCache(max_bytes=1 << 20)
    kept, gone = _Dummy(), _Dummy()
    cache.get(kept, ("k",), lambda: np.ones(8))
    cache.get(gone, ("k",), lambda: np.ones(8))
    cache.get(gone, ("other",), lambda: np.ones(8))
    assert len(cache) == 3
    del gone
    gc.collect()
    assert len(cache) == 1 and cache.nbytes == 64
    # a new object, whatever its id, never sees another object's entries
    fresh = _Dummy()
    assert cache.get(fresh, ("k",), lambda: np.zeros(2)).size == 2


def test_cached_values_are_read_only():
    patient = _Dummy()
    value = cached(patient, ("test-read-only",),
                   lambda: {"a": np.ones(3), "b": (np.zeros(2), 5)})
    try:
        for array in (value["a"], value["b"][0]):
            with pytest.raises(ValueError, match="read-only"):
                array[0] = 1.0
        assert cached(patient, ("test-read-only",), lambda: None) is value
    finally:
        del patient
        gc.collect()


def test_file_backed_features_are_cached_and_identical(tiny_cohort, tiny_cohort_dir,
                                                       monkeypatch):
    on_disk = load_cohort(tiny_cohort_dir)
    X = np.array([[0, 5, 5, 0], [1, 6, 4, 1], [0, 6, 6, 1], [2, 4, 7, 0]])
    clear_cache()
    reads = []
    original = _patches.patient_timing

    def counting(patient, *args, **kwargs):
        reads.append(patient.id)
        return original(patient, *args, **kwargs)

    monkeypatch.setattr(_patches, "patient_timing", counting)
    extractor = PatchExtractor(on_disk)
    first = extractor.fit_transform(X)
    assert sorted(reads) == sorted({on_disk[i].id for i in (0, 1, 2)})
    np.testing.assert_array_equal(extractor.transform(X), first)  # cache hit
    np.testing.assert_array_equal(clone(extractor).transform(X[::-1]), first[::-1])
    assert len(reads) == 3  # the later calls, clones included, hit the cache
    # an unpickled copy has new Patient objects (as in a worker process): no cache
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(extractor)).transform(X), first)
    assert len(reads) == 6
    data = _cache.patient_volume(on_disk[0], "pwi")
    assert not data.flags.writeable
    clear_cache()
    np.testing.assert_array_equal(extractor.transform(X), first)  # recomputed: identical
    assert len(reads) == 9
    # other grid parameters: another AIF entry, same arrival
    other = PatchExtractor(on_disk, n_timepoints=30, time_step=3.0).transform(X)
    assert other.shape == (4, 9 * 30 + 30 + 18) and len(reads) == 9
    np.testing.assert_allclose(PatchExtractor(tiny_cohort).transform(X), first,
                               rtol=1e-5, atol=1e-5)


def test_file_backed_dwi_of_perfusion_maps_is_read_once(tiny_cohort, tiny_cohort_dir,
                                                          monkeypatch):
    on_disk = load_cohort(tiny_cohort_dir)
    X = np.array([[0, 5, 5, 0], [1, 6, 4, 1], [0, 6, 6, 1]])
    clear_cache()
    dwi_files = {str(p.source(name)) for p in on_disk for name in ("dwi_b0", "dwi_b1000")}
    reads = []
    original = nib.arrayproxy.ArrayProxy._get_scaled

    def spy(proxy, *args, **kwargs):  # every array read of a proxy goes through it
        if str(proxy.file_like) in dwi_files:
            reads.append(str(proxy.file_like))
        return original(proxy, *args, **kwargs)

    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "_get_scaled", spy)
    extractor = PerfusionMapExtractor(on_disk, maps=("cbv",), dwi=True)
    first = extractor.fit_transform(X)
    assert sorted(reads) == sorted(str(on_disk[i].source(name)) for i in (0, 1)
                                   for name in ("dwi_b0", "dwi_b1000"))
    np.testing.assert_array_equal(extractor.transform(X), first)
    np.testing.assert_array_equal(clone(extractor).transform(X[::-1]), first[::-1])
    assert len(reads) == 4  # the later calls, clones included, read no DWI file
    # the same DWI columns as PatchExtractor's, and as from the in-memory cohort
    np.testing.assert_array_equal(
        first[:, -18:], PatchExtractor(on_disk, inputs="pwi+dwi").fit_transform(X)[:, -18:])
    assert len(reads) == 4  # the two extractors share the cached volumes
    np.testing.assert_allclose(
        first, PerfusionMapExtractor(tiny_cohort, maps=("cbv",), dwi=True).fit_transform(X),
        rtol=1e-5, atol=1e-5)


def test_warnings_are_repeated_on_cache_hits():
    n_frames, shape = 30, (5, 5, 1)
    rng = np.random.default_rng(0)
    pwi = 100.0 + rng.normal(0, 0.1, shape + (n_frames,))
    pwi[..., 10:15] *= 0.5  # a bolus
    pwi[2, 2, 0, 20:22] = 0.0
    dwi = nib.Nifti1Image(np.ones(shape), np.eye(4))
    patient = Patient("sub-c", nib.Nifti1Image(pwi, np.eye(4)), dwi, dwi, echo_time=0.03,
                      repetition_time=1.5, brain_mask=nib.Nifti1Image(
                          np.ones(shape, dtype=np.uint8), np.eye(4)))
    extractor = PatchExtractor(Cohort([patient]), inputs="pwi")
    for _ in range(2):  # the clip count is per call, not cached
        with pytest.warns(UserWarning, match="sub-c: 2 PWI samples"):
            extractor.transform([[0, 2, 2, 0]])


def test_perfusion_maps_share_the_cache():
    from sklearn_hemo.perfusion import _patient

    assert _patient._CACHE is _cache.CACHE
