"""Balanced, patient-grouped voxel sampling."""

import nibabel as nib
import numpy as np
import pytest

from sklearn_hemo.datasets import Cohort, Patient
from sklearn_hemo.sampling import _allocate, sample_voxels


def _patient(pid, n_ht, shape=(10, 10, 2), ht_mask=True, ht=None, seed=0):
    """A patient whose brain is the inner 8 x 8 x 2 block and whose first ``n_ht`` brain
    voxels (C order) bleed; one HT voxel lies outside the brain and must never be drawn."""
    rng = np.random.default_rng(seed)
    affine = np.eye(4)
    pwi = nib.Nifti1Image(rng.uniform(100, 200, shape + (5,)).astype(np.float32), affine)
    dwi = nib.Nifti1Image(np.ones(shape, dtype=np.float32), affine)
    brain = np.zeros(shape, dtype=np.uint8)
    brain[1:-1, 1:-1] = 1
    label = np.zeros(shape, dtype=np.uint8)
    label.reshape(-1)[np.flatnonzero(brain)[:n_ht]] = 1
    label[0, 0, 0] = 1  # outside the brain
    return Patient(pid, pwi, dwi, dwi, echo_time=0.03, repetition_time=1.5,
                   ht=int(n_ht > 0) if ht is None else ht,
                   brain_mask=nib.Nifti1Image(brain, affine),
                   ht_mask=nib.Nifti1Image(label, affine) if ht_mask else None)


@pytest.fixture
def cohort():
    return Cohort([_patient(f"sub-{i}", n, seed=i) for i, n in enumerate([40, 0, 5, 100, 0])])


def _check_references(cohort, X, y, groups):
    assert X.dtype == np.int64 and X.shape[1] == 4
    np.testing.assert_array_equal(groups, X[:, 0])
    for index in np.unique(X[:, 0]):
        patient = cohort[int(index)]
        rows = X[:, 0] == index
        i, j, k = X[rows, 1:].T
        assert patient.get_brain_mask()[i, j, k].all()
        np.testing.assert_array_equal(np.asarray(patient.ht_mask.dataobj)[i, j, k] > 0, y[rows])
    assert len(np.unique(X, axis=0)) == len(X)  # without replacement


def test_balanced_inside_the_brain_and_labelled(cohort):
    X, y, groups = sample_voxels(cohort, n_samples=60, random_state=0)
    assert len(X) == 60 and y.sum() == 30
    _check_references(cohort, X, y, groups)


def test_deterministic_and_seed_dependent(cohort):
    a = sample_voxels(cohort, n_samples=60, random_state=3)
    b = sample_voxels(cohort, n_samples=60, random_state=3)
    c = sample_voxels(cohort, n_samples=60, random_state=4)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])


def test_even_split_over_patients(cohort):
    X, y, _ = sample_voxels(cohort, n_samples=60, random_state=0)
    # 30 HT voxels over patients holding 40, 5 and 100: 5 from the small one, 12 and 13
    pos = np.bincount(X[y == 1, 0], minlength=5)
    assert pos[2] == 5 and sorted(pos[[0, 3]].tolist()) == [12, 13]
    assert pos[1] == pos[4] == 0
    neg = np.bincount(X[y == 0, 0], minlength=5)
    assert neg.max() - neg.min() <= 1  # 30 over five patients with plenty


def test_max_per_patient_caps_each_class(cohort):
    X, y, _ = sample_voxels(cohort, n_samples=40, max_per_patient=8, random_state=0)
    pos = np.bincount(X[y == 1, 0], minlength=5)
    assert pos.max() <= 8 and y.sum() == len(y) - y.sum()


def test_too_few_positives_returns_a_smaller_balanced_sample(cohort):
    with pytest.warns(UserWarning, match="only 145 HT voxels"):
        X, y, groups = sample_voxels(cohort, n_samples=1000, random_state=0)
    assert len(X) == 290 and y.sum() == 145
    _check_references(cohort, X, y, groups)


def test_no_positive_is_an_error():
    cohort = Cohort([_patient("a", 0), _patient("b", 0)])
    with pytest.raises(ValueError, match="no HT voxel"):
        sample_voxels(cohort, n_samples=10)


def test_unbalanced_draw_keeps_labels(cohort):
    X, y, groups = sample_voxels(cohort, n_samples=100, balance=False, random_state=0)
    assert len(X) == 100
    _check_references(cohort, X, y, groups)
    counts = np.bincount(X[:, 0], minlength=5)
    assert counts.max() - counts.min() <= 1


def test_missing_ht_mask_policies(cohort):
    patients = list(cohort) + [_patient("no-mask", 0, ht_mask=False, ht=0)]
    with_missing = Cohort(patients)
    with pytest.raises(ValueError, match="no-mask has no ht_mask"):
        sample_voxels(with_missing, n_samples=20)
    X, *_ = sample_voxels(with_missing, n_samples=20, missing_ht_mask="skip", random_state=0)
    assert 5 not in X[:, 0]
    X, y, _ = sample_voxels(with_missing, n_samples=60, missing_ht_mask="negative",
                            random_state=0)
    assert (X[:, 0] == 5).any() and not y[X[:, 0] == 5].any()
    bleeding = Cohort(patients[:1] + [_patient("bleeds", 0, ht_mask=False, ht=1)])
    with pytest.raises(ValueError, match="ht=1"):
        sample_voxels(bleeding, n_samples=20, missing_ht_mask="negative")


@pytest.mark.parametrize("kwargs, message", [
    ({"n_samples": 0}, "n_samples"), ({"max_per_patient": 0}, "max_per_patient"),
    ({"missing_ht_mask": "ignore"}, "missing_ht_mask"), ({"balance": "yes"}, "balance")])
def test_parameter_errors(cohort, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_voxels(cohort, **kwargs)
    with pytest.raises(TypeError, match="Cohort"):
        sample_voxels(list(cohort))


def test_allocate_is_water_filling():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(_allocate([3, 10, 10], 15, rng), [3, 6, 6])
    np.testing.assert_array_equal(_allocate([3, 10, 10], 100, rng), [3, 10, 10])
    counts = _allocate([5, 5, 5], 7, rng)
    assert counts.sum() == 7 and counts.max() - counts.min() <= 1


def test_on_the_simulated_cohort(tiny_cohort):
    X, y, groups = sample_voxels(tiny_cohort, n_samples=10, random_state=0)
    assert len(X) == 10 and y.sum() == 5
    _check_references(tiny_cohort, X, y, groups)
    assert set(np.unique(groups[y == 1])) <= set(np.flatnonzero(tiny_cohort.ht == 1))
