"""The LSTM classifier of Yu et al. (MICCAI 2019) as a scikit-learn estimator.

:class:`LSTMClassifier` is a plain scikit-learn classifier (parameters in ``__init__``,
validation in ``fit``, fitted attributes ending in ``_``) that builds and trains a skorch
:class:`~skorch.classifier.NeuralNetClassifier` inside ``fit``. Wrapping rather than
subclassing skorch is what lets it pass scikit-learn's estimator checks, which a bare skorch
net does not.
"""

from __future__ import annotations

import contextlib
import copy
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, OneToOneFeatureMixin, TransformerMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
from skorch import NeuralNetClassifier
from skorch.callbacks import (
    Callback,
    EarlyStopping,
    GradientNormClipping,
    LRScheduler,
    ProgressBar,
)
from skorch.helper import predefined_split

from ._lstm_module import (
    INPUT_MODES,
    HemoLSTM,
    TensorDataset,
    batch_loader,
    expected_feature_names,
    expected_width,
)
from .utils._training import on_plateau
from .utils._versions import StratifiedGroupKFold  # folds stratified on sklearn < 1.8
from .utils.fixes import Interval, StrOptions, _fit_context

__all__ = ["BlockScaler", "HemoLSTM", "LSTMClassifier"]


@contextlib.contextmanager
def _torch_threads(n_threads):
    """Run the block with ``n_threads`` intra-op torch threads, then restore the setting."""
    if n_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _PropagateInterrupt(Callback):
    """Let a Ctrl-C during training stop the program instead of ending ``fit`` early.

    skorch's ``partial_fit`` catches ``KeyboardInterrupt`` around its epoch loop (it is
    also how its ``EarlyStopping`` stops), so an interrupted fit would return a
    half-trained net as if finished. This callback counts the completed epochs and, at
    ``on_train_end`` (called outside skorch's ``try``), raises ``KeyboardInterrupt`` again
    when training stopped before ``max_epochs`` without early stopping having asked for it.
    """

    def on_train_begin(self, net, **kwargs):
        self.completed_ = 0

    def on_epoch_end(self, net, **kwargs):
        self.completed_ += 1

    def on_train_end(self, net, **kwargs):
        stopped = any(isinstance(cb, EarlyStopping) and cb.misses_ >= cb.patience
                      for _, cb in net.callbacks_)
        if self.completed_ < len(net.history) or (
                self.completed_ < net.max_epochs and not stopped):
            raise KeyboardInterrupt(
                f"training interrupted after {self.completed_} of {net.max_epochs} epochs")


def _epoch_counts(history, epoch, *, min_epochs, n_classes):
    """Whether ``epoch`` (1-based) of a skorch ``history`` counts: ``min_epochs`` epochs
    are done and its training loss has left the initial plateau (:func:`on_plateau`).
    The one gate of early stopping and of the weight averaging."""
    return epoch >= min_epochs and not on_plateau(history[epoch - 1, "train_loss"], n_classes)


class _GatedEarlyStopping(EarlyStopping):
    """skorch's ``EarlyStopping`` that neither stops nor keeps an epoch on the plateau.

    An LSTM trained on balanced classes first sits on a plateau at the loss of a constant
    guess (ln 2 for two classes) for a while, and the validation loss of its first epoch
    can be the lowest of that stretch: plain early stopping then stops after ``patience``
    epochs and restores weights that never learned anything. Here an epoch counts (as an
    improvement, a miss, or the best epoch whose weights are restored) only once
    ``min_epochs`` epochs are done *and* its training loss has left the plateau of
    ``n_classes`` classes (``utils._training.on_plateau``). A fit that never leaves the
    plateau runs its full length and keeps its last weights (its curve says so).
    """

    def __init__(self, *, min_epochs=0, n_classes=2, **kwargs):
        super().__init__(**kwargs)
        self.min_epochs = min_epochs
        self.n_classes = n_classes

    def on_epoch_end(self, net, **kwargs):
        if not _epoch_counts(net.history, len(net.history), min_epochs=self.min_epochs,
                             n_classes=self.n_classes):
            return  # not yet a candidate: no miss, no best epoch
        super().on_epoch_end(net, **kwargs)


class _EpochWeights(Callback):
    """Keep a copy of the module's weights at the end of every epoch, for the weight
    averaging (``average_epochs``) and :meth:`LSTMClassifier.staged_predict_proba`
    (about 70 kB per epoch at the paper's 60 cells; a pickle of the classifier carries
    them, a bundle does not). Before early stopping among the callbacks: its stop ends
    the epoch's callbacks, and the last epoch must be kept too."""

    def on_train_begin(self, net, **kwargs):
        self.snapshots_ = []

    def on_epoch_end(self, net, **kwargs):
        self.snapshots_.append(_cpu_state(net.module_))


def _as_tensor(X):
    """A float32 tensor sharing ``X``'s memory where it can: ``np.require`` copies only
    read-only (memmapped) or non-contiguous inputs, which torch cannot wrap."""
    return torch.from_numpy(np.require(X, np.float32, ["C_CONTIGUOUS", "WRITEABLE"]))


