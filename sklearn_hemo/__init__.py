"""sklearn-hemo: voxel-wise prediction of hemorrhagic transformation from source perfusion MRI.

A scikit-learn compatible implementation of the LSTM method of Yu et al. (MICCAI 2019),
its comparison models and a physically grounded simulated stroke cohort.
"""

__version__ = "0.1.0.dev0"

__all__ = ["config_context", "get_config", "set_config", "__version__"]


def __getattr__(name):
    # the global switches (sklearn_hemo._config), imported when first asked for: importing
    # the package stays light (`sklearn-hemo --help`)
    if name in ("config_context", "get_config", "set_config"):
        from . import _config

        return getattr(_config, name)
    raise AttributeError(f"module 'sklearn_hemo' has no attribute {name!r}")
