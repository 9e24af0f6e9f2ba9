"""Import of BIDS-style trees: sidecars, DWI split, resampling onto the PWI grid, refusals.

The round trip writes a simulated cohort the way a scanner and dcm2niix would give it
(oblique PWI, 4D DWI with b-values at another resolution and orientation, HT annotation at
follow-up resolution, SliceTiming) and imports it back.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to

from sklearn_hemo.cli import main
from sklearn_hemo.datasets import (
    CohortError,
    import_cohort,
    load_cohort,
    make_stroke_cohort,
    save_cohort,
)
from sklearn_hemo.preprocessing import PatchExtractor
from sklearn_hemo.signal import _patient_arrival, concentration, resample_time

SHAPE = (16, 16, 3)
DIRECTION_GAIN = np.array([1.3, 0.8, 1 / (1.3 * 0.8)])  # product 1: trace = b1000


def _rotation(angle_deg, axis):
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    r = np.eye(4)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _other_grid(pwi_shape, pwi_affine, zoom_factor, rotation, margin=1.25):
    """A grid of its own resolution and orientation covering the PWI's field of view."""
    zooms = np.sqrt((pwi_affine[:3, :3] ** 2).sum(axis=0)) * np.asarray(zoom_factor)
    # the PWI's corners in the new grid's axes (rotation only), in mm
    corners = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in pwi_shape])).reshape(3, -1)
    world = pwi_affine[:3, :3] @ corners + pwi_affine[:3, 3:]
    local = rotation[:3, :3].T @ world
    centre = (local.max(axis=1) + local.min(axis=1)) / 2
    extent = (local.max(axis=1) - local.min(axis=1)) * margin
    shape = tuple(int(np.ceil(e / z)) for e, z in zip(extent, zooms, strict=True))
    affine = np.eye(4)
    affine[:3, :3] = rotation[:3, :3] @ np.diag(zooms)
    affine[:3, 3] = rotation[:3, :3] @ centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return shape, affine


def nearest(img, grid):
    """``img`` (a mask) on ``grid`` by nearest neighbour, edge voxels kept whole."""
    shift = np.eye(4)
    shift[:3, 3] = -1
    padded = nib.Nifti1Image(np.pad(np.asarray(img.dataobj), 1), img.affine @ shift)
    out = resample_from_to(padded, grid, order=0, mode="nearest")
    return np.asarray(out.dataobj).astype(np.uint8)


