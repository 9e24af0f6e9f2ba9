"""PerfusionMapExtractor and ROIPermeabilityScorer: maps as features of voxel references."""


import numpy as np
import pytest
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict, cross_val_score
from sklearn.pipeline import make_pipeline

from sklearn_hemo.datasets import Cohort, make_stroke_cohort
from sklearn_hemo.perfusion import MAP_NAMES, ROIPermeabilityScorer, patient_perfusion_maps
from sklearn_hemo.perfusion import _patient as patient_module
from sklearn_hemo.preprocessing import PerfusionMapExtractor


def _brain_refs(cohort, index, step=1):
    ijk = np.argwhere(cohort[index].get_brain_mask())[::step]
    return np.column_stack([np.full(len(ijk), index), ijk])


@pytest.fixture(scope="module")
def refs(tiny_cohort):
    """Every 5th brain voxel of each patient and every HT voxel, with labels."""
    parts = []
    for p, patient in enumerate(tiny_cohort):
        ht = np.argwhere(np.asarray(patient.ht_mask.dataobj) > 0)
        parts += [_brain_refs(tiny_cohort, p, step=5),
                  np.column_stack([np.full(len(ht), p), ht])]
    X = np.unique(np.concatenate(parts), axis=0)
    y = np.array([tiny_cohort[p].ht_mask.dataobj[i, j, k] > 0 for p, i, j, k in X], int)
    assert 0 < y.sum() < len(y)
    return X, y


# -- PerfusionMapExtractor -----------------------------------------------------------------
def test_columns_are_map_patches(tiny_cohort, refs):
    X, _ = refs
    extractor = PerfusionMapExtractor(tiny_cohort, maps=("cbv", "tmax", "psr"), dwi=True,
                                      dwi_normalization=None)  # raw DWI pinned below
    features = extractor.fit_transform(X)
    names = extractor.get_feature_names_out()
    assert features.shape == (len(X), 5 * 9) and features.dtype == np.float32
    assert names[:10].tolist() == [f"cbv_p{p}" for p in range(9)] + ["tmax_p0"]
    assert names[-1] == "dwi_b1000_p8" and len(set(names)) == len(names)
    patient = tiny_cohort[int(X[-1, 0])]
    maps = patient_perfusion_maps(patient)
    b0 = np.asarray(patient.dwi_b0.dataobj)
    nx, ny, _ = patient.shape
    inside = patient.get_brain_mask()
    _, i, j, k = X[-1]
    for p, (di, dj) in enumerate((a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)):
        ii, jj = np.clip(i + di, 0, nx - 1), np.clip(j + dj, 0, ny - 1)
        if not inside[ii, jj, k]:  # mask_neighbours: outside neighbours read the centre
            ii, jj = i, j
        assert features[-1, p] == maps.cbv[ii, jj, k]
        assert features[-1, 9 + p] == maps.tmax[ii, jj, k]
        assert features[-1, 18 + p] == maps.psr[ii, jj, k]
        assert features[-1, 27 + p] == b0[ii, jj, k]
    assert np.isfinite(features).all()


def test_brain_edge_neighbours_read_the_centre_not_the_zero_background(tiny_cohort):
    patient = tiny_cohort[0]
    inside = patient.get_brain_mask()
    ijk = np.argwhere(inside)
    X = np.column_stack([np.zeros(len(ijk), dtype=int), ijk])
    maps = patient_perfusion_maps(patient)
    b0 = np.asarray(patient.dwi_b0.dataobj)
    masked = PerfusionMapExtractor(tiny_cohort, maps=("cbv",), dwi=True,
                                   dwi_normalization=None).fit_transform(X)
    raw = PerfusionMapExtractor(tiny_cohort, maps=("cbv",), dwi=True, dwi_normalization=None,
                                mask_neighbours=False).fit_transform(X)
    nx, ny, _ = patient.shape
    n_edge = 0
    for row, (i, j, k) in enumerate(ijk):
        for p, (di, dj) in enumerate((a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)):
            ii, jj = np.clip(i + di, 0, nx - 1), np.clip(j + dj, 0, ny - 1)
            assert raw[row, p] == maps.cbv[ii, jj, k] and raw[row, 9 + p] == b0[ii, jj, k]
            if inside[ii, jj, k]:
                assert masked[row, p] == raw[row, p] and masked[row, 9 + p] == raw[row, 9 + p]
            else:
                n_edge += 1
                assert raw[row, p] == 0  # maps are 0 outside the brain
                assert masked[row, p] == maps.cbv[i, j, k] == masked[row, 4]
                assert masked[row, 9 + p] == b0[i, j, k] == masked[row, 13]
    assert n_edge > 0


