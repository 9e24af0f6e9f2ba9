"""The ROI-based permeability baseline: one score per patient, spread to its voxels."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ..base import HemoInputTags
from ..datasets import Cohort
from ..utils.fixes import Interval, StrOptions, _fit_context
from ..utils.validation import check_voxel_refs
from ._patient import MAP_NAMES, _cached_arrival_k2, cached_patient_maps

#: Measures the ROI scorer can average: the perfusion maps, and ``k2_arrival``.
_MEASURES = (*MAP_NAMES, "k2_arrival")

__all__ = ["ROIPermeabilityScorer"]


class ROIPermeabilityScorer(ClassifierMixin, BaseEstimator):
    """Patient-level DSC leakage proxy of the lesion ROI as a voxel classifier.

    The zoo's ``roi-leakage-proxy`` row, standing in for the ROI-based baseline of Yu et
    al. (MICCAI 2019, last row of their table: "ROI-based, Ktrans"; that number is a DCE
    Ktrans AUC the paper quoted from another study, not a DSC measure, so it is not
    comparable): each patient gets one score, a statistic of a DSC leakage map over the
    hypoperfused lesion, and every voxel of the patient inherits it. Voxel references go
    in, as for :class:`~sklearn_hemo.preprocessing.PatchExtractor`, so the scorer runs in
    the same patient-grouped comparison as the voxel models.

    The ROI of a patient is its brain voxels with ``roi_map > roi_threshold`` (by default
    Tmax > 6 s, the usual hypoperfusion criterion); when no voxel qualifies, the whole
    brain. The score is the ``statistic`` of ``measure`` over the ROI: by default the
    mean ``k2_arrival`` of :func:`~sklearn_hemo.perfusion.estimate_leakage_arrival`, the
    leakage K2 fitted against the reference curve delayed and dispersed to each voxel's
    own arrival (after Bjornerud et al., JCBFM 31:2041, 2011). The plain BSW ``k2`` of
    :func:`~sklearn_hemo.perfusion.estimate_leakage` (``measure="k2"``) is dominated in
    the lesion by the bolus delay, which biases it negative by more than the leakage
    raises it, so its lesion mean hardly orders patients by leakage. ``fit`` learns a
    one-feature logistic regression (standardised score to label) on the training
    voxels, so that ``predict_proba`` is calibrated and ``decision_function`` is an
    increasing or decreasing affine function of the patient's score (its sign learned
    from the data).

    A per-patient score only ranks patients, so its voxel AUC rests on the few bleeding
    patients and can fall below one half under patient-grouped cross-validation: with a
    weak score the sign learned without the held-out patients often points the wrong way
    for them.

    Parameters
    ----------
    cohort : Cohort or None, default=None
        The cohort that voxel references point into.
    measure : str, default="k2_arrival"
        Map averaged over the ROI: ``"k2_arrival"`` (K2 of
        :func:`~sklearn_hemo.perfusion.estimate_leakage_arrival`) or one of
        :data:`~sklearn_hemo.perfusion.MAP_NAMES`.
    roi_map : str, default="tmax"
        Map that defines the ROI, one of :data:`~sklearn_hemo.perfusion.MAP_NAMES`.
    roi_threshold : float, default=6.0
        ROI voxels have ``roi_map`` above it (seconds for Tmax).
    statistic : {"mean", "median"}, default="mean"
        Summary of ``measure`` over the ROI.
    method : {"osvd", "csvd", "ssvd"}, default="osvd"
        Deconvolution method of the maps.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        Class labels.
    model_ : Pipeline
        The fitted ``StandardScaler`` + ``LogisticRegression`` on the patient scores.
    n_features_in_ : int
        Always 4.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.perfusion import ROIPermeabilityScorer
    >>> from sklearn_hemo.sampling import sample_voxels
    >>> cohort = make_stroke_cohort(n_patients=6, shape=(16, 16, 2), random_state=0)
    >>> X, y, groups = sample_voxels(cohort, n_samples=10, random_state=0)
    >>> scorer = ROIPermeabilityScorer(cohort).fit(X, y)
    >>> proba = scorer.predict_proba(X)[:, 1]
    >>> bool(np.all(proba[groups == groups[0]] == proba[0]))  # one score per patient
    True
    """

    _parameter_constraints: dict = {
        "cohort": [Cohort, None],
        "measure": [StrOptions(set(_MEASURES))],
        "roi_map": [StrOptions(set(MAP_NAMES))],
        "roi_threshold": [Interval(Real, None, None, closed="neither")],
        "statistic": [StrOptions({"mean", "median"})],
        "method": [StrOptions({"osvd", "csvd", "ssvd"})],
    }

    def __init__(self, cohort=None, *, measure="k2_arrival", roi_map="tmax", roi_threshold=6.0,
                 statistic="mean", method="osvd"):
        self.cohort = cohort
        self.measure = measure
        self.roi_map = roi_map
        self.roi_threshold = roi_threshold
        self.statistic = statistic
        self.method = method

    def roi_score(self, patient_index):
        """The score of one patient: ``statistic`` of ``measure`` over its ROI.

        Parameters
        ----------
        patient_index : int
            Position of the patient in ``cohort``.

        Returns
        -------
        score : float
        """
        self._validate_params()
        patient = self.cohort[int(patient_index)]
        maps = cached_patient_maps(patient, self.method)
        brain = patient.get_brain_mask()
        roi = brain & (maps[self.roi_map] > self.roi_threshold)
        measure = (_cached_arrival_k2(patient) if self.measure == "k2_arrival"
                   else maps[self.measure])
        values = measure[roi if roi.any() else brain]
        return float(np.mean(values) if self.statistic == "mean" else np.median(values))

    def _scores(self, refs):
        scores = np.empty(len(refs))
        for p in np.unique(refs[:, 0]):
            scores[refs[:, 0] == p] = self.roi_score(p)
        return scores[:, None]

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Learn the score-to-label link on the training voxels.

        Parameters
        ----------
        X : array-like of int of shape (n_samples, 4)
            Voxel references (patient index, i, j, k) into ``cohort``.
        y : array-like of shape (n_samples,)
            Binary voxel labels.

        Returns
        -------
        self : ROIPermeabilityScorer
        """
        refs = check_voxel_refs(X, self.cohort, estimator=self, reset=True)
        y = column_or_1d(y, warn=True)
        if len(y) != len(refs):
            raise ValueError(f"X has {len(refs)} voxel references but y has {len(y)} labels.")
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"ROIPermeabilityScorer is a binary classifier; y has "
                             f"{len(self.classes_)} classes {self.classes_.tolist()}.")
        self.model_ = make_pipeline(StandardScaler(), LogisticRegression())
        self.model_.fit(self._scores(refs), y)
        return self

    def _model_input(self, X):
        check_is_fitted(self)
        return self._scores(check_voxel_refs(X, self.cohort, estimator=self, reset=False))

    def decision_function(self, X):
        """Affine function of each voxel's patient score (positive: ``classes_[1]``).

        Parameters
        ----------
        X : array-like of int of shape (n_samples, 4)
            Voxel references.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        scores = self._model_input(X)  # checks that the scorer is fitted
        return self.model_.decision_function(scores)

    def predict_proba(self, X):
        """Class probabilities of each voxel, from its patient's score.

        Parameters
        ----------
        X : array-like of int of shape (n_samples, 4)
            Voxel references.

        Returns
        -------
        proba : ndarray of shape (n_samples, 2)
        """
        scores = self._model_input(X)  # checks that the scorer is fitted
        return self.model_.predict_proba(scores)

    def predict(self, X):
        """Class of each voxel (the more probable one given its patient's score).

        Parameters
        ----------
        X : array-like of int of shape (n_samples, 4)
            Voxel references.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        decision = self.decision_function(X)  # checks that the scorer is fitted
        return self.classes_[(decision > 0).astype(int)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # voxel references, not a feature array (see PatchExtractor); the scores are learned,
        # so not row-wise
        tags.input_tags = HemoInputTags.from_tags(tags.input_tags, two_d_array=False,
                                                  voxel_references=True)
        tags.classifier_tags.multi_class = False
        return tags
