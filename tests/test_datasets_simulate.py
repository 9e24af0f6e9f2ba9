"""The simulated stroke cohort: physics, labels, determinism, streaming and the CLI."""

import copy
import pickle

import joblib
import numpy as np
import pytest
from scipy.integrate import trapezoid

from sklearn_hemo.cli import main
from sklearn_hemo.datasets import (
    Cohort,
    load_cohort,
    make_stroke_cohort,
    simulated_concentration,
)
from sklearn_hemo.datasets._simulate import _aif

TRUTH_KEYS = {"tissue", "cbf", "cbv", "mtt", "tmax", "delay", "dispersion", "k2", "adc", "s0",
              "susceptibility", "risk", "aif_concentration", "aif_params", "severity",
              "noise_sigma"}


def _data(img):
    return np.asarray(img.dataobj)


def test_tiny_cohort_fixture_contract(tiny_cohort):
    assert isinstance(tiny_cohort, Cohort) and len(tiny_cohort) == 6
    assert (tiny_cohort.ht == 1).sum() >= 2 and (tiny_cohort.ht == 0).sum() >= 2
    for p in tiny_cohort:
        assert p.shape == (12, 12, 2) and p.pwi.ndim == 4
        assert set(p.truth) == TRUTH_KEYS
        for key in ("tissue", "cbf", "cbv", "risk", "k2"):
            assert p.truth[key].shape == p.shape
        assert p.truth["aif_concentration"].shape == (p.n_frames,)
        assert p.aif.kind == "concentration" and p.aif.time.shape == (p.n_frames,)
        n_bleed = int((_data(p.ht_mask) > 0).sum())
        assert (n_bleed > 0) == bool(p.ht)
        np.testing.assert_array_equal(_data(p.brain_mask) > 0, p.truth["tissue"] > 0)
        p.validate()


def test_acquisitions_differ_within_documented_ranges():
    cohort = make_stroke_cohort(12, (8, 8, 1), random_state=1, difficulty="easy")
    tr = np.array([p.repetition_time for p in cohort])
    te = np.array([p.echo_time for p in cohort])
    nt = np.array([p.n_frames for p in cohort])
    assert tr.min() >= 1.2 and tr.max() <= 2.0 and np.unique(tr).size > 1
    assert te.min() >= 0.025 and te.max() <= 0.035
    assert nt.min() >= 45 and nt.max() <= 90 and np.unique(nt).size > 1
    for p in cohort:  # at least 6 baseline frames before the bolus arrives
        assert p.truth["aif_params"][0] >= 6 * p.repetition_time
        assert np.all(p.truth["aif_concentration"][:6] == 0)


def test_deterministic_and_patient_k_independent_of_cohort_size():
    small = make_stroke_cohort(3, (8, 8, 2), random_state=7, difficulty="easy")
    large = make_stroke_cohort(5, (8, 8, 2), random_state=7, difficulty="easy")
    other = make_stroke_cohort(3, (8, 8, 2), random_state=8, difficulty="easy")
    for a, b in zip(small, large[:3], strict=True):
        assert a.id == b.id and a.ht == b.ht and a.echo_time == b.echo_time
        np.testing.assert_array_equal(_data(a.pwi), _data(b.pwi))
        np.testing.assert_array_equal(_data(a.dwi_b1000), _data(b.dwi_b1000))
        np.testing.assert_array_equal(a.truth["risk"], b.truth["risk"])
    assert not np.array_equal(_data(small[0].pwi), _data(other[0].pwi))
    gen = make_stroke_cohort(2, (8, 8, 1), random_state=np.random.default_rng(3), difficulty="easy")
    assert len(gen) == 2


