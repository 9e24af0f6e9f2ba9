"""Discovery of the package's estimators and public functions.

As :mod:`sklearn.utils.discovery` does for scikit-learn, these functions walk the package
(:func:`pkgutil.walk_packages`) instead of keeping a list, so that a new estimator or
function is found, checked and documented without anyone remembering to add it. Only
public modules are walked (no part of the dotted name starts with an underscore, no
``tests``); a class defined in a private module is found through the public module that
exports it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings
from operator import itemgetter

from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    ClusterMixin,
    RegressorMixin,
    TransformerMixin,
)

from .fixes import StrOptions, validate_params

__all__ = ["all_estimators", "all_functions"]

_PACKAGE = "sklearn_hemo"
_MODULES_TO_IGNORE = {"tests", "cli"}  # the CLI holds no estimators or library functions
_TYPE_FILTERS = {
    "classifier": ClassifierMixin,
    "regressor": RegressorMixin,
    "transformer": TransformerMixin,
    "cluster": ClusterMixin,
}


def _public_modules():
    """The imported public modules of the package, sorted by name."""
    package = importlib.import_module(_PACKAGE)
    modules = [package]
    # an old import path kept for one release warns when imported: walking is not using it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{_PACKAGE}."):
            parts = info.name.split(".")[1:]
            if any(part.startswith("_") or part in _MODULES_TO_IGNORE for part in parts):
                continue
            modules.append(importlib.import_module(info.name))
    return sorted(modules, key=lambda module: module.__name__)


def _is_abstract(cls):
    return bool(getattr(cls, "__abstractmethods__", None))


@validate_params(
    {"type_filter": [StrOptions(set(_TYPE_FILTERS)), list, None]},
    prefer_skip_nested_validation=True,
)
def all_estimators(type_filter=None):
    """All public estimators of sklearn-hemo, found by walking the package.

    A class is listed when it derives from :class:`sklearn.base.BaseEstimator`, is defined
    in ``sklearn_hemo`` (not imported from scikit-learn), has a public name, is exported by a
    public module and is not abstract.

    Parameters
    ----------
    type_filter : {"classifier", "regressor", "transformer", "cluster"} or list of such \
            str, default=None
        Which kinds of estimators to return; a list returns those of at least one of the
        kinds. None returns all of them.

    Returns
    -------
    estimators : list of tuple
        ``(name, class)`` pairs sorted by name.

    Raises
    ------
    ValueError
        An unknown kind in a ``type_filter`` list.

    See Also
    --------
    all_functions : The public functions of the package.
    sklearn.utils.discovery.all_estimators : The same for scikit-learn.

    Examples
    --------
    >>> from sklearn_hemo.utils.discovery import all_estimators
    >>> [name for name, _ in all_estimators(type_filter="transformer")]
    ['BlockScaler', 'PatchExtractor', 'PerfusionMapExtractor']
    >>> dict(all_estimators())["LSTMClassifier"]
    <class 'sklearn_hemo.neural.LSTMClassifier'>
    """
    found = set()
    for module in _public_modules():
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (not name.startswith("_") and issubclass(cls, BaseEstimator)
                    and cls.__module__.split(".")[0] == _PACKAGE and not _is_abstract(cls)):
                found.add((name, cls))
    estimators = list(found)
    if type_filter is not None:
        kinds = [type_filter] if isinstance(type_filter, str) else list(type_filter)
        unknown = [kind for kind in kinds if kind not in _TYPE_FILTERS]
        if unknown:
            raise ValueError(f"type_filter must be one of {sorted(_TYPE_FILTERS)}, a list of "
                             f"them or None; got {unknown!r}.")
        estimators = [(name, cls) for name, cls in estimators
                      if any(issubclass(cls, _TYPE_FILTERS[kind]) for kind in kinds)]
    return sorted(estimators, key=itemgetter(0))


@validate_params({}, prefer_skip_nested_validation=True)
def all_functions():
    """All public functions of sklearn-hemo: those named in a public module's ``__all__``.

    A function exported by several modules (a subpackage and its private module) is listed
    once, under the shortest dotted path.

    Returns
    -------
    functions : list of tuple
        ``(qualified name, function)`` pairs sorted by qualified name, for instance
        ``("sklearn_hemo.sampling.sample_voxels", <function sample_voxels>)``.

    See Also
    --------
    all_estimators : The public estimators of the package.

    Examples
    --------
    >>> from sklearn_hemo.utils.discovery import all_functions
    >>> names = [name for name, _ in all_functions()]
    >>> "sklearn_hemo.sampling.sample_voxels" in names
    True
    """
    seen = {}
    for module in _public_modules():
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if not inspect.isfunction(obj):
                continue
            qualname = f"{module.__name__}.{name}"
            if id(obj) not in seen or len(qualname) < len(seen[id(obj)][0]):
                seen[id(obj)] = (qualname, obj)
    return sorted(seen.values(), key=itemgetter(0))
