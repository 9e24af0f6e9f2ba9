"""Feature transformers: from voxel references to the feature arrays every model reads."""

from ._patches import PatchExtractor
from ._perfusion_features import PerfusionMapExtractor

__all__ = ["PatchExtractor", "PerfusionMapExtractor"]
