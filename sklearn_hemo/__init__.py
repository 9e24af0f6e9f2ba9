"""sklearn-hemo: voxel-wise prediction of hemorrhagic transformation from source perfusion MRI.

A scikit-learn compatible implementation of the LSTM method of Yu et al. (MICCAI 2019),
its comparison models and a physically grounded simulated stroke cohort.
"""

__version__ = "0.1.0.dev0"
