"""Order of the gallery examples: the data first, then models, then outputs, then scale."""

ORDER = [
    "plot_simulated_cohort.py",
    "plot_perfusion_maps.py",
    "plot_patch_pipeline.py",
    "plot_lstm_modes.py",
    "plot_compare_models.py",
    "plot_risk_maps.py",
    "plot_dask_grid_search.py",
]


class GalleryOrder:
    """Sort key for sphinx-gallery's ``within_subsection_order``.

    Listed files come in ``ORDER``; any other example follows, alphabetically.
    """

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        if filename in ORDER:
            return (ORDER.index(filename), filename)
        return (len(ORDER), filename)

    def __repr__(self):
        return "GalleryOrder"
