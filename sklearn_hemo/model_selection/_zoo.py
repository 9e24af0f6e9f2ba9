"""The model zoo: the rows of the paper's Table 1 as named pipelines with their grids.

Every row is ``feature extractor -> scaling where it belongs -> estimator`` with the steps
named ``features``, ``scale`` (when present) and ``model``, so grids read ``model__C``.
The extractor holds the cohort and turns voxel references ``(patient, i, j, k)`` into
features; everything downstream is a plain scikit-learn estimator.
"""

from __future__ import annotations

from numbers import Integral

import sklearn

from ..utils.fixes import Interval, StrOptions, validate_params

__all__ = ["make_model_zoo", "DEFAULT_ROWS", "N_CANDIDATES", "PROTOCOLS", "ZOO_ROWS"]

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

#: Zoo rows in the order of the paper's Table 1, then the perfusion-map baselines: a random
#: forest and an SVM on patches of CBF, CBV, MTT, Tmax and leakage K2 maps (SVD
#: deconvolution of the same source signal), and the ROI-based DSC leakage proxy.
ZOO_ROWS = (
    "lstm-pwi",
    "lstm-pwi+aif",
    "lstm-pwi+dwi",
    "lstm-pwi+aif+dwi",
    "linear",
    "random-forest",
    "sr-kda",
    "svm",
    "random-forest-maps",
    "svm-maps",
    "roi-leakage-proxy",
)

#: Rows of a comparison run when none are named: every row but ``roi-leakage-proxy``,
#: whose BSW leakage estimate is biased by bolus delay in the lesion (its lesion mean
#: hardly orders patients by their true leakage; see
#: :class:`~sklearn_hemo.perfusion.ROIPermeabilityScorer`). Name it to include it.
DEFAULT_ROWS = tuple(name for name in ZOO_ROWS if name != "roi-leakage-proxy")

#: Model family of every row: the rows of one family share settings and grid.
FAMILIES = {
    **{name: "lstm" for name in ZOO_ROWS if name.startswith("lstm-")},
    "linear": "linear", "random-forest": "forest", "sr-kda": "srkda", "svm": "svm",
    "random-forest-maps": "forest", "svm-maps": "svm", "roi-leakage-proxy": "roi",
}

# Training sizes above which the SVM row swaps LIBSVM's SVC (cost at least quadratic in
# the samples) for a Nystroem map and a linear SVM; see _svm below.
_SVM_EXACT_MAX_SAMPLES = 10_000

#: Candidates per tuned family in each protocol: the same for every family, so that no
#: row is favoured by a larger search. The linear row (the paper's unregularised least
#: squares) and the ROI row have no hyperparameter and are fitted as they are.
N_CANDIDATES = {"quick": 2, "standard": 4, "paper": 4}


#: The training recipe of the LSTM rows in the ``standard`` and ``quick`` protocols
#: (measured in benchmarks/lstm_recipe.py; docs/comparison.rst gives the evidence): a
#: step budget instead of a number of epochs, mini-batches of 128, the forget-gate bias
#: at 1, gradient norm clipped at 1, and early stopping on held-out patients (patience 5
#: epochs) that counts no epoch before ``min_steps`` steps nor any epoch whose training
#: loss is still on the initial ln 2 plateau, and restores the best counted epoch. In the
#: rows that read the AIF (one curve per patient, a patient fingerprint), each training
#: row's AIF is dropped (zeroed) with probability 0.5 (``aif_dropout``; ignored by the
#: other rows).
_LSTM_RECIPE = {"batch_size": 128, "max_epochs": 500, "max_steps": 800, "min_steps": 200,
                "early_stopping": True, "validation_fraction": 0.2, "n_iter_no_change": 5,
                "forget_bias": 1.0, "clip_grad_norm": 1.0, "plateau_restarts": 1,
                "aif_dropout": 0.5}


