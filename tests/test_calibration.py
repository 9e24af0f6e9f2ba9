"""Whole-brain calibration (sklearn_hemo.calibration, metrics._calibration, the options of
risk.py and of ``train`` / ``predict``)."""

import numpy as np
import pytest
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression

from sklearn_hemo.calibration import (
    PriorShiftClassifier,
    bleeding_fraction,
    patient_answer,
    shift_prior,
    whole_brain_prevalence,
)
from sklearn_hemo.datasets import make_stroke_cohort
from sklearn_hemo.metrics import (
    calibration_counts,
    calibration_summary,
    expected_calibration_error,
)
from sklearn_hemo.model_selection import make_model_zoo
from sklearn_hemo.risk import cross_val_risk_map_table, predict_risk_map, with_probabilities
from sklearn_hemo.sampling import sample_voxels

pytestmark = pytest.mark.filterwarnings("ignore:participant .* the PWI series ends:UserWarning")


@pytest.fixture(scope="module")
def cohort():
    """Ten patients (five bleed) on a 24 x 24 x 2 grid: about 0.8 % of brain voxels bleed."""
    return make_stroke_cohort(n_patients=10, shape=(24, 24, 2), ht_prevalence=0.5,
                              n_frames=40, difficulty="easy", random_state=0)


@pytest.fixture(scope="module")
def sample(cohort):
    X, y, groups = sample_voxels(cohort, n_samples=78, balance=True, random_state=0)
    return X, y, groups % 3  # outer fold = patient index mod 3


# -- the correction ---------------------------------------------------------------------
def test_shift_prior_is_bayes_rule_on_the_odds():
    p = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    shifted = shift_prior(p, training_prevalence=0.5, prevalence=0.02)
    odds = p[1:-1] / (1 - p[1:-1]) * (0.02 / 0.98) / (0.5 / 0.5)
    np.testing.assert_allclose(shifted[1:-1], odds / (1 + odds))
    assert shifted[0] == 0.0 and shifted[-1] == 1.0
    # moving back restores the input; moving to the same prior changes nothing
    np.testing.assert_allclose(shift_prior(shifted, 0.02, 0.5), p)
    np.testing.assert_allclose(shift_prior(p, 0.3, 0.3), p)
    with pytest.raises(ValueError, match="probabilities"):
        shift_prior([1.5], 0.5, 0.1)


def test_prior_shift_classifier_on_a_frozen_model_equals_shift_prior():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] + rng.normal(size=300) > 0).astype(int)
    base = LogisticRegression().fit(X, y)
    model = PriorShiftClassifier(FrozenEstimator(base), prevalence=0.05,
                                 training_prevalence=0.5).fit(X, y)
    assert model.estimator_.estimator is base  # frozen: not refitted
    expected = shift_prior(base.predict_proba(X)[:, 1], 0.5, 0.05)
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], expected)
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0)
    # None keeps the training prevalence: the estimator's own probabilities
    same = PriorShiftClassifier(LogisticRegression()).fit(X, y)
    assert same.prevalence_ == same.training_prevalence_ == pytest.approx(np.mean(y))
    np.testing.assert_allclose(same.predict_proba(X), base.predict_proba(X))
    # the training prevalence is read from y
    y_rare = np.r_[y[:100], np.zeros(200, int)]
    fitted = PriorShiftClassifier(prevalence=0.1).fit(X, y_rare)
    assert fitted.training_prevalence_ == pytest.approx(y_rare.mean())


def test_prior_shift_classifier_refuses_a_prevalence_for_three_classes():
    X = np.random.RandomState(0).normal(size=(30, 2))
    with pytest.raises(ValueError, match="binary"):
        PriorShiftClassifier(prevalence=0.1).fit(X, np.arange(30) % 3)
    model = PriorShiftClassifier().fit(X, np.arange(30) % 3)  # no shift: any classes
    assert model.predict_proba(X).shape == (30, 3)


class _NeedsGroups(ClassifierMixin, BaseEstimator):
    __metadata_request__fit = {"groups": True}  # noqa: RUF012 (scikit-learn's idiom)

    def fit(self, X, y, groups=None):
        self.groups_seen_ = groups
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.full((len(X), 2), 0.5)


def test_prior_shift_classifier_routes_fit_metadata():
    # the LSTM rows' early stopping takes the patient groups through metadata routing
    X, y, groups = np.zeros((6, 1)), np.array([0, 1] * 3), np.arange(6)
    with sklearn.config_context(enable_metadata_routing=True):
        model = PriorShiftClassifier(_NeedsGroups(), prevalence=0.1).fit(X, y, groups=groups)
    np.testing.assert_array_equal(model.estimator_.groups_seen_, groups)
    model = PriorShiftClassifier(_NeedsGroups()).fit(X, y, groups=groups)  # routing off
    np.testing.assert_array_equal(model.estimator_.groups_seen_, groups)


