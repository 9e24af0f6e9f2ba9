"""PatchExtractor: voxel references to patch features."""

import warnings

import nibabel as nib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_hemo.datasets import ArterialInputFunction, Cohort, Patient
from sklearn_hemo.preprocessing import PatchExtractor
from sklearn_hemo.preprocessing._patches import _gather_patches
from sklearn_hemo.signal import aif_from_tsv
from sklearn_hemo.utils.validation import check_voxel_refs

TE = 0.03
ONSET = 16.0  # s: every voxel's bolus jumps here, so the baseline frames are exactly zero
GRID = np.arange(60) * 1.8
# raw AIF and DWI values (no per-patient normalisation), for the tests that pin them
RAW = {"aif_normalization": None, "dwi_normalization": None}
WIDTHS = {"pwi": 540, "pwi+aif": 600, "pwi+dwi": 558, "pwi+aif+dwi": 618}


def _oblique(angle=0.35):
    c, s = np.cos(angle), np.sin(angle)
    affine = np.array([[1.8 * c, -1.8 * s, 0.3, -90], [1.8 * s, 1.8 * c, 0, -100],
                       [0, 0.4, 5.0, -40], [0, 0, 0, 1]])
    return affine


def make_patient(pid, shape=(7, 6, 3), n_frames=40, tr=1.5, seed=0, affine=None, aif=True,
                 ht=1):
    """A patient with a known concentration ``truth["conc"]`` (frames x voxels).

    Signal ``S = S0 exp(-TE C)``; C is zero before ``ONSET`` and decays after it, with a
    height and a width that differ per voxel; a brain mask leaves out one corner column.
    """
    rng = np.random.default_rng(seed)
    affine = np.diag([1.8, 1.8, 5.0, 1.0]) if affine is None else affine
    t = np.arange(n_frames) * tr
    height = rng.uniform(1, 30, shape)[..., None]
    tau = rng.uniform(2, 8, shape)[..., None]
    conc = np.where(t >= ONSET, height * np.exp(-np.clip(t - ONSET, 0, None) / tau), 0.0)
    s0 = rng.uniform(300, 900, shape)
    pwi = (s0[..., None] * np.exp(-TE * conc)).astype(np.float32)
    brain = np.ones(shape, dtype=np.uint8)
    brain[0, 0, :] = 0
    measured = None
    if aif:
        at = np.arange(0, n_frames * tr, 0.9)
        measured = ArterialInputFunction(at, np.where(at >= 14, 60 * np.exp(-(at - 14) / 2), 0))
    images = [nib.Nifti1Image(a, affine) for a in
              (pwi, rng.uniform(500, 900, shape).astype(np.float32),
               rng.uniform(100, 400, shape).astype(np.float32))]
    patient = Patient(pid, *images, echo_time=TE, repetition_time=tr, ht=ht,
                      brain_mask=nib.Nifti1Image(brain, affine), aif=measured,
                      truth={"conc": conc})
    return patient


@pytest.fixture(scope="module")
def cohort():
    return Cohort([make_patient("sub-a", seed=0), make_patient("sub-b", seed=1, tr=1.8,
                                                               n_frames=60)])


def _all_voxels(cohort, index):
    ijk = np.argwhere(np.ones(cohort[index].shape, dtype=bool))
    return np.column_stack([np.full(len(ijk), index), ijk])


def _brain_voxels(cohort, index):
    ijk = np.argwhere(cohort[index].get_brain_mask())
    return np.column_stack([np.full(len(ijk), index), ijk])


# -- column layout ------------------------------------------------------------------------------
@pytest.mark.parametrize("inputs", list(WIDTHS))
def test_widths_and_names(cohort, inputs):
    extractor = PatchExtractor(cohort, inputs=inputs)
    features = extractor.fit_transform(_all_voxels(cohort, 0)[:5])
    names = extractor.get_feature_names_out()
    assert features.shape == (5, WIDTHS[inputs]) and features.dtype == np.float32
    assert len(names) == WIDTHS[inputs] == len(set(names))
    assert names[0] == "pwi_t00_p0" and names[4] == "pwi_t00_p4" and names[9] == "pwi_t01_p0"
    if "aif" in inputs:
        assert names[540] == "aif_t00" and names[599] == "aif_t59"
    if "dwi" in inputs:
        assert names[-18] == "dwi_b0_p0" and names[-1] == "dwi_b1000_p8"
    from sklearn_hemo._lstm_module import expected_feature_names

    assert names.tolist() == expected_feature_names(inputs, 60)


