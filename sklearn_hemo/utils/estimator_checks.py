"""Estimator checks of sklearn-hemo: test instances, voxel-reference checks, expected failures.

``tests/test_common.py`` runs scikit-learn's
:func:`~sklearn.utils.estimator_checks.parametrize_with_checks` over one instance (or a
few) of every estimator that :func:`~sklearn_hemo.utils.discovery.all_estimators` finds,
built here by ``_tested_estimators`` (estimators that hold a cohort get a tiny simulated
one, the LSTM gets fast settings).

Estimators that read *voxel references* ``(patient, i, j, k)`` into a cohort (their
:class:`~sklearn_hemo.base.HemoInputTags` say ``voxel_references``) set the
``two_d_array`` input tag to False, as scikit-learn's text and dict vectorizers do, because
random float arrays are not valid input for them. scikit-learn then skips its checks that
feed data. :func:`voxel_reference_checks` yields the checks that replace them: the
data-free scikit-learn checks, and one ``check_voxel_refs_*`` function per property of the
skipped checks, each stating which scikit-learn checks it stands for (as nilearn does for
its maskers in ``nilearn/_utils/estimator_checks.py``).
"""

from __future__ import annotations

import functools
import pickle
import tempfile
import warnings
from inspect import signature
from pathlib import Path
from unittest import SkipTest

import numpy as np
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.exceptions import NotFittedError, SkipTestWarning
from sklearn.utils import estimator_checks as sklearn_checks
from sklearn.utils import get_tags

from .fixes import validate_params

__all__ = ["voxel_reference_checks"]

# -- test instances ------------------------------------------------------------------------
# Fast settings of the LSTM that still learn; one torch thread keeps the checks off the other
# cores.
_FAST_LSTM = dict(hidden_size=8, batch_size=16, lr=0.05, max_epochs=4, torch_num_threads=1)

# Parameters of the instances checked, by class name; a class not listed is checked with its
# defaults (plus the tiny cohort when its ``__init__`` takes one), so a new estimator is
# never left out. Several entries check several code paths.
_INIT_PARAMS = {
    "BlockScaler": [{}, {"inputs": None, "n_timepoints": 3}],
    "LinearRegressionClassifier": [{}, {"fit_intercept": False}],
    "LSTMClassifier": [dict(inputs=None, random_state=0, **_FAST_LSTM)],
    # exact LIBSVM below max_exact_samples, Nystroem + linear SVM above
    "ScalableSVC": [{}, {"max_exact_samples": 1, "n_components": 50, "random_state": 0}],
    # exact kernel and Nystroem approximation
    "SRKDAClassifier": [{}, {"n_components": 20, "random_state": 0}],
}


@functools.lru_cache(maxsize=1)
def _tiny_cohort():
    """Two easy simulated patients on a 6 x 6 x 1 grid, built once per process."""
    from ..datasets import Cohort, make_stroke_cohort

    return Cohort(list(make_stroke_cohort(n_patients=2, shape=(6, 6, 1), random_state=2,
                                          difficulty="easy")))


def _construct_instances(Estimator):
    """Yield the instances of ``Estimator`` that the common tests check."""
    takes_cohort = "cohort" in signature(Estimator.__init__).parameters
    for params in _INIT_PARAMS.get(Estimator.__name__, [{}]):
        if takes_cohort:
            params = {"cohort": _tiny_cohort(), **params}
        yield Estimator(**params)


def _tested_estimators(type_filter=None):
    """Yield an instance (or a few) of every estimator of the package.

    Parameters
    ----------
    type_filter : str, list of str or None
        Passed to :func:`~sklearn_hemo.utils.discovery.all_estimators`.
    """
    from .discovery import all_estimators

    for _, Estimator in all_estimators(type_filter=type_filter):
        yield from _construct_instances(Estimator)


