"""One patient of the ``difficulty="realistic"`` simulated cohort.

The physics of the tissue curves is that of :mod:`sklearn_hemo.datasets._simulate`; this
module adds what real scans and real outcomes have (the section "Realistic cohort" of
that module's docstring lists each change, its source and the number it is calibrated
to): a head around the brain, arteries and veins with partial volume, non-steady leading
frames, motion, per-patient SNR, a random patient outcome with unobserved causes, voxel
risk with unobserved terms, a reader's imperfect annotation, and no ``aif.tsv`` or brain
mask handed over.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, special

from ..relaxivity import TISSUE_RELAXIVITY, blood_delta_r2star
from ._physics import (
    _FINE_DT,
    _FOV_MM,
    _K2_REF,
    _LABEL_NOISE,
    _aif,
    _draw,
    _draw_anatomy,
    _make_patient,
    _rician,
    _smooth_field,
    _tissue_curves,
    _tmax,
    _to_int16,
)

# -- patient outcome (module docstring, "Outcome") ------------------------------------
_P_REPERFUSION = 0.6  # share of patients who reperfuse (Campbell 2013)
_P_TREATMENT = 0.5  # e.g. thrombolysis given or not
#: population mean and SD of log(1 + marker in mL) at the default geometry, used to
#: standardise the imaging markers of the outcome model (measured once on 2,000
#: simulated anatomies, seed 0; a fixed constant, not refitted per cohort)
#: very_low_adc: volume of ADC < 0.55e-3 mm2/s (Selim 2002), measured on the 80 patients
#: of make_stroke_cohort(80, random_state=2024) with the early-reperfusion zone (issue 27;
#: (2.66, 0.93) before it)
_MARKERS = {"low_cbv": (1.20, 0.73), "leakage": (2.73, 1.31), "very_low_adc": (4.28, 0.93)}
_W_IMAGE = (0.4, 0.3, 0.3)  # weights of the standardised markers in the image score
_VERY_LOW_ADC_MM2S = 0.55e-3  # Selim 2002: the volume below it predicts HT
_W_IMAGE_REPERFUSED = 1.6  # log-odds per SD of the image score when reperfused
_W_IMAGE_OCCLUDED = 0.6  # ... and when not (Campbell 2013: depends on reperfusion)
_W_REPERFUSION = 1.3
_W_TREATMENT = 0.5
_W_AGE = 0.5
# -- voxel risk (module docstring, "Voxel risk") --------------------------------------
_TAU = 2.2  # mean threshold of the latent voxel logit
_SD_TAU = 0.4  # patient-to-patient spread of the threshold (unobserved)
_SD_REPERFUSION_FIELD = 0.6  # reperfusion territory, in reperfused patients (unobserved)
_SD_MICROVASCULAR = 0.6  # microvascular state (unobserved)
_MAX_BLEED_SHARE = 0.5  # of the lesion volume (ECASS PH2: over 30% of the infarct)
_P_EXTENSION = 0.5  # bleeding patients whose haematoma extends beyond the bleed
# -- annotation (module docstring, "Annotation") --------------------------------------
_P_SHIFT = 0.8  # registration error of the follow-up to the PWI, up to one voxel
_P_BLOOM = 0.7  # blooming on GRE/SWI: the reader draws one voxel wider in-plane
# sizes of the reader's errors in mm (resolution-independent; one voxel of the default
# 5 mm grid, two to three of the paper's 1.9 mm grid)
_BLOOM_MM = 5.0  # blooming of GRE/SWI, doubled for haematomas over _LARGE_BLEED_ML
_LARGE_BLEED_ML = 45.0
_SHIFT_MM = (3.0, 6.0)  # registration error of the follow-up
_OUTLINE_MM = 5.0  # smoothing of the reader's outline
_SMALL_BLEED_ML = 1.6  # bleeds this small may be missed
_EXTENSION_MM = (5.0, 10.0)  # extension of a parenchymal haematoma
_P_MISS = 0.5  # a bleed of at most _SMALL_BLEED_ML is missed
_P_EXTRA = 0.5  # the reader marks 1-3 small non-HT spots (microbleeds, vessels)
# -- diffusion (module docstring, "Diffusion") -----------------------------------------
_ADC_CORE = 0.8  # ADC / normal at the core border of a short ischaemia
_ADC_FALL = (0.15, 0.30)  # further fall: at least, plus this much for the longest ...
_ADC_DEPTH = 0.3  # ... at the border (share of the fall), 1 at the centre
_ADC_WOBBLE = 0.05  # smooth voxel variation, independent of perfusion
_ADC_LIMITS = (0.4, 0.85)
_VERY_LOW_ADC = (0.75, 0.45)  # ADC / normal: the risk term rises from 0 to 1 between
_W_VERY_LOW_ADC = 2.0  # log-odds of the very-low-ADC term (Selim 2002; Tong 2000; issue
# 27: 1.2 before the early-reperfusion zone; an assumption, not fitted)
# early reperfusion before the scan (issue 27): up to this share (x U(0.5, 1) per patient)
# of the normal-appearing tissue within this multiple of the penumbra radius is an
# infarct already reperfused (patchy; assumptions, see the module docstring)
_REPERFUSED_SHARE = 0.5
_REPERFUSED_REACH = 1.5
# -- acquisition (module docstring, "Acquisition") ------------------------------------
_P_MOTION = 0.3
# -- blood and relaxivity (module docstring, "Blood physics") -------------------------
_FIELD_STRENGTH = 1.5  # tesla, written to pwi.json as MagneticFieldStrength
_DOSE = 0.1  # mmol/kg, the standard single dose of a gadolinium chelate
_DOSE_SPREAD = (0.9, 1.1)  # weight estimated in the emergency room, rounding of the volume
_CARDIAC_OUTPUT = 80.0  # mL/min per kg of body mass (5.6 L/min at 70 kg)
_SD_LOG_CARDIAC_OUTPUT = 0.2  # patient-to-patient spread (log scale)
_BOLUS_ALPHA = (2.5, 3.5)  # gamma-variate shape of the arterial first pass
_BOLUS_BETA = (1.6, 2.4)  # s: first-pass full width at half maximum 6-10 s
_VENOUS_DELAY = (4.0, 7.0)  # s after the arterial curve
_VENOUS_DISPERSION = (2.0, 3.5)  # s, exponential kernel of the capillary bed
_GAUSS_HERMITE = np.polynomial.hermite_e.hermegauss(24)


def simulate_realistic_patient(pid, shape, rng, *, outcome_draw, size_draw,
                               reperfusion_draw, ht_prevalence, snr,
                               repetition_time, n_frames, echo_time, motion_share=None):
    """Simulate one realistic patient from its own generator.

    ``outcome_draw`` is the uniform number in [0, 1) that decides the outcome (the patient
    bleeds when it is below its probability); ``size_draw`` (lesion size) and
    ``reperfusion_draw`` (reperfused when below 0.6) are uniform numbers in [0, 1) too.
    The cohort stratifies all three (low-discrepancy sequences over the patients).
    ``motion_share`` is the probability that the patient moves (None: ``_P_MOTION``); the
    uniform number deciding it is drawn whatever its value, so the other draws stay the
    same.
    """
    if motion_share is None:
        motion_share = _P_MOTION
    tr = round(_draw(rng, repetition_time), 3)
    nt = int(_draw(rng, n_frames, integer=True))
    te = round(_draw(rng, echo_time), 4)
    n_nonsteady = int(rng.integers(1, 4))
    times = np.arange(nt) * tr
    aif_params, bolus = _draw_blood_aif(rng, tr)
    aif_params[0] += n_nonsteady * tr  # the bolus still comes after >= 5 steady frames
    if snr is None:
        snr_patient = None
    elif np.ndim(snr) == 0:
        snr_patient = float(snr)
    else:
        snr_patient = float(np.exp(rng.uniform(np.log(snr[0]), np.log(snr[1]))))

    zooms = _FOV_MM / np.asarray(shape, dtype=float)
    voxel_ml = float(np.prod(zooms)) / 1000.0
    size_factor = size_draw  # stratified over the cohort, as the outcome draws
    leak_factor = np.clip(0.35 * size_factor + 0.65 * rng.uniform(), 0.0, 1.0)
    lesion = {
        "r_core": (0.08 + 0.16 * size_factor) * rng.uniform(0.85, 1.15),
        "ratio": rng.uniform(1.4, 2.2),
        "leak_fraction": float(np.clip(0.15 + 0.45 * leak_factor
                                       + 0.1 * rng.standard_normal(), 0.05, 0.85)),
        "k2_max": 1e-4 * (0.4 + 1.6 * leak_factor) * rng.lognormal(0.0, 0.3),
    }
    maps = _draw_anatomy(rng, shape, leak_factor, axes=(0.7, 0.8), lesion_spec=lesion)
    brain = maps["tissue"] > 0
    head = _draw_head(rng, maps.pop("_radius"), brain)
    dist = maps.pop("_dist")
    ratio = maps.pop("_ratio")
    _benign_oligaemia(rng, maps, dist, ratio, brain)
    duration = rng.uniform()  # of the ischaemia, relative: onset to scan, collaterals
    _diffusion_restriction(rng, maps, dist, duration, ratio)
    _t2star_dominant(rng, maps, maps.pop("_leak_field"))

    outcome = _draw_outcome(rng, maps, brain, shape, zooms, voxel_ml, outcome_draw,
                            reperfusion_draw, ht_prevalence)
    scan = _acquire(rng, maps, brain, head, shape, zooms, times, te, aif_params,
                    n_nonsteady, snr_patient, motion_share)
    truth = _truth(maps, head, outcome, scan, aif_params, bolus, n_nonsteady, size_factor,
                   snr_patient)
    pwi, b0, b1000, annotation, ht = (scan["pwi"], scan["b0"], scan["b1000"],
                                      outcome["annotation"], outcome["ht"])

    # neither an AIF nor a brain mask is handed over: the pipeline must find them
    return _make_patient(pid, pwi, b0, b1000, annotation, echo_time=te, repetition_time=tr,
                         ht=ht, truth=truth, field_strength=_FIELD_STRENGTH)


def _draw_outcome(rng, maps, brain, shape, zooms, voxel_ml, outcome_draw, reperfusion_draw,
                  ht_prevalence):
    """The patient's outcome and voxel risk (the draws in the order the patient makes
    them): imaging markers, the latent outcome, the susceptibility field, the bleed and the
    reader's annotation of it."""
    cbv_normal = maps.pop("_cbv_normal")
    adc_normal = maps.pop("_adc_normal")
    markers = {
        "low_cbv": float((brain & (maps["cbv"] < 0.5 * cbv_normal)).sum()) * voxel_ml,
        "leakage": float(np.abs(maps["k2"]).sum() / _K2_REF) * voxel_ml,
        "very_low_adc": float((brain & (maps["adc"] < _VERY_LOW_ADC_MM2S)).sum()) * voxel_ml,
    }
    image_score = _image_score(markers)
    reperfusion = int(reperfusion_draw < _P_REPERFUSION)  # stratified as well
    treatment = int(rng.uniform() < _P_TREATMENT)
    age = rng.standard_normal()
    p_latent = special.expit(_outcome_logit(image_score, reperfusion, treatment, age,
                                            ht_prevalence))
    ht = bool(outcome_draw < p_latent)

    observed = _observed_logit(maps, cbv_normal, adc_normal, brain)
    unobserved = (_SD_MICROVASCULAR * _smooth_field(rng, shape, 0.1)
                  + reperfusion * _SD_REPERFUSION_FIELD * _smooth_field(rng, shape, 0.25))
    tau = _TAU + _SD_TAU * rng.standard_normal()
    latent = observed + unobserved
    lesion_size = int((maps["tissue"] >= 3).sum())
    # a haemorrhage stays a part of the infarct: the largest cover half of it, the
    # label noise included (an expected count: a threshold on the latent logit alone let
    # the noise spread small-lesion bleeds over the normal brain)
    tau = _capped_threshold(latent[brain], tau, _MAX_BLEED_SHARE * lesion_size)
    susceptibility = np.where(brain, special.ndtr((latent - tau) / _LABEL_NOISE), 0.0)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape),
                                    3.5 / zooms, mode="reflect")  # 3.5 mm correlation
    noise *= _LABEL_NOISE / max(noise.std(), 1e-12)
    bleed = brain & (latent + noise > tau)
    extension = rng.uniform() < _P_EXTENSION
    if ht:
        if not bleed.any():  # a bleeding patient shows at least one voxel
            bleed[np.unravel_index(np.argmax(np.where(brain, latent, -np.inf)), shape)] = True
        if extension:  # parenchymal haematoma reaching beyond the bleeding tissue
            reach = _in_voxels(rng.uniform(*_EXTENSION_MM), zooms)
            bleed = ndimage.binary_dilation(bleed, _IN_PLANE, iterations=reach) & brain
    else:
        bleed = np.zeros(shape, dtype=bool)
    annotation = _annotate(rng, bleed, brain, zooms) if ht else bleed
    observable = _observable_risk(observed, image_score, ht_prevalence) * brain
    return {"markers": markers, "image_score": image_score, "reperfusion": reperfusion,
            "treatment": treatment, "age": age, "p_latent": p_latent, "ht": ht,
            "susceptibility": susceptibility, "bleed": bleed, "annotation": annotation,
            "observable": observable}