def _grids(protocol):
    """Estimator settings and grids per row family, for one protocol.

    Every tuned family gets ``N_CANDIDATES[protocol]`` candidates.
    """
    if protocol == "quick":
        return {
            # a smoke run: a small network, the standard recipe on a smaller step budget
            "lstm": ({"hidden_size": 16, **_LSTM_RECIPE, "max_steps": 200, "min_steps": 40,
                      "validation_fraction": 0.25, "n_iter_no_change": 2},
                     {"model__lr": [3e-3, 1e-2]}),
            "linear": ({}, {}),
            "forest": ({"n_estimators": 60, "max_features": "sqrt"},
                       {"model__min_samples_leaf": [1, 10]}),
            "srkda": ({"n_components": 300}, {"model__alpha": [0.01, 1.0]}),
            "svm": ({}, {"model__C": [1.0, 10.0]}),
        }
    if protocol == "standard":
        return {
            # the paper's network (60 cells, Adam, cross-entropy) with the recipe of
            # _LSTM_RECIPE (docs/comparison.rst, "The LSTM recipe"): early stopping on
            # held-out patients that may not stop, nor keep an epoch, before 200 steps or
            # while the training loss is on its initial ln 2 plateau; the 4 candidates
            # are learning rates
            "lstm": ({"hidden_size": 60, **_LSTM_RECIPE},
                     {"model__lr": [1e-3, 3e-3, 5e-3, 1e-2]}),
            "linear": ({}, {}),
            "forest": ({"n_estimators": 150},
                       {"model__max_features": ["sqrt", 0.1],
                        "model__min_samples_leaf": [1, 10]}),
            "srkda": ({"n_components": 500},
                      {"model__alpha": [0.001, 0.01, 0.1, 1.0]}),
            "svm": ({}, {"model__C": [0.1, 1.0, 10.0, 100.0]}),
        }
    return {
        # the paper's network: 60 cells, 20 epochs of the 50,000 voxels (about 7,000
        # steps of 128), Adam, cross-entropy; the learning rate is searched. Departures:
        # the forget-gate bias starts at 1, the gradient norm is clipped at 1, and the
        # AIF rows drop each training row's AIF with probability 0.5
        "lstm": ({"hidden_size": 60, "max_epochs": 20, "batch_size": 128,
                  "forget_bias": 1.0, "clip_grad_norm": 1.0, "plateau_restarts": 1,
                  "aif_dropout": 0.5},
                 {"model__lr": [3e-4, 1e-3, 3e-3, 1e-2]}),
        "linear": ({}, {}),
        "forest": ({"n_estimators": 300},
                   {"model__max_features": ["sqrt", 0.1],
                    "model__min_samples_leaf": [1, 20]}),
        # 45,000 outer-training voxels: the exact kernel would need 16 GB, so the paper
        # protocol uses 3,000 Nystroem landmarks (see SRKDAClassifier)
        "srkda": ({"n_components": 3000},
                  {"model__alpha": [0.001, 0.01, 0.1, 1.0]}),
        "svm": ({}, {"model__C": [0.1, 1.0, 10.0, 100.0]}),
    }


