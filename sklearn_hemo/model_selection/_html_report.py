"""``report.html``: one self-contained page of a comparison's results, to look at.

Written by :func:`~._outputs.write_all_outputs` last, next to the files it shows. Every
figure is embedded as a ``data:`` URI (or, failing that, linked by its relative name in the
same folder): the page opens offline, from any copy of the folder, and names no network
address. Every text that comes from the data (participant ids, model names, settings) is
HTML-escaped, and the numbers of every table are those of its CSV file: each cell carries
the CSV's own text in ``data-value`` (see ``tests/test_report_html.py``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import warnings
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes, atomic_write_text
from ..utils._warnings import find_stack_level
from ._report import (
    DIFFERENCE_COLUMNS,
    PAPER_TABLE,
    TABLE_COLUMNS,
    TRUTH_ROWS,
    VOLUME_SUMMARY_COLUMNS,
    _cell,
    _is_missing,
    network_seed_note,
)

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1d2330; background: #f6f7f9; }
main { max-width: 1250px; margin: 0 auto; padding: 1.2em 2em 3em; }
h1 { font-size: 1.6em; margin: 0.6em 0 0.2em; }
h2 { font-size: 1.25em; margin: 1.8em 0 0.5em; border-bottom: 2px solid #d5d9e0;
     padding-bottom: 0.2em; }
p.note, p.lead { color: #4a5263; max-width: 70em; }
nav { font-size: 0.92em; margin: 0.8em 0; }
nav a { margin-right: 1em; color: #2457a6; }
table { border-collapse: collapse; margin: 0.6em 0 0.4em; background: white;
        font-size: 0.88em; }
th, td { border: 1px solid #d5d9e0; padding: 0.28em 0.6em; text-align: right; }
th { background: #e9edf3; }
td.text, th.text { text-align: left; }
tr.truth td { color: #6b7280; font-style: italic; }
.scroll { overflow-x: auto; }
img { max-width: 100%; background: white; border: 1px solid #d5d9e0; }
.missing { color: #8b93a3; font-style: italic; }
pre { background: white; border: 1px solid #d5d9e0; padding: 0.8em; font-size: 0.8em;
      max-height: 30em; overflow: auto; }
details summary { cursor: pointer; color: #2457a6; margin: 0.4em 0; }
"""

TRUTH_NOTE = ("rows scored by the simulator's truth (not models, not ranked)")


def _e(value):
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape(str(value), quote=True)


def _csv_value(value):
    """The text the comparison's CSV writer puts in a cell (``_csv_text``)."""
    return "NA" if _is_missing(value) else str(_cell(value))


def _fmt(value, kind):
    if _is_missing(value):
        return "NA"
    if kind == "percent":
        return f"{100 * float(value):.1f}"
    if kind == "signed":
        return f"{100 * float(value):+.1f}"
    if kind == "prob":
        return f"{float(value):.4f}"
    if kind == "ml":
        return f"{float(value):.2f}"
    if kind == "share":
        return f"{float(value):.2f}"
    if kind == "float":
        return f"{float(value):.4g}"
    return str(value)


def _value_html(tag, column, value, kind, cls=""):
    """One value: shown formatted, its CSV text in ``data-value``."""
    shown = _fmt(value, kind)
    cls = (cls + (" missing" if shown == "NA" else "")).strip()
    cls = f' class="{cls}"' if cls else ""
    return (f'<{tag}{cls} data-column="{_e(column)}" data-value="{_e(_csv_value(value))}">'
            f"{_e(shown)}</{tag}>")


