"""Signal processing: concentration, bolus arrival, time grid, AIF."""

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sklearn_hemo.datasets import ArterialInputFunction, CohortError, Patient
from sklearn_hemo.signal import (
    aif_curve,
    aif_from_tsv,
    bolus_arrival,
    concentration,
    detect_aif,
    patient_aif,
    resample_time,
    steady_state_frames,
)

TE = 0.03


def bolus(t, t0, tau, height):
    """A first pass that jumps at ``t0`` and decays: exactly zero before ``t0``."""
    t = np.asarray(t, dtype=float)
    return np.where(t >= t0, height * np.exp(-np.clip(t - t0, 0, None) / tau), 0.0)


def gamma_bolus(t, t0, width, height):
    x = np.clip(np.asarray(t, dtype=float) - t0, 0, None) / width
    return height * x**3 * np.exp(3 * (1 - x))


# -- concentration ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_noise_free_signal_gives_back_the_concentration(dtype):
    t = np.arange(50) * 1.5
    rng = np.random.default_rng(0)
    conc = np.stack([bolus(t, rng.uniform(12, 20), rng.uniform(2, 6), rng.uniform(1, 30))
                     for _ in range(20)]).reshape(4, 5, 50)
    s0 = rng.uniform(200, 900, size=(4, 5, 1))
    signal = (s0 * np.exp(-TE * conc)).astype(dtype)
    out, info = concentration(signal, TE, return_info=True)
    assert out.dtype == dtype and out.shape == conc.shape
    tol = 1e-3 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(out, conc, atol=tol * conc.max())
    assert info.baseline.start == 0 and 1 <= info.baseline.stop <= 9  # bolus at >= 12 s
    assert info.n_clipped == 0 and info.n_invalid_baseline == 0


@pytest.mark.parametrize("baseline", [5, slice(0, 5), slice(2, 6), "auto", None])
def test_explicit_baselines(baseline):
    t = np.arange(30) * 2.0
    conc = bolus(t, 14, 4, 10)
    out = concentration(400 * np.exp(-TE * conc), TE, baseline=baseline)
    np.testing.assert_allclose(out, conc, atol=1e-9)


def test_non_positive_samples_are_clipped_and_counted():
    signal = np.array([[100, 100, 100, 50, 0, -5, 100.0],
                       [0, 0, 0, 0, 0, 0, 0.0],  # no signal: invalid baseline
                       [200, 200, 200, 150, 100, 150, 200.0]])
    out, info = concentration(signal, TE, baseline=3, clip_fraction=1e-3, return_info=True)
    assert np.isfinite(out).all()
    assert info.n_clipped == 2 and info.n_invalid_baseline == 1
    cap = -np.log(1e-3) / TE
    np.testing.assert_allclose(out[0, 4:6], cap)
    np.testing.assert_array_equal(out[1], 0)
    np.testing.assert_allclose(out[2], -np.log(signal[2] / 200) / TE)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"signal": [1.0, np.nan, 1.0]}, "NaN"),
     ({"echo_time": 0}, "echo_time"),
     ({"baseline": 0}, "baseline"),
     ({"baseline": slice(5, 9)}, "selects no frame"),
     ({"baseline": "first"}, "baseline"),
     ({"clip_fraction": 1.5}, "clip_fraction"),
     ({"signal": np.array(["a", "b"])}, "numeric")],
)
def test_concentration_rejects_bad_input(kwargs, message):
    args = {"signal": [100.0, 100.0, 50.0, 100.0], "echo_time": TE, **kwargs}
    signal, echo_time = args.pop("signal"), args.pop("echo_time")
    with pytest.raises((ValueError, TypeError), match=message):
        concentration(signal, echo_time, **args)


def test_concentration_does_not_modify_its_input():
    signal = np.array([100, 100, 0, 60, 100], dtype=np.float32)
    before = signal.copy()
    concentration(signal, TE, baseline=2)
    np.testing.assert_array_equal(signal, before)


