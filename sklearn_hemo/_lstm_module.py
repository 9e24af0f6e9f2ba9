"""The torch pieces behind :class:`sklearn_hemo.neural.LSTMClassifier`.

Kept apart from the estimator so that the benchmark (and anyone who wants a plain PyTorch
loop) trains exactly the same module the classifier trains.

The module reads the flat 2D feature rows of :class:`~sklearn_hemo.preprocessing.
PatchExtractor` directly: reshaping inside ``forward`` keeps a single float32 tensor per batch
(no dict of tensors to collate), which is what makes the skorch loop as fast as a plain one.

The public home of :class:`HemoLSTM` (and of the dataset and loader the classifier's
skorch net names) is :mod:`sklearn_hemo.neural`: their ``__module__`` says so, so a saved
bundle records ``sklearn_hemo.neural.HemoLSTM``. This module stays importable under its old
name because bundles written before 0.2 name ``sklearn_hemo._lstm_module.HemoLSTM``.
"""

from __future__ import annotations

import torch
from skorch.dataset import Dataset
from torch import nn
from torch.utils.data import DataLoader, Sampler

__all__ = ["HemoLSTM", "INPUT_MODES", "expected_width", "expected_feature_names"]

#: ``inputs`` mode -> (PWI values per time step, AIF present, number of static DWI values).
INPUT_MODES = {
    "pwi": (9, False, 0),
    "pwi+aif": (9, True, 0),
    "pwi+dwi": (9, False, 18),
    "pwi+aif+dwi": (9, True, 18),
}


def expected_width(inputs, n_timepoints):
    """Number of feature columns the PatchExtractor layout gives for one mode.

    Parameters
    ----------
    inputs : {"pwi", "pwi+aif", "pwi+dwi", "pwi+aif+dwi"}
        Input mode.
    n_timepoints : int
        Length of the resampled time series.

    Returns
    -------
    width : int
        ``9 T`` PWI columns, plus ``T`` AIF columns, plus 18 DWI columns, as the mode asks.

    Examples
    --------
    >>> from sklearn_hemo._lstm_module import expected_width
    >>> [expected_width(m, 60) for m in ("pwi", "pwi+aif", "pwi+dwi", "pwi+aif+dwi")]
    [540, 600, 558, 618]
    """
    n_patch, aif, n_static = INPUT_MODES[inputs]
    return n_timepoints * (n_patch + int(aif)) + n_static


def expected_feature_names(inputs, n_timepoints):
    """Column names of the PatchExtractor layout for one mode, in order.

    Parameters
    ----------
    inputs : {"pwi", "pwi+aif", "pwi+dwi", "pwi+aif+dwi"}
        Input mode.
    n_timepoints : int
        Length of the resampled time series.

    Returns
    -------
    names : list of str
        ``pwi_t{tt:02d}_p{p}`` time-major, then ``aif_t{tt:02d}``, then ``dwi_b0_p{p}`` and
        ``dwi_b1000_p{p}``.

    Examples
    --------
    >>> from sklearn_hemo._lstm_module import expected_feature_names
    >>> expected_feature_names("pwi+aif+dwi", 2)[:3], expected_feature_names("pwi+aif", 2)[-1]
    (['pwi_t00_p0', 'pwi_t00_p1', 'pwi_t00_p2'], 'aif_t01')
    """
    n_patch, aif, n_static = INPUT_MODES[inputs]
    names = [f"pwi_t{t:02d}_p{p}" for t in range(n_timepoints) for p in range(n_patch)]
    if aif:
        names += [f"aif_t{t:02d}" for t in range(n_timepoints)]
    if n_static:
        names += [f"dwi_{b}_p{p}" for b in ("b0", "b1000") for p in range(9)]
    return names


