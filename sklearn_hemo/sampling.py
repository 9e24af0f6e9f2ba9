"""Balanced, patient-grouped sampling of training voxels.

Yu et al. (MICCAI 2019) trained on 50,000 voxels, half with hemorrhagic transformation
(HT) at follow-up and half without, drawn from many patients. :func:`sample_voxels` draws
such a set as voxel references, the input of
:class:`~sklearn_hemo.preprocessing.PatchExtractor`, together with the labels and the
patient groups that grouped cross-validation needs.
"""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np
from sklearn.utils import check_random_state

from .datasets import Cohort
from .exceptions import SamplingWarning
from .utils._warnings import find_stack_level
from .utils.fixes import StrOptions, validate_params
from .utils.validation import check_integer

__all__ = ["sample_voxels"]

_MISSING = ("raise", "skip", "negative")


def _allocate(available, quota, rng):
    """Split ``quota`` draws over patients as evenly as their ``available`` counts allow.

    Water filling: every patient gets the same share, capped by what it has; what a small
    patient cannot give is spread over the others. The last units of an uneven split go
    to randomly chosen patients. Returns the count per patient (sum ``min(quota, total)``).
    """
    available = np.asarray(available, dtype=np.int64)
    if available.sum() <= quota:
        return available.copy()
    # smallest level L with sum(min(available, L)) >= quota
    low, high = 0, int(available.max())
    while low < high:
        mid = (low + high) // 2
        if np.minimum(available, mid).sum() >= quota:
            high = mid
        else:
            low = mid + 1
    counts = np.minimum(available, low - 1)
    remainder = quota - int(counts.sum())
    can_take = np.flatnonzero(available >= low)
    counts[rng.choice(can_take, size=remainder, replace=False)] += 1
    return counts



