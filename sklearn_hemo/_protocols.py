"""The comparison protocols, in a module of their own: the command line's help reads them
without importing the library (``sklearn-hemo --help`` stays fast). Public as
:data:`sklearn_hemo.model_selection.PROTOCOLS`."""

#: Cross-validation and sampling sizes of each protocol (used by ``compare_models``).
#: ``standard`` (the default) gives every tuned family the same search (4 candidates, 2
#: inner patient-grouped folds) and the paper's network trained to convergence, within
#: about 10 minutes on two cores; ``quick`` is a smoke run (2 candidates per family, a
#: small network, 2 inner folds) of a minute or two; ``paper`` is the protocol of Yu et
#: al.: 50,000 balanced voxels, 10 outer and 5 inner folds.
PROTOCOLS = {
    "quick": {"n_outer": 5, "n_inner": 2, "n_samples": 4000},
    "standard": {"n_outer": 5, "n_inner": 2, "n_samples": 4000},
    "paper": {"n_outer": 10, "n_inner": 5, "n_samples": 50_000},
}
