"""Cohorts on disk: round trip, odd but valid acquisitions, and every malformed variant."""

import gzip
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from sklearn_hemo.datasets import (
    ArterialInputFunction,
    Cohort,
    CohortError,
    Patient,
    load_cohort,
    load_patient,
    make_stroke_cohort,
    save_cohort,
)


def _data(img):
    return np.asarray(img.dataobj)


def test_round_trip_voxel_for_voxel(tiny_cohort, tiny_cohort_dir):
    loaded = load_cohort(tiny_cohort_dir)
    assert loaded.ids == tiny_cohort.ids and loaded.path == tiny_cohort_dir
    np.testing.assert_array_equal(loaded.ht, tiny_cohort.ht)
    for a, b in zip(tiny_cohort, loaded, strict=True):
        assert b.source("pwi").name == "pwi.nii.gz"
        assert (a.echo_time, a.repetition_time) == (b.echo_time, b.repetition_time)
        for name in ("pwi", "dwi_b0", "dwi_b1000", "brain_mask", "ht_mask"):
            img_a, img_b = getattr(a, name), getattr(b, name)
            np.testing.assert_array_equal(_data(img_a), _data(img_b))
            assert _data(img_b).dtype == _data(img_a).dtype
            np.testing.assert_allclose(img_b.affine, img_a.affine, atol=1e-6)
        np.testing.assert_array_equal(a.aif.time, b.aif.time)
        np.testing.assert_array_equal(a.aif.values, b.aif.values)
        assert b.aif.kind == a.aif.kind
        assert set(a.truth) == set(b.truth)
        for key, value in a.truth.items():
            np.testing.assert_array_equal(value, b.truth[key])
    assert loaded.validate() is loaded


def _odd_patient(pid, rng, affine, n_frames, tr, shape=(7, 5, 3), kind="signal"):
    t = np.arange(n_frames) * tr
    bolus = 3.0 * np.exp(-0.5 * ((t - 20.0) / 4.0) ** 2)
    signal = (800 * np.exp(-0.03 * bolus))[None, None, None, :] * np.ones(shape + (1,))
    signal += rng.normal(0, 5, signal.shape)
    b0 = rng.uniform(500, 900, shape).astype(np.float32)
    aif_values = 800 * np.exp(-0.03 * 10 * bolus) if kind == "signal" else 10 * bolus
    return Patient(
        pid,
        nib.Nifti1Image(signal.astype(np.float32), affine),
        nib.Nifti1Image(b0, affine),
        nib.Nifti1Image(b0 * 0.4, affine),
        echo_time=0.028,
        repetition_time=tr,
        ht=int(pid.endswith("1")),
        ht_mask=nib.Nifti1Image((rng.random(shape) < 0.1 * int(pid.endswith("1"))).astype(
            np.uint8), affine),
        aif=ArterialInputFunction(t, aif_values, kind),
    )


def test_hand_built_odd_acquisitions_load(tmp_path):
    rng = np.random.default_rng(0)
    c, s = np.cos(0.3), np.sin(0.3)
    oblique = np.array([[0.9 * c, -0.9 * s, 0.0, -30.0],
                        [0.9 * s, 0.9 * c, 0.4, 12.5],
                        [0.0, 0.0, 6.5, -40.0],
                        [0.0, 0.0, 0.0, 1.0]])  # rotated, sheared, 0.9 x 0.9 x 6.5 mm
    specs = [("sub-a1", 50, 1.2, "signal"), ("sub-b2", 90, 2.0, "concentration"),
             ("sub-c3", 67, 1.55, "signal")]
    patients = [_odd_patient(pid, rng, oblique, nt, tr, kind=kind)
                for pid, nt, tr, kind in specs]
    folder = save_cohort(Cohort(patients), tmp_path / "odd")
    # an uncompressed .nii is accepted too
    img = nib.load(folder / "sub-c3" / "dwi_b0.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), folder / "sub-c3" /
             "dwi_b0.nii")
    (folder / "sub-c3" / "dwi_b0.nii.gz").unlink()
    cohort = load_cohort(folder).validate()
    for p, (pid, nt, tr, kind) in zip(cohort, specs, strict=True):
        assert p.id == pid and p.n_frames == nt and p.repetition_time == tr
        assert p.brain_mask is None and p.get_brain_mask().all()
        np.testing.assert_allclose(p.affine, oblique, atol=1e-5)
        np.testing.assert_allclose(p.frame_times[-1], (nt - 1) * tr)
        assert p.aif.kind == kind and p.truth is None
    assert cohort[2].source("dwi_b0").name == "dwi_b0.nii"


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    cohort = make_stroke_cohort(2, (8, 8, 2), random_state=0, ht_prevalence=0.5, n_frames=45,
                                difficulty="easy")
    return save_cohort(cohort, tmp_path_factory.mktemp("small"))


