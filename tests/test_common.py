"""Checks every estimator and public function of the package, found by discovery.

As in scikit-learn and imbalanced-learn, the estimators come from
:func:`~sklearn_hemo.utils.discovery.all_estimators` and their test instances from one
generator (:mod:`sklearn_hemo.utils.estimator_checks`), so a new estimator cannot be
forgotten: it gets scikit-learn's checks, and the voxel-reference checks when it reads
voxel references.
"""

from __future__ import annotations

import inspect
import re
import warnings

import pytest
from sklearn.base import clone
from sklearn.exceptions import SkipTestWarning
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_hemo.utils.discovery import all_estimators, all_functions
from sklearn_hemo.utils.estimator_checks import (
    PER_ESTIMATOR_XFAIL_CHECKS,
    _get_expected_failed_checks,
    _tested_estimators,
    voxel_reference_checks,
)

ESTIMATORS = list(_tested_estimators())


def _reads_voxel_references(estimator):
    return getattr(get_tags(estimator).input_tags, "voxel_references", False)


def _check_id(obj):
    if hasattr(obj, "func"):  # a check
        return obj.func.__name__
    return re.sub(r"\s", "", repr(obj)) if hasattr(obj, "get_params") else None


# -- discovery -----------------------------------------------------------------------------
def test_every_estimator_gets_a_test_instance():
    found = {cls for _, cls in all_estimators()}
    assert {type(estimator) for estimator in ESTIMATORS} == found
    # the package's estimators, wherever their classes are defined
    assert {"LSTMClassifier", "PatchExtractor", "ROIPermeabilityScorer"} <= {
        name for name, _ in all_estimators()}


def test_all_estimators_filters_by_kind():
    names = [name for name, _ in all_estimators()]
    assert names == sorted(names) and len(names) == len(set(names))
    assert not any(name.startswith("_") for name in names)
    classifiers = {name for name, _ in all_estimators(type_filter="classifier")}
    transformers = {name for name, _ in all_estimators(type_filter="transformer")}
    assert "LSTMClassifier" in classifiers and "PatchExtractor" in transformers
    assert not classifiers & transformers
    both = {name for name, _ in all_estimators(type_filter=["classifier", "transformer"])}
    assert both == classifiers | transformers
    assert all_estimators(type_filter="regressor") == []
    with pytest.raises(ValueError, match="type_filter"):
        all_estimators(type_filter=["classifier", "model"])
    with pytest.raises(ValueError, match="type_filter"):  # scikit-learn's validate_params
        all_estimators(type_filter="model")


def test_all_functions_lists_public_functions_once():
    functions = all_functions()
    names = [name for name, _ in functions]
    assert names == sorted(names)
    assert len({id(func) for _, func in functions}) == len(functions)
    assert "sklearn_hemo.sampling.sample_voxels" in names
    assert all(".".join(name.split(".")[:-1]).count("._") == 0 for name in names)
    assert "sklearn_hemo.utils.discovery.all_estimators" in names


# -- scikit-learn's checks on every estimator ----------------------------------------------
with warnings.catch_warnings():
    # voxel-reference estimators skip scikit-learn's array checks at collection time; the
    # voxel-reference checks below replace them (test_array_checks_are_replaced)
    warnings.simplefilter("ignore", SkipTestWarning)
    _SKLEARN_CHECKS = parametrize_with_checks(
        ESTIMATORS, expected_failed_checks=_get_expected_failed_checks)


@_SKLEARN_CHECKS
def test_estimators(estimator, check):
    check(estimator)


def test_array_checks_are_replaced():
    """An estimator that skips scikit-learn's array checks gets the voxel-reference ones."""
    for estimator in ESTIMATORS:
        if not get_tags(estimator).input_tags.two_d_array:
            assert _reads_voxel_references(estimator), (
                f"{type(estimator).__name__} skips scikit-learn's array checks but its tags "
                "do not say voxel_references, so nothing replaces them")


def test_expected_failures_name_existing_estimators():
    names = {name for name, _ in all_estimators()}
    assert set(PER_ESTIMATOR_XFAIL_CHECKS) <= names
    for reasons in PER_ESTIMATOR_XFAIL_CHECKS.values():
        assert all(isinstance(reason, str) and reason for reason in reasons.values())


