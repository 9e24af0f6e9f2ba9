"""The commands never lose or corrupt a user's data and never return a silent wrong answer.

Each test reproduces one case of issue 16 on a tiny simulated cohort, from scratch.
"""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sklearn_hemo.cli import main
from sklearn_hemo.datasets import CohortError, load_cohort, make_stroke_cohort, save_cohort

ROOT = Path(__file__).resolve().parents[1]
# 2 of 4 patients bleed, with 9 and 15 HT voxels (enough for 2 outer folds)
TINY = {"n_patients": 4, "shape": (16, 16, 2), "random_state": 1, "ht_prevalence": 0.5,
        "difficulty": "easy"}


@pytest.fixture
def cohort_dir(tmp_path):
    """A fresh tiny cohort on disk (2 of 4 patients bleed), safe to damage."""
    return save_cohort(make_stroke_cohort(**TINY), tmp_path / "cohort")


def _files(folder):
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ 1. Ctrl-C in training
# Runs the real CLI in a subprocess. The wrapper slows the second training batch of the
# N-th LSTM fit (a sleep) and says so in a marker file, so that the SIGINT surely arrives
# in the middle of training. For compare it also pins the quick LSTM row to a single
# candidate without early stopping (the row as it was when the issue was filed): a
# 4-patient cohort cannot feed an inner search whose folds each hold out patients.
_WRAPPER = """
import signal, sys, time
from pathlib import Path
# as in a terminal: a test run started in the background (`pytest &`) hands its children
# an ignored SIGINT, which Python then leaves ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {root!r})
from sklearn_hemo import _lstm_module, neural
from sklearn_hemo.cli import main
from sklearn_hemo.model_selection import _zoo

if {pin_lstm}:
    grids = _zoo._grids
    def one_candidate(protocol):
        found = grids(protocol)
        found["lstm"] = ({{"hidden_size": 16, "max_epochs": 4, "lr": 3e-3,
                          "batch_size": 128}}, {{}})
        return found
    _zoo._grids = one_candidate

marker, target_fit = Path({marker!r}), {target_fit}
state = {{"fit": 0, "batches": 0}}
fit = neural.LSTMClassifier.fit
def counting_fit(self, *args, **kwargs):
    state["fit"] += 1
    state["batches"] = 0
    return fit(self, *args, **kwargs)
neural.LSTMClassifier.fit = counting_fit
forward = _lstm_module.HemoLSTM.forward
def slow_forward(self, *args, **kwargs):
    if self.training:
        state["batches"] += 1
        if state["fit"] == target_fit and state["batches"] == 2 and not marker.exists():
            marker.write_text("training")
            time.sleep(120)  # the SIGINT lands here, in the second training epoch
    return forward(self, *args, **kwargs)
_lstm_module.HemoLSTM.forward = slow_forward
sys.exit(main(sys.argv[1:]))
"""