def _acquire(rng, maps, brain, head, shape, zooms, times, te, aif_params, n_nonsteady,
             snr_patient, motion_share):
    """The scans of the patient: DSC series (tissue, vessels, non-steady frames, motion,
    Rician noise) and DWI b0/b1000, with what the truth keeps of the acquisition."""
    nt = times.size
    scale = rng.uniform(600.0, 1200.0)
    coil = 1.0 + 0.1 * _smooth_field(rng, shape, 0.5)
    s0 = np.where(maps["tissue"] == 2, 0.9, 1.0) * scale * coil * brain
    scalp_level = rng.uniform(0.9, 1.4)
    skull = _skull(head, brain)
    s0 = s0 + np.where(head == 2, np.where(skull, 0.08, scalp_level),
                       0.0) * scale * coil
    sigma = 0.0 if snr_patient is None else scale / snr_patient

    vessels = _draw_vessels(rng, shape, zooms, brain)
    # tissue: concentration (mM of tissue) of the indicator-dilution model, then the
    # linear tissue relaxivity; arteries and veins: whole blood, the quadratic relation
    conc = np.zeros(shape + (nt,), dtype=np.float32)
    params = {**maps, "aif_params": aif_params}
    conc[brain] = _tissue_curves(aif_params, times, *(
        np.asarray(params[f], float)[brain] for f in ("cbf", "cbv", "delay", "dispersion",
                                                      "k2")))
    extra = head == 2  # scalp and skull: low-volume extracranial perfusion
    n_extra = int(extra.sum())
    if n_extra:
        conc[extra] = _tissue_curves(aif_params, times, np.full(n_extra, 12.0),
                                     np.full(n_extra, 1.5), np.full(n_extra, 0.3),
                                     np.full(n_extra, 0.8), np.zeros(n_extra))
    conc *= np.float32(TISSUE_RELAXIVITY[_FIELD_STRENGTH])  # now Delta R2* in 1/s
    signal = np.exp(np.float32(-te) * conc, out=conc)
    signal *= s0[..., None].astype(np.float32)
    arterial = _aif(aif_params, times)
    venous = _venous_curve(aif_params, times, rng)
    _mix_vessels(signal, vessels, {"artery": arterial, "vein": venous}, te, scale * coil)
    _nonsteady(rng, signal, n_nonsteady)
    motion = _move(rng, signal) if rng.uniform() < motion_share else np.zeros((nt, 3))
    pwi = _to_int16(_rician(rng, signal, sigma))
    del conc, signal

    b0_clean = (np.where(maps["tissue"] == 2, 0.85, 1.0) * brain
                + np.where(head == 2, np.where(skull, 0.05, 0.6), 0.0))
    b0_clean = b0_clean * scale * 1.2 * coil
    adc = np.where(brain, maps["adc"], np.where(head == 2, 1.0e-3, 0.0))
    b0 = _to_int16(_rician(rng, b0_clean, sigma * 1.2))
    b1000 = _to_int16(_rician(rng, b0_clean * np.exp(-1000.0 * adc), sigma * 1.2))
    return {"pwi": pwi, "b0": b0, "b1000": b1000, "s0": s0, "sigma": sigma,
            "vessels": vessels, "arterial": arterial, "venous": venous, "motion": motion}


