"""The voxel-reference checks catch the faults they stand for.

Each check of :mod:`sklearn_hemo.utils.estimator_checks` passes on the package's estimators
(``tests/test_common.py``); here each fails on an estimator broken in the way it guards
against, as scikit-learn tests its own checks on deliberately broken estimators.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from sklearn_hemo.datasets import Cohort
from sklearn_hemo.perfusion import ROIPermeabilityScorer
from sklearn_hemo.preprocessing import PatchExtractor
from sklearn_hemo.utils import estimator_checks as checks
from sklearn_hemo.utils.discovery import all_estimators
from sklearn_hemo.utils.estimator_checks import (
    _construct_instances,
    _tested_estimators,
    _tiny_cohort,
    voxel_reference_checks,
)


class _BatchDependent(PatchExtractor):
    """Centres each batch: a row's features depend on the other rows."""

    def transform(self, X):
        features = super().transform(X)
        return features - features.mean(axis=0)


class _CopiesCohort(PatchExtractor):
    """A clone holds a copy of the cohort instead of sharing it."""

    def __sklearn_clone__(self):
        twin = super().__sklearn_clone__()
        twin.cohort = Cohort(list(self.cohort))
        return twin


class _AcceptsFloats(PatchExtractor):
    """Rounds float references instead of refusing them."""

    def fit(self, X, y=None):
        X = np.asarray(X)
        return super().fit(X.astype(np.int64) if X.dtype.kind == "f" else X, y)


class _LearnsInFit(PatchExtractor):
    """Says it is stateless, yet its output changes after fit."""

    def fit(self, X, y=None):
        super().fit(X, y)
        self.offset_ = 1.0
        return self

    def transform(self, X):
        return super().transform(X) + getattr(self, "offset_", 0.0)


class _ChangesParameters(PatchExtractor):
    """Replaces its cohort parameter in fit."""

    def fit(self, X, y=None):
        super().fit(X, y)
        self.cohort = Cohort(list(self.cohort))
        return self


class _PublicAttribute(PatchExtractor):
    """Sets a public attribute without a trailing underscore in fit."""

    def fit(self, X, y=None):
        super().fit(X, y)
        self.seen = True
        return self


class _ArrayTags(PatchExtractor):
    """Claims to read feature arrays."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


class _InvertedPredict(ROIPermeabilityScorer):
    """Predicts the class its decision function argues against."""

    def predict(self, X):
        return self.classes_[(self.decision_function(X) <= 0).astype(int)]


@pytest.mark.parametrize("Broken, check", [
    (_BatchDependent, checks.check_voxel_refs_order_and_subset_invariance),
    (_CopiesCohort, checks.check_voxel_refs_clone_and_pickle),
    (_AcceptsFloats, checks.check_voxel_refs_bad_input),
    (_LearnsInFit, checks.check_voxel_refs_not_fitted),
    (_ChangesParameters, checks.check_voxel_refs_fit),
    (_PublicAttribute, checks.check_voxel_refs_fit),
    (_ArrayTags, checks.check_voxel_refs_tags),
    (_InvertedPredict, checks.check_voxel_refs_classifier),
], ids=lambda obj: getattr(obj, "__name__", None))
def test_check_fails_on_the_fault_it_guards_against(Broken, check):
    broken = Broken(_tiny_cohort())
    with pytest.raises(AssertionError):
        check(Broken.__name__, broken)
    # the same check passes on the sound parent class
    sound = Broken.__mro__[1](_tiny_cohort())
    check(type(sound).__name__, sound)


def test_checks_need_a_cohort_of_two_patients():
    one = Cohort(list(_tiny_cohort())[:1])
    with pytest.raises(ValueError, match="two patients"):
        checks.check_voxel_refs_fit("PatchExtractor", PatchExtractor(one))


def test_every_check_gets_a_fresh_clone():
    estimator = PatchExtractor(_tiny_cohort(), inputs="pwi")
    pairs = list(voxel_reference_checks(estimator))
    assert all(instance is not estimator for instance, _ in pairs)
    assert all(instance.get_params() == estimator.get_params() for instance, _ in pairs)
    names = [check.func.__name__ for _, check in pairs]
    assert len(names) == len(set(names))
    assert "check_voxel_refs_transformer" in names and "check_voxel_refs_classifier" not in names


def test_test_instances_cover_every_estimator_and_hold_the_tiny_cohort():
    instances = list(_tested_estimators())
    assert {type(e) for e in instances} == {cls for _, cls in all_estimators()}
    for instance in instances:
        if "cohort" in instance.get_params():
            assert instance.cohort is _tiny_cohort()
    # a class without an entry is checked with its defaults
    assert [e.get_params() for e in _construct_instances(PatchExtractor)] == [
        clone(PatchExtractor(_tiny_cohort())).get_params()]
    lstm = next(e for e in instances if type(e).__name__ == "LSTMClassifier")
    assert lstm.max_epochs <= 4 and lstm.torch_num_threads == 1