# -- bolus arrival ----------------------------------------------------------------------------
def test_bolus_arrival_on_known_curves():
    t = np.arange(40) * 1.5
    conc = np.stack([bolus(t, 15, 3, 10), bolus(t, 30, 3, 10), np.zeros(40)])
    signal = 300 * np.exp(-TE * conc)
    np.testing.assert_array_equal(bolus_arrival(signal), [10, 20, 40])
    np.testing.assert_array_equal(bolus_arrival(conc, kind="concentration"), [10, 20, 40])
    assert isinstance(bolus_arrival(signal[0]), int)


def test_bolus_arrival_rejects_bad_parameters():
    with pytest.raises(ValueError, match="kind"):
        bolus_arrival([1.0, 2.0], kind="flow")
    with pytest.raises(ValueError, match="threshold"):
        bolus_arrival([1.0, 2.0], threshold=1.0)


# -- time grid --------------------------------------------------------------------------------
def test_resample_equals_numpy_interp_on_the_paper_grid():
    rng = np.random.default_rng(1)
    times = np.arange(45) * 1.37
    curves = rng.normal(size=(3, 7, 45))
    out = resample_time(curves, times)
    grid = np.arange(60) * 1.8
    assert out.shape == (3, 7, 60)
    expected = np.apply_along_axis(lambda c: np.interp(grid, times, c), -1, curves)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    # 45 frames of 1.37 s end at 60.3 s: later grid points hold the last value
    late = grid > times[-1]
    assert late.any()
    np.testing.assert_array_equal(out[..., late], curves[..., -1:].repeat(late.sum(), -1))


def test_resample_on_matching_grid_is_exact_and_keeps_float32():
    curves = np.random.default_rng(2).random((4, 60)).astype(np.float32)
    out = resample_time(curves, np.arange(60) * 1.8)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, curves)


def test_resample_align():
    times = np.arange(40) * 1.5
    conc = bolus(times, 21, 3, 10)  # bolus from frame 14; last pre-bolus frame at 19.5 s
    shifted = resample_time(conc, times, 10, 1.5, align="arrival")
    np.testing.assert_allclose(shifted, np.interp(19.5 + np.arange(10) * 1.5, times, conc))
    by_offset = resample_time(conc, times, 10, 1.5, align=-3.0)
    np.testing.assert_allclose(by_offset[:3], conc[0])  # before the first frame: held
    with pytest.raises(ValueError, match="align"):
        resample_time(conc, times, align="peak")
    with pytest.raises(ValueError, match="increasing"):
        resample_time(conc, times[::-1])


# -- AIF --------------------------------------------------------------------------------------
def test_aif_curve_concentration_and_signal_kinds():
    times = np.arange(30) * 2.0
    conc = gamma_bolus(times, 10, 4, 40)
    grid = np.arange(60) * 1.8
    measured = ArterialInputFunction(times, conc, "concentration")
    np.testing.assert_allclose(aif_curve(measured), np.interp(grid, times, conc))
    as_signal = ArterialInputFunction(times, 800 * np.exp(-TE * conc), "signal")
    np.testing.assert_allclose(aif_curve(as_signal, echo_time=TE), np.interp(grid, times, conc),
                               atol=1e-9)
    with pytest.raises(ValueError, match="echo_time"):
        aif_curve(as_signal)
    with pytest.raises(TypeError, match="ArterialInputFunction"):
        aif_curve(conc)


def test_aif_from_tsv(tmp_path):
    path = tmp_path / "sub-007" / "aif.tsv"
    path.parent.mkdir()
    path.write_text("time\tsignal\n0.0\t500\n1.5\t480\n3.0\t200\n")
    aif = aif_from_tsv(path)
    assert aif.kind == "signal"
    np.testing.assert_array_equal(aif.values, [500, 480, 200])
    path.write_text("t\tvalue\n0\t1\n")
    with pytest.raises(CohortError, match="sub-007"):
        aif_from_tsv(path)


def _curves_with_arteries(rng, t, n_tissue=400, n_artery=40):
    tissue = [gamma_bolus(t, 14 + rng.uniform(0, 3), 4, rng.uniform(2, 6)) for _ in
              range(n_tissue)]
    arteries = [gamma_bolus(t, 10, 2, rng.uniform(50, 70)) for _ in range(n_artery)]
    curves = np.array(tissue + arteries) + rng.normal(0, 0.3, (n_tissue + n_artery, t.size))
    return curves, np.arange(n_tissue, n_tissue + n_artery)


