"""The load-time motion correction of cohorts already in the layout (issue 31): a cached
step when the PWI is read, never writing into the cohort, with a switch."""

import json
import pickle
import warnings

import nibabel as nib
import numpy as np
import pytest

from sklearn_hemo import _motion
from sklearn_hemo.datasets import load_cohort, make_stroke_cohort, save_cohort
from sklearn_hemo.registration import has_registration, mean_displacement, rotation_angle

needs_sitk = pytest.mark.skipif(
    not has_registration(),
    reason="SimpleITK (the [registration] extra, in the test extra) is not installed")


def _truth_matrix(patient, t):
    """World matrix (reference point -> point of frame t) of the simulator's motion."""
    dx, dy, angle = patient.truth["motion"][t]
    theta = np.radians(angle)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0.0],
                    [np.sin(theta), np.cos(theta), 0.0], [0.0, 0.0, 1.0]])
    centre = (np.asarray(patient.shape) - 1) / 2.0
    # the simulator's frame t shows at voxel o the anatomy of voxel R (o - c) + c - s
    voxel = np.eye(4)
    voxel[:3, :3] = rot.T
    voxel[:3, 3] = rot.T @ (np.array([dx, dy, 0.0]) - centre) + centre
    return patient.affine @ voxel @ np.linalg.inv(patient.affine)


