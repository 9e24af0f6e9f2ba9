"""Issue 30: guards that cannot be lifted by accident, a resume that notices, a report that
cannot be turned against its reader.

Each test reproduces one case of the third adversarial pass on a tiny cohort, from
scratch, and fails on the code before the fix.
"""

import json
import re
import shutil
import urllib.parse
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import sklearn_hemo
from sklearn_hemo import _safety
from sklearn_hemo._safety import OWNER_FILE, OutputError
from sklearn_hemo.cli import main
from sklearn_hemo.datasets import (
    Cohort,
    CohortError,
    Patient,
    import_cohort,
    load_cohort,
    make_stroke_cohort,
    save_cohort,
)
from sklearn_hemo.exceptions import BundleError
from sklearn_hemo.model_selection import compare_models
from sklearn_hemo.persistence import load_model, save_model

# 2 of 4 patients bleed (enough for 2 outer folds)
TINY = {"n_patients": 4, "shape": (16, 16, 2), "random_state": 1, "ht_prevalence": 0.5,
        "difficulty": "easy"}
pytestmark = pytest.mark.filterwarnings(
    "ignore:participant .* the PWI series ends:UserWarning")
FAST = {"protocol": "quick", "n_outer": 2, "n_inner": 2, "n_samples": 48,
        "n_resamples": 20, "plot": False}


@pytest.fixture(scope="module")
def tiny():
    return make_stroke_cohort(**TINY)


@pytest.fixture
def cohort_dir(tiny, tmp_path):
    return save_cohort(tiny, tmp_path / "cohort")


def _files(folder):
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _renamed(patient, pid, brain_mask=True):
    return Patient(pid, patient.pwi, patient.dwi_b0, patient.dwi_b1000,
                   echo_time=patient.echo_time, repetition_time=patient.repetition_time,
                   ht=patient.ht, brain_mask=patient.brain_mask if brain_mask else None,
                   ht_mask=patient.ht_mask)


def _fitted():
    return LogisticRegression().fit([[0.0], [1.0]], [0, 1])


# ------------------------------------- 1. train --overwrite deletes a foreign folder
def _webapp(tmp_path):
    app = tmp_path / "webapp"
    (app / "src").mkdir(parents=True)
    (app / "src" / "app.js").write_text("console.log('mine');\n")
    (app / "README.md").write_text("my web app\n")
    (app / "manifest.json").write_text('{"name": "my web app"}\n')
    return app


def test_save_model_overwrite_never_deletes_a_folder_that_is_not_its_bundle(tmp_path):
    app = _webapp(tmp_path)
    before = _files(app)
    with pytest.raises(FileExistsError, match="not a model bundle"):
        save_model(_fitted(), app, overwrite=True)
    assert _files(app) == before
    # a copied manifest of a real bundle does not make the folder a bundle either
    bundle = save_model(_fitted(), tmp_path / "bundle")
    shutil.copy(bundle / "manifest.json", app / "manifest.json")
    before = _files(app)
    with pytest.raises(FileExistsError, match="README.md, src/app.js"):
        save_model(_fitted(), app, overwrite=True)
    assert _files(app) == before
    # a bundle with a file added (or edited) after saving is not deleted
    (bundle / "notes.txt").write_text("my notes on this model\n")
    with pytest.raises(FileExistsError, match="notes.txt"):
        save_model(_fitted(), bundle, overwrite=True)
    assert (bundle / "notes.txt").read_text() == "my notes on this model\n"
    # an intact bundle save_model wrote is replaced
    (bundle / "notes.txt").unlink()
    assert save_model(_fitted(), bundle, overwrite=True) == bundle
    assert load_model(bundle).predict([[0.9]]).tolist() == [1]


def test_train_overwrite_never_deletes_a_folder_that_is_not_its_bundle(cohort_dir,
                                                                       tmp_path):
    app = _webapp(tmp_path)
    before = _files(app)
    with pytest.raises(SystemExit, match="not a model bundle"):
        main(["train", "--data", str(cohort_dir), "--model", "random-forest",
              "--n-samples", "48", "--out", str(app), "--overwrite", "--quiet"])
    assert _files(app) == before


