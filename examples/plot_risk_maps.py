"""
==========================================
Voxel-wise HT risk maps and volumes
==========================================

The clinical output of the method is a *map*: the probability of hemorrhagic
transformation in every brain voxel, on the patient's own grid, that can be overlaid on
the images and turned into volumes. :func:`~sklearn_hemo.risk.predict_risk_map` applies a
fitted pipeline to every brain voxel of a patient, in chunks of bounded memory, and
returns a NIfTI image with the PWI's affine. :mod:`sklearn_hemo.metrics` turns maps into
predicted HT volumes in mL, a patient-level risk score and, where an annotation exists,
Dice overlap and volume error.

We train an LSTM on some simulated patients and map patients it has never seen.
"""

# %%
# ``SKLEARN_HEMO_EXAMPLE_QUICK=1`` shrinks the cohort and the training (used by the tests).
import os

QUICK = os.environ.get("SKLEARN_HEMO_EXAMPLE_QUICK", "0") not in ("", "0")

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_hemo.datasets import make_stroke_cohort
from sklearn_hemo.metrics import (
    dice_score,
    patient_table,
    predicted_volume,
    summarize_patient_table,
)
from sklearn_hemo.neural import LSTMClassifier
from sklearn_hemo.plotting import save_risk_overlay
from sklearn_hemo.preprocessing import PatchExtractor
from sklearn_hemo.risk import predict_risk_map
from sklearn_hemo.sampling import sample_voxels


def show_png(path):
    """Show a PNG written by the package (its figures are not pyplot figures) as is."""
    image = plt.imread(path)
    fig = plt.figure(figsize=(image.shape[1] / 100, image.shape[0] / 100))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image)
    ax.set_axis_off()
    return fig


# %%
# Train on some patients
# ----------------------
# The model sees voxels of the training patients only, balanced between HT and non-HT as
# in the paper.
cohort = make_stroke_cohort(
    n_patients=12 if QUICK else 16, shape=(28, 28, 3) if QUICK else (40, 40, 4), random_state=2
)
ht = cohort.ht
test_patients = np.concatenate([np.flatnonzero(ht == 1)[-1:], np.flatnonzero(ht == 0)[-3:]])
train_patients = np.setdiff1d(np.arange(len(cohort)), test_patients)
X, y, groups = sample_voxels(
    cohort, n_samples=200 if QUICK else 500, random_state=0
)
train = np.isin(groups, train_patients)
model = Pipeline(
    [
        ("patches", PatchExtractor(cohort, inputs="pwi")),
        ("scale", StandardScaler()),
        (
            "lstm",
            LSTMClassifier(
                inputs="pwi",
                hidden_size=8 if QUICK else 24,
                max_epochs=3 if QUICK else 30,
                lr=3e-3,
                batch_size=64,
                torch_num_threads=1,
                random_state=0,
            ),
        ),
    ]
)
model.fit(X[train], y[train])
print(f"trained on {int(train.sum())} voxels ({int(y[train].sum())} HT) of patients "
      f"{train_patients.tolist()}")

# %%
# Map a patient it has never seen
# -------------------------------
# The map is a float32 NIfTI image on the PWI grid, 0 outside the brain.
bleeder = cohort[int(test_patients[0])]
risk = predict_risk_map(model, bleeder, chunk_size=4096)
print(risk.shape, risk.get_data_dtype(), "same affine as PWI:",
      np.allclose(risk.affine, bleeder.affine))
values = np.asarray(risk.dataobj)
print(f"risk in [{values.min():.2f}, {values.max():.2f}], "
      f"0 outside the brain: {bool(np.all(values[~bleeder.get_brain_mask()] == 0))}")

out_dir = Path(tempfile.mkdtemp(prefix="hemo-maps-"))
nib.save(risk, out_dir / f"{bleeder.id}_risk.nii.gz")  # opens in any NIfTI viewer

