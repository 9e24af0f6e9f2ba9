"""The AIF one can measure with (issue 28): screened candidates, the venous output
function, the partial-volume correction, quantitative units, and the QC summary."""

import nibabel as nib
import numpy as np
import pytest
from scipy.integrate import trapezoid

from sklearn_hemo._vessels import (
    _gamma_variate,
    _gamma_variate_jacobian,
    flat_top,
    partial_volume_aif,
    screen_curves,
)
from sklearn_hemo.datasets import Patient
from sklearn_hemo.qc import PatientQC, patient_qc, qc_summary
from sklearn_hemo.relaxivity import blood_delta_r2star
from sklearn_hemo.signal import (
    concentration,
    detect_aif,
    detect_vof,
    patient_aif,
    patient_aif_detection,
    patient_timing,
)

TE, TR, N_FRAMES = 0.03, 1.5, 60


def _gamma(t, t0, alpha=3.0, beta=1.3):
    x = np.clip(t - t0, 0, None) / (alpha * beta)
    with np.errstate(divide="ignore"):
        return np.where(x > 0, np.exp(alpha * (np.log(np.maximum(x, 1e-12)) + 1 - x)), 0.0)


def _blood(t, peak=8.0):
    """Arterial whole-blood concentration (mM): a first pass and a recirculation."""
    return peak * (_gamma(t, 12.0) + 0.15 * _gamma(t, 21.0, 3.0, 2.5))


def _dispersed(curve, t, tau, delay):
    kernel = np.exp(-np.arange(0, 30, TR) / tau)
    kernel /= kernel.sum()
    return np.interp(t - delay, t, np.convolve(curve, kernel)[: t.size], left=0.0)


def vessel_phantom(pid="sub-v", *, peak=8.0, veins=True, clipped=False, seed=0,
                   snr=60.0, field_strength=None):
    """A patient whose vessels mix with tissue by their magnitudes (partial volume), and
    its truth: ``aif`` (mM), ``arteries``, ``veins``, ``clipped`` (voxel or None)."""
    rng = np.random.default_rng(seed)
    shape = (24, 24, 2)
    t = np.arange(N_FRAMES) * TR
    x, y = np.meshgrid(np.arange(24) - 11.5, np.arange(24) - 11.5, indexing="ij")
    brain2d = np.hypot(x / 10.0, y / 10.0) < 1.0
    brain = np.repeat(brain2d[:, :, None], 2, axis=2)
    c_a = _blood(t, peak)
    tissue_r = 44.0 * 0.04 * _dispersed(c_a, t, 3.0, 1.0)  # CBV 4 %, 44 /s/mM
    blood_a = np.exp(-TE * blood_delta_r2star(c_a))
    blood_v = np.exp(-TE * blood_delta_r2star(_dispersed(c_a, t, 2.5, 5.0)))
    ratio = np.zeros(shape + (N_FRAMES,))
    ratio[brain] = np.exp(-TE * tissue_r)
    arteries = [(6, j, k) for j in (10, 11, 12) for k in (0, 1)]
    for (i, j, k), w in zip(arteries, rng.uniform(0.3, 0.5, len(arteries)), strict=True):
        ratio[i, j, k] = (1 - w) * ratio[i, j, k] + w * blood_a
    vein_voxels = [(12, 2, k) for k in (0, 1)] + [(11, 2, 0), (13, 2, 1)] if veins else []
    for i, j, k in vein_voxels:
        ratio[i, j, k] = 0.03 * ratio[i, j, k] + 0.97 * blood_v
    clip_voxel = None
    if clipped:  # pure blood, three times as concentrated: black at the bolus peak
        clip_voxel = (17, 11, 0)
        ratio[clip_voxel] = np.exp(-TE * blood_delta_r2star(3.0 * c_a))
    s0 = np.where(brain, 900.0, 0.0)
    sigma = 900.0 / snr
    signal = np.hypot(s0[..., None] * ratio + rng.normal(0, sigma, ratio.shape),
                      rng.normal(0, sigma, ratio.shape))
    affine = np.diag([5.0, 5.0, 5.0, 1.0])
    dwi = nib.Nifti1Image(s0.astype(np.float32), affine)
    mask = nib.Nifti1Image(brain.astype(np.uint8), affine)
    patient = Patient(pid, nib.Nifti1Image(signal.astype(np.float32), affine), dwi, dwi,
                      echo_time=TE, repetition_time=TR, brain_mask=mask, n_nonsteady=0,
                      field_strength=field_strength)
    truth = {"aif": c_a, "aif_r": blood_delta_r2star(c_a), "times": t,
             "arteries": arteries, "veins": vein_voxels, "clipped": clip_voxel}
    return patient, truth