def test_detect_aif_finds_the_early_high_narrow_curves():
    rng = np.random.default_rng(3)
    t = np.arange(45) * 1.5
    curves, arteries = _curves_with_arteries(rng, t)
    aif, idx = detect_aif(curves, t, return_indices=True)
    assert len(idx) > 0 and np.isin(idx, arteries).all()
    assert aif.max() > 40 and t[np.argmax(aif)] < 14
    np.testing.assert_array_equal(detect_aif(curves, t), aif)  # deterministic
    with pytest.raises(ValueError, match="concentration"):
        detect_aif(-np.abs(curves), t)


def _patient(aif=None, shape=(6, 6, 2), n_frames=40, tr=1.5, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) * tr
    conc = np.stack([gamma_bolus(t, 14 + rng.uniform(0, 3), 4, rng.uniform(2, 6))
                     for _ in range(np.prod(shape))]).reshape(shape + (n_frames,))
    conc[0, 0, 0] = conc[1, 1, 0] = conc[2, 2, 1] = gamma_bolus(t, 10, 2, 60)  # arteries
    pwi = nib.Nifti1Image((500 * np.exp(-TE * conc)).astype(np.float32), np.eye(4))
    dwi = nib.Nifti1Image(np.ones(shape, dtype=np.float32), np.eye(4))
    return Patient("sub-01", pwi, dwi, dwi, echo_time=TE, repetition_time=tr, aif=aif), conc


def test_patient_aif_measured_or_detected():
    t = np.arange(40) * 1.5
    measured = ArterialInputFunction(t, gamma_bolus(t, 10, 2, 60))
    patient, conc = _patient(aif=measured)
    grid = np.arange(60) * 1.8
    np.testing.assert_allclose(patient_aif(patient), np.interp(grid, t, measured.values))
    detected, _ = _patient(aif=None)
    aif = patient_aif(detected, n_timepoints=30, time_step=1.5)
    np.testing.assert_allclose(aif, conc[0, 0, 0, :30], rtol=1e-4, atol=1e-4)
    aligned = patient_aif(detected, n_timepoints=5, time_step=1.5, align="arrival")
    start = bolus_arrival(detected.pwi.get_fdata().reshape(-1, 40).mean(0)) - 1
    np.testing.assert_allclose(aligned, conc[0, 0, 0, start:start + 5], rtol=1e-4, atol=1e-4)


# -- properties -------------------------------------------------------------------------------
finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(conc=hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(2, 30)),
                       elements=st.floats(0, 60)),
       n_base=st.integers(1, 5), s0=st.floats(1, 1e4), te=st.floats(0.005, 0.1))
def test_property_concentration_inverts_the_signal_model(conc, n_base, s0, te):
    n_base = min(n_base, conc.shape[1])
    conc[:, :n_base] = 0
    out = concentration(s0 * np.exp(-te * conc), te, baseline=n_base)
    np.testing.assert_allclose(out, conc, atol=1e-6 * max(1.0, conc.max()))


@settings(max_examples=60, deadline=None)
@given(signal=hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 20)),
                         elements=finite),
       scale=st.floats(0.01, 100))
def test_property_concentration_is_finite_counted_and_scale_free(signal, scale):
    out, info = concentration(signal, TE, return_info=True)
    assert np.isfinite(out).all()
    i0 = signal[:, info.baseline].mean(axis=1, keepdims=True)
    # outside [1e-3, 1e3] times the baseline (up to the rounding of the ratio I / I0)
    with np.errstate(divide="ignore", over="ignore"):
        ratio = signal / np.where(i0 > 0, i0, 1)
    sure = ((ratio < 0.999e-3) | (ratio > 1.001e3)) & (i0 > 0)
    maybe = ((ratio < 1.001e-3) | (ratio > 0.999e3)) & (i0 > 0)
    assert sure.sum() <= info.n_clipped <= maybe.sum()
    assert info.n_invalid_baseline == (i0 <= 0).sum()
    np.testing.assert_allclose(concentration(signal * scale, TE, baseline=info.baseline), out,
                               atol=1e-6 * max(1.0, np.abs(out).max()))