# ---------------------------------------- 2. the resume key covers every input read
def _parts(out):
    """{part file: (inode, mtime)}: a recomputed part is a new file."""
    return {str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(Path(out, "parts").rglob("*.npz"))}


def _edit_sidecars(key, value):
    def change(cohort_dir):
        for sidecar in sorted(cohort_dir.glob("sub-*/pwi.json")):
            meta = json.loads(sidecar.read_text())
            meta[key] = value(meta) if callable(value) else value
            sidecar.write_text(json.dumps(meta))
    return change


@pytest.mark.parametrize("change", [
    _edit_sidecars("NonSteadyStateFrames", 2),  # the case of the issue
    _edit_sidecars("SliceTiming", [0.0, 0.9]),
    _edit_sidecars("MagneticFieldStrength", 1.5),  # any key, known today or not
], ids=["non-steady frames", "slice timing", "any other key"])
def test_a_resumed_compare_recomputes_after_pwi_json_changed(cohort_dir, tmp_path, change):
    out = tmp_path / "out"
    compare_models(load_cohort(cohort_dir), ["linear"], out_dir=out, **FAST)
    first = _parts(out)
    compare_models(load_cohort(cohort_dir), ["linear"], out_dir=out, **FAST)
    assert _parts(out) == first  # nothing changed: every part reused
    change(cohort_dir)
    compare_models(load_cohort(cohort_dir), ["linear"], out_dir=out, **FAST)
    recomputed = {k: v for k, v in _parts(out).items() if first.get(k) != v}
    assert len(recomputed) == len(first)  # every part of the new inputs is new


def test_a_resumed_compare_recomputes_for_another_protocol_grid_or_version(
        cohort_dir, tmp_path, monkeypatch):
    from sklearn_hemo.model_selection import make_model_zoo

    cohort = load_cohort(cohort_dir)
    out = tmp_path / "out"

    def zoo(grid):
        pipeline, _ = make_model_zoo(cohort, "quick", models=["linear"])["linear"]
        return {"linear": (pipeline, grid)}

    def new_parts(**kwargs):
        before = _parts(out)
        compare_models(cohort, out_dir=out, **{**FAST, **kwargs})
        return {k for k, v in _parts(out).items() if before.get(k) != v}

    assert len(new_parts(models=zoo({}))) == 2
    assert new_parts(models=zoo({})) == set()  # the same run: resumed
    grid = {"model__fit_intercept": [False]}
    assert len(new_parts(models=zoo(grid))) == 2  # another grid
    assert new_parts(models=zoo(grid)) == set()
    assert len(new_parts(models=["linear"])) == 2
    assert len(new_parts(models=["linear"], protocol="standard")) == 2  # another protocol
    monkeypatch.setattr(sklearn_hemo, "__version__", sklearn_hemo.__version__ + "+other")
    assert len(new_parts(models=["linear"])) == 2  # another version of the package


# ---------------------------------------------- 3. report links and participant ids
def test_qc_report_links_are_quoted_relative_paths(tiny, tmp_path):
    from sklearn_hemo.qc import write_qc_report

    ids = ["javascript:alert(document.domain);x", "a#b?c%d&e"]
    cohort = Cohort([_renamed(p, pid) for p, pid in zip(tiny, ids, strict=False)])
    out = tmp_path / "qc"
    write_qc_report(cohort, out, maps=False)
    page = (out / "index.html").read_text()
    links = re.findall(r'(?:href|src)="([^"]*)"', page)
    assert len(links) == 6
    for link in links:
        assert link.startswith(("./", "#")), link
        if link.startswith("./"):  # each link opens the picture it names
            assert (out / urllib.parse.unquote(link[2:].replace("&amp;", "&"))).is_file()
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{i}_qc.png" for i in ids)