def _table(csv_name, columns, rows, kinds=None, *, truth_rows=(), extra=None, labels=None,
           intervals=()):
    """An HTML table of CSV rows: shown formatted, each value's CSV text in data-value.

    ``intervals`` are ``(label, point, low, high)``: three CSV columns shown in one cell as
    ``point [low, high]``. ``extra`` is ``(headers, function row -> cells)`` of columns that
    are not in the CSV (the tests compare only the CSV's). ``labels`` renames headers.
    """
    kinds, labels = kinds or {}, labels or {}
    grouped = {c: item for item in intervals for c in item[1:]}
    head, layout = [], []
    for c in columns:
        if c in grouped:
            if grouped[c][1] == c:  # the point column places the interval cell
                head.append(f'<th class="num">{_e(grouped[c][0])}</th>')
                layout.append(grouped[c])
            continue
        num = kinds.get(c, "text") != "text"
        head.append(f'<th class="{"num" if num else "text"}">{_e(labels.get(c, c))}</th>')
        layout.append(c)
    if extra:
        head += [f'<th class="text">{_e(h)}</th>' for h in extra[0]]
    body = []
    for row in rows:
        cells = []
        for item in layout:
            if isinstance(item, tuple):
                _, point, low, high = item
                kind = kinds.get(point, "text")
                cells.append(
                    '<td class="num">' + _value_html("span", point, row.get(point), kind)
                    + " [" + _value_html("span", low, row.get(low), kind) + ", "
                    + _value_html("span", high, row.get(high), kind) + "]</td>")
            else:
                kind = kinds.get(item, "text")
                cells.append(_value_html("td", item, row.get(item), kind,
                                         "text" if kind == "text" else "num"))
        if extra:
            cells += [f'<td class="text">{_e(x)}</td>' for x in extra[1](row)]
        cls = ' class="truth"' if row.get("model") in truth_rows else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table data-csv="{_e(csv_name)}"><thead><tr>'
            f"{''.join(head)}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


# ------------------------------------------------------------------------- figures
def _png(fig, dpi=100):
    """PNG bytes of a matplotlib figure, without the metadata that names a web address."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def _img(data, alt):
    """An <img> of PNG bytes as a data URI: the report is one self-contained file."""
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'


def _mpl_text(text):
    """Text for a matplotlib label: ``$`` would start mathtext (and can fail)."""
    return str(text).replace("$", r"\$")


def _forest_figure(differences):
    from matplotlib.figure import Figure

    reference = differences[0]["reference"]
    names = [r["model"] for r in differences
             if r["metric"] == "auc_roc" and r["model"] != reference]
    by = {(r["model"], r["metric"]): r for r in differences}
    fig = Figure(figsize=(11, 0.45 * len(names) + 1.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(names))[::-1]
    for ax, metric, title in zip(axes, ("auc_roc", "auc_pr"), ("ΔAUC-ROC", "ΔAUC-PR"),
                                 strict=True):
        for yi, name in zip(y, names, strict=True):
            r = by[name, metric]
            point, low, high = (100 * r["difference"], 100 * r["low"], 100 * r["high"])
            color = ("#9aa1ad" if name in TRUTH_ROWS else
                     "#1f6f3f" if low > 0 else "#b23b3b" if high < 0 else "#2457a6")
            ax.plot([low, high], [yi, yi], color=color, linewidth=2)
            ax.plot([point], [yi], "o", color=color)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(f"{title} against {_mpl_text(reference)} (AUC points, 95% CI)",
                     fontsize=10)
        ax.grid(axis="x", color="#e3e6eb")
    axes[0].set_yticks(y, [_mpl_text(n) for n in names])
    return fig


def _roc_pr_panels(result):
    """Two figures of ROC and PR: the paper's rows, then every other row."""
    from ..plotting import plot_roc_pr

    paper = {n: p for n, p in result.predictions.items() if n in PAPER_TABLE}
    rest = {n: p for n, p in result.predictions.items() if n not in PAPER_TABLE}
    figures = []
    for subset, title in ((paper, "Rows of the paper's Table 1"),
                          (rest, "Other rows (perfusion maps, leakage proxy, truth bounds, "
                                 "your own)")):
        if subset:
            fig = plot_roc_pr({_mpl_text(n): p for n, p in subset.items()},
                              table=[{**r, "model": _mpl_text(r["model"])}
                                     for r in result.table], title=title)
            figures.append((fig, title))
    return figures