def _truth(maps, head, outcome, scan, aif_params, bolus, n_nonsteady, size_factor,
           snr_patient):
    """What the simulator knows of the patient (``Patient.truth``)."""
    markers, vessels = outcome["markers"], scan["vessels"]
    arterial, venous = scan["arterial"], scan["venous"]
    susceptibility, p_latent = outcome["susceptibility"], outcome["p_latent"]
    truth = {k: v.astype(np.float32) for k, v in maps.items() if k != "tissue"}
    truth.update(
        tissue=maps["tissue"],
        head=head,
        s0=scan["s0"].astype(np.float32),
        susceptibility=susceptibility.astype(np.float32),
        risk=(susceptibility * outcome["ht"]).astype(np.float32),
        latent_risk=(susceptibility * p_latent).astype(np.float32),
        observable_risk=outcome["observable"].astype(np.float32),
        ht_clean=outcome["bleed"].astype(np.uint8),
        aif_concentration=arterial.astype(np.float32),
        aif_delta_r2star=blood_delta_r2star(arterial, _FIELD_STRENGTH).astype(np.float32),
        vof_concentration=venous.astype(np.float32),
        vof_delta_r2star=blood_delta_r2star(venous, _FIELD_STRENGTH).astype(np.float32),
        aif_params=aif_params,
        dose=np.float64(bolus["dose"]),
        cardiac_output=np.float64(bolus["cardiac_output"]),
        artery_fraction=vessels["artery"].astype(np.float32),
        vein_fraction=vessels["vein"].astype(np.float32),
        aif_voxels=_vessel_voxels(vessels["artery"]),
        vein_voxels=_vessel_voxels(vessels["vein"]),
        n_nonsteady=np.int64(n_nonsteady),
        reperfusion=np.float64(outcome["reperfusion"]),
        treatment=np.float64(outcome["treatment"]),
        age=np.float64(outcome["age"]),
        p_ht=np.float64(p_latent),
        image_score=np.float64(outcome["image_score"]),
        low_cbv_ml=np.float64(markers["low_cbv"]),
        leakage_ml=np.float64(markers["leakage"]),
        very_low_adc_ml=np.float64(markers["very_low_adc"]),
        severity=np.float64(size_factor),
        snr=np.float64(np.nan if snr_patient is None else snr_patient),
        noise_sigma=np.float64(scan["sigma"]),
        motion=scan["motion"].astype(np.float32),
    )
    return truth