@pytest.mark.parametrize("pid, problem", [
    ("sub-0\n1", "control character"), ("sub-01\tx", "control character"),
    ("sub-\x1b[31m", "control character"), (".hidden", "starts with a dot"),
    ("a\\b", "path separator"), (" sub-01", "white space"),
])
def test_bad_participant_ids_are_refused_before_anything_is_written(tiny, tmp_path, pid,
                                                                     problem):
    cohort = Cohort([tiny[0], _renamed(tiny[1], pid)])
    with pytest.raises(CohortError, match=re.escape(repr(pid)) + ".*" + problem):
        save_cohort(cohort, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_participant_ids_are_refused_at_load(cohort_dir):
    table = cohort_dir / "participants.tsv"
    shutil.move(cohort_dir / "sub-002", cohort_dir / "sub-\x1b2")
    table.write_text(table.read_text().replace("sub-002", "sub-\x1b2"))
    with pytest.raises(CohortError, match=r"participant id 'sub-\\x1b2'.*control character"):
        load_cohort(cohort_dir)


# ------------------------------------------------------------ tiny BIDS trees (import)
def _bids(root, patient, *, pwi_name="sub-01_dsc", sub="sub-01", bvals=(0, 1000),
          ht_mask=None, tr=None, extra_echo=None):
    """One patient as dcm2niix would write it, every image on the PWI grid."""
    perf, dwi, anat = root / sub / "perf", root / sub / "dwi", root / sub / "anat"
    for folder in (perf, dwi, anat):
        folder.mkdir(parents=True, exist_ok=True)
    nib.save(patient.pwi, perf / f"{pwi_name}.nii.gz")
    meta = {"EchoTime": patient.echo_time,
            "RepetitionTime": patient.repetition_time if tr is None else tr}
    (perf / f"{pwi_name}.json").write_text(json.dumps(meta))
    volumes = np.stack([np.asarray(patient.dwi_b0.dataobj, dtype=np.float32),
                        np.asarray(patient.dwi_b1000.dataobj, dtype=np.float32)], axis=-1)
    nib.save(nib.Nifti1Image(volumes, patient.affine), dwi / f"{sub}_dwi.nii.gz")
    (dwi / f"{sub}_dwi.bval").write_text(" ".join(map(str, bvals)) + "\n")
    if ht_mask is not None:
        nib.save(nib.Nifti1Image(ht_mask, patient.affine),
                 anat / f"{sub}_label-HT_mask.nii.gz")
    return perf


def test_import_refuses_a_participant_id_with_a_control_character(tiny, tmp_path):
    src = tmp_path / "src"
    _bids(src, tiny[0], sub="sub-01\tx", pwi_name="sub-01\tx_dsc")
    with pytest.raises(CohortError, match=r"'sub-01\\tx'.*control character"):
        import_cohort(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # participants.tsv included


# --------------------------- 4. save_cohort replaced a user's file (no participants.tsv)
def test_save_cohort_never_replaces_a_users_file(tiny, tmp_path):
    folder = tmp_path / "mine"
    (folder / "sub-001").mkdir(parents=True)
    (folder / "sub-001" / "pwi.nii.gz").write_bytes(b"the user's scan")
    before = _files(folder)
    with pytest.raises(FileExistsError, match="did not write.*sub-001/pwi.nii.gz"):
        save_cohort(tiny, folder)
    assert _files(folder) == before
    # with overwrite, same-named files are replaced and nothing else is touched
    (folder / "notes.txt").write_text("mine")
    save_cohort(tiny, folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine"
    assert load_cohort(folder).ids == tiny.ids


def test_save_cohort_never_deletes_a_users_file_even_with_overwrite(tiny, tmp_path):
    folder = tmp_path / "mine"
    (folder / "sub-001").mkdir(parents=True)
    mask = folder / "sub-001" / "brain_mask.nii.gz"
    mask.write_bytes(b"the user's mask")
    # a patient without a brain mask: a stale one would be read back with it
    cohort = Cohort([_renamed(tiny[0], "sub-001", brain_mask=False)])
    with pytest.raises(FileExistsError, match="brain_mask.nii.gz was not written by"):
        save_cohort(cohort, folder, overwrite=True)
    assert mask.read_bytes() == b"the user's mask"


def test_save_cohort_reruns_into_its_own_folder_and_records_what_it_wrote(tiny, tmp_path):
    folder = save_cohort(tiny, tmp_path / "cohort")
    assert _safety.foreign_files(folder) == []
    owner = json.loads((folder / OWNER_FILE).read_text())
    assert "sub-001/pwi.nii.gz" in owner["files"] and "participants.tsv" in owner["files"]
    save_cohort(tiny, folder, overwrite=True)  # its own files: replaced without question
    (folder / "sub-002" / "pwi.json").write_text('{"EchoTime": 0.03}')  # edited: the user's
    assert _safety.foreign_files(folder) == ["sub-002/pwi.json"]


def test_an_interrupted_save_cohort_can_be_rerun_into_its_folder(tiny, tmp_path,
                                                                 monkeypatch):
    from sklearn_hemo.datasets import _layout

    write = _layout.atomic_write_text

    def interrupted(path, text, *args, **kwargs):
        if Path(path).parent.name == "sub-002" and Path(path).name == "pwi.json":
            raise KeyboardInterrupt  # sub-002's images are written, its sidecar is not
        return write(path, text, *args, **kwargs)

    monkeypatch.setattr(_layout, "atomic_write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_cohort(tiny, tmp_path / "cohort")
    monkeypatch.setattr(_layout, "atomic_write_text", write)
    assert _safety.foreign_files(tmp_path / "cohort") == []  # all of it recorded as ours
    save_cohort(tiny, tmp_path / "cohort")  # no overwrite needed: nothing there is yours
    assert load_cohort(tmp_path / "cohort").ids == tiny.ids


# ------------------------------- 5. compare_models replaced a user's table / cohort folder
def test_compare_models_refuses_a_users_files_and_the_cohort_folder(cohort_dir, tmp_path):
    cohort = load_cohort(cohort_dir)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "table.csv").write_text("the user's table\n")
    (out / "run.json").write_text('{"mine": true}\n')
    before = _files(out)
    with pytest.raises(FileExistsError, match="run.json, table.csv"):
        compare_models(cohort, ["linear"], out_dir=out, **FAST)
    assert _files(out) == before
    with pytest.raises(OutputError, match="inside the input"):
        compare_models(cohort, ["linear"], out_dir=cohort_dir / "results", **FAST)
    assert not (cohort_dir / "results").exists()
    (out / "notes.txt").write_text("mine")
    compare_models(cohort, ["linear"], out_dir=out, overwrite=True, **FAST)
    assert (out / "notes.txt").read_text() == "mine"  # only same-named files replaced
    assert (out / "table.csv").read_text() != "the user's table\n"
    assert _safety.foreign_files(out) == ["notes.txt"]  # what it wrote is recorded as its own


# ------------------------------ the same guard in write_qc_report and import_cohort
def test_write_qc_report_refuses_a_users_files_and_keeps_them_with_overwrite(tiny,
                                                                             tmp_path):
    from sklearn_hemo.qc import write_qc_report

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="did not write.*notes.txt"):
        write_qc_report(Cohort(list(tiny)[:1]), out, maps=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    write_qc_report(Cohort(list(tiny)[:1]), out, maps=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert _safety.foreign_files(out) == ["notes.txt"]


def test_import_cohort_refuses_a_folder_of_the_users_files_before_reading(tiny, tmp_path):
    src = tmp_path / "src"
    _bids(src, tiny[0])
    out = tmp_path / "mine"
    (out / "sub-01").mkdir(parents=True)
    (out / "sub-01" / "pwi.json").write_text('{"mine": true}')
    with pytest.raises(FileExistsError, match="did not write.*sub-01/pwi.json"):
        import_cohort(src, out)
    assert (out / "sub-01" / "pwi.json").read_text() == '{"mine": true}'
    assert sorted(p.name for p in out.rglob("*")) == ["pwi.json", "sub-01"]


# --------------------------------- 6. a copied (or edited) owner file lifts no guard
def test_a_copied_owner_file_does_not_lift_the_guard(cohort_dir, tmp_path):
    ours = tmp_path / "ours"
    argv = ["compare", "--data", str(cohort_dir), "--models", "linear", "--protocol",
            "quick", "--n-samples", "48", "--n-outer", "2", "--n-inner", "2", "--quiet",
            "--n-jobs", "1", "--dry-run"]
    assert main([*argv, "--out", str(ours)]) == 0
    assert (ours / "plan.json").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "plan.json").write_text("the user's plan\n")
    shutil.copy(ours / OWNER_FILE, mine / OWNER_FILE)
    with pytest.raises(SystemExit, match="did not write.*plan.json"):
        main([*argv, "--out", str(mine)])
    assert (mine / "plan.json").read_text() == "the user's plan\n"
    # edited to name the user's folder: the hash of plan.json still does not match
    record = json.loads((ours / OWNER_FILE).read_text())
    record["folder"] = str(mine.resolve())
    (mine / OWNER_FILE).write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="did not write.*plan.json"):
        main([*argv, "--out", str(mine)])
    assert (mine / "plan.json").read_text() == "the user's plan\n"
    # the library guard is the same
    assert _safety.foreign_files(ours) == []
    with pytest.raises(FileExistsError, match="plan.json"):
        _safety.claim_folder(mine, "compare")
    # a file of the package's own folder edited by the user becomes the user's
    (ours / "plan.json").write_text("edited by hand\n")
    with pytest.raises(SystemExit, match="did not write.*plan.json"):
        main([*argv, "--out", str(ours)])
    assert (ours / "plan.json").read_text() == "edited by hand\n"


# ---------------------------------- 7. two "echoes" with different repetition times
def test_import_refuses_echoes_with_different_repetition_times(tiny, tmp_path):
    src = tmp_path / "src"
    perf = _bids(src, tiny[0], pwi_name="sub-01_echo-1_dsc", tr=1.954)
    _bids(src, tiny[0], pwi_name="sub-01_echo-2_dsc", tr=3.0)
    meta = json.loads((perf / "sub-01_echo-2_dsc.json").read_text())
    (perf / "sub-01_echo-2_dsc.json").write_text(json.dumps({**meta, "EchoTime": 0.045}))
    with pytest.raises(CohortError, match="different RepetitionTime.*1.954.*3.0"):
        import_cohort(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------- size checks from headers, before allocation
def test_a_forged_header_is_refused_by_import_before_any_allocation(tiny, tmp_path,
                                                                    monkeypatch):
    from sklearn_hemo.datasets import _grids

    src = tmp_path / "src"
    perf = _bids(src, tiny[0])
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 1000, 60))
    header.set_data_dtype(np.int16)
    with open(perf / "sub-01_dsc.nii", "wb") as fh:  # a 352-byte header, no voxels
        header.write_to(fh)
    (perf / "sub-01_dsc.nii.gz").unlink()

    def refuse(*args, **kwargs):
        raise AssertionError("a grid was allocated before the size check")

    monkeypatch.setattr(_grids, "_voxel_centres", refuse)
    with pytest.raises(CohortError, match=r"sub-01_dsc.nii: declares \(2000, 2000, 1000, 60"):
        import_cohort(src, tmp_path / "out")


# --------------------------------------------------------------------- unclear cases
def test_deeply_nested_or_huge_numbers_in_sidecars_name_the_file(tiny, cohort_dir,
                                                                 tmp_path):
    src = tmp_path / "src"
    perf = _bids(src, tiny[0])
    (perf / "sub-01_dsc.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CohortError, match="sub-01_dsc.json is nested too deeply"):
        import_cohort(src, tmp_path / "out")
    (perf / "sub-01_dsc.json").write_text(
        '{"EchoTime": 0.03, "RepetitionTime": ' + "9" * 400 + "}")
    with pytest.raises(CohortError, match="sub-01_dsc.json has no numeric RepetitionTime"):
        import_cohort(src, tmp_path / "out")
    sidecar = cohort_dir / "sub-002" / "pwi.json"
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(meta)[:-1] + ', "NonSteadyStateFrames": ' + "9" * 400
                       + "}")
    with pytest.raises(CohortError, match="sub-002/pwi.json has NonSteadyStateFrames"):
        load_cohort(cohort_dir)
    sidecar.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CohortError, match="sub-002/pwi.json is nested too deeply"):
        load_cohort(cohort_dir)