def _run_cli(argv, tmp_path, *, interrupt_fit=None):
    """Run the CLI in a subprocess; with ``interrupt_fit``, SIGINT it during that fit."""
    pin_lstm = argv[0] == "compare"
    marker = tmp_path / f"marker-{time.monotonic_ns()}"
    script = tmp_path / "run_cli.py"
    script.write_text(_WRAPPER.format(root=str(ROOT), marker=str(marker),
                                      target_fit=interrupt_fit or 0, pin_lstm=pin_lstm))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if interrupt_fit:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out, err = proc.communicate()
                pytest.fail(f"the run never reached LSTM training:\n{out}\n{err}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


# --n-jobs 1: the fits run in the CLI's own process, where the wrapper's sleep is
_COMPARE = ["compare", "--models", "lstm-pwi", "--n-outer", "2", "--n-inner", "2",
            "--n-samples", "48", "--n-resamples", "20", "--n-jobs", "1", "--quiet"]


def test_ctrl_c_during_lstm_training_stops_compare_and_keeps_no_half_fold(cohort_dir,
                                                                          tmp_path):
    out = tmp_path / "interrupted"
    argv = [*_COMPARE, "--data", str(cohort_dir), "--out", str(out)]
    code, _, err = _run_cli(argv, tmp_path, interrupt_fit=2)  # the second outer fold
    assert code == 130, err
    assert "interrupted" in err
    parts = sorted(p.name for p in (out / "parts").rglob("*.npz"))
    assert parts == ["lstm-pwi__fold0.npz"]  # the finished fold only, not the interrupted
    assert not (out / "table.csv").exists()
    # the rerun resumes and gives exactly the table of a run never interrupted
    code, _, err = _run_cli(argv, tmp_path)
    assert code == 0, err
    clean = tmp_path / "clean"
    code, printed, err = _run_cli([*_COMPARE, "--data", str(cohort_dir), "--out",
                                   str(clean)], tmp_path)
    assert code == 0, err
    assert "lstm-pwi: one trained network per fit" in printed  # said after the table
    # (fold_scores.csv also holds fit times, which differ from run to run)
    for name in ("table.csv", "predictions.csv", "folds.csv", "best_params.json"):
        assert (out / name).read_text() == (clean / name).read_text(), name


def test_ctrl_c_during_lstm_training_stops_train_and_saves_no_bundle(cohort_dir, tmp_path):
    argv = ["train", "--data", str(cohort_dir), "--model", "lstm-pwi", "--n-samples", "48"]
    model = tmp_path / "model"
    code, out, err = _run_cli([*argv, "--out", str(model)], tmp_path, interrupt_fit=1)
    assert code == 130, out + err
    assert "saved" not in out
    assert not model.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]  # no temp
    code, _, err = _run_cli([*argv, "--out", str(model)], tmp_path)
    assert code == 0, err
    clean = tmp_path / "clean"
    code, _, err = _run_cli([*argv, "--out", str(clean)], tmp_path)
    assert code == 0, err
    assert (model / "net-0.safetensors").read_bytes() == \
        (clean / "net-0.safetensors").read_bytes()


