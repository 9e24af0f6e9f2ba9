"""``report.html`` and the whole-brain files of ``compare --volumes``: the tables equal
the CSVs, nothing names the network, hostile ids are escaped, the patient AUC recomputes
from the per-patient file, and a real browser draws the page."""

import base64
import csv
import dataclasses
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sklearn_hemo.datasets import Cohort, make_stroke_cohort
from sklearn_hemo.metrics import bootstrap_auc
from sklearn_hemo.model_selection import compare_models, make_model_zoo

pytestmark = pytest.mark.filterwarnings("ignore:participant .* the PWI series ends:UserWarning")

HOSTILE_ID = 'sub-<img src=x onerror="alert(1)">&amp;'
HOSTILE_MODEL = "<i>forest<i>&"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """compare --volumes on ten patients (five bleed), one with a hostile participant id,
    one model with a hostile name."""
    patients = list(make_stroke_cohort(n_patients=10, shape=(24, 24, 2), ht_prevalence=0.5,
                                       n_frames=40, difficulty="easy", random_state=0))
    patients[0].id = HOSTILE_ID  # bleeds: it is in the gallery
    cohort = Cohort(patients)
    zoo = make_model_zoo(cohort, models=["linear", "random-forest"], protocol="quick",
                         random_state=0)
    out = tmp_path_factory.mktemp("compare")
    result = compare_models(cohort, {"linear": zoo["linear"], HOSTILE_MODEL:
                                     zoo["random-forest"]}, n_outer=3, n_inner=2,
                            n_samples=78, n_resamples=200, out_dir=out, volumes=True,
                            random_state=0)
    return result, out


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