@validate_params(
    {
        "cohort": [Cohort],
        # check_integer's message gives the smallest value accepted
        "n_samples": [Integral],
        "max_per_patient": [Integral, None],
        "balance": ["boolean"],
        "missing_ht_mask": [StrOptions(set(_MISSING))],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def sample_voxels(cohort, n_samples=50_000, *, balance=True, max_per_patient=None,  # noqa: C901 - the balanced, unbalanced and capped draws share one validated pass over the patients
                  missing_ht_mask="raise", random_state=None):
    """Draw voxel references, HT labels and patient groups for training.

    Voxels are drawn inside each patient's brain mask
    (:meth:`~sklearn_hemo.datasets.Patient.get_brain_mask`) and labelled by its follow-up
    HT annotation (``ht_mask > 0``).

    Per-patient caps: each class (or, with ``balance=False``, the whole sample) is split
    over the patients as evenly as possible ("water filling": every patient gives the
    same number of voxels unless it has fewer, and what small patients cannot give is
    spread over the others), and no patient gives more than ``max_per_patient`` voxels of
    a class. One large lesion therefore cannot dominate the HT half.

    When the cohort has too few HT voxels for a balanced draw of ``n_samples``, every
    available HT voxel is taken, as many non-HT voxels are drawn, and a warning gives the
    size actually returned (smaller than ``n_samples``). Without any HT voxel a balanced
    draw is impossible and a ValueError says so.

    The draw is deterministic for a given ``random_state``; the rows come in random order.

    Parameters
    ----------
    cohort : Cohort
        The patients, with ``ht_mask`` images.
    n_samples : int, default=50_000
        Number of voxels (the paper's 50,000). With ``balance=True`` half are HT
        (``n_samples // 2``) and the rest non-HT.
    balance : bool, default=True
        Draw equal numbers of HT and non-HT voxels. False draws ``n_samples`` brain voxels
        regardless of their label (evenly over patients, the label prevalence of each
        patient preserved on average).
    max_per_patient : int or None, default=None
        Most voxels one patient may give to each class (to the whole sample with
        ``balance=False``). None means no cap beyond the even split.
    missing_ht_mask : {"raise", "skip", "negative"}, default="raise"
        A patient without ``ht_mask``: raise a ValueError naming it, leave it out, or
        treat all of its voxels as non-HT (only for patients whose ``ht`` is 0; a bleeding
        patient without annotation always raises).
    random_state : int, RandomState instance or None, default=None
        Seed of the draw.

    Returns
    -------
    X : ndarray of int64 of shape (n, 4)
        Voxel references (patient index, i, j, k) into ``cohort``.
    y : ndarray of int64 of shape (n,)
        1 for HT at follow-up, 0 otherwise.
    groups : ndarray of int64 of shape (n,)
        Patient index of each sample (``X[:, 0]``), for grouped cross-validation.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.sampling import sample_voxels
    >>> cohort = make_stroke_cohort(n_patients=6, shape=(16, 16, 2), random_state=0)
    >>> X, y, groups = sample_voxels(cohort, n_samples=10, random_state=0)
    >>> X.shape, int(y.sum()), bool(np.array_equal(groups, X[:, 0]))
    ((10, 4), 5, True)
    """
    if not isinstance(cohort, Cohort):
        raise TypeError(f"cohort must be a sklearn_hemo.datasets.Cohort, got "
                        f"{type(cohort).__name__}.")
    n_samples = check_integer(n_samples, "n_samples")
    if max_per_patient is not None:
        max_per_patient = check_integer(max_per_patient, "max_per_patient")
    if missing_ht_mask not in _MISSING:
        raise ValueError(f"missing_ht_mask must be one of {_MISSING}, got {missing_ht_mask!r}.")
    if not isinstance(balance, (bool, np.bool_)):
        raise ValueError(f"balance must be True or False, got {balance!r}.")
    rng = check_random_state(random_state)

    # flat indices of the brain voxels of each class, per patient
    pools = {0: [], 1: []}
    patients = []
    for index, patient in enumerate(cohort):
        brain = patient.get_brain_mask()
        if patient.ht_mask is None:
            if missing_ht_mask == "skip":
                continue
            if missing_ht_mask == "raise":
                raise ValueError(
                    f"participant {patient.id} has no ht_mask (follow-up HT annotation). Add "
                    "ht_mask.nii.gz, or pass missing_ht_mask='skip' to leave such patients "
                    "out, or 'negative' to count patients with ht=0 as all non-HT.")
            if patient.ht != 0:
                raise ValueError(
                    f"participant {patient.id} has no ht_mask but ht={patient.ht}: its HT "
                    "voxels are unknown, so missing_ht_mask='negative' cannot label it. Add "
                    "ht_mask.nii.gz or pass missing_ht_mask='skip'.")
            label = np.zeros(brain.shape, dtype=bool)
        else:
            label = np.asarray(patient.ht_mask.dataobj) > 0
            if label.shape != brain.shape:
                raise ValueError(f"participant {patient.id}: ht_mask has shape {label.shape} "
                                 f"but the PWI grid is {brain.shape}. Resample the annotation "
                                 "onto the PWI grid.")
        patients.append((index, brain.shape))
        pools[1].append(np.flatnonzero(brain & label))
        pools[0].append(np.flatnonzero(brain & ~label))
    if not patients:
        raise ValueError("no patient to sample from (all were skipped for a missing ht_mask).")

    def capped(pool):
        sizes = np.array([len(v) for v in pool])
        return sizes if max_per_patient is None else np.minimum(sizes, max_per_patient)

    if balance:
        n_pos = n_samples // 2
        n_neg = n_samples - n_pos
        pos_counts = _allocate(capped(pools[1]), n_pos, rng)
        if pos_counts.sum() == 0:
            raise ValueError("the cohort has no HT voxel inside the brain masks, so a balanced "
                             "sample is impossible. Check the ht_mask images, or pass "
                             "balance=False.")
        if pos_counts.sum() < n_pos:
            n_pos = n_neg = int(pos_counts.sum())
            warnings.warn(
                f"only {n_pos} HT voxels are available (max_per_patient={max_per_patient}); "
                f"returning a balanced sample of {2 * n_pos} voxels instead of {n_samples}.",
                SamplingWarning, stacklevel=find_stack_level())
        neg_counts = _allocate(capped(pools[0]), n_neg, rng)
        if neg_counts.sum() == 0:
            raise ValueError("the cohort has no non-HT voxel inside the brain masks (every "
                             "brain voxel is annotated HT), so a balanced sample is "
                             "impossible. Check the ht_mask and brain_mask images.")
        if neg_counts.sum() < n_neg:
            n_pos = int(neg_counts.sum())
            pos_counts = _allocate(capped(pools[1]), n_pos, rng)
            warnings.warn(
                f"only {n_pos} non-HT voxels are available; returning a balanced sample of "
                f"{2 * n_pos} voxels instead of {n_samples}.", SamplingWarning,
                stacklevel=find_stack_level())
        plan = [(1, pos_counts), (0, neg_counts)]
    else:
        merged = [np.sort(np.concatenate([a, b])) for a, b in zip(pools[0], pools[1],
                                                                   strict=True)]
        counts = _allocate(capped(merged), n_samples, rng)
        if counts.sum() < n_samples:
            warnings.warn(f"only {counts.sum()} brain voxels are available; returning all of "
                          "them.", SamplingWarning, stacklevel=find_stack_level())
        positives = pools[1]
        pools = {None: merged}
        plan = [(None, counts)]

    X_parts, y_parts = [], []
    for label, counts in plan:
        for p, ((index, shape), pool, count) in enumerate(
                zip(patients, pools[label], counts, strict=True)):
            if count == 0:
                continue
            flat = np.sort(rng.choice(pool, size=int(count), replace=False))
            ijk = np.column_stack(np.unravel_index(flat, shape))
            X_parts.append(np.column_stack([np.full(len(flat), index), ijk]))
            if label is None:  # unbalanced: look the label up
                y_parts.append(np.isin(flat, positives[p]).astype(np.int64))
            else:
                y_parts.append(np.full(len(flat), label, dtype=np.int64))
    X = np.concatenate(X_parts).astype(np.int64)
    y = np.concatenate(y_parts)
    order = rng.permutation(len(X))
    X, y = X[order], y[order]
    return X, y, X[:, 0].copy()

