"""What a reviewer asks of a comparison: equal footing, run.json, paired differences,
stability over replicates."""

import csv
import functools
import json

import numpy as np
import pytest

from sklearn_hemo.datasets import make_stroke_cohort
from sklearn_hemo.model_selection import (
    N_CANDIDATES,
    compare_models,
    paired_differences,
    read_predictions,
    summarize_predictions,
)

# 8 patients, 5 bleeding (as in test_compare): enough HT patients for 3 x 2 folds
SMALL = {"n_patients": 8, "shape": (32, 32, 2), "ht_prevalence": 0.6, "n_frames": 40,
         "difficulty": "easy"}
RUN = {"n_outer": 3, "n_inner": 2, "n_samples": 200, "n_resamples": 200}


@functools.cache
def _cohort(seed):
    return make_stroke_cohort(random_state=seed, **SMALL)


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Every family of the quick protocol (the small LSTM included) on a tiny cohort."""
    out = tmp_path_factory.mktemp("reviewer")
    models = ["lstm-pwi", "linear", "random-forest", "sr-kda", "svm"]
    result = compare_models(_cohort(0), models, protocol="quick", out_dir=out, plot=False,
                            random_state=0, **RUN)
    return result, out


def test_run_json_lists_the_same_number_of_candidates_for_every_tuned_family(quick_run):
    result, out = quick_run
    record = json.loads((out / "run.json").read_text())
    assert record == json.loads(json.dumps(result.run))
    models = record["models"]
    tuned = {name: m["n_candidates"] for name, m in models.items() if m["tuned"]}
    assert set(tuned) == {"lstm-pwi", "random-forest", "sr-kda", "svm"}
    assert set(tuned.values()) == {N_CANDIDATES["quick"]}
    assert models["linear"]["n_candidates"] == 1 and models["linear"]["n_fits"] == 3
    for name in tuned:
        m = models[name]
        # every outer fold: one inner fit per candidate and inner fold, plus the refit
        assert m["n_fits"] == RUN["n_outer"] * (m["n_candidates"] * RUN["n_inner"] + 1)
        assert m["fit_seconds"] > 0 and len(m["grid"]) >= 1
    steps = models["lstm-pwi"]["optimiser_steps"]
    assert set(steps) == {"0", "1", "2"}
    assert all(len(v) == N_CANDIDATES["quick"] * RUN["n_inner"] + 1 for v in steps.values())
    assert all(s > 0 for v in steps.values() for s in v)
    assert models["svm"]["optimiser_steps"] is None
    assert models["lstm-pwi"]["params"]["hidden_size"] == 16
    run = record["run"]
    assert run["sample"]["voxels_asked"] == 200
    assert run["sample"]["voxels_drawn"] == len(result.predictions["linear"]["score"])
    assert run["cohort"] == {"path": None, "n_patients": 8,
                             "n_bleeding_patients": int((_cohort(0).ht == 1).sum())}
    assert run["folds"]["n_outer"] == 3 and len(run["folds"]["inner_seeds"]) == 3
    assert {"python", "scikit-learn", "numpy", "torch", "sklearn-hemo"} <= set(
        record["versions"])
    markdown = (out / "table.md").read_text()
    assert f"Used: {run['sample']['voxels_drawn']} voxels" in markdown
    assert "every tuned row has 2 candidates" in markdown
    # the network row, and only it, is named as one training run per fit
    note = next(line for line in markdown.splitlines() if "one trained network" in line)
    assert note.startswith("lstm-pwi: one trained network per fit")
    assert "--repeats N" in note  # one replicate: the way to measure it
    assert "one trained network per fit" in (out / "report.html").read_text()


def test_network_seed_note_names_the_network_rows_only():
    from sklearn_hemo.model_selection._report import network_seed_note

    models = {"svm": {"optimiser_steps": None}, "lstm-pwi": {"optimiser_steps": {"0": [9]}},
              "lstm-pwi+aif": {"optimiser_steps": {"0": [9]}}}
    note = network_seed_note({"models": models})
    assert note.startswith("lstm-pwi, lstm-pwi+aif: one trained network per fit")
    assert "svm" not in note and "--repeats N" in note
    replicated = network_seed_note({"models": models, "replicates": {"n": 3}})
    assert "the stability table measures it" in replicated and "--repeats" not in replicated
    assert network_seed_note({"models": {"svm": {"optimiser_steps": None}}}) == ""
    assert network_seed_note({}) == ""


def test_table_md_warns_when_fewer_voxels_were_drawn_than_asked(tmp_path):
    with pytest.warns(UserWarning, match="HT voxels are available"):
        result = compare_models(_cohort(0), ["linear"], out_dir=tmp_path, plot=False,
                                random_state=0, **{**RUN, "n_samples": 5000})
    sample = result.run["run"]["sample"]
    assert sample["voxels_drawn"] < sample["voxels_asked"] == 5000
    assert "Warning: 5000 voxels were asked for but only" in (tmp_path / "table.md").read_text()


def test_paired_difference_of_a_model_with_itself_is_exactly_zero(quick_run):
    result, _ = quick_run
    # the reference against itself, and an identical copy under another name
    predictions = dict(result.predictions)
    predictions["svm-copy"] = dict(predictions["svm"])
    table, _, replicates = summarize_predictions(predictions, n_resamples=200)
    for reference, model in (("svm", "svm"), ("svm", "svm-copy")):
        rows = [r for r in paired_differences(table, replicates, reference)
                if r["model"] == model]
        assert len(rows) == 2
        for row in rows:
            assert row["difference"] == row["low"] == row["high"] == 0.0
            assert row["share_above_zero"] == 0.0
    with pytest.raises(ValueError, match="not a compared model"):
        paired_differences(table, replicates, "nope")


def test_differences_recompute_from_predictions_csv(quick_run):
    result, out = quick_run
    written = _read_csv(out / "differences.csv")
    assert list(written[0]) == ["model", "reference", "metric", "difference", "low", "high",
                                "share_above_zero"]
    # the default reference is the full LSTM when compared, else the first row
    assert {r["reference"] for r in written} == {"lstm-pwi"}
    table, _, replicates = summarize_predictions(
        read_predictions(out / "predictions.csv"), n_resamples=RUN["n_resamples"],
        random_state=0)
    again = paired_differences(table, replicates, "lstm-pwi")
    assert len(again) == len(written) == 2 * len(result.table)
    for mine, row in zip(again, written, strict=True):
        assert (mine["model"], mine["metric"]) == (row["model"], row["metric"])
        for column in ("difference", "low", "high", "share_above_zero"):
            assert repr(float(mine[column])) == row[column], (row["model"], column)
    for row in again:
        assert row["low"] <= row["high"]
    markdown = (out / "table.md").read_text()
    assert "## Paired differences against lstm-pwi" in markdown


def test_reference_must_be_a_compared_row():
    with pytest.raises(ValueError, match="reference='svm' is not a compared row"):
        compare_models(_cohort(0), ["linear"], reference="svm", random_state=0, **RUN)


def test_stability_of_two_repeats_matches_two_separate_runs(tmp_path, monkeypatch):
    models = ["linear", "svm"]
    options = dict(protocol="quick", plot=False, **RUN)
    result = compare_models(_cohort, models, repeats=2, random_state=0, out_dir=tmp_path,
                            **options)
    separate = [compare_models(_cohort(seed), models, random_state=seed, **options)
                for seed in (0, 1)]
    written = _read_csv(tmp_path / "stability.csv")
    assert [r["model"] for r in written] == ["linear", "svm", "latent-bound"]
    for row in written:
        name = row["model"]
        roc = [next(r["auc_roc"] for r in s.table if r["model"] == name) for s in separate]
        pr = [next(r["auc_pr"] for r in s.table if r["model"] == name) for s in separate]
        assert float(row["auc_roc_mean"]) == pytest.approx(np.mean(roc), abs=1e-12)
        assert float(row["auc_roc_sd"]) == pytest.approx(np.std(roc, ddof=1), abs=1e-12)
        assert float(row["auc_pr_mean"]) == pytest.approx(np.mean(pr), abs=1e-12)
        assert float(row["auc_pr_sd"]) == pytest.approx(np.std(pr, ddof=1), abs=1e-12)
        assert int(row["n_replicates"]) == 2
    firsts = [max((r for r in s.table if r["model"] != "latent-bound"),
                  key=lambda r: r["auc_roc"])["model"] for s in separate]
    for row in written[:2]:
        assert float(row["share_ranked_first"]) == firsts.count(row["model"]) / 2
    assert written[2]["share_ranked_first"] == "NA"  # the truth is not ranked
    # the main table is the first replicate's; each replicate's files are kept
    assert result.table == separate[0].table
    for seed in (0, 1):
        assert (tmp_path / "replicates" / f"seed-{seed}" / "table.csv").exists()
    assert "## Stability over 2 replicates" in (tmp_path / "table.md").read_text()
    # resumable: a rerun fits nothing and writes the same stability.csv
    from sklearn_hemo.model_selection import _compare as compare_module

    def no_fit(*args, **kwargs):
        raise AssertionError("a finished part was fitted again")

    monkeypatch.setattr(compare_module, "_fit_part", no_fit)
    before = (tmp_path / "stability.csv").read_text()
    compare_models(_cohort, models, repeats=2, random_state=0, out_dir=tmp_path, **options)
    assert (tmp_path / "stability.csv").read_text() == before


def test_cli_repeats_and_reference(tmp_path, capsys):
    from sklearn_hemo.cli import main
    from sklearn_hemo.datasets import save_cohort

    data = save_cohort(_cohort(0), tmp_path / "cohort")
    out = tmp_path / "results"
    assert main(["compare", "--data", str(data), "--models", "linear", "svm", "--protocol",
                 "quick", "--n-outer", "3", "--n-inner", "2", "--n-samples", "200",
                 "--n-resamples", "100", "--repeats", "2", "--reference", "svm",
                 "--n-jobs", "1", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "the 2 replicates share the cohort" in printed and "stability.csv" in printed
    rows = _read_csv(out / "stability.csv")
    assert [r["model"] for r in rows] == ["linear", "svm", "latent-bound"]
    assert all(r["n_replicates"] == "2" for r in rows)
    assert {r["reference"] for r in _read_csv(out / "differences.csv")} == {"svm"}
    record = json.loads((out / "run.json").read_text())
    assert record["replicates"]["seeds"] == [0, 1]
    assert record["replicates"]["cohort_changes"] is False


def test_roi_row_is_a_leakage_proxy_not_the_papers_ktrans():
    from sklearn_hemo.model_selection import DEFAULT_ROWS, ComparisonResult
    from sklearn_hemo.model_selection._report import inputs_label

    assert "roi-leakage-proxy" not in DEFAULT_ROWS
    row = dict(model="roi-leakage-proxy", inputs=inputs_label("roi-leakage-proxy"),
               auc_roc=0.6, auc_roc_low=0.5, auc_roc_high=0.7, auc_pr=0.6, auc_pr_low=0.5,
               auc_pr_high=0.7, n_patients=8, n_voxels=100)
    markdown = ComparisonResult([row], [], {}, {}, {}, {}).to_markdown()
    line = next(x for x in markdown.splitlines() if x.startswith("| roi-leakage-proxy"))
    assert "DSC leakage proxy" in line
    assert "quoted by the paper from another study, Ktrans" in line
