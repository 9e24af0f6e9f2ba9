"""The linear-regression baseline of Yu et al. (2019): least squares on coded labels."""

from __future__ import annotations

import numpy as np
from scipy.linalg import lstsq
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .utils.fixes import _fit_context

__all__ = ["LinearRegressionClassifier"]


class LinearRegressionClassifier(ClassifierMixin, BaseEstimator):
    """Ordinary least-squares classifier with a continuous score.

    The "linear regression" comparison model: labels are coded ``+1`` / ``-1``
    (one column per class, one-vs-rest, when there are more than two classes) and an
    ordinary, unregularised least-squares fit is made to the codes. The regression
    output is the score (``decision_function``), so ROC and PR curves rank samples by
    it; ``predict`` thresholds it at the midpoint of the codes, 0 (or takes the largest
    column). Rank-deficient designs (collinear features, fewer samples than features)
    get the minimum-norm least-squares solution; singular values below
    ``max(n_samples, n_features) * eps`` times the largest count as zero (the rank
    tolerance of :func:`numpy.linalg.lstsq` and :func:`numpy.linalg.matrix_rank`).

    This is :class:`sklearn.linear_model.RidgeClassifier` at ``alpha=0``, written with
    an SVD least-squares solver because the Cholesky path of ridge fails (or warns) on
    the singular normal equations that ``alpha=0`` gives.

    Parameters
    ----------
    fit_intercept : bool, default=True
        Fit an intercept (equivalently, centre ``X`` and the codes before solving).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        Least-squares coefficients; one row for two classes (the code of
        ``classes_[1]``), one row per class otherwise.
    intercept_ : ndarray of shape (1,) or (n_classes,)
        Intercepts (zeros when ``fit_intercept=False``).
    rank_ : int
        Rank of the (centred) design matrix.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when X has string column names.

    See Also
    --------
    sklearn.linear_model.RidgeClassifier : The regularised version.
    sklearn.linear_model.LogisticRegression : A likelihood-based linear classifier.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn_hemo.linear_model import LinearRegressionClassifier
    >>> X, y = make_classification(n_samples=200, n_features=10, random_state=0)
    >>> clf = LinearRegressionClassifier().fit(X, y)
    >>> clf.decision_function(X[:4]).shape
    (4,)
    >>> float(clf.score(X, y)) > 0.85
    True
    """

    _parameter_constraints: dict = {"fit_intercept": ["boolean"]}

    def __init__(self, fit_intercept=True):
        self.fit_intercept = fit_intercept

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit least squares to the ``+1`` / ``-1`` coded labels.

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
        binarizer = LabelBinarizer(neg_label=-1, pos_label=1)
        Y = binarizer.fit_transform(y).astype(np.float64)
        self.classes_ = binarizer.classes_
        if self.classes_.shape[0] < 2:
            raise ValueError(
                "LinearRegressionClassifier needs samples of at least 2 classes in y; got "
                f"1 class ({self.classes_[0]!r}). Pass labels of both outcomes."
            )
        if self.fit_intercept:
            x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
            X, Y = X - x_mean, Y - y_mean
        # LAPACK's default cutoff (eps * largest singular value) is below the SVD's own
        # round-off, so an exactly rank-deficient design (e.g. AIF columns, constant within
        # a patient) keeps null directions with singular values ~1e-13 and coefficients
        # ~1e12: held-out patients then get scores of ~1e10 that swamp the voxel ranking.
        cond = max(X.shape) * np.finfo(np.float64).eps
        coef, _, self.rank_, _ = lstsq(X, Y, cond=cond, check_finite=False)
        self.coef_ = np.ascontiguousarray(coef.T)
        if self.fit_intercept:
            self.intercept_ = y_mean - x_mean @ coef
        else:
            self.intercept_ = np.zeros(Y.shape[1])
        return self

    def decision_function(self, X):
        """Return the regression output, the continuous score of each class code.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to score.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Two classes: the fitted code of ``classes_[1]`` (positive: ``classes_[1]``).
            More classes: one fitted one-vs-rest code per class.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        scores = X @ self.coef_.T + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, X):
        """Predict the class whose code the regression output is nearest to.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to classify.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted labels: ``classes_[1]`` where the score is above 0 (two classes),
            else the class of the largest score.
        """
        scores = self.decision_function(X)
        indices = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[indices]
