"""
====================================================================
Patch features in a Pipeline, tuned with GridSearchCV and GroupKFold
====================================================================

The samples of this package are *voxels*, referenced by integer rows
``(patient index, i, j, k)``. The first step of every pipeline,
:class:`~sklearn_hemo.preprocessing.PatchExtractor`, turns those references into the
features of Yu et al. (MICCAI 2019): the concentration curves of the voxel's 3x3
neighbourhood on a 60-point, 1.8 s time grid, the arterial input function and the DWI
patches. Because the extractor is an ordinary scikit-learn transformer, the rest is
ordinary scikit-learn: a :class:`~sklearn.pipeline.Pipeline`, a
:class:`~sklearn.model_selection.GridSearchCV` and a
:class:`~sklearn.model_selection.GroupKFold` that keeps every patient on one side of each
split.
"""

# %%
# ``SKLEARN_HEMO_EXAMPLE_QUICK=1`` shrinks the cohort (the test suite sets it).
import os

QUICK = os.environ.get("SKLEARN_HEMO_EXAMPLE_QUICK", "0") not in ("", "0")

import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import RocCurveDisplay, roc_auc_score
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_hemo.datasets import make_stroke_cohort
from sklearn_hemo.preprocessing import PatchExtractor
from sklearn_hemo.sampling import sample_voxels

# %%
# Voxel references
# ----------------
# :func:`~sklearn_hemo.sampling.sample_voxels` draws brain voxels balanced between HT and
# non-HT, as the paper did with its 50,000 training voxels. ``groups`` is the patient of
# each voxel. We keep a third of the patients aside as a final test set.
cohort = make_stroke_cohort(
    n_patients=12, shape=(28, 28, 3) if QUICK else (48, 48, 4), random_state=0
)
X, y, groups = sample_voxels(cohort, n_samples=200 if QUICK else 500, random_state=0)
print(f"{cohort}: {len(X)} voxels, {int(y.sum())} with HT")
print("first references (patient, i, j, k):\n", X[:3])

# Bleeding and non-bleeding patients on both sides of the train / test split.
ht = cohort.ht
test_patients = np.concatenate([np.flatnonzero(ht == 1)[-1:], np.flatnonzero(ht == 0)[-2:]])
is_test = np.isin(groups, test_patients)
X_train, y_train, g_train = X[~is_test], y[~is_test], groups[~is_test]
X_test, y_test = X[is_test], y[is_test]
print(f"train patients {sorted(set(g_train.tolist()))}, "
      f"test patients {sorted(test_patients.tolist())}")

# %%
# What one row of features holds
# ------------------------------
# The column names say where each value comes from: ``pwi_t{tt}_p{p}`` (time-major,
# ``p = 4`` the centre voxel), ``aif_t{tt}``, ``dwi_b0_p{p}``, ``dwi_b1000_p{p}``.
extractor = PatchExtractor(cohort, inputs="pwi+aif+dwi")
features = extractor.fit_transform(X_train[:1])
names = extractor.get_feature_names_out()
print(features.shape, names[:3], names[538:542], names[-2:])

grid_t = 1.8 * np.arange(60)
pwi = features[0, :540].reshape(60, 9)  # time-major: row = time point, column = neighbour
fig, (ax_pwi, ax_dwi) = plt.subplots(
    1, 2, figsize=(11, 3.8), layout="constrained", width_ratios=[2, 1]
)
ax_pwi.plot(grid_t, pwi, color="C0", lw=0.8, alpha=0.6)
ax_pwi.plot(grid_t, pwi[:, 4], color="C0", lw=2, label="centre voxel (p4) and 8 neighbours")
ax_pwi.plot(grid_t, features[0, 540:600] / 10, "k--", label="AIF / 10")
ax_pwi.set(xlabel="time on the common grid (s)", ylabel=r"$\Delta R_2^*$ (1/s)")
ax_pwi.legend(fontsize=8)
ax_dwi.bar(np.arange(9) - 0.2, features[0, 600:609], width=0.4, label="b0")
ax_dwi.bar(np.arange(9) + 0.2, features[0, 609:618], width=0.4, label="b1000")
ax_dwi.set(xlabel="patch position p", ylabel="DWI intensity", xticks=range(9))
ax_dwi.legend(fontsize=8)
fig.suptitle(f"the 618 features of voxel {tuple(int(v) for v in X_train[0])}, HT={y_train[0]}")

# %%
# A pipeline and a patient-grouped search
# ---------------------------------------
# The grid searches the input mode of the extractor together with the regularisation of
# the classifier. With :class:`~sklearn.model_selection.GroupKFold` no patient is in both
# the training and the validation part of a split. HT voxels come only from bleeding
# patients, who therefore are the largest groups; ``GroupKFold`` places the largest groups
# first, one per fold, so with as many folds as training bleeders every validation fold
# holds one of them.
pipe = Pipeline(
    [
        ("patches", PatchExtractor(cohort)),
        ("scale", StandardScaler()),
        ("clf", LogisticRegression(max_iter=2000)),
    ]
)
param_grid = {
    "patches__inputs": ["pwi", "pwi+dwi", "pwi+aif+dwi"],
    "clf__C": [0.001, 0.01, 0.1] if not QUICK else [0.01, 0.1],
}
n_splits = max(2, int((ht[np.unique(g_train)] == 1).sum()))
search = GridSearchCV(pipe, param_grid, cv=GroupKFold(n_splits=n_splits), scoring="roc_auc")
search.fit(X_train, y_train, groups=g_train)
print("best parameters:", search.best_params_, f"validation AUC {search.best_score_:.3f}")

for train, valid in search.cv.split(X_train, y_train, g_train):
    assert not set(g_train[train]) & set(g_train[valid])  # patients never shared

# %%
# Validation AUC over the grid
# ----------------------------
results = search.cv_results_
fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
for mode in param_grid["patches__inputs"]:
    rows = np.flatnonzero(results["param_patches__inputs"] == mode)
    ax.errorbar(
        np.asarray(results["param_clf__C"][rows], dtype=float),
        results["mean_test_score"][rows],
        yerr=results["std_test_score"][rows],
        marker="o",
        capsize=3,
        label=mode,
    )
ax.set(xscale="log", xlabel="C (inverse regularisation)", ylabel="validation AUC-ROC")
ax.legend(title="inputs")

# %%
# The held-out patients
# ---------------------
# The refitted best pipeline scores voxels of patients it has never seen.
proba = search.predict_proba(X_test)[:, 1]
print(f"test AUC-ROC on held-out patients: {roc_auc_score(y_test, proba):.3f}")
RocCurveDisplay.from_predictions(y_test, proba, name="best pipeline", plot_chance_level=True)
plt.show()