def test_pwi_columns_are_the_resampled_concentration_of_the_right_neighbours(cohort):
    for index in (0, 1):
        patient = cohort[index]
        X = _all_voxels(cohort, index)
        features = PatchExtractor(cohort, inputs="pwi+dwi", **RAW).fit_transform(X)
        pwi = features[:, :540].reshape(-1, 60, 9)
        conc, t = patient.truth["conc"], patient.frame_times
        b0 = np.asarray(patient.dwi_b0.dataobj)
        nx, ny, _ = patient.shape
        for row in (0, 7, len(X) // 2, len(X) - 1):  # corners (edges replicate) and inside
            _, i, j, k = X[row]
            for p, (di, dj) in enumerate((a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)):
                ii, jj = np.clip(i + di, 0, nx - 1), np.clip(j + dj, 0, ny - 1)
                expected = np.interp(GRID, t, conc[ii, jj, k])
                np.testing.assert_allclose(pwi[row, :, p], expected, rtol=1e-4, atol=1e-3)
                assert features[row, 540 + p] == b0[ii, jj, k]


def test_aif_columns_are_the_resampled_measured_aif(cohort):
    X = _all_voxels(cohort, 1)[::7]
    features = PatchExtractor(cohort, inputs="pwi+aif", **RAW).fit_transform(X)
    aif = cohort[1].aif
    np.testing.assert_allclose(features[:, 540:600],
                               np.tile(np.interp(GRID, aif.time, aif.values), (len(X), 1)),
                               rtol=1e-6)


def test_align_to_arrival_shifts_tissue_and_aif_alike(cohort):
    patient = cohort[0]
    X = _all_voxels(cohort, 0)[10:12]
    features = PatchExtractor(cohort, inputs="pwi+aif", align="arrival", **RAW).fit_transform(X)
    t = patient.frame_times
    start = t[int(np.ceil(ONSET / 1.5)) - 1]  # last pre-bolus frame
    _, i, j, k = X[0]
    np.testing.assert_allclose(features[0, 4:540:9],
                               np.interp(start + GRID, t, patient.truth["conc"][i, j, k]),
                               rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(features[0, 540:],
                               np.interp(start + GRID, patient.aif.time, patient.aif.values),
                               rtol=1e-6)


def test_odd_acquisitions_give_finite_features():
    rng = np.random.default_rng(5)
    patients = []
    for n, (tr, frames) in enumerate([(1.2, 90), (1.63, 71), (2.0, 50)]):
        p = make_patient(f"sub-{n}", shape=(9, 8, 2), tr=tr, n_frames=frames, seed=n,
                         affine=_oblique(0.2 * n + 0.1), aif=n != 1)
        noisy = np.asarray(p.pwi.dataobj) + rng.normal(0, 5, p.pwi.shape).astype(np.float32)
        patients.append(Patient(p.id, nib.Nifti1Image(noisy, p.affine), p.dwi_b0, p.dwi_b1000,
                                echo_time=TE, repetition_time=tr, aif=p.aif, ht=0))
    odd = Cohort(patients)
    X = np.concatenate([_all_voxels(odd, i) for i in range(3)])
    features = PatchExtractor(odd, **RAW).fit_transform(X)
    assert features.shape == (len(X), 618) and np.isfinite(features).all()
    # the detected AIF (patient 1) is an early, high first pass
    aif = features[X[:, 0] == 1][0, 540:600]
    assert aif.max() > 10 and GRID[np.argmax(aif)] < 25


# -- invariances and the whole-volume path ------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [1, 7, 10_000])
def test_iter_volume_equals_transform_over_the_brain(cohort, chunk_size):
    extractor = PatchExtractor(cohort)
    chunks = list(extractor.iter_volume(1, chunk_size=chunk_size))
    assert all(0 < len(ijk) <= max(chunk_size, 6) for ijk, _ in chunks)
    ijk = np.concatenate([c[0] for c in chunks])
    features = np.concatenate([c[1] for c in chunks])
    # every brain voxel once, slice by slice
    brain = np.argwhere(cohort[1].get_brain_mask())
    np.testing.assert_array_equal(ijk, brain[np.lexsort((brain[:, 1], brain[:, 0], brain[:, 2]))])
    X = np.column_stack([np.ones(len(ijk), dtype=int), ijk])
    np.testing.assert_array_equal(features, extractor.transform(X))


def test_on_the_simulated_cohort_in_memory_and_on_disk(tiny_cohort, tiny_cohort_dir):
    from sklearn_hemo.datasets._layout import load_cohort

    on_disk = load_cohort(tiny_cohort_dir)
    X = np.concatenate([_brain_voxels(tiny_cohort, i)[::3] for i in range(len(tiny_cohort))])
    in_memory = PatchExtractor(tiny_cohort, **RAW).fit_transform(X)
    assert np.isfinite(in_memory).all()
    np.testing.assert_allclose(PatchExtractor(on_disk, **RAW).fit_transform(X), in_memory,
                               rtol=1e-5, atol=1e-5)
    # the AIF columns are aif.tsv resampled onto the 1.8 s grid
    aif = aif_from_tsv(tiny_cohort_dir / tiny_cohort[2].id / "aif.tsv")
    row = np.flatnonzero(X[:, 0] == 2)[0]
    np.testing.assert_allclose(in_memory[row, 540:600], np.interp(GRID, aif.time, aif.values),
                               rtol=1e-5, atol=1e-4)


def test_clipped_samples_of_requested_voxels_are_reported():
    p = make_patient("sub-z", aif=False)
    pwi = np.asarray(p.pwi.dataobj).copy()
    pwi[3, 3, 1, 20:23] = 0
    patient = Patient("sub-z", nib.Nifti1Image(pwi, p.affine), p.dwi_b0, p.dwi_b1000,
                      echo_time=TE, repetition_time=1.5, brain_mask=p.brain_mask)
    extractor = PatchExtractor(Cohort([patient]), inputs="pwi")
    with pytest.warns(UserWarning, match="sub-z: 3 PWI samples"):
        features = extractor.fit_transform([[0, 3, 3, 1]])
    assert np.isfinite(features).all()
    with warnings.catch_warnings():
        # a neighbour's dropout is not the voxel's (the scan's padding warning may come)
        warnings.filterwarnings("error", message=".*PWI samples")
        extractor.transform([[0, 3, 4, 1]])


def test_gather_patches_on_maps_and_series():
    volume = np.arange(4 * 3 * 2, dtype=float).reshape(4, 3, 2)
    patches = _gather_patches(volume, np.array([[0, 0, 1], [2, 1, 0]]), 3)
    np.testing.assert_array_equal(patches[0], volume[[0, 0, 0, 0, 0, 0, 1, 1, 1],
                                                     [0, 0, 1, 0, 0, 1, 0, 0, 1], 1])
    np.testing.assert_array_equal(patches[1], volume[1:4, 0:3, 0].ravel())
    series = np.asfortranarray(np.random.default_rng(0).random((4, 3, 2, 5)))
    out = _gather_patches(series, np.array([[2, 1, 0]]), 3)
    np.testing.assert_array_equal(out[0], series[1:4, 0:3, 0].reshape(9, 5).T)


def test_gather_patches_with_a_mask_reads_the_centre_outside_it():
    volume = np.arange(5 * 4 * 2, dtype=float).reshape(5, 4, 2)
    inside = np.ones(volume.shape, dtype=bool)
    inside[0, :, :] = inside[:, 3, :] = False
    ijk = np.array([[1, 2, 1], [3, 1, 0], [0, 0, 0]])
    patches = _gather_patches(volume, ijk, 3, inside=inside)
    raw = _gather_patches(volume, ijk, 3)
    centre = volume[1, 2, 1]
    # row i=0 and column j=3 are outside: p = 0, 1, 2 (di=-1) and p = 2, 5, 8 (dj=+1)
    expected = raw[0].copy()
    expected[[0, 1, 2, 5, 8]] = centre
    np.testing.assert_array_equal(patches[0], expected)
    np.testing.assert_array_equal(patches[1], raw[1])  # an interior voxel
    # a centre outside the mask: outside neighbours read it, inside ones stay raw
    expected = np.where(inside[[0, 0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 1, 0, 0, 1, 0, 0, 1], 0],
                        raw[2], volume[0, 0, 0])
    np.testing.assert_array_equal(patches[2], expected)
    series = np.random.default_rng(0).random((5, 4, 2, 6))
    out = _gather_patches(series, ijk[:1], 3, inside=inside)
    np.testing.assert_array_equal(out[0][:, [0, 1, 2, 5, 8]],
                                  np.repeat(series[1, 2, 1][:, None], 5, axis=1))
    np.testing.assert_array_equal(out[0][:, [3, 4, 6, 7]],
                                  _gather_patches(series, ijk[:1], 3)[0][:, [3, 4, 6, 7]])


def _disc_patient(pid="sub-disc", seed=4):
    """``make_patient`` with a disc brain mask and a noise floor outside it, as in a scan."""
    p = make_patient(pid, shape=(9, 8, 2), seed=seed)
    ii, jj = np.indices((9, 8))
    brain = np.repeat(((ii - 4) ** 2 + (jj - 3.5) ** 2 <= 10)[..., None], 2, axis=2)
    pwi = np.asarray(p.pwi.dataobj).copy()
    noise = np.random.default_rng(seed).rayleigh(50, pwi.shape).astype(np.float32)
    pwi[~brain] = noise[~brain]
    return Patient(pid, nib.Nifti1Image(pwi, p.affine), p.dwi_b0, p.dwi_b1000, echo_time=TE,
                   repetition_time=1.5, brain_mask=nib.Nifti1Image(brain.astype(np.uint8),
                                                                   p.affine),
                   aif=p.aif, truth=p.truth)


def test_brain_edge_neighbours_take_the_centre_values():
    patient = _disc_patient()
    cohort = Cohort([patient])
    inside = patient.get_brain_mask()
    X = _brain_voxels(cohort, 0)
    masked = PatchExtractor(cohort, inputs="pwi+dwi", **RAW).fit_transform(X)
    raw = PatchExtractor(cohort, inputs="pwi+dwi", mask_neighbours=False,
                         **RAW).fit_transform(X)
    pwi_m, pwi_r = masked[:, :540].reshape(-1, 60, 9), raw[:, :540].reshape(-1, 60, 9)
    conc, t = patient.truth["conc"], patient.frame_times
    nx, ny, _ = patient.shape
    offsets = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]
    outside = np.array([[not inside[np.clip(i + di, 0, nx - 1), np.clip(j + dj, 0, ny - 1), k]
                         for di, dj in offsets] for _, i, j, k in X])
    assert outside.any() and not outside.all(axis=1).any()
    # the centre column does not depend on the option
    np.testing.assert_array_equal(pwi_m[:, :, 4], pwi_r[:, :, 4])
    for row in np.flatnonzero(outside.any(axis=1)):
        _, i, j, k = X[row]
        for p in np.flatnonzero(outside[row]):
            # on: the centre's curve and DWI; off: the raw (noise) neighbour
            np.testing.assert_array_equal(pwi_m[row, :, p], pwi_m[row, :, 4])
            assert masked[row, 540 + p] == masked[row, 544]
            assert masked[row, 549 + p] == masked[row, 553]
            ii, jj = np.clip(i + offsets[p][0], 0, nx - 1), np.clip(j + offsets[p][1], 0, ny - 1)
            assert raw[row, 540 + p] == patient.dwi_b0.dataobj[ii, jj, k]
            assert not np.allclose(pwi_r[row, :, p], pwi_r[row, :, 4])
        for p in np.flatnonzero(~outside[row]):  # inside neighbours stay raw
            np.testing.assert_array_equal(pwi_m[row, :, p], pwi_r[row, :, p])
    # interior voxels are unchanged, and the centre of an edge voxel is its true curve
    interior = ~outside.any(axis=1)
    np.testing.assert_array_equal(masked[interior], raw[interior])
    row = np.flatnonzero(outside.any(axis=1))[0]
    _, i, j, k = X[row]
    np.testing.assert_allclose(pwi_m[row, :, 4], np.interp(GRID, t, conc[i, j, k]), rtol=1e-4,
                               atol=1e-3)


@pytest.mark.parametrize("mask_neighbours", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 10, 10_000])
def test_iter_volume_equals_transform_at_brain_edges(mask_neighbours, chunk_size):
    cohort = Cohort([_disc_patient()])
    extractor = PatchExtractor(cohort, mask_neighbours=mask_neighbours)
    chunks = list(extractor.iter_volume(0, chunk_size=chunk_size))
    ijk = np.concatenate([c[0] for c in chunks])
    features = np.concatenate([c[1] for c in chunks])
    X = np.column_stack([np.zeros(len(ijk), dtype=int), ijk])
    np.testing.assert_array_equal(features, extractor.transform(X))
    other = PatchExtractor(cohort, mask_neighbours=not mask_neighbours).transform(X)
    assert not np.array_equal(features, other)  # the option reaches iter_volume


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("X, error, message", [
    ([[2, 0, 0, 0]], ValueError, "patient index 2"),
    ([[0, 7, 0, 0]], ValueError, "outside the volume of participant sub-a"),
    ([[1, 0, -1, 0]], ValueError, "outside the volume of participant sub-b"),
    ([[0, 0, 0]], ValueError, "4 columns"),
    ([0, 0, 0, 0], ValueError, "2D array"),
    (np.zeros((0, 4), dtype=int), ValueError, "0 sample"),
    ([[0.0, 1.0, 1.0, 1.0]], TypeError, "integer voxel references"),
    ([[0.0, np.nan, 1.0, 1.0]], ValueError, "NaN"),
    (np.ones((2, 4), dtype=bool), TypeError, "integer voxel references"),
    (np.ones((2, 4), dtype=object), TypeError, "integer voxel references"),
    (np.ones((2, 4), dtype=complex), ValueError, "[Cc]omplex"),
])
def test_bad_references(cohort, X, error, message):
    with pytest.raises(error, match=message):
        PatchExtractor(cohort).fit(X)
    with pytest.raises(error, match=message):
        PatchExtractor(cohort).transform(X)