def _detect(patient, **kwargs):
    return patient_aif_detection(patient, patient_timing(patient), **kwargs)


# -- screening -----------------------------------------------------------------------------
def test_a_clipped_voxel_is_never_chosen_though_it_holds_the_most_contrast():
    patient, truth = vessel_phantom(clipped=True)
    found = _detect(patient)
    chosen = {tuple(v) for v in found.voxels.tolist()}
    assert truth["clipped"] not in chosen
    assert chosen and chosen <= set(truth["arteries"])
    assert found.n_rejected["clipped"] >= 1
    # without the screening the arterial ranking would take it first
    brain = patient.get_brain_mask()
    signal = np.asarray(patient.pwi.dataobj)[brain]
    curves = concentration(signal, TE, baseline=slice(0, 7))
    _, unscreened = detect_aif(curves, truth["times"], return_indices=True)
    where = {tuple(v): n for n, v in enumerate(np.argwhere(brain).tolist())}
    assert where[truth["clipped"]] in unscreened.tolist()
    screen = screen_curves(signal, curves, truth["times"], slice(0, 7))
    assert screen.clipped[where[truth["clipped"]]]
    assert not screen.clipped[[where[a] for a in truth["arteries"]]].any()


def test_screening_refuses_noisy_and_drifting_curves():
    t = np.arange(N_FRAMES) * TR
    rng = np.random.default_rng(1)
    good = 20 * _gamma(t, 12.0)
    drifting = good + np.where(t > 60, -0.5 * (t - 60), 0.0)  # a tail that sinks
    noisy = 0.5 * _gamma(t, 12.0) + rng.normal(0, 0.5, t.size)
    curves = np.stack([good, drifting, noisy]) + rng.normal(0, 0.05, (3, t.size))
    signal = 900 * np.exp(-TE * curves)
    screen = screen_curves(signal, curves, t, slice(0, 7))
    assert screen.ok.tolist() == [True, False, False]
    assert screen.drifting[1] and screen.noisy[2]


def test_detect_aif_exclude_and_its_checks():
    t = np.arange(N_FRAMES) * TR
    curves = np.stack([5 * _gamma(t, 14.0)] * 20 + [40 * _gamma(t, 11.0), 30 * _gamma(t, 11.0)])
    _, idx = detect_aif(curves, t, n_voxels=1, return_indices=True)
    assert idx.tolist() == [20]
    exclude = np.zeros(22, dtype=bool)
    exclude[20] = True
    _, idx = detect_aif(curves, t, n_voxels=1, exclude=exclude, return_indices=True)
    assert idx.tolist() == [21]
    with pytest.raises(ValueError, match="one bool per curve"):
        detect_aif(curves, t, exclude=exclude[:5])
    with pytest.raises(ValueError, match="every curve"):
        detect_aif(curves, t, exclude=np.ones(22, dtype=bool))


def test_flat_top_counts_frames_at_the_peak():
    t = np.arange(N_FRAMES) * TR
    curve = _gamma(t, 12.0)
    assert not flat_top(curve)
    assert flat_top(np.minimum(curve, 0.6))


# -- the venous output function and the partial-volume correction --------------------------
def test_detect_vof_finds_the_late_large_curve_and_none_without_one():
    t = np.arange(N_FRAMES) * TR
    tissue = [2 * _dispersed(_gamma(t, 12.0), t, 3.0, 1.0)] * 40
    artery = [15 * _gamma(t, 12.0)]
    vein = [30 * _dispersed(_gamma(t, 12.0), t, 2.5, 5.0)]
    vof, idx = detect_vof(np.array(tissue + artery + vein), t, return_indices=True)
    assert idx.tolist() == [41]
    vof, idx = detect_vof(np.array(tissue + artery), t, return_indices=True)
    assert vof is None and idx.size == 0
    with pytest.raises(ValueError, match="voxel_fraction"):
        detect_vof(np.array(tissue), t, voxel_fraction=0)


