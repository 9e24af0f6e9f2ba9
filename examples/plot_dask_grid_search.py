"""
=======================================
A grid search on a dask cluster
=======================================

Every search of this package runs through joblib, so a
:class:`~sklearn.model_selection.GridSearchCV` (or the whole comparison,
``sklearn-hemo compare --backend dask``) runs on a dask.distributed cluster by switching
joblib's backend. Here the cluster is a :class:`~distributed.LocalCluster` of two
workers on this machine; on real hardware, pass the address of a running scheduler to
:class:`~distributed.Client` instead (see the *Scaling out* page of the user guide).

The results do not depend on where the fits ran: the search on the cluster gives exactly
the scores of the same search run serially.
"""

# %%
# ``SKLEARN_HEMO_EXAMPLE_QUICK=1`` shrinks the cohort and the grid (used by the tests).
import os

QUICK = os.environ.get("SKLEARN_HEMO_EXAMPLE_QUICK", "0") not in ("", "0")

import pickle
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from distributed import Client, LocalCluster
from joblib import parallel_backend
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_hemo.datasets import make_stroke_cohort
from sklearn_hemo.discriminant import SRKDAClassifier
from sklearn_hemo.preprocessing import PatchExtractor
from sklearn_hemo.sampling import sample_voxels

# %%
# The search
# ----------
# SR-KDA (spectral regression kernel discriminant analysis) on the paper's full input,
# searching the kernel width and the ridge penalty with patient-grouped folds. The cohort
# is written to disk (``out_dir``) and comes back file-backed: it then pickles as paths,
# so sending the pipeline to a worker costs kilobytes, not volumes.
cohort = make_stroke_cohort(
    n_patients=12,
    shape=(28, 28, 3) if QUICK else (40, 40, 4),
    random_state=0,
    out_dir=Path(tempfile.mkdtemp(prefix="hemo-dask-")) / "cohort",
)
print(cohort, f"{len(pickle.dumps(cohort)) / 1024:.0f} kB pickled")
X, y, groups = sample_voxels(cohort, n_samples=200 if QUICK else 400, random_state=0)
pipe = Pipeline(
    [
        ("patches", PatchExtractor(cohort, inputs="pwi+aif+dwi")),
        ("scale", StandardScaler()),
        ("srkda", SRKDAClassifier()),
    ]
)
param_grid = {
    "srkda__gamma": [1e-4, 1e-3] if QUICK else [1e-4, 1e-3, 1e-2],
    "srkda__alpha": [0.01, 1.0],
}


def make_search(n_jobs):
    return GridSearchCV(pipe, param_grid, cv=GroupKFold(n_splits=3), scoring="roc_auc",
                        n_jobs=n_jobs)


# %%
# Serially, for reference
# -----------------------
start = time.perf_counter()
serial = make_search(n_jobs=1).fit(X, y, groups=groups)
serial_time = time.perf_counter() - start
print(f"serial: {serial_time:.1f} s, best {serial.best_params_}")

# %%
# On the cluster
# --------------
# Two single-threaded workers. They run in this process (``processes=False``) so that
# the example also runs as a plain script; worker *processes* (``processes=True``, the
# default) or workers on other machines take the same code; a script that starts local
# worker processes must guard its body with ``if __name__ == "__main__":`` because the
# workers re-import it, and remote workers must see the cohort folder under the same
# path. The ``with`` block is all it takes; ``n_jobs=-1`` uses every worker.
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                       dashboard_address=None)
client = Client(cluster)
print(client)
start = time.perf_counter()
with parallel_backend("dask"):
    distributed = make_search(n_jobs=-1).fit(X, y, groups=groups)
dask_time = time.perf_counter() - start
print(f"dask: {dask_time:.1f} s, best {distributed.best_params_}")
client.close()
cluster.close()

same = np.allclose(serial.cv_results_["mean_test_score"],
                   distributed.cv_results_["mean_test_score"])
print("identical scores:", same)
assert same

# %%
# The validation scores
# ---------------------
# One value per candidate, the same from both runs. (On a tiny search like this one the
# cluster's start-up and the transfers dominate its time; its use is the search that does
# not fit on one machine.)
scores = distributed.cv_results_["mean_test_score"].reshape(
    len(param_grid["srkda__alpha"]), len(param_grid["srkda__gamma"])
)
fig, (ax_grid, ax_time) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained",
                                       width_ratios=[3, 2])
shown = ax_grid.imshow(scores, cmap="viridis", origin="lower")
ax_grid.set(
    xticks=range(len(param_grid["srkda__gamma"])),
    xticklabels=param_grid["srkda__gamma"],
    yticks=range(len(param_grid["srkda__alpha"])),
    yticklabels=param_grid["srkda__alpha"],
    xlabel="gamma (kernel width)",
    ylabel="alpha (ridge penalty)",
    title="validation AUC-ROC",
)
for (i, j), value in np.ndenumerate(scores):
    dark = value < scores.min() + 0.6 * np.ptp(scores)  # light text on dark cells
    ax_grid.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=9,
                 color="w" if dark else "k")
fig.colorbar(shown, ax=ax_grid)
ax_time.barh(["serial", "dask, 2 workers"], [serial_time, dask_time])
ax_time.set(xlabel="wall time (s)", title="same search, same scores")
plt.show()
