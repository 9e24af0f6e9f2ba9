"""Figures: ROC / PR curves of the model comparison and risk-map overlays.

Everything here builds :class:`matplotlib.figure.Figure` objects directly (no
``pyplot``), so it works under any backend, draws nothing on screen and leaves
matplotlib's global state alone. matplotlib is the ``plot`` extra; it is imported when a
function is called.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from numbers import Integral, Real

import numpy as np

from ._io import atomic_path
from ._orientation import radiological_view, to_ras
from .utils.fixes import Interval, validate_params

__all__ = ["plot_risk_overlay", "save_risk_overlay", "plot_roc_pr"]


#: line styles of the rows scored by the simulated truth (see compare_models)
_TRUTH_STYLES = {"oracle": {"linestyle": "--", "color": "black"},
                 "latent-bound": {"linestyle": ":", "color": "dimgrey"}}


# -- risk-map overlays (orientation: sklearn_hemo._orientation) --------------------

def _volume(obj, name):
    if obj is None:
        return None
    data = np.asanyarray(obj.dataobj) if hasattr(obj, "dataobj") else np.asarray(obj)
    if data.ndim != 3:
        raise ValueError(f"{name} must be a 3D image or array, got shape {data.shape}.")
    return data


def _pick_slices(risk, background, n_slices):
    """Up to ``n_slices`` evenly spaced axial slices that contain brain."""
    present = np.flatnonzero((risk > 0).any(axis=(0, 1))
                             | (False if background is None else
                                (background > 0).any(axis=(0, 1))))
    if present.size == 0:
        present = np.arange(risk.shape[2])
    if present.size <= n_slices:
        return present
    return present[np.unique(np.linspace(0, present.size - 1, n_slices).round().astype(int))]


@validate_params(
    {
        # a nibabel image (it has a shape) or an array; 3D, checked by the function
        "risk_map": ["array-like"],
        "background": ["array-like", None],
        "contour": ["array-like", None],
        "slices": ["array-like", None],
        "n_slices": [Interval(Integral, 1, None, closed="left")],
        "display_threshold": [Real],
        "cmap": [str, callable],  # a name or a matplotlib Colormap
        "alpha": [Interval(Real, 0, 1, closed="both")],
        "n_cols": [Interval(Integral, 1, None, closed="left")],
        "title": [str, None],
        "affine": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def plot_risk_overlay(risk_map, background=None, contour=None, *, slices=None, n_slices=6,
                      display_threshold=0.1, cmap="hot", alpha=0.7, n_cols=3, title=None,
                      affine=None):
    """Axial slices of a risk map over a background image, with an annotation contour.

    Parameters
    ----------
    risk_map : nibabel image or ndarray of shape (x, y, z)
        Voxel-wise HT probability in [0, 1].
    background : nibabel image, ndarray or None, default=None
        Anatomical image on the same grid, e.g. the patient's DWI b0, drawn in grey
        (scaled to its 1st-99th percentiles).
    contour : nibabel image, ndarray or None, default=None
        Binary mask drawn as a cyan outline, e.g. the follow-up ``ht_mask``.
    slices : sequence of int or None, default=None
        Axial (third-axis) slice indices; None picks ``n_slices`` evenly spaced slices
        that contain brain.
    n_slices : int, default=6
        Number of slices picked when ``slices`` is None.
    display_threshold : float, default=0.1
        Voxels with a lower risk are left transparent so the background stays readable.
    cmap : str, default="hot"
        Colour map of the risk (fixed range 0 to 1, shown in a colour bar).
    alpha : float, default=0.7
        Opacity of the risk overlay.
    n_cols : int, default=3
        Slices per row.
    title : str or None, default=None
        Figure title.
    affine : ndarray of shape (4, 4) or None, default=None
        Voxel-to-world affine of the volumes; None takes that of ``risk_map`` when it is
        a nibabel image. With an affine, the volumes are reoriented to the closest RAS
        order (nibabel) and shown axially in the radiological convention (the patient's
        right on the left, anterior up), whatever the scanner's voxel order; ``slices``
        then index the reoriented superior axis.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure. Without an affine each panel shows the slice with the first axis
        horizontal and the second axis pointing up (voxel order, no reorientation).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.plotting import plot_risk_overlay
    >>> risk = np.zeros((16, 16, 4)); risk[4:8, 4:8, :] = 0.8
    >>> fig = plot_risk_overlay(risk, background=np.ones((16, 16, 4)), n_slices=2)
    >>> len(fig.axes)  # two slices and the colour bar
    3
    """
    from matplotlib.figure import Figure

    if affine is None and hasattr(risk_map, "affine"):
        affine = risk_map.affine
    risk = _volume(risk_map, "risk_map")
    background = _volume(background, "background")
    contour = _volume(contour, "contour")
    for name, other in (("background", background), ("contour", contour)):
        if other is not None and other.shape != risk.shape:
            raise ValueError(
                f"{name} has shape {other.shape} but the risk map has shape {risk.shape}; "
                "both must be on the same (PWI) grid.")
    if affine is not None:
        risk = to_ras(risk, affine)
        background = None if background is None else to_ras(background, affine)
        contour = None if contour is None else to_ras(contour, affine)

        def view(volume, k):
            return radiological_view(volume, k)
    else:
        def view(volume, k):
            return volume[:, :, k].T
    if slices is None:
        slices = _pick_slices(risk, background, n_slices)
    slices = [int(k) for k in slices]
    bad = [k for k in slices if not 0 <= k < risk.shape[2]]
    if bad or not slices:
        raise ValueError(
            f"slices must be non-empty indices in [0, {risk.shape[2] - 1}], got {slices}.")

    n_cols = min(n_cols, len(slices))
    n_rows = -(-len(slices) // n_cols)
    fig = Figure(figsize=(3.0 * n_cols + 0.8, 3.0 * n_rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False)).ravel()
    if background is not None:
        low, high = np.percentile(background, [1, 99])
        high = high if high > low else low + 1
    image = None
    for ax, k in zip(axes, slices, strict=False):
        if background is not None:
            ax.imshow(view(background, k), cmap="gray", vmin=low, vmax=high,
                      origin="lower", interpolation="nearest")
        shown = np.ma.masked_less(view(risk, k), display_threshold)
        image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha,
                          origin="lower", interpolation="nearest")
        if contour is not None and np.any(contour[:, :, k]):
            ax.contour((view(contour, k) > 0).astype(float), levels=[0.5],
                       colors="cyan", linewidths=1.0)  # origin=None: on the pixel centres
        if affine is not None:
            for x, letter in ((0.01, "R"), (0.93, "L")):
                ax.text(x, 0.5, letter, transform=ax.transAxes, color="white",
                        fontsize=9, va="center")
        ax.set_title(f"z = {k}", fontsize=9)
        ax.set_axis_off()
    for ax in axes[len(slices):]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes.tolist(), label="HT risk", shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


@validate_params(
    {
        "path": [str, os.PathLike],
        # a nibabel image (it has a shape) or an array; 3D, checked by the function
        "risk_map": ["array-like"],
        "background": ["array-like", None],
        "contour": ["array-like", None],
        "dpi": [Interval(Real, 0, None, closed="neither")],
    },
    # **kwargs go to plot_risk_overlay: let it check them
    prefer_skip_nested_validation=False,
)
def save_risk_overlay(path, risk_map, background=None, contour=None, *, dpi=100, **kwargs):
    """Draw :func:`plot_risk_overlay` and write it to ``path`` (PNG, PDF, ...) atomically.

    Parameters
    ----------
    path : path-like
        Output file; the format follows its suffix.
    risk_map, background, contour
        As in :func:`plot_risk_overlay`.
    dpi : int, default=100
        Resolution of raster formats.
    **kwargs
        Passed to :func:`plot_risk_overlay`.

    Returns
    -------
    path : pathlib.Path
        The written file.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.plotting import save_risk_overlay
    >>> risk = np.zeros((16, 16, 4)); risk[4:8, 4:8, :] = 0.8
    >>> save_risk_overlay("/tmp/sklearn-hemo-doc-overlay.png", risk).suffix
    '.png'
    """
    from pathlib import Path

    fig = plot_risk_overlay(risk_map, background, contour, **kwargs)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return Path(path)


# -- ROC / PR curves of the model comparison (the paper's Fig. 2) ----------------------
@validate_params(
    {
        "predictions": [Mapping],
        "path": [str, os.PathLike, None],
        "table": [Sequence, None],
        "dpi": [Interval(Real, 0, None, closed="neither")],
        "title": [str, None],
    },
    prefer_skip_nested_validation=True,
)
def plot_roc_pr(predictions, path=None, *, table=None, dpi=100, title=None):
    """ROC and precision-recall curves of every model, side by side (the paper's Fig. 2).

    Parameters
    ----------
    predictions : dict
        Model name -> dict with arrays ``y_true`` and ``score`` (as in
        :attr:`ComparisonResult.predictions
        <sklearn_hemo.model_selection.ComparisonResult>` or from
        :func:`~sklearn_hemo.model_selection.read_predictions`).
    path : path-like or None, default=None
        When given, the figure is also written there atomically (format from the suffix).
    table : list of dict or None, default=None
        Rows of the comparison table; their AUCs and intervals go into the legend. None
        computes the plain AUCs from ``predictions``.
    dpi : int, default=100
        Resolution of raster formats.
    title : str or None, default=None
        Figure title.

    Returns
    -------
    fig : matplotlib.figure.Figure
        Two panels: ROC (false- vs true-positive rate, chance diagonal) and PR (recall
        vs precision, prevalence line). The rows scored by the simulated truth
        (``oracle``, ``latent-bound``), when present, are dashed.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.plotting import plot_roc_pr
    >>> rng = np.random.default_rng(0)
    >>> y = np.tile([0, 1], 100)
    >>> fig = plot_roc_pr({"model": {"y_true": y, "score": y + rng.normal(size=200)}})
    >>> len(fig.axes)
    2
    """
    import matplotlib
    from matplotlib.figure import Figure
    from sklearn.metrics import precision_recall_curve, roc_curve

    from .metrics import weighted_auc

    rows = {row["model"]: row for row in (table or [])}
    fig = Figure(figsize=(11, 5), layout="constrained")
    ax_roc, ax_pr = fig.subplots(1, 2)
    prevalence = None
    # tab10 repeats after ten curves; the full zoo has eleven models plus the oracle
    n_colors = sum(name not in _TRUTH_STYLES for name in predictions)
    palette = matplotlib.colormaps["tab10" if n_colors <= 10 else "tab20"].colors
    colors = iter(palette)
    for name, pred in predictions.items():
        y_true, score = np.asarray(pred["y_true"]), np.asarray(pred["score"], dtype=float)
        prevalence = float(np.mean(y_true))
        if name in rows:
            r = rows[name]
            roc_label = (f"{name}: {100 * r['auc_roc']:.1f} "
                         f"[{100 * r['auc_roc_low']:.1f}, {100 * r['auc_roc_high']:.1f}]")
            pr_label = (f"{name}: {100 * r['auc_pr']:.1f} "
                        f"[{100 * r['auc_pr_low']:.1f}, {100 * r['auc_pr_high']:.1f}]")
        else:
            roc, pr = weighted_auc(y_true, score)
            roc_label, pr_label = f"{name}: {100 * roc:.1f}", f"{name}: {100 * pr:.1f}"
        style = (_TRUTH_STYLES[name] if name in _TRUTH_STYLES
                 else {"color": next(colors)})
        fpr, tpr, _ = roc_curve(y_true, score)
        ax_roc.plot(fpr, tpr, label=roc_label, linewidth=1.4, **style)
        precision, recall, _ = precision_recall_curve(y_true, score)
        ax_pr.step(recall, precision, where="post", label=pr_label, linewidth=1.4, **style)
    ax_roc.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    if prevalence is not None:
        ax_pr.axhline(prevalence, color="grey", linewidth=0.8, linestyle=":")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate",
               title="ROC (AUC %, 95% CI)", xlim=(0, 1), ylim=(0, 1.01))
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall (AUC %, 95% CI)",
              xlim=(0, 1), ylim=(0, 1.01))
    for ax in (ax_roc, ax_pr):
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize="small")
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title)
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
    return fig
