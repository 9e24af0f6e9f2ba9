"""Feature transformers: from voxel references to the feature arrays every model reads."""

from ._perfusion_features import PerfusionMapExtractor
from ._patches import PatchExtractor

__all__ = ["PatchExtractor", "PerfusionMapExtractor"]