# -- outcome ---------------------------------------------------------------------------
def _image_score(markers):
    """Standardised imaging score of the outcome model (very low CBV, leakage)."""
    z = [(np.log1p(markers[name]) - mean) / sd for name, (mean, sd) in _MARKERS.items()]
    return float(np.dot(_W_IMAGE, z))


def _outcome_logit(image_score, reperfusion, treatment, age, ht_prevalence):
    slope = _W_IMAGE_REPERFUSED if reperfusion else _W_IMAGE_OCCLUDED
    return (_intercept(ht_prevalence) + slope * image_score
            + _W_REPERFUSION * (reperfusion - _P_REPERFUSION)
            + _W_TREATMENT * (treatment - _P_TREATMENT) + _W_AGE * age)


def _p_bleed_given_images(image_score, ht_prevalence):
    """P(patient bleeds | imaging): the outcome model averaged over unobserved factors."""
    nodes, weights = _GAUSS_HERMITE
    weights = weights / weights.sum()
    out = {}
    for rep in (0, 1):
        total = 0.0
        for treat in (0, 1):
            logit = _outcome_logit(image_score, rep, treat, nodes, ht_prevalence)
            total += (_P_TREATMENT if treat else 1 - _P_TREATMENT) * np.dot(
                weights, special.expit(logit))
        out[rep] = total
    return out


