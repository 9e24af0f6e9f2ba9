"""Deprecated alias of :mod:`sklearn_hemo.risk` (voxel-wise HT risk maps).

``sklearn_hemo.maps`` was renamed ``sklearn_hemo.risk`` in 0.1, so that "maps" no longer
names two different things (risk maps here, perfusion-map features in
:class:`sklearn_hemo.preprocessing.PerfusionMapExtractor`). Importing this module warns;
its names are the same objects as those of :mod:`sklearn_hemo.risk`. It will be removed
in 0.2.
"""

import warnings as _warnings

from . import risk as _risk
from .risk import (  # noqa: F401  (re-exported for the old import path)
    DEFAULT_CHUNK_SIZE,
    brain_voxel_refs,
    cross_val_risk_map_table,
    predict_risk_map,
    predict_risk_maps,
    risk_map_table,
    with_probabilities,
)

_warnings.warn(
    "sklearn_hemo.maps was renamed sklearn_hemo.risk in 0.1; the old name will be removed "
    "in 0.2. Import from sklearn_hemo.risk instead.",
    FutureWarning,
    stacklevel=2,
)


def __getattr__(name):
    # any other name of the old module (private helpers included) resolves to the new one
    try:
        return getattr(_risk, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