class _Tables(HTMLParser):
    """Every <table data-csv=...>: its rows as {data-column: data-value}."""

    def __init__(self):
        super().__init__()
        self.tables, self.current, self.row, self.images = {}, None, None, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "data-csv" in attrs:
            self.current = self.tables.setdefault(attrs["data-csv"], [])
        elif tag == "tr" and self.current is not None:
            self.row = {}
        elif self.row is not None and "data-column" in attrs:
            self.row[attrs["data-column"]] = attrs["data-value"]
        if tag == "img":
            self.images.append(attrs.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "tr" and self.row is not None:
            if self.row:
                self.current.append(self.row)
            self.row = None
        elif tag == "table":
            self.current = None


def _parse(text):
    parser = _Tables()
    parser.feed(text)
    return parser


def test_the_report_tables_equal_the_csvs(run):
    _, out = run
    parsed = _parse((out / "report.html").read_text(encoding="utf-8"))
    assert set(parsed.tables) >= {"table.csv", "differences.csv", "calibration_summary.csv",
                                  "patients_summary.csv", "patients.csv",
                                  "volumes_summary.csv"}
    for name, rows in parsed.tables.items():
        written = _read_csv(out / name)
        assert len(rows) == len(written), name
        for shown, row in zip(rows, written, strict=True):
            assert set(shown) == set(row), name  # every CSV column is in the report
            assert shown == row, name


def test_the_report_is_self_contained_and_names_no_web_address(run):
    _, out = run
    text = (out / "report.html").read_text(encoding="utf-8")
    # a base64 payload may spell "http" by chance; it is not an address
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", text).lower()
    assert "<script" not in text.lower() and "<link" not in text.lower()
    images = _parse(text).images
    assert len(images) >= 5  # forest, ROC/PR (2), reliability, gallery
    for src in images:
        assert src.startswith("data:image/png;base64,"), src[:40]


def test_a_figure_whose_base64_spells_http_is_still_embedded():
    from sklearn_hemo.model_selection._html_report import _img

    data = base64.b64decode("aHR0cGh0dHBodHRw" + "httpAAAA")  # base64 holds "http"
    html = _img(data, "a figure")
    assert "http" in base64.b64encode(data).decode()
    assert html.endswith(f'src="data:image/png;base64,{base64.b64encode(data).decode()}">')


def test_hostile_ids_and_names_are_escaped(run):
    _, out = run
    text = (out / "report.html").read_text(encoding="utf-8")
    assert HOSTILE_ID not in text and HOSTILE_MODEL not in text
    assert "onerror=&quot;alert(1)&quot;" in text  # shown, as text
    assert "&lt;i&gt;forest&lt;i&gt;&amp;" in text


def test_calibration_files_are_of_held_out_whole_brains(run):
    result, out = run
    lines = (out / "calibration.csv").read_text().splitlines()
    assert lines[0] == "model,bin,mean_predicted,observed_rate,n_voxels"
    bins = _read_csv(out / "calibration.csv")
    summary = {r["model"]: r for r in _read_csv(out / "calibration_summary.csv")}
    for model, s in summary.items():
        rows = [r for r in bins if r["model"] == model and int(r["n_voxels"])]
        n = np.array([int(r["n_voxels"]) for r in rows])
        pred = np.array([float(r["mean_predicted"]) for r in rows])
        obs = np.array([float(r["observed_rate"]) for r in rows])
        assert n.sum() == int(s["n_voxels"])
        assert float(s["ece"]) == pytest.approx(np.sum(n * np.abs(pred - obs)) / n.sum())
        assert float(s["observed_prevalence"]) == pytest.approx(np.sum(n * obs) / n.sum())
        prevalence = float(s["observed_prevalence"])
        assert float(s["brier_skill"]) == pytest.approx(
            1 - float(s["brier"]) / (prevalence * (1 - prevalence)))
        # balanced training: miscalibrated before the prior shift, calibrated after
        assert float(s["ece_before_correction"]) > 0.1
        assert float(s["ece"]) < 0.05
    assert (out / "calibration.png").read_bytes().startswith(b"\x89PNG")
    # every patient once per model: all were held out exactly once
    patients = _read_csv(out / "patients.csv")
    assert len(patients) == 2 * 10
    assert {r["patient_id"] for r in patients} == set(result.folds)


def test_the_patient_auc_recomputes_from_the_per_patient_file(run):
    result, out = run
    patients = _read_csv(out / "patients.csv")
    summary = _read_csv(out / "patients_summary.csv")
    assert [r["model"] for r in summary] == ["linear", HOSTILE_MODEL]
    for s in summary:
        mine = [r for r in patients if r["model"] == s["model"]]
        ht = [int(r["ht"]) for r in mine]
        p = [float(r["probability_any_ht"]) for r in mine]
        assert all(0 <= v <= 1 for v in p)
        assert float(s["patient_auc"]) == pytest.approx(roc_auc_score(ht, p), abs=1e-12)
        assert int(s["n_bleeding"]) == sum(ht)
        again = bootstrap_auc(ht, p, [r["patient_id"] for r in mine], n_resamples=200,
                              random_state=0)
        assert float(s["patient_auc_low"]) == again.auc_roc_low
        assert float(s["patient_auc_high"]) == again.auc_roc_high


def test_the_report_shows_lstm_curves_only_when_written(run, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from sklearn_hemo.model_selection._html_report import report_html

    result, _ = run
    no_volumes = dataclasses.replace(result, calibration_summary=None, out_dir=None)
    text = report_html(no_volumes, tmp_path, plot=False)
    assert "Not available: this run wrote no lstm_curves.png" in text
    assert "run compare with --volumes" in text
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([3, 2, 1])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    (tmp_path / "lstm_curves.png").write_bytes(buffer.getvalue())
    (tmp_path / "qc").mkdir()
    (tmp_path / "qc" / "index.html").write_text("<html></html>")
    text = report_html(no_volumes, tmp_path, plot=False)
    assert 'alt="LSTM learning curves"' in text
    assert "no lstm_curves.png" not in text
    assert 'href="qc/index.html"' in text


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.skipif(_browser() is None,
                    reason="no Chromium/Chrome on PATH to draw report.html headless "
                    "(apt-get install chromium)")
def test_a_browser_draws_the_report(run, tmp_path):
    import matplotlib.image as mpimg

    _, out = run
    shot = tmp_path / "report.png"
    subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={shot}", "--window-size=1400,3000",
                    (out / "report.html").as_uri()], check=True, capture_output=True,
                   timeout=120)
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1400)
    # the page is drawn (tables, figures), not a blank or an error page: a good share of
    # the screen differs from the page's background and from white
    background = np.array([0xF6, 0xF7, 0xF9]) / 255
    plain = (np.abs(pixels - background).max(axis=2) < 0.02) | (pixels.min(axis=2) > 0.98)
    assert (~plain).mean() > 0.03  # a blank or error page is below 0.01
