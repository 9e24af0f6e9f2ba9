"""The patient-grouped nested comparison: compare_models, its files, resume, dask, CLI."""

import csv
import html
import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_hemo.datasets import make_stroke_cohort, save_cohort
from sklearn_hemo.metrics import weighted_auc
from sklearn_hemo.model_selection import _compare as compare_module
from sklearn_hemo.model_selection import (
    compare_models,
    make_model_zoo,
    read_predictions,
    summarize_predictions,
)
from sklearn_hemo.neural import LSTMClassifier
from sklearn_hemo.preprocessing import PatchExtractor

# 8 patients, 5 of them bleeding: 113 HT voxels, enough HT patients for
# 3 outer x 2 inner patient-grouped folds. The shared tiny_cohort has too few HT voxels.
SMALL = {"n_patients": 8, "shape": (32, 32, 2), "ht_prevalence": 0.6, "n_frames": 40,
         "random_state": 0}
RUN = {"n_outer": 3, "n_inner": 2, "n_samples": 200, "n_resamples": 200, "random_state": 0}


@pytest.fixture(scope="module")
def cohort():
    return make_stroke_cohort(**SMALL, difficulty="easy")


def _zoo(cohort, lstm=False):
    """Fast rows: the zoo's least squares and a searched logistic regression; the LSTM
    with patient-grouped early stopping needs ``groups`` routed into the inner search."""
    zoo = make_model_zoo(cohort, models=["linear"], random_state=0)
    zoo["logistic"] = (
        Pipeline([("features", PatchExtractor(cohort, inputs="pwi", n_timepoints=20)),
                  ("scale", StandardScaler()),
                  ("model", LogisticRegression(max_iter=300))]),
        {"model__C": [0.01, 1.0]},
    )
    if lstm:
        import sklearn

        with sklearn.config_context(enable_metadata_routing=True):
            net = LSTMClassifier(inputs="pwi", n_timepoints=20, hidden_size=4, max_epochs=2,
                                 early_stopping=True, validation_fraction=0.3,
                                 random_state=0, torch_num_threads=1)
            net.set_fit_request(groups=True)
        zoo["lstm-es"] = (
            Pipeline([("features", PatchExtractor(cohort, inputs="pwi", n_timepoints=20)),
                      ("scale", StandardScaler()), ("model", net)]),
            {"model__lr": [1e-3, 1e-2]},
        )
    return zoo


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def serial_run(cohort, tmp_path_factory):
    """One end-to-end run, with a spy on every patient-disjointness check."""
    checks = []
    original = compare_module._check_disjoint

    def spy(groups, train, test, where):
        groups = np.asarray(groups)
        checks.append((where, set(groups[train].tolist()), set(groups[test].tolist())))
        return original(groups, train, test, where)

    out = tmp_path_factory.mktemp("compare")
    compare_module._check_disjoint = spy
    try:
        result = compare_models(cohort, _zoo(cohort, lstm=True), out_dir=out, **RUN)
    finally:
        compare_module._check_disjoint = original
    return result, out, checks