def test_lstm_fit_reraises_keyboard_interrupt_but_early_stopping_still_stops(monkeypatch):
    from sklearn_hemo import _lstm_module
    from sklearn_hemo.neural import LSTMClassifier

    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 6)).astype(np.float32)
    y = np.arange(60) % 2
    groups = np.arange(60) // 10
    # early stopping ends training through skorch's own KeyboardInterrupt: not an interrupt
    # (a learnable signal: early stopping does not fire while the training loss is still
    # on the initial ln 2 plateau)
    Xs = X.copy()
    Xs[:, -1] += 0.8 * (2 * y - 1)
    clf = LSTMClassifier(hidden_size=4, max_epochs=50, early_stopping=True,
                         n_iter_no_change=1, lr=0.05, random_state=0)
    clf.fit(Xs, y, groups=groups)
    assert clf.n_iter_ < 50
    calls = {"n": 0}
    forward = _lstm_module.HemoLSTM.forward

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(_lstm_module.HemoLSTM, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        LSTMClassifier(hidden_size=4, max_epochs=5, random_state=0).fit(X, y)


# ------------------------------------------------------- 2. no writing into the inputs
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cohort folder and a linear-model bundle trained on it (module-wide, read-only)."""
    root = tmp_path_factory.mktemp("trained")
    cohort = save_cohort(make_stroke_cohort(**TINY), root / "cohort")
    assert main(["train", "--data", str(cohort), "--model", "random-forest",
                 "--n-samples", "48", "--out", str(root / "model")]) == 0
    return cohort, root / "model"


@pytest.mark.parametrize("target", ["ht_mask.nii.gz", "pwi.nii.gz", "new-risk.nii.gz"])
def test_predict_never_writes_into_the_patient_folder(trained, target):
    cohort, model = trained
    patient = cohort / "sub-002"
    before = _files(patient)
    for extra in ([], ["--overwrite"]):
        with pytest.raises(SystemExit, match="inside the input"):
            main(["predict", "--model", str(model), "--patient", str(patient),
                  "--out", str(patient / target), *extra])
    assert _files(patient) == before


def test_predict_never_writes_into_the_bundle(trained):
    cohort, model = trained
    before = _files(model)
    with pytest.raises(SystemExit, match="inside the input"):
        main(["predict", "--model", str(model), "--patient", str(cohort / "sub-001"),
              "--out", str(model / "risk.nii.gz")])
    assert _files(model) == before


def test_predict_replaces_an_existing_file_only_with_overwrite(trained, tmp_path):
    cohort, model = trained
    out = tmp_path / "risk.nii.gz"
    out.write_bytes(b"the user's file")
    argv = ["predict", "--model", str(model), "--patient", str(cohort / "sub-001"),
            "--out", str(out)]
    with pytest.raises(SystemExit, match="already exists.*--overwrite"):
        main(argv)
    assert out.read_bytes() == b"the user's file"
    assert main([*argv, "--overwrite"]) == 0
    assert nib.load(out).shape == (16, 16, 2)


def test_simulate_refuses_a_folder_of_patient_folders_without_table(cohort_dir, tmp_path):
    # the state after the first steps of docs/data.rst: patient folders, no table yet,
    # made by the user (save_cohort records the files it writes in its owner file)
    (cohort_dir / "participants.tsv").unlink()
    (cohort_dir / ".sklearn-hemo-owner.json").unlink()
    before = _files(cohort_dir)
    with pytest.raises(SystemExit, match="sklearn-hemo simulate did not write"):
        main(["simulate", str(cohort_dir), "--n-patients", "2", "--shape", "8", "8", "1",
              "--quiet"])
    assert _files(cohort_dir) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="did not write .*notes.txt"):
        main(["simulate", str(other), "--n-patients", "2", "--shape", "8", "8", "1"])
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_import_refuses_a_folder_of_patient_folders_without_table(cohort_dir, tmp_path):
    (cohort_dir / "participants.tsv").unlink()
    (cohort_dir / ".sklearn-hemo-owner.json").unlink()  # patient folders of the user's
    before = _files(cohort_dir)
    source = tmp_path / "bids"
    source.mkdir()
    with pytest.raises(SystemExit, match="sklearn-hemo import did not write"):
        main(["import", str(source), "--out", str(cohort_dir), "--quiet"])
    assert _files(cohort_dir) == before
    with pytest.raises(SystemExit, match="inside the input"):
        main(["import", str(source), "--out", str(source / "cohort"), "--quiet"])
    assert list(source.iterdir()) == []


def test_qc_refuses_to_write_into_the_cohort_or_a_foreign_folder(cohort_dir, tmp_path):
    before = _files(cohort_dir)
    with pytest.raises(SystemExit, match="inside the input"):
        main(["qc", "--data", str(cohort_dir), "--out", str(cohort_dir / "qc"), "--quiet"])
    assert _files(cohort_dir) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "sub-001.png").write_bytes(b"the user's picture")
    with pytest.raises(SystemExit, match="did not write.*--overwrite"):
        main(["qc", "--data", str(cohort_dir), "--out", str(mine), "--quiet"])
    assert (mine / "sub-001.png").read_bytes() == b"the user's picture"


def test_simulate_reruns_into_its_own_interrupted_folder(tmp_path):
    out = tmp_path / "sim"
    argv = ["simulate", str(out), "--n-patients", "2", "--shape", "8", "8", "1", "--quiet"]
    assert main(argv) == 0
    (out / "participants.tsv").unlink()  # as an interrupted run leaves it
    assert main(argv) == 0
    assert load_cohort(out).ids == ["sub-001", "sub-002"]


_QUICK_COMPARE = ["compare", "--models", "linear", "--n-outer", "2", "--n-inner", "2",
                  "--n-samples", "48", "--n-resamples", "20", "--n-jobs", "1", "--quiet"]


def test_compare_refuses_a_folder_it_did_not_write(cohort_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "table.csv").write_text("the user's table\n")
    with pytest.raises(SystemExit, match="did not write.*--overwrite"):
        main([*_QUICK_COMPARE, "--data", str(cohort_dir), "--out", str(out)])
    assert [p.name for p in out.iterdir()] == ["table.csv"]
    assert (out / "table.csv").read_text() == "the user's table\n"
    with pytest.raises(SystemExit, match="inside the input"):
        main([*_QUICK_COMPARE, "--data", str(cohort_dir), "--out", str(cohort_dir / "res")])
    assert not (cohort_dir / "res").exists()


def test_compare_keeps_an_earlier_run_with_other_settings_but_resumes_its_own(cohort_dir,
                                                                              tmp_path):
    out = tmp_path / "results"
    argv = [*_QUICK_COMPARE, "--data", str(cohort_dir), "--out", str(out)]
    assert main(argv) == 0
    table = (out / "table.csv").read_text()
    with pytest.raises(SystemExit, match="other settings.*random_state"):
        main([*argv, "--random-state", "1"])
    assert (out / "table.csv").read_text() == table
    assert main(argv) == 0  # the same command resumes in its own folder
    assert (out / "table.csv").read_text() == table
    assert main([*argv, "--random-state", "1", "--overwrite"]) == 0


# ---------------------------------------------------- 3. voxel checks in every command
def _rewrite(path, change, dtype=None):
    img = nib.load(path)
    data = change(np.asarray(img.dataobj).copy())
    header = img.header.copy()
    if dtype is not None:
        data = data.astype(dtype)
    header.set_data_dtype(data.dtype)
    nib.save(nib.Nifti1Image(data, img.affine, header), path)


def _sign_flip(folder):
    _rewrite(folder / "pwi.nii.gz", lambda a: -a.astype(np.float32), np.float32)


def _nan_pwi(folder):
    def change(a):
        a = a.astype(np.float32)
        a[3, 3, 0, 5] = np.nan
        return a
    _rewrite(folder / "pwi.nii.gz", change, np.float32)


def _zero_pwi_without_mask(folder):
    _rewrite(folder / "pwi.nii.gz", np.zeros_like)
    (folder / "brain_mask.nii.gz").unlink()


def _nan_b1000(folder):
    _rewrite(folder / "dwi_b1000.nii.gz", lambda a: np.full(a.shape, np.nan, np.float32),
             np.float32)


def _empty_ht_mask(folder):  # sub-001 has ht = 1 in participants.tsv
    _rewrite(folder / "ht_mask.nii.gz", np.zeros_like)


def _two_frames(folder):
    _rewrite(folder / "pwi.nii.gz", lambda a: a[..., :2])


def _tiny_echo_time(folder):
    meta = json.loads((folder / "pwi.json").read_text())
    (folder / "pwi.json").write_text(json.dumps({**meta, "EchoTime": 1e-300}))


def _ht_mask_labels(folder):
    _rewrite(folder / "ht_mask.nii.gz", lambda a: (a > 0).astype(np.uint8) * 2)


@pytest.mark.parametrize("damage, file, message", [
    (_sign_flip, "pwi.nii.gz", "non-positive pre-bolus baseline"),
    (_nan_pwi, "pwi.nii.gz", "NaN or infinite"),
    (_zero_pwi_without_mask, "pwi.nii.gz", "no positive baseline"),
    (_nan_b1000, "dwi_b1000.nii.gz", "NaN or infinite"),
    (_empty_ht_mask, "ht_mask.nii.gz", "marks no voxel but participants.tsv says ht = 1"),
    (_two_frames, "pwi.nii.gz", "2 time frames; at least"),
    (_tiny_echo_time, "pwi.json", "EchoTime 1e-300 s is implausibly short"),
    (_ht_mask_labels, "ht_mask.nii.gz", "values other than 0 and 1"),
])
def test_commands_run_the_voxel_checks_on_the_patients_they_touch(cohort_dir, tmp_path,
                                                                  damage, file, message):
    damage(cohort_dir / "sub-001")
    load_cohort(cohort_dir)  # the header-level checks still pass: the voxels are the issue
    with pytest.raises(SystemExit, match="participant sub-001: .*") as info:
        main(["train", "--data", str(cohort_dir), "--model", "random-forest",
              "--n-samples", "48", "--out", str(tmp_path / "model")])
    assert file in str(info.value) and message in str(info.value)
    assert not (tmp_path / "model").exists()


def test_cohort_validate_refuses_an_annotation_that_is_not_binary(cohort_dir):
    _ht_mask_labels(cohort_dir / "sub-003")
    with pytest.raises(CohortError, match="sub-003: .*ht_mask.nii.gz: holds values other"):
        load_cohort(cohort_dir).validate()


def test_predict_runs_the_voxel_checks(trained, tmp_path):
    cohort, model = trained
    patient = tmp_path / "sub-009"
    save_cohort([load_cohort(cohort)[0]], tmp_path / "tmp")  # a copy to damage
    (tmp_path / "tmp" / "sub-001").rename(patient)
    _nan_b1000(patient)
    with pytest.raises(SystemExit, match="participant sub-009: .*dwi_b1000.nii.gz"):
        main(["predict", "--model", str(model), "--patient", str(patient),
              "--out", str(tmp_path / "risk.nii.gz")])
    assert not (tmp_path / "risk.nii.gz").exists()


def test_voxel_checks_run_lazily_once_per_patient(cohort_dir, monkeypatch):
    from sklearn_hemo import _safety

    seen = []
    monkeypatch.setattr(_safety, "check_patient_voxels", lambda p: seen.append(p.id))
    cohort = _safety.validate_lazily(load_cohort(cohort_dir))
    assert seen == []  # nothing read up front
    for patient, name in ((cohort[2], "pwi"), (cohort[2], "ht_mask"), (cohort[0], "dwi_b0")):
        getattr(patient, name)
    assert seen == ["sub-003", "sub-001"]  # each patient once, when first used


# ---------------------------------------- 4. outputs checked writable before any work
@pytest.fixture
def unwritable(tmp_path):
    """A folder path nothing can be created in (root ignores permission bits: /proc)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
    elif Path("/proc/self").exists():
        yield Path("/proc") / "sklearn-hemo-no-such-folder"
    else:
        pytest.skip("running as root without /proc: no folder is read-only to this user")


def _no_work(monkeypatch):
    """Make the expensive steps fail loudly, to prove a check came before them."""
    from sklearn_hemo import risk, sampling

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the output was checked")

    monkeypatch.setattr(sampling, "sample_voxels", refuse)
    monkeypatch.setattr(risk, "predict_risk_map", refuse)


def test_train_checks_its_output_before_fitting(cohort_dir, tmp_path, unwritable,
                                                monkeypatch):
    _no_work(monkeypatch)
    argv = ["train", "--data", str(cohort_dir), "--model", "random-forest"]
    with pytest.raises(SystemExit, match="cannot write"):
        main([*argv, "--out", str(unwritable / "model")])
    existing = tmp_path / "model"
    existing.mkdir()
    with pytest.raises(SystemExit, match="already exists.*pass --overwrite"):
        main([*argv, "--out", str(existing)])
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not a model bundle"):
        main([*argv, "--out", str(existing), "--overwrite"])
    with pytest.raises(SystemExit, match="inside the cohort folder"):
        main([*argv, "--out", str(cohort_dir / "model")])


def test_predict_checks_its_output_before_mapping(trained, unwritable, monkeypatch):
    cohort, model = trained
    _no_work(monkeypatch)
    for option in ("--out", "--png"):
        argv = ["predict", "--model", str(model), "--patient", str(cohort / "sub-001"),
                "--out", str(unwritable / "risk.nii.gz")]
        if option == "--png":
            argv[-1] = str(Path(model).parent / "risk-never.nii.gz")
            argv += ["--png", str(unwritable / "risk.png")]
        with pytest.raises(SystemExit, match=f"{option} .*cannot write"):
            main(argv)


def test_compare_on_an_unwritable_path_says_so(cohort_dir, unwritable, monkeypatch):
    _no_work(monkeypatch)
    with pytest.raises(SystemExit, match="sklearn-hemo compare: --out .*cannot write"):
        main([*_QUICK_COMPARE, "--data", str(cohort_dir), "--out", str(unwritable / "r")])


def test_a_failure_while_writing_leaves_no_partial_output_set(cohort_dir, tmp_path,
                                                              monkeypatch):
    import errno

    from sklearn_hemo import plotting

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "results"
    argv = [*_QUICK_COMPARE, "--data", str(cohort_dir), "--out", str(out)]
    with monkeypatch.context() as m:
        m.setattr(plotting, "plot_roc_pr", disk_full)  # the last output written
        with pytest.raises(SystemExit, match="No space left on device"):
            main(argv)
    outputs = {"table.csv", "table.md", "predictions.csv", "folds.csv", "fold_scores.csv",
               "best_params.json", "roc_pr.png"}
    assert not outputs & {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.suffix != ".json"]
    assert main(argv) == 0  # and the run completes once there is room
    assert outputs <= {p.name for p in out.iterdir()}


def test_predict_writes_the_map_and_picture_together_or_not_at_all(trained, tmp_path,
                                                                   monkeypatch):
    from sklearn_hemo import plotting

    cohort, model = trained

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plotting, "save_risk_overlay", broken)
    with pytest.raises(SystemExit, match="No space left"):
        main(["predict", "--model", str(model), "--patient", str(cohort / "sub-001"),
              "--out", str(tmp_path / "risk.nii.gz"), "--png", str(tmp_path / "risk.png")])
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------- 5. duplicates and stale files
def test_two_ids_for_one_patient_folder_are_refused(cohort_dir, tmp_path):
    import shutil

    shutil.rmtree(cohort_dir / "sub-004")
    (cohort_dir / "sub-004").symlink_to(cohort_dir / "sub-001", target_is_directory=True)
    with pytest.raises(CohortError, match="sub-001 and sub-004 .*same patient folder"):
        load_cohort(cohort_dir)
    with pytest.raises(SystemExit, match="same patient folder"):
        main(["train", "--data", str(cohort_dir), "--model", "random-forest",
              "--out", str(tmp_path / "m")])