def test_concentration_recovered_from_noise_free_signal():
    p = make_stroke_cohort(1, (16, 16, 2), random_state=2, snr=None, difficulty="easy")[0]
    brain = p.truth["tissue"] > 0
    signal = _data(p.pwi)[brain].astype(float)
    s0 = p.truth["s0"][brain, None]
    recovered = -np.log(signal / s0) / p.echo_time
    expected = simulated_concentration(p.truth, p.frame_times)
    # only the rounding to integer magnitudes separates them
    tol = 0.6 / (signal * p.echo_time)
    assert np.all(np.abs(recovered - expected) <= tol)
    assert expected.max() > 3.0  # a real bolus passed
    # the paper's estimate, with S0 from pre-bolus frames, agrees as well
    baseline = signal[:, :6].mean(axis=1, keepdims=True)
    paper = -np.log(signal / baseline) / p.echo_time
    assert np.abs(paper - expected).max() < 0.1


def test_concentration_recovered_within_rician_noise():
    p = make_stroke_cohort(1, (24, 24, 2), random_state=4, snr=30.0, difficulty="easy")[0]
    brain = p.truth["tissue"] > 0
    signal = _data(p.pwi)[brain].astype(float)
    clean = p.truth["s0"][brain, None] * np.exp(
        -p.echo_time * simulated_concentration(p.truth, p.frame_times))
    sigma = float(p.truth["noise_sigma"])
    z = (signal - clean) / sigma  # Rician noise at high SNR is close to N(0, 1)
    assert abs(z.mean()) < 0.1 and 0.9 < z.std() < 1.1
    recovered = -np.log(signal / p.truth["s0"][brain, None]) / p.echo_time
    error = recovered - simulated_concentration(p.truth, p.frame_times)
    predicted_sd = sigma / (clean * p.echo_time)
    assert 0.85 < np.std(error / predicted_sd) < 1.15


def test_cbv_is_the_area_ratio_and_mtt_is_cbv_over_cbf(tiny_cohort):
    p = tiny_cohort[0]
    truth = p.truth
    brain = truth["tissue"] > 0
    times = np.arange(0.0, 600.0, 0.25)  # long enough for every curve to return to 0
    tissue = simulated_concentration(truth, times, leakage=False)
    ratio = trapezoid(tissue, times, axis=1) / trapezoid(_aif(truth["aif_params"], times), times)
    np.testing.assert_allclose(ratio, truth["cbv"][brain] / 100.0, rtol=2e-3)
    np.testing.assert_allclose(truth["mtt"][brain],
                               60.0 * truth["cbv"][brain] / truth["cbf"][brain], rtol=1e-4)
    assert np.all(truth["tmax"][brain] >= truth["delay"][brain])


def test_tissue_classes_follow_documented_physiology():
    cohort = make_stroke_cohort(8, (24, 24, 3), random_state=5, difficulty="easy")
    tissue = np.concatenate([p.truth["tissue"].ravel() for p in cohort])
    maps = {k: np.concatenate([p.truth[k].ravel() for p in cohort])
            for k in ("cbf", "cbv", "tmax", "delay", "adc", "k2")}
    grey, white, pen, core = (tissue == c for c in (1, 2, 3, 4))
    assert 48 < np.median(maps["cbf"][grey]) < 72 and 20 < np.median(maps["cbf"][white]) < 30
    assert 3.2 < np.median(maps["cbv"][grey]) < 4.8 and 1.6 < np.median(maps["cbv"][white]) < 2.4
    assert pen.any() and core.any()
    assert np.all((maps["delay"][pen] >= 3) & (maps["delay"][pen] <= 10))
    assert np.median(maps["tmax"][pen]) > 6 and np.median(maps["tmax"][grey | white]) < 3
    assert np.median(maps["cbf"][core]) < np.median(maps["cbf"][pen]) < np.median(
        maps["cbf"][white])
    assert np.median(maps["adc"][core]) < 0.8 * np.median(maps["adc"][white])
    assert np.all(maps["k2"][grey | white] == 0) and np.any(maps["k2"][core | pen] > 0)