# -- expected failures ---------------------------------------------------------------------
# {class name: {check name: reason}} for scikit-learn's checks and ours. The project's target
# is none: add an entry only with the reason and an issue to remove it.
PER_ESTIMATOR_XFAIL_CHECKS: dict[str, dict[str, str]] = {}


def _get_expected_failed_checks(estimator):
    """The checks ``estimator`` is expected to fail, ``{check name: reason}``."""
    return dict(PER_ESTIMATOR_XFAIL_CHECKS.get(type(estimator).__name__, {}))


# -- voxel references ----------------------------------------------------------------------
# scikit-learn's checks that feed no data: they run on voxel-reference estimators as on any.
_DATA_FREE_SKLEARN_CHECKS = (
    "check_estimator_cloneable",
    "check_estimator_tags_renamed",
    "check_valid_tag_types",
    "check_estimator_repr",
    "check_no_attributes_set_in_init",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_mixin_order",
    "check_get_params_invariance",
    "check_set_params",
    "check_parameters_default_constructible",
)
_METHODS = ("transform", "predict", "predict_proba", "decision_function")


def _voxel_refs(cohort, per_patient=12):
    """Up to ``per_patient`` brain voxels of each patient, as voxel references."""
    parts = []
    for p in range(len(cohort)):
        ijk = np.argwhere(cohort[p].get_brain_mask())
        ijk = ijk[np.linspace(0, len(ijk) - 1, min(per_patient, len(ijk))).astype(int)]
        parts.append(np.column_stack([np.full(len(ijk), p), ijk]))
    return np.concatenate(parts).astype(np.int64)


def _data(estimator):
    """Voxel references into the estimator's cohort and, for classifiers, two labels."""
    cohort = getattr(estimator, "cohort", None)
    if cohort is None or len(cohort) < 2:
        raise ValueError(f"The voxel-reference checks of {type(estimator).__name__} need "
                         "an instance holding a cohort of at least two patients: pass "
                         "cohort=... .")
    X = _voxel_refs(cohort)
    y = X[:, 0] % 2  # one label per patient: learnable by per-patient and per-voxel models
    return X, y


def _fit(estimator, X, y):
    return estimator.fit(X, y) if is_classifier(estimator) else estimator.fit(X)


def _outputs(estimator, X):
    """``{method: output}`` of every prediction or transform method the estimator has."""
    return {m: getattr(estimator, m)(X) for m in _METHODS if hasattr(estimator, m)}


def _assert_same_outputs(a, b, msg):
    assert a.keys() == b.keys(), msg
    for method in a:
        np.testing.assert_array_equal(np.asarray(a[method]), np.asarray(b[method]),
                                      err_msg=f"{msg} ({method})")


def check_voxel_refs_tags(name, estimator):
    """Tags say voxel references, so scikit-learn skips its checks that feed arrays.

    Stands for what makes the other checks necessary: ``two_d_array`` is False and
    ``voxel_references`` True, and scikit-learn's generator yields only its skip notice.
    A stateless row-wise transformer does not require ``fit``.
    """
    tags = get_tags(estimator)
    assert getattr(tags.input_tags, "voxel_references", False), name
    assert not tags.input_tags.two_d_array, f"{name} reads voxel references, not arrays"
    if getattr(tags.input_tags, "row_wise", False):
        assert not tags.requires_fit, f"{name} is row-wise: it must not require fit"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checks = list(sklearn_checks.estimator_checks_generator(estimator))
    assert len(checks) == 1 and any(w.category is SkipTestWarning for w in caught), (
        f"scikit-learn runs {len(checks)} checks on {name}: are the array checks skipped?")


