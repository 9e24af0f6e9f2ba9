"""Tests of the least-squares (linear regression) classifier."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs, make_classification
from sklearn.linear_model import LinearRegression, RidgeClassifier
from sklearn.metrics import roc_auc_score

from sklearn_hemo.linear_model import LinearRegressionClassifier


def test_binary_score_is_the_ols_fit_of_the_coded_labels():
    X, y = make_classification(300, n_features=8, random_state=0)
    labels = np.where(y == 1, "ht", "none")  # classes_ = ["ht", "none"]
    clf = LinearRegressionClassifier().fit(X, labels)
    ols = LinearRegression().fit(X, np.where(labels == "none", 1.0, -1.0))
    np.testing.assert_allclose(clf.decision_function(X), ols.predict(X), rtol=1e-10, atol=1e-12)
    assert clf.coef_.shape == (1, 8)
    np.testing.assert_array_equal(
        clf.predict(X), np.where(ols.predict(X) > 0, "none", "ht")
    )
    assert roc_auc_score(labels == "none", clf.decision_function(X)) > 0.9


def test_equals_ridge_classifier_without_penalty():
    X, y = make_blobs(200, n_features=5, centers=4, random_state=0)
    ours = LinearRegressionClassifier().fit(X, y)
    ridge = RidgeClassifier(alpha=1e-12, solver="svd").fit(X, y)
    np.testing.assert_allclose(ours.coef_, ridge.coef_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.intercept_, ridge.intercept_, rtol=1e-6, atol=1e-9)
    assert ours.decision_function(X).shape == (200, 4)
    np.testing.assert_array_equal(ours.predict(X), ridge.predict(X))


def test_rank_deficient_design_gives_minimum_norm_solution():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 3))
    X = np.hstack([base, base[:, :1]])  # duplicated column
    y = (base[:, 0] > 0).astype(int)
    clf = LinearRegressionClassifier().fit(X, y)
    assert clf.rank_ == 3
    # The weight is split evenly between the two copies (minimum norm).
    assert clf.coef_[0, 0] == pytest.approx(clf.coef_[0, 3], rel=1e-8)
    wide = LinearRegressionClassifier().fit(rng.normal(size=(10, 50)), np.arange(10) % 2)
    assert np.all(np.isfinite(wide.coef_))



def test_exactly_rank_deficient_block_is_not_amplified_on_new_groups():
    # Regression: columns constant within a group (as the AIF is within a patient) have
    # rank n_groups - 1 after centring; LAPACK's default cutoff kept round-off directions
    # (singular values ~1e-13): held-out groups got scores of ~1e12 and AUC ~0.55.
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(20), 30)
    curves = 500.0 * rng.uniform(0.5, 1.5, (20, 60))
    free = rng.standard_normal((len(groups), 40))
    X = np.hstack([free, curves[groups]]).astype(np.float32)
    y = (free[:, 0] + 0.5 * rng.standard_normal(len(groups)) > 0).astype(int)
    train = groups < 15
    clf = LinearRegressionClassifier().fit(X[train], y[train])
    assert clf.rank_ == 40 + 15 - 1
    codes = np.where(y[train] == 1, 1.0, -1.0)
    centred = X[train].astype(float) - X[train].astype(float).mean(axis=0)
    coef = np.linalg.lstsq(centred, codes - codes.mean(), rcond=None)[0]
    expected = (X[~train] - X[train].astype(float).mean(axis=0)) @ coef + codes.mean()
    np.testing.assert_allclose(clf.decision_function(X[~train]), expected, rtol=1e-6,
                               atol=1e-6)
    assert np.abs(expected).max() < 10.0
    assert roc_auc_score(y[~train], clf.decision_function(X[~train])) > 0.85

def test_without_intercept():
    X, y = make_classification(100, n_features=4, random_state=1)
    clf = LinearRegressionClassifier(fit_intercept=False).fit(X, y)
    np.testing.assert_array_equal(clf.intercept_, [0.0])
    codes = np.where(y == 1, 1.0, -1.0)
    expected = np.linalg.lstsq(X, codes, rcond=None)[0]
    np.testing.assert_allclose(clf.coef_[0], expected, rtol=1e-10)


def test_one_class_error_names_the_fix():
    with pytest.raises(ValueError, match="at least 2 classes"):
        LinearRegressionClassifier().fit(np.eye(4), ["a"] * 4)
