"""Spectral-regression discriminant analysis: SRDA and SR-KDA (Cai, He and Han, 2007).

Linear discriminant analysis and its kernel version need an eigen-decomposition of an
``n x n`` (kernel) or ``d x d`` (linear) scatter problem. Spectral regression replaces it
with regularised least squares: the generalised eigenvectors of the LDA graph are known in
closed form (class indicators made orthogonal to the constant vector, ``c - 1`` of them),
so one only needs to *regress* those responses on the data. For the kernel version this
is one Cholesky solve of ``(K + alpha I) A = Y``; the embedding of a sample ``x`` is
``K(x, X) A``. Samples are classified by the nearest class centroid in the embedding.

The scalable variant replaces the kernel by ``m`` Nystroem landmarks
(:class:`sklearn.kernel_approximation.Nystroem`): with features ``Phi`` (``n x m``),
``K ~ Phi Phi^T`` and the same ridge problem is solved in ``m`` dimensions,
``(Phi^T Phi + alpha I) W = Phi^T Y``. By the push-through identity
``Phi (Phi^T Phi + alpha I)^-1 Phi^T = Phi Phi^T (Phi Phi^T + alpha I)^-1``, so with all
``n`` training samples as landmarks it is exactly the kernel method, and with ``m << n``
it needs ``O(n m + m^2)`` time per pass and ``O(block m + m^2)`` memory.

References
----------
D. Cai, X. He and J. Han, "Efficient kernel discriminant analysis via spectral
regression", ICDM 2007. D. Cai, X. He and J. Han, "SRDA: an efficient algorithm for
large-scale discriminant analysis", IEEE TKDE 20(1), 2008.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve
from sklearn import get_config
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.kernel_approximation import Nystroem
from sklearn.metrics.pairwise import (
    KERNEL_PARAMS,
    PAIRWISE_KERNEL_FUNCTIONS,
    pairwise_distances_chunked,
    pairwise_kernels,
)
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .utils.fixes import Interval, StrOptions, _fit_context

__all__ = ["SRDAClassifier", "SRKDAClassifier"]

# Cai's reference code estimates the heat-kernel width from at most 3000 samples.
_GAMMA_SAMPLE_SIZE = 3000


def _spectral_responses(y_idx, n_classes):
    """Return the ``c - 1`` spectral-regression responses for encoded labels ``y_idx``.

    Gram-Schmidt (here Householder QR, equal up to column signs) of ``[1, e_0, ...,
    e_{c-2}]`` with ``e_k`` the indicator of class ``k``; dropping the first column leaves
    an orthonormal basis of the class indicators orthogonal to the constant vector, the
    non-trivial eigenvectors of the LDA graph. Any orthonormal basis of that space gives
    the same classifier (distances in the embedding are invariant to the rotation).
    """
    Z = np.zeros((y_idx.shape[0], n_classes))
    Z[:, 0] = 1.0
    rows = np.flatnonzero(y_idx < n_classes - 1)
    Z[rows, y_idx[rows] + 1] = 1.0
    Q, _ = np.linalg.qr(Z)
    return Q[:, 1:]


def _class_sums(E, y_idx, n_classes):
    """Per-class sums of the rows of ``E`` (a one-hot product: BLAS, unlike np.add.at)."""
    return np.eye(n_classes)[y_idx].T @ E


def _class_means(E, y_idx, n_classes):
    """Per-class mean rows of ``E``: the class centroids."""
    return _class_sums(E, y_idx, n_classes) / np.bincount(y_idx, minlength=n_classes)[:, None]


def _cholesky_solve(G, B, *, what):
    """Solve ``G X = B`` for symmetric positive definite ``G``, overwriting ``G``.

    ``G.T`` is passed so that a C-ordered symmetric matrix reaches LAPACK as a
    Fortran-ordered one and is factorised in place: no second ``n x n`` copy.
    """
    try:
        factor = cho_factor(G.T, lower=False, overwrite_a=True, check_finite=False)
    except LinAlgError as exc:
        raise ValueError(
            f"The regularised {what} matrix is not positive definite ({exc}). Increase "
            "`alpha`, or use a positive semi-definite kernel."
        ) from exc
    return cho_solve(factor, B, check_finite=False)


class _SpectralRegressionClassifier(ClassifierMixin, BaseEstimator):
    """Shared fit/predict of the spectral-regression classifiers.

    Subclasses implement ``_fit_centroids(X, Y, y_idx)`` (solve the regression, return
    the class centroids in the embedding) and ``_embed(X)`` (embed validated samples).
    """

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit the discriminant embedding and the class centroids.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training samples.
        y : array-like of shape (n_samples,)
            Class labels (any hashable type, at least two distinct values).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        # float64 throughout: the Cholesky factorisation of a nearly singular kernel
        # matrix is where single precision would lose the solution.
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        n_classes = self.classes_.shape[0]
        if n_classes < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in y; got "
                f"1 class ({self.classes_[0]!r}). Pass labels of both outcomes."
            )
        Y = _spectral_responses(y_idx, n_classes)
        self.centroids_ = self._fit_centroids(X, Y, y_idx)
        return self

    def _squared_distances(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        E = self._embed(X)
        # c is small: direct differences are exact, unlike the |a|^2 - 2ab + |b|^2 trick.
        return ((E[:, None, :] - self.centroids_[None, :, :]) ** 2).sum(axis=2)

    def decision_function(self, X):
        """Score samples by their squared distances to the class centroids.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to score.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Two classes: ``d0 - d1``, the squared distance to the centroid of
            ``classes_[0]`` minus that to ``classes_[1]``; positive means closer to
            ``classes_[1]`` (so it ranks samples for ROC/PR curves). More classes: minus
            the squared distance to each centroid (the largest wins).
        """
        D = self._squared_distances(X)
        if D.shape[1] == 2:
            return D[:, 0] - D[:, 1]
        return -D

    def predict(self, X):
        """Predict the class of the nearest centroid in the embedding.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to classify.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted labels, taken from ``classes_``.
        """
        D = self._squared_distances(X)  # validates (and checks fitted) first
        # argmin breaks ties toward classes_[0], as ``decision_function > 0`` does.
        return self.classes_[np.argmin(D, axis=1)]


class SRDAClassifier(_SpectralRegressionClassifier):
    """Spectral Regression Discriminant Analysis (linear), nearest-centroid classifier.

    Linear discriminant analysis computed as a ridge regression (Cai, He and Han, 2008):
    the ``c - 1`` spectral responses (class indicators orthogonal to the constant vector)
    are regressed on the centred data, ``(Xc^T Xc + alpha I) a = Xc^T Y``, solved by
    Cholesky in whichever of the ``n_features`` or ``n_samples`` dimensions is smaller.
    Samples are classified by the nearest class centroid in the embedding ``Xc a``.

    Parameters
    ----------
    alpha : float, default=0.01
        Ridge regularisation, strictly positive. Larger values shrink the embedding
        toward the directions of largest variance.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    mean_ : ndarray of shape (n_features,)
        Training mean, subtracted before projection.
    coef_ : ndarray of shape (n_features, n_classes - 1)
        Projection onto the discriminant embedding.
    centroids_ : ndarray of shape (n_classes, n_classes - 1)
        Class means in the embedding.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    SRKDAClassifier : The kernel version.
    sklearn.discriminant_analysis.LinearDiscriminantAnalysis : Eigen-solver LDA.

    References
    ----------
    D. Cai, X. He and J. Han, "SRDA: an efficient algorithm for large-scale discriminant
    analysis", IEEE Transactions on Knowledge and Data Engineering 20(1), 2008.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn_hemo.discriminant import SRDAClassifier
    >>> X, y = make_classification(n_samples=200, n_features=20, random_state=0)
    >>> clf = SRDAClassifier(alpha=1.0).fit(X, y)
    >>> clf.coef_.shape
    (20, 1)
    >>> float(clf.score(X, y)) > 0.9
    True
    """

    _parameter_constraints: dict = {
        "alpha": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, alpha=0.01):
        self.alpha = alpha

    def _fit_centroids(self, X, Y, y_idx):
        self.mean_ = X.mean(axis=0)
        Xc = X - self.mean_
        n_samples, n_features = Xc.shape
        if n_samples >= n_features:
            G = Xc.T @ Xc
            G.flat[:: n_features + 1] += self.alpha
            self.coef_ = _cholesky_solve(G, Xc.T @ Y, what="scatter")
        else:
            # Push-through identity: Xc^T (Xc Xc^T + aI)^-1 Y, an n x n system instead.
            G = Xc @ Xc.T
            G.flat[:: n_samples + 1] += self.alpha
            self.coef_ = Xc.T @ _cholesky_solve(G, Y, what="Gram")
        return _class_means(Xc @ self.coef_, y_idx, self.classes_.shape[0])

    def _embed(self, X):
        return (X - self.mean_) @ self.coef_


class SRKDAClassifier(_SpectralRegressionClassifier):
    """Spectral Regression Kernel Discriminant Analysis (SR-KDA), exact or Nystroem.

    Kernel discriminant analysis computed as a kernel ridge regression (Cai, He and Han,
    2007): the ``c - 1`` spectral responses ``Y`` (class indicators orthogonal to the
    constant vector) are regressed on the kernel, ``(K + alpha I) A = Y`` by Cholesky;
    a sample ``x`` is embedded as ``K(x, X) A`` and classified by the nearest class
    centroid in that embedding. This is the SR-KDA comparison model of Yu et al. (2019).

    ``n_components=None`` is the exact method: the ``n x n`` kernel is built in row
    blocks and factorised in place, so its memory is ``8 n^2`` bytes and nothing more of
    that order (20,000 samples: 3.2 GB). ``n_components=m`` uses ``m`` Nystroem landmarks
    and solves the same ridge problem in the ``m``-dimensional feature space: memory
    ``O(m^2 + block m)`` and time ``O(n m^2)``, so 50,000 samples fit on a laptop. With
    ``m >= n_samples`` every sample is a landmark and the result equals the exact method.

    Parameters
    ----------
    kernel : str or callable, default="rbf"
        Kernel of :func:`sklearn.metrics.pairwise.pairwise_kernels` ("rbf", "laplacian",
        "poly", "sigmoid", "linear", "cosine", "chi2", ...), or a callable of two rows.
    gamma : float, default=None
        Kernel coefficient of "rbf", "laplacian", "poly", "sigmoid" and "chi2". ``None``
        with "rbf" uses Cai's heat-kernel width: ``t`` = mean Euclidean distance between
        distinct samples of a random subset of at most 3000 training samples, and
        ``gamma = 1 / (2 t^2)``; with the other kernels, scikit-learn's default. Must
        be ``None`` for a callable kernel (pass its arguments through ``kernel_params``).
    alpha : float, default=0.01
        Ridge regularisation added to the kernel diagonal, strictly positive.
    n_components : int, default=None
        ``None``: exact kernel. An int ``m``: number of Nystroem landmarks, drawn at
        random from the training samples (capped at ``n_samples``).
    kernel_params : dict, default=None
        Extra keyword arguments of the kernel (``degree``, ``coef0``, or those of a
        callable).
    block_size : int, default=None
        Rows of the kernel (or of the Nystroem features) computed at a time. ``None``
        picks the number of rows that fits scikit-learn's ``working_memory`` setting
        (:func:`sklearn.set_config`). Results do not depend on it.
    random_state : int, RandomState instance or None, default=None
        Draws the subset used for the default ``gamma`` and the Nystroem landmarks.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    gamma_ : float or None
        Kernel coefficient used (``None`` when the kernel does not take one).
    centroids_ : ndarray of shape (n_classes, n_classes - 1)
        Class means in the embedding.
    X_fit_ : ndarray of shape (n_samples, n_features)
        Training samples (exact method only).
    dual_coef_ : ndarray of shape (n_samples, n_classes - 1)
        Solution ``A`` of ``(K + alpha I) A = Y`` (exact method only).
    nystroem_ : :class:`~sklearn.kernel_approximation.Nystroem`
        Fitted feature map (Nystroem method only).
    coef_ : ndarray of shape (n_components_, n_classes - 1)
        Ridge solution in the Nystroem feature space (Nystroem method only).
    n_components_ : int or None
        Landmarks used; ``None`` for the exact method.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    SRDAClassifier : The linear version.
    sklearn.kernel_ridge.KernelRidge : The regression solved here.

    Notes
    -----
    ``decision_function`` gives a signed score for two classes (positive: closer to
    ``classes_[1]``) suitable for ROC and PR curves. There is no ``predict_proba``:
    distances to centroids are not calibrated probabilities; wrap the estimator in
    :class:`sklearn.calibration.CalibratedClassifierCV` when probabilities are needed.

    References
    ----------
    D. Cai, X. He and J. Han, "Efficient kernel discriminant analysis via spectral
    regression", Proceedings of the IEEE International Conference on Data Mining, 2007.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from sklearn_hemo.discriminant import SRKDAClassifier
    >>> X, y = make_moons(n_samples=300, noise=0.1, random_state=0)
    >>> exact = SRKDAClassifier(gamma=5.0).fit(X, y)
    >>> float(exact.score(X, y)) > 0.95
    True
    >>> scalable = SRKDAClassifier(gamma=5.0, n_components=100, random_state=0).fit(X, y)
    >>> scalable.decision_function(X[:3]).shape
    (3,)
    """

    _parameter_constraints: dict = {
        "kernel": [StrOptions(set(PAIRWISE_KERNEL_FUNCTIONS)), callable],
        "gamma": [Interval(Real, 0, None, closed="neither"), None],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "kernel_params": [dict, None],
        "block_size": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        kernel="rbf",
        gamma=None,
        alpha=0.01,
        n_components=None,
        kernel_params=None,
        block_size=None,
        random_state=None,
    ):
        self.kernel = kernel
        self.gamma = gamma
        self.alpha = alpha
        self.n_components = n_components
        self.kernel_params = kernel_params
        self.block_size = block_size
        self.random_state = random_state

    def _kernel_params(self):
        params = dict(self.kernel_params or {})
        if self.gamma_ is not None:
            params["gamma"] = self.gamma_
        return params

    def _resolve_gamma(self, X, rng):
        if callable(self.kernel):
            if self.gamma is not None:
                raise ValueError(
                    "gamma is only used by the named kernels; with a callable kernel set "
                    "gamma=None and pass its arguments through kernel_params."
                )
            return None
        if "gamma" not in KERNEL_PARAMS[self.kernel]:
            return None
        if self.gamma is not None or self.kernel != "rbf":
            return None if self.gamma is None else float(self.gamma)
        # Cai's width for the heat kernel exp(-|x - y|^2 / (2 t^2)).
        n_samples = X.shape[0]
        if n_samples > _GAMMA_SAMPLE_SIZE:
            X = X[rng.choice(n_samples, _GAMMA_SAMPLE_SIZE, replace=False)]
        n_sub = X.shape[0]
        total = sum(
            float(D.sum()) for D in pairwise_distances_chunked(X, metric="euclidean")
        )
        t = total / (n_sub * (n_sub - 1))
        # Identical samples: every width gives the same (constant) kernel.
        return 1.0 / (2.0 * t * t) if t > 0 else 1.0

    def _rows_per_block(self, n_columns):
        if self.block_size is not None:
            return self.block_size
        # A kernel block and the two same-sized temporaries of the Euclidean distances
        # behind it: ~3 float64 per entry.
        working_bytes = get_config()["working_memory"] * 2**20
        return max(1, int(working_bytes // (24 * n_columns)))

    def _fit_centroids(self, X, Y, y_idx):
        # A refit in the other mode must not keep the previous mode's (large) arrays.
        for name in ("X_fit_", "dual_coef_", "nystroem_", "coef_"):
            self.__dict__.pop(name, None)
        rng = check_random_state(self.random_state)
        self.gamma_ = self._resolve_gamma(X, rng)
        if self.n_components is None:
            return self._fit_exact(X, Y, y_idx)
        return self._fit_nystroem(X, Y, y_idx, rng)

    def _fit_exact(self, X, Y, y_idx):
        n_samples = X.shape[0]
        self.n_components_ = None
        params = self._kernel_params()
        K = np.empty((n_samples, n_samples))
        for rows in gen_batches(n_samples, self._rows_per_block(n_samples)):
            K[rows] = pairwise_kernels(
                X[rows], X, metric=self.kernel, filter_params=True, **params
            )
        K.flat[:: n_samples + 1] += self.alpha
        self.dual_coef_ = _cholesky_solve(K, Y, what="kernel")
        del K
        self.X_fit_ = X
        # K A = Y - alpha A, so the training embedding needs no second kernel pass.
        return _class_means(Y - self.alpha * self.dual_coef_, y_idx, self.classes_.shape[0])

    def _fit_nystroem(self, X, Y, y_idx, rng):
        n_samples = X.shape[0]
        n_classes = self.classes_.shape[0]
        self.n_components_ = min(self.n_components, n_samples)
        # gamma travels in kernel_params: Nystroem refuses gamma= with callable kernels.
        self.nystroem_ = Nystroem(
            kernel=self.kernel,
            kernel_params=self._kernel_params(),
            n_components=self.n_components_,
            random_state=rng,
        ).fit(X)
        m = self.n_components_
        gram = np.zeros((m, m))
        rhs = np.zeros((m, Y.shape[1]))
        class_sums = np.zeros((n_classes, m))
        # Accumulate Phi^T Phi, Phi^T Y and per-class sums of Phi over row blocks, so
        # the n x m feature matrix never exists as a whole.
        for rows in gen_batches(n_samples, self._rows_per_block(m)):
            Phi = self.nystroem_.transform(X[rows])
            gram += Phi.T @ Phi
            rhs += Phi.T @ Y[rows]
            class_sums += _class_sums(Phi, y_idx[rows], n_classes)
        gram.flat[:: m + 1] += self.alpha
        self.coef_ = _cholesky_solve(gram, rhs, what="Nystroem feature")
        counts = np.bincount(y_idx, minlength=n_classes)[:, None]
        return (class_sums / counts) @ self.coef_

    def _embed(self, X):
        E = np.empty((X.shape[0], self.centroids_.shape[1]))
        if self.n_components_ is None:
            params = self._kernel_params()
            for rows in gen_batches(X.shape[0], self._rows_per_block(self.X_fit_.shape[0])):
                block = pairwise_kernels(
                    X[rows], self.X_fit_, metric=self.kernel, filter_params=True, **params
                )
                E[rows] = block @ self.dual_coef_
        else:
            for rows in gen_batches(X.shape[0], self._rows_per_block(self.n_components_)):
                E[rows] = self.nystroem_.transform(X[rows]) @ self.coef_
        return E
