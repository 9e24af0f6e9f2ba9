"""The package's exceptions and warnings, in one place.

Each is also importable from the module that raises it (``sklearn_hemo.datasets``,
``sklearn_hemo.persistence``); those names are the same class objects, so ``except``
clauses written against either path catch the same errors.
"""

from __future__ import annotations

__all__ = ["CohortError", "BundleError", "BundleVersionWarning", "OutputError",
           "QCWarning", "SamplingWarning"]


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


class OutputError(ValueError):
    """An output path would write into the inputs, over a foreign file, or is not writable.

    Examples
    --------
    >>> from sklearn_hemo._safety import check_output_file
    >>> from sklearn_hemo.exceptions import OutputError
    >>> try:
    ...     check_output_file("/proc/risk.nii.gz")
    ... except OutputError as exc:
    ...     print(type(exc).__name__)
    OutputError
    """


class QCWarning(UserWarning):
    """A finding of the automatic steps on one patient that quality control reports.

    The notes of the signal chain (leading non-steady frames dropped, a scan shorter than
    the common time grid, ...) as the features and maps meet them; :func:`sklearn_hemo.qc.
    patient_qc` collects the same texts. A subclass of ``UserWarning``, so filters written
    against that keep working; the command line silences this category during a run once
    its QC summary has listed the findings.

    Examples
    --------
    >>> import warnings
    >>> from sklearn_hemo.exceptions import QCWarning
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", QCWarning)
    ...     features = extractor.transform(X)  # doctest: +SKIP
    """


class SamplingWarning(UserWarning):
    """A voxel sample is smaller than asked: too few HT (or non-HT, or brain) voxels.

    Raised by :func:`sklearn_hemo.sampling.sample_voxels`; a comparison run at a
    protocol's default size silences it (the size is an upper bound there).

    Examples
    --------
    >>> import warnings
    >>> from sklearn_hemo.exceptions import SamplingWarning
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.sampling import sample_voxels
    >>> cohort = make_stroke_cohort(n_patients=4, shape=(12, 12, 2), random_state=0)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always", SamplingWarning)
    ...     X, y, groups = sample_voxels(cohort, n_samples=10**6, random_state=0)
    >>> any(issubclass(w.category, SamplingWarning) for w in caught)
    True
    """