def _intercept(ht_prevalence):
    """Intercept giving a cohort prevalence of ``ht_prevalence`` (image score ~ N(0, 1))."""
    if ht_prevalence <= 0.0:
        return -np.inf
    if ht_prevalence >= 1.0:
        return np.inf
    return _INTERCEPTS.setdefault(ht_prevalence, _solve_intercept(ht_prevalence))


_INTERCEPTS = {}


def _solve_intercept(prevalence):
    from scipy.optimize import brentq

    nodes, weights = _GAUSS_HERMITE
    weights = weights / weights.sum()

    def mean_probability(b0):
        total = 0.0
        for rep in (0, 1):
            slope = _W_IMAGE_REPERFUSED if rep else _W_IMAGE_OCCLUDED
            # image score and age are independent standard normals: one normal of the sum
            spread = np.hypot(slope, _W_AGE)
            for treat in (0, 1):
                logit = (b0 + spread * nodes + _W_REPERFUSION * (rep - _P_REPERFUSION)
                         + _W_TREATMENT * (treat - _P_TREATMENT))
                total += ((_P_REPERFUSION if rep else 1 - _P_REPERFUSION)
                          * (_P_TREATMENT if treat else 1 - _P_TREATMENT)
                          * np.dot(weights, special.expit(logit)))
        return total - prevalence

    return brentq(mean_probability, -30.0, 30.0)


# -- voxel risk ------------------------------------------------------------------------
def _observed_logit(maps, cbv_normal, adc_normal, brain):
    """The part of the voxel logit an ideal reader measures on the baseline images."""
    low_cbv = np.clip(1.0 - maps["cbv"] / cbv_normal, 0.0, 1.0)
    tmax_excess = np.clip((maps["tmax"] - 6.0) / 6.0, 0.0, 1.0)
    high, low = _VERY_LOW_ADC
    very_low_adc = np.clip((high - maps["adc"] / adc_normal) / (high - low), 0.0, 1.0)
    logit = (1.0 * np.abs(maps["k2"]) / _K2_REF + 1.2 * low_cbv + 0.9 * tmax_excess
             + _W_VERY_LOW_ADC * very_low_adc)
    return np.where(brain, logit, 0.0)


def _capped_threshold(latent, tau, cap):
    """The threshold, raised if needed so that at most ``cap`` voxels bleed on average.

    The expected bleed is the sum over ``latent`` (brain voxels) of
    ``P(latent + noise > tau)``; it falls with ``tau``, solved by bisection.
    """
    def expected(t):
        return float(special.ndtr((latent - t) / _LABEL_NOISE).sum())

    if cap <= 0 or expected(tau) <= cap:
        return tau
    low, high = tau, float(latent.max()) + 6.0 * _LABEL_NOISE
    for _ in range(40):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if expected(mid) > cap else (low, mid)
    return high


def _observable_risk(observed, image_score, ht_prevalence):
    """P(voxel bleeds | images): unobserved terms and outcome factors integrated out."""
    p_bleed = _p_bleed_given_images(image_score, ht_prevalence)
    risk = np.zeros_like(observed)
    for rep, p_rep in ((0, 1 - _P_REPERFUSION), (1, _P_REPERFUSION)):
        spread = np.sqrt(_LABEL_NOISE**2 + _SD_TAU**2 + _SD_MICROVASCULAR**2
                         + rep * _SD_REPERFUSION_FIELD**2)
        risk += p_rep * p_bleed[rep] * special.ndtr((observed - _TAU) / spread)
    return risk


# -- annotation ------------------------------------------------------------------------
_SHIFTS = [(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)]
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[:, :, 1] = ndimage.generate_binary_structure(2, 1)


