"""
==========================================
A tour of the simulated stroke cohort
==========================================

The embedded default data of sklearn-hemo is a *simulated* acute-stroke cohort: source
DSC perfusion signal, DWI and follow-up hemorrhagic transformation (HT), generated from
physics rather than painted on noise (see :func:`sklearn_hemo.datasets.make_stroke_cohort`
for every assumption and its source). This example looks at what a model will read:

* the source PWI signal of a healthy, a penumbral, a core and a leaky voxel;
* the same curves as concentration, the quantity the paper learns from;
* DWI b0 / b1000, the tissue classes and where the patient bled;
* what the realistic default adds to make it as hard as real scans: a head around the
  brain, arteries and veins with partial volume, bright leading frames, and a reader's
  imperfect annotation.

Results on simulated data are not clinical evidence.
"""

# %%
# Setting ``SKLEARN_HEMO_EXAMPLE_QUICK=1`` in the environment makes every example of this
# gallery smaller still; the test suite runs them that way.
import os

QUICK = os.environ.get("SKLEARN_HEMO_EXAMPLE_QUICK", "0") not in ("", "0")

import matplotlib.pyplot as plt
import numpy as np

from sklearn_hemo.datasets import make_stroke_cohort
from sklearn_hemo.signal import concentration

# %%
# A small cohort
# --------------
# Each patient has its own acquisition: repetition time, number of frames and echo time
# differ, as they do between real scans. About a quarter of the patients bleed.
cohort = make_stroke_cohort(
    n_patients=4 if QUICK else 8, shape=(24, 24, 3) if QUICK else (48, 48, 4),
    ht_prevalence=0.5, random_state=0,
)
print(cohort)
for patient in cohort:
    print(
        f"{patient.id}: HT={patient.ht}  TR={patient.repetition_time:.2f} s  "
        f"TE={1000 * patient.echo_time:.0f} ms  frames={patient.n_frames}  "
        f"grid={patient.shape}"
    )

# %%
# Four kinds of voxels
# --------------------
# We take the bleeding patient with the largest lesion and, from its ground truth
# (``patient.truth``), group its voxels into healthy grey matter, penumbra, ischemic core
# (both without leakage) and leaky voxels (blood-brain-barrier disruption, ``k2 > 0``).
bleeders = [p for p in cohort if p.ht == 1] or list(cohort)
patient = max(bleeders, key=lambda p: int((p.truth["tissue"] >= 3).sum()))
truth = patient.truth
tissue = truth["tissue"]
pwi = np.asarray(patient.pwi.dataobj, dtype=np.float32)
no_leak = truth["k2"] == 0
groups = {
    "healthy grey matter": (tissue == 1) & no_leak,
    "penumbra": (tissue == 3) & no_leak,
    "core": (tissue == 4) & no_leak,
    "leaky (k2 > 0)": truth["k2"] > 0,
}
for name, mask in groups.items():
    print(
        f"{name:20s} {int(mask.sum()):4d} voxels: median CBF {np.median(truth['cbf'][mask]):5.1f}"
        f"  CBV {np.median(truth['cbv'][mask]):4.2f}  Tmax {np.median(truth['tmax'][mask]):5.1f} s"
        f"  HT risk {np.median(truth['risk'][mask]):.2f}"
    )

# %%
# Source signal and concentration
# -------------------------------
# The bolus of contrast agent makes the signal *drop*; the concentration
# ``C(t) = -(1/TE) ln(I(t)/I0)`` turns the drop into a peak. Thick lines are the mean over
# each group, thin lines one voxel (with its noise). The core shows a small, late
# peak (low flow, long delay), the penumbra a delayed one; in leaky voxels extravasated
# contrast agent lifts the late signal back to (or above) its baseline.
times = patient.frame_times
fig, (ax_signal, ax_conc) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
for color, (name, mask) in zip(["C0", "C1", "C3", "C2"], groups.items(), strict=True):
    curves = pwi[mask]
    relative = curves / curves[:, :5].mean(axis=1, keepdims=True)
    conc = concentration(curves, patient.echo_time)
    ax_signal.plot(times, relative.mean(axis=0), color=color, lw=2, label=name)
    ax_signal.plot(times, relative[0], color=color, lw=0.6, alpha=0.6)
    ax_conc.plot(times, conc.mean(axis=0), color=color, lw=2, label=name)
    ax_conc.plot(times, conc[0], color=color, lw=0.6, alpha=0.6)
ax_conc.plot(
    times, truth["aif_delta_r2star"] / 10, "k--", lw=1, label="arterial blood / 10"
)
ax_signal.set(xlabel="time (s)", ylabel="signal / baseline", title="source PWI signal")
ax_conc.set(xlabel="time (s)", ylabel=r"$\Delta R_2^*$ (1/s)", title="concentration")
ax_conc.legend(fontsize=8)
fig.suptitle(f"{patient.id}: TR {patient.repetition_time:.2f} s, {patient.n_frames} frames")