def _files(folder):
    return {p.relative_to(folder): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    # the default geometry (48 x 48 x 8); seed 1: sub-001 moves, sub-004 does not (the
    # assertion below says so if the simulator's draws change)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cohort = make_stroke_cohort(n_patients=4, random_state=1)
    folder = save_cohort(cohort, tmp_path_factory.mktemp("layout") / "cohort")
    moved, still = cohort[0], cohort[3]
    assert np.abs(moved.truth["motion"]).any() and not np.abs(still.truth["motion"]).any()
    return folder, _files(folder)


@needs_sitk
def test_a_moved_patient_read_from_the_layout_is_corrected(layout):
    folder, before = layout
    patient = load_cohort(folder)[0]
    raw = np.asarray(nib.load(folder / "sub-001" / "pwi.nii.gz").dataobj)
    corrected = np.asarray(patient.pwi.dataobj)
    assert corrected.shape == raw.shape and corrected.dtype == raw.dtype
    record = _motion.motion_record(patient)
    assert record["step"] == "load"
    motion = record["motion"]
    assert len(motion["displacement_mm"]) == len(motion["framewise_displacement_mm"]) \
        == patient.n_frames
    head = np.argwhere(patient.truth["head"] > 0)
    points = head @ patient.affine[:3, :3].T + patient.affine[:3, 3]
    moved = [t for t in range(patient.n_frames) if np.abs(patient.truth["motion"][t]).any()]
    error_before = error_after = 0.0
    for t in moved:
        truth = _truth_matrix(patient, t)
        residual = np.linalg.inv(truth) @ np.asarray(record["matrices"][t])
        error_before += mean_displacement(truth, points)
        error_after += mean_displacement(residual, points)
        # every frame's transform (those kept as acquired too) within 1 mm and 1 degree
        assert mean_displacement(residual, points) < 1.0, t
        assert rotation_angle(residual[:3, :3]) < 1.0, t
    assert error_after <= 0.3 * error_before, (error_after, error_before)
    assert max(mean_displacement(_truth_matrix(patient, t), points) for t in moved) > 5.0
    # the realigned frames are the ones that changed; the cohort's files did not
    changed = [t for t in range(raw.shape[-1]) if not np.array_equal(raw[..., t],
                                                                    corrected[..., t])]
    assert changed == motion["corrected_frames"] and len(changed) >= 0.7 * len(moved)
    assert _files(folder) == before


@needs_sitk
def test_a_still_patient_is_left_as_acquired_or_nearly(layout):
    folder, _ = layout
    patient = load_cohort(folder)[3]
    raw = np.asarray(nib.load(folder / "sub-004" / "pwi.nii.gz").dataobj).astype(float)
    corrected = np.asarray(patient.pwi.dataobj).astype(float)
    motion = _motion.motion_record(patient)["motion"]
    assert max(motion["displacement_mm"]) < 0.5
    assert len(motion["corrected_frames"]) <= 0.1 * patient.n_frames
    brain = patient.get_brain_mask()
    assert np.abs(corrected - raw)[brain].mean() <= 0.01 * raw[brain].mean()


@needs_sitk
def test_the_correction_is_cached_by_content_and_reused(layout, monkeypatch):
    folder, before = layout
    first = np.asarray(load_cohort(folder)[0].pwi.dataobj)
    cached = sorted((_motion.cache_dir() / "motion").glob("*.npy"))
    assert cached and not any(folder in p.parents for p in cached)

    def refuse(*args, **kwargs):
        raise AssertionError("the correction ran again instead of reading its cache")

    monkeypatch.setattr("sklearn_hemo.registration.correct_motion", refuse)
    again = load_cohort(folder)[0]  # a new process would see only the files: new objects
    np.testing.assert_array_equal(np.asarray(again.pwi.dataobj), first)
    assert _motion.motion_record(again)["step"] == "load"
    # a pickled patient (a joblib worker's copy) takes its key along: no hashing again
    clone = pickle.loads(pickle.dumps(again))
    monkeypatch.setattr(_motion.CorrectedSeries, "_hash", refuse)
    np.testing.assert_array_equal(np.asarray(clone.pwi.dataobj), first)
    monkeypatch.undo()
    monkeypatch.setattr("sklearn_hemo.registration.correct_motion", refuse)
    # a different series is another key: computed, not taken from the cache
    other = load_cohort(folder)[1]
    with pytest.raises(AssertionError, match="ran again"):
        np.asarray(other.pwi.dataobj)
    assert _files(folder) == before


def test_the_switch_turns_it_off(layout, monkeypatch):
    folder, _ = layout
    raw = np.asarray(nib.load(folder / "sub-001" / "pwi.nii.gz").dataobj)

    def refuse(*args, **kwargs):
        raise AssertionError("corrected although switched off")

    monkeypatch.setattr("sklearn_hemo.registration.correct_motion", refuse)
    off = load_cohort(folder, motion_correction=False)[0]
    np.testing.assert_array_equal(np.asarray(off.pwi.dataobj), raw)
    assert _motion.motion_record(off) == {"step": None,
                                          "motion_skipped": "motion correction switched off"}
    monkeypatch.setenv(_motion.MOTION_ENV, "off")
    by_env = load_cohort(folder)[0]
    np.testing.assert_array_equal(np.asarray(by_env.pwi.dataobj), raw)
    assert _motion.MOTION_ENV in _motion.motion_record(by_env)["motion_skipped"]
    # the patient's own setting wins over the environment
    assert load_cohort(folder, motion_correction=True)[0].motion_correction is True


def test_a_cohort_corrected_at_import_is_not_corrected_twice(tmp_path, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        folder = save_cohort(make_stroke_cohort(1, random_state=0), tmp_path / "cohort")
    recorded = {"displacement_mm": [0.0, 1.5], "corrected_frames": [1]}
    (folder / "import.json").write_text(json.dumps(
        {"participants": {"sub-001": {"registration": {"mode": "auto",
                                                      "motion": recorded}}}}))
    monkeypatch.setattr("sklearn_hemo.registration.correct_motion",
                        lambda *a, **k: pytest.fail("corrected twice"))
    patient = load_cohort(folder)[0]
    np.testing.assert_array_equal(np.asarray(patient.pwi.dataobj), np.asarray(
        nib.load(folder / "sub-001" / "pwi.nii.gz").dataobj))
    assert _motion.motion_record(patient) == {"step": "import", "motion": recorded}


def test_tiny_grids_are_read_as_they_are(tiny_cohort):
    patient = tiny_cohort[0]
    assert patient.pwi is patient.raw_pwi
    assert "too small" in _motion.motion_record(patient)["motion_skipped"]


@needs_sitk
def test_qc_shows_the_correction_at_load(layout, tmp_path):
    pytest.importorskip("matplotlib", reason="the QC report draws with matplotlib")
    from sklearn_hemo.qc import qc_summary, write_qc_report

    folder, _ = layout
    cohort = load_cohort(folder)[:1]
    results = write_qc_report(cohort, tmp_path / "qc", maps=False)
    qc = results[0]
    assert qc.motion["step"] == "load"
    largest = max(qc.motion["motion"]["displacement_mm"])
    assert largest > 1.0
    assert any("sub-001: the head moved by up to" in w and "at load" in w
               for w in qc.warnings)
    assert any("DSC motion corrected at load" in n for n in qc.notes)
    summary = qc_summary(results)
    assert f"sub-001 ({largest:.1f} mm)" in summary and "DSC head motion corrected" in summary
    page = (tmp_path / "qc" / "index.html").read_text()
    assert f"max {largest:.2f} mm" in page and "realigned (at load)" in page
    fd = max(qc.motion["motion"]["framewise_displacement_mm"])
    assert fd > 0 and f"framewise displacement up to {fd:.2f} mm" in page


def test_cli_no_motion_correction_reads_the_series_as_they_are(layout, tmp_path,
                                                               monkeypatch):
    pytest.importorskip("matplotlib", reason="the QC report draws with matplotlib")
    from sklearn_hemo.cli import main

    folder, before = layout
    monkeypatch.delenv(_motion.MOTION_ENV, raising=False)
    monkeypatch.setattr("sklearn_hemo.registration.correct_motion",
                        lambda *a, **k: pytest.fail("corrected although switched off"))
    assert main(["qc", "--data", str(folder), "--out", str(tmp_path / "qc"), "--no-maps",
                 "--no-motion-correction", "--quiet"]) == 0
    page = (tmp_path / "qc" / "index.html").read_text()
    assert page.count(f"motion correction switched off ({_motion.MOTION_ENV})") == 4
    assert _motion.MOTION_ENV not in __import__("os").environ  # only for the run
    assert _files(folder) == before