def test_end_to_end_files_and_no_patient_in_train_and_test(serial_run, cohort):
    result, out, checks = serial_run
    for name in ("table.csv", "table.md", "predictions.csv", "folds.csv", "fold_scores.csv",
                 "best_params.json", "roc_pr.png", "run.json", "differences.csv"):
        assert (out / name).stat().st_size > 0, name
    # every split, outer and inner, was checked and none shared a patient
    outer = [c for c in checks if c[0].startswith("outer fold")]
    inner = [c for c in checks if c[0].startswith("inner")]
    assert len(outer) >= RUN["n_outer"] and inner
    # the inner search of the searched rows: n_inner splits per (model, outer fold)
    assert len(inner) >= 2 * RUN["n_outer"] * RUN["n_inner"]
    for where, train, test in checks:
        assert not train & test, where
    # a patient has one fold, the same in folds.csv and in every model's predictions
    folds = {row["patient"]: int(row["fold"]) for row in _read_csv(out / "folds.csv")}
    assert sorted(folds.values()) and set(folds.values()) == set(range(RUN["n_outer"]))
    predictions = read_predictions(out / "predictions.csv")
    assert set(predictions) == {"linear", "logistic", "lstm-es", "latent-bound"}
    for pred in predictions.values():
        for patient, fold in zip(pred["patient"], pred["fold"], strict=True):
            assert folds[patient] == fold
    # the table: one row per model, intervals around the point estimates
    table = _read_csv(out / "table.csv")
    assert [r["model"] for r in table] == ["linear", "logistic", "lstm-es", "latent-bound"]
    assert list(table[0]) == ["model", "inputs", "auc_roc", "auc_roc_low", "auc_roc_high",
                              "auc_pr", "auc_pr_low", "auc_pr_high", "n_patients",
                              "n_voxels"]
    for row in table:
        # the bounds are the percentiles of the row's bootstrap replicates
        reps = result.replicates[row["model"]]
        low, high = np.percentile(reps, [2.5, 97.5], axis=0)
        for column, value in (("auc_roc_low", low[0]), ("auc_roc_high", high[0]),
                              ("auc_pr_low", low[1]), ("auc_pr_high", high[1])):
            assert float(row[column]) == pytest.approx(value), (row["model"], column)
        assert int(row["n_patients"]) == len(cohort)
    best = json.loads((out / "best_params.json").read_text())
    assert set(best["logistic"]) == {"0", "1", "2"}
    assert all(p["model__C"] in (0.01, 1.0) for p in best["logistic"].values())
    fold_rows = _read_csv(out / "fold_scores.csv")
    assert len(fold_rows) == 4 * RUN["n_outer"]
    assert all(float(r["fit_time_s"]) > 0 for r in fold_rows
               if r["model"] != "latent-bound")
    markdown = (out / "table.md").read_text()
    assert "| linear | Linear regression | PWI+AIF+DWI |" in markdown
    assert "58.5 ± 7.5" in markdown  # the paper's number alongside


def test_table_recomputes_from_predictions_csv(serial_run):
    result, out, _ = serial_run
    table, _, _ = summarize_predictions(
        read_predictions(out / "predictions.csv"), n_resamples=RUN["n_resamples"],
        random_state=RUN["random_state"])
    written = _read_csv(out / "table.csv")
    for mine, row in zip(table, written, strict=True):
        for column in ("auc_roc", "auc_roc_low", "auc_roc_high", "auc_pr", "auc_pr_low",
                       "auc_pr_high"):
            assert repr(mine[column]) == row[column], (row["model"], column)
        assert str(mine["n_voxels"]) == row["n_voxels"]


def test_latent_bound_of_an_easy_cohort_scores_the_susceptibility(serial_run, cohort):
    # an easy cohort has no observable risk (no oracle row); its latent bound is the
    # voxel's probability given that its patient bleeds, which does not read the outcome
    result, _, _ = serial_run
    assert "oracle" not in result.predictions
    pred = result.predictions["latent-bound"]
    patients = [cohort.index(p) for p in pred["patient"]]
    risk = [cohort[p].truth["susceptibility"][tuple(ijk)]
            for p, ijk in zip(patients, pred["ijk"], strict=True)]
    np.testing.assert_array_equal(pred["score"], risk)
    roc, _ = weighted_auc(pred["y_true"], pred["score"])
    assert result.table[-1]["model"] == "latent-bound" and result.table[-1]["auc_roc"] == roc
    # the same voxels, labels and folds for every model
    for name in ("linear", "logistic"):
        np.testing.assert_array_equal(result.predictions[name]["ijk"], pred["ijk"])
        np.testing.assert_array_equal(result.predictions[name]["fold"], pred["fold"])