def _calibration_figure(result):
    import matplotlib
    from matplotlib.figure import Figure

    summary = {r["model"]: r for r in result.calibration_summary}
    if not summary:
        return None
    fig = Figure(figsize=(12, 5), layout="constrained")
    ax, ax_zoom = fig.subplots(1, 2)
    colors = iter(matplotlib.colormaps["tab10" if len(summary) <= 10 else "tab20"].colors)
    for name in summary:
        rows = [r for r in result.calibration if r["model"] == name and r["n_voxels"]]
        s = summary[name]
        color = next(colors)
        label = (f"{_mpl_text(name)}: ECE {s['ece']:.3f} "
                 f"(before correction {s['ece_before_correction']:.3f})")
        x = [r["mean_predicted"] for r in rows]
        obs = [r["observed_rate"] for r in rows]
        sizes = [12 + 10 * np.log10(r["n_voxels"]) for r in rows]
        for axis in (ax, ax_zoom):
            axis.plot(x, obs, "-", color=color, linewidth=1, alpha=0.8)
            axis.scatter(x, obs, s=sizes, color=color, label=label if axis is ax else None)
        before = [r for r in result.calibration_before or []
                  if r["model"] == name and r["n_voxels"]]
        if before:
            ax.plot([r["mean_predicted"] for r in before],
                    [r["observed_rate"] for r in before], "--", color=color, linewidth=1,
                    alpha=0.7)
            ax.scatter([r["mean_predicted"] for r in before],
                       [r["observed_rate"] for r in before], facecolors="none",
                       edgecolors=[color], s=[12 + 10 * np.log10(r["n_voxels"])
                                              for r in before])
    prevalence = float(np.nanmean([s["observed_prevalence"] for s in summary.values()]))
    high = max(0.05, 2.5 * prevalence,
               max((r["mean_predicted"] or 0 for r in result.calibration
                    if r["n_voxels"] and r["bin"] == 0), default=0) * 1.5)
    for axis, limit, title in ((ax, 1.0, "Reliability on held-out whole brains"),
                               (ax_zoom, high, "The same, low-risk range")):
        axis.plot([0, limit], [0, limit], ":", color="grey", linewidth=1)
        axis.axhline(prevalence, color="#b0b6c0", linewidth=0.8, linestyle="--")
        axis.set(xlim=(0, limit), ylim=(0, limit), xlabel="mean predicted probability",
                 ylabel="observed HT rate", title=title)
        axis.set_aspect("equal")
    ax.legend(loc="upper left", fontsize="small",
              title="filled: whole-brain calibrated; hollow, dashed: before correction",
              title_fontsize="small")
    return fig


def _gallery_figure(result, vmax=None):
    from matplotlib.figure import Figure

    models = [m for m in result.gallery if result.gallery[m]]
    shown = {pid: s["ht"] for m in models for pid, s in result.gallery[m].items()}
    ids = sorted(shown, key=lambda pid: (shown[pid] != 1, pid))  # bleeding patients first
    if not models or not ids:
        return None
    risks = [s["risk"][s["brain"]] for m in models for s in result.gallery[m].values()]
    values = np.concatenate(risks) if risks else np.zeros(1)
    vmax = vmax or float(max(0.02, np.percentile(values, 99.5) if values.size else 0.02))
    fig = Figure(figsize=(2.3 * len(ids) + 1.2, 2.3 * len(models) + 0.6),
                 layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(models), len(ids), squeeze=False))
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cmap = matplotlib.colormaps["inferno"]
    for row, model in enumerate(models):
        for col, pid in enumerate(ids):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            s = result.gallery[model].get(pid)
            if s is None:
                continue
            background = s["background"]
            low, hi = np.percentile(background, [1, 99])
            ax.imshow(background.T, cmap="gray", vmin=low, vmax=hi if hi > low else low + 1,
                      origin="lower", interpolation="nearest")
            # opacity grows with the risk: low risk leaves the anatomy visible
            level = np.clip(s["risk"].T / vmax, 0.0, 1.0)
            rgba = cmap(level)
            rgba[..., 3] = np.where(s["brain"].T, 0.9 * level, 0.0)
            ax.imshow(rgba, origin="lower", interpolation="nearest")
            if s["truth"].any():
                ax.contour(s["truth"].T.astype(float), levels=[0.5], colors="cyan",
                           linewidths=1.0)
            if row == 0:
                ax.set_title(f"{_mpl_text(pid)} ({'HT' if s['ht'] == 1 else 'no HT'}), "
                             f"z={s['z']}", fontsize=8)
            if col == 0:
                ax.set_ylabel(_mpl_text(model), fontsize=8)
    fig.colorbar(ScalarMappable(Normalize(0, vmax), cmap), ax=axes.ravel().tolist(),
                 shrink=0.6, label="HT probability (whole-brain calibrated)")
    return fig


def _figure_html(make, alt, plot):
    """Draw a figure into an <img>, or a line saying why it is missing."""
    if not plot:
        return '<p class="missing">Figures not drawn (plot=False).</p>'
    try:
        fig = make()
    except ModuleNotFoundError as exc:
        if exc.name != "matplotlib" and not str(exc.name).startswith("matplotlib."):
            raise
        return ('<p class="missing">Not drawn: matplotlib is not installed '
                "(pip install 'sklearn-hemo[plot]').</p>")
    if fig is None:
        return '<p class="missing">Not available.</p>'
    return _img(_png(fig), alt)


