"""
=================================
The four input modes of the LSTM
=================================

Yu et al. (MICCAI 2019) fed their LSTM four combinations of inputs, the rows of their
Table 1:

* ``"pwi"``: at each of the 60 time steps, the concentration of the voxel's 3x3 patch
  (9 values);
* ``"pwi+aif"``: the same plus the arterial input function at that step (10 values);
* ``"pwi+dwi"``: the LSTM's 60 outputs joined by the 18 DWI b0 / b1000 patch values
  before the dense layer (78 inputs);
* ``"pwi+aif+dwi"``: both.

The ``inputs`` parameter of :class:`~sklearn_hemo.preprocessing.PatchExtractor` and of
:class:`~sklearn_hemo.neural.LSTMClassifier` selects a mode; here we train one pipeline
per mode on the same patients and test it on others. The network is much smaller and
trained much shorter than the paper's (60 cells, 20 epochs) to keep the example fast, so
the ranking of the modes on this tiny simulated cohort is not a result.
"""

# %%
# ``SKLEARN_HEMO_EXAMPLE_QUICK=1`` shrinks the cohort and the training (used by the tests).
import os

QUICK = os.environ.get("SKLEARN_HEMO_EXAMPLE_QUICK", "0") not in ("", "0")

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import RocCurveDisplay, roc_auc_score
from sklearn.pipeline import Pipeline

from sklearn_hemo.datasets import make_stroke_cohort
from sklearn_hemo.neural import BlockScaler, LSTMClassifier
from sklearn_hemo.preprocessing import PatchExtractor
from sklearn_hemo.sampling import sample_voxels

MODES = ["pwi", "pwi+aif", "pwi+dwi", "pwi+aif+dwi"]

# %%
# Training and test patients
# --------------------------
# Voxels of the test patients are never seen in training: the split is by patient.
# Half the patients bleed (``ht_prevalence=0.5``), so that both the training and the test
# patients hold both classes at either size.
cohort = make_stroke_cohort(
    n_patients=12, shape=(28, 28, 3) if QUICK else (48, 48, 4), ht_prevalence=0.5,
    random_state=1,
)
X, y, groups = sample_voxels(cohort, n_samples=200 if QUICK else 600, random_state=0)
ht = cohort.ht
test_patients = np.concatenate([np.flatnonzero(ht == 1)[-1:], np.flatnonzero(ht == 0)[-3:]])
is_test = np.isin(groups, test_patients)
print(f"{cohort}; {int((~is_test).sum())} training and {int(is_test.sum())} test voxels")

# %%
# One pipeline per mode
# ---------------------
# The extractor, the scaler and the network read the same mode. ``BlockScaler`` puts the
# source signal, the AIF and the DWI intensities (hundreds of scanner units) on one scale
# with one mean and SD for all PWI columns and one for the AIF (per column for DWI), so a
# curve keeps its shape; a per-column ``StandardScaler`` would rescale every time point on
# its own, inflating the quiet pre-bolus points and flattening the peak. With 24 LSTM
# cells the dense layer reads 24 values, 42 with the DWI patches (the paper's 60 cells
# give 60 and 78).
models, aucs, scores = {}, {}, {}
for mode in MODES:
    model = Pipeline(
        [
            ("patches", PatchExtractor(cohort, inputs=mode)),
            ("scale", BlockScaler(inputs=mode)),
            (
                "lstm",
                LSTMClassifier(
                    inputs=mode,
                    hidden_size=8 if QUICK else 24,
                    max_epochs=3 if QUICK else 15,
                    lr=3e-3,
                    batch_size=64,
                    torch_num_threads=1,
                    random_state=0,
                ),
            ),
        ]
    )
    model.fit(X[~is_test], y[~is_test])
    scores[mode] = model.predict_proba(X[is_test])[:, 1]
    aucs[mode] = roc_auc_score(y[is_test], scores[mode])
    models[mode] = model
    net = model.named_steps["lstm"].net_
    print(
        f"{mode:12s} features {model.named_steps['patches'].get_feature_names_out().size:4d}"
        f"  LSTM input per step {net.module_.lstm.input_size:2d}"
        f"  dense layer inputs {net.module_.dense_in_features:3d}"
        f"  test AUC-ROC {aucs[mode]:.3f}"
    )

# %%
# Training curves
# ---------------
# skorch records the loss of every epoch in ``net_.history``.
fig, (ax_loss, ax_roc) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
for mode, model in models.items():
    history = model.named_steps["lstm"].net_.history
    ax_loss.plot(history[:, "epoch"], history[:, "train_loss"], marker="o", label=mode)
    RocCurveDisplay.from_predictions(
        y[is_test], scores[mode], name=mode, ax=ax_roc
    )
ax_loss.set(xlabel="epoch", ylabel="training cross-entropy", title="training")
ax_loss.legend()
ax_roc.plot([0, 1], [0, 1], "k:", lw=1)
ax_roc.set_title("held-out patients")
plt.show()

# %%
# The same four rows, with the paper's settings and their search grids, come ready-made
# from :func:`sklearn_hemo.model_selection.make_model_zoo` (rows ``lstm-pwi`` ...
# ``lstm-pwi+aif+dwi``), which :func:`~sklearn_hemo.model_selection.compare_models`
# evaluates under nested, patient-grouped cross-validation.