def test_leakage_lifts_the_late_signal_only_after_arrival(tiny_cohort):
    p = next(q for q in tiny_cohort if q.truth["k2"].max() > 0)
    leaky = p.truth["k2"] > 0
    with_leak = simulated_concentration(p.truth, p.frame_times, mask=leaky)
    without = simulated_concentration(p.truth, p.frame_times, mask=leaky, leakage=False)
    arrival = p.truth["aif_params"][0] + p.truth["delay"][leaky].min()
    before = p.frame_times <= arrival
    np.testing.assert_allclose(with_leak[:, before], without[:, before])
    assert np.all(with_leak[:, -1] < without[:, -1])


def test_dwi_follows_the_adc(tiny_cohort):
    p = make_stroke_cohort(1, (12, 12, 2), random_state=0, snr=None, difficulty="easy")[0]
    brain = p.truth["tissue"] > 0
    adc = np.log(_data(p.dwi_b0)[brain] / _data(p.dwi_b1000)[brain]) / 1000.0
    np.testing.assert_allclose(adc, p.truth["adc"][brain], atol=3e-6)


def test_ht_prevalence_and_coherent_bleeding_in_the_lesion():
    # short acquisitions: the labels do not depend on them and the test stays fast
    cohort = make_stroke_cohort(60, (8, 8, 2), random_state=11, n_frames=45,
                                repetition_time=1.2, difficulty="easy")
    assert abs(cohort.ht.mean() - 0.26) < 0.05
    in_lesion, neighbours = [], []
    for p in cohort:
        bleed = _data(p.ht_mask) > 0
        risk = p.truth["risk"]
        assert risk.min() >= 0 and risk.max() <= 1
        assert np.all(risk[p.truth["tissue"] == 0] == 0)
        if not p.ht:
            assert not bleed.any() and np.all(risk == 0)
            continue
        in_lesion.append((p.truth["tissue"][bleed] >= 3).mean())
        # spatially coherent: most bleeding voxels touch another in-plane
        padded = np.pad(bleed, 1)
        touching = (padded[2:, 1:-1] | padded[:-2, 1:-1] | padded[1:-1, 2:] | padded[1:-1, :-2])
        neighbours.append((touching[..., 1:-1][bleed]).mean() if bleed.sum() > 1 else 1.0)
        # the latent risk ranks bleeding voxels above the others
        assert risk[bleed].mean() > risk[~bleed & (p.truth["tissue"] > 0)].mean()
    assert np.mean(in_lesion) > 0.8
    assert np.mean(neighbours) > 0.6


