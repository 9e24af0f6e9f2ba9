"""Compatibility layer: every private scikit-learn name the package uses, in one place.

scikit-learn does not promise that names under a leading underscore stay where they are.
The rest of the package imports them from here, so that a scikit-learn release that moves
one needs a change in this file only; each import says why the package needs it. All were
checked against scikit-learn 1.6.1 (the lower bound in ``pyproject.toml``) and 1.9.1.

Nothing here is part of the package's public API.
"""

# ``_fit_context``: the decorator scikit-learn's own estimators put on ``fit``. It runs
# ``_validate_params`` against ``_parameter_constraints`` (once, skipping the nested
# estimators' checks with ``prefer_skip_nested_validation=True``) and honours
# ``sklearn.config_context(skip_parameter_validation=...)``. Private since 1.3; there is
# no public equivalent.
from sklearn.base import _fit_context  # noqa: F401

# ``Interval``, ``StrOptions`` and ``validate_params``: the constraint objects of
# ``_parameter_constraints`` and the decorator that checks a public function's arguments
# with the same messages as scikit-learn's. ``sklearn.utils._param_validation`` since 1.2;
# no public home. ``Hidden`` marks an accepted value that the error messages do not list
# (the ``"deprecated"`` sentinel of an argument kept for one release), same module, and
# ``HasMethods`` the constraint "an object with these methods" (an estimator argument).
from sklearn.utils._param_validation import (  # noqa: F401
    HasMethods,
    Hidden,
    Interval,
    StrOptions,
    validate_params,
)


def __getattr__(name):
    # ``BaseForest``: the common base of the random forests and extra-trees ensembles,
    # used by the comparison's time model to recognise a forest (its cost law is that of
    # the trees, whatever the concrete class). ``sklearn.ensemble._forest`` for as long as
    # the forests have existed. Imported lazily: ``sklearn.ensemble`` is slow to import and
    # only the comparison needs it.
    if name == "BaseForest":
        from sklearn.ensemble._forest import BaseForest

        return BaseForest
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