def _in_voxels(mm, zooms):
    """A length in mm as a whole number of in-plane voxels (at least one)."""
    return max(1, int(round(mm / float(zooms[0]))))


def _annotate(rng, bleed, brain, zooms):
    """The reader's HT mask: shifted, bloomed, small bleeds missed or added."""
    voxel_ml = float(np.prod(zooms)) / 1000.0
    drawn = bleed.copy()
    labels, n = ndimage.label(drawn)
    if n > 1:
        sizes = ndimage.sum_labels(drawn, labels, np.arange(1, n + 1)) * voxel_ml
        for label, size in enumerate(sizes, start=1):
            if size <= _SMALL_BLEED_ML and rng.uniform() < _P_MISS:
                drawn[labels == label] = False
    # the reader outlines blobs: fine structure is lost, small gaps are filled
    level = rng.uniform(0.3, 0.7)
    width = _OUTLINE_MM / np.asarray(zooms[:2])
    outline = ndimage.gaussian_filter(drawn.astype(float), (*width, 0.0)) > level
    drawn = outline if outline.any() else drawn
    if rng.uniform() < _P_BLOOM:  # larger haematomas bloom more (more iron)
        large = drawn.sum() * voxel_ml > _LARGE_BLEED_ML
        drawn = ndimage.binary_dilation(
            drawn, _IN_PLANE, iterations=_in_voxels(_BLOOM_MM * (1 + large), zooms))
    if rng.uniform() < _P_SHIFT:
        direction = np.asarray(_SHIFTS[rng.integers(len(_SHIFTS))])
        offset = direction * _in_voxels(rng.uniform(*_SHIFT_MM), zooms)
        drawn = np.roll(drawn, tuple(offset), axis=(0, 1))
    if rng.uniform() < _P_EXTRA:
        candidates = np.argwhere(brain & ~drawn)
        spots = np.zeros_like(drawn)
        for _ in range(int(rng.integers(1, 4))):
            spots[tuple(candidates[rng.integers(len(candidates))])] = True
        if rng.uniform() < 0.5:
            spots = ndimage.binary_dilation(spots, _IN_PLANE,
                                            iterations=_in_voxels(_BLOOM_MM, zooms))
        drawn |= spots
    drawn &= brain
    if not drawn.any():  # the reader saw the bleed: the label says so
        drawn = bleed.copy()
    return drawn


# -- head, vessels, acquisition -------------------------------------------------------
def _draw_head(rng, radius, brain):
    """Head labels: 1 brain, 2 skull and scalp around it (in units of the brain radius)."""
    outer = 1.0 + rng.uniform(0.14, 0.2)
    head = np.where(brain, 1, np.where(radius < outer, 2, 0)).astype(np.uint8)
    return head


def _diffusion_restriction(rng, maps, dist, duration, ratio):
    """ADC of the infarct: deeper and longer ischaemia restrict diffusion more.

    ``duration`` in [0, 1] is the patient's relative duration of ischaemia (time from
    onset, collateral failure); a smooth field adds voxel variation that the perfusion
    maps do not show. The core (``tissue == 4``) changes with its depth; so does an
    early-reperfusion zone: a patchy part (a smooth field above its quantile,
    ``_REPERFUSED_SHARE`` x U(0.5, 1) of it) of the normal-appearing tissue within
    ``_REPERFUSED_REACH`` times the penumbra radius (``ratio``), whose depth is the
    field's excess over that quantile (0-1). Its perfusion maps are untouched: they show
    the present flow, the ADC the ischaemia it had.
    """
    core = maps["tissue"] == 4
    wobble = _smooth_field(rng, core.shape, 0.15)
    past = np.clip(1.0 - dist, 0.0, 1.0)  # depth of the ischaemia the ADC shows
    if _REPERFUSED_SHARE > 0:
        # part of the ischaemic territory around the lesion reperfused before the scan:
        # patchy (a smooth field, not the distance to the core), so the perfusion maps,
        # graded by that distance, do not predict it; its ADC is a core's of that depth
        field = _smooth_field(rng, core.shape, 0.12)
        near = (maps["tissue"] <= 2) & (maps["tissue"] > 0) & (dist < _REPERFUSED_REACH * ratio)
        if near.any():
            share = _REPERFUSED_SHARE * rng.uniform(0.5, 1.0)
            cut = np.quantile(field[near], 1.0 - share)
            zone = near & (field > cut)
            past[zone] = np.clip(field[zone] - cut, 0.0, 1.0)
            core = core | zone
    if not core.any():
        return
    depth = past
    fall = (_ADC_FALL[0] + _ADC_FALL[1] * duration) * (_ADC_DEPTH + (1 - _ADC_DEPTH) * depth)
    ratio = np.clip(_ADC_CORE - fall + _ADC_WOBBLE * wobble, *_ADC_LIMITS)
    maps["adc"][core] = (maps["_adc_normal"] * ratio)[core]