def test_ht_prevalence_parameter_extremes():
    assert np.all(make_stroke_cohort(4, (8, 8, 1), ht_prevalence=0.0, random_state=0,
                                     difficulty="easy").ht == 0)
    assert np.all(make_stroke_cohort(4, (8, 8, 1), ht_prevalence=1.0, random_state=0,
                                     difficulty="easy").ht == 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_patients": 0}, "n_patients"),
        ({"shape": (2, 8, 1)}, "shape"),
        ({"shape": (8, 8)}, "shape"),
        ({"ht_prevalence": 1.5}, "ht_prevalence"),
        ({"snr": -1.0}, "snr"),
        ({"repetition_time": (2.0, 1.0)}, "repetition_time"),
        ({"echo_time": 30.0}, "echo_time"),
        ({"random_state": -1}, "random_state"),
    ],
)
def test_invalid_parameters_raise(kwargs, match):
    params = {"n_patients": 1, "shape": (8, 8, 1), "random_state": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_stroke_cohort(**params, difficulty="easy")


def test_random_state_type_error():
    with pytest.raises(TypeError, match="random_state"):
        make_stroke_cohort(1, (8, 8, 1), random_state="seed", difficulty="easy")


def test_cohort_copies_are_cheap(tiny_cohort, tiny_cohort_dir):
    assert copy.deepcopy(tiny_cohort) is tiny_cohort
    on_disk = load_cohort(tiny_cohort_dir)
    _ = [p.pwi.shape for p in on_disk], on_disk[0].truth
    # file-backed patients pickle as paths, not voxels
    assert len(pickle.dumps(on_disk)) < 20_000
    restored = pickle.loads(pickle.dumps(on_disk))
    np.testing.assert_array_equal(_data(restored[1].pwi), _data(tiny_cohort[1].pwi))


def test_out_dir_streams_to_disk_and_matches_memory(tmp_path):
    in_memory = make_stroke_cohort(2, (8, 8, 2), random_state=3, difficulty="easy")
    on_disk = make_stroke_cohort(2, (8, 8, 2), random_state=3, out_dir=tmp_path / "c",
                                 difficulty="easy")
    assert on_disk.path == tmp_path / "c"
    assert on_disk[0].source("pwi") is not None  # file-backed
    for a, b in zip(in_memory, on_disk, strict=True):
        np.testing.assert_array_equal(_data(a.pwi), _data(b.pwi))
        np.testing.assert_array_equal(a.truth["tmax"], b.truth["tmax"])
    with pytest.raises(FileExistsError, match="overwrite"):
        make_stroke_cohort(2, (8, 8, 2), random_state=3, out_dir=tmp_path / "c", difficulty="easy")
    again = make_stroke_cohort(1, (8, 8, 2), random_state=4, out_dir=tmp_path / "c",
                               overwrite=True, difficulty="easy")
    assert again.ids == ["sub-001"]


def test_parallel_simulation_gives_the_same_cohort(tmp_path):
    serial = make_stroke_cohort(3, (8, 8, 1), random_state=9, n_frames=45, difficulty="easy")
    # threads keep the test fast; processes (the default loky backend) share the code path
    with joblib.parallel_config(backend="threading"):
        parallel = make_stroke_cohort(3, (8, 8, 1), random_state=9, n_frames=45, n_jobs=2,
                                      out_dir=tmp_path / "par", difficulty="easy")
    assert parallel.ids == serial.ids
    np.testing.assert_array_equal(parallel.ht, serial.ht)
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(_data(a.pwi), _data(b.pwi))
        np.testing.assert_array_equal(_data(a.ht_mask), _data(b.ht_mask))


def test_cli_simulate_writes_a_loadable_cohort(tmp_path, capsys):
    out = tmp_path / "sim"
    argv = ["simulate", str(out), "--n-patients", "3", "--shape", "8", "8", "2",
            "--random-state", "1"]
    assert main(argv) == 0
    assert "wrote 3 patients" in capsys.readouterr().out
    cohort = load_cohort(out).validate()
    assert len(cohort) == 3 and cohort[0].shape == (8, 8, 2)
    expected = make_stroke_cohort(3, (8, 8, 2), random_state=1)  # realistic by default
    np.testing.assert_array_equal(_data(cohort[2].pwi), _data(expected[2].pwi))
    assert cohort[0].aif is None and cohort[0].brain_mask is None
    easy = out.parent / "easy"
    assert main(["simulate", str(easy), "--n-patients", "1", "--shape", "8", "8", "2",
                 "--difficulty", "easy", "--quiet"]) == 0
    assert load_cohort(easy)[0].aif is not None
    with pytest.raises(SystemExit, match="overwrite"):
        main(argv)
    assert main(argv + ["--overwrite", "--quiet"]) == 0


@pytest.mark.slow  # one 128 x 128 x 20 patient: about 10 s on one core
def test_paper_sized_patient_streams_to_disk(tmp_path):
    cohort = make_stroke_cohort(1, (128, 128, 20), random_state=0, out_dir=tmp_path / "paper",
                                difficulty="easy")
    assert cohort[0].shape == (128, 128, 20) and 45 <= cohort[0].n_frames <= 90
    assert cohort[0].source("pwi") == tmp_path / "paper" / "sub-001" / "pwi.nii.gz"
    cohort.validate()
