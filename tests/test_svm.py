"""Tests of ScalableSVC: exact LIBSVM below the threshold, Nystroem + linear SVM above."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs, make_classification
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from sklearn_hemo.svm import ScalableSVC


@pytest.mark.parametrize("gamma", ["scale", "auto", 0.3])
def test_small_data_is_exactly_svc(gamma):
    X, y = make_classification(200, n_features=6, random_state=0)
    ours = ScalableSVC(C=2.0, gamma=gamma).fit(X, y)
    svc = SVC(C=2.0, gamma=gamma).fit(X, y)
    assert ours.solver_ == "libsvm" and isinstance(ours.estimator_, SVC)
    assert ours.gamma_ == pytest.approx(svc._gamma)
    np.testing.assert_allclose(ours.decision_function(X), svc.decision_function(X), rtol=1e-10)


def test_switches_to_nystroem_above_threshold_and_stays_accurate():
    X, y = make_classification(
        1000, n_features=20, n_informative=8, class_sep=1.2, random_state=0
    )
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.5, random_state=0)
    exact = ScalableSVC(max_exact_samples=500).fit(X_tr, y_tr)
    approx = ScalableSVC(max_exact_samples=499, n_components=300, random_state=0)
    approx.fit(X_tr, y_tr)
    assert exact.solver_ == "libsvm"
    assert approx.solver_ == "nystroem" and isinstance(approx.estimator_, Pipeline)
    assert approx.estimator_[0].gamma == pytest.approx(exact.gamma_)
    auc_exact = roc_auc_score(y_te, exact.decision_function(X_te))
    auc_approx = roc_auc_score(y_te, approx.decision_function(X_te))
    assert auc_exact > 0.9
    assert abs(auc_exact - auc_approx) < 0.03


def test_nystroem_path_multiclass_string_labels_and_reproducible():
    X, y = make_blobs(300, n_features=4, centers=3, random_state=0)
    labels = np.array(["a", "b", "c"])[y]
    params = dict(max_exact_samples=10, n_components=500, random_state=0)
    clf = ScalableSVC(**params).fit(X, labels)
    assert clf.estimator_[0].n_components == 300  # capped at n_samples
    assert clf.decision_function(X).shape == (300, 3)
    assert clf.score(X, labels) > 0.95
    again = ScalableSVC(**params).fit(X, labels)
    np.testing.assert_array_equal(clf.decision_function(X), again.decision_function(X))