def test_a_stale_uncompressed_image_beside_the_compressed_one_is_refused(cohort_dir):
    pwi = nib.load(cohort_dir / "sub-002" / "pwi.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(pwi.dataobj)[..., :20], pwi.affine),
             cohort_dir / "sub-002" / "pwi.nii")
    with pytest.raises(CohortError, match="sub-002: .*both pwi.nii.gz and pwi.nii.*stale"):
        load_cohort(cohort_dir)


# ---------------------------------------------------------------------------- 6. bundles
@pytest.fixture(scope="module")
def lstm_bundle(tmp_path_factory):
    from sklearn_hemo.neural import LSTMClassifier
    from sklearn_hemo.persistence import save_model

    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 6)).astype(np.float32)
    clf = LSTMClassifier(hidden_size=4, max_epochs=1, random_state=0).fit(X, np.arange(60) % 2)
    return save_model(clf, tmp_path_factory.mktemp("bundle") / "m")


@pytest.fixture
def bundle(lstm_bundle, tmp_path):
    import shutil

    return Path(shutil.copytree(lstm_bundle, tmp_path / "m"))


def _forge(bundle, name=None, data=None, edit=None):
    """Replace a file (keeping the manifest's hash list consistent) or edit the manifest."""
    import hashlib

    manifest = json.loads((bundle / "manifest.json").read_text())
    if name is not None:
        (bundle / name).write_bytes(data)
        manifest["files"][name] = hashlib.sha256(data).hexdigest()
    if edit is not None:
        edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_bundle_files_are_written_with_ordinary_permissions(lstm_bundle):
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in lstm_bundle.iterdir()}
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_bundle_symlinks_are_not_followed(bundle, tmp_path):
    from sklearn_hemo.persistence import BundleError, load_model

    load_model(bundle)
    outside = tmp_path / "outside.skops"
    (bundle / "estimator.skops").rename(outside)
    (bundle / "estimator.skops").symlink_to(outside)  # same bytes, same hash
    with pytest.raises(BundleError, match="symbolic link"):
        load_model(bundle)