@validate_params(
    {
        "cohort": "no_validation",
        "protocol": [StrOptions(set(PROTOCOLS))],
        "models": [list, tuple, None],
        "random_state": ["random_state"],
        "n_timepoints": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "torch_num_threads": [Interval(Integral, 1, None, closed="left"), None],
        "svm_exact_max_samples": [Interval(Integral, 0, None, closed="left")],
        "lstm_scaler": [StrOptions({"block", "column"})],
    },
    prefer_skip_nested_validation=True,
)
def make_model_zoo(cohort, protocol="standard", models=None, *, random_state=None,
                   n_timepoints=60, device="cpu", torch_num_threads=1,
                   svm_exact_max_samples=_SVM_EXACT_MAX_SAMPLES, lstm_scaler="block"):
    """The comparison models of the paper's Table 1, as pipelines with grids.

    Parameters
    ----------
    cohort : Cohort
        The cohort the feature extractors read voxel references from.
    protocol : {"standard", "quick", "paper"}, default="standard"
        ``"standard"``: the paper's LSTM (60 cells, Adam) trained with early stopping on
        held-out patients, and a search over 4 candidates for every tuned family.
        ``"quick"``: a smoke test (a small network, 2 candidates per family).
        ``"paper"``: the paper's LSTM (60 cells, 20 epochs) and 4 candidates per family
        for the paper's 50,000 voxels. See :data:`N_CANDIDATES`.
    models : list of str or None, default=None
        Rows to build (see :data:`ZOO_ROWS`); ``None`` builds every row.
    random_state : int, RandomState instance or None, default=None
        Seed given to every stochastic estimator (an int makes every row reproducible).
    n_timepoints : int, default=60
        Length of the resampled PWI and AIF series (the paper's 60 points at 1.8 s).
    device : str, default="cpu"
        Torch device of the LSTM rows, e.g. ``"cuda"``.
    torch_num_threads : int or None, default=1
        Torch threads of each LSTM fit. One thread per fit keeps parallel folds from
        oversubscribing the cores and keeps results independent of ``n_jobs``.
    svm_exact_max_samples : int, default=10000
        Training-set size up to which the ``svm`` rows use LIBSVM's exact ``SVC``;
        above it they use a Nystroem kernel map and a linear SVM (``SVC`` cost grows at
        least quadratically with the samples).
    lstm_scaler : {"block", "column"}, default="block"
        Scaling of the LSTM rows' inputs: ``"block"`` (:class:`~sklearn_hemo.neural.
        BlockScaler`: one mean and SD for all PWI columns, one for the AIF, per column for
        DWI, so every curve keeps its shape) or ``"column"`` (every PWI time point and DWI
        value scaled on its own, which rescales every time point on its own; the AIF
        still as one block, since per-column scaling of the AIF is refused: see
        :class:`~sklearn_hemo.neural.BlockScaler`).

    Returns
    -------
    zoo : dict
        ``name -> (pipeline, param_grid)``, in the order of :data:`ZOO_ROWS`.
        Estimators that accept ``groups`` in ``fit`` request it through scikit-learn's
        metadata routing, so a search passes the patients on to them.

    Raises
    ------
    ValueError
        If a requested row is unknown.

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.model_selection import make_model_zoo
    >>> cohort = make_stroke_cohort(n_patients=4, shape=(12, 12, 2), random_state=0)
    >>> zoo = make_model_zoo(cohort, models=["linear", "svm"], random_state=0)
    >>> pipeline, grid = zoo["svm"]
    >>> grid
    {'model__C': [0.1, 1.0, 10.0, 100.0]}
    >>> list(pipeline.named_steps)
    ['features', 'scale', 'model']
    """
    builders = _builders()
    if models is None:
        names = list(ZOO_ROWS)
    else:
        names = list(models)
        unknown = [n for n in names if n not in ZOO_ROWS]
        if unknown:
            raise ValueError(
                f"unknown zoo rows {unknown}; choose from {list(ZOO_ROWS)}."
            )
    settings = _grids(protocol)
    context = {
        "cohort": cohort, "random_state": random_state, "n_timepoints": n_timepoints,
        "device": device, "torch_num_threads": torch_num_threads, "settings": settings,
        "svm_exact_max_samples": svm_exact_max_samples, "protocol": protocol,
        "lstm_scaler": lstm_scaler,
    }
    # set_fit_request only works while routing is on; the requests stay on the objects
    with sklearn.config_context(enable_metadata_routing=True):
        return {name: builders[name](name, **context) for name in names}


def _builders():
    """Row name -> builder function."""
    builders = {name: _lstm for name in ZOO_ROWS if name.startswith("lstm-")}
    builders.update({"linear": _linear, "random-forest": _forest, "sr-kda": _srkda,
                     "svm": _svm, "random-forest-maps": _forest_maps, "svm-maps": _svm_maps,
                     "roi-leakage-proxy": _roi_leakage})
    return builders


def _patches(cohort, inputs, n_timepoints):
    from ..preprocessing import PatchExtractor

    return PatchExtractor(cohort, inputs=inputs, n_timepoints=n_timepoints)


def _pipeline(*steps):
    from sklearn.pipeline import Pipeline

    return Pipeline(list(steps))


def _scaler():
    from sklearn.preprocessing import StandardScaler

    return StandardScaler()


def _patch_scaler(inputs, n_timepoints):
    """Per-column scaling of the PWI and DWI columns, the AIF scaled as one block.

    The AIF columns are one curve per patient: standardised time point by time point,
    the small differences between the patients' curves become a patient fingerprint
    (BlockScaler refuses it), so they share one mean and one SD.
    """
    from ..neural import BlockScaler

    return BlockScaler(inputs, n_timepoints=n_timepoints, per_column=("pwi", "dwi"))


def _lstm(name, *, cohort, random_state, n_timepoints, device, torch_num_threads, settings,
          lstm_scaler="block", **_):
    from ..neural import BlockScaler, LSTMClassifier

    inputs = name.removeprefix("lstm-")
    params, grid = settings["lstm"]
    model = LSTMClassifier(inputs=inputs, n_timepoints=n_timepoints, device=device,
                           torch_num_threads=torch_num_threads, random_state=random_state,
                           **params)
    # used by early stopping, whose held-out part must be whole patients
    model.set_fit_request(groups=True)
    # the source signal is in scanner units (hundreds). One mean and SD per block (all PWI
    # columns, all AIF columns; per column for DWI) keeps every curve's shape; a
    # per-column StandardScaler ("column") would rescale each time point on its own,
    # inflating the quiet pre-bolus points and flattening the peak
    scale = (BlockScaler(inputs, n_timepoints=n_timepoints) if lstm_scaler == "block"
             else _patch_scaler(inputs, n_timepoints))
    return _pipeline(("features", _patches(cohort, inputs, n_timepoints)),
                     ("scale", scale), ("model", model)), dict(grid)