def _benign_oligaemia(rng, maps, dist, ratio, brain):
    """Delayed but sufficient flow around the penumbra (Tmax 2-6 s, no infarction)."""
    reach = ratio * rng.uniform(1.25, 1.5)
    olig = brain & (maps["tissue"] <= 2) & (dist < reach)
    if not olig.any():
        return
    toward = np.clip((reach - dist) / (reach - ratio), 0.0, 1.0)[olig]
    maps["delay"][olig] = np.maximum(maps["delay"][olig], 1.5 + 2.5 * toward)
    maps["cbf"][olig] *= 1.0 - 0.15 * toward
    maps["mtt"][olig] = 60.0 * maps["cbv"][olig] / maps["cbf"][olig]
    maps["dispersion"][olig] = 0.5 + 0.35 * maps["delay"][olig]
    maps["tmax"][olig] = _tmax(maps["delay"][olig], maps["mtt"][olig],
                               maps["dispersion"][olig])


def _skull(head, brain):
    """The inner layer of the non-brain head tissue (dark on EPI): 1 voxel in-plane."""
    near = ndimage.binary_dilation(brain, _IN_PLANE)
    return (head == 2) & near


def _t2star_dominant(rng, maps, leak_field):
    """Turn part of the leaky voxels T2*-dominant (apparent K2 < 0)."""
    leaky = maps["k2"] > 0
    if not leaky.any():
        return
    share = rng.uniform(0.1, 0.4)
    cut = np.quantile(leak_field[leaky], share)
    flip = leaky & (leak_field <= cut)
    maps["k2"][flip] *= -0.6


def _disc_fraction(shape, zooms, centre_mm, radius_mm):
    """In-plane partial volume of a disc (a vessel running through the slices)."""
    frac = np.zeros(shape[:2])
    sub = (np.arange(4) + 0.5) / 4.0
    half = np.asarray(shape[:2]) / 2.0
    ci = centre_mm / zooms[:2] + half  # centre in voxel units
    span = int(np.ceil(radius_mm / zooms[:2].min())) + 1
    lo = np.maximum(np.floor(ci).astype(int) - span, 0)
    hi = np.minimum(np.floor(ci).astype(int) + span + 1, shape[:2])
    for i in range(lo[0], hi[0]):
        for j in range(lo[1], hi[1]):
            dx = (i + sub[:, None] - ci[0]) * zooms[0]
            dy = (j + sub[None, :] - ci[1]) * zooms[1]
            frac[i, j] = np.mean(dx**2 + dy**2 <= radius_mm**2)
    return frac