@settings(max_examples=60, deadline=None)
@given(steps=hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(0.05, 5)),
       data=st.data(), n_timepoints=st.integers(1, 80), time_step=st.floats(0.1, 4))
def test_property_resample_is_numpy_interp(steps, data, n_timepoints, time_step):
    times = np.concatenate([[0.0], np.cumsum(steps)])[: steps.size]
    values = data.draw(hnp.arrays(np.float64, times.size, elements=finite))
    out = resample_time(values, times, n_timepoints, time_step)
    grid = np.arange(n_timepoints) * time_step
    np.testing.assert_allclose(out, np.interp(grid, times, values), rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(curves=hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 40)),
                         elements=finite),
       kind=st.sampled_from(["signal", "concentration"]))
def test_property_bolus_arrival_is_a_valid_frame_count(curves, kind):
    arrival = bolus_arrival(curves, kind=kind)
    assert arrival.shape == curves.shape[:1]
    assert ((arrival >= 1) & (arrival <= curves.shape[1])).all()


# -- steady state and physiological AIF criteria (issue 14) --------------------------------
def _mean_curve(excess, n_frames=40, arrival=10):
    t = np.arange(n_frames, dtype=float)
    drop = 0.3 * np.exp(-0.5 * ((t - arrival - 3) / 2.0) ** 2)
    curve = 1000.0 * (1 - drop)
    curve[: len(excess)] *= 1 + np.asarray(excess)
    return curve + np.random.default_rng(0).normal(0, 1.0, n_frames)


@pytest.mark.parametrize("excess", [(), (0.3,), (0.25, 0.06), (0.1, 0.04, 0.025)])
def test_steady_state_frames_counts_the_bright_leading_frames(excess):
    assert steady_state_frames(_mean_curve(excess)) == len(excess)
    # voxel curves are averaged: the same count from a (voxels, frames) array
    voxels = _mean_curve(excess)[None, :] * np.linspace(0.8, 1.2, 30)[:, None]
    assert steady_state_frames(voxels) == len(excess)


def test_steady_state_frames_ignores_dark_leading_frames_and_rejects_bad_margins():
    assert steady_state_frames(_mean_curve((-0.2,))) == 0
    with pytest.raises(ValueError, match="n_sigma"):
        steady_state_frames(_mean_curve(()), n_sigma=-1)


def _bolus(t, t0, width, height):
    x = np.clip(t - t0, 0, None) / width
    return height * x**3 * np.exp(3 * (1 - x))


def test_detect_aif_rejects_late_broad_veins_with_a_larger_area():
    t = np.arange(50) * 1.5
    rng = np.random.default_rng(1)
    tissue = [_bolus(t, 12, 4, 5) + rng.normal(0, 0.3, t.size) for _ in range(400)]
    # partial-volume arteries: early, narrow, peak 25-60
    arteries = [_bolus(t, 9, 2, h) + rng.normal(0, 0.3, t.size)
                for h in rng.uniform(25, 60, 20)]
    # veins (more numerous than arteries): peak after the tissue, broad, larger area
    veins = [_bolus(t, 15, 5, 55) + rng.normal(0, 0.3, t.size) for _ in range(60)]
    curves = np.array(tissue + arteries + veins)
    old_aif, old = detect_aif(curves, t, method="cluster", reject_late=False,
                              peak_fraction=1.0, return_indices=True)
    assert np.all(old >= 420)  # without the criteria: the veins win on area
    for method in ("arterial", "cluster"):
        aif, chosen = detect_aif(curves, t, method=method, return_indices=True)
        assert len(chosen) and np.all((chosen >= 400) & (chosen < 420))  # arteries only
        assert t[np.argmax(aif)] < t[np.argmax(np.median(curves, axis=0))]
        # partial-volume aware: the chosen arteries are among the higher half of them
        peaks = curves[400:420].max(axis=1)
        assert curves[chosen].max(axis=1).min() >= np.median(peaks) - 1e-9
    with pytest.raises(ValueError, match="peak_fraction"):
        detect_aif(curves, t, peak_fraction=0)
    with pytest.raises(ValueError, match="method"):
        detect_aif(curves, t, method="kmeans")


