"""Voxel-wise risk maps (sklearn_hemo.risk)."""

import copy
import warnings

import nibabel as nib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_hemo.datasets import Cohort, make_stroke_cohort
from sklearn_hemo.linear_model import LinearRegressionClassifier
from sklearn_hemo.neural import LSTMClassifier
from sklearn_hemo.preprocessing import PatchExtractor
from sklearn_hemo.risk import (
    brain_voxel_refs,
    predict_risk_map,
    predict_risk_maps,
    risk_map_table,
    with_probabilities,
)
from sklearn_hemo.sampling import sample_voxels

N_T = 12  # a short time grid keeps the LSTM fast


@pytest.fixture(scope="module")
def cohort():
    """Six patients, three with HT; 20 x 20 x 2 gives 36 HT voxels to train on."""
    return make_stroke_cohort(n_patients=6, shape=(20, 20, 2), ht_prevalence=0.5,
                              random_state=0, difficulty="easy")


@pytest.fixture(scope="module")
def training(cohort):
    X, y, groups = sample_voxels(cohort, n_samples=72, random_state=0)
    assert y.sum() == 36 and np.unique(groups[y == 1]).size == 3
    return X, y, groups


@pytest.fixture(scope="module")
def classic(cohort, training):
    X, y, _ = training
    pipe = Pipeline([("features", PatchExtractor(cohort, inputs="pwi+dwi",
                                                 n_timepoints=N_T)),
                     ("scale", StandardScaler()),
                     ("model", LogisticRegression(max_iter=500))])
    return pipe.fit(X, y)


@pytest.fixture(scope="module")
def lstm(cohort, training):
    X, y, _ = training
    pipe = Pipeline([("features", PatchExtractor(cohort, n_timepoints=N_T)),
                     ("scale", StandardScaler()),
                     ("model", LSTMClassifier("pwi+aif+dwi", n_timepoints=N_T, hidden_size=4,
                                              max_epochs=1, random_state=0))])
    return pipe.fit(X, y)


@pytest.fixture(params=["classic", "lstm"])
def pipeline(request):
    return request.getfixturevalue(request.param)


def _values_at(img, refs):
    return np.asarray(img.dataobj)[refs[:, 1], refs[:, 2], refs[:, 3]]


def test_map_is_a_probability_image_on_the_pwi_grid(pipeline, cohort):
    patient = cohort[1]
    risk = predict_risk_map(pipeline, 1)
    assert isinstance(risk, nib.Nifti1Image)
    assert risk.shape == patient.shape
    assert risk.get_data_dtype() == np.float32
    np.testing.assert_array_equal(risk.affine, patient.affine)
    assert risk.header.get_zooms() == patient.pwi.header.get_zooms()[:3]
    data = np.asarray(risk.dataobj)
    assert data.dtype == np.float32
    brain = patient.get_brain_mask()
    assert np.all(data[~brain] == 0)
    assert np.ptp(data[brain]) > 0  # a real map, not a constant


def test_map_equals_predict_proba_on_the_patients_voxels(pipeline, cohort):
    for index in (0, 3):
        refs = brain_voxel_refs(cohort[index], index)
        expected = pipeline.predict_proba(refs)[:, list(pipeline.classes_).index(1)]
        risk = predict_risk_map(pipeline, index, chunk_size=37)
        # chunks of other sizes change only BLAS summation order
        np.testing.assert_allclose(_values_at(risk, refs), expected, rtol=0, atol=1e-6)


def test_new_patient_gets_the_same_map_without_touching_the_pipeline(classic, cohort):
    extractor = classic.named_steps["features"]
    reference = np.asarray(predict_risk_map(classic, 2).dataobj)
    outsider = Cohort([cohort[2]])[0]  # the same Patient object, seen on its own
    by_object = predict_risk_map(classic, outsider)
    alone = predict_risk_map(classic, 0, cohort=Cohort([cohort[2]]))
    by_id = predict_risk_map(classic, cohort[2].id)
    for img in (by_object, alone, by_id):
        np.testing.assert_allclose(np.asarray(img.dataobj), reference, atol=1e-6)
    assert extractor.cohort is cohort


def test_chunks_bound_the_batches_the_model_sees(classic, monkeypatch):
    model = classic.named_steps["model"]
    seen = []
    original = type(model).predict_proba

    def spy(self, X):
        seen.append(len(X))
        return original(self, X)

    monkeypatch.setattr(type(model), "predict_proba", spy)
    risk = predict_risk_map(classic, 0, chunk_size=25)
    assert max(seen) <= 25 and sum(seen) == int(np.count_nonzero(np.asarray(risk.dataobj)))


def test_explicit_mask_limits_the_map(classic, cohort):
    brain = cohort[0].get_brain_mask()
    mask = np.zeros_like(brain)
    mask[:6] = brain[:6]
    risk = np.asarray(predict_risk_map(classic, 0, mask=mask, chunk_size=10).dataobj)
    full = np.asarray(predict_risk_map(classic, 0).dataobj)
    assert np.all(risk[~mask] == 0)
    np.testing.assert_allclose(risk[mask], full[mask], atol=1e-6)


def test_map_survives_a_nifti_round_trip(classic, tmp_path):
    risk = predict_risk_map(classic, 0)
    nib.save(risk, tmp_path / "risk.nii.gz")
    back = nib.load(tmp_path / "risk.nii.gz")
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(risk.dataobj))
    np.testing.assert_allclose(back.affine, risk.affine)


