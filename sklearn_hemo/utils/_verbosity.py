"""The package's ``verbose`` convention, in one place.

Every long-running public function takes one ``verbose`` int:

* ``0``: silent;
* ``1``: progress bars (tqdm) and, where there is one, the time estimate;
* ``2``: also one line per finished unit of work (a patient, a (model, fold) task).

Bars and lines go to standard error (lines through ``tqdm.write``, which does not break
a bar), so that standard output holds only results. Nothing in the library calls
``print``. What the user must know whatever ``verbose`` is (a patient's dropped frames, a
figure that could not be written) is a warning, raised with
:func:`~sklearn_hemo.utils._warnings.find_stack_level` so that it names the user's line.

The booleans that came before (``progress=``, ``estimate_time=``) are deprecated: a
function keeps them for one release with the sentinel default ``"deprecated"``, as
scikit-learn does, and :func:`resolve_verbose` maps them onto ``verbose`` with a
``FutureWarning``.
"""

from __future__ import annotations

import sys
import warnings
from numbers import Integral

from ._warnings import find_stack_level
from .fixes import Hidden, StrOptions

__all__ = ["DEPRECATED", "DEPRECATED_FLAG", "progress_bar", "progress_line",
           "resolve_verbose"]

#: Default of a deprecated argument: tells "not passed" from any value a user passes.
DEPRECATED = "deprecated"

#: ``validate_params`` constraint of a deprecated boolean (the sentinel is hidden).
DEPRECATED_FLAG = ["boolean", Hidden(StrOptions({DEPRECATED}))]

#: The release in which the deprecated booleans are removed.
REMOVED_IN = "0.2"


def resolve_verbose(verbose, where, **deprecated):
    """``verbose`` as an int, with any deprecated boolean passed mapped onto it.

    Parameters
    ----------
    verbose : int or bool
        The new argument.
    where : str
        The function's name, for the warning.
    **deprecated : bool or "deprecated"
        The deprecated booleans by name (``progress=``, ``estimate_time=``). Each passed
        (not ``"deprecated"``) warns; ``True`` raises ``verbose`` to at least 1, ``False``
        leaves it as it is.

    Returns
    -------
    verbose : int

    Raises
    ------
    TypeError
        If ``verbose`` is not an int (a bool counts as 0 or 1).
    ValueError
        If ``verbose`` is negative.

    Examples
    --------
    >>> import warnings
    >>> from sklearn_hemo.utils._verbosity import resolve_verbose
    >>> resolve_verbose(0, "f", progress="deprecated")
    0
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     resolve_verbose(0, "f", progress=True)
    1
    >>> caught[0].category.__name__
    'FutureWarning'
    """
    if not isinstance(verbose, Integral):
        raise TypeError(f"{where}: verbose must be an int (0 silent, 1 progress bars, 2 also "
                        f"a line per finished task), got {verbose!r}.")
    if verbose < 0:
        raise ValueError(f"{where}: verbose must be 0 or more (0 silent, 1 progress bars, 2 "
                         f"also a line per finished task), got {verbose}.")
    verbose = int(verbose)
    for name, value in deprecated.items():
        if isinstance(value, str) and value == DEPRECATED:
            continue
        warnings.warn(
            f"{where}: {name}= is deprecated and will be removed in {REMOVED_IN}; pass "
            f"verbose=1 instead of {name}=True (progress bars and the time estimate), "
            f"verbose=0 instead of {name}=False (silent) or verbose=2 for a line per "
            "finished task.", FutureWarning, stacklevel=find_stack_level())
        if value:
            verbose = max(verbose, 1)
    return verbose


def progress_bar(iterable, verbose, *, line=None, **kwargs):
    """``iterable`` wrapped in a tqdm bar (on standard error) when ``verbose >= 1``.

    Parameters
    ----------
    iterable : iterable
        What to iterate over; returned unchanged when ``verbose`` is 0.
    verbose : int
        The caller's verbosity.
    line : callable or None, default=None
        ``item -> str``: with ``verbose >= 2``, the line written (through
        :func:`progress_line`) once the caller is done with ``item``, i.e. when it asks
        for the next one.
    **kwargs
        Passed to ``tqdm`` (``desc``, ``unit``, ``total``, ...).

    Returns
    -------
    iterable : iterable

    Examples
    --------
    >>> from sklearn_hemo.utils._verbosity import progress_bar
    >>> list(progress_bar(range(3), verbose=0))
    [0, 1, 2]
    """
    if verbose < 1:
        return iterable
    from tqdm.auto import tqdm

    bar = tqdm(iterable, **kwargs)
    if verbose < 2 or line is None:
        return bar
    return _with_lines(bar, line, verbose)


def _with_lines(bar, line, verbose):
    for item in bar:
        yield item
        progress_line(line(item), verbose)


def progress_line(message, verbose, level=2):
    """Write ``message`` to standard error when ``verbose >= level``, without breaking
    a progress bar (``tqdm.write``).

    Parameters
    ----------
    message : str
        One line.
    verbose : int
        The caller's verbosity.
    level : int, default=2
        The verbosity from which the line is written: 1 for what goes with the bars (the
        time estimate, the replicate being run), 2 for one line per finished task.

    Examples
    --------
    >>> from sklearn_hemo.utils._verbosity import progress_line
    >>> progress_line("sub-001 done", verbose=0)  # silent
    """
    if verbose >= level:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)