def _draw_vessels(rng, shape, zooms, brain):
    """Partial-volume maps of arteries (MCA, ACA) and veins (sinus, cortical veins)."""
    half_mm = _FOV_MM[:2] / 2.0
    artery = np.zeros(shape)
    vein = np.zeros(shape)
    # middle cerebral arteries in the Sylvian fissures, anterior cerebral arteries near
    # the midline: 1.5-2 mm radius, running through the slices with a small wander
    sites = [(s * rng.uniform(0.3, 0.42), rng.uniform(0.0, 0.2), rng.uniform(1.5, 2.0))
             for s in (-1.0, 1.0)]
    sites += [(s * rng.uniform(0.02, 0.05), rng.uniform(0.35, 0.5), rng.uniform(1.0, 1.4))
              for s in (-1.0, 1.0)]
    for k in range(shape[2]):
        for cx, cy, r in sites:
            centre = np.array([cx, cy]) * half_mm + rng.normal(0.0, 1.0, 2)
            artery[:, :, k] = np.maximum(artery[:, :, k],
                                         _disc_fraction(shape, zooms, centre, r))
    # superior sagittal sinus at the posterior midline, just inside the brain outline,
    # and two cortical veins on the surface: larger, later and broader than arteries
    for k in range(shape[2]):
        column = brain[shape[0] // 2, :, k]
        if not column.any():
            continue
        back = np.flatnonzero(column)[0]
        cy_mm = (back + 1.0 - shape[1] / 2.0) * zooms[1]
        centre = np.array([rng.normal(0.0, 0.5), cy_mm])
        vein[:, :, k] = np.maximum(vein[:, :, k],
                                   _disc_fraction(shape, zooms, centre, rng.uniform(3.0, 4.0)))
    surface = np.argwhere(brain & ~ndimage.binary_erosion(brain, _IN_PLANE))
    for _ in range(2):
        i, j, k = surface[rng.integers(len(surface))]
        centre = (np.array([i, j]) + 0.5 - np.asarray(shape[:2]) / 2.0) * zooms[:2]
        vein[:, :, k] = np.maximum(vein[:, :, k],
                                   _disc_fraction(shape, zooms, centre, rng.uniform(1.5, 2.5)))
    artery *= brain
    vein *= brain
    return {"artery": artery, "vein": vein}


def _vessel_voxels(fraction):
    """Voxels at least 20% vessel (or, on coarse grids, at least half the largest share)."""
    level = min(0.2, 0.5 * float(fraction.max()))
    if level <= 0:
        return np.zeros((0, 3), dtype=np.int64)
    return np.argwhere(fraction >= level).astype(np.int64)


def _draw_blood_aif(rng, tr):
    """Arterial whole-blood concentration (mM): gamma variate with a recirculation.

    The first pass carries the dose over the cardiac output (Stewart-Hamilton: its area
    is ``dose / cardiac output``); see the module docstring of ``_simulate``, section
    "Blood physics". Returns the parameters of ``_aif`` (amplitude in mM) and the dose
    (mmol/kg) and cardiac output (mL/min/kg) of the patient.
    """
    alpha = rng.uniform(*_BOLUS_ALPHA)
    beta = rng.uniform(*_BOLUS_BETA)
    t0 = tr * rng.uniform(6.0, 10.0)  # 6-10 baseline frames before the bolus
    dose = _DOSE * rng.uniform(*_DOSE_SPREAD)
    output = _CARDIAC_OUTPUT * rng.lognormal(0.0, _SD_LOG_CARDIAC_OUTPUT)
    area = 1000.0 * dose / (output / 60.0)  # mM s: mmol/kg over mL/s/kg, in mmol/L
    # area of the gamma variate of peak 1: beta e^alpha alpha^-alpha Gamma(alpha + 1)
    unit = beta * np.exp(alpha - alpha * np.log(alpha) + special.gammaln(alpha + 1.0))
    ratio = rng.uniform(0.10, 0.25)
    t_rec = alpha * beta + rng.uniform(6.0, 10.0)
    beta_r = beta * rng.uniform(1.5, 2.5)
    params = np.array([t0, area / unit, alpha, beta, ratio, t_rec, alpha, beta_r])
    return params, {"dose": dose, "cardiac_output": output}


def _venous_curve(aif_params, times, rng):
    """Delayed, dispersed arterial curve (mM): the bolus leaving through the veins.

    The area equals the arterial one (the indicator is conserved).
    """
    n = int(np.ceil(times.max(initial=0.0) / _FINE_DT)) + 2
    fine = np.arange(n) * _FINE_DT
    delay = rng.uniform(*_VENOUS_DELAY)
    beta = rng.uniform(*_VENOUS_DISPERSION)
    kernel = np.exp(-fine / beta) / beta * _FINE_DT
    curve = np.convolve(_aif(aif_params, fine), kernel)[:n]
    return np.interp(times - delay, fine, curve, left=0.0)


def _mix_vessels(signal, vessels, curves, te, blood_s0):
    """Signal of voxels part vessel: magnitudes add per compartment (partial volume).

    ``curves`` maps "artery" and "vein" to whole-blood concentrations (mM) on the frame
    times; their signal follows the quadratic blood relaxivity.
    """
    for name in ("artery", "vein"):
        curve = np.exp(-te * blood_delta_r2star(curves[name], _FIELD_STRENGTH))
        frac = vessels[name]
        where = frac > 0
        f = frac[where][:, None].astype(np.float32)
        blood = (1.1 * blood_s0[where])[:, None].astype(np.float32)
        signal[where] = (1.0 - f) * signal[where] + f * blood * curve.astype(np.float32)


def _nonsteady(rng, signal, n_nonsteady):
    """Leading frames before the steady state: T1 saturation not yet reached."""
    excess = rng.uniform(0.15, 0.35)
    for k in range(n_nonsteady):
        signal[..., k] *= np.float32(1.0 + excess * 0.45**k)


def _move(rng, signal):
    """Rigid in-plane motion: a slow drift and a few spikes; returns (dx, dy, angle)."""
    nt = signal.shape[-1]
    drift = rng.uniform(0.3, 1.0) * rng.choice([-1.0, 1.0], size=2)
    path = np.outer(np.linspace(0.0, 1.0, nt), drift)
    angle = np.linspace(0.0, rng.uniform(-2.0, 2.0), nt)
    for t in rng.choice(nt, size=int(rng.integers(1, 4)), replace=False):
        path[t] += rng.uniform(0.5, 1.5) * rng.choice([-1.0, 1.0], size=2)
    centre = (np.asarray(signal.shape[:3]) - 1) / 2.0
    for t in range(nt):
        theta = np.deg2rad(angle[t])
        rot = np.array([[np.cos(theta), -np.sin(theta), 0.0],
                        [np.sin(theta), np.cos(theta), 0.0], [0.0, 0.0, 1.0]])
        shift = np.array([path[t, 0], path[t, 1], 0.0])
        offset = centre - rot @ centre - shift
        signal[..., t] = ndimage.affine_transform(signal[..., t], rot, offset=offset,
                                                  order=1, mode="constant", cval=0.0)
    return np.column_stack([path, angle])