def _cpu_state(module):
    """A copy of ``module.state_dict()`` on the CPU, detached from training."""
    return {key: value.detach().to("cpu", copy=True)
            for key, value in module.state_dict().items()}


def _average_state(snapshots):
    """The element-wise mean of a list of ``state_dict`` s (floating tensors only)."""
    first = snapshots[0]
    return {key: (torch.stack([s[key] for s in snapshots]).mean(dim=0)
                  if first[key].is_floating_point() else first[key])
            for key in first}


def _init_forget_bias(module, value):
    """Set the LSTM's forget-gate bias (``b_ih + b_hh`` of the gates ``f``) to ``value``."""
    with torch.no_grad():
        for name, param in module.lstm.named_parameters():
            if name.startswith("bias_"):
                hidden = param.shape[0] // 4  # gate order i, f, g, o
                param[hidden:2 * hidden] = value if name.startswith("bias_ih") else 0.0


def _init_orthogonal_recurrent(module):
    """Draw each gate's recurrent weight matrix (``hidden x hidden``) as a random
    orthogonal matrix, in every layer and direction."""
    with torch.no_grad():
        for name, param in module.lstm.named_parameters():
            if name.startswith("weight_hh"):
                hidden = param.shape[1]
                for gate in range(4):  # i, f, g, o: one square block each
                    torch.nn.init.orthogonal_(param[gate * hidden:(gate + 1) * hidden])


class _OrthogonalRecurrent(Callback):
    """Re-draw the recurrent weights orthogonal at the start of training
    (``recurrent_init="orthogonal"``)."""

    def on_train_begin(self, net, **kwargs):
        _init_orthogonal_recurrent(net.module_)


class _ForgetBias(Callback):
    """Initialise the forget-gate bias of the module at the start of training."""

    def __init__(self, value):
        self.value = value

    def on_train_begin(self, net, **kwargs):
        _init_forget_bias(net.module_, self.value)


def _is_cuda(device):
    return str(device).startswith("cuda")