def _file_image(names, alt, folders):
    for folder in folders:
        for name in names:
            path = Path(folder) / name
            if path.is_file():
                return _img(path.read_bytes(), alt)
    return None


# -------------------------------------------------------------------------- report
def _sections(result, out, plot, volumes):
    out = Path(out)
    folders = [out] + ([Path(result.out_dir)] if result.out_dir is not None else [])
    config, record = result.config or {}, result.run or {}
    run = record.get("run", {})
    parts, nav = [], []

    def section(key, title, body):
        nav.append(f'<a href="#{key}">{_e(title)}</a>')
        parts.append(f'<section id="{key}"><h2>{_e(title)}</h2>{body}</section>')

    sample, cohort = run.get("sample", {}), run.get("cohort", {})
    lead = (f"Protocol <b>{_e(config.get('protocol', '?'))}</b>, "
            f"random_state {_e(config.get('random_state', '?'))}; "
            f"{_e(sample.get('voxels_drawn', '?'))} balanced voxels "
            f"({_e(sample.get('ht_voxels', '?'))} HT) from {_e(sample.get('patients', '?'))} "
            f"patients of a cohort of {_e(cohort.get('n_patients', '?'))} "
            f"({_e(cohort.get('n_bleeding_patients', '?'))} bleeding); "
            f"{_e(config.get('n_outer', '?'))} outer x {_e(config.get('n_inner', '?'))} "
            "inner patient-grouped folds.")

    # 1. the table
    section("table", "Results with 95% intervals", _results_body(result, config))

    # 2. paired differences
    if result.differences:
        body = _figure_html(lambda: _forest_figure(result.differences),
                            "forest plot of paired differences", plot)
        body += ('<p class="note">Model minus the reference in AUC points, with the paired '
                 "bootstrap interval (same resamples for both). Green: ahead in 95% of "
                 "resamples; red: behind; blue: no evidence of a difference.</p>")
        body += "<details><summary>differences.csv</summary>" + _table(
            "differences.csv", DIFFERENCE_COLUMNS, result.differences,
            {"difference": "signed", "low": "signed", "high": "signed",
             "share_above_zero": "share"},
            intervals=(("difference [95% CI], AUC points", "difference", "low", "high"),),
            labels={"share_above_zero": "share > 0"}) + "</details>"
        section("differences", "Paired differences", body)

    # 3. ROC / PR
    if plot:
        try:
            figures = _roc_pr_panels(result)
            body = "".join(_img(_png(fig), title) for fig, title in figures)
        except ModuleNotFoundError as exc:
            if exc.name != "matplotlib" and not str(exc.name).startswith("matplotlib."):
                raise
            body = '<p class="missing">Not drawn: matplotlib is not installed.</p>'
    else:
        body = '<p class="missing">Figures not drawn (plot=False).</p>'
    body += ('<p class="note">Out-of-fold scores of the balanced voxel sample; the paper\'s '
             "rows and the others in separate panels; dashed: truth rows.</p>")
    section("roc", "ROC and precision-recall curves", body)

    # 4. LSTM learning curves (drawn by the comparison when the LSTM rows record them)
    # only a file of this output set: an older run's curves in the folder are not this run's
    curves = _file_image(["lstm_curves.png"], "LSTM learning curves", [out])
    section("curves", "LSTM learning curves", curves or (
        '<p class="missing">Not available: this run wrote no lstm_curves.png (no LSTM '
        "row, or a version that records no learning curves).</p>"))

    # 5. whole-brain calibration and the patient-level answer
    if volumes and result.calibration_summary is not None:
        _volume_sections(result, out, plot, section)
    else:
        section("calibration", "Whole-brain calibration and patient-level results",
                '<p class="missing">Not available: run compare with --volumes '
                "(compare_models(volumes=True)) to map the held-out patients in full.</p>")

    # 6. QC
    section("qc", "Quality control", _qc_html(folders))

    # 7. settings
    settings = {"config": config, "run": run, "versions": record.get("versions", {})}
    body = (f"<pre>{_e(json.dumps(settings, indent=2, default=str))}</pre>"
            '<p class="note">Everything the run did, per model, is in run.json.</p>')
    section("settings", "Settings of the run", body)
    return lead, nav, parts


