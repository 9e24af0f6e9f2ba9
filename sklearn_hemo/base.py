"""Shared estimator pieces of the package: its own estimator tags and the base class of
the transformers of voxel references.

scikit-learn's tags describe array input; this package's transformers read *voxel
references* ``(patient, i, j, k)`` and some of them compute each row's features from that
voxel alone. :class:`HemoInputTags` says so explicitly (as nilearn extends ``InputTags``
for its maskers), so that code relying on these properties asks for them by name instead
of reading another tag (``requires_fit=False`` is also true of batch-dependent
transformers such as a ``FunctionTransformer``).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import asdict, dataclass

from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import InputTags, get_tags

from .utils.fixes import HasMethods, _fit_context, validate_params
from .utils.validation import check_voxel_refs

__all__ = ["HemoInputTags", "is_row_wise_voxel_transformer", "BaseVoxelTransformer"]


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


@validate_params(
    # what get_tags reads: any scikit-learn estimator
    {"estimator": [HasMethods(["__sklearn_tags__"])]},
    prefer_skip_nested_validation=True,
)
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


class BaseVoxelTransformer(TransformerMixin, BaseEstimator, metaclass=ABCMeta):
    """Base class of the stateless, row-wise transformers of voxel references.

    It gives the scikit-learn API that
    :class:`~sklearn_hemo.preprocessing.PatchExtractor` and
    :class:`~sklearn_hemo.preprocessing.PerfusionMapExtractor` share: ``fit`` only
    validates the parameters and the voxel references (nothing is learned), the estimator
    is always fitted, and its tags say ``voxel_references`` and ``row_wise``
    (:class:`HemoInputTags`) with ``requires_fit=False``.

    Subclasses hold ``cohort`` (a :class:`~sklearn_hemo.datasets.Cohort`) and an odd
    ``patch_size``, declare them in ``_parameter_constraints`` and define ``transform``
    (which should read its references through ``self._transform_refs(X)``) and
    ``get_feature_names_out``. Each output row must depend on its own voxel only: the
    model comparison computes such features once for all sampled voxels.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.base import BaseVoxelTransformer
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> class CentreB1000(BaseVoxelTransformer):
    ...     _parameter_constraints = {"cohort": "no_validation", "patch_size": "no_validation"}
    ...
    ...     def __init__(self, cohort=None, patch_size=1):
    ...         self.cohort = cohort
    ...         self.patch_size = patch_size
    ...
    ...     def transform(self, X):
    ...         refs = self._transform_refs(X)
    ...         values = [self.cohort[p].dwi_b1000.get_fdata()[i, j, k] for p, i, j, k in refs]
    ...         return np.asarray(values, dtype=np.float32)[:, None]
    ...
    ...     def get_feature_names_out(self, input_features=None):
    ...         return np.asarray(["dwi_b1000"], dtype=object)
    >>> cohort = make_stroke_cohort(2, (8, 8, 1), difficulty="easy", random_state=0)
    >>> CentreB1000(cohort).fit_transform([[0, 4, 4, 0], [1, 2, 3, 0]]).shape
    (2, 1)
    """

    def _check_params(self):
        self._validate_params()
        if self.patch_size % 2 != 1:
            raise ValueError(f"patch_size must be odd (the voxel is the centre of its patch), "
                             f"got {self.patch_size}.")

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate the voxel references; nothing is learned.

        Parameters
        ----------
        X : array-like of int of shape (n_samples, 4)
            Voxel references (patient index, i, j, k) into ``cohort``.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The transformer itself.
        """
        self._check_params()
        check_voxel_refs(X, self.cohort, estimator=self, reset=True)
        return self

    @abstractmethod
    def transform(self, X):
        """Feature rows of the voxel references ``X``."""

    @abstractmethod
    def get_feature_names_out(self, input_features=None):
        """Names of the output columns."""

    def _transform_refs(self, X):
        """Voxel references of a ``transform`` call, checked against ``fit``'s when fitted."""
        fitted = hasattr(self, "n_features_in_")
        return check_voxel_refs(X, self.cohort, estimator=self if fitted else None,
                                reset=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # voxel references, not a feature array; each voxel's features come from its own
        # neighbourhood (row-wise, nothing learned)
        tags.input_tags = HemoInputTags.from_tags(
            tags.input_tags, two_d_array=False, voxel_references=True, row_wise=True)
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = []  # always float32 features
        return tags

    def __sklearn_is_fitted__(self):
        return True  # stateless