class LSTMClassifier(ClassifierMixin, BaseEstimator):
    """LSTM classifier over per-voxel perfusion time series (Yu et al., MICCAI 2019).

    An LSTM reads the 60-point source PWI signal of a voxel's 3x3 neighbourhood (9 values
    per step, plus the AIF value when used); its final hidden state, concatenated with the
    18 DWI b0/b1000 patch values when used, goes through a dense network to one logit per
    class. Trained with Adam on the cross-entropy; probabilities are the softmax.

    Training runs in skorch (fitted net in ``net_``). There is no internal validation
    split unless ``early_stopping=True``, and then the held-out part is whole patients.

    Parameters
    ----------
    inputs : {"pwi", "pwi+aif", "pwi+dwi", "pwi+aif+dwi"} or None, default=None
        How to read the columns. The four modes follow the
        :class:`~sklearn_hemo.preprocessing.PatchExtractor` layout: ``pwi_t{tt}_p{p}``
        time-major (9 per step), then ``aif_t{tt}``, then ``dwi_b0_p{p}``,
        ``dwi_b1000_p{p}``; widths for 60 time points are 540, 600, 558 and 618. ``None``
        reads each row as one univariate sequence, so any 2D array works.
    n_timepoints : int, default=60
        Time points per series in the four modes (ignored when ``inputs=None``).
    hidden_size : int, default=60
        LSTM hidden units; the paper uses 60.
    num_layers : int, default=1
        Stacked LSTM layers.
    dropout : float in [0, 1), default=0.0
        Dropout between stacked LSTM layers and before each dense layer.
    bidirectional : bool, default=False
        Bidirectional LSTM (the dense head then reads ``2 * hidden_size`` LSTM outputs).
    dense_sizes : tuple of int, default=()
        Hidden ReLU layers of the dense head. ``()`` maps the 60 (or 78 with DWI) values
        straight to the logits.
    aif_dropout : float in [0, 1), default=0.0
        With an AIF input: during training only, each row's AIF is replaced by zeros
        (the block mean after :class:`BlockScaler`) with this probability. The AIF is one
        curve per patient, so a network free to lean on it can learn the training
        patients (who bleeds) instead of the voxels; dropping it makes the network
        predict from the tissue curves with and without it. Prediction always reads it.
    time_shift : int, default=0
        During training only, shift each row's series (PWI and AIF together, so their
        relative timing is kept) by a random whole number of time points in
        ``[-time_shift, time_shift]``, repeating the edge value into the gap. The bolus
        reaches the brain at a different time in every patient (injection, cardiac
        output); the shift makes the network rank voxels by the shape of their curves
        and their timing relative to the AIF rather than by the patient's arrival time.
        Prediction reads the series as they are.
    lr : float, default=1e-3
        Adam learning rate.
    weight_decay : float, default=0.0
        Adam's L2 penalty on all weights (``torch.optim.Adam(weight_decay=...)``).
    batch_size : int, default=128
        Mini-batch size for training and prediction.
    max_epochs : int, default=20
        Training epochs (the paper's 20), or the upper bound with early stopping.
    early_stopping : bool or "monitor", default=False
        Hold out ``validation_fraction`` of the *patients* given as ``groups`` to ``fit``
        and stop when their loss has not improved for ``n_iter_no_change`` epochs; the
        best epoch's weights are kept. Requires ``groups``: a random voxel split would put
        neighbouring voxels of one patient on both sides. The held-out patients are one
        fold of a ``StratifiedGroupKFold``, so both classes are on both sides where the
        patients allow. ``"monitor"`` holds the same patients out and records their loss
        (``valid_loss_curve_``) but neither stops nor restores: training runs its whole
        length and keeps its last weights (or their average, ``average_epochs``).
    validation_fraction : float in (0, 1), default=0.1
        Share of patients held out for early stopping (about ``1 / round(1 /
        validation_fraction)`` of them).
    n_iter_no_change : int, default=5
        Early-stopping patience in epochs.
    max_steps : int or None, default=None
        Training length in optimiser steps rather than epochs: the net trains
        ``ceil(max_steps / batches_per_epoch)`` epochs, at most ``max_epochs``. A fixed
        number of epochs is a very different amount of training at 4,000 and at 50,000
        voxels (the paper trained 20 epochs of 50,000 voxels, about 8,000 steps of 128);
        a step budget is not. ``None`` trains ``max_epochs`` epochs.
    min_steps : int, default=0
        With ``early_stopping``: no epoch before this many optimiser steps counts for
        early stopping (it can neither stop training nor be restored as the best epoch),
        nor does any epoch whose training loss is still on the initial plateau (within
        0.05 of the loss of a constant guess, ln 2 for two classes). Without it, early
        stopping on a few held-out patients stops during the plateau and restores weights
        that never learned.
    lr_schedule : {"constant", "cosine", "onecycle"}, default="constant"
        Learning-rate schedule over the planned steps, per optimiser step (skorch
        ``LRScheduler``): ``"cosine"`` decays ``lr`` to 0 (``CosineAnnealingLR``),
        ``"onecycle"`` warms up to ``lr`` over the first 30 % and anneals
        (``OneCycleLR``).
    clip_grad_norm : float or None, default=None
        Clip the gradient's L2 norm to this value before every step (skorch
        ``GradientNormClipping``); ``None`` does not clip.
    plateau_restarts : int, default=0
        Train again from another initialisation (up to this many times) when the last
        epoch's training loss is on the initial plateau: not more than 0.05 below the
        loss of a constant guess (ln 2 for two classes), whether the fit never left the
        plateau, fell back to it, or diverged above it. Such weights predict nothing. The
        last attempt is kept whatever it did; ``n_restarts_`` says how many were needed.
    forget_bias : float or None, default=None
        Initial bias of the LSTM's forget gates (the sum of the input and hidden biases);
        1.0 is the usual choice (Jozefowicz et al., ICML 2015), which keeps the cell's
        memory open at the start of training. ``None`` keeps torch's random
        initialisation.
    recurrent_init : {"uniform", "orthogonal"}, default="uniform"
        Initial recurrent (hidden-to-hidden) weights of the LSTM. ``"uniform"`` keeps
        torch's draw, uniform in ``+-1 / sqrt(hidden_size)`` like every other weight;
        ``"orthogonal"`` draws each gate's ``hidden_size x hidden_size`` block as a random
        orthogonal matrix (Saxe et al., ICLR 2014), so that a step of the recurrence
        neither shrinks nor stretches the state at the start of training. The input
        weights and biases keep torch's draw (``forget_bias`` sets the forget gates').
        On the hardest folds of the simulated benchmark, at ``lr=0.001``, it cut the
        spread of the test AUC over training seeds from 1.6-4.3 points to 0.6-1.3, and no
        fit fell back to the ln 2 plateau mid-training (docs/comparison.rst, "Eighth
        pass"). The zoo's standard recipe uses it, at learning rates 0.0003-0.002
        ("Ninth pass"); above about 0.002 the fits fall back to the plateau again.
    average_epochs : int, default=0
        Keep the mean of the weights at the end of every epoch within this many epochs
        of the kept one, before and after it, instead of the kept epoch's weights alone
        (weight averaging along the trajectory, as in stochastic weight averaging,
        Izmailov et al., UAI 2018). With ``early_stopping`` the kept epoch is the best
        one and training ran ``n_iter_no_change`` epochs past it, so those epochs are
        averaged too at no cost; without it, the last epoch and the ones before it. Only
        epochs that early stopping counts are averaged (none before ``min_steps`` or on
        the initial plateau). The mean of nearby points of one trajectory depends less
        on the initialisation, the shuffling and the exact stopping epoch than any one
        of them. ``0`` keeps the kept epoch's weights; ``averaged_epochs_`` lists the
        epochs averaged.
    device : str, default="cpu"
        Torch device for training and prediction, e.g. ``"cuda"``. A model trained on GPU
        predicts on CPU after ``set_params(device="cpu")`` or when unpickled on a machine
        without CUDA.
    torch_num_threads : int or None, default=None
        Torch intra-op threads used during ``fit`` and ``predict`` (restored afterwards).
        Set it to 1 when running many fits in parallel (``GridSearchCV(n_jobs=...)``) so
        the workers do not oversubscribe the cores. ``None`` keeps torch's setting.
    verbose : int, default=0
        0 is silent; 1 prints skorch's per-epoch table; 2 adds a per-batch progress bar.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, shuffling, dropout and the early-stopping patient
        split. An int gives identical predictions across fits on CPU.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    n_features_in_ : int
        Number of feature columns seen in ``fit``.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` had them.
    net_ : skorch.NeuralNetClassifier
        The trained skorch net; ``net_.module_`` is the :class:`torch.nn.Module` and
        ``net_.history`` the per-epoch record.
    n_iter_ : int
        Epochs actually trained.
    n_steps_ : int
        Optimiser (Adam) steps taken: the training mini-batches of every epoch trained,
        including the epochs after the best one when early stopping restores it, and
        those of the attempts that ``plateau_restarts`` discarded.
    n_restarts_ : int
        Attempts discarded because their last epoch's training loss was on the initial
        plateau (``plateau_restarts``).
    train_loss_curve_ : list of float
        Training loss (mean cross-entropy over the epoch's mini-batches) of every epoch.
    valid_loss_curve_ : list of float or None
        Loss on the held-out patients of every epoch with ``early_stopping`` (``True`` or
        ``"monitor"``), else None.
    best_epoch_ : int
        The kept epoch (1-based): the restored best epoch with ``early_stopping=True``,
        else the last one.
    averaged_epochs_ : list of int
        The epochs whose weights the net holds: their mean with ``average_epochs``, else
        ``[best_epoch_]``.

    See Also
    --------
    sklearn_hemo.preprocessing.PatchExtractor : Turns voxel references into these features.

    Notes
    -----
    Class weights and sample weights are not supported: the paper balances HT and non-HT
    voxels when sampling the training set (see :mod:`sklearn_hemo.sampling`).

    Only CPU training is bit-for-bit reproducible; CUDA's LSTM kernels are not
    deterministic.

    References
    ----------
    Y. Yu, B. Xie, M. Thompson et al., "LSTM Network for Prediction of Hemorrhagic
    Transformation in Acute Stroke", MICCAI 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.neural import LSTMClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(200, 10)).astype(np.float32)
    >>> y = (X[:, -3:].mean(axis=1) > 0).astype(int)
    >>> clf = LSTMClassifier(hidden_size=8, max_epochs=3, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:3]).shape
    (3, 2)

    The paper's full model reads 618 PatchExtractor columns per voxel:

    >>> clf = LSTMClassifier(inputs="pwi+aif+dwi", max_epochs=1, random_state=0)
    >>> _ = clf.fit(np.zeros((4, 618), dtype=np.float32), [0, 1, 0, 1])
    >>> clf.net_.module_.dense_in_features
    78
    """

    # compare_models reads n_steps_ of every fit into run.json
    _reports_n_steps = True

    _parameter_constraints: dict = {
        "inputs": [StrOptions(set(INPUT_MODES)), None],
        "n_timepoints": [Interval(Integral, 1, None, closed="left")],
        "hidden_size": [Interval(Integral, 1, None, closed="left")],
        "num_layers": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "bidirectional": ["boolean"],
        "dense_sizes": [tuple, list],
        "aif_dropout": [Interval(Real, 0, 1, closed="left")],
        "time_shift": [Interval(Integral, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean", StrOptions({"monitor"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "max_steps": [Interval(Integral, 1, None, closed="left"), None],
        "min_steps": [Interval(Integral, 0, None, closed="left")],
        "lr_schedule": [StrOptions({"constant", "cosine", "onecycle"})],
        "clip_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
        "forget_bias": [Real, None],
        "recurrent_init": [StrOptions({"uniform", "orthogonal"})],
        "plateau_restarts": [Interval(Integral, 0, None, closed="left")],
        "average_epochs": [Interval(Integral, 0, None, closed="left")],
        "device": [str],
        "torch_num_threads": [Interval(Integral, 1, None, closed="left"), None],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
    }

    def __init__(self, inputs=None, *, n_timepoints=60, hidden_size=60, num_layers=1,
                 dropout=0.0, bidirectional=False, dense_sizes=(), aif_dropout=0.0, time_shift=0,
                 lr=1e-3, weight_decay=0.0, batch_size=128,
                 max_epochs=20, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=5, max_steps=None, min_steps=0, lr_schedule="constant",
                 clip_grad_norm=None, forget_bias=None, recurrent_init="uniform",
                 plateau_restarts=0, average_epochs=0, device="cpu", torch_num_threads=None,
                 verbose=0, random_state=None):
        self.inputs = inputs
        self.n_timepoints = n_timepoints
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.bidirectional = bidirectional
        self.dense_sizes = dense_sizes
        self.aif_dropout = aif_dropout
        self.time_shift = time_shift
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.max_steps = max_steps
        self.min_steps = min_steps
        self.lr_schedule = lr_schedule
        self.clip_grad_norm = clip_grad_norm
        self.forget_bias = forget_bias
        self.recurrent_init = recurrent_init
        self.plateau_restarts = plateau_restarts
        self.average_epochs = average_epochs
        self.device = device
        self.torch_num_threads = torch_num_threads
        self.verbose = verbose
        self.random_state = random_state

    def __setstate__(self, state):
        # a pickle or bundle saved before these options existed trained without them
        super().__setstate__({"max_steps": None, "min_steps": 0, "lr_schedule": "constant",
                              "clip_grad_norm": None, "forget_bias": None,
                              "recurrent_init": "uniform",
                              "plateau_restarts": 0, "aif_dropout": 0.0, "weight_decay": 0.0,
                              "average_epochs": 0, "time_shift": 0, **state})

    # ------------------------------------------------------------------ layout
    def _layout(self, n_features):
        """Module shape arguments for ``n_features`` columns, or a ValueError naming the fix."""
        if self.inputs is None:
            return {"n_timepoints": n_features, "n_step_features": 1}
        width = expected_width(self.inputs, self.n_timepoints)
        if n_features != width:
            widths = {m: expected_width(m, self.n_timepoints) for m in INPUT_MODES}
            fits = [m for m, w in widths.items() if w == n_features]
            hint = (f" {n_features} columns fit inputs={fits[0]!r}." if fits else
                    " Check the PatchExtractor's inputs and n_timepoints, or use "
                    "inputs=None to read each row as one univariate sequence.")
            raise ValueError(
                f"LSTMClassifier(inputs={self.inputs!r}, n_timepoints={self.n_timepoints}) "
                f"expects {width} feature columns in the PatchExtractor layout, got "
                f"{n_features}. Widths for n_timepoints={self.n_timepoints}: "
                + ", ".join(f"{m}={w}" for m, w in widths.items()) + "." + hint)
        names = getattr(self, "feature_names_in_", None)
        if names is not None:
            expected = expected_feature_names(self.inputs, self.n_timepoints)
            wrong = [(i, got, exp) for i, (got, exp) in enumerate(zip(names, expected, strict=True))
                     if got != exp]
            if wrong:
                i, got, exp = wrong[0]
                raise ValueError(
                    f"LSTMClassifier(inputs={self.inputs!r}) reads columns by position in "
                    f"the PatchExtractor layout, but column {i} is named {got!r} where "
                    f"{exp!r} belongs; reorder the columns to the PatchExtractor layout.")
        n_patch, aif, n_static = INPUT_MODES[self.inputs]
        return {"n_timepoints": self.n_timepoints, "n_step_features": n_patch,
                "aif": aif, "n_static": n_static}

    def _check_device(self):
        if _is_cuda(self.device) and not torch.cuda.is_available():
            raise ValueError(
                f"LSTMClassifier(device={self.device!r}) but torch finds no CUDA device; "
                "use device='cpu'.")
        return self.device

    # --------------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, groups=None):
        """Train the network on feature rows ``X`` and labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature rows in the layout ``inputs`` names.
        y : array-like of shape (n_samples,)
            Labels; any two or more distinct values (strings too).
        groups : array-like of shape (n_samples,), default=None
            Patient of each row. Used only with ``early_stopping`` (``True`` or
            ``"monitor"``), to hold out whole patients. In a search, route it with
            ``set_fit_request(groups=True)`` (metadata routing) or
            ``Pipeline.fit(..., lstm__groups=groups)``.

        Returns
        -------
        self : LSTMClassifier
            The fitted classifier.
        """
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        if len(encoder.classes_) < 2:
            raise ValueError(
                "LSTMClassifier needs samples of at least 2 classes in the data, but the "
                f"data contains only one class: {encoder.classes_[0]!r}.")
        dense_sizes = tuple(self.dense_sizes)
        if not all(isinstance(s, Integral) and s >= 1 for s in dense_sizes):
            raise ValueError(
                f"dense_sizes must be a tuple of positive ints, got {self.dense_sizes!r}.")
        layout = self._layout(X.shape[1])
        device = self._check_device()

        # Whole-array tensors so that every batch is one indexing call (see TensorDataset)
        X_t = _as_tensor(X)
        y_t = torch.from_numpy(encoder.transform(y).astype(np.int64))
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        # first, so that it counts an epoch before EarlyStopping may stop after it
        train_split, callbacks = None, [("propagate_interrupt", _PropagateInterrupt())]
        if self.early_stopping:  # True or "monitor": held-out patients
            train_idx, valid_idx = self._patient_split(X, y, groups, seed)
            train_split = predefined_split(TensorDataset(X_t[valid_idx], y_t[valid_idx]))
            X_t, y_t = X_t[train_idx], y_t[train_idx]
        # the training length in epochs, from the step budget when one is given
        batches = -(-len(X_t) // self.batch_size)
        max_epochs = self.max_epochs
        if self.max_steps is not None:
            max_epochs = min(self.max_epochs, max(1, -(-self.max_steps // batches)))
        callbacks += self._training_callbacks(batches, max_epochs, len(encoder.classes_))

        self.net_ = NeuralNetClassifier(
            HemoLSTM,
            module__n_classes=len(encoder.classes_),
            module__hidden_size=self.hidden_size,
            module__num_layers=self.num_layers,
            module__dropout=self.dropout,
            module__bidirectional=self.bidirectional,
            module__dense_sizes=dense_sizes,
            module__aif_dropout=self.aif_dropout,
            module__time_shift=self.time_shift,
            **{f"module__{key}": value for key, value in layout.items()},
            criterion=torch.nn.CrossEntropyLoss,
            optimizer=torch.optim.Adam,
            optimizer__weight_decay=self.weight_decay,
            lr=self.lr,
            max_epochs=max_epochs,
            batch_size=self.batch_size,
            dataset=TensorDataset,
            iterator_train=batch_loader,
            iterator_train__shuffle=True,
            iterator_valid=batch_loader,
            train_split=train_split,
            callbacks=callbacks,
            classes=list(range(len(encoder.classes_))),
            device=device,
            verbose=self.verbose,
        )
        # Seed a forked RNG so that fitting does not disturb the caller's torch RNG.
        rng_devices = [torch.device(device).index or 0] if _is_cuda(device) else []
        n_steps = 0
        for attempt in range(self.plateau_restarts + 1):
            # skorch's fit re-initialises the module (warm_start=False): another draw
            with _torch_threads(self.torch_num_threads), \
                    torch.random.fork_rng(devices=rng_devices):
                torch.manual_seed(seed + attempt)
                self.net_.fit(X_t, y_t)
            n_steps += sum(1 for epoch in self.net_.history for batch in epoch["batches"]
                           if "train_loss" in batch)
            # a fit whose last epoch is on the plateau (it never left it, or fell back to
            # it, or above: diverged) predicts nothing; compare warns on the same loss
            if not on_plateau(self.net_.history[-1, "train_loss"], len(encoder.classes_)):
                break
        self.n_restarts_ = attempt
        self.classes_ = encoder.classes_
        self.n_iter_ = len(self.net_.history)
        self.n_steps_ = int(n_steps)
        history = self.net_.history
        self.train_loss_curve_ = [float(v) for v in history[:, "train_loss"]]
        self.valid_loss_curve_ = ([float(v) for v in history[:, "valid_loss"]]
                                  if self.early_stopping else None)
        self.best_epoch_ = len(history)
        if self._stops_early():
            stopper = dict(self.net_.callbacks_)["early_stopping"]
            if stopper.best_model_weights_ is not None:
                self.best_epoch_ = int(stopper.best_epoch_)
        self.averaged_epochs_ = [self.best_epoch_]
        if self.average_epochs > 0:
            self._average_weights(self._gate(batches, len(encoder.classes_)))
        return self

    def _training_callbacks(self, batches, max_epochs, n_classes):
        """The skorch callbacks of the options, in order, for ``batches`` per epoch."""
        callbacks = [("epoch_weights", _EpochWeights())]
        if self._stops_early():
            callbacks.append(("early_stopping", _GatedEarlyStopping(
                monitor="valid_loss", patience=self.n_iter_no_change, load_best=True,
                **self._gate(batches, n_classes))))
        if self.recurrent_init == "orthogonal":  # before the forget bias: weights, then biases
            callbacks.append(("recurrent_init", _OrthogonalRecurrent()))
        if self.forget_bias is not None:
            callbacks.append(("forget_bias", _ForgetBias(float(self.forget_bias))))
        if self.clip_grad_norm is not None:
            callbacks.append(("gradient_clipping", GradientNormClipping(
                gradient_clip_value=float(self.clip_grad_norm))))
        if self.lr_schedule == "cosine":
            callbacks.append(("lr_scheduler", LRScheduler(
                policy=torch.optim.lr_scheduler.CosineAnnealingLR,
                T_max=max_epochs * batches, step_every="batch")))
        elif self.lr_schedule == "onecycle":
            callbacks.append(("lr_scheduler", LRScheduler(
                policy=torch.optim.lr_scheduler.OneCycleLR, max_lr=self.lr,
                total_steps=max_epochs * batches, pct_start=0.3, step_every="batch")))
        if self.verbose >= 2:
            callbacks.append(("progress_bar", ProgressBar()))
        return callbacks

    def _stops_early(self):
        """Whether early stopping stops and restores (``True``, a numpy bool too), as
        opposed to ``"monitor"``, which only holds the patients out, or ``False``."""
        return not isinstance(self.early_stopping, str) and bool(self.early_stopping)

    def _gate(self, batches, n_classes):
        """The epochs early stopping and the weight averaging count (:func:`_epoch_counts`):
        none before ``min_steps`` (with held-out patients) nor on the plateau."""
        return {"min_epochs": -(-self.min_steps // batches) if self.early_stopping else 0,
                "n_classes": n_classes}

    def _average_weights(self, gate):
        """Load the mean weights of the counted epochs within ``average_epochs`` of the kept one."""
        snapshots = dict(self.net_.callbacks_)["epoch_weights"].snapshots_
        history = self.net_.history
        window = range(max(1, self.best_epoch_ - self.average_epochs),
                       min(len(history), self.best_epoch_ + self.average_epochs) + 1)
        chosen = [epoch for epoch in window if _epoch_counts(history, epoch, **gate)]
        if len(chosen) > 1:
            self.net_.module_.load_state_dict(
                _average_state([snapshots[epoch - 1] for epoch in chosen]))
            self.averaged_epochs_ = chosen

    def _patient_split(self, X, y, groups, seed):
        """Train/validation row indices holding out whole patients.

        The held-out patients are one fold of a shuffled ``StratifiedGroupKFold`` with
        about ``1 / validation_fraction`` folds: whole patients, and (as far as the
        patients allow) both classes on both sides, so the validation loss is not
        measured on non-HT voxels alone.
        """
        if groups is None:
            raise ValueError(
                f"LSTMClassifier(early_stopping={self.early_stopping!r}) needs the patient of "
                "every row: call "
                "fit(X, y, groups=patient_ids) (in a search, route it with "
                "set_fit_request(groups=True)), or set early_stopping=False. A random "
                "voxel split would leak neighbouring voxels into the validation set.")
        groups = column_or_1d(groups)
        if len(groups) != len(y):
            raise ValueError(
                f"groups has {len(groups)} entries but X has {len(y)} rows; pass one "
                "patient id per row.")
        n_groups = len(np.unique(groups))
        if n_groups < 2:
            raise ValueError(
                f"LSTMClassifier(early_stopping={self.early_stopping!r}) needs at least 2 "
                "patients in groups to hold one out for validation; got 1. Set "
                "early_stopping=False.")
        n_splits = min(n_groups, max(2, int(round(1.0 / self.validation_fraction))))
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return next(splitter.split(X, y, groups))

    # ----------------------------------------------------------------- predict
    def predict_proba(self, X):
        """Class probabilities (softmax of the logits).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature rows in the layout seen in ``fit``.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities in the order of ``classes_``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        X_t = _as_tensor(X)
        self._move_net()
        with _torch_threads(self.torch_num_threads):
            proba = self.net_.predict_proba(X_t).astype(np.float64)
        # skorch's softmax runs in float32, whose rows miss 1 by up to ~1e-7: more than
        # scikit-learn's log_loss accepts from float64 probabilities without a warning
        return proba / proba.sum(axis=1, keepdims=True)

    def staged_predict_proba(self, X):
        """Class probabilities of the weights at the end of each epoch, in order.

        Yields one array per epoch trained (``n_iter_``, of the attempt that was kept when
        ``plateau_restarts`` trained again): the raw weights of that epoch, not the
        restored best epoch or the weight average the model predicts with. Meant for
        learning curves on rows the fit never saw (``compare`` records the loss on the
        outer test fold this way, after training: it chooses nothing), as
        ``staged_predict_proba`` of scikit-learn's gradient boosting.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature rows in the layout seen in ``fit``.

        Yields
        ------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities in the order of ``classes_`` after epoch 1, 2, ...

        Raises
        ------
        ValueError
            When the per-epoch weights are not there: a model loaded with
            :func:`~sklearn_hemo.persistence.load_model` (a bundle keeps the final
            weights only) or pickled by a version that did not keep them. Fit it again.
        """
        check_is_fitted(self)
        recorder = dict(getattr(self.net_, "callbacks_", [])).get("epoch_weights")
        snapshots = getattr(recorder, "snapshots_", None)
        if not snapshots:
            raise ValueError(
                "this LSTMClassifier holds no per-epoch weights: a model loaded from a "
                "bundle keeps only its final weights, and one pickled by an earlier version "
                "of sklearn-hemo none. "
                "Fit it again to get staged predictions.")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        X_t = _as_tensor(X)
        self._move_net()
        device = self.net_.device
        module = copy.deepcopy(self.net_.module_).eval()  # the fitted module is untouched
        for state in snapshots:
            module.load_state_dict(state)
            with _torch_threads(self.torch_num_threads), torch.no_grad():
                logits = torch.cat([module(X_t[start:start + self.batch_size].to(device))
                                    for start in range(0, len(X_t), self.batch_size)])
                # in float64: scikit-learn's log_loss checks that the rows sum to 1
                yield torch.softmax(logits.double(), dim=1).cpu().numpy()

    def _move_net(self):
        """Put the fitted net on ``device`` (CPU when CUDA is asked for but absent)."""
        device = self.device
        if _is_cuda(device) and not torch.cuda.is_available():
            device = "cpu"
        if str(self.net_.device) != str(device):
            self.net_.module_.to(device)
            self.net_.criterion_.to(device)
            self.net_.device = device

    def predict(self, X):
        """Most probable class of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature rows in the layout seen in ``fit``.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.input_tags.allow_nan = False
        return tags


class BlockScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Standardise the LSTM's series as whole blocks, so that every curve keeps its shape.

    A per-column :class:`~sklearn.preprocessing.StandardScaler` rescales every time point
    of a series on its own: the pre-bolus points, which vary little between voxels, are
    divided by a small SD (their noise is inflated), and the bolus peak, which varies
    much, by a large one (the peak is flattened). This scaler instead uses one mean and
    one SD for all PWI columns (every time point of the 3x3 patch), one for all AIF
    columns, and a mean and SD per column for the DWI patch values, which are not series.
    The layout is the :class:`~sklearn_hemo.preprocessing.PatchExtractor`'s, read by
    position as :class:`LSTMClassifier` reads it.

    Parameters
    ----------
    inputs : {"pwi", "pwi+aif", "pwi+dwi", "pwi+aif+dwi"} or None, default=None
        Layout of the columns. ``None`` treats every column as one series (one block),
        as :class:`LSTMClassifier` with ``inputs=None`` reads it.
    n_timepoints : int, default=60
        Time points per series (ignored when ``inputs=None``).
    per_column : tuple of {"pwi", "dwi"}, default=("dwi",)
        Blocks scaled column by column (a mean and SD per column, as a
        ``StandardScaler``) rather than as one block. The DWI values are not series, so
        they are scaled per column by default; ``("pwi", "dwi")`` scales the PWI time
        points one by one as well (the classic models' scaling). The AIF block cannot be
        scaled per column: it is one curve per patient, the same in every voxel of that
        patient, so its columns vary only between patients, and standardising each time
        point turns small differences between the patients' curves into large ones, a
        patient fingerprint; ``"aif"`` raises a ValueError.

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
        Mean subtracted from every column (equal within a block).
    scale_ : ndarray of shape (n_features,)
        SD every column is divided by (equal within a block; 1 for a constant block).
    n_features_in_ : int
        Number of columns seen in ``fit``.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` had them.

    See Also
    --------
    sklearn.preprocessing.StandardScaler : One mean and SD per column.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.neural import BlockScaler
    >>> X = np.array([[0.0, 10.0, 1.0], [2.0, 30.0, 3.0]])
    >>> scaler = BlockScaler().fit(X)  # one block: mean 7.67, one SD
    >>> Xt = scaler.transform(X)
    >>> bool(np.allclose(Xt.mean(), 0) and np.isclose(Xt.std(), 1))
    True
    >>> bool(np.allclose(np.diff(Xt[1] - Xt[0]), np.diff(X[1] - X[0]) / scaler.scale_[0]))
    True
    """

    _parameter_constraints: dict = {
        "inputs": [StrOptions(set(INPUT_MODES)), None],
        "n_timepoints": [Interval(Integral, 1, None, closed="left")],
        "per_column": [tuple, list],
    }

    def __init__(self, inputs=None, *, n_timepoints=60, per_column=("dwi",)):
        self.inputs = inputs
        self.n_timepoints = n_timepoints
        self.per_column = per_column

    def __setstate__(self, state):
        # a pickle or bundle saved before per_column existed scaled DWI per column
        super().__setstate__({"per_column": ("dwi",), **state})

    def _per_column(self):
        """The validated ``per_column`` as a set, or a ValueError naming the fix."""
        chosen = set(self.per_column)
        if "aif" in chosen:
            raise ValueError(
                "BlockScaler(per_column=...) cannot scale the AIF block column by column: "
                "the AIF is one curve per patient, the same in all of that patient's voxels, "
                "so every AIF column varies only between patients, and standardising each "
                "time point magnifies the differences between the patients' curves into a "
                "patient fingerprint that a model learns in place of the voxels. Scale the "
                "AIF as one block (leave 'aif' out of per_column) after normalising it per "
                "patient (PatchExtractor(aif_normalization='area'), the default).")
        unknown = chosen - {"pwi", "dwi"}
        if unknown:
            raise ValueError(
                f"per_column takes a tuple of 'pwi' and 'dwi', got {tuple(self.per_column)!r}.")
        return chosen

    def _blocks(self, n_features):
        """Column index arrays of the blocks that share one mean and one SD."""
        per_column = self._per_column()
        if self.inputs is None:
            return [np.arange(n_features)]
        width = expected_width(self.inputs, self.n_timepoints)
        if n_features != width:
            raise ValueError(
                f"BlockScaler(inputs={self.inputs!r}, n_timepoints={self.n_timepoints}) "
                f"expects {width} columns in the PatchExtractor layout, got {n_features}; "
                "match inputs and n_timepoints to the PatchExtractor, or use inputs=None.")
        n_patch, aif, n_static = INPUT_MODES[self.inputs]
        start = n_patch * self.n_timepoints
        blocks = ([np.array([c]) for c in range(start)] if "pwi" in per_column
                  else [np.arange(start)])
        if aif:
            blocks.append(np.arange(start, start + self.n_timepoints))
            start += self.n_timepoints
        blocks += ([np.array([c]) for c in range(start, start + n_static)]
                   if "dwi" in per_column else [np.arange(start, start + n_static)]
                   if n_static else [])
        return blocks

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn one mean and SD per block.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature rows in the layout ``inputs`` names.
        y : None
            Ignored.

        Returns
        -------
        self : BlockScaler
            The fitted scaler.
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        mean = np.empty(X.shape[1])
        scale = np.empty(X.shape[1])
        for block in self._blocks(X.shape[1]):
            values = X[:, block].astype(np.float64)
            mean[block] = values.mean()
            sd = values.std()
            scale[block] = sd if sd > 10 * np.finfo(np.float64).eps * max(
                1.0, abs(mean[block][0])) else 1.0
        self.mean_, self.scale_ = mean, scale
        return self

    def transform(self, X):
        """Subtract each block's mean and divide by its SD.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature rows in the layout seen in ``fit``.

        Returns
        -------
        X_scaled : ndarray of shape (n_samples, n_features)
            Same dtype as ``X`` (float32 stays float32).
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False, copy=True)
        X -= self.mean_.astype(X.dtype)
        X /= self.scale_.astype(X.dtype)
        return X

    def inverse_transform(self, X):
        """Undo :meth:`transform`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Scaled rows.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
            Rows on the original scale.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False, copy=True)
        return X * self.scale_.astype(X.dtype) + self.mean_.astype(X.dtype)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