# -- calibration measures ----------------------------------------------------------------
def test_calibration_counts_add_up_and_give_brier_and_ece():
    rng = np.random.RandomState(0)
    p = rng.uniform(size=500)
    y = (rng.uniform(size=500) < p ** 2).astype(int)
    counts = calibration_counts(y[:200], p[:200]) + calibration_counts(y[200:], p[200:])
    np.testing.assert_allclose(counts, calibration_counts(y, p))
    s = calibration_summary(counts)
    assert s["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert s["observed_prevalence"] == pytest.approx(y.mean())
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(abs(p[bins == b].sum() - y[bins == b].sum()) for b in range(10)) / len(p)
    assert s["ece"] == pytest.approx(ece)
    assert expected_calibration_error(y, p) == pytest.approx(ece)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


# -- whole brains ------------------------------------------------------------------------
def test_whole_brain_prevalence_and_bleeding_fraction_count_voxels(cohort):
    brain = [p.get_brain_mask() for p in cohort]
    ht = [np.asarray(p.ht_mask.dataobj) > 0 for p in cohort]
    n_ht = sum(int((h & b).sum()) for h, b in zip(ht, brain, strict=True))
    assert whole_brain_prevalence(cohort) == n_ht / sum(int(b.sum()) for b in brain)
    bleeders = [i for i, h in enumerate(ht) if (h & brain[i]).any()]
    assert bleeding_fraction(cohort) == n_ht / sum(int(brain[i].sum()) for i in bleeders)
    assert whole_brain_prevalence(cohort, [0, 1]) == pytest.approx(
        sum(int((ht[i] & brain[i]).sum()) for i in (0, 1))
        / sum(int(brain[i].sum()) for i in (0, 1)))


@pytest.mark.parametrize("row", ["linear", "random-forest"])
def test_balanced_model_is_miscalibrated_on_whole_brains_until_corrected(cohort, sample, row):
    # the check: a model trained on a balanced sample has an expected calibration
    # error above 0.1 on the whole-brain voxels of held-out patients; the prior shift to
    # the training patients' whole-brain prevalence brings it below 0.05
    X, y, fold = sample
    pipeline = make_model_zoo(cohort, models=[row], protocol="quick", random_state=0)[row][0]
    ece = {}
    for calibration in ("sample", "whole-brain"):
        counts = np.zeros((10, 4))

        def add(k, patient, risk, counts=counts):
            brain = patient.get_brain_mask()
            assert not np.isin(patient.id, [cohort[i].id for i in X[fold != k, 0]])
            counts += calibration_counts(np.asarray(patient.ht_mask.dataobj)[brain] > 0,
                                         np.asarray(risk.dataobj)[brain])

        rows = cross_val_risk_map_table(pipeline, X, y, fold, calibration=calibration,
                                        callback=add)
        assert len(rows) == len(cohort)
        ece[calibration] = calibration_summary(counts)["ece"]
    assert ece["sample"] > 0.1
    assert ece["whole-brain"] < 0.05


def test_with_probabilities_and_predict_risk_map_apply_the_same_shift(cohort, sample):
    X, y, fold = sample
    train = fold != 0
    pipeline = make_model_zoo(cohort, models=["linear"], protocol="quick",
                              random_state=0)["linear"][0]
    prevalence = whole_brain_prevalence(cohort, sorted(set(X[train, 0].tolist())))
    plain = with_probabilities(clone(pipeline), y[train], X[train, 0]).fit(X[train], y[train])
    shifted = with_probabilities(clone(pipeline), y[train], X[train, 0],
                                 prevalence=prevalence).fit(X[train], y[train])
    final = shifted.steps[-1][1]
    assert isinstance(final, PriorShiftClassifier)
    assert final.training_prevalence_ == pytest.approx(y[train].mean())
    patient = int(X[fold == 0, 0][0])
    calibrated = np.asarray(predict_risk_map(shifted, patient).dataobj)
    raw = np.asarray(predict_risk_map(plain, patient).dataobj)
    at_draw = np.asarray(predict_risk_map(plain, patient, prevalence=prevalence,
                                          training_prevalence=y[train].mean()).dataobj)
    brain = cohort[patient].get_brain_mask()
    expected = shift_prior(raw[brain].astype(float), y[train].mean(), prevalence)
    np.testing.assert_allclose(calibrated[brain], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(at_draw[brain], expected, rtol=1e-5, atol=1e-7)
    # re-targeting a whole-brain model starts from its own prevalence_
    twice = np.asarray(predict_risk_map(shifted, patient, prevalence=0.2).dataobj)
    np.testing.assert_allclose(twice[brain], shift_prior(raw[brain].astype(float),
                                                         y[train].mean(), 0.2),
                               rtol=1e-4, atol=1e-6)


def test_patient_answer_sums_probabilities():
    import nibabel as nib

    risk = np.zeros((4, 4, 2), np.float32)
    risk[:2, :2, 0] = 0.25
    img = nib.Nifti1Image(risk, np.diag([2.0, 2.0, 5.0, 1.0]))  # 20 mm3 voxels
    brain = np.ones((4, 4, 2), bool)
    answer = patient_answer(img, brain, bleeding_fraction=0.05)
    assert answer["expected_volume_ml"] == pytest.approx(4 * 0.25 * 0.02)
    assert answer["expected_fraction"] == pytest.approx(1.0 / 32)
    assert answer["probability_any_ht"] == pytest.approx(min(1.0, (1.0 / 32) / 0.05))
    assert patient_answer(img, brain)["probability_any_ht"] is None
    assert patient_answer(img, brain, bleeding_fraction=0.01)["probability_any_ht"] == 1.0