def _results_body(result, config):
    """The results table with the paper's numbers beside it."""
    paper = {n: PAPER_TABLE.get(n, ("", "", "", "")) for n in (r["model"] for r in
                                                                result.table)}
    kinds = dict.fromkeys(TABLE_COLUMNS[2:8], "percent")
    kinds.update(n_patients="int", n_voxels="int")
    body = _table("table.csv", TABLE_COLUMNS, result.table, kinds,
                  truth_rows=TRUTH_ROWS, labels={"n_patients": "patients",
                                                 "n_voxels": "voxels"},
                  intervals=(("AUC-ROC [95% CI]", "auc_roc", "auc_roc_low", "auc_roc_high"),
                             ("AUC-PR [95% CI]", "auc_pr", "auc_pr_low", "auc_pr_high")),
                  extra=(("paper AUC-ROC", "paper AUC-PR"),
                         lambda r: paper[r["model"]][2:4]))
    body += (f'<p class="note">AUCs in %, point estimate and 95% '
             f"{_e(config.get('bootstrap_unit', 'patient'))}-bootstrap interval "
             f"({_e(config.get('n_resamples', '?'))} resamples, the same for every model), "
             "on the balanced voxel sample (half HT), as the paper reports them. Italic: "
             f"{TRUTH_NOTE}. The paper's numbers (Yu et al., MICCAI 2019, 155 patients) are "
             "for reference only; results on a simulated cohort are not clinical "
             "evidence.</p>")
    note = network_seed_note(result.run)
    if note:
        body += f'<p class="note">{_e(note)}</p>'
    return body


def _volume_sections(result, out, plot, section):
    """The sections of ``volumes=True``: whole-brain calibration, the patient-level answer
    and the held-out risk maps."""
    from ._volumes import CALIBRATION_SUMMARY_COLUMNS, PATIENT_SUMMARY_COLUMNS

    body = _figure_html(lambda: _calibration_figure(result), "reliability diagram",
                        plot)
    kinds = {c: "float" for c in CALIBRATION_SUMMARY_COLUMNS[3:]}
    kinds.update(n_patients="int", n_voxels="int")
    body += _table("calibration_summary.csv", CALIBRATION_SUMMARY_COLUMNS,
                   result.calibration_summary, kinds, labels={
                       "n_patients": "patients", "n_voxels": "brain voxels",
                       "observed_prevalence": "observed HT rate",
                       "mean_predicted": "mean predicted", "brier": "Brier",
                       "brier_skill": "Brier skill",
                       "ece": "ECE",
                       "mean_predicted_before_correction": "mean predicted (before)",
                       "brier_before_correction": "Brier (before)",
                       "ece_before_correction": "ECE (before)"})
    body += ('<p class="note">Every brain voxel of the held-out patients, each mapped by '
             "the model of the fold that held it out. The maps are whole-brain "
             "calibrated: each fold's probabilities are moved from the balanced "
             "training sample to the whole-brain HT prevalence of that fold's training "
             "patients (prior shift, Elkan 2001; Saerens et al. 2002). "
             "'before correction': the same maps at the training sample's prevalence. "
             "ECE: voxel-weighted mean |predicted - observed| over ten equal-width "
             "bins (calibration.csv); almost every voxel is in the first bin, so the "
             "ECE mostly measures the mean risk. Brier skill: 1 - Brier / (p (1 - p)), "
             "the gain over predicting the observed rate p in every voxel (0: none; "
             "it is the number that says whether the map tells voxels apart).</p>")
    section("calibration", "Whole-brain calibration (held-out patients)", body)

    kinds = {"patient_auc": "prob", "patient_auc_low": "prob",
             "patient_auc_high": "prob", "n_patients": "int", "n_bleeding": "int"}
    body = _table("patients_summary.csv", PATIENT_SUMMARY_COLUMNS,
                  result.patients_summary, kinds,
                  labels={"n_patients": "held-out patients",
                          "n_bleeding": "bleeding"},
                  intervals=(("patient AUC [95% CI]", "patient_auc", "patient_auc_low",
                              "patient_auc_high"),))
    body += ('<p class="note">Per held-out patient: the <b>expected HT volume</b> (sum of '
             "the voxel probabilities times the voxel volume) and the <b>probability of "
             "any HT</b> (expected bleeding share of the brain over the share that "
             "bleeds in a bleeding training patient, capped at 1). Patient AUC: "
             "probability of any HT against whether the patient bled, with its "
             "patient-bootstrap 95% interval. No volume interval is given: voxel "
             "outcomes within a patient are not independent.</p>")
    if result.volumes_summary is not None:
        body += ("<p class='note'>Thresholded maps (volumes_summary.csv; risk &gt;= 0.5 "
                 "is predicted HT, risk score = 99th percentile). On whole-brain "
                 "calibrated maps few voxels reach 0.5, so the thresholded volumes and "
                 "Dice are small: read the expected volume above instead.</p>")
        body += _table("volumes_summary.csv", VOLUME_SUMMARY_COLUMNS,
                       result.volumes_summary,
                       {"occurrence_auc": "prob", "dice_mean": "prob",
                        "volume_abs_error_mean_ml": "ml", "n_patients": "int"})
    from ._volumes import PATIENT_COLUMNS

    body += "<details><summary>patients.csv: every held-out patient</summary>" + _table(
        "patients.csv", PATIENT_COLUMNS, result.patients,
        {"probability_any_ht": "prob", "expected_volume_ml": "ml",
         "annotated_volume_ml": "ml", "risk_score": "prob", "fold": "int",
         "ht": "int"}) + "</details>"
    section("patients", "The patient-level answer (held-out patients)", body)

    body = _figure_html(lambda: _gallery_figure(result), "held-out risk overlays",
                        plot)
    body += ('<p class="note">One axial slice per patient (the slice with the most '
             "annotated HT, else the most risk) of held-out patients: whole-brain "
             "calibrated risk over DWI b0, the reader's HT annotation outlined in "
             "cyan. One colour scale for the whole gallery.</p>")
    section("gallery", "Held-out risk maps", body)


