"""A simulated acute-stroke cohort with dynamic susceptibility contrast (DSC) physics.

The simulator is the embedded default of this package: every later step (features,
models, maps) runs on it without private data. It writes *source* signal, as a scanner
does, from parametric ground truth that stays available in ``patient.truth``; it is not
tuned so that any model wins. Every assumption is listed here with its source.

Conventions and units
---------------------
* Times are in seconds; the first PWI frame is acquired at t = 0.
* **Easy cohort: concentration is expressed as the change of transverse relaxation rate**
  ``Delta R2*`` in 1/s, i.e. the proportionality constant kappa of
  ``Delta R2*(t) = kappa C(t)`` is 1 (arterial and tissue kappa equal, no hematocrit
  correction). The signal is ``S(t) = S0 exp(-TE C(t))`` [Rosen 1990], so
  ``C(t) = -ln(S(t) / S0) / TE`` (the formula of Yu et al. 2019) recovers it exactly in the
  absence of noise. **The realistic cohort** (the default) uses gadolinium concentrations
  in mM and the relaxivities of :mod:`sklearn_hemo.relaxivity` instead (section "Blood
  physics" below); the tissue model is the same.
* Perfusion units follow the clinical convention: CBF in mL/100 mL/min, CBV in mL/100 mL,
  MTT in s. The indicator-dilution model [Ostergaard 1996] used is::

      C_t(t) = (CBF / 6000) * (C_a_arr (x) R)(t)  -  K2 * integral_0^t C_a_arr(tau) dtau
      R(t)   = exp(-t / MTT),   MTT = 60 * CBV / CBF
      C_a_arr(t) = (C_a (x) h)(t - delay),   h(t) = exp(-t / beta) / beta

  with ``(x)`` the convolution, ``C_a`` the arterial input function (AIF), ``delay`` the
  bolus arrival delay of the voxel and ``h`` a unit-area exponential dispersion kernel
  [Calamante 2000]. ``CBF / 6000`` is the flow as a fraction of tissue volume per second
  (mL/mL/s) and, because ``R`` integrates to ``MTT`` and ``h`` to one, the area ratio
  ``integral C_t / integral C_a = CBV / 100`` exactly for the vascular term (tested).
  ``Tmax`` is the time of the maximum of the residue seen with the (undelayed) AIF,
  ``delay + t*`` with ``t* = ln(MTT / beta) beta MTT / (MTT - beta)`` the peak time of
  ``h (x) R``.
* The second term is blood-brain-barrier leakage in the Boxerman-Weisskoff form
  [Boxerman 2006]: with a disrupted barrier, extravasated gadolinium shortens T1 and lifts
  the late signal (apparent ``Delta R2*`` falls below the vascular curve, possibly below 0).
  ``K2`` (truth key ``"k2"``) is in 1/s against the integral of the arriving arterial
  concentration. It is nonzero only in part of the lesion.

Assumptions and their sources
-----------------------------
* **AIF**: gamma variate [Thompson 1964; Benner 1997] ``A g(t - t0; alpha, beta)`` with
  ``g`` normalised to a peak of 1, ``alpha ~ U(2.5, 3.5)``, ``beta ~ U(1.0, 1.6)`` s,
  arrival ``t0`` after 6-10 baseline frames, peak ``A ~ U(400, 700)`` 1/s (chosen so that
  grey matter loses 20-30% of its signal at the bolus peak at TE 30 ms, typical of 1.5 T
  DSC), plus a recirculation pass: a wider gamma variate with 10-25% of the amplitude
  arriving 6-10 s after the first peak [Ostergaard 1996 simulations]. The measured AIF handed to the
  patient (``patient.aif``) adds Gaussian noise of 1% of the peak.
* **Normal tissue** [Leenders 1990; Ostergaard 1996]: grey matter CBF 60, CBV 4; white
  matter CBF 25, CBV 2 (mL/100mL/min, mL/100mL), times a patient factor ``U(0.85, 1.15)``
  and a smooth 8% voxel field; normal bolus delay 0-1.5 s (mean 0.5 s).
* **Ischaemic core**: CBF 5-30% and CBV 30-70% of normal (lowest at the centre),
  restricted diffusion (ADC 45-75% of normal [Schlaug 1997; Purushotham 2015]), delay
  8-11 s. **Penumbra** (radius 1.3-1.8 times the core's): CBF 30-70% of normal
  (falling toward the core), CBV 80-115% (autoregulatory vasodilation), delay 3-10 s,
  growing toward the core, so Tmax exceeds 6 s in most of it [Olivot 2009]. Dispersion
  grows with delay, ``beta = 0.5 + 0.35 delay`` s [Calamante 2000; Willats 2006]. Lesions
  are single irregular ellipsoids (radius and leakage grow with the patient's severity)
  in one hemisphere.
* **Acquisition** differs per patient: TR ``U(1.2, 2.0)`` s, 45-90 frames, TE
  ``U(25, 35)`` ms, 6-10 baseline frames; baseline signal ``S0`` with grey/white contrast
  and a smooth coil-sensitivity field; Rician noise [Gudbjartsson 1995] with
  ``sigma = grey-matter S0 / snr`` (S0 before the coil field); integer magnitude images
  (int16) as scanners export them.
* **DWI**: ``b1000 = b0 exp(-1000 ADC)``, ADC 0.85e-3 (grey) and 0.72e-3 (white) mm2/s,
  reduced in the core; Rician noise at the same SNR.
* **Hemorrhagic transformation** (HT). Each patient has a severity ``q`` in [0, 1]. The
  severities of a cohort are stratified (a golden-ratio sequence with a random offset:
  ``q_k = frac(u + k 0.618...)``) so that the number of bleeding patients stays within
  about two of ``n_patients * ht_prevalence`` (26%, 41 of 155 in Yu et al.) even in small
  cohorts, while patient
  ``k`` is computed from ``(random_state, k)`` alone. A patient bleeds when
  ``q >= 1 - ht_prevalence``; ``q`` also enlarges the lesion and its leakage, so bleeding
  patients look more severe on average but overlap with the others. Inside a patient the
  latent voxel logit is::

      L = 2.0 K2/K2_ref + 1.0 lowCBV + 0.7 Tmax_excess + 1.0 DWI_lesion + 0.5 field

  (``lowCBV = clip(1 - CBV/CBV_normal, 0, 1)``, ``Tmax_excess = clip((Tmax - 6)/6, 0, 1)``,
  ``DWI_lesion = clip(2 (1 - ADC/ADC_normal), 0, 1)``, ``field`` a smooth Gaussian random
  field): BBB disruption [Leigh 2014; Kassner 2009], very low CBV [Campbell 2010], long Tmax
  [Yassi 2013] and DWI lesion [Singer 2008] each raise the risk. A voxel bleeds when
  ``L + eps > tau``, ``eps`` spatially correlated label noise with standard deviation 0.5,
  and ``tau`` set so that the expected bleed covers 5-30% of the lesion volume; at least
  one voxel bleeds in a bleeding patient. Bleeding is therefore spatially coherent and
  mostly inside the lesion. The weights are assumptions, not fitted to data.

Realistic cohort (``difficulty="realistic"``, the default)
----------------------------------------------------------
The model above is ``difficulty="easy"``: exact annotation, a handed-over AIF, one SNR,
no head, no vessels, an outcome fixed by a severity that also sets lesion size. It is
kept for fast tests. The realistic cohort (code in ``_realistic.py``) keeps its tissue
physics and changes what real data changes; the numbers it is calibrated to are
published figures and the oracle targets of the difficulty report
(``benchmarks/simulator_difficulty.py``), never a model's score.

* **Outcome** [Souza 2012; Campbell 2013]. Whether a patient bleeds is a Bernoulli draw
  of a logistic model::

      logit P(HT) = b0 + s(rep) * image + 1.3 (rep - 0.6) + 0.5 (treat - 0.5) + 0.5 age

  ``image`` is a standardised score of three markers an ideal reader measures on the
  baseline maps (0.4 x log volume of very low CBV, CBV < 50% of normal, 0.3 x log
  leakage burden, sum of ``|K2| / 2e-4 /s`` times voxel volume, and 0.3 x log volume of
  very low ADC, < 0.55e-3 mm2/s, the predictor of Selim 2002; each standardised by
  fixed population constants; truth ``"very_low_adc_ml"``); ``rep`` reperfusion (60% of
  patients, Campbell 2013),
  ``treat`` treatment (50%) and ``age`` (standard normal) are seen by no image. The image
  slope is 1.6 with reperfusion and 0.6 without (very low CBV predicts haemorrhage
  mainly after reperfusion, Campbell 2013); ``b0`` gives ``ht_prevalence``. Lesion size,
  leakage and their link (correlation about 0.35) are drawn per patient, independently
  of the outcome draw. Calibrated to: patient AUC of the very-low-CBV volume about 0.72
  (Souza 2012: 0.73 for low-rCBF volume), lesion volume 0.65-0.75 (target 0.6-0.85),
  the latent probability itself about 0.8. The draws are stratified (a golden-ratio
  sequence, as above) so the count of bleeding patients stays near its expectation.
  **Stratification over seeds** (issue 27): the lesion-size factor (``U(0, 1)``, truth
  ``"severity"``) and the reperfusion draw are stratified as well, by sequences of steps
  ``sqrt(3) - 1`` and ``sqrt(6) - 2`` with random offsets, so that the share of small
  lesions and of reperfused patients, which set the image scores, the count of bleeding
  patients and the size of their bleeds, no longer swing from one seed to the next
  (they drove the seed-to-seed spread of the difficulty, with bleeds spread by the label
  noise over the normal brain of small-lesion patients: the cap of the bleed now holds
  in expectation, label noise included).
* **Diffusion** [Selim 2002; Tong 2000]. The ADC of the core falls with the depth of
  the ischaemia and with its duration (time from onset, failing collaterals), which
  the perfusion maps do not show: ``ADC / normal = 0.8 - (0.15 + 0.30 d)
  (0.3 + 0.7 depth) + 0.05 field``, clipped to 0.4-0.85, with ``d ~ U(0, 1)`` the
  patient's relative duration, ``depth`` 0 at the core border and 1 at its centre and
  ``field`` a smooth random field (0.34-0.72e-3 mm2/s in grey matter; Schlaug 1997,
  Purushotham 2015: 45-75% of normal in the core, Selim 2002: very low ADC
  < 0.55e-3 mm2/s). Very low ADC marks the depth and duration of ischaemia, which damage
  the blood-brain barrier: it raises the voxel risk (below), partly independently of
  the present flow.
  **Early reperfusion** (issue 27). Within the core the ADC follows the same depth as
  the perfusion deficit, so it told a model little that CBF, CBV and Tmax did not (a
  patient-grouped logistic model on the true maps gained 0.006 AUC on average from
  the true ADC, 3 of seeds 0-9 at least 0.02): nearly all sampled voxels of the core
  are HT voxels, and the negatives lie outside it. In patients, part of the ischaemic
  territory often reperfuses before the scan; that tissue keeps the restricted
  diffusion of the ischaemia it had while its perfusion looks normal, and haemorrhage
  occurs where damaged tissue is reperfused (Molina 2001: HT follows delayed
  recanalisation; Warach & Latour 2004: early blood-brain barrier disruption, HARM,
  after reperfusion). So a patchy zone of the normal-appearing tissue (tissue 1 or 2)
  within 1.5 times the penumbra radius, a share ``U(0.25, 0.5)`` of it per patient
  (where a smooth random field, correlation 12% of the field of view, exceeds its
  quantile), gets the ADC of a core whose depth is the field's excess over that
  quantile (0-1), and its perfusion maps stay as they are (they show the present
  flow). The share, reach and field are assumptions, not fitted. The very-low-ADC
  term of the voxel risk weighs 2.0 (1.2 before; an assumption: BBB damage in
  reperfused tissue, the place of the bleed), and the marker constants of the
  very-low-ADC volume were measured again (log1p mean 4.28, SD 0.93, on
  ``make_stroke_cohort(80, random_state=2024)``). Measured by
  ``benchmarks/simulator_difficulty.py`` (not by a model score it was tuned to): see
  the issue note for the table over seeds 0-9.
* **Voxel risk.** The latent logit adds to the observed terms
  ``|K2|/K2_ref + 1.2 lowCBV + 0.9 Tmax_excess + 2.0 veryLowADC`` (``veryLowADC`` rises
  from 0 at ``ADC / normal = 0.75`` to 1 at 0.45) unobserved smooth
  fields of comparable variance: a microvascular state (SD 0.6) and, in reperfused
  patients, a reperfusion territory (SD 0.6); the threshold ``tau`` varies between
  patients (2.2 +- 0.4) and a bleed covers at most half of the lesion on average, label
  noise included (ECASS: a parenchymal haematoma of type 2 covers over 30% of the
  infarct); the threshold is raised until the expected bleed
  ``sum P(L + eps > tau)`` meets that cap. (Issue 27: before, the cap counted only
  ``L > tau``, and in small-lesion patients the label noise then spread bleeds over the
  normal brain, the largest single source of the seed-to-seed spread.) With leakage
  one term among five, leakage alone separates HT from non-HT lesion voxels only
  modestly (Leigh 2014: permeability 17.0 +- 8.8% without HT, 19.4-24.6% with HT; the
  report measures ``|K2|`` alone at AUC about 0.7). Part of the leakage is T2*-dominant
  (apparent ``K2 < 0``, 10-40% of the leaky voxels). Half of the bleeding patients get a
  haematoma that extends 5-10 mm beyond the bleeding tissue. Around the
  penumbra a benign oligaemia (Tmax 2-6 s, CBF -15%) does not infarct [Olivot 2009].
* **Annotation** [Guenego 2019]. ``ht_mask`` is what a reader draws on registered
  follow-up imaging: small bleeds (<= 1.6 mL) missed half of the time, outlines
  smoothed (5 mm), blooming on GRE/SWI (5 mm in-plane, 10 mm for haematomas over 45 mL,
  70% of patients), a registration shift of 3-6 mm in-plane (80%), and 1-3 spurious
  small spots (50%); sizes are in mm, so the errors do not shrink on finer grids (at
  the default 5 mm voxels each is about one voxel). Calibrated to a median per-patient
  Cohen's kappa against the clean mask (``truth["ht_clean"]``) of about 0.6-0.7
  (Guenego 2019: 0.55 between raters).
* **Acquisition.** No ``aif.tsv`` and no brain mask are handed over. A head: skull (dark,
  8% of the brain signal) and scalp (90-140% of it, perfused with CBV 1.5) around the
  brain, so that a threshold mask takes in non-brain tissue. Arteries (both middle and
  anterior cerebral arteries, discs of 1-2 mm radius running through the slices) and
  veins (the superior sagittal sinus, 3-4 mm, at the posterior midline, and two cortical
  veins) enter by partial volume: the magnitudes of blood and tissue add, so the
  arterial signal saturates at the bolus peak (Chen 2005: partial-volume AIFs distort
  CBF several-fold); the venous curve is the arterial one dispersed (2-3.5 s), 4-7 s
  later and 1.0-1.3 times its area. Per-patient SNR log-uniform in 15-60. One to three
  leading frames before the steady state, 15-35% brighter at the first frame, decaying
  by 0.45 a frame (the issue's real scan: 2008 against 1585). Rigid in-plane motion (a
  drift of 0.3-1 voxel, up to 2 degrees, and 1-3 spikes of 0.5-1.5 voxels) in 30% of
  the patients. TR, frame count and TE vary as above.
* **Size.** 60 patients on 48 x 48 x 8 (0.31 mL voxels) by default: about 15 bleed,
  and the quick protocol's 4,000 balanced voxels can be drawn.

Blood physics (realistic cohort)
--------------------------------
Every realistic patient is scanned at 1.5 T (``patient.field_strength``, written to
``pwi.json`` as ``MagneticFieldStrength``). Concentrations are in mM.

* **Arterial whole-blood concentration** ``C_a(t)``: the gamma variate and recirculation
  of the easy cohort (shape ``alpha ~ U(2.5, 3.5)``; recirculation 10-25% of the peak,
  6-10 s after it, 1.5-2.5 times wider; arrival after 6-10 baseline frames) with a wider
  first pass, ``beta ~ U(1.6, 2.4)`` s (full width at half maximum
  ``~ 2.355 sqrt(alpha) beta`` = 6-10 s, the width of a 4-5 mL/s bolus after the
  cardiopulmonary passage; Benner 1997, Calamante 2013), and an area set by the
  Stewart-Hamilton principle: the first pass carries the dose over the cardiac output,
  ``integral C_a = dose / CO``. Dose ``0.1 mmol/kg x U(0.9, 1.1)`` (the standard single
  dose; the spread is the error of weights estimated in the emergency room, Breuer
  2010); cardiac output ``80 mL/min/kg x lognormal(0, 0.2)`` (5.6 L/min at 70 kg, a
  normal cardiac index of 2.5-4 L/min/m2 and its spread). This gives a first-pass area of
  about 75 mM s and arterial peaks of about 5-13 mM (median 8.5), the range of peak
  arterial concentrations for 0.1 mmol/kg (van Osch 2003 calibrated up to 10 mM for
  that reason; a phantom study of the dose, Kim 2011, 2.8-12.6 mM). Truth:
  ``"aif_concentration"`` (mM), ``"aif_delta_r2star"`` (1/s), ``"dose"`` (mmol/kg),
  ``"cardiac_output"`` (mL/min/kg), ``"aif_params"`` (amplitude in mM).
* **Venous concentration** ``C_v(t)``: the arterial curve dispersed by an exponential
  kernel (2-3.5 s) and delayed by 4-7 s, with the arterial area (the indicator is
  conserved). Truth ``"vof_concentration"`` (mM) and ``"vof_delta_r2star"`` (1/s).
* **Blood signal**: ``S = S0_blood exp(-TE dR2*_blood(C))`` with the quadratic whole-blood
  relation of Kjolby et al. (MRM 2006) at 1.5 T, ``dR2* = 7.6 C + 0.574 C^2``
  (:func:`sklearn_hemo.relaxivity.blood_delta_r2star`): at TE 30 ms a 8.5 mM peak keeps
  about 4% of the blood signal (5 mM: 21%, 13 mM: 0.5%), severe but not the
  ``exp(-15)`` of a linear model with the tissue relaxivity. Vessels enter voxels by
  partial volume, magnitudes adding (section "Acquisition").
* **Tissue**: the indicator-dilution model of "Conventions" with ``C_a`` in mM gives the
  tissue-averaged concentration ``C_t`` in mM (mmol per litre of tissue), leakage
  included (``K2`` in 1/s against the integral of the arriving arterial concentration,
  in tissue concentration units); its signal follows the linear tissue relaxivity,
  ``dR2*_t = 44 C_t`` (1/s) at 1.5 T (Kjolby 2006;
  :func:`sklearn_hemo.relaxivity.tissue_delta_r2star`). Grey matter then loses about
  15-40% of its signal at the bolus peak (median 25% over TE 25-35 ms), the drop of 1.5 T
  DSC. Scalp and skull follow the same tissue relation.
* **No haematocrit correction**: large- and small-vessel haematocrit are taken equal and
  the tissue density 1 g/mL, so ``CBV = 100 integral C_t / integral C_a`` and
  ``CBF = 6000 max(C_t deconvolved by C_a)`` hold exactly with ``C_a``
  = :func:`~sklearn_hemo.relaxivity.blood_concentration` of the arterial ``dR2*`` and
  ``C_t`` = :func:`~sklearn_hemo.relaxivity.tissue_concentration` of the tissue ``dR2*``
  (tested on noise-free curves). A pipeline applying the usual factor 0.73 would bias
  CBF and CBV by that factor on this cohort.
* :func:`simulated_concentration` returns ``C_t`` in mM for realistic patients (multiply by
  44 for ``dR2*``) and ``dR2*`` (kappa 1) for easy ones.

Ground truth (``patient.truth``)
--------------------------------
Arrays on the PWI grid unless stated: ``"tissue"`` (uint8: 0 outside the brain, 1 grey,
2 white, 3 penumbra, 4 core), ``"cbf"``, ``"cbv"``, ``"mtt"``, ``"tmax"``, ``"delay"``,
``"dispersion"`` (beta, s), ``"k2"`` (1/s), ``"adc"`` (mm2/s), ``"s0"`` (noise-free
baseline signal), ``"susceptibility"`` (``P(L + eps > tau)``, the voxel bleeding
probability if the patient bleeds), ``"risk"`` (the latent voxel probability of HT given
the simulation state: ``susceptibility`` in bleeding patients, 0 otherwise),
``"aif_concentration"`` (true AIF on the frame times, 1D), ``"aif_params"`` (1D: t0, A,
alpha, beta, recirculation ratio, recirculation arrival, alpha_r, beta_r), ``"severity"``
and ``"noise_sigma"`` (0-d). :func:`simulated_concentration` recomputes the noise-free
concentration of any voxel from these (without vessels, head or motion).

Realistic patients add: ``"ht_clean"`` (uint8, the clean HT mask; ``ht_mask`` is the
reader's), ``"observable_risk"`` (P(voxel bleeds | everything an ideal reader measures
on the baseline images): the outcome model and the unobserved voxel terms integrated
out; it reads neither the outcome nor an unobserved factor), ``"latent_risk"``
(P(patient bleeds | all factors) x ``susceptibility``: the bound of a reader who also
knew reperfusion, treatment, age and the unobserved fields, still not the outcome),
``"reperfusion"`` (0-d), ``"n_nonsteady"`` (0-d int), ``"aif_voxels"`` and
``"vein_voxels"`` (int (n, 3): voxels at least 20% artery or vein; on coarse grids, where
no voxel reaches 20%, those with at least half of the largest share),
``"artery_fraction"`` and ``"vein_fraction"`` (the partial-volume maps), ``"head"`` (uint8: 1
brain, 2 non-brain head tissue), ``"p_ht"``, ``"image_score"``, ``"low_cbv_ml"``,
``"leakage_ml"``, ``"very_low_adc_ml"``, ``"treatment"``, ``"age"``, ``"snr"`` (0-d) and
``"motion"`` (per frame: x and y shift in voxels, in-plane angle in degrees). Their
``"aif_concentration"`` is the arterial whole-blood concentration in mM (the easy
cohort's is ``Delta R2*``), and they add ``"aif_delta_r2star"`` (1/s, pure arterial
blood), ``"vof_concentration"`` (mM) and ``"vof_delta_r2star"`` (1/s) of the venous
curve, ``"dose"`` (mmol/kg) and ``"cardiac_output"`` (mL/min/kg) (section "Blood
physics"). ``"risk"`` keeps its meaning (``susceptibility`` times the outcome: it knows
the outcome, a ceiling only).

References
----------
Benner et al., MRM 1997; Breuer et al., Stroke 2010; Calamante, Prog NMR Spectrosc 2013;
Kim et al., ISMRM 2011 abstract 3461; Kjolby et al., MRM 2006; van Osch et al., MRM 2003;
Campbell et al., Ann Neurol 2013; Chen et al., JMRI 2005; Selim et al., Stroke 2002;
Tong et al., Stroke 2000;
Guenego et al., Eur J Neurol 2019; Souza et al., Cerebrovasc Dis 2012;
Boxerman et al., AJNR 2006; Calamante et al., MRM 2000;
Campbell et al., Stroke 2010; Gudbjartsson & Patz, MRM 1995; Kassner et al., AJNR 2009;
Leenders et al., Brain 1990; Leigh et al., Stroke 2014; Olivot et al., Stroke 2009;
Ostergaard et al., MRM 1996; Purushotham et al., Int J Stroke 2015; Rosen et al., MRM 1990;
Schlaug et al., Neurology 1997; Singer et al., Ann Neurol 2008; Thompson et al., Circ Res
1964; Willats et al., MRM 2006; Yassi et al., Stroke 2013; Yu et al., MICCAI 2019.
"""

