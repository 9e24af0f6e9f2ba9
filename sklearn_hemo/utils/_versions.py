"""What the package needs from releases newer than the floors of its dependencies.

CI runs the test suite at the lowest version of each core dependency that pyproject.toml
allows (``.ci/lower-bounds``). Where an older supported release behaves differently in a
way that matters, the fix lives here, with the release that makes it unnecessary, so it
can be dropped when the floor rises past that release.
"""

import numpy as np
import sklearn
from sklearn.model_selection import StratifiedGroupKFold as _StratifiedGroupKFold
from sklearn.utils import check_random_state

__all__ = ["StratifiedGroupKFold"]


def _release(version):
    return tuple(int(part) for part in version.split(".")[:2])


# scikit-learn < 1.8 shuffled StratifiedGroupKFold's per-group class counts apart from
# the groups they belong to, so shuffled folds were no longer stratified.
SHUFFLED_GROUP_COUNTS = _release(sklearn.__version__) < (1, 8)


class StratifiedGroupKFold(_StratifiedGroupKFold):
    """scikit-learn's ``StratifiedGroupKFold`` whose shuffle keeps folds stratified.

    Before scikit-learn 1.8, ``shuffle=True`` shuffled each group's class counts apart
    from the group, so the folds were balanced on the wrong counts: grouped, but not
    stratified (a small cohort could get a fold with a single class). Here the groups are
    relabelled in the order scikit-learn 1.8 shuffles them and split unshuffled, which
    gives scikit-learn 1.8's folds on every supported release. From 1.8 on this is
    scikit-learn's class unchanged.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds (at least 2).
    shuffle : bool, default=False
        Whether to shuffle the order of the groups before splitting.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffle when ``shuffle=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.utils._versions import StratifiedGroupKFold
    >>> y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    >>> groups = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    >>> cv = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=0)
    >>> [sorted(set(y[test])) for _, test in cv.split(y, y, groups)]
    [[0, 1], [0, 1]]
    """

    def split(self, X, y=None, groups=None):
        if not (self.shuffle and SHUFFLED_GROUP_COUNTS):
            yield from super().split(X, y, groups)
            return
        labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
        order = np.arange(labels.size)
        check_random_state(self.random_state).shuffle(order)
        position = np.empty_like(order)
        position[order] = np.arange(order.size)
        unshuffled = _StratifiedGroupKFold(n_splits=self.n_splits)
        yield from unshuffled.split(X, y, position[inverse.ravel()])