@pytest.mark.parametrize("forgery", ["bad zip", "bad safetensors", "bad net path",
                                     "deep nesting", "nets emptied", "nets not a list"])
def test_every_forged_bundle_is_a_bundle_error(bundle, forgery):
    from sklearn_hemo.persistence import BundleError, load_model

    if forgery == "bad zip":
        _forge(bundle, "estimator.skops", b"PK\x03\x04 not a zip archive")
    elif forgery == "bad safetensors":
        _forge(bundle, "net-0.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    elif forgery == "bad net path":
        _forge(bundle, edit=lambda m: m["nets"][0].update(path=[["attr", "no_such"],
                                                                ["attr", "net_"]]))
    elif forgery == "deep nesting":
        text = (bundle / "manifest.json").read_text()
        (bundle / "manifest.json").write_text(
            text[:-1] + ', "extra": ' + "[" * 200_000 + "]" * 200_000 + "}")
    elif forgery == "nets emptied":
        _forge(bundle, edit=lambda m: m.update(nets=[]))
    else:
        _forge(bundle, edit=lambda m: m.update(nets={"net-0": m["nets"][0]}))
    with pytest.raises(BundleError):
        load_model(bundle)


# ----------------------------------------------------------------------- 7. size guard
def _nifti_gz(path, shape, payload, trailer=None, dtype=np.int16):
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.eye(4), 1)
    header.set_sform(np.eye(4), 1)
    raw = header.binaryblock + b"\x00" * 4  # vox_offset 352
    with gzip.open(path, "wb") as fh:
        fh.write(raw + payload)
    if trailer is not None:
        data = bytearray(Path(path).read_bytes())
        data[-4:] = (trailer % 2**32).to_bytes(4, "little")
        Path(path).write_bytes(bytes(data))


