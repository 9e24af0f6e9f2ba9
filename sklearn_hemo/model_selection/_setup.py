"""What a comparison works on, shared by the run (``_compare``) and its plan (``_plan``).

:func:`make_setup` draws, once, everything a comparison and its dry-run plan must agree
on: the protocol's settings with the overrides, the model zoo, the balanced voxel sample,
the seeds and each voxel's outer fold. It returns a :class:`ComparisonSetup`, a frozen
dataclass that the steps of the run receive instead of long argument lists. The helpers
below (scores of the positive class, metadata routing of ``groups``, the precomputed
features of a row-wise first step, time formatting) are used by both modules.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from joblib import cpu_count
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from ..base import is_row_wise_voxel_transformer
from ..exceptions import SamplingWarning
from ..utils._versions import StratifiedGroupKFold  # folds stratified on sklearn < 1.8
from ._report import TRUTH_ROWS
from ._resume import _canonical, _digest
from ._zoo import DEFAULT_ROWS, PROTOCOLS, make_model_zoo


@dataclass(frozen=True, eq=False)
class ComparisonSetup:
    """The immutable plan of one comparison (one replicate): built once, read by every step.

    Attributes
    ----------
    cohort : Cohort
        The patients.
    zoo : dict
        Model name -> ``(pipeline, param_grid)``.
    protocol : str
        The protocol's name.
    settings : dict
        ``n_outer``, ``n_inner``, ``n_samples`` (the protocol's, with the overrides).
    X, y, groups : ndarray
        The balanced voxel sample: references ``(patient, i, j, k)``, labels, patients.
    seeds : ndarray
        ``n_outer + 1`` seeds: the outer split's, then one per outer fold.
    fold : ndarray
        Each sampled voxel's outer fold.
    random_state : int
        The seed everything above was drawn from.

    The arrays and dicts are shared, not copied: steps read them and never write them.
    """

    cohort: object
    zoo: dict
    protocol: str
    settings: dict
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    seeds: np.ndarray
    fold: np.ndarray
    random_state: int

    @property
    def n_outer(self):
        return self.settings["n_outer"]

    @property
    def n_inner(self):
        return self.settings["n_inner"]

    def tasks(self):
        """Every (model, outer fold) task, in submission order."""
        return [(name, k) for name in self.zoo for k in range(self.n_outer)]

    def inner_seed(self, k):
        """The seed of outer fold ``k``'s inner search."""
        return int(self.seeds[k + 1])


def make_setup(cohort, models, protocol, n_outer, n_inner, n_samples, random_state, device):
    """What a run (or its plan) works on: the protocol's settings with the overrides, the
    zoo, the balanced voxel sample, the seeds (outer first, then one per outer fold) and
    each voxel's outer fold, as a :class:`ComparisonSetup`."""
    from ..sampling import sample_voxels

    settings = dict(PROTOCOLS[protocol])
    for key, value in (("n_outer", n_outer), ("n_inner", n_inner), ("n_samples", n_samples)):
        if value is not None:
            settings[key] = value
    zoo = _resolve_zoo(cohort, models, protocol, random_state, device)
    with warnings.catch_warnings():
        if n_samples is None:
            # the protocol's size is an upper bound: a small cohort gives all its HT voxels
            warnings.simplefilter("ignore", SamplingWarning)
        X, y, groups = sample_voxels(cohort, n_samples=settings["n_samples"], balance=True,
                                     random_state=random_state)
    X, y, groups = np.asarray(X), np.asarray(y).astype(int), np.asarray(groups)
    seeds = np.random.RandomState(random_state).randint(np.iinfo(np.int32).max,
                                                        size=settings["n_outer"] + 1)
    fold = _outer_folds(y, groups, settings["n_outer"], seeds[0])
    return ComparisonSetup(cohort=cohort, zoo=zoo, protocol=protocol, settings=settings,
                           X=X, y=y, groups=groups, seeds=seeds, fold=fold,
                           random_state=random_state)


def _resolve_zoo(cohort, models, protocol, random_state, device):
    if models is None or (isinstance(models, (list, tuple)) and
                          all(isinstance(m, str) for m in models)):
        return make_model_zoo(cohort, protocol, models=list(DEFAULT_ROWS) if models is None
                              else list(models), random_state=random_state, device=device)
    if isinstance(models, dict):
        for name, row in models.items():
            if not (isinstance(row, tuple) and len(row) == 2 and isinstance(row[1], dict)):
                raise TypeError(
                    f"models[{name!r}] must be a (pipeline, param_grid) tuple as returned "
                    "by make_model_zoo."
                )
            if "__" in name or "/" in name or name in TRUTH_ROWS:
                raise ValueError(
                    f"model name {name!r} is not allowed (no '__' or '/', not "
                    f"{' or '.join(map(repr, TRUTH_ROWS))})."
                )
        return dict(models)
    raise TypeError(
        "models must be None, a list of zoo row names or a dict name -> (pipeline, grid), "
        f"got {type(models).__name__}."
    )


def _outer_folds(y, groups, n_outer, seed):
    n_patients = np.unique(groups).size
    if n_outer > n_patients:
        raise ValueError(
            f"n_outer={n_outer} outer folds need at least {n_outer} patients with sampled "
            f"voxels, got {n_patients}; lower n_outer or add patients."
        )
    fold = np.full(len(y), -1)
    outer = StratifiedGroupKFold(n_splits=n_outer, shuffle=True, random_state=seed)
    for k, (train, test) in enumerate(outer.split(np.zeros(len(y)), y, groups)):
        _check_disjoint(groups, train, test, f"outer fold {k}")
        fold[test] = k
    return fold


def _check_disjoint(groups, train, test, where):
    shared = np.intersect1d(np.asarray(groups)[train], np.asarray(groups)[test])
    if shared.size:
        raise AssertionError(
            f"{where}: patients {shared[:5].tolist()} are in both the training and the "
            "test part; this would leak voxels of one patient across the split."
        )


def _consumes_groups(estimator):
    return bool(estimator.get_metadata_routing().consumes("fit", ["groups"]))


def _positive_scores(estimator, X):
    """Score of the positive class (label 1): probability or decision value."""
    classes = list(estimator.classes_)
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(X)[:, classes.index(1)]
    scores = estimator.decision_function(X)
    # decision_function of a binary classifier is positive towards classes_[1]
    return scores if classes.index(1) == 1 else -scores


def _prepare(pipeline, grid, X, cohort, cache, precompute=True):
    """What one model's tasks run on: ``(pipeline, inputs, cohort, cohort_params)``.

    When the first step is a stateless, row-wise extractor of voxel references (its
    :class:`~sklearn_hemo.base.HemoInputTags` say ``row_wise`` and ``voxel_references``,
    as :class:`~sklearn_hemo.preprocessing.PatchExtractor`'s do; ``requires_fit=False``
    alone is not enough: a batch-dependent ``FunctionTransformer`` has it too) and the
    grid does not search its parameters, its features are computed once for all sampled
    voxels (shared by every row with the same extractor) and the tasks run the rest of the
    pipeline on them. A stateless, row-wise extractor gives every voxel the same features
    whether it is transformed alone or with others, so nothing leaks across folds; the
    saving is large (each inner fit would otherwise re-read every training patient).

    Otherwise the pipeline runs on the voxel references, and the cohort it holds is sent
    once as its own argument (joblib's dask backend scatters large arguments by identity)
    rather than pickled inside every task.
    """
    name, first = pipeline.steps[0]
    searched = any(key.split("__")[0] == name for key in grid)
    if (precompute and len(pipeline.steps) > 1 and not searched
            and is_row_wise_voxel_transformer(first)):
        key = _features_key(first)
        if key not in cache:
            cache[key] = clone(first).fit_transform(X)
        return clone(Pipeline(pipeline.steps[1:])), cache[key], None, []
    names = [param for param, value in pipeline.get_params(deep=True).items()
             if value is cohort]
    pipeline = clone(pipeline)
    if names:
        pipeline.set_params(**dict.fromkeys(names, None))
    return pipeline, X, (cohort if names else None), names


def _features_key(extractor):
    return _digest(_canonical(extractor))


def _cpu_count():
    return cpu_count()


def _n_workers(n_jobs):
    """Workers of ``n_jobs`` (joblib's convention: -1 all cores, -2 all but one, ...)."""
    return n_jobs if n_jobs > 0 else _cpu_count() + 1 + n_jobs


def _format_seconds(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}min" if hours else f"{rest // 60}min {rest % 60:02d}s"