def test_a_negative_b_value_is_refused(tiny, tmp_path):
    src = tmp_path / "src"
    _bids(src, tiny[0], bvals=(-1000, 1000))
    with pytest.raises(CohortError, match=r"sub-01_dwi.bval holds the b-value\(s\) \[-1000"):
        import_cohort(src, tmp_path / "out")


def test_nan_in_an_ht_annotation_is_refused_naming_patient_and_file(tiny, tmp_path):
    bleeder = next(p for p in tiny if p.ht == 1)
    mask = np.asarray(bleeder.ht_mask.dataobj).astype(np.float32)
    mask[0, 0, 0] = np.nan
    src = tmp_path / "src"
    _bids(src, bleeder, ht_mask=mask)
    with pytest.raises(CohortError,
                       match=r"participant sub-01: .*sub-01_label-HT_mask.nii.gz .*1 NaN"):
        import_cohort(src, tmp_path / "out")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    cohort = save_cohort(make_stroke_cohort(**TINY), root / "cohort")
    assert main(["train", "--data", str(cohort), "--model", "random-forest",
                 "--n-samples", "48", "--out", str(root / "model"), "--quiet"]) == 0
    return cohort, root / "model"


@pytest.mark.parametrize("threshold", ["nan", "inf", "-0.5", "1.5"])
def test_predict_refuses_a_threshold_that_is_not_a_risk_before_writing(trained, tmp_path,
                                                                        threshold):
    cohort, model = trained
    out = tmp_path / "risk.nii.gz"
    with pytest.raises(SystemExit, match="--threshold .* must be a risk between 0 and 1"):
        main(["predict", "--model", str(model), "--patient", str(cohort / "sub-001"),
              "--out", str(out), "--threshold", threshold])
    assert list(tmp_path.iterdir()) == []


