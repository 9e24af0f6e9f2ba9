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
TINY = {"n_patients": 4, "shape": (16, 16, 2), "random_state": 1, "ht_prevalence": 0.5}


@pytest.fixture
def cohort_dir(tmp_path):
    """A fresh tiny cohort on disk (2 of 4 patients bleed), safe to damage."""
    return save_cohort(make_stroke_cohort(**TINY), tmp_path / "cohort")


def _files(folder):
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ 1. Ctrl-C in training
# Runs the real CLI in a subprocess. The wrapper only slows the second training batch of
# the N-th LSTM fit (a sleep) and says so in a marker file, so that the SIGINT surely
# arrives in the middle of training; everything else is the unmodified command.
_WRAPPER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from sklearn_hemo import _lstm_module, neural
from sklearn_hemo.cli import main

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
    marker = tmp_path / f"marker-{time.monotonic_ns()}"
    script = tmp_path / "run_cli.py"
    script.write_text(_WRAPPER.format(root=str(ROOT), marker=str(marker),
                                      target_fit=interrupt_fit or 0))
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


_COMPARE = ["compare", "--models", "lstm-pwi", "--n-outer", "2", "--n-inner", "2",
            "--n-samples", "48", "--n-resamples", "20", "--quiet"]


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
    code, _, err = _run_cli([*_COMPARE, "--data", str(cohort_dir), "--out", str(clean)],
                            tmp_path)
    assert code == 0, err
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
    clf = LSTMClassifier(hidden_size=4, max_epochs=50, early_stopping=True,
                         n_iter_no_change=1, lr=1e-9, random_state=0)
    clf.fit(X, y, groups=groups)
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
    # the state after the first steps of docs/data.rst: patient folders, no table yet
    (cohort_dir / "participants.tsv").unlink()
    before = _files(cohort_dir)
    with pytest.raises(SystemExit, match="not written by 'sklearn-hemo simulate'"):
        main(["simulate", str(cohort_dir), "--n-patients", "2", "--shape", "8", "8", "1",
              "--quiet"])
    assert _files(cohort_dir) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty"):
        main(["simulate", str(other), "--n-patients", "2", "--shape", "8", "8", "1"])
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_simulate_reruns_into_its_own_interrupted_folder(tmp_path):
    out = tmp_path / "sim"
    argv = ["simulate", str(out), "--n-patients", "2", "--shape", "8", "8", "1", "--quiet"]
    assert main(argv) == 0
    (out / "participants.tsv").unlink()  # as an interrupted run leaves it
    assert main(argv) == 0
    assert load_cohort(out).ids == ["sub-001", "sub-002"]


_QUICK_COMPARE = ["compare", "--models", "linear", "--n-outer", "2", "--n-inner", "2",
                  "--n-samples", "48", "--n-resamples", "20", "--quiet"]


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
    cohort[2].pwi
    cohort[2].ht_mask
    cohort[0].dwi_b0
    assert seen == ["sub-003", "sub-001"]  # each patient once, when first used