def test_default_maps_and_all_maps(tiny_cohort, refs):
    X, _ = refs
    default = PerfusionMapExtractor(tiny_cohort).fit_transform(X[:7])
    assert default.shape == (7, 45)
    every = PerfusionMapExtractor(tiny_cohort, maps=MAP_NAMES, patch_size=1).fit_transform(X)
    assert every.shape == (len(X), len(MAP_NAMES)) and np.isfinite(every).all()


def test_maps_are_computed_once_per_patient(monkeypatch):
    cohort = make_stroke_cohort(n_patients=2, shape=(8, 8, 1), random_state=1, difficulty="easy")
    calls = []
    original = patient_module.patient_perfusion_maps

    def counting(patient, **kwargs):
        calls.append(patient.id)
        return original(patient, **kwargs)

    monkeypatch.setattr(patient_module, "patient_perfusion_maps", counting)
    X = np.concatenate([_brain_refs(cohort, 0), _brain_refs(cohort, 1)])
    first = PerfusionMapExtractor(cohort).fit_transform(X)
    second = clone(PerfusionMapExtractor(cohort, maps=("psr",))).fit_transform(X[::-1])
    assert sorted(calls) == ["sub-001", "sub-002"]  # shared by clones and map choices
    assert np.isfinite(first).all() and np.isfinite(second).all()
    PerfusionMapExtractor(cohort, method="ssvd").transform(X[:1])
    assert len(calls) == 3  # another method, other maps
    cached = patient_module.cached_patient_maps(cohort[0])
    with pytest.raises(ValueError, match="read-only"):
        cached.cbf[0, 0, 0] = 1.0


@pytest.mark.parametrize("params, message", [
    ({"maps": ("cbf", "ktrans")}, "unknown: \\['ktrans'\\]"),
    ({"maps": ()}, "non-empty"),
    ({"maps": ("cbf", "cbf")}, "distinct"),
    ({"maps": "cbf"}, "maps"),
    ({"patch_size": 2}, "odd"),
    ({"method": "svd"}, "method"),
    ({"dwi": "yes"}, "dwi"),
    ({"mask_neighbours": "yes"}, "mask_neighbours"),
])
def test_bad_parameters(tiny_cohort, params, message):
    with pytest.raises(ValueError, match=message):
        PerfusionMapExtractor(tiny_cohort, **params).fit([[0, 1, 1, 0]])


@pytest.mark.parametrize("X, error, message", [
    ([[9, 0, 0, 0]], ValueError, "patient index 9"),
    ([[0, 99, 0, 0]], ValueError, "outside the volume of participant sub-001"),
    ([[0.0, 1.0, 1.0, 1.0]], TypeError, "integer voxel references"),
    ([[0, 0, 0]], ValueError, "4 columns"),
])
def test_bad_references(tiny_cohort, X, error, message):
    with pytest.raises(error, match=message):
        PerfusionMapExtractor(tiny_cohort).fit(X)
    with pytest.raises(error, match=message):
        PerfusionMapExtractor(tiny_cohort).transform(X)
    with pytest.raises(ValueError, match="needs a cohort"):
        PerfusionMapExtractor().fit([[0, 0, 0, 0]])


