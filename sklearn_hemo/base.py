"""Shared estimator pieces of the package: its own estimator tags.

scikit-learn's tags describe array input; this package's transformers read *voxel
references* ``(patient, i, j, k)`` and some of them compute each row's features from that
voxel alone. :class:`HemoInputTags` says so explicitly (as nilearn extends ``InputTags``
for its maskers), so that code relying on these properties asks for them by name instead
of reading another tag (``requires_fit=False`` is also true of batch-dependent
transformers such as a ``FunctionTransformer``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sklearn.utils import InputTags, get_tags

__all__ = ["HemoInputTags", "is_row_wise_voxel_transformer"]


@dataclass
class HemoInputTags(InputTags):
    """Input tags of sklearn-hemo estimators: scikit-learn's, plus two of ours.

    Parameters
    ----------
    voxel_references : bool, default=False
        ``X`` is an integer array of voxel references ``(patient, i, j, k)`` into a
        cohort, not a feature array.
    row_wise : bool, default=False
        Each output row depends only on its own input row (and on nothing learned in
        ``fit``): transforming a voxel alone or with any others gives the same features.
        Only then may features be computed once for all sampled voxels without leaking
        information across cross-validation folds.
    **kwargs
        scikit-learn's :class:`~sklearn.utils.InputTags` fields.

    Examples
    --------
    >>> from sklearn.utils import get_tags
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.preprocessing import PatchExtractor
    >>> cohort = make_stroke_cohort(2, (8, 8, 1), difficulty="easy", random_state=0)
    >>> tags = get_tags(PatchExtractor(cohort)).input_tags
    >>> tags.voxel_references, tags.row_wise, tags.two_d_array
    (True, True, False)
    """

    voxel_references: bool = False
    row_wise: bool = False

    @classmethod
    def from_tags(cls, input_tags, **changes):
        """Our input tags from scikit-learn's ``input_tags``, with ``changes`` applied."""
        return cls(**{**asdict(input_tags), **changes})


def is_row_wise_voxel_transformer(estimator):
    """Whether ``estimator`` is a stateless, row-wise transformer of voxel references.

    True only when its tags say ``voxel_references`` and ``row_wise`` (see
    :class:`HemoInputTags`) and that it does not require ``fit``.

    Parameters
    ----------
    estimator : estimator
        Any scikit-learn estimator.

    Returns
    -------
    answer : bool

    Examples
    --------
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from sklearn_hemo.base import is_row_wise_voxel_transformer
    >>> is_row_wise_voxel_transformer(FunctionTransformer())
    False
    """
    tags = get_tags(estimator)
    input_tags = tags.input_tags
    return (not tags.requires_fit and getattr(input_tags, "voxel_references", False)
            and getattr(input_tags, "row_wise", False))