class HemoLSTM(nn.Module):
    """LSTM over per-voxel time series, optional static inputs, dense head to logits.

    Each input row is flat: ``n_timepoints * n_step_features`` sequence values in time-major
    order, then optionally ``n_timepoints`` AIF values (appended to every step as one more
    feature), then ``n_static`` static values concatenated to the LSTM's final hidden state.

    Parameters
    ----------
    n_timepoints : int
        Sequence length.
    n_step_features : int
        Sequence values per time step stored time-major (9 for a 3x3 PWI patch, 1 for a
        univariate series).
    n_classes : int
        Number of output logits.
    aif : bool, default=False
        Whether ``n_timepoints`` AIF columns follow the sequence block.
    n_static : int, default=0
        Number of trailing static columns (18 for the DWI b0/b1000 patches).
    hidden_size : int, default=60
        LSTM hidden units (the paper's 60 cells).
    num_layers : int, default=1
        Stacked LSTM layers.
    dropout : float, default=0.0
        Dropout between LSTM layers and before every dense layer.
    bidirectional : bool, default=False
        Run the LSTM in both directions; the head then sees ``2 * hidden_size`` values.
    dense_sizes : tuple of int, default=()
        Hidden layer widths of the dense head (ReLU); ``()`` is a single linear layer.
    aif_dropout : float, default=0.0
        In training mode only, the AIF of each row is replaced by zeros (the block mean
        after :class:`~sklearn_hemo.neural.BlockScaler`) with this probability, so the
        network cannot rest its prediction on the AIF alone (one curve per patient).
    time_shift : int, default=0
        In training mode only, each row's series (the PWI steps and the AIF, together)
        are shifted in time by a random whole number of steps in ``[-time_shift,
        time_shift]``, the edge value repeated where the shift opens a gap. Static
        (DWI) values are not moved.

    Attributes
    ----------
    dense_in_features : int
        Width of the vector the dense head reads: LSTM outputs plus static values.

    Examples
    --------
    >>> import torch
    >>> from sklearn_hemo.neural import HemoLSTM
    >>> net = HemoLSTM(n_timepoints=60, n_step_features=9, n_classes=2, aif=True, n_static=18)
    >>> net.dense_in_features
    78
    >>> net(torch.zeros(4, 618)).shape
    torch.Size([4, 2])
    """

    def __init__(self, n_timepoints, n_step_features, n_classes, aif=False, n_static=0,
                 hidden_size=60, num_layers=1, dropout=0.0, bidirectional=False,
                 dense_sizes=(), aif_dropout=0.0, time_shift=0):
        super().__init__()
        self.aif_dropout = float(aif_dropout)
        self.time_shift = int(time_shift)
        self.n_timepoints = n_timepoints
        self.n_step_features = n_step_features
        self.aif = aif
        self.n_static = n_static
        self.bidirectional = bidirectional
        self.lstm = nn.LSTM(
            input_size=n_step_features + int(aif),
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            # torch only applies (and warns about) dropout between stacked layers.
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.dense_in_features = hidden_size * (2 if bidirectional else 1) + n_static
        layers = []
        width = self.dense_in_features
        for size in dense_sizes:
            if dropout:
                layers.append(nn.Dropout(dropout))
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, n_classes))
        self.head = nn.Sequential(*layers)

    def forward(self, X):
        """Return logits ``(batch, n_classes)`` for flat feature rows ``X``."""
        n_seq = self.n_timepoints * self.n_step_features
        seq = X[:, :n_seq].reshape(-1, self.n_timepoints, self.n_step_features)
        if self.aif:
            aif = X[:, n_seq:n_seq + self.n_timepoints].unsqueeze(-1)
            p_drop = getattr(self, "aif_dropout", 0.0)  # modules pickled before it existed
            if self.training and p_drop > 0:
                keep = torch.rand(len(X), 1, 1, device=X.device) >= p_drop
                aif = aif * keep
            seq = torch.cat([seq, aif], dim=-1)
            n_seq += self.n_timepoints
        shift = getattr(self, "time_shift", 0)  # modules pickled before it existed
        if self.training and shift > 0:
            seq = _shift_in_time(seq, shift)
        _, (h_n, _) = self.lstm(seq)
        # h_n[-1] is the last layer's final state (the backward direction's, when
        # bidirectional, which is why the two directions are concatenated).
        features = torch.cat([h_n[-2], h_n[-1]], dim=1) if self.bidirectional else h_n[-1]
        if self.n_static:
            features = torch.cat([features, X[:, n_seq:]], dim=1)
        return self.head(features)


def _shift_in_time(seq, max_shift):
    """Shift each row of ``seq`` (batch, time, features) by a random number of steps
    in ``[-max_shift, max_shift]``, repeating the first or last step into the gap."""
    n, t = seq.shape[:2]
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 1), device=seq.device)
    index = (torch.arange(t, device=seq.device) - shifts).clamp_(0, t - 1)
    return torch.gather(seq, 1, index.unsqueeze(-1).expand(-1, -1, seq.shape[-1]))


class TensorDataset(Dataset):
    """skorch Dataset over tensors that is indexed by a whole batch of positions at once.

    skorch's default DataLoader calls ``__getitem__`` once per row and collates; with
    :func:`batch_loader`, ``i`` is a whole batch's slice or index tensor, so a batch is one
    indexing call (a view, for prediction).
    """

    def __getitem__(self, i):
        Xi = self.X[i]
        yi = torch.zeros(len(Xi)) if self.y is None else self.y[i]
        return Xi, yi


class BatchIndices(Sampler):
    """Yield the index of each whole batch: contiguous slices, or shuffled index tensors.

    Slices make prediction batches views (no copy); a fresh ``torch.randperm`` per epoch,
    drawn from torch's global generator (which the classifier seeds), shuffles training.
    """

    def __init__(self, n_samples, batch_size, shuffle=False):
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.shuffle = shuffle

    def __len__(self):
        return -(-self.n_samples // self.batch_size)

    def __iter__(self):
        if self.shuffle:
            return iter(torch.randperm(self.n_samples).split(self.batch_size))
        return (slice(start, start + self.batch_size)
                for start in range(0, self.n_samples, self.batch_size))


def batch_loader(dataset, batch_size, shuffle=False):
    """A DataLoader that yields whole batches from :class:`TensorDataset`.

    The loader gets a generator of its own because it draws a (here unused) worker seed on
    every iteration, which would otherwise advance the caller's global RNG at predict time.
    """
    return DataLoader(dataset, sampler=BatchIndices(len(dataset), batch_size, shuffle),
                      batch_size=None, generator=torch.Generator())


# Public path (see the module docstring): pickles, skorch clones and saved bundles name
# ``sklearn_hemo.neural.<name>``, which re-exports these same objects.
for _obj in (HemoLSTM, TensorDataset, batch_loader):
    _obj.__module__ = "sklearn_hemo.neural"
del _obj
