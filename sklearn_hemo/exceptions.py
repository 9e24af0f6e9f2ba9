"""The package's exceptions and warnings, in one place.

Each is also importable from the module that raises it (``sklearn_hemo.datasets``,
``sklearn_hemo.persistence``); those names are the same class objects, so ``except``
clauses written against either path catch the same errors.
"""

from __future__ import annotations

__all__ = ["CohortError", "BundleError", "BundleVersionWarning"]


class CohortError(ValueError):
    """A cohort or one of its files is malformed.

    The message names the participant, the file and what to do about it.

    Examples
    --------
    >>> import nibabel as nib, numpy as np
    >>> from sklearn_hemo.datasets import Cohort, Patient
    >>> from sklearn_hemo.exceptions import CohortError
    >>> pwi = nib.Nifti1Image(np.full((2, 2, 1, 5), 100.0), np.eye(4))
    >>> dwi = nib.Nifti1Image(np.ones((2, 2, 1)), np.eye(4))
    >>> p = Patient("sub-01", pwi, dwi, dwi, echo_time=0.03, repetition_time=1.8)
    >>> try:
    ...     Cohort([p, p])
    ... except CohortError as exc:
    ...     print(exc)
    participant sub-01 appears twice; participant ids must be unique.
    """


class BundleError(ValueError):
    """A model bundle is missing, malformed, tampered with or holds untrusted types.

    Examples
    --------
    >>> from sklearn_hemo.exceptions import BundleError
    >>> from sklearn_hemo.persistence import load_model
    >>> try:
    ...     load_model("/tmp/sklearn-hemo-no-such-bundle")
    ... except BundleError as exc:
    ...     print(type(exc).__name__)
    BundleError
    """


class BundleVersionWarning(UserWarning):
    """A model bundle was written with other library versions than the running ones.

    Examples
    --------
    To refuse, rather than warn about, a bundle saved with other versions:

    >>> import warnings
    >>> from sklearn_hemo.exceptions import BundleVersionWarning
    >>> from sklearn_hemo.persistence import load_model
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", BundleVersionWarning)
    ...     model = load_model("hemo-model")  # doctest: +SKIP
    """