def test_models_without_probabilities_are_refused_or_calibrated(cohort, training):
    X, y, groups = training
    pipe = Pipeline([("features", PatchExtractor(cohort, inputs="pwi", n_timepoints=N_T)),
                     ("model", LinearRegressionClassifier())])
    with pytest.raises(TypeError, match="with_probabilities"):
        predict_risk_map(pipe.fit(X, y), 0)
    calibrated = with_probabilities(pipe, y, groups).fit(X, y)
    refs = brain_voxel_refs(cohort[0], 0)
    risk = predict_risk_map(calibrated, 0)
    # the map is the calibrated probability (values pinned in test_pinned_values.py)
    np.testing.assert_allclose(_values_at(risk, refs),
                               calibrated.predict_proba(refs)[:, 1], atol=1e-6)


def test_bad_arguments(classic, cohort):
    with pytest.raises(TypeError, match="Pipeline"):
        predict_risk_map(classic.named_steps["model"], 0)
    with pytest.raises(TypeError, match="PatchExtractor"):
        predict_risk_map(Pipeline([("s", StandardScaler()), ("m", LogisticRegression())]), 0)
    with warnings.catch_warnings():
        # a string label against integer classes is refused with our message only (numpy
        # 1.x once added a FutureWarning about elementwise comparison)
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="positive_class"):
            predict_risk_map(classic, 0, positive_class="HT")
    with pytest.raises(ValueError, match="out of range"):
        predict_risk_map(classic, len(cohort))
    with pytest.raises(ValueError, match="chunk_size"):
        predict_risk_map(classic, 0, chunk_size=0)
    extractor = copy.copy(classic.named_steps["features"]).set_params(cohort=None)
    detached = Pipeline([("features", extractor), *classic.steps[1:]])
    with pytest.raises(ValueError, match="holds no cohort"):
        predict_risk_map(detached, 0)


def test_maps_and_table_for_several_patients(classic, cohort):
    maps = predict_risk_maps(classic, patients=[0, "sub-002"])
    assert len(maps) == 2
    rows = risk_map_table(classic, patients=[0, 1], threshold=0.5)
    assert [r["patient_id"] for r in rows] == cohort.ids[:2]
    assert cohort.ids[1] == "sub-002"  # so maps and rows are of the same patients
    for row, img in zip(rows, maps, strict=True):
        patient = cohort[cohort.index(row["patient_id"])]
        data = np.asarray(img.dataobj)
        brain = patient.get_brain_mask()
        voxel_ml = float(np.prod(patient.pwi.header.get_zooms()[:3])) / 1000
        assert row["risk_score"] == pytest.approx(np.percentile(data[brain], 99))
        assert row["predicted_volume_ml"] == pytest.approx((data >= 0.5).sum() * voxel_ml)
        assert row["dice"] is not None  # the simulated cohort has ht masks


def test_file_backed_compressed_patient(classic, cohort, tmp_path, monkeypatch):
    from sklearn_hemo.datasets import load_patient, save_cohort

    folder = save_cohort(cohort, tmp_path / "cohort")
    patient = load_patient(folder / cohort.ids[1])
    assert str(patient.source("pwi")).endswith(".nii.gz")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    from_files = predict_risk_map(classic, patient)
    in_memory = predict_risk_map(classic, 1)
    np.testing.assert_array_equal(np.asarray(from_files.dataobj),
                                  np.asarray(in_memory.dataobj))
    assert list(scratch.iterdir()) == []  # the decompressed copy is gone


def test_cross_validated_patient_table(cohort, training):
    from sklearn_hemo.risk import cross_val_risk_map_table

    X, y, groups = training
    # one HT patient (0, 2, 5) per fold, so every training side has two to calibrate on
    fold = groups // 2
    pipe = Pipeline([("features", PatchExtractor(cohort, inputs="pwi", n_timepoints=N_T)),
                     ("model", LinearRegressionClassifier())])
    rows = cross_val_risk_map_table(pipe, X, y, fold, params={"0": {"model__fit_intercept":
                                                                    False}})
    assert sorted(r["patient_id"] for r in rows) == sorted(cohort.ids)
    assert {r["fold"] for r in rows if r["patient_id"] == cohort.ids[0]} == {0}
    # values: test_cross_val_risk_map_table_values in test_pinned_values.py
    assert all(r["dice"] is not None for r in rows)
    assert not hasattr(pipe.named_steps["model"], "coef_")  # the template stays unfitted
    leaky = fold.copy()
    leaky[np.flatnonzero(groups == 0)[0]] = 1
    with pytest.raises(ValueError, match="more than one fold"):
        cross_val_risk_map_table(pipe, X, y, leaky)


def test_a_model_that_reads_voxel_references_itself(cohort, training):
    from sklearn_hemo.perfusion import ROIPermeabilityScorer

    X, y, _ = training
    roi = Pipeline([("model", ROIPermeabilityScorer(cohort))]).fit(X, y)
    refs = brain_voxel_refs(cohort[2], 2)
    risk = predict_risk_map(roi, 2, chunk_size=100)
    expected = roi.predict_proba(refs)[:, 1]
    np.testing.assert_allclose(_values_at(risk, refs), expected, atol=1e-6)
    assert np.unique(_values_at(risk, refs)).size == 1  # one score per patient
    # a bare estimator that reads references works too, also for a patient on its own
    alone = predict_risk_map(roi.named_steps["model"], Cohort([cohort[2]])[0])
    np.testing.assert_array_equal(np.asarray(alone.dataobj), np.asarray(risk.dataobj))