def _linear(name, *, cohort, n_timepoints, settings, **_):
    from ..linear_model import LinearRegressionClassifier

    params, grid = settings["linear"]
    # least squares is scale-equivariant, so no scaler: the score is unchanged by one.
    # Not tuned: the paper's model is unregularised least squares, whose only option
    # (the intercept) is not a hyperparameter; a ridge penalty would make it another
    # model. Unregularised, as in the paper: when a training fold has barely more voxels than the
    # 618 features (the default cohort yields ~800), it nearly interpolates, and a fold's
    # held-out AUC can fall below 0.5 honestly
    return _pipeline(("features", _patches(cohort, "pwi+aif+dwi", n_timepoints)),
                     ("model", LinearRegressionClassifier(**params))), dict(grid)


def _forest(name, *, cohort, random_state, n_timepoints, settings, **_):
    from sklearn.ensemble import RandomForestClassifier

    params, grid = settings["forest"]
    # trees split on thresholds, so scaling would change nothing
    model = RandomForestClassifier(random_state=random_state, n_jobs=1, **params)
    return _pipeline(("features", _patches(cohort, "pwi+aif+dwi", n_timepoints)),
                     ("model", model)), dict(grid)


def _srkda(name, *, cohort, random_state, n_timepoints, settings, **_):
    from ..discriminant import SRKDAClassifier

    params, grid = settings["srkda"]
    model = SRKDAClassifier(random_state=random_state, **params)
    return _pipeline(("features", _patches(cohort, "pwi+aif+dwi", n_timepoints)),
                     ("scale", _patch_scaler("pwi+aif+dwi", n_timepoints)),
                     ("model", model)), dict(grid)


def _svm(name, *, cohort, random_state, n_timepoints, settings, svm_exact_max_samples, **_):
    params, grid = settings["svm"]
    model = _svm_estimator(random_state, svm_exact_max_samples, **params)
    return _pipeline(("features", _patches(cohort, "pwi+aif+dwi", n_timepoints)),
                     ("scale", _patch_scaler("pwi+aif+dwi", n_timepoints)),
                     ("model", model)), dict(grid)


def _svm_estimator(random_state, max_samples, **params):
    from ..svm import ScalableSVC

    # LIBSVM's SVC up to max_samples training voxels, Nystroem + linear SVM above
    return ScalableSVC(max_exact_samples=max_samples, random_state=random_state, **params)


# -- perfusion-map baselines ----------------------------------------------------------
_MAPS = ("cbf", "cbv", "mtt", "tmax", "k2")


def _maps(cohort):
    from ..preprocessing import PerfusionMapExtractor

    return PerfusionMapExtractor(cohort, maps=_MAPS)


def _forest_maps(name, *, cohort, random_state, settings, **_):
    from sklearn.ensemble import RandomForestClassifier

    params, grid = settings["forest"]
    model = RandomForestClassifier(random_state=random_state, n_jobs=1, **params)
    return _pipeline(("features", _maps(cohort)), ("model", model)), dict(grid)


def _svm_maps(name, *, cohort, random_state, settings, svm_exact_max_samples, **_):
    params, grid = settings["svm"]
    model = _svm_estimator(random_state, svm_exact_max_samples, **params)
    return _pipeline(("features", _maps(cohort)), ("scale", _scaler()),
                     ("model", model)), dict(grid)


def _roi_leakage(name, *, cohort, **_):
    from ..perfusion import ROIPermeabilityScorer

    # one score per patient (mean DSC leakage K2 over the Tmax > 6 s lesion), nothing to
    # tune: the paper's ROI-based row, with a DSC leakage proxy in place of the DCE Ktrans
    # the paper quoted from another study. Its AUC may be below 0.5 honestly: it only
    # orders the few HT patients, and the lesion's BSW K2 is biased by bolus delay (see
    # the class); hence not in DEFAULT_ROWS
    return _pipeline(("model", ROIPermeabilityScorer(cohort))), {}
