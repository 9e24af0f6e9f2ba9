"""Pre-defined perfusion maps: the baselines the source-PWI models are compared against.

- :func:`perfusion_maps` / :func:`deconvolve`: CBF, CBV, MTT and Tmax by SVD
  deconvolution (sSVD, cSVD, oSVD), vectorised over voxels.
- :func:`estimate_leakage`, :func:`estimate_leakage_arrival`, :func:`correct_leakage`,
  :func:`nonenhancing_reference`:
  Boxerman-Schmainda-Weisskoff leakage K2 and leakage-corrected curves.
- :func:`permeability_measures`: contrast slope, final contrast, maximum concentration,
  peak bolus area and percentage of signal recovery.
- :func:`patient_perfusion_maps`: all of them for one patient of a cohort, from its
  source signal (``MAP_NAMES`` lists them).
- :func:`compare_to_truth`: their errors against a simulated cohort's ground truth.
- :class:`ROIPermeabilityScorer`: the paper's ROI-based permeability baseline, one
  score per patient spread to its voxels.
"""

from ._deconvolution import deconvolve, perfusion_maps
from ._leakage import (
    correct_leakage,
    estimate_leakage,
    estimate_leakage_arrival,
    nonenhancing_reference,
)
from ._patient import MAP_NAMES, patient_perfusion_maps
from ._permeability import permeability_measures
from ._roi import ROIPermeabilityScorer
from ._validation import compare_to_truth

__all__ = [
    "MAP_NAMES",
    "ROIPermeabilityScorer",
    "compare_to_truth",
    "correct_leakage",
    "deconvolve",
    "estimate_leakage",
    "estimate_leakage_arrival",
    "nonenhancing_reference",
    "patient_perfusion_maps",
    "perfusion_maps",
    "permeability_measures",
]
