"""Errors of the perfusion maps against the ground truth of a simulated cohort."""

from __future__ import annotations

from numbers import Real

import numpy as np

from ..datasets import Cohort
from ..utils.fixes import StrOptions, validate_params
from ._patient import patient_perfusion_maps

__all__ = ["compare_to_truth"]

_TISSUES = {1: "grey", 2: "white", 3: "penumbra", 4: "core"}
_RELATIVE = ("cbf", "cbv", "cbv_corrected", "mtt")


@validate_params(
    {
        "cohort": [Cohort],
        "method": [StrOptions({"osvd", "csvd", "ssvd"})],
        # a scalar is one bin edge
        "delay_bins": ["array-like", Real],
    },
    # **kwargs go to perfusion_maps: let it check them
    prefer_skip_nested_validation=False,
)
def compare_to_truth(cohort, *, method="osvd", delay_bins=(0.0, 2.0, 5.0, 8.0), **kwargs):
    """Median errors of the perfusion maps of a simulated cohort, by tissue and delay.

    Maps come from :func:`patient_perfusion_maps` (the source signal, as a user's data
    would be processed); the truth from ``patient.truth`` (see
    :func:`~sklearn_hemo.datasets.make_stroke_cohort`). Errors of all patients are pooled
    per tissue class and bolus-delay bin.

    Parameters
    ----------
    cohort : Cohort
        Patients with a ``truth`` dictionary (simulated).
    method : {"osvd", "csvd", "ssvd"}, default="osvd"
        Deconvolution method.
    delay_bins : sequence of float, default=(0, 2, 5, 8)
        Left edges of the delay bins in seconds; the last bin is open.
    **kwargs
        Passed to :func:`perfusion_maps`.

    Returns
    -------
    rows : list of dict
        One row per non-empty (tissue, delay bin): ``tissue``, ``delay`` (label such as
        ``"2-5 s"``), ``n_voxels``; for ``cbf``, ``cbv``, ``cbv_corrected`` (against the
        true CBV) and ``mtt`` the median signed relative error ``{name}_bias`` and the
        median absolute relative error ``{name}_mare``; ``tmax_bias`` and ``tmax_mae``
        (seconds).

    Examples
    --------
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.perfusion import compare_to_truth
    >>> cohort = make_stroke_cohort(n_patients=2, shape=(12, 12, 1), random_state=0)
    >>> rows = compare_to_truth(cohort)
    >>> rows[0]["tissue"], sorted(rows[0])[:3]
    ('grey', ['cbf_bias', 'cbf_mare', 'cbv_bias'])
    """
    edges = np.append(np.asarray(delay_bins, dtype=float), np.inf)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"delay_bins must be increasing numbers, got {delay_bins!r}.")
    pooled = {key: [] for key in ("tissue", "delay", "tmax", "tmax_true", *_RELATIVE)}
    truth_of = {"cbv_corrected": "cbv"}
    for patient in cohort:
        if patient.truth is None:
            raise ValueError(
                f"participant {patient.id} has no ground truth; compare_to_truth needs a "
                "simulated cohort (make_stroke_cohort)."
            )
        maps = patient_perfusion_maps(patient, method=method, **kwargs)
        brain = patient.truth["tissue"] > 0
        pooled["tissue"].append(patient.truth["tissue"][brain])
        pooled["delay"].append(patient.truth["delay"][brain])
        pooled["tmax"].append(maps["tmax"][brain])
        pooled["tmax_true"].append(patient.truth["tmax"][brain])
        for name in _RELATIVE:
            true = patient.truth[truth_of.get(name, name)][brain].astype(float)
            pooled[name].append((maps[name][brain] - true) / true)
    data = {key: np.concatenate(values) for key, values in pooled.items()}
    tmax_error = data["tmax"] - data["tmax_true"]
    rows = []
    for code, tissue in _TISSUES.items():
        for low, high in zip(edges[:-1], edges[1:], strict=True):
            sel = (data["tissue"] == code) & (data["delay"] >= low) & (data["delay"] < high)
            if not sel.any():
                continue
            label = f"{low:g}+ s" if np.isinf(high) else f"{low:g}-{high:g} s"
            row = {"tissue": tissue, "delay": label, "n_voxels": int(sel.sum())}
            for name in _RELATIVE:
                row[f"{name}_bias"] = float(np.median(data[name][sel]))
                row[f"{name}_mare"] = float(np.median(np.abs(data[name][sel])))
            row["tmax_bias"] = float(np.median(tmax_error[sel]))
            row["tmax_mae"] = float(np.median(np.abs(tmax_error[sel])))
            rows.append(row)
    return rows
