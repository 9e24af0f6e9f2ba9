"""Checks of a patient: headers, grids and acquisition (cheap) and voxel data (reads it).

Every problem raises :class:`~sklearn_hemo.datasets.CohortError` whose message names the
participant, the file and what to do. Nothing is fixed silently.
"""

from __future__ import annotations

import gzip
import math
import warnings
import zlib
from pathlib import Path

import numpy as np

from .._safety import check_declared_image, check_patient_data, image_location
from ..exceptions import CohortError
from ..utils._warnings import find_stack_level

__all__ = ["check_file", "check_patient", "check_patient_data", "check_time_step"]

_AFFINE_ATOL = 1e-3  # mm; NIfTI stores the sform in float32
_MAX_ECHO_TIME = 1.0  # s; DSC echo times are 20-60 ms
_MAX_REPETITION_TIME = 10.0  # s; DSC repetition times are 1-3 s
_TIME_STEP_RTOL = 0.01  # pixdim[4] vs RepetitionTime; headers store float32


def _fail(pid, where, problem, fix):
    raise CohortError(f"participant {pid}: {where}: {problem} {fix}")


def check_file(pid, path, img):
    """Detect truncated NIfTI files from their size, without decompressing in the common case.

    A ``.nii.gz`` stores the uncompressed size modulo 2**32 in its last four bytes; when it
    disagrees with the size the header promises (a truncated or concatenated file) the
    stream is decompressed once to decide.
    """
    path = Path(path)
    check_declared_image(pid, path, img)  # bounded before anything is decompressed
    expected = int(img.header.get_data_offset()) + int(np.prod(img.shape)) * int(
        img.header.get_data_dtype().itemsize
    )
    fix = "Re-copy or re-export the file."
    if path.name.endswith(".gz"):
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            if fh.tell() < 18:
                _fail(pid, path, "is too small to be a gzip file.", fix)
            fh.seek(-4, 2)
            isize = int.from_bytes(fh.read(4), "little")
        if isize == expected % 2**32:
            return
        total = 0
        try:
            with gzip.open(path, "rb") as gz:
                while chunk := gz.read(1 << 22):
                    total += len(chunk)
        except (OSError, EOFError, zlib.error) as exc:
            _fail(pid, path, f"is truncated or corrupt ({exc}).", fix)
        size = total
    else:
        size = path.stat().st_size
    if size < expected:
        _fail(pid, path, f"holds {size} bytes but its header needs {expected} (truncated).",
              fix)


def check_patient(patient):
    """Check headers, grids, affines and acquisition parameters of ``patient`` (no voxels)."""
    pid = patient.id
    pwi = patient.pwi
    where = image_location(patient, "pwi")
    if pwi is None:
        _fail(pid, "pwi", "is missing.", "Provide the 4D source DSC series as pwi.nii.gz.")
    if len(pwi.shape) != 4:
        _fail(pid, where, f"is {len(pwi.shape)}D with shape {pwi.shape}; the PWI must be 4D "
              "(x, y, z, time).", "Save the whole dynamic DSC series, not a single volume "
              "or a derived map.")
    if pwi.shape[3] < 2:
        _fail(pid, where, f"has {pwi.shape[3]} time frame(s).",
              "Save the whole dynamic DSC series (tens of frames).")
    grid, affine = tuple(pwi.shape[:3]), pwi.affine
    for name, required in (("dwi_b0", True), ("dwi_b1000", True), ("brain_mask", False),
                           ("ht_mask", False)):
        img = getattr(patient, name)
        if img is None:
            if required:
                _fail(pid, name, "is missing.", f"Provide {name}.nii.gz on the PWI grid.")
            continue
        where = image_location(patient, name)
        if len(img.shape) != 3:
            _fail(pid, where, f"has shape {img.shape}; it must be a 3D volume.",
                  "Save a single 3D volume.")
        if tuple(img.shape) != grid:
            _fail(pid, where, f"has shape {tuple(img.shape)} but the PWI grid is {grid}.",
                  "Resample it onto the PWI grid (e.g. nibabel.processing.resample_from_to).")
        if not np.allclose(img.affine, affine, atol=_AFFINE_ATOL):
            _fail(pid, where, "has another affine than the PWI "
                  f"({np.round(img.affine, 3).tolist()} vs {np.round(affine, 3).tolist()}).",
                  "Resample it onto the PWI grid (e.g. nibabel.processing.resample_from_to) "
                  "or fix its header.")
    check_acquisition(pid, "pwi.json", patient.echo_time, patient.repetition_time)
    check_slice_timing(pid, "pwi.json", patient.slice_timing, grid[2],
                       patient.repetition_time)
    aif = patient.aif
    if aif is not None:
        if aif.time.size < 2 or not np.all(np.isfinite(aif.time)) or not np.all(
                np.isfinite(aif.values)):
            _fail(pid, "aif.tsv", "holds fewer than 2 rows or non-finite values.",
                  "Write finite numbers, one row per time point.")
        if np.any(np.diff(aif.time) <= 0):
            _fail(pid, "aif.tsv", "has times that do not increase.",
                  "Sort the rows by time and remove duplicates.")