@pytest.fixture
def copy_dir(small_dir, tmp_path):
    target = tmp_path / "cohort"
    shutil.copytree(small_dir, target)
    return target


def _set_image(path, data, affine=None):
    ref = nib.load(path)
    nib.save(nib.Nifti1Image(data, ref.affine if affine is None else affine), path)


def _edit_json(path, **changes):
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _corrupt(path):
    raw = bytearray(path.read_bytes())
    raw[10:60] = bytes(50)
    path.write_bytes(bytes(raw))


def _first_pwi(d):
    return np.asarray(nib.load(d / "sub-002" / "pwi.nii.gz").dataobj).astype(np.float32)


BREAKERS = {
    "missing sidecar": (lambda d: (d / "sub-002" / "pwi.json").unlink(), "pwi.json"),
    "echo time in ms": (lambda d: _edit_json(d / "sub-002" / "pwi.json", EchoTime=30.0),
                        "milliseconds"),
    "repetition time in ms": (
        lambda d: _edit_json(d / "sub-002" / "pwi.json", RepetitionTime=1500), "milliseconds"),
    "echo time missing": (lambda d: (d / "sub-002" / "pwi.json").write_text('{"TE": 0.03}'),
                          "EchoTime"),
    "3D PWI": (lambda d: _set_image(d / "sub-002" / "pwi.nii.gz", _first_pwi(d)[..., 0]),
               "4D"),
    "DWI on another shape": (
        lambda d: _set_image(d / "sub-002" / "dwi_b0.nii.gz", np.ones((8, 8, 3), np.float32)),
        "dwi_b0"),
    "DWI on another affine": (
        lambda d: _set_image(d / "sub-002" / "dwi_b1000.nii.gz", np.ones((8, 8, 2), np.float32),
                             np.diag([2.0, 2.0, 5.0, 1.0])), "affine"),
    "mask on another grid": (
        lambda d: _set_image(d / "sub-002" / "brain_mask.nii.gz", np.ones((4, 8, 2), np.uint8)),
        "brain_mask"),
    "missing DWI": (lambda d: (d / "sub-002" / "dwi_b1000.nii.gz").unlink(), "dwi_b1000"),
    "truncated nii.gz": (lambda d: _truncate(d / "sub-002" / "pwi.nii.gz"), "pwi.nii.gz"),
    "corrupt nii.gz": (lambda d: _corrupt(d / "sub-002" / "dwi_b0.nii.gz"), "dwi_b0.nii.gz"),
    "listed without folder": (
        lambda d: (d / "participants.tsv").write_text(
            (d / "participants.tsv").read_text() + "sub-002x\t0\n"), "sub-002x"),
    "folder missing": (lambda d: shutil.rmtree(d / "sub-002"), "does not exist"),
    "duplicate ids": (
        lambda d: (d / "participants.tsv").write_text(
            (d / "participants.tsv").read_text() + "sub-002\t1\n"), "twice"),
    "bad ht label": (
        lambda d: (d / "participants.tsv").write_text("participant_id\tht\nsub-001\t0\n"
                                                      "sub-002\tyes\n"), "ht"),
    "aif columns": (lambda d: (d / "sub-002" / "aif.tsv").write_text("t\tc\n0\t1\n1\t2\n"),
                    "aif.tsv"),
    "aif not increasing": (
        lambda d: (d / "sub-002" / "aif.tsv").write_text("time\tsignal\n0\t1\n0\t2\n"),
        "increase"),
}


