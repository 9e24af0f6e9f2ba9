"""``sklearn-hemo train`` and ``sklearn-hemo predict``, run in-process."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sklearn_hemo.cli import main
from sklearn_hemo.datasets import load_cohort, load_patient, make_stroke_cohort
from sklearn_hemo.persistence import load_model, read_manifest
from sklearn_hemo.risk import predict_risk_map


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    """Six patients on disk, three with HT (36 HT voxels on a 20 x 20 x 2 grid)."""
    folder = tmp_path_factory.mktemp("cohort")
    make_stroke_cohort(n_patients=6, shape=(20, 20, 2), ht_prevalence=0.5, random_state=0,
                       out_dir=folder, difficulty="easy")
    return folder


@pytest.mark.parametrize("row", ["linear", "lstm-pwi"])
def test_train_then_predict(row, cohort_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    lstm = row.startswith("lstm")
    # -v: the network prints its per-epoch table while training (not kept in the bundle)
    params = ["--params", '{"model__max_epochs": 2}', "-v"] if lstm else []
    assert main(["train", "--data", str(cohort_dir), "--model", row, "--out", str(model_dir),
                 "--n-samples", "72", "--random-state", "0", *params]) == 0
    manifest = read_manifest(model_dir)
    assert manifest["metadata"]["model"] == row
    assert manifest["metadata"]["n_samples"] == 72
    captured = capsys.readouterr()
    printed = captured.out
    # the result on stdout, the progress line (library: progress_line) on stderr
    assert "saved" in printed and "training" in captured.err
    assert ("train_loss" in printed) == lstm
    if lstm:
        wrapper = load_model(model_dir).steps[-1][1]  # whole-brain calibration
        assert wrapper.estimator.verbose == 0 and wrapper.estimator_.verbose == 0

    patient_dir = cohort_dir / "sub-003"
    risk_file, png = tmp_path / "out" / "risk.nii.gz", tmp_path / "out" / "overlay.png"
    assert main(["predict", "--model", str(model_dir), "--patient", str(patient_dir),
                 "--out", str(risk_file), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "predicted HT volume" in out and "Dice" in out  # sub-003 has an ht_mask
    # whole-brain calibrated by default: the patient-level answer, from the bundle's
    # bleeding fraction and the map's probabilities
    from sklearn_hemo.calibration import patient_answer

    metadata = read_manifest(model_dir)["metadata"]
    assert metadata["calibration"] == "whole-brain"
    assert 0 < metadata["whole_brain_prevalence"] < metadata["bleeding_fraction"] < 1
    answer = patient_answer(nib.load(risk_file), load_patient(patient_dir).get_brain_mask(),
                            bleeding_fraction=metadata["bleeding_fraction"])
    assert (f"probability of any HT {answer['probability_any_ht']:.3f}; expected HT volume "
            f"{answer['expected_volume_ml']:.2f} mL") in out

    patient = load_patient(patient_dir)
    risk = nib.load(risk_file)
    assert risk.shape == patient.shape
    np.testing.assert_allclose(risk.affine, patient.affine)
    data = np.asarray(risk.dataobj)
    assert np.all(data[~patient.get_brain_mask()] == 0)
    expected = predict_risk_map(load_model(model_dir), patient)
    np.testing.assert_array_equal(data, np.asarray(expected.dataobj))
    assert png.read_bytes().startswith(b"\x89PNG")
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["overlay.png",
                                                                    "risk.nii.gz"]


def test_train_calibration_sample_keeps_the_balanced_probabilities(cohort_dir, tmp_path,
                                                                   capsys):
    from sklearn_hemo.calibration import shift_prior, whole_brain_prevalence

    models = {}
    for calibration in ("sample", "whole-brain"):
        models[calibration] = tmp_path / calibration
        assert main(["train", "--data", str(cohort_dir), "--model", "linear", "--out",
                     str(models[calibration]), "--n-samples", "72",
                     "--calibration", calibration]) == 0
    patient = load_patient(cohort_dir / "sub-003")
    brain = patient.get_brain_mask()
    sample = np.asarray(predict_risk_map(load_model(models["sample"]), patient).dataobj)
    whole = np.asarray(predict_risk_map(load_model(models["whole-brain"]), patient).dataobj)
    prevalence = whole_brain_prevalence(load_cohort(cohort_dir))
    np.testing.assert_allclose(whole[brain], shift_prior(sample[brain].astype(float), 0.5,
                                                         prevalence), rtol=1e-5, atol=1e-7)
    capsys.readouterr()
    risk = tmp_path / "risk.nii.gz"
    assert main(["predict", "--model", str(models["sample"]), "--patient",
                 str(cohort_dir / "sub-003"), "--out", str(risk)]) == 0
    assert "no patient-level answer" in capsys.readouterr().out
    # --prevalence moves a sample-calibrated bundle's map at drawing time
    assert main(["predict", "--model", str(models["sample"]), "--patient",
                 str(cohort_dir / "sub-003"), "--out", str(risk), "--overwrite",
                 "--prevalence", str(prevalence)]) == 0
    import re

    assert re.search(r"probability of any HT [01]\.\d{3}; expected HT volume",
                     capsys.readouterr().out)
    np.testing.assert_allclose(np.asarray(nib.load(risk).dataobj)[brain], whole[brain],
                               rtol=1e-5, atol=1e-7)


def test_train_uses_the_most_frequent_best_params(cohort_dir, tmp_path):
    best = tmp_path / "best_params.json"
    best.write_text(json.dumps({"sr-kda": {"0": {"model__alpha": 1.0},
                                           "1": {"model__alpha": 0.01},
                                           "2": {"model__alpha": 1.0}}}))
    model_dir = tmp_path / "model"
    assert main(["train", "--data", str(cohort_dir), "--model", "sr-kda", "--out",
                 str(model_dir), "--n-samples", "72", "--params-from", str(best)]) == 0
    metadata = read_manifest(model_dir)["metadata"]
    assert metadata["params"] == {"model__alpha": 1.0}
    # whole-brain calibration (default) > Platt scaling > the SR-KDA model
    assert load_model(model_dir).named_steps["model"].estimator.estimator.alpha == 1.0


def test_train_defaults_to_the_first_grid_point(cohort_dir, tmp_path):
    model_dir = tmp_path / "model"
    assert main(["train", "--data", str(cohort_dir), "--model", "sr-kda", "--out",
                 str(model_dir), "--n-samples", "72"]) == 0
    metadata = read_manifest(model_dir)["metadata"]
    assert metadata["params_source"] == "first grid point"
    assert metadata["params"] == {"model__alpha": 0.01}


def test_command_line_errors(cohort_dir, tmp_path):
    with pytest.raises(SystemExit, match="unknown zoo rows"):
        main(["train", "--data", str(cohort_dir), "--model", "nope", "--out",
              str(tmp_path / "m")])
    with pytest.raises(SystemExit, match="not valid JSON"):
        main(["train", "--data", str(cohort_dir), "--model", "linear", "--out",
              str(tmp_path / "m"), "--params", "{alpha"])
    with pytest.raises(SystemExit, match="not a model bundle"):
        main(["predict", "--model", str(tmp_path), "--patient", str(cohort_dir / "sub-001"),
              "--out", str(tmp_path / "r.nii.gz")])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["predict", "--model", str(tmp_path), "--patient", str(tmp_path / "sub-404"),
              "--out", str(tmp_path / "r.nii.gz")])


def test_compare_reports_volumes(cohort_dir, tmp_path, capsys):
    out = tmp_path / "results"
    # a single-candidate row with predict_proba (the ROI proxy): no inner search, which 6
    # patients could not support (every LSTM row is searched now)
    assert main(["compare", "--data", str(cohort_dir), "--models", "roi-leakage-proxy",
                 "--n-outer", "2",
                 "--n-inner", "2", "--n-samples", "72", "--n-resamples", "20", "--quiet",
                 "--out", str(out), "--volumes"]) == 0
    printed = capsys.readouterr().out
    assert "occurrence AUC" in printed
    lines = (out / "volumes.csv").read_text().splitlines()
    assert lines[0].startswith("model,fold,patient_id,ht,risk_score,predicted_volume_ml")
    assert len(lines) == 1 + 6  # every patient mapped once, out of fold
    summary = (out / "volumes_summary.csv").read_text().splitlines()
    assert summary[0] == "model,n_patients,occurrence_auc,dice_mean,volume_abs_error_mean_ml"
    assert summary[1].startswith("roi-leakage-proxy,6,")
    # values: each annotated volume is the patient's HT voxel count, each error the
    # difference of the volumes, and the summary (file and printed line) follows from rows
    rows = list(csv.DictReader(lines))
    cohort = load_cohort(cohort_dir)
    for row in rows:
        patient = cohort[cohort.index(row["patient_id"])]
        voxel_ml = float(np.prod(patient.pwi.header.get_zooms()[:3])) / 1000
        annotated = np.count_nonzero(np.asarray(patient.ht_mask.dataobj)) * voxel_ml
        assert float(row["annotated_volume_ml"]) == pytest.approx(annotated)
        assert float(row["volume_error_ml"]) == pytest.approx(
            float(row["predicted_volume_ml"]) - annotated)
        assert int(row["ht"]) == patient.ht
    bleeding = [r for r in rows if float(r["annotated_volume_ml"]) > 0]
    expected = {
        "occurrence_auc": roc_auc_score([int(r["ht"]) for r in rows],
                                        [float(r["risk_score"]) for r in rows]),
        "dice_mean": np.mean([float(r["dice"]) for r in bleeding]),
        "volume_abs_error_mean_ml": np.mean([abs(float(r["volume_error_ml"])) for r in rows]),
    }
    written = next(csv.DictReader(summary))
    for key, value in expected.items():
        assert float(written[key]) == pytest.approx(value), key
    # the summary line
    line = [x for x in printed.splitlines() if x.startswith("roi-leakage-proxy ")][-2]
    assert line.split()[1:] == [f"{expected['occurrence_auc']:.3f}",
                                f"{expected['dice_mean']:.3f}",
                                f"{expected['volume_abs_error_mean_ml']:.2f}"]
    # then the whole-brain calibration and the patient AUC, as in the files
    calibration = next(csv.DictReader((out / "calibration_summary.csv").open()))
    answer = next(csv.DictReader((out / "patients_summary.csv").open()))
    line = [x for x in printed.splitlines() if x.startswith("roi-leakage-proxy ")][-1]
    assert line.split()[1:3] == [f"{float(calibration['ece']):.4f}",
                                 f"({float(calibration['ece_before_correction']):.4f})"]
    assert line.split()[3] == f"{float(answer['patient_auc']):.3f}"
    assert (out / "report.html").is_file() and (out / "calibration.png").is_file()
    assert f"The results on one page: {out}/report.html" in printed
    assert "one trained network" not in printed  # no network row in this run


def test_command_line_bad_input_exits_with_a_message(cohort_dir, tmp_path):
    # bad input ends in a one-line SystemExit message, never a traceback or a silent default
    with pytest.raises(SystemExit, match="must end with .nii.gz"):
        main(["predict", "--model", str(tmp_path), "--patient", str(cohort_dir / "sub-001"),
              "--out", str(tmp_path / "risk")])
    with pytest.raises(SystemExit, match="n_samples must be"):
        main(["train", "--data", str(cohort_dir), "--model", "linear", "--out",
              str(tmp_path / "m"), "--n-samples", "0"])
    best = tmp_path / "best_params.json"
    best.write_text(json.dumps({"linear": [{"model__alpha": 1.0}]}))
    with pytest.raises(SystemExit, match="has no parameters for 'linear'"):
        main(["train", "--data", str(cohort_dir), "--model", "linear", "--out",
              str(tmp_path / "m"), "--params-from", str(best)])
    no_ht = tmp_path / "no-ht"
    make_stroke_cohort(n_patients=2, shape=(8, 8, 1), ht_prevalence=0.0, random_state=0,
                       out_dir=no_ht, difficulty="easy")
    with pytest.raises(SystemExit, match="sklearn-hemo train: .*no HT voxel"):
        main(["train", "--data", str(no_ht), "--model", "linear", "--out",
              str(tmp_path / "m")])
    assert not (tmp_path / "m").exists()