def test_detect_aif_rejects_early_curves_that_stay_high_after_the_tissue_bolus():
    # a voxel at the brain's edge that drifts (motion) rises early and stays high: much
    # contrast "before the tissue", but no bolus passes; an artery falls back below half
    # of its peak before the tissue does (the tissue is the arterial curve convolved with
    # a causal residue), the drift never
    t = np.arange(40) * 1.5
    rng = np.random.default_rng(0)
    tissue = [_bolus(t, 12, 4, 5) + rng.normal(0, 0.2, t.size) for _ in range(300)]
    arteries = [_bolus(t, 9, 2, 30) + rng.normal(0, 0.2, t.size) for _ in range(10)]
    drifts = [30 / (1 + np.exp(-(t - 10))) + rng.normal(0, 0.2, t.size) for _ in range(10)]
    curves = np.array(tissue + arteries + drifts)
    aif, chosen = detect_aif(curves, t, n_voxels=4, return_indices=True)
    assert len(chosen) == 4 and np.all((chosen >= 300) & (chosen < 310))
    assert int(np.argmax(aif)) == int(np.argmax(_bolus(t, 9, 2, 30)))
    # a drifting curve is the earliest and largest before the tissue: only the falling
    # edge tells it from an artery
    from scipy.integrate import trapezoid

    window = t < 14.5
    early = trapezoid(curves[:, window], t[window], axis=1)
    assert early[310:].min() > early[300:310].max()


def test_fall_time_interpolates_the_falling_edge():
    from sklearn_hemo._vessels import fall_time

    t = np.arange(6) * 2.0
    curves = np.array([[0, 4, 10, 6, 2, 0],     # half (5) crossed between 6 s and 8 s
                       [0, 10, 9, 8, 7, 6],     # never falls back: the last frame
                       [0, 10, 4, 12, 0, 0]])   # after its peak (frame 3), not before
    np.testing.assert_allclose(fall_time(curves, t), [6.0 + 2.0 * (6 - 5) / (6 - 2),
                                                      10.0, 6.0 + 2.0 * (12 - 6) / 12])


def test_detect_aif_arterial_prefers_the_least_diluted_arteries_not_the_veins():
    # partial volume: arterial blood (early, narrow) mixed with tissue (later, broad); the
    # larger the arterial share, the more contrast before the tissue fills
    t = np.arange(50) * 1.5
    rng = np.random.default_rng(4)
    tissue_curve = _bolus(t, 12, 4, 5)
    share = rng.uniform(0.05, 0.5, 40)
    arteries = [f * _bolus(t, 9, 2, 80) + (1 - f) * tissue_curve for f in share]
    tissue = [tissue_curve * rng.uniform(0.7, 1.3) for _ in range(400)]
    # veins drain the tissue: they fill as it does, however large their curve
    veins = [_bolus(t, 13, 5, 60) for _ in range(30)]
    curves = np.array(tissue + arteries + veins) + rng.normal(0, 0.3, (470, t.size))
    aif, chosen = detect_aif(curves, t, n_voxels=3, return_indices=True)
    assert len(chosen) == 3 and np.all((chosen >= 400) & (chosen < 440))
    assert np.all(share[chosen - 400] >= np.quantile(share, 0.8))  # the least diluted
    np.testing.assert_allclose(aif, curves[chosen].mean(axis=0))
    one = detect_aif(curves, t, n_voxels=1, return_indices=True)[1]
    assert len(one) == 1 and share[one[0] - 400] >= np.quantile(share, 0.9)
    # only curves within voxel_fraction of the best early area join it
    few = detect_aif(curves, t, n_voxels=40, voxel_fraction=0.95, return_indices=True)[1]
    assert 1 <= len(few) < 40 and np.all((few >= 400) & (few < 440))
    with pytest.raises(ValueError, match="n_voxels"):
        detect_aif(curves, t, n_voxels=0)
    with pytest.raises(ValueError, match="voxel_fraction"):
        detect_aif(curves, t, voxel_fraction=1.5)
