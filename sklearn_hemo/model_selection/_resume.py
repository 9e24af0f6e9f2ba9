"""Resumable comparisons: one file per finished (model, outer fold), keyed by configuration.

Layout under the output folder::

    parts/<run key>/config.json           what the run key stands for (for humans)
    parts/<run key>/<model>__fold<k>.npz  out-of-fold scores of one model on one fold

The *run key* is a hash of everything the results depend on: the cohort (ids, labels,
every image file by path, size and modification time or in-memory voxels and affine,
the full content of every sidecar read: ``pwi.json`` whole, so that any key of it,
known today or added later, counts, and ``aif.tsv``; the acquisition times, slice
timing, non-steady frames and AIF as the patients hold them), the package version, the
protocol, the sampled voxel references and labels, the outer folds, the inner
cross-validation, the scoring and the seed. A changed configuration therefore gets
a new folder and never reuses stale parts. Each part also stores a *model key* (a hash of
the pipeline's parameters and its grid); a part whose model key no longer matches is
recomputed and overwritten. Parts are written atomically, so an interrupted run leaves
only complete parts behind.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

from .._io import atomic_path, atomic_write_text, sha256_file
from ..datasets import Cohort

__all__ = ["PartStore", "claim_results_folder", "cohort_signature", "fingerprint",
           "model_key"]

#: files of a patient folder read besides the images, hashed whole into the run key
_SIDECARS = ("pwi.json", "aif.tsv")

_FORMAT = 1
# parameters that change how fast a model trains, not what it learns
_COMPUTE_ONLY = {"n_jobs", "verbose", "torch_num_threads", "block_size"}


def _canonical(value):
    """A JSON-able, order-stable description of ``value`` for hashing."""
    if isinstance(value, BaseEstimator):
        params = value.get_params(deep=False)
        return {
            "class": f"{type(value).__module__}.{type(value).__qualname__}",
            "params": {k: _canonical(v) for k, v in sorted(params.items())
                       if k not in _COMPUTE_ONLY},
        }
    if isinstance(value, Cohort):  # identified by its patients, not its voxels
        return {"cohort": list(value.ids)}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str)
                         for v in value):
            return [[k, _canonical(v)] for k, v in value]  # pipeline steps
        return [_canonical(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"array": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest(),
                "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def cohort_signature(cohort):
    """What identifies a cohort's *content* for the resume key.

    File-backed images by path, size and modification time (cheap: no voxel is read);
    in-memory images by a hash of their voxels; plus each patient's acquisition times and
    AIF. Re-processed images under the same participant ids therefore start a new run
    instead of silently reusing parts fitted on the old data.
    """
    from .. import __version__
    from .._motion import motion_enabled
    from ..signal import vof_correction_default

    patients = []
    for patient in cohort:
        images, folder = {}, None
        for name in ("pwi", "dwi_b0", "dwi_b1000", "brain_mask", "ht_mask"):
            source = patient.source(name)
            if source is not None:
                stat = Path(source).stat()
                images[name] = [str(Path(source).resolve()), stat.st_size, stat.st_mtime_ns]
                folder = Path(source).parent if name == "pwi" else folder
            else:
                image = getattr(patient, name)
                images[name] = None if image is None else [
                    _canonical(np.asarray(image.dataobj)), _canonical(image.affine)]
        sidecars = {}
        for name in _SIDECARS if folder is not None else ():
            path = folder / name
            sidecars[name] = sha256_file(path) if path.is_file() else None
        aif = patient.aif
        patients.append({
            "id": patient.id, "images": images, "sidecars": sidecars,
            "echo_time": patient.echo_time, "repetition_time": patient.repetition_time,
            "slice_timing": _canonical(getattr(patient, "slice_timing", None)),
            "n_nonsteady": getattr(patient, "n_nonsteady", None),
            "aif": None if aif is None else [aif.kind, _canonical(aif.time),
                                             _canonical(aif.values)],
            # the load-time motion correction changes every series a model reads
            "motion_correction": motion_enabled(getattr(patient, "motion_correction", None)),
        })
    # so does the venous scaling of detected AIFs
    return {"sklearn_hemo": __version__, "patients": patients,
            "aif_vof_correction": vof_correction_default()}


def claim_results_folder(out_dir, cohort, overwrite=False):
    """Claim ``out_dir`` for :func:`compare_models` before any work: not inside the
    cohort's folder, no files there that the package did not write unless ``overwrite``
    (:func:`sklearn_hemo._safety.claim_folder`). Returns the
    :class:`~sklearn_hemo._safety.OwnedFolder`."""
    from .._safety import claim_folder

    inputs = [cohort.path] if isinstance(cohort, Cohort) and cohort.path is not None else []
    return claim_folder(out_dir, "compare", overwrite=overwrite, inputs=inputs,
                        what="out_dir")


def fingerprint(**config):
    """Hash of a run configuration (arrays hashed by content)."""
    return _digest({"format": _FORMAT, **{k: _canonical(v) for k, v in config.items()}})


def model_key(pipeline, grid):
    """Hash of a pipeline's parameters and its grid."""
    return _digest({"pipeline": _canonical(pipeline), "grid": _canonical(grid)})


class PartStore:
    """Finished (model, outer fold) results of one run configuration on disk."""

    def __init__(self, out_dir, run_key, description, cohort_path=None):
        from .._safety import OutputError, OwnedFolder, is_inside

        if cohort_path is not None and is_inside(out_dir, cohort_path):
            raise OutputError(f"out_dir {out_dir} lies inside the cohort folder "
                              f"{cohort_path}; a comparison never writes into its inputs. "
                              "Choose a folder outside it.")
        # every part is recorded (name and SHA-256) in out_dir's owner file
        self.owned = OwnedFolder.of(out_dir, "compare")
        # absolute: the owner file records paths relative to out_dir, and a part's path
        # built on a relative out_dir ("results/parts/...") would be recorded under the
        # wrong name, so that a rerun found every part "not written by the package"
        self.folder = Path(out_dir).absolute() / "parts" / run_key[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "config.json"
        if not config.exists():
            with self.owned.writing([config]):
                atomic_write_text(config,
                                  json.dumps(description, indent=2, default=str) + "\n")

    def _path(self, model, fold):
        return self.folder / f"{model}__fold{fold}.npz"

    def load(self, model, fold, key):
        """The stored part, or None when absent or made by another model definition."""
        path = self._path(model, fold)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("model_key") != key:
                return None
            return {"scores": data["scores"].copy(), "test": data["test"].copy(),
                    **{k: v for k, v in meta.items() if k != "model_key"}}

    def save(self, model, fold, key, part):
        """Store one part atomically (complete file or nothing)."""
        meta = {k: v for k, v in part.items() if k not in ("scores", "test")}
        meta["model_key"] = key
        buffer = io.BytesIO()
        np.savez(buffer, scores=np.asarray(part["scores"], dtype=float),
                 test=np.asarray(part["test"], dtype=np.int64),
                 meta=np.array(json.dumps(meta, default=_json_default)))
        with self.owned.writing([self._path(model, fold)]), \
                atomic_path(self._path(model, fold)) as tmp:
            tmp.write_bytes(buffer.getvalue())


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)
