"""Learning curves of the network rows: recorded in ``run.json``, drawn, and checked.

Every fit of an estimator that records its per-epoch losses (``train_loss_curve_``, as
:class:`~sklearn_hemo.neural.LSTMClassifier` does) leaves its curves in the comparison's
part of that (model, outer fold): the refit's whole curves (training and validation loss
per epoch, the epoch whose weights were kept, and, from each epoch's weights after
training, the loss on the outer test fold: :func:`test_loss_curve`), and the final
training loss of each inner fit. :func:`warn_plateau` warns when a fit ended on the
initial plateau (``utils._training.on_plateau``: a final training loss not more than
``PLATEAU_TOL`` below ln 2, the loss of a constant guess between two balanced classes,
the condition on which ``LSTMClassifier`` restarts a fit with ``plateau_restarts``);
:func:`plot_loss_curves` draws ``lstm_curves.png``, a panel per row and a line per
outer fold.
"""

from __future__ import annotations

import math
import textwrap
import warnings

import numpy as np

from ..utils._training import PLATEAU_TOL, final_step, on_plateau
from ..utils._warnings import find_stack_level


def loss_curves(estimator):
    """The refit's curves for ``run.json``, or None for an estimator that has none."""
    train = getattr(estimator, "train_loss_curve_", None)
    if train is None:
        return None
    valid = getattr(estimator, "valid_loss_curve_", None)
    best = int(getattr(estimator, "best_epoch_", len(train)))
    return {"train_loss": [float(v) for v in train],
            "valid_loss": None if valid is None else [float(v) for v in valid],
            "best_epoch": best,
            # the epochs whose weights were averaged into the kept net (average_epochs)
            "averaged_epochs": [int(e) for e in getattr(estimator, "averaged_epochs_", [best])],
            "n_steps": int(getattr(estimator, "n_steps_", 0))}


def test_loss_curve(model, X, y):
    """Per-epoch cross-entropy of a fitted network on rows its fit never saw, or None.

    ``model`` is the fitted pipeline (or estimator) whose final step has
    ``staged_predict_proba`` (:class:`~sklearn_hemo.neural.LSTMClassifier`); ``X`` goes
    through the earlier steps as ``predict`` would take it. Computed after training from
    each epoch's weights, so it chooses nothing: compare records it for the outer test
    fold, the only patients every fit of the fold left out.
    """
    from sklearn.metrics import log_loss
    from sklearn.pipeline import Pipeline

    final = final_step(model)
    staged = getattr(final, "staged_predict_proba", None)
    if staged is None:
        return None
    features = model[:-1].transform(X) if isinstance(model, Pipeline) else X
    return [float(log_loss(y, proba, labels=final.classes_)) for proba in staged(features)]


def final_train_loss(estimator):
    """The last epoch's training loss of a fitted network (a scorer's value, not a score)."""
    return float(estimator.train_loss_curve_[-1])


def warn_plateau(name, k, curves, inner_losses=None):
    """Warn, naming the row and the outer fold, when a fit of it ended on the plateau."""
    messages = []
    if curves and curves.get("train_loss") and on_plateau(curves["train_loss"][-1]):
        messages.append(f"the refit's final training loss is {curves['train_loss'][-1]:.3f}")
    stuck = [loss for loss in (inner_losses or []) if on_plateau(loss)]
    if stuck:
        messages.append(f"{len(stuck)} of {len(inner_losses)} inner fits ended at "
                        + ", ".join(f"{v:.3f}" for v in stuck))
    if messages:
        warnings.warn(
            f"{name}, outer fold {k}: " + "; ".join(messages) + f", not {PLATEAU_TOL} below "
            f"ln 2 = {math.log(2):.3f}, the loss of a constant guess: the network did not "
            "learn. Look at lstm_curves.png and run.json's loss_curves; train longer "
            "(max_steps), with another learning rate, or check the inputs.",
            UserWarning, stacklevel=find_stack_level())


def plot_loss_curves(models, path):
    """Write ``lstm_curves.png``: a panel per row with curves, a line per outer fold.

    ``models`` is ``run.json``'s ``models`` record. Training loss solid; the loss on the
    held-out patients of early stopping, when there are some, dashed in the same colour,
    with the best epoch marked; the loss on the outer test fold (``test_loss``, from
    each epoch's weights after training), when recorded, dash-dotted; when the kept
    weights are a mean over epochs (``average_epochs``), those epochs drawn as a wide
    pale band on the training curve; the ln 2 plateau a grey line. Returns the figure,
    or None when no row has curves.
    """
    from matplotlib.figure import Figure

    from .._io import atomic_path

    rows = {name: record["loss_curves"] for name, record in models.items()
            if record.get("loss_curves")}
    if not rows:
        return None
    n = len(rows)
    n_cols = min(n, 2)
    n_rows = -(-n // n_cols)
    fig = Figure(figsize=(5.5 * n_cols, 3.6 * n_rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False)).ravel()
    averaged = validated = tested = False
    for ax, (name, folds) in zip(axes, rows.items(), strict=False):
        for k, curves in sorted(folds.items(), key=lambda item: int(item[0])):
            if not curves:
                continue
            epochs = np.arange(1, len(curves["train_loss"]) + 1)
            (line,) = ax.plot(epochs, curves["train_loss"], linewidth=1.3,
                              label=f"fold {k} train")
            if curves.get("valid_loss"):
                validated = True
                ax.plot(epochs, curves["valid_loss"], linewidth=1.0, linestyle="--",
                        color=line.get_color(), label=f"fold {k} validation")
                best = curves.get("best_epoch")
                if best and 1 <= best <= len(epochs):
                    ax.plot([best], [curves["valid_loss"][best - 1]], marker="o",
                            color=line.get_color(), markersize=4)
            if curves.get("test_loss"):
                tested = True
                ax.plot(epochs[:len(curves["test_loss"])], curves["test_loss"],
                        linewidth=1.0, linestyle="-.", color=line.get_color(),
                        label=f"fold {k} test")
            span = [e for e in curves.get("averaged_epochs") or [] if 1 <= e <= len(epochs)]
            if len(span) > 1:  # the kept weights are the mean of these epochs' weights
                averaged = True
                ax.plot(span, [curves["train_loss"][e - 1] for e in span], linewidth=6,
                        alpha=0.25, color=line.get_color(), solid_capstyle="butt")
        ax.axhline(math.log(2), color="grey", linewidth=0.8, linestyle=":")
        ax.set(title=name, xlabel="epoch", ylabel="cross-entropy")
        ax.legend(fontsize="x-small", ncol=2)
    for ax in axes[n:]:
        ax.set_visible(False)
    legend = ["solid: training loss"]
    if validated:
        legend += ["dashed: held-out patients", "dot: best epoch"]
    if tested:
        legend.append("dash-dot: the outer test fold (after training)")
    if averaged:
        legend.append("wide band: the epochs whose mean weights are kept")
    title = f"LSTM learning curves ({'; '.join(legend + ['dotted: ln 2'])})"
    # wrapped to the figure's width: one line ran past both edges of a two-panel figure
    fig.suptitle("\n".join(textwrap.wrap(title, 60 * n_cols)), fontsize="medium")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    return fig