from __future__ import annotations

import numbers
import os
import types
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed
from scipy import ndimage, special

from ..utils._verbosity import DEPRECATED, DEPRECATED_FLAG, progress_bar, resolve_verbose
from ..utils.fixes import StrOptions, validate_params
from ..utils.validation import check_integer
from ._cohort import ArterialInputFunction, Cohort, Patient
from ._physics import (  # noqa: F401 - _gamma_variate: the tests' old import path
    _K2_REF,
    _LABEL_NOISE,
    _aif,
    _draw,
    _draw_anatomy,
    _gamma_variate,
    _make_patient,
    _rician,
    _smooth_field,
    _tissue_curves,
    _to_int16,
)

__all__ = ["make_stroke_cohort", "simulated_concentration", "PAPER_COHORT"]

#: Size of the cohort of Yu et al. (2019): 155 patients, 128 x 128 matrix, about 20 slices.
PAPER_COHORT = types.MappingProxyType({"n_patients": 155, "shape": (128, 128, 20)})

_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0
# steps of the realistic cohort's lesion-size and reperfusion sequences (the outcome's is
# the golden ratio): irrationals with small partial quotients (even 1D fill) and no
# near-integer sum or difference with each other or the golden ratio for cohorts of
# 40-60 (sqrt(2) - 1 would correlate with the golden ratio: sum 1.03; the R3 sequence
# fills 3D evenly but its step 0.671 ~ 2/3 leaves fifths of [0, 1) uneven)
_STRATA_STEPS = np.array([np.sqrt(3.0) - 1.0, np.sqrt(6.0) - 2.0])
_CHUNK = 16384  # voxels per chunk: bounds memory of the time recursion
_SNR_REALISTIC = (15.0, 60.0)  # per-patient SNR range of the realistic cohort