# -- ROIPermeabilityScorer -----------------------------------------------------------------
@pytest.mark.parametrize("extractor", ["maps", "patches"])
def test_dwi_off_the_pwi_grid_names_the_participant(tiny_cohort, extractor):
    import nibabel as nib

    from sklearn_hemo.datasets import Patient
    from sklearn_hemo.preprocessing import PatchExtractor

    p = tiny_cohort[0]
    small = nib.Nifti1Image(np.ones((3, 3, 1), np.float32), p.affine)
    moved = Cohort([Patient(p.id, p.pwi, small, p.dwi_b1000, echo_time=p.echo_time,
                            repetition_time=p.repetition_time, ht=p.ht,
                            brain_mask=p.brain_mask, ht_mask=p.ht_mask)])
    model = (PerfusionMapExtractor(moved, maps=("cbv",), dwi=True) if extractor == "maps"
             else PatchExtractor(moved, inputs="pwi+dwi"))
    with pytest.raises(ValueError, match=f"participant {p.id}: dwi_b0 has shape.*Resample"):
        model.fit_transform(np.array([[0, 1, 1, 0]]))


def test_roi_scorer_spreads_one_patient_score(tiny_cohort, refs):
    X, y = refs
    scorer = ROIPermeabilityScorer(tiny_cohort).fit(X, y)
    decision = scorer.decision_function(X)
    proba = scorer.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(axis=1), 1)
    for p in np.unique(X[:, 0]):
        rows = X[:, 0] == p
        assert np.all(decision[rows] == decision[rows][0])
    # decision, probability and prediction agree
    assert np.array_equal(np.argsort(decision, kind="stable"),
                          np.argsort(proba[:, 1], kind="stable"))
    np.testing.assert_array_equal(scorer.predict(X), scorer.classes_[(proba[:, 1] > 0.5) * 1])
    # the score is the mean arrival-fitted K2 over Tmax > 6 s (or the brain when nothing
    # qualifies)
    patient = tiny_cohort[0]
    maps = patient_perfusion_maps(patient)
    roi = patient.get_brain_mask() & (maps.tmax > 6)
    from sklearn_hemo.perfusion._patient import _arrival_k2

    expected = _arrival_k2(patient)[roi if roi.any() else patient.get_brain_mask()].mean()
    np.testing.assert_allclose(scorer.roi_score(0), expected, rtol=1e-6)
    other = ROIPermeabilityScorer(tiny_cohort, measure="psr", statistic="median",
                                  roi_map="cbf", roi_threshold=20.0)
    brain = patient.get_brain_mask()
    np.testing.assert_allclose(other.roi_score(0),
                               np.median(maps.psr[brain & (maps.cbf > 20)]), rtol=1e-6)


def test_maps_and_roi_models_in_grouped_cross_validation(tiny_cohort, refs):
    """The zoo's ``random-forest-maps`` and ``roi-leakage-proxy`` shapes, patient-grouped."""
    X, y = refs
    groups = X[:, 0]
    cv = GroupKFold(n_splits=3)
    for model in (ROIPermeabilityScorer(tiny_cohort),
                  make_pipeline(PerfusionMapExtractor(tiny_cohort),
                                RandomForestClassifier(n_estimators=10, random_state=0))):
        scores = cross_val_score(model, X, y, groups=groups, cv=cv)
        assert scores.shape == (3,)
        decision = cross_val_predict(model, X, y, groups=groups, cv=cv,
                                     method="predict_proba")[:, 1]
        if isinstance(model, ROIPermeabilityScorer):
            # one score per patient, spread to its voxels (its voxel AUC may fall below
            # one half under grouped folds: see the class notes)
            for p in np.unique(groups):
                assert np.unique(decision[groups == p]).size == 1
        else:
            # the perfusion maps rank HT voxels above chance out of fold
            assert roc_auc_score(y, decision) > 0.6


def test_roi_scorer_errors(tiny_cohort, refs):
    X, y = refs
    with pytest.raises(ValueError, match="binary"):
        ROIPermeabilityScorer(tiny_cohort).fit(X, np.zeros(len(X), int))
    with pytest.raises(ValueError, match="labels"):
        ROIPermeabilityScorer(tiny_cohort).fit(X, y[:-1])
    with pytest.raises(ValueError, match="measure"):
        ROIPermeabilityScorer(tiny_cohort, measure="ktrans").fit(X, y)
    with pytest.raises(ValueError, match="needs a cohort"):
        ROIPermeabilityScorer().fit(X, y)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ROIPermeabilityScorer(tiny_cohort).predict(X)


# scikit-learn's checks and the voxel-reference checks of both estimators (order and subset
# invariance, clone, pickle, input layouts, feature names) run in tests/test_common.py.