def test_a_loaded_model_refuses_another_cohort(trained):
    cohort_dir, model = trained
    training = load_cohort(cohort_dir)
    loaded = load_model(model, cohort=training)  # the training cohort: attached
    from sklearn_hemo.sampling import sample_voxels

    refs, _, _ = sample_voxels(training, n_samples=8, balance=True, random_state=0)
    assert loaded.predict_proba(refs).shape == (len(refs), 2)
    other = make_stroke_cohort(**{**TINY, "random_state": 7, "shape": (12, 12, 2)})
    with pytest.raises(BundleError, match="not the one the model .* was trained with"):
        load_model(model, cohort=other)
    reordered = Cohort(list(training)[::-1])
    with pytest.raises(BundleError, match="voxel references would point at other"):
        load_model(model, cohort=reordered)


@pytest.mark.parametrize("env", ["SKLEARN_HEMO_MOTION_CORRECTION", "SKLEARN_HEMO_AIF_VOF"])
def test_a_resumed_compare_recomputes_when_a_preprocessing_switch_changes(
        cohort_dir, tmp_path, monkeypatch, env):
    # both switches change what every model reads (the series, the AIF): a run resumed
    # with the switch flipped must not mix parts fitted on the other inputs
    out = tmp_path / "out"
    compare_models(load_cohort(cohort_dir), ["linear"], out_dir=out, **FAST)
    first = _parts(out)
    monkeypatch.setenv(env, "off")
    compare_models(load_cohort(cohort_dir), ["linear"], out_dir=out, **FAST)
    recomputed = {k: v for k, v in _parts(out).items() if first.get(k) != v}
    assert len(recomputed) == len(first)


def test_a_compare_into_a_relative_folder_resumes(cohort_dir, tmp_path, monkeypatch):
    # the README's main command writes into the relative folder hemo-results: its parts
    # must be recorded as the package's, or the rerun that resumes is refused
    monkeypatch.chdir(tmp_path)
    compare_models(load_cohort(cohort_dir), ["linear"], out_dir="results", **FAST)
    assert _safety.foreign_files(tmp_path / "results") == []
    first = _parts(tmp_path / "results")
    compare_models(load_cohort(cohort_dir), ["linear"], out_dir="results", **FAST)
    assert _parts(tmp_path / "results") == first  # resumed: every part reused