# -- public API ------------------------------------------------------------------------
@validate_params(
    {
        # the function's own checks give the range and the fix for values of these types
        "n_patients": [Integral],
        "shape": ["array-like"],
        "difficulty": [StrOptions({"realistic", "easy"})],
        "ht_prevalence": [Real],
        "snr": [StrOptions({"auto"}), Real, "array-like", None],
        "repetition_time": [Real, "array-like"],
        "n_frames": [Real, "array-like"],
        "echo_time": [Real, "array-like"],
        # a Generator too, and any non-negative int (seeds a SeedSequence)
        "random_state": [Integral, np.random.Generator, np.random.RandomState, None],
        "out_dir": [str, os.PathLike, None],
        "overwrite": ["boolean"],
        "n_jobs": [Integral, None],
        "verbose": [Integral],  # resolve_verbose's message names the function
        "progress": DEPRECATED_FLAG,
    },
    prefer_skip_nested_validation=True,
)
def make_stroke_cohort(
    n_patients=60,
    shape=(48, 48, 8),
    *,
    difficulty="realistic",
    ht_prevalence=0.26,
    snr="auto",
    repetition_time=(1.2, 2.0),
    n_frames=(45, 90),
    echo_time=(0.025, 0.035),
    random_state=None,
    out_dir=None,
    overwrite=False,
    n_jobs=None,
    verbose=0,
    progress=DEPRECATED,
):
    """Simulate a cohort of acute-stroke patients with source DSC-PWI, DWI and HT labels.

    The physics, the assumptions and their sources are described in
    :mod:`sklearn_hemo.datasets._simulate` (module docstring); in short: a gamma-variate
    AIF with recirculation, indicator-dilution tissue curves with delay and dispersion,
    grey/white matter, an ischaemic core and penumbra, blood-brain-barrier leakage,
    ``S = S0 exp(-TE C)`` with Rician noise, DWI b0/b1000, and HT drawn from a documented
    latent voxel risk. The realistic cohort uses gadolinium concentrations in mM with the
    blood and tissue relaxivities of :mod:`sklearn_hemo.relaxivity` at 1.5 T (its patients
    carry ``field_strength``).

    Parameters
    ----------
    n_patients : int, default=60
        Number of patients. Yu et al. had 155 (see ``PAPER_COHORT``).
    shape : tuple of 3 int, default=(48, 48, 8)
        Spatial matrix of every patient (in-plane at least 4; the field of view is fixed at
        240 x 240 x 100 mm, so the voxel size follows). The paper used 128 x 128 x ~20.
    difficulty : {"realistic", "easy"}, default="realistic"
        ``"realistic"``: random outcome with unobserved causes, a reader's imperfect
        annotation, a head, arteries and veins with partial volume, non-steady leading
        frames, motion, per-patient SNR, and neither ``aif.tsv`` nor a brain mask (the
        pipeline must find them). ``"easy"``: the clean first-release generator (exact
        annotation, true AIF and brain mask handed over), for fast tests.
    ht_prevalence : float, default=0.26
        Target fraction of bleeding patients (41 of 155 in the paper); the cohort's count
        is within about two patients of it (stratified severities).
    snr : "auto", float, (low, high) or None, default="auto"
        Baseline grey-matter signal over the Rician noise standard deviation. ``"auto"``
        draws each realistic patient's SNR log-uniformly in 15-60 and gives 30 for easy
        cohorts; a (low, high) pair sets that range (realistic only); None gives
        noise-free images (still rounded to integers).
    repetition_time, n_frames, echo_time : (low, high) or scalar
        Ranges of the per-patient acquisition, drawn uniformly (TR and TE in seconds,
        frames inclusive). A scalar fixes the value for every patient.
    random_state : int, numpy Generator, RandomState or None, default=None
        Seed. Patient ``k`` depends only on the seed and ``k``: its generator is spawned
        from a :class:`numpy.random.SeedSequence`, so the first ``m`` patients of a larger
        cohort equal a cohort of ``m`` patients with the same seed.
    out_dir : path-like or None, default=None
        When given, patients are written one by one to this folder in the cohort layout
        (see :func:`save_cohort`) and never held together in memory; the function then
        returns :func:`load_cohort` of it (file-backed, lazy). Use this for paper-sized
        cohorts (about 25 MB per patient on disk; 155
        patients take about 4 GB and, on one core, about 20 minutes: see ``n_jobs``).
    overwrite : bool, default=False
        With ``out_dir``: allow writing into a folder that already holds a cohort.
    n_jobs : int or None, default=None
        Patients simulated in parallel by joblib (None means 1 unless a
        ``joblib.parallel_config`` context says otherwise; -1 all cores). The result does
        not depend on it. With ``out_dir`` each worker writes its own patients.
    verbose : int, default=0
        0 silent; 1 a progress bar; 2 also one line per patient simulated. Bars and lines go to
        standard error; warnings are raised whatever ``verbose`` is.
    progress : bool
        Deprecated, use ``verbose`` (``progress=True`` is ``verbose=1``); removed in 0.2.

    Returns
    -------
    cohort : Cohort
        Patients ``sub-001`` ... with ``truth`` dictionaries (keys in the module docstring).

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> cohort = make_stroke_cohort(n_patients=4, shape=(12, 12, 2), random_state=0)
    >>> len(cohort), cohort[0].pwi.ndim, cohort[0].aif is None
    (4, 4, True)
    >>> sorted(cohort[0].truth)[:4]
    ['adc', 'age', 'aif_concentration', 'aif_delta_r2star']
    >>> easy = make_stroke_cohort(4, (12, 12, 2), difficulty="easy", random_state=0)
    >>> easy[0].aif is not None, easy[0].brain_mask is not None
    (True, True)
    """
    return _stroke_cohort(
        n_patients, shape, difficulty=difficulty, ht_prevalence=ht_prevalence, snr=snr,
        repetition_time=repetition_time, n_frames=n_frames, echo_time=echo_time,
        random_state=random_state, out_dir=out_dir, overwrite=overwrite, n_jobs=n_jobs,
        verbose=verbose, progress=progress)


