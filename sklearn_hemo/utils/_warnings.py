"""Warnings that point at the user's line, not at the library frame that raised them.

A warning raised inside a transform reaches the user through scikit-learn's wrappers
(``sklearn/utils/_set_output.py`` wraps every ``transform``, ``Pipeline`` calls it,
``GridSearchCV`` and joblib call the pipeline); a fixed ``stacklevel`` points into one of
those. :func:`find_stack_level` counts the frames up to the first one outside this
package and the libraries it calls through (scikit-learn, skorch, joblib), as pandas'
``find_stack_level`` does, so that ``warnings.warn(..., stacklevel=find_stack_level())``
names the file and line of the user's call.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from functools import cache

__all__ = ["find_stack_level"]

#: Packages whose frames are skipped: this one and those it is called through.
LIBRARIES = ("sklearn_hemo", "sklearn", "skorch", "joblib")


@cache
def _library_dirs():
    """Folders (with a trailing separator) of :data:`LIBRARIES` that are installed."""
    dirs = []
    for name in LIBRARIES:
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None) if module is not None else None
        if origin is None:
            try:  # find_spec of a top-level package does not import it
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                spec = None
            origin = None if spec is None else spec.origin
        if origin:
            dirs.append(os.path.dirname(os.path.abspath(origin)) + os.sep)
    return tuple(dirs)


def find_stack_level():
    """The ``stacklevel`` that makes ``warnings.warn`` point at the first frame outside
    the package and the libraries it is called through.

    Call it in the argument list of ``warnings.warn`` (or in a helper that calls
    ``warnings.warn``), from code of this package.

    Returns
    -------
    stacklevel : int
        1 for the function that calls ``warnings.warn``, 2 for its caller, and so on: the
        first frame whose file lies outside sklearn_hemo, scikit-learn, skorch and joblib.

    Examples
    --------
    >>> import warnings
    >>> from sklearn_hemo.utils._warnings import find_stack_level
    >>> def library_function():
    ...     warnings.warn("look here", UserWarning, stacklevel=find_stack_level())
    >>> find_stack_level() >= 1
    True
    """
    dirs = _library_dirs()
    frame = sys._getframe()  # this function's frame, inside the package
    level = 0
    try:
        while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(dirs):
            frame = frame.f_back
            level += 1
    finally:
        del frame
    return max(level, 1)
