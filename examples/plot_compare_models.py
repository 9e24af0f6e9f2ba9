"""
=====================================================
Table 1 in quick form: the nested model comparison
=====================================================

:func:`~sklearn_hemo.model_selection.compare_models` is what ``sklearn-hemo compare``
runs: for every model of the paper's Table 1 an outer patient-grouped cross-validation
around an inner, patient-grouped ``GridSearchCV``, out-of-fold scores for every sampled
voxel, and AUC-ROC / AUC-PR with 95 % intervals from a *patient* (cluster) bootstrap that
uses the same resamples for every model. On a simulated cohort an ``oracle`` row scores
each voxel by the simulator's true latent risk: the best any model can do on that data.

This example runs a shrunken version (few patients, voxels and folds, a subset of the
rows) to finish in about a minute. The full quick protocol is ``sklearn-hemo compare``;
``--protocol paper`` is the paper's. Numbers on simulated data are not clinical evidence
and are not comparable to the paper's.
"""

# %%
# ``SKLEARN_HEMO_EXAMPLE_QUICK=1`` shrinks the run further (used by the tests).
import os

QUICK = os.environ.get("SKLEARN_HEMO_EXAMPLE_QUICK", "0") not in ("", "0")

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from sklearn_hemo.datasets import make_stroke_cohort
from sklearn_hemo.model_selection import ZOO_ROWS, compare_models

# %%
# The cohort and the rows
# -----------------------
# :data:`~sklearn_hemo.model_selection.ZOO_ROWS` lists every row the zoo can build; we
# take the first and the last LSTM mode and the classic models of the paper.
cohort = make_stroke_cohort(
    n_patients=12, shape=(28, 28, 3) if QUICK else (40, 40, 4), random_state=0
)
print(cohort)
print("all rows:", ", ".join(ZOO_ROWS))
if QUICK:
    models = ["lstm-pwi", "linear", "random-forest"]
else:
    models = ["lstm-pwi", "lstm-pwi+aif+dwi", "linear", "random-forest", "sr-kda", "svm"]

# %%
# The nested comparison
# ---------------------
# Three outer folds over patients, two inner folds for the grid search inside each. The
# outputs of ``sklearn-hemo compare`` are written into ``out_dir`` (here a temporary
# folder); rerunning with the same folder would resume from the finished folds.
out_dir = Path(tempfile.mkdtemp(prefix="hemo-compare-"))
result = compare_models(
    cohort,
    models,
    protocol="quick",
    n_outer=3,
    n_inner=2,
    n_samples=200 if QUICK else 400,
    n_resamples=200 if QUICK else 1000,
    out_dir=out_dir,
    random_state=0,
)
print(result)
print("files written:", sorted(p.name for p in out_dir.iterdir() if p.is_file()))

# %%
# The table in the paper's layout
# -------------------------------
# ``table.md`` puts the paper's numbers alongside, for reference only.
print(result.to_markdown())

# %%
# No patient on both sides
# ------------------------
# Every voxel's score comes from the outer fold that held its patient out.
folds = result.folds
print("patients per outer fold:", np.bincount(list(folds.values())))

# %%
# ROC and precision-recall curves (the paper's Fig. 2)
# ----------------------------------------------------
# ``compare_models`` draws them into ``roc_pr.png``; here is that file.
image = plt.imread(out_dir / "roc_pr.png")
fig, ax = plt.subplots(figsize=(11, 5), layout="constrained")
ax.imshow(image)
ax.set_axis_off()

# %%
# Intervals side by side
# ----------------------
# The rows with their 95 % cluster-bootstrap intervals. The intervals are wide: with a
# dozen patients, three of whom bleed, the patient is the unit of evidence, not the voxel.
rows = result.table
fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(rows) + 1.5), layout="constrained",
                         sharey=True)
for ax, metric in zip(axes, ["auc_roc", "auc_pr"], strict=True):
    value = np.array([r[metric] for r in rows])
    low = np.array([r[f"{metric}_low"] for r in rows])
    high = np.array([r[f"{metric}_high"] for r in rows])
    ax.errorbar(value, np.arange(len(rows)), xerr=[value - low, high - value], fmt="o",
                capsize=3)
    ax.set(xlabel=metric.replace("_", "-").upper(), xlim=(0, 1.02))
    # chance level: 0.5 for both, the sampled voxels being half HT
    ax.axvline(0.5, color="grey", ls=":", lw=1)
axes[0].set(yticks=np.arange(len(rows)), yticklabels=[r["model"] for r in rows])
axes[0].invert_yaxis()
plt.show()
