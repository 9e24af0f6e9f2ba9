"""AUCs with patient (cluster) bootstrap intervals: sklearn_hemo.metrics._bootstrap."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from sklearn_hemo.metrics import bootstrap_auc, bootstrap_weights, weighted_auc


def _clustered(n_patients=30, per_patient=40, effect=1.0, seed=0):
    """Voxels whose scores share a per-patient offset (correlated within a patient)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_patients), per_patient)
    y = (rng.random(groups.size) < 0.4).astype(int)
    offset = rng.normal(scale=1.5, size=n_patients)[groups]
    return y, effect * y + offset + rng.normal(size=groups.size), groups


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(4, 60),
    n_levels=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_weighted_auc_matches_sklearn_with_ties_and_weights(n, n_levels, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    score = rng.integers(0, n_levels, n).astype(float)  # few levels: many ties
    weights = rng.integers(0, 4, size=(3, n)).astype(float)
    weights[:, :2] = 1  # both classes present in every weighting
    roc, pr = weighted_auc(y, score, weights)
    for row in range(3):
        assert roc[row] == pytest.approx(roc_auc_score(y, score, sample_weight=weights[row]))
        assert pr[row] == pytest.approx(
            average_precision_score(y, score, sample_weight=weights[row]))
    roc1, pr1 = weighted_auc(y, score)
    assert roc1 == pytest.approx(roc_auc_score(y, score))
    assert pr1 == pytest.approx(average_precision_score(y, score))


def test_weighted_auc_undefined_weighting_is_nan_and_bad_input_raises():
    y, s = np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.3, 0.2])
    roc, pr = weighted_auc(y, s, np.array([[1, 0, 1, 0], [1, 1, 1, 1.0]]))
    assert np.isnan(roc[0]) and np.isnan(pr[0]) and roc[1] == 0.75
    with pytest.raises(ValueError, match="NaN"):
        weighted_auc(y, np.array([0.1, np.nan, 0.3, 0.2]))
    with pytest.raises(ValueError, match="binary"):
        weighted_auc(np.array([0, 1, 2, 1]), s)
    with pytest.raises(ValueError, match="non-negative"):
        weighted_auc(y, s, -np.ones(4))


def test_bootstrap_weights_move_patients_together_and_keep_strata():
    y, _, groups = _clustered(n_patients=12, per_patient=5)
    y[groups < 4] = 0  # patients 0..3 have no positive voxel
    w = bootstrap_weights(groups, y, n_resamples=50, random_state=1)
    assert w.shape == (50, groups.size)
    per_patient = w.reshape(50, 12, 5)
    assert (per_patient == per_patient[:, :, :1]).all()  # one multiplicity per patient
    counts = per_patient[:, :, 0]
    assert (counts.sum(axis=1) == 12).all()
    # stratified: 4 draws among the patients without positives, 8 among the others
    assert (counts[:, :4].sum(axis=1) == 4).all()
    np.testing.assert_array_equal(
        w, bootstrap_weights(groups, y, n_resamples=50, random_state=1))
    voxel = bootstrap_weights(None, y, unit="voxel", n_resamples=5, random_state=0)
    assert (voxel.sum(axis=1) == y.size).all()
    with pytest.raises(ValueError, match="groups"):
        bootstrap_weights(None, y)


def test_bootstrap_auc_interval_contains_estimate_and_is_reproducible():
    y, score, groups = _clustered()
    res = bootstrap_auc(y, score, groups, n_resamples=300, random_state=0,
                        return_replicates=True)
    assert res.auc_roc == pytest.approx(roc_auc_score(y, score))
    assert res.auc_pr == pytest.approx(average_precision_score(y, score))
    # the bounds are the 2.5th and 97.5th percentiles of the replicates (which another
    # test ties to explicit weights); the estimate lies between them on this sample
    low, high = np.percentile(res.replicates, [2.5, 97.5], axis=0)
    assert (res.auc_roc_low, res.auc_roc_high) == pytest.approx((low[0], high[0]))
    assert (res.auc_pr_low, res.auc_pr_high) == pytest.approx((low[1], high[1]))
    assert res.auc_roc_low < res.auc_roc < res.auc_roc_high
    assert res.n_patients == 30 and res.n_voxels == y.size and res.n_resamples == 300
    assert res.replicates.shape == (300, 2)
    again = bootstrap_auc(y, score, groups, n_resamples=300, random_state=0)
    assert again.auc_roc_low == res.auc_roc_low and again.auc_pr_high == res.auc_pr_high


