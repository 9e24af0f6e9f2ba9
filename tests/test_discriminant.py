"""Tests of the spectral-regression discriminant classifiers (SRDA, SR-KDA)."""

import numpy as np
import pytest
from sklearn import config_context
from sklearn.datasets import make_blobs, make_classification
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics import roc_auc_score
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.model_selection import train_test_split

from sklearn_hemo.discriminant import SRDAClassifier, SRKDAClassifier


def _responses_by_hand(y_idx, n_classes):
    """Classical Gram-Schmidt of [1, e_0, ..., e_{c-2}], then drop the constant."""
    basis = [np.ones(y_idx.shape[0])]
    for k in range(n_classes - 1):
        v = (y_idx == k).astype(float)
        for b in basis:
            v -= (v @ b) / (b @ b) * b
        basis.append(v)
    Q = np.column_stack([b / np.linalg.norm(b) for b in basis])
    return Q[:, 1:]


def _closed_form_decision(X_train, y_idx, X_test, n_classes, gamma, alpha):
    """Kernel ridge on the coded targets, then squared distances to the class centroids."""
    Y = _responses_by_hand(y_idx, n_classes)
    ridge = KernelRidge(kernel="rbf", gamma=gamma, alpha=alpha).fit(X_train, Y)
    E_train = ridge.predict(X_train).reshape(len(X_train), -1)
    centroids = np.stack([E_train[y_idx == k].mean(axis=0) for k in range(n_classes)])
    D = euclidean_distances(ridge.predict(X_test).reshape(len(X_test), -1), centroids) ** 2
    return D