# %%
# Predicted, latent and annotated HT
# ----------------------------------
# Left, the model's map; middle, the simulator's latent risk (the truth the model tries
# to recover, unknown on real data); right, the predicted region at 0.5 against the
# follow-up annotation.
annotation = np.asarray(bleeder.ht_mask.dataobj) > 0
k = int(np.argmax(annotation.sum(axis=(0, 1)))) if annotation.any() else 0
b0 = np.asarray(bleeder.dwi_b0.dataobj, dtype=float)[..., k]
fig, axes = plt.subplots(1, 3, figsize=(12, 4), layout="constrained")
panels = [
    ("predicted risk", values[..., k]),
    ("latent risk (simulator)", bleeder.truth["risk"][..., k]),
]
for ax, (title, image) in zip(axes[:2], panels, strict=True):
    ax.imshow(b0.T, cmap="gray", origin="lower")
    shown = ax.imshow(np.ma.masked_less(image.T, 0.05), cmap="hot", vmin=0, vmax=1,
                      origin="lower", alpha=0.8)
    ax.set_title(title)
axes[2].imshow(b0.T, cmap="gray", origin="lower")
axes[2].imshow(np.ma.masked_equal((values[..., k] >= 0.5).T, False), cmap="autumn",
               origin="lower", alpha=0.6)
if annotation[..., k].any():
    axes[2].contour(annotation[..., k].T, levels=[0.5], colors="cyan", origin="lower")
axes[2].set_title("risk >= 0.5 (orange), annotation (cyan)")
for ax in axes:
    ax.set_axis_off()
fig.colorbar(shown, ax=axes[:2].tolist(), shrink=0.8, label="HT probability")
fig.suptitle(f"{bleeder.id}, slice {k}")

# %%
# The overlay that ``sklearn-hemo predict --png`` writes
# ------------------------------------------------------
# :func:`~sklearn_hemo.plotting.save_risk_overlay` draws axial slices of the map over DWI
# b0 with the contour of the annotation.
png = save_risk_overlay(out_dir / "overlay.png", risk, bleeder.dwi_b0, bleeder.ht_mask,
                        title=f"{bleeder.id}: HT risk")
show_png(png)

# %%
# Volumes depend on the threshold
# -------------------------------
# A volume is the count of voxels at or above a threshold times the voxel size from the
# header. The model was trained on *balanced* voxels: its probabilities are calibrated
# to a 50 % prevalence, not to the rarity of HT over a whole brain, so at 0.5 it marks
# too much. The predicted volume and the Dice overlap with the annotation as the
# threshold rises:
thresholds = np.linspace(0.05, 0.95, 19)
volumes = [predicted_volume(risk, t) for t in thresholds]
dices = [dice_score(risk, bleeder.ht_mask, t) for t in thresholds]
annotated = float(annotation.sum() * np.prod(risk.header.get_zooms()[:3]) / 1000)
fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
positive = np.asarray(volumes) > 0  # a log axis shows only non-empty predictions
ax.plot(thresholds[positive], np.asarray(volumes)[positive], marker="o",
        label="predicted volume")
ax.axhline(annotated, color="k", ls="--", label=f"annotated volume ({annotated:.1f} mL)")
ax.set(xlabel="threshold", ylabel="HT volume (mL)", yscale="log")
ax2 = ax.twinx()
ax2.plot(thresholds, dices, color="C1", marker="s", label="Dice")
ax2.set(ylabel="Dice", ylim=(0, 1))
fig.legend(loc="upper center", fontsize=8)

# %%
# A table over the held-out patients
# ----------------------------------
# One row per patient: risk score (a high percentile of its voxel risks), predicted and
# annotated volumes, volume error and Dice; and a cohort summary with the patient-level
# occurrence AUC (will this patient bleed?). With a dozen training patients the model
# also marks voxels in patients who do not bleed: voxel AUCs alone hide this, which is why
# the comparison reports the patient-level measures too.
maps = [predict_risk_map(model, cohort[int(i)]) for i in test_patients]
rows = patient_table(maps, [cohort[int(i)] for i in test_patients], threshold=0.8)
for row in rows:
    print({key: round(v, 2) if isinstance(v, float) else v for key, v in row.items()})
print(summarize_patient_table(rows))
plt.show()