def test_a_gzip_bomb_is_refused_from_its_header(cohort_dir):
    # 2 MB of zeros compress to a few kB; the header declares 10**9 voxels
    _nifti_gz(cohort_dir / "sub-001" / "dwi_b0.nii.gz", (1000, 1000, 1000),
              b"\x00" * (2 << 20))
    with pytest.raises(CohortError, match=r"sub-001: .*dwi_b0.nii.gz: declares .*limit"):
        load_cohort(cohort_dir)


def test_a_forged_gzip_size_trailer_does_not_lead_to_a_huge_allocation(cohort_dir):
    shape = (2048, 2048, 2048)  # 16 GiB of int16, a trailer claiming it is all there
    expected = 352 + 2 * 2048 ** 3
    _nifti_gz(cohort_dir / "sub-001" / "dwi_b1000.nii.gz", shape, b"\x00" * 1024,
              trailer=expected)
    with pytest.raises(CohortError, match="more than the limit"):
        load_cohort(cohort_dir)


def test_the_size_limit_is_configurable(cohort_dir, monkeypatch):
    from sklearn_hemo import _config, config_context, get_config

    with config_context(max_image_voxels=1000):
        with pytest.raises(CohortError, match="SKLEARN_HEMO_MAX_VOXELS"):
            load_cohort(cohort_dir)
    with config_context(max_image_voxels=16 * 16 * 2 * 90):
        load_cohort(cohort_dir)
    paper = 128 * 128 * 20 * 90
    assert get_config()["max_image_voxels"] > 5 * paper
    # the environment variable is the default, read when asked for
    monkeypatch.setenv("SKLEARN_HEMO_MAX_VOXELS", "123")
    assert _config._max_voxels_from_env() == 123 == get_config()["max_image_voxels"]
    with pytest.raises(CohortError, match="more than the limit of 123"):
        load_cohort(cohort_dir)
    with config_context(max_image_voxels=10**9):  # an explicit setting wins
        load_cohort(cohort_dir)