def check_voxel_refs_fit(name, estimator):
    """``fit`` on voxel references returns self and changes no parameter.

    Replaces ``check_fit_returns_self``, ``check_n_features_in``,
    ``check_dont_overwrite_parameters`` and ``check_estimators_overwrite_params``.
    """
    X, y = _data(estimator)
    params = estimator.get_params()
    public_before = {k for k in vars(estimator) if not k.startswith("_")}
    assert _fit(estimator, X, y) is estimator, f"{name}.fit must return self"
    assert estimator.n_features_in_ == 4, f"{name}.n_features_in_ must be 4"
    after = estimator.get_params()
    assert after.keys() == params.keys()
    for key, value in params.items():
        assert after[key] is value, f"{name}.fit changed the parameter {key!r}"
    added = {k for k in vars(estimator) if not k.startswith("_")} - public_before
    assert all(k.endswith("_") for k in added), (
        f"{name}.fit set public attributes without a trailing underscore: {sorted(added)}")


def check_voxel_refs_not_fitted(name, estimator):
    """An estimator that requires ``fit`` refuses to predict before it; a stateless one not.

    Replaces ``check_estimators_unfitted`` and ``check_fit_check_is_fitted``.
    """
    X, y = _data(estimator)
    if get_tags(estimator).requires_fit:
        for method in _METHODS:
            if hasattr(estimator, method):
                try:
                    getattr(estimator, method)(X)
                except NotFittedError:
                    continue
                raise AssertionError(f"{name}.{method} before fit must raise NotFittedError")
    else:
        unfitted = _outputs(estimator, X)
        _assert_same_outputs(_outputs(_fit(estimator, X, y), X), unfitted,
                             f"{name} is stateless: fit must not change its output")


def check_voxel_refs_order_and_subset_invariance(name, estimator):
    """Each voxel's output does not depend on the other voxels or on their order.

    Replaces ``check_methods_sample_order_invariance`` and
    ``check_methods_subset_invariance``; what makes features safe to compute per fold.
    """
    X, y = _data(estimator)
    full = _outputs(_fit(estimator, X, y), X)
    perm = np.random.default_rng(0).permutation(len(X))
    for rows in (perm, perm[:3], perm[:1]):
        _assert_same_outputs(_outputs(estimator, X[rows]),
                             {m: np.asarray(v)[rows] for m, v in full.items()},
                             f"{name}: outputs depend on the order or subset of voxels")


def check_voxel_refs_clone_and_pickle(name, estimator):
    """A clone shares the cohort (no copy of volumes); pickling and refitting change nothing.

    Replaces ``check_estimators_pickle``, ``check_fit_idempotent`` and the cheap-clone
    promise of the data contract (estimators travel to joblib workers).
    """
    X, y = _data(estimator)
    twin = clone(estimator)
    assert twin.cohort is estimator.cohort, f"clone({name}) must not copy its cohort"
    full = _outputs(_fit(estimator, X, y), X)
    _assert_same_outputs(_outputs(pickle.loads(pickle.dumps(estimator)), X), full,
                         f"{name} changes through pickle")
    _assert_same_outputs(_outputs(_fit(twin, X, y), X), full, f"{name}: clone and refit")
    half = np.flatnonzero(X[:, 0] < 2)[::2]  # another training set, both labels kept
    _fit(estimator, X[half], y[half])
    _assert_same_outputs(_outputs(_fit(estimator, X, y), X), full,
                         f"{name}: a second fit must forget the first")


def check_voxel_refs_input_layouts(name, estimator):
    """Integer references of any layout give the same output.

    Replaces ``check_readonly_memmap_input``, ``check_estimators_dtypes`` (integer dtypes),
    ``check_fit2d_1sample`` and the list input of ``check_fit2d_predict1d``.
    """
    X, y = _data(estimator)
    full = _outputs(_fit(estimator, X, y), X)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "X.npy"
        np.save(path, X)
        mapped = np.load(path, mmap_mode="r")
        small = np.uint8 if X.max() <= np.iinfo(np.uint8).max else np.uint16
        layouts = {"read-only memmap": mapped, "Fortran": np.asfortranarray(X),
                   "int32": X.astype(np.int32), "small unsigned": X.astype(small),
                   "list": X.tolist()}
        for label, data in layouts.items():
            _assert_same_outputs(_outputs(estimator, data), full, f"{name} on {label} input")
        del mapped, layouts  # release the memory map before the folder is removed
    _assert_same_outputs(_outputs(estimator, X[:1]), {m: np.asarray(v)[:1] for m, v in
                                                      full.items()}, f"{name} on one voxel")