@pytest.mark.parametrize("share", [0.25, 0.45, 0.8])
def test_venous_scaling_restores_a_known_area_and_shape(share):
    t = np.arange(N_FRAMES) * TR
    r_a = blood_delta_r2star(_blood(t))
    tissue_ratio = np.exp(-TE * 44 * 0.04 * _dispersed(_blood(t), t, 3.0, 1.0))
    ratio = (1 - share) * tissue_ratio + share * np.exp(-TE * r_a)
    measured = -np.log(ratio) / TE
    target = trapezoid(r_a, t)
    assert trapezoid(measured, t) < 0.8 * target  # what partial volume does
    pv = partial_volume_aif(ratio, tissue_ratio, t, TE, target, lambda r: r)
    assert pv.share == pytest.approx(share, rel=0.02)
    assert trapezoid(pv.curve, t) == pytest.approx(target, rel=1e-6)
    np.testing.assert_allclose(pv.curve, r_a, atol=0.02 * r_a.max())
    assert not pv.held.any()


def test_the_patient_aif_gets_the_vein_s_area_and_the_true_shape():
    patient, truth = vessel_phantom(field_strength=1.5)
    found = _detect(patient)
    t = found.times
    assert found.units == "mM" and found.vof is not None
    assert {tuple(v) for v in found.vof_voxels.tolist()} <= set(truth["veins"])
    true_area = trapezoid(truth["aif"], t)
    assert trapezoid(found.raw, t) < 0.6 * true_area  # uncorrected: diluted
    assert trapezoid(found.curve, t) == pytest.approx(true_area, rel=0.15)
    assert abs(int(np.argmax(found.curve)) - int(np.argmax(truth["aif"]))) <= 1
    assert np.corrcoef(found.curve, truth["aif"])[0, 1] > 0.95
    assert not found.notes
    # the public function returns the same curve on the frames
    grid = patient_aif(patient, n_timepoints=N_FRAMES, time_step=TR)
    np.testing.assert_allclose(grid, found.curve)


def test_without_a_field_strength_the_aif_stays_delta_r2star():
    patient, truth = vessel_phantom()
    found = _detect(patient)
    assert found.units == "1/s"
    t = found.times
    assert trapezoid(found.curve, t) == pytest.approx(
        trapezoid(np.asarray(found.vof), t), rel=1e-6)


def test_a_patient_without_a_vein_warns_naming_it_and_the_option_turns_it_off(monkeypatch):
    patient, _ = vessel_phantom("sub-novein", veins=False)
    found = _detect(patient)
    assert found.vof is None
    assert any("sub-novein" in n and "no venous output function" in n for n in found.notes)
    off = _detect(patient, partial_volume=False)
    assert not any("venous" in n for n in off.notes)
    np.testing.assert_allclose(off.curve, off.raw)
    # the environment variable reaches every step (here: the public function)
    patient2, _ = vessel_phantom("sub-v2")
    on = patient_aif(patient2, n_timepoints=N_FRAMES, time_step=TR)
    monkeypatch.setenv("SKLEARN_HEMO_AIF_VOF", "off")
    raw = patient_aif(patient2, n_timepoints=N_FRAMES, time_step=TR)
    assert trapezoid(on) > 1.5 * trapezoid(raw)


