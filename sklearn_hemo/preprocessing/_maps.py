"""Old private home of :class:`~sklearn_hemo.preprocessing.PerfusionMapExtractor`.

The module was renamed ``_perfusion_features`` in 0.2. It stays importable because model
bundles written before 0.2 record the class as
``sklearn_hemo.preprocessing._maps.PerfusionMapExtractor``; import the class from
:mod:`sklearn_hemo.preprocessing`.
"""

from ._perfusion_features import PerfusionMapExtractor

__all__ = ["PerfusionMapExtractor"]