def check_voxel_refs_bad_input(name, estimator):
    """Input that is not integer voxel references is refused with a clear error.

    Replaces ``check_dtype_object``, ``check_estimators_nan_inf``,
    ``check_estimators_empty_data`` and ``check_fit2d_1feature``.
    """
    X, y = _data(estimator)
    nan = np.where(X == X[0, 0], np.nan, X.astype(float))
    bad = [(TypeError, X.astype(float)), (TypeError, X.astype(bool)),
           (TypeError, X.astype(object)), ((TypeError, ValueError), nan),
           (ValueError, np.empty((0, 4), dtype=np.int64)), (ValueError, X[:, :3]),
           (ValueError, X[:, :1]),
           (ValueError, np.column_stack([np.full(len(X), len(estimator.cohort)), X[:, 1:]])),
           (ValueError, np.column_stack([X[:, :3], np.full(len(X), 10_000)]))]
    fresh = clone(estimator)
    for error, data in bad:
        for call in (lambda d: _fit(clone(fresh), d, y[: len(d)]),
                     lambda d: _outputs(_fit(clone(fresh), X, y), d)):
            try:
                call(data)
            except error:
                continue
            raise AssertionError(f"{name} accepted {data.dtype} input of shape {data.shape}; "
                                 f"expected {error}")


def check_voxel_refs_feature_names(name, estimator):
    """Named reference columns are recorded and checked; pandas output keeps feature names.

    Replaces ``check_dataframe_column_names_consistency``, ``check_set_output_transform``
    and ``check_transformer_get_feature_names_out``.
    """
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas comes with the test extra
        raise SkipTest("pandas is needed to check feature names") from None
    X, y = _data(estimator)
    frame = pd.DataFrame(X, columns=["patient", "i", "j", "k"])
    _fit(estimator, frame, y)
    assert estimator.feature_names_in_.tolist() == ["patient", "i", "j", "k"], name
    method = next(m for m in _METHODS if hasattr(estimator, m))
    try:
        getattr(estimator, method)(frame.rename(columns={"i": "x"}))
    except ValueError as exc:
        assert "feature names" in str(exc), f"{name}: {exc}"
    else:
        raise AssertionError(f"{name}.{method} accepted renamed reference columns")
    if hasattr(estimator, "transform"):
        out = clone(estimator).set_output(transform="pandas").fit(frame).transform(frame)
        names = estimator.get_feature_names_out()
        assert list(out.columns) == names.tolist(), f"{name}: pandas output column names"


def check_voxel_refs_transformer(name, estimator):
    """Features are a finite float32 array, one row per voxel, one name per column.

    Replaces ``check_transformer_general``, ``check_transformer_data_not_an_array``,
    ``check_transformers_unfitted_stateless`` and ``check_transformer_n_iter``.
    """
    X, _ = _data(estimator)
    features = estimator.fit_transform(X)
    assert isinstance(features, np.ndarray) and features.ndim == 2, name
    assert features.shape[0] == len(X) and features.dtype == np.float32, (
        f"{name}: expected float32 features with {len(X)} rows, got {features.dtype} "
        f"{features.shape}")
    assert np.isfinite(features).all(), f"{name} made non-finite features"
    assert len(estimator.get_feature_names_out()) == features.shape[1], name
    np.testing.assert_array_equal(estimator.transform(X), features)