@pytest.mark.parametrize("variant", sorted(BREAKERS))
def test_malformed_cohort_fails_naming_participant(copy_dir, variant):
    breaker, fragment = BREAKERS[variant]
    breaker(copy_dir)
    with pytest.raises(CohortError, match="sub-002") as info:
        load_cohort(copy_dir)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def _nan_signal(d):
    data = _first_pwi(d)
    data[3, 3, 1, 20] = np.nan
    _set_image(d / "sub-002" / "pwi.nii.gz", data)


def _zero_baseline(d):
    data = _first_pwi(d)
    data[4, 4, 0, :] = 0
    _set_image(d / "sub-002" / "pwi.nii.gz", data)


def _contradicting_label(d):
    table = d / "participants.tsv"
    table.write_text(table.read_text().replace("sub-002\t1", "sub-002\t0"))
    _set_image(d / "sub-002" / "ht_mask.nii.gz", np.ones((8, 8, 2), np.uint8))


def _garbage_data(d):
    # valid header and size, deflate stream damaged after the header: only reading tells
    path = d / "sub-002" / "pwi.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    comp = bytearray(gzip.compress(raw))
    comp[len(comp) // 2: len(comp) // 2 + 40] = bytes(range(40))
    path.write_bytes(bytes(comp))


DATA_BREAKERS = {
    "NaN in signal": (_nan_signal, "NaN"),
    "non-positive baseline": (_zero_baseline, "baseline"),
    "label contradicts annotation": (_contradicting_label, "ht = 0"),
}


@pytest.mark.parametrize("variant", sorted(DATA_BREAKERS))
def test_validate_reads_data_and_fails_naming_participant(copy_dir, variant):
    breaker, fragment = DATA_BREAKERS[variant]
    breaker(copy_dir)
    cohort = load_cohort(copy_dir)  # headers are fine
    with pytest.raises(CohortError, match="sub-002") as info:
        cohort.validate()
    assert fragment in str(info.value)


def test_damaged_data_fails_at_load_or_validate(copy_dir):
    _garbage_data(copy_dir)
    with pytest.raises(CohortError, match="sub-002.*pwi.nii.gz"):
        load_cohort(copy_dir).validate()


def test_missing_table_and_folder(tmp_path):
    with pytest.raises(CohortError, match="does not exist"):
        load_cohort(tmp_path / "nowhere")
    with pytest.raises(CohortError, match="participants.tsv"):
        load_cohort(tmp_path)


def test_corrupt_truth_is_reported_lazily(copy_dir):
    (copy_dir / "sub-001" / "truth.npz").write_bytes(b"not a zip file")
    cohort = load_cohort(copy_dir)  # truth is optional and read on first use
    with pytest.raises(CohortError, match="sub-001.*truth.npz"):
        _ = cohort[0].truth


def test_ht_not_available_reads_as_none(copy_dir):
    (copy_dir / "participants.tsv").write_text("participant_id\tage\nsub-001\t70\nsub-002\t81\n")
    cohort = load_cohort(copy_dir)
    assert [p.ht for p in cohort] == [None, None]
    np.testing.assert_array_equal(cohort.ht, [-1, -1])


def test_save_refuses_existing_cohort_and_overwrite_drops_stale_files(tiny_cohort, tmp_path):
    folder = save_cohort(tiny_cohort[:2], tmp_path / "c")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_cohort(tiny_cohort[:2], folder)
    p = tiny_cohort[0]
    bare = Patient(p.id, p.pwi, p.dwi_b0, p.dwi_b1000, echo_time=p.echo_time,
                   repetition_time=p.repetition_time, ht=None)
    save_cohort(Cohort([bare]), folder, overwrite=True)
    assert sorted(f.name for f in (folder / p.id).iterdir()) == [
        "dwi_b0.nii.gz", "dwi_b1000.nii.gz", "pwi.json", "pwi.nii.gz"]
    reloaded = load_cohort(folder)
    assert reloaded.ids == [p.id] and reloaded[0].truth is None and reloaded[0].aif is None
    assert reloaded[0].ht_mask is None and reloaded[0].ht is None


def test_save_round_trips_a_loaded_cohort(tiny_cohort_dir, tmp_path):
    loaded = load_cohort(tiny_cohort_dir)
    copy = load_cohort(save_cohort(loaded, tmp_path / "copy", verbose=1))
    for a, b in zip(loaded, copy, strict=True):
        np.testing.assert_array_equal(_data(a.pwi), _data(b.pwi))
        np.testing.assert_array_equal(a.truth["risk"], b.truth["risk"])


def test_in_memory_patients_are_validated(tiny_cohort):
    p = tiny_cohort[0]
    shifted = nib.Nifti1Image(_data(p.dwi_b0), p.affine @ np.diag([1, 1, 1, 1.0]) + np.eye(4))
    bad = Patient("sub-x", p.pwi, shifted, p.dwi_b1000, echo_time=0.03, repetition_time=1.5)
    with pytest.raises(CohortError, match="sub-x.*dwi_b0 \\(in memory\\).*affine"):
        bad.validate()


def test_load_patient_from_dot_keeps_the_participant_id(tiny_cohort_dir, monkeypatch):
    # "." has an empty name: the id must come from the folder itself
    monkeypatch.chdir(tiny_cohort_dir / "sub-001")
    assert load_patient(".").id == "sub-001"
    assert load_patient("../sub-002").id == "sub-002"


def test_deriving_a_brain_mask_from_nan_baseline_names_the_participant():
    pwi = np.full((4, 4, 2, 8), 100.0, dtype=np.float32)
    pwi[1, 1, 0, 0] = np.nan
    dwi = nib.Nifti1Image(np.ones((4, 4, 2), np.float32), np.eye(4))
    patient = Patient("sub-nan", nib.Nifti1Image(pwi, np.eye(4)), dwi, dwi,
                      echo_time=0.03, repetition_time=1.5)
    with pytest.raises(CohortError, match="sub-nan.*NaN or inf"):
        patient.get_brain_mask()
    pwi[1, 1, 0, 0] = 100.0
    assert patient.get_brain_mask().all()


# -- up-front checks before writing ------------------------------------------------------
def _renamed(patient, pid):
    return Patient(pid, patient.pwi, patient.dwi_b0, patient.dwi_b1000,
                   echo_time=patient.echo_time, repetition_time=patient.repetition_time,
                   ht=patient.ht, ht_mask=patient.ht_mask)


@pytest.mark.parametrize("verbose", [0, 2])
def test_repeated_ids_in_a_list_write_nothing(tiny_cohort, tmp_path, verbose):
    from sklearn_hemo.datasets._layout import write_cohort

    patients = [tiny_cohort[0], tiny_cohort[1], _renamed(tiny_cohort[2], tiny_cohort[0].id)]
    target = tmp_path / "out"
    with pytest.raises(CohortError, match=f"participant {tiny_cohort[0].id} appears twice"):
        save_cohort(patients, target, verbose=verbose)
    assert not target.exists()
    with pytest.raises(CohortError, match="appears twice"):
        write_cohort(patients, target)
    assert not target.exists()
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(CohortError, match="cannot name a folder"):
        save_cohort([tiny_cohort[0], _renamed(tiny_cohort[1], "../x")], tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []


def test_repeated_ids_in_a_generator_never_overwrite(tiny_cohort, tmp_path):
    first = tiny_cohort[0]
    clash = _renamed(tiny_cohort[1], first.id)
    target = tmp_path / "out"
    with pytest.raises(CohortError, match=f"participant {first.id} appears twice"):
        save_cohort(iter([first, clash]), target)
    written = nib.load(target / first.id / "pwi.nii.gz")
    np.testing.assert_array_equal(_data(written), _data(first.pwi))  # not the clash's
    assert not (target / "participants.tsv").exists()


# -- label vs annotation, both ways -------------------------------------------------------
def test_ht_label_without_annotated_voxels_fails(copy_dir):
    table = copy_dir / "participants.tsv"
    assert "sub-001\t1" in table.read_text()
    _set_image(copy_dir / "sub-001" / "ht_mask.nii.gz", np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(CohortError, match="sub-001.*ht_mask.*no voxel.*ht = 1"):
        load_cohort(copy_dir).validate()
    with pytest.raises(CohortError, match="ht = 1"):
        load_cohort(copy_dir)[0].validate()
    table.write_text(table.read_text().replace("sub-001\t1", "sub-001\t0"))
    assert load_cohort(copy_dir).validate()[0].ht == 0


def test_simulated_bleeders_always_have_voxels():
    cohort = make_stroke_cohort(8, (6, 6, 1), random_state=3, ht_prevalence=0.5, n_frames=45,
                                difficulty="easy")
    assert (cohort.ht == 1).sum() >= 3
    assert cohort.validate() is cohort


# -- NIfTI time step vs RepetitionTime ------------------------------------------------------
def _set_time_step(path, step, unit="sec"):
    img = nib.load(path)
    new = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
    new.header.set_xyzt_units("mm", unit)
    new.header.set_zooms(img.header.get_zooms()[:3] + (step,))
    nib.save(new, path)


def test_saved_pwi_header_holds_the_repetition_time(tiny_cohort, tiny_cohort_dir):
    for p in tiny_cohort:
        header = nib.load(tiny_cohort_dir / p.id / "pwi.nii.gz").header
        assert header.get_xyzt_units()[1] == "sec"
        assert header.get_zooms()[3] == pytest.approx(p.repetition_time, rel=1e-6)


def test_own_files_never_warn_even_from_bad_headers(tmp_path, recwarn):
    p = make_stroke_cohort(1, (6, 6, 1), random_state=0, n_frames=45, difficulty="easy")[0]
    header = p.pwi.header.copy()
    header.set_xyzt_units("unknown", "unknown")
    header.set_zooms(header.get_zooms()[:3] + (0.0,))
    bare = Patient(p.id, nib.Nifti1Image(np.asarray(p.pwi.dataobj), p.affine, header),
                   p.dwi_b0, p.dwi_b1000, echo_time=p.echo_time,
                   repetition_time=p.repetition_time)
    folder = save_cohort([bare], tmp_path / "c")
    assert header.get_zooms()[3] == 0.0  # the caller's image is left alone
    load_cohort(folder)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    assert nib.load(folder / p.id / "pwi.nii.gz").header.get_zooms()[3] == pytest.approx(
        p.repetition_time, rel=1e-6)


@pytest.mark.parametrize("factor, unit", [(0.0, "sec"), (1.0, "sec"), (1000.0, "msec"),
                                          (1.005, "sec"), (1000.0, "sec")])
def test_time_step_in_seconds_milliseconds_or_zero_is_accepted(copy_dir, factor, unit,
                                                               recwarn):
    tr = json.loads((copy_dir / "sub-002" / "pwi.json").read_text())["RepetitionTime"]
    _set_time_step(copy_dir / "sub-002" / "pwi.nii.gz", tr * factor, unit)
    cohort = load_cohort(copy_dir)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    assert cohort[1].repetition_time == tr


def test_time_step_placeholder_of_one_without_unit_is_ignored(copy_dir, recwarn):
    _set_time_step(copy_dir / "sub-002" / "pwi.nii.gz", 1.0, "unknown")
    load_cohort(copy_dir)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    _set_time_step(copy_dir / "sub-002" / "pwi.nii.gz", 1.0, "sec")  # a unit: it means it
    with pytest.warns(UserWarning, match="sub-002.*is 1 sec"):
        load_cohort(copy_dir)


def test_time_step_contradicting_the_sidecar_warns_and_sidecar_wins(copy_dir):
    tr = json.loads((copy_dir / "sub-002" / "pwi.json").read_text())["RepetitionTime"]
    _set_time_step(copy_dir / "sub-002" / "pwi.nii.gz", 2.5 * tr, "sec")
    with pytest.warns(UserWarning, match="sub-002.*pwi.nii.gz.*pixdim") as record:
        cohort = load_cohort(copy_dir)
    message = str(record[0].message)
    assert f"{2.5 * tr:g}" in message and f"{tr:g} s" in message and "pwi.json wins" in message
    assert record[0].filename == __file__  # points at the caller of load_cohort
    assert cohort[1].repetition_time == tr
    np.testing.assert_allclose(cohort[1].frame_times[1], tr)
    with pytest.warns(UserWarning, match="pwi.json wins"):
        load_patient(copy_dir / "sub-002")