def _save(img, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def _write_json(path, meta):
    path.write_text(json.dumps(meta), encoding="utf-8")


def oblique(cohort):
    """The cohort with every image of each patient on an oblique (rotated) affine."""
    tilt = _rotation(12, 0) @ _rotation(-8, 2)
    for p in cohort:
        for name in ("pwi", "dwi_b0", "dwi_b1000", "brain_mask", "ht_mask"):
            img = getattr(p, name)
            p._images[name] = nib.Nifti1Image(np.asarray(img.dataobj), tilt @ img.affine)
    return cohort


def write_bids(cohort, root, *, slice_timing=True, volume_timing=False, dwi_shift=0.0,
               bvals=(0, 5, 995, 1000, 1005), participants=True):
    """Write ``cohort`` as a BIDS-style tree the way dcm2niix and a reader would."""
    rows = ["participant_id\tht\tage"]
    expected = {}
    for n, p in enumerate(cohort):
        sub = f"sub-{n + 1:02d}"
        acute, follow = root / sub / "ses-acute", root / sub / "ses-followup"
        _save(p.pwi, acute / "perf" / f"{sub}_ses-acute_dsc.nii.gz")
        # the easy cohort's physics has no field strength: a scanner's would give it one
        meta = {"EchoTime": p.echo_time}
        if p.field_strength is not None:
            meta["MagneticFieldStrength"] = p.field_strength
        if volume_timing:
            meta["VolumeTiming"] = (np.arange(p.n_frames) * p.repetition_time + 2.0).tolist()
        else:
            meta["RepetitionTime"] = p.repetition_time
        st = None
        if slice_timing:
            # interleaved acquisition: slices 0, 2, then 1
            st = (np.array([0.0, 2.0, 1.0]) * p.repetition_time / 3).tolist()
            meta["SliceTiming"] = st
        _write_json(acute / "perf" / f"{sub}_ses-acute_dsc.json", meta)
        # DWI: b0 twice, three b1000 directions, own resolution and orientation
        shape, affine = _other_grid(p.shape, p.affine, (0.7, 0.7, 0.6), _rotation(20, 2),
                                    margin=1.5)
        affine = affine.copy()
        affine[:3, 3] += dwi_shift
        grid = (shape, affine)
        b0 = resample_from_to(p.dwi_b0, grid, order=1, mode="nearest").get_fdata()
        b1000 = resample_from_to(p.dwi_b1000, grid, order=1, mode="nearest").get_fdata()
        volumes = []
        for b in bvals:
            if b < 100:
                volumes.append(b0 * (1.02 if b else 0.98))
            else:
                volumes.append(b1000 * DIRECTION_GAIN[len(volumes) % 3])
        volumes = np.stack(volumes, axis=-1).astype(np.float32)
        stem = acute / "dwi" / f"{sub}_ses-acute_dwi"
        _save(nib.Nifti1Image(volumes, affine), stem.with_name(stem.name + ".nii.gz"))
        stem.with_name(stem.name + ".bval").write_text(" ".join(map(str, bvals)) + "\n")
        vectors = np.zeros((3, len(bvals)))
        for v, b in enumerate(bvals):
            if b >= 100:
                vectors[v % 3, v] = 1.0
        stem.with_name(stem.name + ".bvec").write_text(
            "\n".join(" ".join(f"{x:g}" for x in row) for row in vectors) + "\n")
        # HT annotation on the follow-up scan: finer, another orientation
        ht_shape, ht_affine = _other_grid(p.shape, p.affine, (0.5, 0.5, 0.5),
                                          _rotation(-15, 2), margin=1.1)
        ht = nearest(p.ht_mask, (ht_shape, ht_affine))
        _save(nib.Nifti1Image(ht, ht_affine),
              follow / "anat" / f"{sub}_ses-followup_label-HT_mask.nii.gz")
        rows.append(f"{sub}\t{p.ht}\t{60 + n}")
        expected[sub] = dict(patient=p, dwi_grid=grid, slice_timing=st,
                             b0=b0, b1000=b1000)
    if participants:
        (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return expected


def hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def interpolation_error(got, ref, brain):
    """Mean absolute error in the brain relative to the mean, checked to be well below
    that of a one-voxel misregistration (at 16 x 16 x 3, one voxel is 15 to 33 mm)."""
    scale = np.abs(ref[brain]).mean()
    error = np.abs(got - ref)[brain].mean() / scale
    shifted = min(np.abs(np.roll(ref, 1, axis=a) - ref)[brain].mean() / scale for a in (0, 1))
    assert error < 0.75 * shifted, (error, shifted)
    return error


def dice(a, b):
    a, b = a > 0, b > 0
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def cohort():
    # two bleeders and one without: every patient's annotation exercises the resampling
    return oblique(make_stroke_cohort(n_patients=3, shape=SHAPE, ht_prevalence=0.67,
                                      random_state=2, difficulty="easy"))


@pytest.fixture(scope="module")
def imported(cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("bids")
    expected = write_bids(cohort, root)
    before = hashes(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete, overlapping tree imports silently
        result = import_cohort(root, tmp_path_factory.mktemp("out") / "cohort")
    return root, expected, before, result


# -- round trip ------------------------------------------------------------------------------
def test_round_trip_leaves_the_source_untouched(imported):
    root, _, before, _ = imported
    assert hashes(root) == before


def test_round_trip_pwi_and_sidecar(imported, cohort):
    _, expected, _, result = imported
    assert result.ids == ["sub-01", "sub-02", "sub-03"]
    for sub, original in zip(result, cohort, strict=True):
        np.testing.assert_array_equal(np.asarray(sub.pwi.dataobj),
                                      np.asarray(original.pwi.dataobj))
        np.testing.assert_allclose(sub.affine, original.affine, atol=1e-5)
        assert sub.echo_time == pytest.approx(original.echo_time)
        assert sub.repetition_time == pytest.approx(original.repetition_time)
        np.testing.assert_allclose(sub.slice_timing, expected[sub.id]["slice_timing"])
        meta = json.loads((result.path / sub.id / "pwi.json").read_text())
        np.testing.assert_allclose(meta["SliceTiming"], expected[sub.id]["slice_timing"])
        assert sub.ht == original.ht


def test_round_trip_dwi_within_interpolation_error(imported, cohort):
    _, expected, _, result = imported
    for sub, original in zip(result, cohort, strict=True):
        info = expected[sub.id]
        grid = (original.shape, original.affine)
        for name, on_dwi_grid in (("dwi_b0", info["b0"]), ("dwi_b1000", info["b1000"])):
            got = np.asarray(getattr(sub, name).dataobj)
            # exactly the two linear resamplings (there and back): the b0 mean and the
            # geometric mean of the directions introduce no error of their own
            back = resample_from_to(nib.Nifti1Image(on_dwi_grid, info["dwi_grid"][1]), grid,
                                    order=1, mode="nearest").get_fdata()
            np.testing.assert_allclose(got, back, rtol=1e-4, atol=1e-3 * back.max())
            # and close to the original, up to the blur of interpolating twice
            ref = np.asarray(getattr(original, name).dataobj, dtype=float)
            brain = original.get_brain_mask()
            assert interpolation_error(got, ref, brain) < 0.12, sub.id


def test_round_trip_ht_annotation(imported, cohort):
    _, _, _, result = imported
    assert sum(p.ht for p in result) >= 1
    for sub, original in zip(result, cohort, strict=True):
        got = np.asarray(sub.ht_mask.dataobj)
        ref = np.asarray(original.ht_mask.dataobj)
        assert set(np.unique(got)) <= {0, 1}
        if ref.any():
            assert dice(got, ref) > 0.8, (sub.id, dice(got, ref))
        else:
            assert not got.any()


def test_import_log_records_decisions(imported):
    _, _, _, result = imported
    log = json.loads((result.path / "import.json").read_text())
    record = log["participants"]["sub-01"]
    assert record["dwi"].endswith("sub-01_ses-acute_dwi.nii.gz")
    assert any("volumes [0, 1]" in note and "volumes [2, 3, 4]" in note
               for note in record["notes"])


def test_load_cohort_reads_the_import_as_it_is(imported):
    _, _, _, result = imported
    again = load_cohort(result.path)
    again.validate()
    np.testing.assert_allclose(again[1].slice_timing, result[1].slice_timing)


# -- slice timing in the time axis ---------------------------------------------------------
def test_slice_timing_shifts_each_slice_on_the_common_grid(imported):
    _, _, _, result = imported
    patient = result[0]
    extractor = PatchExtractor(result, patch_size=1, inputs="pwi").fit(np.zeros((1, 4), int))
    pwi = np.asarray(patient.pwi.dataobj, dtype=np.float32)
    arrival = _patient_arrival(patient)
    brain = patient.get_brain_mask()
    refs = []
    for k in range(patient.shape[2]):
        i, j = np.argwhere(brain[:, :, k])[0]
        refs.append((0, i, j, k))
    features = extractor.transform(np.array(refs))
    for row, (_, i, j, k) in zip(features, refs, strict=True):
        curve = concentration(pwi[i, j, k], patient.echo_time, baseline=arrival)
        expected = resample_time(curve, patient.slice_frame_times(k))
        np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-4)
        if patient.slice_timing[k] > 0:  # the shift changes the features
            unshifted = resample_time(curve, patient.frame_times)
            assert not np.allclose(row, unshifted, rtol=1e-3, atol=1e-3)
    # the slice-by-slice pass (iter_volume) gives the same features as transform
    for ijk, chunk in extractor.iter_volume(0, chunk_size=64):
        again = extractor.transform(np.column_stack([np.zeros(len(ijk), int), ijk]))
        np.testing.assert_allclose(chunk, again, rtol=1e-6)


# -- other inputs ------------------------------------------------------------------------------
def test_uniform_volume_timing_and_ht_from_the_mask(cohort, tmp_path):
    src = tmp_path / "src"
    write_bids(cohort[:2], src, volume_timing=True, slice_timing=False, participants=False)
    result = import_cohort(src, tmp_path / "out")
    for sub, original in zip(result, cohort[:2], strict=True):
        assert sub.repetition_time == pytest.approx(original.repetition_time)
        assert sub.slice_timing is None
        assert sub.ht == int(np.asarray(original.ht_mask.dataobj).any())


def test_multi_echo_uses_the_echo_nearest_30ms(cohort, tmp_path):
    src = tmp_path / "src"
    write_bids(cohort[:1], src, slice_timing=False)
    perf = src / "sub-01" / "ses-acute" / "perf"
    base = perf / "sub-01_ses-acute_dsc.nii.gz"
    first = nib.load(base)
    data = np.asarray(first.dataobj)
    for echo, te, scale in ((1, 0.015, 2.0), (2, 0.033, 1.0), (3, 0.050, 0.5)):
        _save(nib.Nifti1Image(data * scale, first.affine),
              perf / f"sub-01_ses-acute_echo-{echo}_dsc.nii.gz")
        _write_json(perf / f"sub-01_ses-acute_echo-{echo}_dsc.json",
                    {"EchoTime": te, "RepetitionTime": cohort[0].repetition_time})
    base.unlink()
    (perf / "sub-01_ses-acute_dsc.json").unlink()
    with pytest.warns(UserWarning, match=r"echo-2_dsc.*33 ms, nearest 30 ms"):
        result = import_cohort(src, tmp_path / "out")
    assert result[0].echo_time == pytest.approx(0.033)
    np.testing.assert_allclose(np.asarray(result[0].pwi.dataobj), data, rtol=1e-6)


def test_map_for_a_tree_that_is_not_bids(cohort, tmp_path):
    src = tmp_path / "src"
    write_bids(cohort[:1], src, slice_timing=False)
    flat = tmp_path / "dcm2niix"
    flat.mkdir()
    acute = src / "sub-01" / "ses-acute"
    names = {"pwi": acute / "perf" / "sub-01_ses-acute_dsc",
             "dwi": acute / "dwi" / "sub-01_ses-acute_dwi"}
    rows = ["participant\trole\tpath"]
    for role, stem in names.items():
        for ext in (".nii.gz", ".json", ".bval", ".bvec"):
            if stem.with_name(stem.name + ext).exists():
                target = flat / f"series_{role}{ext}"
                target.write_bytes(stem.with_name(stem.name + ext).read_bytes())
        rows.append(f"patient7\t{role}\tseries_{role}.nii.gz")
    mask = next((src / "sub-01").rglob("*_mask.nii.gz"))
    rows.append(f"patient7\tht_mask\t{mask}")  # absolute paths work too
    (flat / "map.tsv").write_text("\n".join(rows) + "\n")
    result = import_cohort(flat, tmp_path / "out", mapping=flat / "map.tsv")
    assert result.ids == ["patient7"]
    bids = import_cohort(src, tmp_path / "out_bids")
    for name in ("pwi", "dwi_b0", "dwi_b1000", "ht_mask"):
        np.testing.assert_array_equal(np.asarray(getattr(result[0], name).dataobj),
                                      np.asarray(getattr(bids[0], name).dataobj))


def test_cli_import(cohort, tmp_path, capsys):
    src = tmp_path / "src"
    write_bids(cohort[:1], src)
    assert main(["import", str(src), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "imported 1 participant" in capsys.readouterr().out
    assert load_cohort(tmp_path / "out").ids == ["sub-01"]
    with pytest.raises(SystemExit, match="already holds a cohort"):
        main(["import", str(src), "--out", str(tmp_path / "out"), "--quiet"])


# -- refusals --------------------------------------------------------------------------------
def test_missing_b1000_is_refused(cohort, tmp_path):
    src = tmp_path / "src"
    write_bids(cohort[:1], src, bvals=(0, 0, 500))
    before = hashes(src)
    with pytest.raises(CohortError, match=r"participant sub-01: .*_dwi\.nii\.gz: no b1000 "
                       r"volume.*\[0\.0, 500\.0\].*dwi_b1000"):
        import_cohort(src, tmp_path / "out")
    assert hashes(src) == before
    assert not (tmp_path / "out").exists()


def test_missing_b0_is_refused(cohort, tmp_path):
    src = tmp_path / "src"
    write_bids(cohort[:1], src, bvals=(1000, 1000, 1000))
    with pytest.raises(CohortError, match=r"participant sub-01: .*no b0 volume"):
        import_cohort(src, tmp_path / "out")


def test_non_uniform_volume_timing_is_refused(cohort, tmp_path):
    src = tmp_path / "src"
    write_bids(cohort[:1], src, volume_timing=True)
    sidecar = next(src.rglob("*_dsc.json"))
    meta = json.loads(sidecar.read_text())
    meta["VolumeTiming"][5:] = [t + 0.7 for t in meta["VolumeTiming"][5:]]  # a pause
    _write_json(sidecar, meta)
    before = hashes(src)
    with pytest.raises(CohortError, match=r"participant sub-01: .*_dsc\.json: VolumeTiming "
                       r"is not uniform.*drop the irregular frames"):
        import_cohort(src, tmp_path / "out")
    assert hashes(src) == before


def test_non_overlapping_grids_are_refused(cohort, tmp_path):
    src = tmp_path / "src"
    write_bids(cohort[:1], src, dwi_shift=500.0)
    with pytest.raises(CohortError, match=r"participant sub-01: .*_dwi\.nii\.gz does not "
                       r"overlap the PWI field of view.*same participant and session"):
        import_cohort(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_partial_overlap_warns(cohort, tmp_path):
    src = tmp_path / "src"
    write_bids(cohort[:1], src, dwi_shift=np.array([300.0, 0.0, 0.0]))
    with pytest.warns(UserWarning, match=r"participant sub-01: .*_dwi\.nii\.gz covers only "
                      r"\d+% of the head"):
        import_cohort(src, tmp_path / "out")


def test_other_refusals(cohort, tmp_path):
    src = tmp_path / "src"
    write_bids(cohort[:1], src)
    with pytest.raises(ValueError, match="inside the source"):
        import_cohort(src, src / "derivatives" / "cohort")
    sidecar = next(src.rglob("*_dsc.json"))
    meta = json.loads(sidecar.read_text())
    meta["SliceTiming"] = [0.0, 0.5]
    _write_json(sidecar, meta)
    with pytest.raises(CohortError, match=r"participant sub-01: .*SliceTiming has 2 value"):
        import_cohort(src, tmp_path / "out")
    meta.pop("SliceTiming")
    meta["EchoTime"] = 30
    _write_json(sidecar, meta)
    with pytest.raises(CohortError, match=r"participant sub-01: .*EchoTime 30.* milliseconds"):
        import_cohort(src, tmp_path / "out")
    sidecar.unlink()
    with pytest.raises(CohortError, match=r"participant sub-01: .*_dsc\.json.*is missing.*"
                       r"dcm2niix"):
        import_cohort(src, tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CohortError, match="no DSC series found.*--map"):
        import_cohort(empty, tmp_path / "out")


def test_labels_that_contradict_the_annotation_are_refused(cohort, tmp_path):
    src = tmp_path / "src"
    bleeder = next(p for p in cohort if p.ht == 1)
    write_bids([bleeder], src)
    (src / "participants.tsv").write_text("participant_id\tht\nsub-01\t0\n")
    with pytest.raises(CohortError, match=r"participant sub-01: participants.tsv says ht = 0 "
                       r"but .*_mask\.nii\.gz marks"):
        import_cohort(src, tmp_path / "out")


# -- load_cohort(resample=True) --------------------------------------------------------------
def test_load_cohort_resample(cohort, tmp_path):
    original = next(p for p in cohort if p.ht == 1)
    folder = save_cohort([original], tmp_path / "cohort")
    grid = _other_grid(original.shape, original.affine, (0.5, 0.5, 0.5), _rotation(10, 2))
    b0_file = folder / original.id / "dwi_b0.nii.gz"
    mask_file = folder / original.id / "ht_mask.nii.gz"
    fine_b0 = resample_from_to(original.dwi_b0, grid, order=1, mode="nearest")
    nib.save(nib.Nifti1Image(fine_b0.get_fdata().astype(np.float32), grid[1]), b0_file)
    nib.save(nib.Nifti1Image(nearest(original.ht_mask, grid), grid[1]), mask_file)
    before = hashes(folder)
    with pytest.raises(CohortError, match="Resample it onto the PWI grid"):
        load_cohort(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_cohort(folder, resample=True)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2, messages
    assert "dwi_b0.nii.gz is not on the PWI grid; resampled" in messages[0]
    assert "ht_mask.nii.gz is not on the PWI grid; resampled" in messages[1]
    patient = loaded[0]
    assert patient.dwi_b0.shape == original.shape
    np.testing.assert_allclose(patient.dwi_b0.affine, original.affine, atol=1e-5)
    ref = np.asarray(original.dwi_b0.dataobj)
    brain = original.get_brain_mask()
    assert interpolation_error(np.asarray(patient.dwi_b0.dataobj), ref, brain) < 0.12
    assert dice(np.asarray(patient.ht_mask.dataobj), np.asarray(original.ht_mask.dataobj)) > 0.8
    loaded.validate()
    assert hashes(folder) == before  # resampled in memory only


def test_several_sessions_need_a_choice(cohort, tmp_path):
    src = tmp_path / "src"
    write_bids(cohort[:1], src, slice_timing=False)
    acute = src / "sub-01" / "ses-acute"
    later = src / "sub-01" / "ses-day1"
    for sub in ("perf", "dwi"):
        (later / sub).mkdir(parents=True)
        for file in (acute / sub).iterdir():
            (later / sub / file.name.replace("ses-acute", "ses-day1")).write_bytes(
                file.read_bytes())
    with pytest.raises(CohortError, match=r"participant sub-01: several DSC series.*"
                       r"--session"):
        import_cohort(src, tmp_path / "out")
    result = import_cohort(src, tmp_path / "out", session="ses-day1")
    log = json.loads((result.path / "import.json").read_text())
    assert "ses-day1" in log["participants"]["sub-01"]["pwi"]
    assert "ses-day1" in log["participants"]["sub-01"]["dwi"]


def test_split_dwi_given_in_a_map(cohort, tmp_path):
    patient = cohort[1]
    src = tmp_path / "raw"
    src.mkdir()
    nib.save(patient.pwi, src / "perf.nii.gz")
    _write_json(src / "perf.json", {"EchoTime": patient.echo_time,
                                    "RepetitionTime": patient.repetition_time})
    nib.save(patient.dwi_b0, src / "b0.nii.gz")
    nib.save(patient.dwi_b1000, src / "trace.nii.gz")
    rows = [("p1", "pwi", "perf.nii.gz"), ("p1", "dwi_b0", "b0.nii.gz"),
            ("p1", "dwi_b1000", "trace.nii.gz")]
    result = import_cohort(src, tmp_path / "out", mapping=rows)
    np.testing.assert_allclose(np.asarray(result[0].dwi_b1000.dataobj),
                               np.asarray(patient.dwi_b1000.dataobj), rtol=1e-6)
    assert result[0].ht is None and result[0].ht_mask is None
    with pytest.raises(CohortError, match=r"participant p1: map row 1: unknown role 'dsc'"):
        import_cohort(src, tmp_path / "out2", mapping=[rows[0], ("p1", "dsc", "b0.nii.gz")])


def test_the_field_strength_of_the_sidecar_reaches_the_cohort(tmp_path):
    # dcm2niix writes MagneticFieldStrength; a Siemens "3 T" system says 2.89. It selects
    # the relaxivities of absolute maps, so import must carry it into pwi.json
    realistic = make_stroke_cohort(n_patients=1, shape=(16, 16, 3), random_state=0)
    assert realistic[0].field_strength == 1.5
    root = tmp_path / "bids"
    write_bids(realistic, root, slice_timing=False)
    sidecar = root / "sub-01" / "ses-acute" / "perf" / "sub-01_ses-acute_dsc.json"
    meta = json.loads(sidecar.read_text())
    assert meta["MagneticFieldStrength"] == 1.5
    meta["MagneticFieldStrength"] = 2.89
    sidecar.write_text(json.dumps(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imported = import_cohort(root, tmp_path / "cohort", register="none")
    assert imported[0].field_strength == 2.89
    written = json.loads((tmp_path / "cohort" / "sub-01" / "pwi.json").read_text())
    assert written["MagneticFieldStrength"] == 2.89
    from sklearn_hemo.signal import patient_field_strength

    assert patient_field_strength(imported[0]) == 2.89  # within the 3 T tolerance
    meta["MagneticFieldStrength"] = "3T"
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(CohortError, match="MagneticFieldStrength"):
        import_cohort(root, tmp_path / "again", register="none")


def test_a_field_without_known_relaxivities_gives_relative_maps_and_says_so():
    from sklearn_hemo.signal import patient_field_strength

    patient = make_stroke_cohort(n_patients=1, shape=(16, 16, 3), random_state=0)[0]
    patient.field_strength = 7.0
    with pytest.warns(UserWarning, match="7 T"):
        assert patient_field_strength(patient) is None