def check_voxel_refs_classifier(name, estimator):
    """A classifier of voxel references predicts its classes, with coherent scores.

    Replaces ``check_classifiers_train``, ``check_classifiers_classes``,
    ``check_classifiers_regression_target`` (through the string labels) and
    ``check_decision_proba_consistency``.
    """
    X, y = _data(estimator)
    labels = np.where(y == 1, "ht", "none")
    estimator.fit(X, labels)
    assert estimator.classes_.tolist() == ["ht", "none"], name
    predicted = estimator.predict(X)
    assert set(np.unique(predicted)) <= {"ht", "none"} and len(predicted) == len(X), name
    if hasattr(estimator, "predict_proba"):
        proba = estimator.predict_proba(X)
        assert proba.shape == (len(X), 2), name
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_array_equal(predicted, estimator.classes_[proba.argmax(axis=1)])
    if hasattr(estimator, "decision_function"):
        decision = estimator.decision_function(X)
        assert decision.shape == (len(X),), name
        np.testing.assert_array_equal(predicted, estimator.classes_[(decision > 0).astype(int)])
    try:
        clone(estimator).fit(X, np.linspace(0, 1, len(X)))
    except ValueError:
        pass
    else:
        raise AssertionError(f"{name} accepted a continuous target")


@validate_params({"estimator": [BaseEstimator]},
                 prefer_skip_nested_validation=True)
def voxel_reference_checks(estimator):
    """Yield the checks of an estimator that reads voxel references.

    scikit-learn skips its checks that feed random arrays when the ``two_d_array`` input tag
    is False; these checks replace them on voxel references into the estimator's own
    cohort: scikit-learn's data-free checks, then the ``check_voxel_refs_*`` functions of
    this module (each docstring names the scikit-learn checks it replaces).

    Parameters
    ----------
    estimator : estimator
        An instance whose tags say ``voxel_references`` (see
        :class:`~sklearn_hemo.base.HemoInputTags`), holding a cohort of at least two
        patients.

    Yields
    ------
    estimator : estimator
        A fresh clone of ``estimator`` for each check.
    check : callable
        Call ``check(estimator)``; it raises ``AssertionError`` (or the estimator's error)
        when the estimator fails it.

    Raises
    ------
    ValueError
        ``estimator`` does not read voxel references.

    See Also
    --------
    sklearn.utils.estimator_checks.estimator_checks_generator : scikit-learn's generator.

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.preprocessing import PatchExtractor
    >>> from sklearn_hemo.utils.estimator_checks import voxel_reference_checks
    >>> cohort = make_stroke_cohort(2, (6, 6, 1), difficulty="easy", random_state=0)
    >>> checks = list(voxel_reference_checks(PatchExtractor(cohort, inputs="pwi")))
    >>> [check.func.__name__ for _, check in checks][-3:]
    ['check_voxel_refs_bad_input', 'check_voxel_refs_feature_names', \
'check_voxel_refs_transformer']
    >>> for estimator, check in checks:
    ...     check(estimator)
    """
    name = type(estimator).__name__
    tags = get_tags(estimator)
    if not getattr(tags.input_tags, "voxel_references", False):
        raise ValueError(f"{name} does not read voxel references (its input tags have no "
                         "voxel_references=True); check it with scikit-learn's "
                         "parametrize_with_checks instead.")
    checks = [getattr(sklearn_checks, check) for check in _DATA_FREE_SKLEARN_CHECKS]
    checks += [check_voxel_refs_tags, check_voxel_refs_fit, check_voxel_refs_not_fitted,
               check_voxel_refs_order_and_subset_invariance, check_voxel_refs_clone_and_pickle,
               check_voxel_refs_input_layouts, check_voxel_refs_bad_input,
               check_voxel_refs_feature_names]
    if hasattr(estimator, "transform"):
        checks.append(check_voxel_refs_transformer)
    if is_classifier(estimator):
        checks.append(check_voxel_refs_classifier)
    for check in checks:
        yield clone(estimator), functools.partial(check, name)