@pytest.mark.parametrize("n_classes", [2, 4])
def test_exact_srkda_equals_closed_form(n_classes):
    X, y = make_blobs(120, n_features=5, centers=n_classes, cluster_std=4.0, random_state=0)
    X_test = np.random.default_rng(1).normal(scale=5.0, size=(30, 5))
    clf = SRKDAClassifier(gamma=0.05, alpha=0.1).fit(X, y)
    D = _closed_form_decision(X, y, X_test, n_classes, gamma=0.05, alpha=0.1)
    expected = D[:, 0] - D[:, 1] if n_classes == 2 else -D
    np.testing.assert_allclose(clf.decision_function(X_test), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(clf.predict(X_test), np.argmin(D, axis=1))


def test_response_basis_is_orthonormal_and_orthogonal_to_constant():
    from sklearn_hemo.discriminant import _spectral_responses

    y_idx = np.array([0, 0, 1, 2, 2, 2, 1, 0, 2])
    Y = _spectral_responses(y_idx, 3)
    assert Y.shape == (9, 2)
    np.testing.assert_allclose(Y.T @ Y, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(Y.sum(axis=0), 0.0, atol=1e-12)
    # Same span as the hand-made Gram-Schmidt basis: projecting one onto the other keeps it.
    H = _responses_by_hand(y_idx, 3)
    np.testing.assert_allclose(Y @ (Y.T @ H), H, atol=1e-12)


def test_default_gamma_is_cai_width():
    X, y = make_classification(200, n_features=8, random_state=0)
    clf = SRKDAClassifier().fit(X, y)
    D = euclidean_distances(X)
    t = D.sum() / (len(X) * (len(X) - 1))  # mean over distinct pairs
    assert clf.gamma_ == pytest.approx(1.0 / (2.0 * t**2), rel=1e-12)


def test_default_gamma_subsample_is_reproducible(monkeypatch):
    import sklearn_hemo.discriminant as disc

    monkeypatch.setattr(disc, "_GAMMA_SAMPLE_SIZE", 50)
    X, y = make_classification(300, n_features=8, random_state=0)
    g0 = SRKDAClassifier(n_components=30, random_state=0).fit(X, y).gamma_
    g0_again = SRKDAClassifier(n_components=30, random_state=0).fit(X, y).gamma_
    g1 = SRKDAClassifier(n_components=30, random_state=1).fit(X, y).gamma_
    assert g0 == g0_again
    assert g0 != g1
    full = 1.0 / (2.0 * (euclidean_distances(X).sum() / (300 * 299)) ** 2)
    assert g0 == pytest.approx(full, rel=0.2)


@pytest.mark.parametrize("gamma", [0.5, None])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_nystroem_with_all_landmarks_reproduces_exact(gamma, n_classes):
    # m = n: Phi Phi^T = K, and the feature-space ridge equals the kernel ridge
    # (push-through identity), so the two paths differ only by rounding.
    X, y = make_blobs(90, n_features=4, centers=n_classes, cluster_std=3.0, random_state=2)
    X_test = np.random.default_rng(0).normal(scale=4.0, size=(25, 4))
    exact = SRKDAClassifier(gamma=gamma).fit(X, y)
    nystroem = SRKDAClassifier(gamma=gamma, n_components=500, random_state=0).fit(X, y)
    assert nystroem.n_components_ == 90
    assert exact.n_components_ is None
    d_exact = exact.decision_function(X_test)
    scale = np.abs(d_exact).max()
    np.testing.assert_allclose(nystroem.decision_function(X_test), d_exact, atol=1e-8 * scale)
    np.testing.assert_array_equal(nystroem.predict(X_test), exact.predict(X_test))


def test_block_size_does_not_change_results():
    X, y = make_blobs(70, n_features=3, centers=3, cluster_std=2.0, random_state=0)
    reference = SRKDAClassifier(gamma=0.2).fit(X, y).decision_function(X)
    for block_size in (1, 7, 1000):
        clf = SRKDAClassifier(gamma=0.2, block_size=block_size).fit(X, y)
        np.testing.assert_allclose(clf.decision_function(X), reference, rtol=1e-12, atol=1e-14)
    ny_ref = SRKDAClassifier(gamma=0.2, n_components=30, random_state=0).fit(X, y)
    ny_blocks = SRKDAClassifier(gamma=0.2, n_components=30, random_state=0, block_size=4)
    np.testing.assert_allclose(
        ny_blocks.fit(X, y).decision_function(X), ny_ref.decision_function(X), atol=1e-12
    )
    # With block_size=None the blocks follow sklearn's working_memory setting.
    with config_context(working_memory=0.001):  # ~1 kB: a handful of rows per block
        assert SRKDAClassifier()._rows_per_block(70) < 70
        clf = SRKDAClassifier(gamma=0.2).fit(X, y)
    np.testing.assert_allclose(clf.decision_function(X), reference, rtol=1e-12, atol=1e-14)


def test_exact_fit_holds_a_single_kernel_matrix():
    import tracemalloc

    n = 600
    X, y = make_classification(n, n_features=10, random_state=0)
    clf = SRKDAClassifier(block_size=50)
    tracemalloc.start()
    clf.fit(X, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    kernel_bytes = 8 * n * n
    # K plus O(n * block) temporaries: well under two kernels' worth.
    assert kernel_bytes <= peak < 1.5 * kernel_bytes


def test_string_labels_and_multiclass():
    X, y_int = make_blobs(150, n_features=4, centers=3, random_state=0)
    labels = np.array(["grey", "penumbra", "core"])[y_int]
    for clf in (SRKDAClassifier(), SRKDAClassifier(n_components=40, random_state=0),
                SRDAClassifier()):
        clf.fit(X, labels)
        assert list(clf.classes_) == ["core", "grey", "penumbra"]
        assert clf.decision_function(X).shape == (150, 3)
        assert clf.centroids_.shape == (3, 2)
        assert clf.score(X, labels) > 0.95


def test_binary_decision_orients_toward_second_class():
    X, y = make_blobs(100, n_features=2, centers=[[-3, 0], [3, 0]], random_state=0)
    labels = np.where(y == 1, "ht", "no-ht")  # classes_ = ["ht", "no-ht"]
    clf = SRKDAClassifier().fit(X, labels)
    scores = clf.decision_function(X)
    assert roc_auc_score(labels == "no-ht", scores) > 0.99
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(scores > 0).astype(int)])


def test_separable_problem_high_auc_and_nystroem_close_to_exact():
    X, y = make_classification(
        1200, n_features=30, n_informative=10, class_sep=1.5, random_state=0
    )
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.5, random_state=0)
    exact = SRKDAClassifier(alpha=0.1).fit(X_tr, y_tr)
    approx = SRKDAClassifier(alpha=0.1, n_components=300, random_state=0).fit(X_tr, y_tr)
    auc_exact = roc_auc_score(y_te, exact.decision_function(X_te))
    auc_approx = roc_auc_score(y_te, approx.decision_function(X_te))
    assert auc_exact > 0.95
    assert abs(auc_exact - auc_approx) < 0.02