def _stroke_cohort(n_patients=60, shape=(48, 48, 8), *, difficulty="realistic",
                   ht_prevalence=0.26, snr="auto", repetition_time=(1.2, 2.0),
                   n_frames=(45, 90), echo_time=(0.025, 0.035), random_state=None,
                   out_dir=None, overwrite=False, n_jobs=None, verbose=0,
                   progress=DEPRECATED, motion_share=None):
    """:func:`make_stroke_cohort` (same defaults), with the share of moving patients.

    ``motion_share`` (realistic cohorts only) replaces the share of patients with head
    motion (``_realistic._P_MOTION``, 30%); None keeps it. The draws do not depend on
    it (``simulate_raw_tree`` simulates still patients with ``motion_share=0.0``).
    """
    n_patients = check_integer(n_patients, "n_patients", 1)
    shape = _check_shape(shape)
    if not isinstance(ht_prevalence, numbers.Real) or not 0.0 <= ht_prevalence <= 1.0:
        raise ValueError(f"ht_prevalence must be a number in [0, 1], got {ht_prevalence!r}.")
    if difficulty not in ("realistic", "easy"):
        raise ValueError(
            f"difficulty must be 'realistic' or 'easy', got {difficulty!r}."
        )
    snr = _check_snr(snr, difficulty)
    acq = {
        "repetition_time": _check_range(repetition_time, "repetition_time", 0.1, 10.0),
        "n_frames": _check_range(n_frames, "n_frames", 8, 1000),
        "echo_time": _check_range(echo_time, "echo_time", 0.001, 0.2),
    }
    verbose = resolve_verbose(verbose, "make_stroke_cohort", progress=progress)
    entropy = _root_entropy(random_state)
    root = np.random.default_rng(np.random.SeedSequence(entropy))
    offset = root.random()  # the easy cohort's only draw here (draw for draw)
    # realistic cohorts stratify lesion size and reperfusion the same way (issue 27)
    strata = root.random(2) if difficulty == "realistic" else None
    spec = {"entropy": entropy, "offset": offset, "width": max(3, len(str(n_patients))),
            "strata": strata,
            "shape": shape, "ht_prevalence": ht_prevalence, "snr": snr, "acq": acq,
            "difficulty": difficulty, "motion_share": motion_share}
    folder = None
    if out_dir is not None:
        from ._layout import claim_cohort_folder, patient_files

        owned = claim_cohort_folder(out_dir, overwrite)  # fail before simulating anything
        folder = owned.path
        written = [name for k in range(n_patients)
                   for name in patient_files(f"sub-{k + 1:0{spec['width']}d}")]
        owned.expect(written)  # recorded with their hashes once written
    # patients are independent: workers simulate (and write) them, results come in order
    results = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_simulate_one)(k, spec, folder) for k in range(n_patients)
    )
    results = progress_bar(results, verbose, line=_simulated_line, total=n_patients,
                           desc="simulating", unit="patient")
    if folder is None:
        return Cohort(list(results))
    from ._layout import load_cohort, write_participants

    try:
        write_participants(folder, list(results))
    finally:
        owned.adopt([*written, "participants.tsv"])
    return load_cohort(folder)