def test_same_draws_for_every_model_give_paired_replicates():
    y, score, groups = _clustered()
    a = bootstrap_auc(y, score, groups, n_resamples=200, random_state=3,
                      return_replicates=True)
    # a second "model" with a monotone transform of the scores ranks voxels identically:
    # with the same draws its replicates equal the first model's, resample by resample
    b = bootstrap_auc(y, np.exp(score / 3), groups, n_resamples=200, random_state=3,
                      return_replicates=True)
    np.testing.assert_allclose(a.replicates, b.replicates)
    # and the replicates are those of the explicit per-voxel weights
    w = bootstrap_weights(groups, y, n_resamples=200, random_state=3)
    roc, pr = weighted_auc(y, score, w)
    np.testing.assert_allclose(a.replicates[:, 0], roc)
    np.testing.assert_allclose(a.replicates[:, 1], pr)


def test_patient_bootstrap_is_wider_than_voxel_bootstrap_on_clustered_data():
    y, score, groups = _clustered(n_patients=20, per_patient=100)
    patient = bootstrap_auc(y, score, groups, n_resamples=300, random_state=0)
    voxel = bootstrap_auc(y, score, groups, unit="voxel", n_resamples=300, random_state=0)
    assert voxel.auc_roc == patient.auc_roc
    width = patient.auc_roc_high - patient.auc_roc_low
    assert width > 1.5 * (voxel.auc_roc_high - voxel.auc_roc_low)


def test_unstratified_single_class_resamples_are_dropped_with_a_warning():
    groups = np.repeat(np.arange(6), 10)
    y = (groups == 0).astype(int)  # one patient holds every positive voxel
    y[groups == 0] = np.tile([0, 1], 5)
    score = y + np.random.default_rng(0).normal(size=60)
    with pytest.warns(RuntimeWarning, match="single class"):
        res = bootstrap_auc(y, score, groups, n_resamples=100, stratify=False,
                            random_state=0)
    assert 2 <= res.n_resamples < 100
    res = bootstrap_auc(y, score, groups, n_resamples=100, random_state=0)
    assert res.n_resamples == 100


def test_bootstrap_auc_input_errors():
    y, score, groups = _clustered(n_patients=5, per_patient=4)
    with pytest.raises(ValueError, match="single class"):
        bootstrap_auc(np.zeros_like(y), score, groups)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_auc(y, score)
    with pytest.raises(ValueError):
        bootstrap_auc(y, score[:-1], groups)
    with pytest.raises(ValueError, match="unit"):
        bootstrap_auc(y, score, groups, unit="slice")


def test_explicit_weights_are_the_draws_of_bootstrap_auc_beyond_one_block(monkeypatch):
    # bootstrap_auc draws its resamples in blocks bounded in memory; bootstrap_weights
    # must reproduce the same draws however many blocks that takes (large cohorts)
    from sklearn_hemo.metrics import _bootstrap

    monkeypatch.setattr(_bootstrap, "_BLOCK_ELEMENTS", 4 * 1200)  # 4 resamples per block
    y, score, groups = _clustered()
    y[groups < 10] = 0  # patients without HT voxels: a second stratum
    res = bootstrap_auc(y, score, groups, n_resamples=30, random_state=5,
                        return_replicates=True)
    roc, pr = weighted_auc(y, score, bootstrap_weights(groups, y, n_resamples=30,
                                                       random_state=5))
    np.testing.assert_allclose(res.replicates[:, 0], roc)
    np.testing.assert_allclose(res.replicates[:, 1], pr)
