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