# -------------------------------------------------------------------- 8. clear messages
def test_every_voxel_ht_gives_a_clear_message(tmp_path):
    from sklearn_hemo.sampling import sample_voxels

    cohort = make_stroke_cohort(**TINY)
    for patient in cohort:
        patient._images["ht_mask"] = nib.Nifti1Image(
            patient.get_brain_mask().astype(np.uint8), patient.affine)
    with pytest.raises(ValueError, match="no non-HT voxel"):
        sample_voxels(cohort, n_samples=40, random_state=0)


@pytest.mark.filterwarnings("ignore:only .* HT voxels are available:UserWarning")
def test_too_few_patients_for_the_inner_folds_gives_a_clear_message(tmp_path):
    data = save_cohort(make_stroke_cohort(n_patients=2, shape=(16, 16, 2), random_state=1,
                                          ht_prevalence=0.5, difficulty="easy"),
                      tmp_path / "two")
    with pytest.raises(SystemExit, match="1 patient.*too few for n_inner=3"):
        main(["compare", "--data", str(data), "--models", "random-forest", "--n-outer", "2",
              "--n-inner", "3", "--n-samples", "48", "--n-jobs", "1", "--quiet",
              "--out", str(tmp_path / "r")])


def test_a_table_that_is_not_utf8_names_the_file(cohort_dir):
    table = cohort_dir / "participants.tsv"
    table.write_bytes(table.read_bytes() + "sub-005\t0\tRen\u00e9\n".encode("latin-1"))
    with pytest.raises(CohortError, match="participants.tsv is not UTF-8"):
        load_cohort(cohort_dir)


