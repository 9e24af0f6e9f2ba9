"""Tables and files of a comparison: summary with CIs, per-fold values, CSV/Markdown/JSON.

Everything in the summary table is a function of ``predictions.csv`` (and the bootstrap
seed): :func:`summarize_predictions` on :func:`read_predictions` of that file gives the
same table as the run that wrote it.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from .._io import atomic_write_text, writes_one_set
from ..metrics import bootstrap_auc, weighted_auc
from ..utils._warnings import find_stack_level
from ..utils.fixes import Interval, StrOptions, validate_params
from ._zoo import ZOO

__all__ = [
    "ComparisonResult",
    "PAPER_TABLE",
    "paired_differences",
    "read_predictions",
    "stability_table",
    "summarize_predictions",
]

TABLE_COLUMNS = ("model", "inputs", "auc_roc", "auc_roc_low", "auc_roc_high", "auc_pr",
                 "auc_pr_low", "auc_pr_high", "n_patients", "n_voxels")
PREDICTION_COLUMNS = ("model", "patient", "i", "j", "k", "fold", "y_true", "score")
DIFFERENCE_COLUMNS = ("model", "reference", "metric", "difference", "low", "high",
                      "share_above_zero")
STABILITY_COLUMNS = ("model", "n_replicates", "auc_roc_mean", "auc_roc_sd", "auc_pr_mean",
                     "auc_pr_sd", "share_ranked_first")
FOLD_COLUMNS = ("model", "fold", "auc_roc", "auc_pr", "n_patients", "n_voxels",
                "fit_time_s", "score_time_s", "inner_score")
VOLUME_COLUMNS = ("model", "fold", "patient_id", "ht", "risk_score", "predicted_volume_ml",
                  "annotated_volume_ml", "volume_error_ml", "dice")
VOLUME_SUMMARY_COLUMNS = ("model", "n_patients", "occurrence_auc", "dice_mean",
                          "volume_abs_error_mean_ml")

#: Table 1 of Yu et al. (MICCAI 2019): zoo row -> (paper's model, inputs, AUC-ROC, AUC-PR),
#: AUCs in % as "mean +- half-width of the 95 % CI"; NA where the paper gives none. Read
#: from the zoo's rows (``ZooRow.paper``).
PAPER_TABLE = {name: row.paper for name, row in ZOO.items() if row.paper is not None}

#: Rows scored by the simulator's truth, never fitted: ``oracle`` is the voxel HT
#: probability given everything an ideal reader measures on the images (the best any
#: model can do from them); ``latent-bound`` also knows the factors no image shows
#: (reperfusion, treatment, unobserved voxel terms). Neither reads the outcome, and
#: neither is ranked among the models.
TRUTH_ROWS = {"oracle": "observable_risk", "latent-bound": "latent_risk"}

# the inputs labels of the truth rows (those of the zoo's rows are in ZooRow.inputs_label)
_TRUTH_INPUTS = {
    "oracle": "observable risk (simulated truth)",
    "latent-bound": "latent risk (simulated truth; knows unobserved factors)",
}


def inputs_label(name, pipeline=None):
    """Human label of a model's inputs: the zoo's, else read from its first step."""
    if name in ZOO:
        return ZOO[name].inputs_label
    if name in _TRUTH_INPUTS:
        return _TRUTH_INPUTS[name]
    if pipeline is None:
        return ""
    first = getattr(pipeline, "steps", [[None, pipeline]])[0][1]
    inputs = getattr(first, "inputs", None)
    return inputs.upper() if isinstance(inputs, str) else type(first).__name__


@dataclass
class ComparisonResult:
    """Outcome of :func:`~sklearn_hemo.model_selection.compare_models`.

    Attributes
    ----------
    table : list of dict
        One row per model with the columns of ``table.csv``.
    fold_table : list of dict
        AUCs, sizes and fit times per model and outer fold.
    predictions : dict
        Model -> dict of arrays ``patient, ijk, fold, y_true, score`` (one entry per
        sampled voxel, the same voxels and order for every model).
    folds : dict
        Patient id -> outer fold.
    best_params : dict
        Model -> {fold: best parameters}.
    replicates : dict
        Model -> ndarray (n_resamples, 2) of bootstrap AUC-ROC and AUC-PR. Every model
        uses the same resamples, so differences of replicates give paired intervals.
    config : dict
        The protocol settings of the run.
    out_dir : path or None
        Where the files were written.
    differences : list of dict
        Paired differences against the reference row (see :func:`paired_differences`).
    stability : list of dict
        Over replicates, when there were several (see :func:`stability_table`).
    run : dict
        What the run did (``run.json``): cohort, sample, folds, seeds, per-model grids,
        fits, fit seconds, optimiser steps, versions.
    volumes : list of dict or None
        With ``compare_models(volumes=True)``: one row per model and held-out patient
        mapped in full (the columns of ``volumes.csv``); None otherwise.
    volumes_summary : list of dict or None
        With ``volumes=True``: per model the patient-level occurrence AUC, mean Dice and
        mean absolute volume error (``volumes_summary.csv``); None otherwise.
    calibration, calibration_summary : list of dict or None
        With ``volumes=True``: the reliability of the whole-brain voxel probabilities of
        the held-out patients per model and bin, and per model its Brier score, expected
        calibration error and observed prevalence, before and after the prior-shift
        correction (``calibration.csv``, ``calibration_summary.csv``); None otherwise.
    patients, patients_summary : list of dict or None
        With ``volumes=True``: per model and held-out patient the probability of any HT
        and the expected HT volume, and per model the patient AUC with its
        patient-bootstrap interval (``patients.csv``, ``patients_summary.csv``).
    gallery : dict or None
        With ``volumes=True``: model -> patient id -> one axial slice of the map, the
        DWI b0 and the HT annotation, drawn in ``report.html``.
    calibration_before : list of dict or None
        With ``volumes=True``: the rows of ``calibration`` for the same maps before the
        prior-shift correction (drawn in the reliability diagram; not written as a CSV).
    files : list of str
        The names of the files :func:`~sklearn_hemo.model_selection.compare_models` wrote
        into ``out_dir`` (empty without one).

    Examples
    --------
    A full run is in the gallery example :ref:`sphx_glr_auto_examples_plot_compare_models.py`.
    A result prints as a plain-text table:

    >>> from sklearn_hemo.model_selection import ComparisonResult
    >>> row = dict(model="linear", inputs="PWI+AIF+DWI", auc_roc=0.8, auc_roc_low=0.7,
    ...            auc_roc_high=0.9, auc_pr=0.7, auc_pr_low=0.6, auc_pr_high=0.8,
    ...            n_patients=12, n_voxels=400)
    >>> print(ComparisonResult([row], [], {}, {}, {}, {}))
    model   inputs       AUC-ROC [95% CI]   AUC-PR [95% CI]    patients  voxels
    ------  -----------  -----------------  -----------------  --------  ------
    linear  PWI+AIF+DWI  80.0 [70.0, 90.0]  70.0 [60.0, 80.0]  12        400
    """

    table: list
    fold_table: list
    predictions: dict
    folds: dict
    best_params: dict
    replicates: dict
    config: dict = field(default_factory=dict)
    out_dir: object = None
    differences: list = field(default_factory=list)
    stability: list = field(default_factory=list)
    run: dict = field(default_factory=dict)
    volumes: list | None = None
    volumes_summary: list | None = None
    calibration: list | None = None
    calibration_summary: list | None = None
    patients: list | None = None
    patients_summary: list | None = None
    gallery: dict | None = field(default=None, repr=False)
    calibration_before: list | None = field(default=None, repr=False)
    files: list = field(default_factory=list, repr=False)

    def to_markdown(self):
        """The table in the layout of the paper's Table 1, the paper's numbers alongside,
        then what was sampled, the paired differences and, with replicates, stability."""
        parts = [markdown_table(self.table, self.config)]
        if self.run:
            parts.append(_markdown_run(self.run))
        if self.differences:
            parts.append(_markdown_differences(self.differences, self.config))
        if self.stability:
            parts.append(_markdown_stability(self.stability, self.run))
        return "\n".join(parts)

    def __str__(self):
        return text_table(self.table)


def _percent(value):
    return f"{100 * value:.1f}"


def _ci(row, metric):
    return (f"{_percent(row[metric])} [{_percent(row[metric + '_low'])}, "
            f"{_percent(row[metric + '_high'])}]")


def text_table(rows):
    """Plain-text table for a terminal: AUCs in % with 95 % intervals."""
    header = ("model", "inputs", "AUC-ROC [95% CI]", "AUC-PR [95% CI]", "patients",
              "voxels")
    body = [(r["model"], r["inputs"], _ci(r, "auc_roc"), _ci(r, "auc_pr"),
             str(r["n_patients"]), str(r["n_voxels"])) for r in rows]
    widths = [max(len(x) for x in column) for column in zip(header, *body, strict=True)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
             for line in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows, config=None):
    """Markdown table, paper layout, our CIs and the paper's numbers side by side."""
    config = config or {}
    lines = [
        "| model | paper's name | inputs | AUC-ROC (95% CI) | AUC-PR (95% CI) "
        "| paper AUC-ROC | paper AUC-PR |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = PAPER_TABLE.get(r["model"], ("", "", "", ""))
        lines.append(f"| {r['model']} | {paper[0]} | {r['inputs']} | {_ci(r, 'auc_roc')} | "
                     f"{_ci(r, 'auc_pr')} | {paper[2]} | {paper[3]} |")
    n_patients = max((r["n_patients"] for r in rows), default=0)
    n_voxels = max((r["n_voxels"] for r in rows), default=0)
    notes = [
        "",
        f"AUCs in %, point estimate [95% {config.get('bootstrap_unit', 'patient')} "
        f"bootstrap interval, {config.get('n_resamples', 1000)} resamples, the same "
        "resamples for every model].",
        f"Out-of-fold scores of {n_voxels} balanced voxels (half HT) from {n_patients} "
        f"patients; {config.get('n_outer', '?')} outer x {config.get('n_inner', '?')} "
        "inner patient-grouped folds; protocol "
        f"'{config.get('protocol', '?')}', random_state={config.get('random_state', '?')}.",
        "The paper's numbers (Yu et al., MICCAI 2019: 155 patients, 41 with HT, "
        "mean ± CI half-width) are for reference only: results on a simulated cohort are "
        "not comparable to them and are not clinical evidence.",
    ]
    return "\n".join(lines + notes) + "\n"


@validate_params(
    {
        "predictions": [Mapping],
        "inputs": [Mapping, None],
        # as bootstrap_auc, which gets them
        "n_resamples": [Interval(Integral, 1, None, closed="left")],
        "unit": [StrOptions({"patient", "voxel"})],
        "confidence_level": [Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
        "fold_info": [Mapping, None],
    },
    prefer_skip_nested_validation=True,
)
def summarize_predictions(predictions, *, inputs=None, n_resamples=1000, unit="patient",
                          confidence_level=0.95, random_state=0, fold_info=None):
    """Summary table, per-fold table and bootstrap replicates from out-of-fold scores.

    Parameters
    ----------
    predictions : dict
        Model -> dict with arrays ``patient``, ``fold``, ``y_true``, ``score`` (as in
        :class:`ComparisonResult` or from :func:`read_predictions`).
    inputs : dict or None, default=None
        Model -> inputs label; zoo names get theirs automatically.
    n_resamples, unit, confidence_level, random_state
        Passed to :func:`~sklearn_hemo.metrics.bootstrap_auc`. The same seed gives every
        model the same resamples.
    fold_info : dict or None, default=None
        (model, fold) -> dict with ``fit_time``, ``score_time``, ``inner_score``.

    Returns
    -------
    table : list of dict
        One row per model, columns of ``table.csv``.
    fold_table : list of dict
        One row per model and outer fold.
    replicates : dict
        Model -> ndarray (n_resamples, 2) of bootstrap AUC-ROC, AUC-PR.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.model_selection import summarize_predictions
    >>> rng = np.random.default_rng(0)
    >>> y = np.tile([0, 1], 50)
    >>> preds = {"m": {"patient": np.repeat([f"p{i}" for i in range(10)], 10),
    ...                "fold": np.repeat(np.arange(5), 20), "y_true": y,
    ...                "score": y + rng.normal(size=100)}}
    >>> table, folds, reps = summarize_predictions(preds, n_resamples=100)
    >>> sorted(table[0])[:3]
    ['auc_pr', 'auc_pr_high', 'auc_pr_low']
    """
    inputs = dict(inputs or {})
    fold_info = fold_info or {}
    table, fold_table, replicates = [], [], {}
    for name, pred in predictions.items():
        res = bootstrap_auc(pred["y_true"], pred["score"], pred["patient"], unit=unit,
                            n_resamples=n_resamples, confidence_level=confidence_level,
                            random_state=random_state, return_replicates=True)
        table.append({"model": name, "inputs": inputs.get(name, inputs_label(name)),
                      **{c: res[c] for c in TABLE_COLUMNS[2:8]},
                      "n_patients": res.n_patients, "n_voxels": res.n_voxels})
        replicates[name] = res.replicates
        for k in np.unique(pred["fold"]):
            rows = pred["fold"] == k
            roc, pr = weighted_auc(pred["y_true"][rows], pred["score"][rows])
            if np.isnan(roc):
                warnings.warn(f"model {name}, fold {k}: the test voxels hold a single "
                              "class, so the fold's AUCs are undefined (written as NA).",
                              RuntimeWarning, stacklevel=find_stack_level())
            info = fold_info.get((name, int(k)), {})
            fold_table.append({
                "model": name, "fold": int(k), "auc_roc": float(roc), "auc_pr": float(pr),
                "n_patients": int(np.unique(pred["patient"][rows]).size),
                "n_voxels": int(rows.sum()), "fit_time_s": info.get("fit_time"),
                "score_time_s": info.get("score_time"),
                "inner_score": info.get("inner_score"),
            })
    return table, fold_table, replicates


@validate_params(
    {
        "table": [Sequence],
        "replicates": [Mapping],
        "reference": [str],
        "confidence_level": [Interval(Real, 0, 1, closed="neither")],
    },
    prefer_skip_nested_validation=True,
)
def paired_differences(table, replicates, reference, *, confidence_level=0.95):
    """Paired bootstrap differences of every model's AUCs minus a reference model's.

    The replicates of :func:`summarize_predictions` use the same patient resamples for
    every model, so the difference of two models' replicates in one resample is a draw of
    their paired difference; the interval is its percentile interval, and
    ``share_above_zero`` the share of resamples in which the model beats the reference.

    Parameters
    ----------
    table : list of dict
        Summary rows (``model``, ``auc_roc``, ``auc_pr``), e.g. ``ComparisonResult.table``.
    replicates : dict
        Model -> ndarray (n_resamples, 2) of bootstrap AUC-ROC and AUC-PR, all from the
        same resamples.
    reference : str
        Model the others are compared with.
    confidence_level : float, default=0.95
        Coverage of the percentile interval.

    Returns
    -------
    differences : list of dict
        Two rows per model (``metric`` ``auc_roc`` and ``auc_pr``) with the columns of
        ``differences.csv``: ``model, reference, metric, difference, low, high,
        share_above_zero``. The reference's own rows are exactly 0 with a zero-width
        interval.

    Raises
    ------
    ValueError
        If ``reference`` is not in ``table``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.model_selection import paired_differences
    >>> table = [{"model": "a", "auc_roc": 0.8, "auc_pr": 0.7},
    ...          {"model": "b", "auc_roc": 0.7, "auc_pr": 0.7}]
    >>> reps = {"a": np.array([[0.8, 0.7], [0.9, 0.8]]),
    ...         "b": np.array([[0.7, 0.7], [0.7, 0.7]])}
    >>> rows = paired_differences(table, reps, reference="b")
    >>> [(r["model"], r["metric"], round(r["difference"], 3)) for r in rows][:2]
    [('a', 'auc_roc', 0.1), ('a', 'auc_pr', 0.0)]
    """
    points = {row["model"]: row for row in table}
    if reference not in points or reference not in replicates:
        raise ValueError(
            f"reference={reference!r} is not a compared model; choose one of "
            f"{list(points)}.")
    alpha = (1 - confidence_level) / 2
    base = np.asarray(replicates[reference], dtype=float)
    rows = []
    for row in table:
        name = row["model"]
        draws = np.asarray(replicates[name], dtype=float) - base
        for column, metric in enumerate(("auc_roc", "auc_pr")):
            d = draws[:, column]
            d = d[np.isfinite(d)]
            if name == reference:
                low = high = share = 0.0
            else:
                low, high = (float(v) for v in np.quantile(d, [alpha, 1 - alpha]))
                share = float(np.mean(d > 0))
            rows.append({"model": name, "reference": reference, "metric": metric,
                         "difference": float(row[metric] - points[reference][metric])
                         if name != reference else 0.0,
                         "low": low, "high": high, "share_above_zero": share})
    return rows


@validate_params({"tables": [Sequence]}, prefer_skip_nested_validation=True)
def stability_table(tables):
    """Mean and SD of each model's AUCs over replicates, and how often it ranks first.

    Parameters
    ----------
    tables : list of list of dict
        The summary table of every replicate (``ComparisonResult.table``).

    Returns
    -------
    rows : list of dict
        One per model, columns of ``stability.csv``: ``model, n_replicates,
        auc_roc_mean, auc_roc_sd, auc_pr_mean, auc_pr_sd, share_ranked_first``. The SD is
        the sample SD (NaN for one replicate); the rank is by AUC-ROC among the models
        (the rows scored by the simulator's truth, ``oracle`` and ``latent-bound``, are
        not ranked: NaN).

    Examples
    --------
    >>> from sklearn_hemo.model_selection import stability_table
    >>> t1 = [{"model": "a", "auc_roc": 0.8, "auc_pr": 0.7},
    ...       {"model": "b", "auc_roc": 0.7, "auc_pr": 0.6}]
    >>> t2 = [{"model": "a", "auc_roc": 0.6, "auc_pr": 0.5},
    ...       {"model": "b", "auc_roc": 0.7, "auc_pr": 0.6}]
    >>> [(r["model"], r["share_ranked_first"]) for r in stability_table([t1, t2])]
    [('a', 0.5), ('b', 0.5)]
    """
    names = list(dict.fromkeys(row["model"] for table in tables for row in table))
    firsts = []
    for table in tables:
        ranked = [row for row in table if row["model"] not in TRUTH_ROWS]
        if ranked:
            firsts.append(max(ranked, key=lambda row: row["auc_roc"])["model"])
    rows = []
    for name in names:
        values = [row for table in tables for row in table if row["model"] == name]
        roc = np.array([row["auc_roc"] for row in values], dtype=float)
        pr = np.array([row["auc_pr"] for row in values], dtype=float)

        def sd(v):
            return float(np.std(v, ddof=1)) if v.size > 1 else float("nan")

        rows.append({
            "model": name, "n_replicates": int(roc.size),
            "auc_roc_mean": float(roc.mean()), "auc_roc_sd": sd(roc),
            "auc_pr_mean": float(pr.mean()), "auc_pr_sd": sd(pr),
            "share_ranked_first": float("nan") if name in TRUTH_ROWS else
            float(sum(f == name for f in firsts) / max(1, len(tables))),
        })
    return rows


def _markdown_run(record):
    run, sample = record["run"], record["run"]["sample"]
    cohort = run["cohort"]
    lines = [
        "",
        f"Used: {sample['voxels_drawn']} voxels ({sample['ht_voxels']} HT) from "
        f"{sample['patients']} patients, {sample['bleeding_patients']} of them with HT "
        f"voxels; the cohort has {cohort['n_patients']} patients, "
        f"{cohort['n_bleeding_patients']} bleeding. Details in run.json.",
    ]
    if sample["voxels_drawn"] < sample["voxels_asked"]:
        lines.append(
            f"**Warning: {sample['voxels_asked']} voxels were asked for but only "
            f"{sample['voxels_drawn']} could be drawn** (the cohort has too few HT voxels "
            "for a balanced sample of that size): intervals are wider than the protocol "
            "intends. Use a larger cohort or lower --n-samples.")
    tuned = {name: m["n_candidates"] for name, m in record["models"].items() if m["tuned"]}
    if tuned:
        counts = sorted(set(tuned.values()))
        lines.append(
            "Search: " + ("every tuned row has " + f"{counts[0]} candidates"
                          if len(counts) == 1 else "candidates per row "
                          + ", ".join(f"{k} {v}" for k, v in tuned.items()))
            + f", chosen by {run['folds']['n_inner']} inner patient-grouped folds; "
            + "untuned (no hyperparameter): "
            + (", ".join(n for n, m in record["models"].items() if not m["tuned"])
               or "none") + ".")
    note = network_seed_note(record)
    if note:
        lines.append(note)
    return "\n".join(lines) + "\n"


def network_seed_note(record):
    """One sentence on the rows trained by a stochastic optimiser (``run.json``'s models
    with optimiser steps), or ``""``: each is one network per fit, so its AUC also
    carries that network's initialisation and data order."""
    record = record or {}
    rows = [name for name, m in record.get("models", {}).items()
            if m.get("optimiser_steps") is not None]
    if not rows:
        return ""
    measured = ("the stability table measures it with the rest of the run's variation"
                if record.get("replicates") else
                "--repeats N (compare_models(repeats=N)) measures how far the whole "
                "table moves")
    return (f"{', '.join(rows)}: one trained network per fit, so these AUCs also depend "
            "on the network's random initialisation and data order (on the same folds, "
            "a few points on the simulated benchmark cohorts; docs/comparison.rst, "
            f"\"The LSTM recipe\"); {measured}.")


def _signed(value):
    return f"{100 * value:+.1f}"


def _markdown_differences(rows, config=None):
    config = config or {}
    reference = rows[0]["reference"]
    by = {}
    for row in rows:
        by.setdefault(row["model"], {})[row["metric"]] = row
    lines = [
        "",
        f"## Paired differences against {reference}",
        "",
        "| model | ΔAUC-ROC (95% CI) | share > 0 | ΔAUC-PR (95% CI) | share > 0 |",
        "|---|---|---|---|---|",
    ]
    for name, metrics in by.items():
        if name == reference:
            continue
        cells = []
        for metric in ("auc_roc", "auc_pr"):
            r = metrics[metric]
            cells += [f"{_signed(r['difference'])} [{_signed(r['low'])}, "
                      f"{_signed(r['high'])}]", f"{r['share_above_zero']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Model minus {reference}, in AUC points; intervals from the same "
        f"{config.get('bootstrap_unit', 'patient')}-bootstrap resamples for both models "
        "(paired); 'share > 0': share of resamples in which the model is ahead. An "
        "interval that holds 0 is no evidence of a difference.",
    ]
    return "\n".join(lines) + "\n"


def _markdown_stability(rows, record=None):
    replicates = (record or {}).get("replicates", {})
    n = rows[0]["n_replicates"] if rows else 0
    lines = [
        "",
        f"## Stability over {n} replicates",
        "",
        "| model | AUC-ROC mean ± SD | AUC-PR mean ± SD | ranked first |",
        "|---|---|---|---|",
    ]

    def ms(mean, sd):
        return f"{_percent(mean)} ± " + ("NA" if np.isnan(sd) else _percent(sd))

    for r in rows:
        first = "" if np.isnan(r["share_ranked_first"]) else f"{r['share_ranked_first']:.2f}"
        lines.append(f"| {r['model']} | {ms(r['auc_roc_mean'], r['auc_roc_sd'])} | "
                     f"{ms(r['auc_pr_mean'], r['auc_pr_sd'])} | {first} |")
    seeds = replicates.get("seeds")
    what = ("a new simulated cohort, voxel sample, folds and model seeds"
            if replicates.get("cohort_changes") else
            "the same cohort, a new voxel sample, folds and model seeds")
    lines += ["", f"Each replicate draws {what}"
              + (f" (seeds {', '.join(map(str, seeds))})" if seeds else "")
              + "; the table above is the first replicate's. 'ranked first': share of "
              "replicates in which the row has the highest AUC-ROC (truth rows not ranked)."]
    return "\n".join(lines) + "\n"


def _csv_text(columns, rows):
    """The one CSV writer of the comparison's files: a header, then one line per row.

    Floats are written with ``repr`` (they read back bit for bit); a missing value, None
    or NaN, is written ``NA`` (R's mark, read as NaN by pandas), never ``nan``.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["NA" if _is_missing(row[c]) else _cell(row[c]) for c in columns])
    return buffer.getvalue()


def _is_missing(value):
    return value is None or (isinstance(value, float) and np.isnan(value))


def _cell(value):
    # repr round-trips floats exactly, so tables recompute bit for bit from the CSVs
    return repr(float(value)) if isinstance(value, (float, np.floating)) else value


def predictions_csv(predictions):
    """The text of ``predictions.csv``: one line per model and voxel."""
    # csv.writer quotes names holding commas or quotes, so read_predictions' csv.reader
    # always reads back what was written; floats are written with repr (exact round trip)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PREDICTION_COLUMNS)
    for name, pred in predictions.items():
        ijk = np.asarray(pred["ijk"])
        writer.writerows(zip(
            itertools.repeat(name), pred["patient"].tolist(), ijk[:, 0].tolist(),
            ijk[:, 1].tolist(), ijk[:, 2].tolist(), np.asarray(pred["fold"]).tolist(),
            np.asarray(pred["y_true"]).tolist(), np.asarray(pred["score"], float).tolist(),
            strict=False))
    return buffer.getvalue()


@validate_params({"path": [str, os.PathLike]}, prefer_skip_nested_validation=True)
def read_predictions(path):
    """Read ``predictions.csv`` back into the dict :func:`summarize_predictions` takes.

    Parameters
    ----------
    path : path-like
        A ``predictions.csv`` written by :func:`compare_models`.

    Returns
    -------
    predictions : dict
        Model -> dict of arrays ``patient, ijk, fold, y_true, score`` in file order.

    Examples
    --------
    >>> from sklearn_hemo.model_selection import read_predictions
    >>> preds = read_predictions("hemo-results/predictions.csv")  # doctest: +SKIP
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = tuple(next(reader))
        if header != PREDICTION_COLUMNS:
            raise ValueError(
                f"{path}: expected columns {','.join(PREDICTION_COLUMNS)}, got "
                f"{','.join(header)}; is this a predictions.csv from sklearn-hemo compare?"
            )
        columns = {}
        for row in reader:
            columns.setdefault(row[0], []).append(row[1:])
    predictions = {}
    for name, rows in columns.items():
        patient, i, j, k, fold, y_true, score = zip(*rows, strict=True)
        predictions[name] = {
            "patient": np.asarray(patient),
            "ijk": np.stack([np.asarray(i, int), np.asarray(j, int), np.asarray(k, int)], 1),
            "fold": np.asarray(fold, int), "y_true": np.asarray(y_true, int),
            "score": np.asarray(score, float),
        }
    return predictions


@writes_one_set  # all the files, or (on a failure part-way) none of them
def write_outputs(result, out_dir, plot=True, volumes=True):
    """Write every output file of a comparison into ``out_dir``, each atomically; the
    CSVs through :func:`_csv_text` (missing values ``NA``). ``volumes=False`` leaves out
    ``volumes.csv`` and ``volumes_summary.csv``. Returns the names of the files written
    (sorted; ``writes_one_set``)."""
    out = Path(out_dir)
    atomic_write_text(out / "table.csv", _csv_text(TABLE_COLUMNS, result.table))
    atomic_write_text(out / "table.md", result.to_markdown())
    atomic_write_text(out / "predictions.csv", predictions_csv(result.predictions))
    atomic_write_text(out / "folds.csv", _csv_text(
        ("patient", "fold"), [{"patient": p, "fold": f} for p, f in result.folds.items()]))
    atomic_write_text(out / "fold_scores.csv", _csv_text(FOLD_COLUMNS, result.fold_table))
    atomic_write_text(out / "best_params.json",
                      json.dumps(result.best_params, indent=2, sort_keys=True) + "\n")
    if result.differences:
        atomic_write_text(out / "differences.csv",
                          _csv_text(DIFFERENCE_COLUMNS, result.differences))
    if result.stability:
        atomic_write_text(out / "stability.csv",
                          _csv_text(STABILITY_COLUMNS, result.stability))
    if result.run:
        atomic_write_text(out / "run.json", json.dumps(result.run, indent=2) + "\n")
    if volumes and result.volumes is not None:
        atomic_write_text(out / "volumes.csv", _csv_text(VOLUME_COLUMNS, result.volumes))
    if volumes and result.volumes_summary is not None:
        atomic_write_text(out / "volumes_summary.csv",
                          _csv_text(VOLUME_SUMMARY_COLUMNS, result.volumes_summary))
    if plot:
        from ..plotting import plot_roc_pr

        try:
            plot_roc_pr(result.predictions, path=out / "roc_pr.png", table=result.table)
            if result.run:  # the network rows' learning curves (none: no file)
                from ._curves import plot_loss_curves

                plot_loss_curves(result.run.get("models", {}), out / "lstm_curves.png")
        except ModuleNotFoundError as exc:  # matplotlib is the optional "plot" extra
            if exc.name != "matplotlib" and not str(exc.name).startswith("matplotlib."):
                raise
            # the user asked for the figure: a warning, not a line on stdout
            warnings.warn("roc_pr.png not written: matplotlib is not installed; install the "
                          "plot extra with: pip install 'sklearn-hemo[plot]'.", UserWarning,
                          stacklevel=find_stack_level())