def test_bad_parameters(cohort):
    with pytest.raises(ValueError, match="needs a cohort"):
        PatchExtractor().fit([[0, 0, 0, 0]])
    with pytest.raises(ValueError, match="odd"):
        PatchExtractor(cohort, patch_size=2).transform([[0, 0, 0, 0]])
    with pytest.raises(ValueError, match="inputs"):
        PatchExtractor(cohort, inputs="dwi").fit([[0, 0, 0, 0]])
    with pytest.raises(ValueError, match="mask_neighbours"):
        PatchExtractor(cohort, mask_neighbours="yes").fit([[0, 0, 0, 0]])
    with pytest.raises(ValueError, match="cohort"):
        PatchExtractor(list(cohort)).fit([[0, 0, 0, 0]])
    with pytest.raises(ValueError, match="patient_index"):
        next(PatchExtractor(cohort).iter_volume(5))
    with pytest.raises(ValueError, match="chunk_size"):
        next(PatchExtractor(cohort).iter_volume(0, chunk_size=0))


# -- scikit-learn compatibility -----------------------------------------------------------------
# scikit-learn's checks, and the voxel-reference checks that replace its array checks (order
# and subset invariance, clone, pickle, input layouts, feature names), run on every estimator
# in tests/test_common.py.
def test_in_a_pipeline(cohort):
    X = np.concatenate([_all_voxels(cohort, 0), _all_voxels(cohort, 1)])
    y = (X[:, 1] > 3).astype(int)
    model = make_pipeline(PatchExtractor(cohort, inputs="pwi"), StandardScaler(),
                          LogisticRegression(C=1e-3))
    proba = model.fit(X, y).predict_proba(X[:5])
    assert proba.shape == (5, 2) and np.isfinite(proba).all()


def test_check_voxel_refs_without_estimator(cohort):
    refs = check_voxel_refs(np.array([[1, 2, 3, 0]], dtype=np.uint8), cohort)
    assert refs.dtype == np.int64 and refs.tolist() == [[1, 2, 3, 0]]
    with pytest.raises(ValueError, match="needs a cohort"):
        check_voxel_refs([[0, 0, 0, 0]], None)