def check_time_step(pid, path, img, repetition_time):
    """Warn when the NIfTI frame time (``pixdim[4]``) contradicts RepetitionTime.

    Exporters often leave 0 there or write milliseconds, so only a non-zero value that
    matches neither seconds nor milliseconds (within 1%) is reported; ``pwi.json`` is used
    either way. A step of exactly 1 without a time unit is nibabel's placeholder for "not
    set" and is ignored too.
    """
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not np.isfinite(zooms[3]) or zooms[3] == 0:
        return
    step = float(zooms[3])
    unit = img.header.get_xyzt_units()[1] if hasattr(img.header, "get_xyzt_units") else None
    if step == 1.0 and unit in (None, "unknown"):
        return
    candidates = [repetition_time, repetition_time * 1000]
    if unit == "usec":
        candidates.append(repetition_time * 1e6)
    if any(math.isclose(step, c, rel_tol=_TIME_STEP_RTOL) for c in candidates):
        return
    shown = f" {unit}" if unit and unit != "unknown" else ""
    warnings.warn(
        f"participant {pid}: {path}: the NIfTI time step (pixdim[4]) is {step:g}{shown}, "
        f"which matches neither RepetitionTime = {repetition_time:g} s nor "
        f"{repetition_time * 1000:g} ms in pwi.json; pwi.json wins ({repetition_time:g} s "
        "between frames is used). Fix the header or the sidecar, whichever is wrong.",
        UserWarning, stacklevel=find_stack_level())


def check_slice_timing(pid, where, slice_timing, n_slices, repetition_time):
    """SliceTiming: one finite offset in [0, RepetitionTime) seconds per slice, or None."""
    if slice_timing is None:
        return
    values = np.asarray(slice_timing, dtype=float)
    if values.shape != (n_slices,):
        _fail(pid, where, f"SliceTiming has {values.size} value(s) but the PWI has "
              f"{n_slices} slice(s) (third image axis).",
              "Give one time per slice, in seconds, or remove SliceTiming.")
    if not np.isfinite(values).all() or values.min() < 0 or values.max() >= repetition_time:
        _fail(pid, where, f"SliceTiming {np.round(values, 4).tolist()} is not within [0, "
              f"RepetitionTime = {repetition_time:g} s).",
              "Give the slice times in seconds from the start of each frame (values in "
              "milliseconds must be divided by 1000).")


def check_acquisition(pid, where, echo_time, repetition_time):
    """Echo and repetition times must be positive seconds of plausible size."""
    if not np.isfinite(echo_time) or echo_time <= 0:
        _fail(pid, where, f"EchoTime {echo_time} is not a positive number.",
              "Give EchoTime in seconds, e.g. 0.030.")
    if echo_time > _MAX_ECHO_TIME:
        _fail(pid, where, f"EchoTime {echo_time} looks like milliseconds.",
              f"Give it in seconds (e.g. {echo_time / 1000:g}).")
    if not np.isfinite(repetition_time) or repetition_time <= 0:
        _fail(pid, where, f"RepetitionTime {repetition_time} is not a positive number.",
              "Give RepetitionTime in seconds, e.g. 1.8.")
    if repetition_time > _MAX_REPETITION_TIME:
        _fail(pid, where, f"RepetitionTime {repetition_time} looks like milliseconds.",
              f"Give it in seconds (e.g. {repetition_time / 1000:g}).")