def test_resume_after_interruption_gives_the_identical_table(cohort, tmp_path, monkeypatch):
    zoo = _zoo(cohort)
    saved, fits = [], []
    real_save, real_fit = compare_module._save_part, compare_module._fit_part

    def save_then_interrupt(*args):
        real_save(*args)
        saved.append(args[1:3])
        if len(saved) == 2:
            raise KeyboardInterrupt  # Ctrl-C right after the second part was written

    def counting_fit(*args):
        fits.append(args[8])  # the outer fold index
        return real_fit(*args)

    monkeypatch.setattr(compare_module, "_save_part", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        compare_models(cohort, zoo, out_dir=tmp_path, oracle=False, plot=False, **RUN)
    assert not (tmp_path / "table.csv").exists()
    monkeypatch.setattr(compare_module, "_save_part", real_save)
    monkeypatch.setattr(compare_module, "_fit_part", counting_fit)
    resumed = compare_models(cohort, zoo, out_dir=tmp_path, oracle=False, plot=False, **RUN)
    # only the parts not saved before the interruption were fitted again
    assert len(fits) == 2 * RUN["n_outer"] - 2
    table_resumed = (tmp_path / "table.csv").read_text()
    fresh_dir = tmp_path / "fresh"
    fresh = compare_models(cohort, zoo, out_dir=fresh_dir, oracle=False, plot=False, **RUN)
    assert table_resumed == (fresh_dir / "table.csv").read_text()
    assert ((tmp_path / "predictions.csv").read_text()
            == (fresh_dir / "predictions.csv").read_text())
    assert resumed.best_params == fresh.best_params

    # a rerun does no work; a changed model definition recomputes that model only
    fits.clear()
    compare_models(cohort, zoo, out_dir=tmp_path, oracle=False, plot=False, **RUN)
    assert fits == []
    changed = dict(zoo)
    changed["logistic"] = (zoo["logistic"][0], {"model__C": [0.1, 10.0]})
    compare_models(cohort, changed, out_dir=tmp_path, oracle=False, plot=False, **RUN)
    assert len(fits) == RUN["n_outer"]
    # a changed configuration (the sample) gets its own cache folder: nothing is reused
    fits.clear()
    compare_models(cohort, zoo, out_dir=tmp_path, oracle=False, plot=False,
                   **{**RUN, "n_samples": 160})
    assert len(fits) == 2 * RUN["n_outer"]
    assert len(list((tmp_path / "parts").iterdir())) == 2


def test_dask_local_cluster_with_worker_processes_equals_serial(cohort, tmp_path):
    pytest.importorskip("dask.distributed", reason="the distributed extra is not installed")
    zoo = _zoo(cohort)
    serial = compare_models(cohort, zoo, oracle=False, **RUN)
    dask = compare_models(cohort, zoo, oracle=False, backend="dask", n_jobs=2, **RUN)
    assert dask.table == serial.table
    for name in zoo:
        np.testing.assert_array_equal(dask.predictions[name]["score"],
                                      serial.predictions[name]["score"])
    assert dask.best_params == serial.best_params


def test_input_errors(cohort):
    zoo = _zoo(cohort)
    with pytest.raises(ValueError, match="n_outer=9 outer folds need at least 9 patients"):
        compare_models(cohort, zoo, **{**RUN, "n_outer": 9})
    with pytest.raises(TypeError, match="pipeline, param_grid"):
        compare_models(cohort, {"m": zoo["linear"][0]}, **RUN)
    with pytest.raises(ValueError, match="not allowed"):
        compare_models(cohort, {"oracle": zoo["linear"]}, **RUN)
    with pytest.raises(ValueError, match="unknown zoo rows"):
        compare_models(cohort, ["no-such-model"], **RUN)
    with pytest.raises(ValueError, match="scheduler"):
        compare_models(cohort, zoo, scheduler="tcp://localhost:8786", **RUN)


def test_leak_check_refuses_a_shared_patient():
    groups = np.array([0, 0, 1, 1, 2])
    with pytest.raises(AssertionError, match=r"patients \[1\]"):
        compare_module._check_disjoint(groups, np.array([0, 2]), np.array([3, 4]), "here")


def test_verbose_shows_the_time_estimate_on_stderr_and_changes_no_result(cohort, capsys):
    quiet = compare_models(cohort, ["linear"], oracle=False, **RUN)
    assert capsys.readouterr() == ("", "")  # verbose=0 is silent
    shown = compare_models(cohort, ["linear"], verbose=1, oracle=False, **RUN)
    printed = capsys.readouterr()
    assert "Estimated time for 3 (model, fold) tasks: about" in printed.err
    assert "fitted in" not in printed.err and printed.out == ""
    compare_models(cohort, ["linear"], verbose=2, oracle=False, **RUN)
    # verbose=2: one line per finished (model, fold) task
    err = capsys.readouterr().err
    assert all(f"linear fold {k}: fitted in" in err for k in range(RUN["n_outer"]))
    np.testing.assert_array_equal(quiet.predictions["linear"]["score"],
                                  shown.predictions["linear"]["score"])
    assert quiet.table == shown.table


def test_volumes_are_the_out_of_fold_risk_maps_of_the_compared_rows(cohort, tmp_path):
    # compare_models(volumes=True) (formerly the CLI's own code) maps each held-out
    # patient with the row refitted on the other folds' voxels and chosen parameters
    from sklearn.preprocessing import FunctionTransformer

    from sklearn_hemo.metrics import summarize_patient_table
    from sklearn_hemo.risk import cross_val_risk_map_table

    zoo = {"linear": _zoo(cohort)["linear"],
           "refs": (Pipeline([("f", FunctionTransformer(lambda refs: refs * 1.0)),
                              ("m", LogisticRegression())]), {})}
    with pytest.warns(UserWarning, match="volumes: refs skipped: its first step") as record:
        result = compare_models(cohort, zoo, volumes=True, oracle=False, plot=False,
                                out_dir=tmp_path, **RUN)
    assert [w.filename for w in record if "volumes:" in str(w.message)] == [__file__]
    pred = result.predictions["linear"]
    index = {pid: i for i, pid in enumerate(cohort.ids)}
    X = np.column_stack([[index[p] for p in pred["patient"].tolist()], pred["ijk"]])
    expected = cross_val_risk_map_table(zoo["linear"][0], X, pred["y_true"], pred["fold"],
                                        params=result.best_params["linear"])
    assert result.volumes == [{"model": "linear", **row} for row in expected]
    assert result.volumes_summary == [{"model": "linear",
                                       **summarize_patient_table(expected)}]
    rows = _read_csv(tmp_path / "volumes.csv")
    assert [r["patient_id"] for r in rows] == [r["patient_id"] for r in expected]
    assert [float(r["risk_score"]) for r in rows] == [r["risk_score"] for r in expected]
    assert _read_csv(tmp_path / "volumes_summary.csv")[0]["model"] == "linear"


@pytest.mark.parametrize("old", [{"progress": True}, {"estimate_time": True},
                                 {"progress": False}])
def test_progress_and_estimate_time_are_deprecated_for_verbose(cohort, capsys, old):
    with pytest.warns(FutureWarning, match=f"{next(iter(old))}= is deprecated.*verbose=1") \
            as record:
        compare_models(cohort, ["linear"], oracle=False, **RUN, **old)
    assert record[0].filename == __file__  # points at the caller
    estimated = "Estimated time" in capsys.readouterr().err
    assert estimated == any(old.values())  # True still means verbose=1


def test_cli_compare_on_a_cohort_folder(cohort, tmp_path, capsys):
    from sklearn_hemo.cli import main

    data = save_cohort(cohort, tmp_path / "cohort")
    out = tmp_path / "results"
    code = main(["compare", "--data", str(data), "--models", "linear", "--n-outer", "3",
                 "--n-inner", "2", "--n-samples", "200", "--n-resamples", "100",
                 "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "linear" in printed and "latent-bound" in printed and "AUC-ROC" in printed
    assert [r["model"] for r in _read_csv(out / "table.csv")] == ["linear", "latent-bound"]
    # the QC summary the command printed is in the folder, and on the report's page
    summary = (out / "qc_summary.txt").read_text()
    assert summary.startswith(f"QC of {len(cohort)} patient(s)")
    page = (out / "report.html").read_text()
    assert html.escape(summary.splitlines()[0]) in page
    # a rerun resumes: the summary is a file the package wrote, not the user's
    assert main(["compare", "--data", str(data), "--models", "linear", "--n-outer", "3",
                 "--n-inner", "2", "--n-samples", "200", "--n-resamples", "100",
                 "--out", str(out), "--quiet"]) == 0


def test_cli_compare_defaults_simulate_the_default_cohort(tmp_path, monkeypatch):
    from sklearn_hemo import cli, datasets, model_selection

    seen = {}

    def fake_compare(cohort, models, **kwargs):
        seen.update(cohort=cohort, models=models, **kwargs)
        return "table"

    simulated = {}

    def fake_simulation(**kwargs):
        # simulating the real default cohort took two minutes of every CI run; what the
        # command must do is ask for make_stroke_cohort's defaults (sizes, difficulty)
        simulated.update(kwargs)
        return make_stroke_cohort(n_patients=4, shape=(12, 12, 2), random_state=0)

    monkeypatch.setattr(model_selection, "compare_models", fake_compare)
    monkeypatch.setattr(datasets, "make_stroke_cohort", fake_simulation)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compare", "--quiet"]) == 0
    # no size, difficulty or other setting of the simulation but the seed and the workers
    assert set(simulated) <= {"random_state", "verbose", "n_jobs"}
    assert simulated["random_state"] == 0 and simulated["n_jobs"] == -1
    assert len(seen["cohort"]) == 4 and seen["models"] is None
    assert seen["protocol"] == "standard" and seen["out_dir"] == "hemo-results"
    assert seen["n_jobs"] == -1 and seen["backend"] == "loky" and seen["random_state"] == 0
    assert seen["repeats"] == 1 and seen["reference"] is None
    assert seen["verbose"] == 0 and "progress" not in seen and "estimate_time" not in seen


def test_precomputed_features_give_the_same_results(cohort):
    # the stateless extractor runs once on all sampled voxels instead of in every fit
    zoo = _zoo(cohort)
    fast = compare_models(cohort, zoo, oracle=False, **RUN)
    slow = compare_models(cohort, zoo, oracle=False, precompute_features=False, **RUN)
    for name in zoo:
        np.testing.assert_array_equal(fast.predictions[name]["score"],
                                      slow.predictions[name]["score"])
    assert fast.best_params == slow.best_params


def test_ray_backend_without_ray_says_how_to_install(cohort):
    try:
        import ray  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("ray is installed here; this checks the message shown without it")
    with pytest.raises(ImportError, match=r"pip install 'ray\[default\]'"):
        compare_models(cohort, _zoo(cohort), backend="ray", oracle=False, **RUN)


def test_cli_paper_protocol_simulates_once_into_out_and_estimates(tmp_path, monkeypatch):
    from sklearn_hemo import cli, datasets, model_selection

    seen = []

    def fake_compare(cohort, models, **kwargs):
        seen.append((cohort, kwargs))
        return "table"

    # a paper-shaped run in miniature: the cohort size is the only thing shrunk
    monkeypatch.setattr(datasets, "PAPER_COHORT", {"n_patients": 3, "shape": (8, 8, 2)})
    monkeypatch.setattr(model_selection, "compare_models", fake_compare)
    out = tmp_path / "paper"
    for _ in range(2):
        assert cli.main(["compare", "--protocol", "paper", "--out", str(out), "--quiet"]) == 0
    assert (out / "cohort" / "participants.tsv").exists()
    first, second = seen[0][0], seen[1][0]
    assert len(first) == 3 and first.ids == second.ids and second.path == out / "cohort"
    assert seen[0][1]["protocol"] == "paper" and seen[0][1]["verbose"] == 0  # --quiet
    with pytest.raises(SystemExit, match="other settings"):
        cli.main(["compare", "--protocol", "paper", "--out", str(out), "--random-state", "1",
                  "--quiet"])


def test_predictions_csv_round_trips_names_with_commas_and_quotes(tmp_path):
    from sklearn_hemo.model_selection._report import predictions_csv

    predictions = {
        'rf, "deep"': {"patient": np.array(["sub-1", "sub,2"]),
                       "ijk": np.array([[0, 1, 2], [3, 4, 5]]), "fold": np.array([0, 1]),
                       "y_true": np.array([1, 0]), "score": np.array([0.1 + 0.2, 1 / 3])},
    }
    path = tmp_path / "predictions.csv"
    path.write_text(predictions_csv(predictions), encoding="utf-8")
    back = read_predictions(path)
    assert list(back) == ['rf, "deep"']
    got, want = back['rf, "deep"'], predictions['rf, "deep"']
    assert got["patient"].tolist() == ["sub-1", "sub,2"]
    np.testing.assert_array_equal(got["ijk"], want["ijk"])
    np.testing.assert_array_equal(got["fold"], want["fold"])
    np.testing.assert_array_equal(got["y_true"], want["y_true"])
    np.testing.assert_array_equal(got["score"], want["score"])  # exact, not approximate


def test_changed_images_under_the_same_ids_are_not_resumed(cohort, tmp_path, monkeypatch):
    import nibabel as nib

    from sklearn_hemo.datasets import Cohort, Patient

    fits = []
    real_fit = compare_module._fit_part

    def counting_fit(*args):
        fits.append(args[8])
        return real_fit(*args)

    monkeypatch.setattr(compare_module, "_fit_part", counting_fit)
    zoo = {"linear": _zoo(cohort)["linear"]}
    compare_models(cohort, zoo, out_dir=tmp_path, oracle=False, plot=False, **RUN)
    assert len(fits) == RUN["n_outer"]

    # the same participants and labels, but re-processed PWI data in one patient
    first = cohort[0]
    pwi = np.asarray(first.pwi.dataobj).copy()
    pwi[..., -1] = pwi[..., -1] // 2 + 1
    patients = [Patient(first.id, nib.Nifti1Image(pwi, first.affine), first.dwi_b0,
                        first.dwi_b1000, echo_time=first.echo_time,
                        repetition_time=first.repetition_time, ht=first.ht,
                        brain_mask=first.brain_mask, ht_mask=first.ht_mask, aif=first.aif)]
    changed = Cohort(patients + list(cohort)[1:])
    fits.clear()
    compare_models(changed, {"linear": _zoo(changed)["linear"]}, out_dir=tmp_path,
                   oracle=False, plot=False, **RUN)
    assert len(fits) == RUN["n_outer"]  # nothing reused from the old data


def test_only_row_wise_voxel_extractors_are_precomputed(cohort):
    # a batch-dependent first step (its output for a voxel depends on the other voxels
    # transformed with it) also has requires_fit=False; computing its features once over
    # training and test voxels together would leak, so it must run inside each fold
    from sklearn.preprocessing import FunctionTransformer

    from sklearn_hemo.model_selection._compare import _prepare

    X = np.array([[0, 5, 5, 0], [1, 6, 6, 1], [2, 7, 7, 0]])
    batch_centred = Pipeline([
        ("centre", FunctionTransformer(lambda refs: refs - refs.mean(axis=0))),
        ("model", LogisticRegression()),
    ])
    _, inputs, _, _ = _prepare(batch_centred, {}, X, cohort, {})
    assert inputs is X  # the pipeline runs on the references, fold by fold
    patches = Pipeline([("features", PatchExtractor(cohort, inputs="pwi")),
                        ("model", LogisticRegression())])
    _, features, _, _ = _prepare(patches, {}, X, cohort, {})
    assert features.shape == (3, PatchExtractor(cohort, inputs="pwi").fit(X)
                              .get_feature_names_out().size)


def test_cli_help_reads_the_protocols():
    from sklearn_hemo._cli_parsers import build_parser
    from sklearn_hemo.model_selection import PROTOCOLS

    parser = build_parser(dict.fromkeys(
        ["simulate", "import", "qc", "compare", "train", "predict"], None))
    compare = parser._subparsers._group_actions[0].choices["compare"]
    actions = {a.dest: a for a in compare._actions}
    assert set(actions["protocol"].choices) == set(PROTOCOLS)
    for key in ("n_inner", "n_outer", "n_samples"):
        for name, sizes in PROTOCOLS.items():
            assert f"{name} {sizes[key]}" in actions[key].help, (key, actions[key].help)


def test_a_resumed_compare_skips_the_qc_pass(cohort, tmp_path, monkeypatch, capsys):
    from sklearn_hemo import qc
    from sklearn_hemo.cli import main

    data = save_cohort(cohort, tmp_path / "cohort")
    out = tmp_path / "results"
    argv = ["compare", "--data", str(data), "--models", "linear", "--n-outer", "3",
            "--n-inner", "2", "--n-samples", "200", "--n-resamples", "50", "--out",
            str(out), "--quiet"]
    calls = []
    real = qc.patient_qc
    monkeypatch.setattr(qc, "patient_qc", lambda p, *a, **k: calls.append(p.id) or real(
        p, *a, **k))
    assert main(argv) == 0
    assert len(calls) == len(cohort)
    first = capsys.readouterr()
    summary = (out / "qc_summary.txt").read_text()
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    # the rerun resumes: no patient's QC again, the same summary printed and kept
    assert main(argv) == 0
    assert len(calls) == len(cohort)
    second = capsys.readouterr()
    assert (out / "qc_summary.txt").read_text() == summary
    assert ("QC of" in first.err) == ("QC of" in second.err)
    for name in ("table.csv", "predictions.csv", "qc_summary.txt"):
        assert (out / name).read_bytes() == files[name], name
    # other settings of the pass (the venous correction off) run it again
    assert main(argv + ["--no-aif-correction"]) == 0
    assert len(calls) == 2 * len(cohort)