def test_a_400_digit_echo_time_names_the_file(cohort_dir):
    sidecar = cohort_dir / "sub-003" / "pwi.json"
    sidecar.write_text('{"EchoTime": ' + "9" * 400 + ', "RepetitionTime": 1.8}')
    with pytest.raises(CohortError, match="sub-003: .*pwi.json .*EchoTime"):
        load_cohort(cohort_dir)


@pytest.mark.parametrize("name, dtype", [("pwi", np.complex64), ("dwi_b0", "RGB")])
def test_complex_or_rgb_images_are_refused_with_the_file(cohort_dir, name, dtype):
    path = cohort_dir / "sub-002" / f"{name}.nii.gz"
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    if dtype == "RGB":
        rgb = np.zeros(data.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        new = nib.Nifti1Image(rgb, img.affine)
    else:
        new = nib.Nifti1Image(data.astype(dtype), img.affine)
    nib.save(new, path)
    with pytest.raises(CohortError, match=f"sub-002: .*{name}.nii.gz: stores voxels of type"):
        load_cohort(cohort_dir)


def test_the_cli_shows_no_traceback_for_bad_input_unless_debug(cohort_dir, tmp_path,
                                                               capsys):
    sidecar = cohort_dir / "sub-003" / "pwi.json"
    sidecar.write_text('{"EchoTime": 0.03, "RepetitionTime": 1.8, "x": ' +
                       "[" * 100_000 + "]" * 100_000 + "}")
    argv = ["train", "--data", str(cohort_dir), "--model", "linear", "--out",
            str(tmp_path / "m")]
    with pytest.raises(SystemExit, match="sklearn-hemo train: .*pwi.json"):
        main(argv)
    for debug in (["--debug", *argv], [*argv, "--debug"]):
        with pytest.raises(Exception) as info:
            main(debug)
        assert isinstance(info.value, CohortError)  # the error itself, with its traceback