def test_the_patch_aif_cache_follows_the_vof_switch(monkeypatch):
    # the AIF columns of the patch features are cached per patient: switching the VOF
    # correction off within the process must not serve the corrected AIF again
    from sklearn_hemo.datasets import Cohort
    from sklearn_hemo.preprocessing import PatchExtractor

    patient, _ = vessel_phantom("sub-cache")
    extractor = PatchExtractor(Cohort([patient]), inputs="pwi+aif", n_timepoints=N_FRAMES,
                               time_step=TR, aif_normalization=None)
    refs = np.array([[0, 12, 12, 0]])
    columns = [n.startswith("aif_") for n in extractor.fit(refs).get_feature_names_out()]
    on = extractor.transform(refs)[0, columns]
    monkeypatch.setenv("SKLEARN_HEMO_AIF_VOF", "off")
    off = extractor.transform(refs)[0, columns]
    raw = patient_aif(patient, n_timepoints=N_FRAMES, time_step=TR, partial_volume=False)
    np.testing.assert_allclose(off, raw, rtol=1e-5, atol=1e-5)
    assert trapezoid(on) > 1.5 * trapezoid(off)
    monkeypatch.setenv("SKLEARN_HEMO_AIF_VOF", "on")
    np.testing.assert_array_equal(extractor.transform(refs)[0, columns], on)

def test_a_flat_topped_aif_warns():
    # arterial blood so concentrated that it is black at the peak: nothing to invert
    patient, _ = vessel_phantom("sub-flat", peak=20.0, snr=20.0)
    qc = patient_qc(patient, maps=False)
    assert any("sub-flat" in w and "flat-topped" in w for w in qc.warnings)
    assert ("aif_flat_top", None) in qc.findings
    quiet, _ = vessel_phantom("sub-ok")
    assert not [w for w in patient_qc(quiet, maps=False).warnings if "padding" not in w]


# -- the summary a person reads ----------------------------------------------------------
def _qc(pid, findings, notes=()):
    empty = np.zeros(3)
    return PatientQC(id=pid, brain_mask=np.ones((2, 2, 1), bool),
                     aif_voxels=np.zeros((0, 3), int), aif=empty, tissue=empty,
                     times=np.arange(3.0), n_nonsteady=0, arrival=1, mean_signal=empty,
                     measured_aif=False, warnings=[f"{pid}: {k}" for k, _ in findings],
                     findings=list(findings), notes=list(notes))


def test_qc_summary_one_line_per_kind_with_counts_and_the_worst():
    results = [_qc(f"sub-{i:02d}", [("high_cbf", 0.3 + 0.01 * i)],
                   [f"participant sub-{i:02d}: the first 2 PWI frame(s) are not at steady "
                    "state"]) for i in range(10)]
    results += [_qc("sub-90", [("no_vof", None), ("padding", 12.0)])]
    results += [_qc("sub-91", [])]
    text = qc_summary(results, report="out/index.html", n_worst=2)
    lines = text.splitlines()
    assert lines[0] == ("QC of 12 patient(s): 11 with warnings; per-patient details in "
                        "out/index.html.")
    assert lines[1].startswith("  high_cbf: 10 patient(s)")
    assert "worst: sub-09 (39.0%), sub-08 (38.0%), ..." in lines[1]
    assert any(line.startswith("  no_vof: 1 patient(s)") and "sub-90" in line
               for line in lines)
    assert any("padding" in line and "sub-90 (12 s)" in line for line in lines)
    assert lines[-1] == ("  notes (as designed): non-steady leading frames dropped in 10 "
                         "patient(s)")
    assert len(lines) == 5  # not one line per patient per finding
    with pytest.raises(TypeError, match="PatientQC"):
        qc_summary(["a warning"])


@pytest.mark.parametrize("params", [(5.0, 2.0, 3.0, 2.0), (10.3, 5.0, 1.2, 0.5),
                                    (-3.0, 1.0, 8.0, 8.0)])
def test_the_gamma_variate_fit_has_the_exact_jacobian(params):
    """The peak fill's least squares is given exact derivatives: they match central finite
    differences, before the bolus (all 0) and after it."""
    t = np.linspace(0.0, 60.0, 61) + 0.37
    params = np.array(params)
    exact = _gamma_variate_jacobian(t, *params)
    step = 1e-6 * np.maximum(np.abs(params), 1.0)
    numeric = np.column_stack([
        (_gamma_variate(t, *(params + h)) - _gamma_variate(t, *(params - h))) / (2 * h[i])
        for i, h in enumerate(np.diag(step))])
    assert exact.shape == (t.size, 4)
    np.testing.assert_allclose(exact, numeric, atol=1e-5 * np.abs(numeric).max())
    assert not exact[t < params[0]].any()