def _simulated_line(result):
    """Line of ``verbose=2``: a Patient, or ``(id, ht)`` when written to a folder."""
    pid, ht = (result.id, result.ht) if isinstance(result, Patient) else result
    return f"simulated {pid} (ht={ht})"


def _simulate_one(k, spec, folder):
    """Patient ``k`` of a cohort; written to ``folder`` (returning id and label) if given."""
    # a low-discrepancy sequence: the cohort's count of bleeding patients stays close to
    # its expectation while patient k depends on (seed, k) alone
    stratified = (spec["offset"] + k * _GOLDEN) % 1.0
    pid = f"sub-{k + 1:0{spec['width']}d}"
    rng = np.random.default_rng(np.random.SeedSequence(spec["entropy"], spawn_key=(k,)))
    if spec["difficulty"] == "realistic":
        from ._realistic import simulate_realistic_patient

        size_draw, reperfusion_draw = (spec["strata"] + k * _STRATA_STEPS) % 1.0
        patient = simulate_realistic_patient(
            pid, spec["shape"], rng, outcome_draw=1.0 - stratified, size_draw=size_draw,
            reperfusion_draw=reperfusion_draw,
            ht_prevalence=spec["ht_prevalence"], snr=spec["snr"],
            motion_share=spec["motion_share"], **spec["acq"])
    else:
        patient = simulate_patient(
            pid, spec["shape"], rng, severity=stratified,
            ht=stratified >= 1.0 - spec["ht_prevalence"], snr=spec["snr"], **spec["acq"])
    if folder is None:
        return patient
    from ._layout import write_patient

    write_patient(patient, folder)
    return patient.id, patient.ht