def test_srda_matches_lda_direction():
    # Two classes: the SRDA projection is the (ridge-regularised) Fisher direction.
    X, y = make_classification(400, n_features=6, n_informative=4, n_redundant=0, random_state=0)
    srda = SRDAClassifier(alpha=1e-8).fit(X, y)
    lda = LinearDiscriminantAnalysis(solver="eigen").fit(X, y)
    u = srda.coef_[:, 0] / np.linalg.norm(srda.coef_[:, 0])
    v = lda.scalings_[:, 0] / np.linalg.norm(lda.scalings_[:, 0])
    assert abs(u @ v) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(srda.predict(X), lda.predict(X))


def test_srda_dual_path_equals_primal_path():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 8))
    y = (X[:, 0] + 0.5 * rng.normal(size=30) > 0).astype(int)
    primal = SRDAClassifier(alpha=0.3).fit(X, y)  # n >= d: d x d system
    X_wide = np.hstack([X, rng.normal(size=(30, 40))])
    wide = SRDAClassifier(alpha=0.3).fit(X_wide, y)  # n < d: n x n system
    # Check the wide fit against the normal equations directly.
    Xc = X_wide - X_wide.mean(axis=0)
    from sklearn_hemo.discriminant import _spectral_responses

    Y = _spectral_responses(y, 2)
    direct = np.linalg.solve(Xc.T @ Xc + 0.3 * np.eye(48), Xc.T @ Y)
    np.testing.assert_allclose(wide.coef_, direct, rtol=1e-8, atol=1e-12)
    assert primal.coef_.shape == (8, 1)


def test_refit_in_other_mode_drops_stale_arrays():
    X, y = make_blobs(60, n_features=3, centers=2, random_state=0)
    clf = SRKDAClassifier().fit(X, y)
    assert hasattr(clf, "X_fit_")
    clf.set_params(n_components=10, random_state=0).fit(X, y)
    assert not hasattr(clf, "X_fit_") and not hasattr(clf, "dual_coef_")
    assert clf.nystroem_.n_components == 10


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"kernel": lambda a, b: float(a @ b), "gamma": 1.0}, "callable kernel"),
        ({"kernel": "sigmoid", "gamma": 5.0, "alpha": 1e-10}, "alpha"),
    ],
)
def test_errors_name_the_parameter(params, match):
    X, y = make_blobs(40, n_features=3, centers=2, random_state=0)
    with pytest.raises(ValueError, match=match):
        SRKDAClassifier(**params).fit(X, y)


def test_one_class_error_names_the_fix():
    X = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="at least 2 classes"):
        SRKDAClassifier().fit(X, np.zeros(10))


def test_other_kernels_and_callable():
    X, y = make_blobs(80, n_features=3, centers=2, random_state=0)

    def linear(a, b, scale=1.0):
        return scale * float(a @ b)

    for clf in (
        SRKDAClassifier(kernel="laplacian"),
        SRKDAClassifier(kernel="poly", kernel_params={"degree": 2, "coef0": 1.0}),
        SRKDAClassifier(kernel=linear, kernel_params={"scale": 2.0}),
        SRKDAClassifier(kernel=linear, n_components=20, random_state=0),
    ):
        assert clf.fit(X, y).score(X, y) > 0.95
        assert clf.gamma_ is None
