"""The SVM comparison model, with a documented switch to a scalable approximation.

Yu et al. (2019) compare against an RBF support vector machine (LIBSVM, i.e.
:class:`sklearn.svm.SVC`). Its training cost grows at least quadratically with the number
of samples (its kernel cache and SMO iterations), which the 50,000-voxel training sets of
the paper make impractical inside a nested cross-validation. :class:`ScalableSVC` is
``SVC`` up to ``max_exact_samples`` training samples and, above, the standard large-scale
substitute: a Nystroem approximation of the same RBF kernel followed by a linear SVM.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.kernel_approximation import Nystroem
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC, LinearSVC
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .utils.fixes import Interval, StrOptions, _fit_context

__all__ = ["ScalableSVC"]


class ScalableSVC(ClassifierMixin, BaseEstimator):
    """RBF support vector classifier: exact LIBSVM when small, Nystroem + linear SVM when large.

    At ``fit`` time, with ``n_samples <= max_exact_samples`` the model is
    ``SVC(kernel="rbf", C=C, gamma=gamma)`` (LIBSVM, as in Yu et al. 2019). Above the
    threshold it is ``Nystroem(kernel="rbf", gamma=gamma, n_components=n_components)``
    followed by ``LinearSVC(C=C)``: the RBF kernel approximated with ``n_components``
    random landmarks, then a linear SVM (squared hinge loss, primal solver) in that
    feature space. Cost: ``O(n_samples * n_components^2)`` instead of at least
    ``O(n_samples^2)``. Which one ran is recorded in ``solver_``; the switch depends
    on the size of the training set only, so it is decided afresh in every
    cross-validation fold.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength, strictly positive.
    gamma : {"scale", "auto"} or float, default="scale"
        RBF kernel coefficient, resolved as in :class:`~sklearn.svm.SVC`: "scale" is
        ``1 / (n_features * X.var())``, "auto" is ``1 / n_features``.
    max_exact_samples : int, default=10000
        Largest training set fitted with the exact ``SVC``.
    n_components : int, default=1000
        Nystroem landmarks for larger training sets (capped at ``n_samples``).
    random_state : int, RandomState instance or None, default=None
        Draws the Nystroem landmarks and seeds ``LinearSVC``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    gamma_ : float
        Resolved RBF coefficient.
    solver_ : {"libsvm", "nystroem"}
        The model that was fitted.
    estimator_ : SVC or Pipeline
        The fitted model.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    sklearn.svm.SVC : The exact model.
    sklearn.kernel_approximation.Nystroem : The kernel approximation.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from sklearn_hemo.svm import ScalableSVC
    >>> X, y = make_moons(n_samples=400, noise=0.1, random_state=0)
    >>> ScalableSVC(gamma=2.0).fit(X, y).solver_
    'libsvm'
    >>> big = ScalableSVC(gamma=2.0, max_exact_samples=100, n_components=100,
    ...                   random_state=0).fit(X, y)
    >>> big.solver_, float(big.score(X, y)) > 0.9
    ('nystroem', True)
    """

    _parameter_constraints: dict = {
        "C": [Interval(Real, 0, None, closed="neither")],
        "gamma": [StrOptions({"scale", "auto"}), Interval(Real, 0, None, closed="neither")],
        "max_exact_samples": [Interval(Integral, 0, None, closed="left")],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        C=1.0,
        gamma="scale",
        max_exact_samples=10_000,
        n_components=1000,
        random_state=None,
    ):
        self.C = C
        self.gamma = gamma
        self.max_exact_samples = max_exact_samples
        self.n_components = n_components
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit the exact or the approximate SVM, depending on ``n_samples``.

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
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        n_samples, n_features = X.shape
        if self.gamma == "scale":
            variance = X.var()
            # SVC's own rule, including its fallback for constant data.
            self.gamma_ = 1.0 / (n_features * variance) if variance != 0 else 1.0
        elif self.gamma == "auto":
            self.gamma_ = 1.0 / n_features
        else:
            self.gamma_ = float(self.gamma)
        if n_samples <= self.max_exact_samples:
            self.solver_ = "libsvm"
            model = SVC(C=self.C, kernel="rbf", gamma=self.gamma_)
        else:
            self.solver_ = "nystroem"
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
            model = make_pipeline(
                Nystroem(
                    kernel="rbf",
                    gamma=self.gamma_,
                    n_components=min(self.n_components, n_samples),
                    random_state=seed,
                ),
                # Primal solver: n_samples >> n_components here, the regime it is fast in.
                LinearSVC(C=self.C, dual=False, random_state=seed),
            )
        self.estimator_ = model.fit(X, y)
        self.classes_ = self.estimator_.classes_
        return self

    def decision_function(self, X):
        """Signed distance to the separating surface.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to score.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Two classes: positive means ``classes_[1]``. More classes: one-vs-rest
            scores, the largest wins.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.estimator_.decision_function(X)

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to classify.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted labels, taken from ``classes_``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.estimator_.predict(X)