@validate_params(
    {
        "truth": [Mapping],
        "times": ["array-like"],
        "mask": ["array-like", None],
        "leakage": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def simulated_concentration(truth, times, *, mask=None, leakage=True):
    """Noise-free tissue concentration of a simulated patient, recomputed from its truth.

    Parameters
    ----------
    truth : dict
        ``patient.truth`` of a patient from :func:`make_stroke_cohort`.
    times : array-like of shape (n_times,)
        Times in seconds (frame times are ``patient.frame_times``), non-negative.
    mask : array-like of bool on the PWI grid or None, default=None
        Voxels to compute; None means every brain voxel (``truth["tissue"] > 0``).
    leakage : bool, default=True
        Include the blood-brain-barrier leakage term (``K2``); False gives the purely
        intravascular curve, whose area over the AIF's is ``CBV / 100``.

    Returns
    -------
    concentration : ndarray of shape (n_voxels, n_times)
        ``Delta R2*`` in 1/s (kappa = 1) of the voxels of ``mask`` in C order.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.datasets import make_stroke_cohort, simulated_concentration
    >>> p = make_stroke_cohort(n_patients=1, shape=(8, 8, 1), random_state=0)[0]
    >>> simulated_concentration(p.truth, p.frame_times).shape[1] == p.n_frames
    True
    """
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or (times.size and times.min() < 0):
        raise ValueError("times must be a 1D array of non-negative seconds.")
    if mask is None:
        mask = truth["tissue"] > 0
    mask = np.asarray(mask, dtype=bool)
    fields = ("cbf", "cbv", "delay", "dispersion", "k2")
    params = [np.asarray(truth[f], dtype=float)[mask] for f in fields]
    if not leakage:
        params[-1] = np.zeros_like(params[-1])
    out = np.empty((mask.sum(), times.size))
    for start in range(0, out.shape[0], _CHUNK):
        sl = slice(start, start + _CHUNK)
        out[sl] = _tissue_curves(np.asarray(truth["aif_params"], float), times,
                                 *(p[sl] for p in params))
    return out


# -- one patient ---------------------------------------------------------------------------
def simulate_patient(pid, shape, rng, *, severity, ht, snr, repetition_time, n_frames,
                     echo_time):
    """Simulate one patient from its own generator (see :func:`make_stroke_cohort`)."""
    tr = round(_draw(rng, repetition_time), 3)  # scanners report TR in ms, TE in 0.1 ms
    nt = int(_draw(rng, n_frames, integer=True))
    te = round(_draw(rng, echo_time), 4)
    times = np.arange(nt) * tr

    aif_params = _draw_aif(rng, tr)
    maps = _draw_anatomy(rng, shape, severity)
    brain = maps["tissue"] > 0

    scale = rng.uniform(600.0, 1200.0)
    coil = 1.0 + 0.1 * _smooth_field(rng, shape, 0.5)
    s0 = np.where(maps["tissue"] == 2, 0.9, 1.0) * scale * coil * brain
    sigma = 0.0 if snr is None else scale / snr

    conc = np.zeros(shape + (nt,), dtype=np.float32)
    conc[brain] = simulated_concentration({**maps, "aif_params": aif_params}, times, mask=brain)
    signal = np.exp(np.float32(-te) * conc, out=conc)
    signal *= s0[..., None].astype(np.float32)
    pwi = _to_int16(_rician(rng, signal, sigma))
    del conc, signal  # the same buffer: bounds peak memory of paper-sized patients

    b0_clean = np.where(maps["tissue"] == 2, 0.85, 1.0) * scale * 1.2 * coil * brain
    b0 = _to_int16(_rician(rng, b0_clean, sigma * 1.2))
    b1000 = _to_int16(_rician(rng, b0_clean * np.exp(-1000.0 * maps["adc"]), sigma * 1.2))

    hazard, bleed = _draw_hemorrhage(rng, maps, brain)
    if ht:
        if not bleed.any():  # a bleeding patient shows at least one voxel
            bleed = np.zeros_like(bleed)
            bleed[np.unravel_index(np.argmax(np.where(brain, hazard, -1)), shape)] = True
    else:
        bleed = np.zeros_like(bleed)

    aif_true = _aif(aif_params, times)
    aif_measured = aif_true + rng.normal(0.0, 0.01 * aif_params[1], size=nt)

    truth = {k: v.astype(np.float32) for k, v in maps.items() if k != "tissue"}
    truth.update(
        tissue=maps["tissue"],
        s0=s0.astype(np.float32),
        susceptibility=hazard.astype(np.float32),
        risk=(hazard * bool(ht)).astype(np.float32),
        aif_concentration=aif_true.astype(np.float32),
        aif_params=aif_params,
        severity=np.float64(severity),
        noise_sigma=np.float64(sigma),
    )

    return _make_patient(pid, pwi, b0, b1000, bleed, echo_time=te, repetition_time=tr,
                         ht=ht, truth=truth, brain_mask=brain,
                         aif=ArterialInputFunction(times, aif_measured, "concentration"))


# -- physics ---------------------------------------------------------------------------


def _draw_aif(rng, tr):
    alpha = rng.uniform(2.5, 3.5)
    beta = rng.uniform(1.0, 1.6)
    t0 = tr * rng.uniform(6.0, 10.0)  # 6-10 baseline frames before the bolus
    amp = rng.uniform(400.0, 700.0)
    ratio = rng.uniform(0.10, 0.25)
    t_rec = alpha * beta + rng.uniform(6.0, 10.0)
    beta_r = beta * rng.uniform(1.5, 2.5)
    return np.array([t0, amp, alpha, beta, ratio, t_rec, alpha, beta_r])


# -- anatomy and lesion ----------------------------------------------------------------


def _draw_hemorrhage(rng, maps, brain):
    """Voxel susceptibility P(L + eps > tau) and one draw of the bleed (see module doc)."""
    shape = brain.shape
    low_cbv = np.clip(1.0 - maps["cbv"] / maps.pop("_cbv_normal"), 0.0, 1.0)
    tmax_excess = np.clip((maps["tmax"] - 6.0) / 6.0, 0.0, 1.0)
    dwi = np.clip(2.0 * (1.0 - maps["adc"] / maps.pop("_adc_normal")), 0.0, 1.0)
    field = _smooth_field(rng, shape, 0.25)
    logit = (2.0 * maps["k2"] / _K2_REF + 1.0 * low_cbv + 0.7 * tmax_excess + 1.0 * dwi
             + 0.5 * field)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 0.7, mode="reflect")
    noise *= _LABEL_NOISE / max(noise.std(), 1e-12)
    n_lesion = int((maps["tissue"] >= 3).sum())
    n_target = max(1, int(round(rng.uniform(0.05, 0.30) * n_lesion)))
    tau = np.sort(logit[brain])[::-1][min(n_target, brain.sum()) - 1]
    hazard = np.where(brain, special.ndtr((logit - tau) / _LABEL_NOISE), 0.0)
    bleed = brain & (logit + noise > tau)
    return hazard, bleed


# -- helpers ---------------------------------------------------------------------------


def _root_entropy(random_state):
    if random_state is None:
        return np.random.SeedSequence().entropy
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be non-negative, got {random_state}.")
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31))
    raise TypeError(
        "random_state must be None, a non-negative int, a numpy Generator or RandomState, "
        f"got {type(random_state).__name__}."
    )


