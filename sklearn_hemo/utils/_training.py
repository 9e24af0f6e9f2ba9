"""What the network's training and the comparison that reports it share, without torch.

:class:`~sklearn_hemo.neural.LSTMClassifier` restarts a fit that ends on the initial
plateau (``plateau_restarts``) and its early stopping and weight averaging count no epoch
on it; ``compare`` warns about a fit that ended there (``model_selection._curves``). All
of them ask :func:`on_plateau`, so the condition and its tolerance live here once, in a
module that ``model_selection`` can import without importing torch.
"""

from __future__ import annotations

import math

from sklearn.pipeline import Pipeline

#: A training loss not more than this below ln(n_classes), the loss of a constant guess
#: between balanced classes, is on the initial plateau: the network learned nothing yet.
PLATEAU_TOL = 0.05


def on_plateau(loss, n_classes=2):
    """Whether a training loss is on the plateau: not more than :data:`PLATEAU_TOL` below
    ln(``n_classes``). A loss above it (a diverged fit) learned nothing either; ``None``
    (no loss recorded) is not on it."""
    return loss is not None and float(loss) >= math.log(n_classes) - PLATEAU_TOL


def final_step(estimator):
    """The estimator that predicts: a :class:`~sklearn.pipeline.Pipeline`'s last step, or
    ``estimator`` itself."""
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