# -- voxel references ----------------------------------------------------------------------
def _voxel_reference_cases():
    cases = []
    for estimator in ESTIMATORS:
        if not _reads_voxel_references(estimator):
            continue
        xfail = _get_expected_failed_checks(estimator)
        for instance, check in voxel_reference_checks(estimator):
            reason = xfail.get(check.func.__name__)
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            cases.append(pytest.param(instance, check, marks=marks,
                                      id=f"{_check_id(instance)}-{_check_id(check)}"))
    return cases


_VOXEL_CASES = _voxel_reference_cases()


def test_voxel_reference_estimators_are_checked():
    checked = {type(case.values[0]).__name__ for case in _VOXEL_CASES}
    assert {"PatchExtractor", "PerfusionMapExtractor", "ROIPermeabilityScorer"} <= checked


@pytest.mark.parametrize("estimator, check", _VOXEL_CASES)
def test_voxel_reference_estimators(estimator, check):
    check(estimator)


def test_voxel_reference_checks_refuse_array_estimators():
    array_estimator = next(e for e in ESTIMATORS if not _reads_voxel_references(e))
    with pytest.raises(ValueError, match="voxel references"):
        next(voxel_reference_checks(array_estimator))


# -- parameters ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, Estimator", all_estimators())
def test_parameter_constraints_match_init(name, Estimator):
    init = inspect.signature(Estimator.__init__).parameters
    params = {p for p, spec in init.items() if p != "self"
              and spec.kind not in (spec.VAR_POSITIONAL, spec.VAR_KEYWORD)}
    constraints = getattr(Estimator, "_parameter_constraints", None)
    assert constraints is not None, f"{name} has no _parameter_constraints"
    assert set(constraints) == params, (
        f"{name}: _parameter_constraints keys {sorted(set(constraints) - params)} are not "
        f"__init__ parameters; __init__ parameters {sorted(params - set(constraints))} have "
        "no constraint")
    for estimator in (e for e in ESTIMATORS if type(e) is Estimator):
        clone(estimator)._validate_params()  # the test instances themselves are valid


# Public functions that do not validate their parameters with scikit-learn's
# ``validate_params``, by function name (so that a module move keeps the entry), with the
# reason. The target is none: every public function of the package is decorated (issue 18
# item 4). Where a function's own check gives a clearer message (the range, the unit, the
# patient and the fix), its constraint is only the type, so that the function's check
# still runs for a value of the right type.
VALIDATE_PARAMS_EXEMPT: dict[str, str] = {}  # function name -> why it is not decorated
# Modules whose functions are exempt as a whole, with the reason: input checks called inside
# fit and transform on every call (as scikit-learn's check_array is not decorated either).
VALIDATE_PARAMS_EXEMPT_MODULES = {
    "sklearn_hemo.utils.validation": "validation helpers called on every fit and transform",
}


def _named_parameters(func):
    return {p for p, spec in inspect.signature(func).parameters.items()
            if spec.kind not in (spec.VAR_POSITIONAL, spec.VAR_KEYWORD)}


@pytest.mark.parametrize("qualname, func", all_functions())
def test_public_function_validates_its_parameters(qualname, func):
    constraints = getattr(func, "_skl_parameter_constraints", None)
    if qualname.rpartition(".")[0] in VALIDATE_PARAMS_EXEMPT_MODULES:
        return
    if func.__name__ in VALIDATE_PARAMS_EXEMPT:
        assert constraints is None, (
            f"{qualname} now has @validate_params: remove it from VALIDATE_PARAMS_EXEMPT")
        return
    assert constraints is not None, (
        f"{qualname} has no @validate_params (sklearn.utils._param_validation); add it, or "
        "list it in VALIDATE_PARAMS_EXEMPT with the reason")
    # scikit-learn's decorator checks only the parameters it is told about
    assert set(constraints) == _named_parameters(func), (
        f"{qualname}: constraints for {sorted(set(constraints))}, parameters "
        f"{sorted(_named_parameters(func))}")


def test_validate_params_exemptions_are_public_functions():
    names = {func.__name__ for _, func in all_functions()}
    assert set(VALIDATE_PARAMS_EXEMPT) <= names, sorted(set(VALIDATE_PARAMS_EXEMPT) - names)