def _qc_html(folders):
    import csv

    parts = []
    for folder in folders:
        summary = Path(folder) / "qc_summary.csv"
        if summary.is_file():
            with open(summary, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            columns = list(rows[0]) if rows else []
            parts.append(_table("qc_summary.csv", columns, rows))
            break
        text = Path(folder) / "qc_summary.txt"  # what `sklearn-hemo compare` printed
        if text.is_file():
            parts.append("<pre>" + html.escape(text.read_text(encoding="utf-8")) + "</pre>")
            break
    else:
        parts.append('<p class="missing">No QC summary in this folder (qc_summary.txt, '
                     "written by <code>sklearn-hemo compare</code>).</p>")
    for folder in folders:
        if (Path(folder) / "qc" / "index.html").is_file():
            parts.append('<p><a href="qc/index.html">The QC pages of every patient '
                         "(qc/index.html)</a></p>")
            break
    else:
        parts.append('<p class="note">Per-patient QC pages: <code>sklearn-hemo qc --data '
                     "DIR --out OUT/qc</code> writes them into qc/ of this folder, and this "
                     "report links them.</p>")
    return "".join(parts)


def report_html(result, out_dir, *, plot=True, volumes=True):
    """The text of ``report.html`` for a comparison result.

    Parameters
    ----------
    result : ComparisonResult
        The comparison.
    out_dir : path-like
        Folder the report is written to (its files are read from there).
    plot : bool, default=True
        Draw the figures (matplotlib).
    volumes : bool, default=True
        Show the whole-brain results when the result holds them.

    Returns
    -------
    text : str
        A complete HTML page.
    """
    lead, nav, parts = _sections(result, out_dir, plot, volumes)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>sklearn-hemo comparison report</title>"
            f"<style>{_STYLE}</style></head><body><main>"
            "<h1>sklearn-hemo: comparison report</h1>"
            f'<p class="lead">{lead}</p><nav>{"".join(nav)}</nav>'
            + "".join(parts) + "</main></body></html>\n")


def write_report(result, out_dir, *, plot=True, volumes=True):
    """Write ``report.html`` (and, with ``--volumes``, ``calibration.png``) into
    ``out_dir``; a figure that cannot be drawn is a line in the page, never an error."""
    out = Path(out_dir)
    if plot and volumes and result.calibration_summary is not None:
        try:
            fig = _calibration_figure(result)
            if fig is not None:
                atomic_write_bytes(out / "calibration.png", _png(fig))
        except ModuleNotFoundError as exc:
            if exc.name != "matplotlib" and not str(exc.name).startswith("matplotlib."):
                raise
            warnings.warn("calibration.png not written: matplotlib is not installed.",
                          UserWarning, stacklevel=find_stack_level())
    atomic_write_text(out / "report.html", report_html(result, out, plot=plot,
                                                       volumes=volumes))