def _check_shape(shape):
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be 3 integers (x, y, z), got {shape!r}.") from None
    if len(shape) != 3 or min(shape[:2]) < 4 or shape[2] < 1:
        raise ValueError(
            f"shape must be 3 integers (x, y, z) with x, y >= 4 and z >= 1, got {shape!r}."
        )
    return shape


def _check_snr(snr, difficulty):
    """A positive number, a (low, high) range (realistic only), None, or "auto"."""
    if isinstance(snr, str) and snr == "auto":
        return _SNR_REALISTIC if difficulty == "realistic" else 30.0
    if snr is None or (isinstance(snr, numbers.Real) and not isinstance(snr, bool)
                       and snr > 0):
        return snr
    if difficulty == "realistic" and not isinstance(snr, str):
        try:
            low, high = (float(v) for v in snr)
        except (TypeError, ValueError):
            pass
        else:
            if 0 < low <= high:
                return (low, high)
    raise ValueError(
        "snr must be 'auto', a positive number, None (noise-free) or, with "
        f"difficulty='realistic', a (low, high) range, got {snr!r}."
    )


def _check_range(spec, name, low, high):
    if isinstance(spec, numbers.Real):
        spec = (spec, spec)
    try:
        lo, hi = (float(v) for v in spec)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a (low, high) pair, got {spec!r}.") from None
    if not low <= lo <= hi <= high:
        raise ValueError(
            f"{name} must lie in [{low}, {high}] with low <= high, got {spec!r}."
        )
    return lo, hi