# %%
# Images of one slice
# -------------------
# DWI b1000 is bright where diffusion is restricted (the core); the HT annotation at
# follow-up lies mostly inside the lesion and follows the latent risk.
k = int(np.argmax((tissue >= 3).sum(axis=(0, 1))))
b0 = np.asarray(patient.dwi_b0.dataobj)[..., k]
b1000 = np.asarray(patient.dwi_b1000.dataobj)[..., k]
ht = np.asarray(patient.ht_mask.dataobj)[..., k] if patient.ht_mask is not None else None
panels = [
    ("PWI at bolus peak", pwi[..., k, int(np.argmax(truth["aif_concentration"]))], "gray"),
    ("DWI b0", b0, "gray"),
    ("DWI b1000", b1000, "gray"),
    ("tissue class", tissue[..., k], "viridis"),
    ("latent HT risk", truth["risk"][..., k], "magma"),
]
fig, axes = plt.subplots(1, len(panels), figsize=(14, 3.2), layout="constrained")
for ax, (title, image, cmap) in zip(axes, panels, strict=True):
    ax.imshow(image.T, cmap=cmap, origin="lower")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
if ht is not None and ht.any():
    axes[-1].contour(ht.T, levels=[0.5], colors="cyan", linewidths=1)
    axes[-1].set_title("latent HT risk, HT contour", fontsize=9)
fig.suptitle(f"{patient.id}, slice {k}")

# %%
# What real scans have
# --------------------
# The default cohort is ``difficulty="realistic"``: nothing is handed over that a scanner
# would not give. The baseline image shows the scalp as bright as the brain (a threshold
# mask takes it in), arteries and veins enter voxels by partial volume (the sagittal sinus
# fills later and holds more contrast than the arteries), the first frames are brighter
# before the steady state, and the HT mask is a reader's drawing, not the clean truth.
head = truth["head"]
n_ns = int(truth["n_nonsteady"])
baseline = pwi[..., n_ns: n_ns + 4].mean(axis=-1)
relative = pwi / np.maximum(pwi[..., n_ns: n_ns + 4].mean(axis=-1, keepdims=True), 1e-6)
conc = -np.log(np.clip(relative, 1e-3, None)) / patient.echo_time
fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), layout="constrained")
axes[0].imshow(baseline[..., k].T, cmap="gray", origin="lower")
axes[0].contour((head[..., k] == 1).T, levels=[0.5], colors="lime", linewidths=0.8)
axes[0].set_title("baseline, true brain outline", fontsize=9)
for name, key, color in (("arteries", "aif_voxels", "C3"), ("veins", "vein_voxels", "C0")):
    voxels = truth[key]
    if len(voxels):
        axes[1].plot(times, conc[tuple(voxels.T)].mean(axis=0), color=color, label=name)
axes[1].plot(times, conc[tissue > 0].mean(axis=0), "k", lw=1, label="brain mean")
axes[1].set(xlabel="time (s)", ylabel=r"apparent $\Delta R_2^*$ (1/s)",
            title="partial-volume vessels")
axes[1].legend(fontsize=8)
brain_mean = pwi[tissue > 0].mean(axis=0)
axes[2].plot(times[:12], brain_mean[:12], "o-")
axes[2].axvspan(-0.5, times[n_ns] - 0.5 * patient.repetition_time, color="C1", alpha=0.3,
                label=f"{n_ns} non-steady frame(s)")
axes[2].set(xlabel="time (s)", ylabel="mean brain signal", title="leading frames")
axes[2].legend(fontsize=8)
axes[3].imshow(truth["ht_clean"][..., k].T, cmap="Reds", origin="lower", vmax=2)
if ht is not None and ht.any():
    axes[3].contour(ht.T, levels=[0.5], colors="blue", linewidths=1)
axes[3].set_title("clean HT (red), reader's mask (blue)", fontsize=9)
for ax in (axes[0], axes[3]):
    ax.set_axis_off()

# %%
# Acquisitions differ between patients
# -------------------------------------
# The model needs one time axis for everyone: the pipeline resamples every curve onto
# 60 points 1.8 s apart (see the next examples). Here are the raw frame times.
fig, ax = plt.subplots(figsize=(7, 2.8), layout="constrained")
for row, p in enumerate(cohort):
    ax.plot(p.frame_times, np.full(p.n_frames, row), "|", ms=8)
ax.axvline(59 * 1.8, color="k", ls="--", lw=1, label="end of the 60 x 1.8 s grid")
ax.set(yticks=range(len(cohort)), yticklabels=cohort.ids, xlabel="frame time (s)")
ax.legend(loc="lower right", fontsize=8)
plt.show()
