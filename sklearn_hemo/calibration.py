"""Whole-brain calibration: probabilities that mean what they say on a whole brain.

Every model of the package is trained on a *balanced* voxel sample (half HT, see
:mod:`sklearn_hemo.sampling`), and its Platt calibration (:func:`~sklearn_hemo.risk.
with_probabilities`) is fitted on that sample too. Its probabilities therefore read
against a prevalence of one half, while on a whole brain about 1 % of a bleeding
patient's voxels bleed and none of a non-bleeding patient's: a "0.5" on such a map means
"as likely as in a 50/50 sample", many times the real risk.

The correction (prior shift)
----------------------------
Sampling voxels by class changes the class priors and nothing else: the features of an
HT voxel are drawn from the same distribution whatever the share of HT voxels in the
sample. Under this assumption the posterior at the whole-brain prevalence ``pi`` follows
from the posterior ``p`` at the training prevalence ``s`` by Bayes' rule
(Elkan 2001, theorem 2; Saerens, Latinne & Decaestecker 2002, eq. 2.4)::

    p' = pi/s * p / (pi/s * p + (1 - pi)/(1 - s) * (1 - p))

``s`` is known exactly (the share of HT voxels in the training sample) and ``pi`` is
estimated from the *training* patients' whole brains (:func:`whole_brain_prevalence`:
annotated HT voxels over brain voxels), so no held-out patient is looked at.
:class:`PriorShiftClassifier` is the scikit-learn meta-estimator that applies it; it
wraps any classifier with ``predict_proba`` (a Platt-calibrated one included) and is how
``sklearn-hemo train`` (``--calibration whole-brain``, the default) and
``compare --volumes`` make their maps.

The correction is exact only when the model's probabilities are calibrated on the
balanced sample itself; it does not repair a model whose balanced-sample probabilities
are off. ``compare --volumes`` measures the result on held-out patients' whole brains
(``calibration.csv``, ``calibration_summary.csv``, ``calibration.png``).

The patient-level answer
------------------------
A whole-brain-calibrated map gives two numbers per patient (:func:`patient_answer`):

* the *expected HT volume*, the sum of the voxel probabilities times the voxel volume
  (mL): an unbiased estimate of the annotated volume when the voxel probabilities are
  calibrated; no threshold is involved;
* the *probability of any HT*: the expected share of the brain that bleeds divided by the
  share that bleeds in a bleeding patient (``bleeding_fraction``, estimated on the
  training patients), capped at 1. HT voxels are all in bleeding patients, so a patient
  who bleeds with probability ``q`` has an expected bleeding share of ``q`` times that of
  a bleeder: a moment estimate. It is monotone in the expected volume (same patient AUC).
  Not ``1 - prod(1 - p)``, which treats voxels as independent and is near 1 for every
  patient.

No interval is given for the volume: voxel outcomes within a patient are strongly
dependent (a haemorrhage is a connected region, and whether the patient bleeds at all is
one event), so an interval from independent voxels would be far too narrow.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.utils.metadata_routing import MetadataRouter, MethodMapping, process_routing
from sklearn.utils.validation import check_is_fitted

from .datasets import Cohort, Patient
from .utils.fixes import HasMethods, Interval, _fit_context, validate_params

__all__ = ["PriorShiftClassifier", "shift_prior", "whole_brain_prevalence",
           "bleeding_fraction", "patient_answer"]

_OPEN_UNIT = Interval(Real, 0, 1, closed="neither")


@validate_params(
    {"proba": ["array-like", Real], "training_prevalence": [_OPEN_UNIT],
     "prevalence": [_OPEN_UNIT]},
    prefer_skip_nested_validation=True,
)
def shift_prior(proba, training_prevalence, prevalence):
    """Probabilities of the positive class moved from one class prior to another.

    Bayes' rule with the class-conditional densities unchanged (Elkan 2001; Saerens et
    al. 2002): the odds are multiplied by the ratio of the new prior odds to the old.

    Parameters
    ----------
    proba : array-like or float
        Probabilities of the positive class at ``training_prevalence``, in [0, 1].
    training_prevalence : float in (0, 1)
        Share of positives in the data the probabilities were fitted on (0.5 for a
        balanced sample).
    prevalence : float in (0, 1)
        Share of positives where the probabilities will be read (e.g. the share of HT
        voxels in whole brains, :func:`whole_brain_prevalence`).

    Returns
    -------
    shifted : ndarray
        Probabilities at ``prevalence``, same shape as ``proba``; 0 and 1 stay 0 and 1.

    Examples
    --------
    >>> from sklearn_hemo.calibration import shift_prior
    >>> float(shift_prior(0.5, training_prevalence=0.5, prevalence=0.01))
    0.01
    """
    p = np.asarray(proba, dtype=float)
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError("proba must hold probabilities in [0, 1].")
    up = prevalence / training_prevalence
    down = (1 - prevalence) / (1 - training_prevalence)
    num = up * p
    return num / (num + down * (1 - p))


def _brain_counts(cohort, patients):
    """(brain voxels, HT voxels in brain, brain voxels of bleeders) over the patients."""
    patients = range(len(cohort)) if patients is None else patients
    n_brain = n_ht = n_bleeder_brain = 0
    for p in patients:
        patient = p if isinstance(p, Patient) else cohort[cohort.index(p) if isinstance(
            p, str) else int(p)]
        if patient.ht_mask is None:
            raise ValueError(
                f"participant {patient.id} has no ht_mask: the whole-brain prevalence needs "
                "the annotation of every training patient.")
        brain = patient.get_brain_mask()
        truth = np.asanyarray(patient.ht_mask.dataobj) > 0  # sample_voxels' labels
        ht = np.count_nonzero(truth & brain)
        n_brain += int(brain.sum())
        n_ht += int(ht)
        if ht:
            n_bleeder_brain += int(brain.sum())
    return n_brain, n_ht, n_bleeder_brain


@validate_params(
    {"cohort": [Cohort], "patients": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def whole_brain_prevalence(cohort, patients=None):
    """Share of HT voxels among the brain voxels of some patients of a cohort.

    The prevalence a whole-brain risk map is read against: annotated HT voxels inside
    the brain mask over all brain voxels, pooled over the patients (bleeding or not).
    Pass the *training* patients only, so that held-out patients stay unseen.

    Parameters
    ----------
    cohort : Cohort
        The patients, each with an ``ht_mask``.
    patients : sequence of int or str, or None, default=None
        Patient indices or ids; all when None.

    Returns
    -------
    prevalence : float
        In [0, 1].

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.calibration import whole_brain_prevalence
    >>> cohort = make_stroke_cohort(4, (16, 16, 2), n_frames=30, difficulty="easy",
    ...                             ht_prevalence=0.5, random_state=0)
    >>> 0 < whole_brain_prevalence(cohort) < 0.5
    True
    """
    n_brain, n_ht, _ = _brain_counts(cohort, patients)
    if n_brain == 0:
        raise ValueError("the patients have no brain voxels.")
    return n_ht / n_brain


@validate_params(
    {"cohort": [Cohort], "patients": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def bleeding_fraction(cohort, patients=None):
    """Share of HT voxels among the brain voxels of the patients that bleed.

    The denominator of :func:`patient_answer`'s probability of any HT.

    Parameters
    ----------
    cohort : Cohort
        The patients, each with an ``ht_mask``.
    patients : sequence of int or str, or None, default=None
        Patient indices or ids (the training patients); all when None.

    Returns
    -------
    fraction : float or None
        In (0, 1]; None when no patient has an HT voxel.

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.calibration import bleeding_fraction, whole_brain_prevalence
    >>> cohort = make_stroke_cohort(4, (16, 16, 2), n_frames=30, difficulty="easy",
    ...                             ht_prevalence=0.5, random_state=0)
    >>> bleeding_fraction(cohort) >= whole_brain_prevalence(cohort)
    True
    """
    _, n_ht, n_bleeder_brain = _brain_counts(cohort, patients)
    return n_ht / n_bleeder_brain if n_bleeder_brain else None


@validate_params(
    {"risk_map": "no_validation", "brain_mask": ["array-like", None],
     "bleeding_fraction": [Interval(Real, 0, 1, closed="right"), None]},
    prefer_skip_nested_validation=True,
)
def patient_answer(risk_map, brain_mask=None, *, bleeding_fraction=None):
    """Expected HT volume (mL) and probability of any HT of one patient, from its map.

    Read the module's notes: the map must be calibrated to whole brains (a map drawn by
    a model wrapped in :class:`PriorShiftClassifier`, the default of ``sklearn-hemo
    train``), else both numbers are many times too high.

    Parameters
    ----------
    risk_map : nibabel image
        Voxel probabilities of HT (its header gives the voxel volume).
    brain_mask : array-like of bool or None, default=None
        Voxels summed; every non-zero voxel of the map when None.
    bleeding_fraction : float or None, default=None
        Share of the brain that bleeds in a bleeding patient (:func:`bleeding_fraction`
        of the training patients); None leaves the probability of any HT out (None).

    Returns
    -------
    answer : dict
        ``expected_volume_ml`` (sum of probabilities times voxel volume),
        ``expected_fraction`` (mean probability over the brain) and
        ``probability_any_ht`` (``min(1, expected_fraction / bleeding_fraction)``, or
        None).

    Examples
    --------
    >>> import nibabel as nib, numpy as np
    >>> from sklearn_hemo.calibration import patient_answer
    >>> img = nib.Nifti1Image(np.full((10, 10, 1), 0.01, np.float32), np.eye(4))
    >>> answer = patient_answer(img, np.ones((10, 10, 1), bool), bleeding_fraction=0.05)
    >>> round(answer["expected_volume_ml"], 4), round(answer["probability_any_ht"], 2)
    (0.001, 0.2)
    """
    from .metrics import voxel_volume_ml

    risk = np.asarray(risk_map.dataobj, dtype=float)
    brain = risk > 0 if brain_mask is None else np.asarray(brain_mask, dtype=bool)
    if brain.shape != risk.shape:
        raise ValueError(f"brain_mask has shape {brain.shape}, the map {risk.shape}.")
    values = risk[brain]
    expected = float(values.mean()) if values.size else 0.0
    return {
        "expected_volume_ml": float(values.sum() * voxel_volume_ml(risk_map)),
        "expected_fraction": expected,
        "probability_any_ht": None if bleeding_fraction is None
        else float(min(1.0, expected / bleeding_fraction)),
    }


class PriorShiftClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """A classifier whose probabilities are moved to another class prevalence.

    Fits (a clone of) ``estimator`` on the data given, then corrects its
    ``predict_proba`` from the training prevalence to ``prevalence`` by Bayes' rule
    (:func:`shift_prior`; Elkan 2001, Saerens et al. 2002). Built for models trained on
    a balanced voxel sample whose maps are read on whole brains: see
    :mod:`sklearn_hemo.calibration`. A model fitted already is wrapped in
    :class:`sklearn.frozen.FrozenEstimator` (and ``training_prevalence`` given).

    Parameters
    ----------
    estimator : estimator or None, default=None
        Classifier with ``predict_proba`` (for example a Platt-calibrated one,
        :class:`~sklearn.calibration.CalibratedClassifierCV`); None is
        :class:`~sklearn.linear_model.LogisticRegression`.
    prevalence : float in (0, 1) or None, default=None
        Share of the positive class (``classes_[1]``) where the probabilities are read
        (:func:`whole_brain_prevalence` of the training patients); None keeps the training
        prevalence (no correction). Binary problems only when given.
    training_prevalence : float in (0, 1) or None, default=None
        Share of the positive class in the data ``estimator`` learnt from; None takes
        it from ``y`` at fit.

    Attributes
    ----------
    estimator_ : estimator
        The fitted clone of ``estimator``.
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    training_prevalence_ : float or None
        The training prevalence used (None for more than two classes).
    prevalence_ : float or None
        The prevalence the probabilities are moved to.
    n_features_in_ : int
        Number of features seen during fit (when the estimator records it).

    See Also
    --------
    shift_prior : The correction on an array of probabilities.
    sklearn.calibration.CalibratedClassifierCV : Platt or isotonic calibration.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.calibration import PriorShiftClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(200, 2)); y = (X[:, 0] + rng.normal(size=200) > 0).astype(int)
    >>> model = PriorShiftClassifier(prevalence=0.05).fit(X, y)
    >>> bool(model.predict_proba(X)[:, 1].mean() < 0.2)
    True
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict_proba"]), None],
        "prevalence": [_OPEN_UNIT, None],
        "training_prevalence": [_OPEN_UNIT, None],
    }

    def __init__(self, estimator=None, prevalence=None, training_prevalence=None):
        self.estimator = estimator
        self.prevalence = prevalence
        self.training_prevalence = training_prevalence

    def _get_estimator(self):
        if self.estimator is None:
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression()
        return clone(self.estimator)

    @_fit_context(prefer_skip_nested_validation=False)  # the estimator checks its own
    def fit(self, X, y, **fit_params):
        """Fit the estimator and record the prevalences.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (whatever ``estimator`` takes).
        y : array-like of shape (n_samples,)
            Labels.
        **fit_params : dict
            Passed to ``estimator.fit`` (routed when metadata routing is enabled, e.g.
            the patient ``groups`` of the LSTM's early stopping).

        Returns
        -------
        self : PriorShiftClassifier
            Fitted.
        """
        estimator = self._get_estimator()
        if sklearn.get_config().get("enable_metadata_routing", False):
            routed = process_routing(self, "fit", **fit_params)
            estimator.fit(X, y, **routed.estimator.fit)
        else:
            estimator.fit(X, y, **fit_params)
        self.estimator_ = estimator
        self.classes_ = np.asarray(estimator.classes_)
        if hasattr(estimator, "n_features_in_"):
            self.n_features_in_ = estimator.n_features_in_
        if hasattr(estimator, "feature_names_in_"):
            self.feature_names_in_ = estimator.feature_names_in_
        binary = self.classes_.size == 2
        if self.prevalence is not None and not binary:
            raise ValueError(
                f"prevalence is the share of the positive class of a binary problem; y has "
                f"{self.classes_.size} classes.")
        if not binary:
            self.training_prevalence_ = self.prevalence_ = None
            return self
        if self.training_prevalence is not None:
            self.training_prevalence_ = float(self.training_prevalence)
        else:
            share = float(np.mean(np.asarray(y) == self.classes_[1]))
            if not 0 < share < 1:
                raise ValueError("y holds a single class: no prevalence to shift from.")
            self.training_prevalence_ = share
        self.prevalence_ = (self.training_prevalence_ if self.prevalence is None
                            else float(self.prevalence))
        return self

    def predict_proba(self, X):
        """Class probabilities at ``prevalence``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities, rows summing to 1.
        """
        check_is_fitted(self)
        proba = np.asarray(self.estimator_.predict_proba(X), dtype=float)
        if self.prevalence_ is None or self.prevalence_ == self.training_prevalence_:
            return proba
        positive = shift_prior(np.clip(proba[:, 1], 0.0, 1.0), self.training_prevalence_,
                               self.prevalence_)
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X):
        """Most probable class at ``prevalence``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            ``classes_[argmax(predict_proba(X))]``.
        """
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def get_metadata_routing(self):
        """Metadata routing of this meta-estimator: ``fit`` to ``estimator.fit``.

        Returns
        -------
        routing : MetadataRouter
            The routing information.
        """
        # the class name, as scikit-learn 1.6 (the floor) expects; later releases take either
        return MetadataRouter(owner=self.__class__.__name__).add(
            estimator=self._get_estimator(),
            method_mapping=MethodMapping().add(caller="fit", callee="fit"))

    def __sklearn_tags__(self):
        from sklearn.utils import get_tags

        tags = super().__sklearn_tags__()
        tags.input_tags = get_tags(self._get_estimator()).input_tags  # what it reads
        return tags
