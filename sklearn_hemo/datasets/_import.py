"""From what scanners and converters give to the cohort layout: :func:`import_cohort`.

Import is a one-way door: it reads a BIDS-style tree (or any tree through a per-file map),
writes the cohort layout of :mod:`sklearn_hemo.datasets` and nothing downstream learns
about BIDS. It never writes into the source.

What it does, per participant:

* **PWI**: the DSC series (``perf/*_dsc.nii[.gz]`` or ``func/*_dsc.nii[.gz]``) is copied
  as is (same grid, same voxels); its JSON sidecar gives ``EchoTime`` and
  ``RepetitionTime`` in seconds, or ``VolumeTiming`` (uniform within a tolerance) when
  there is no ``RepetitionTime``; ``SliceTiming`` is carried into ``pwi.json``. With
  several echoes the one nearest 30 ms is used (and a warning says so).
* **DWI**: a 4D series with its ``.bval`` is split: b0 is the mean of the b~0 volumes,
  b1000 the geometric mean of the b~1000 directions (the trace image).
* **Grids**: DWI, HT annotation and brain mask are put onto the PWI grid through their
  affines (scanner space: images of one session need no registration) with
  :func:`nibabel.processing.resample_from_to`, linear for images, for masks the
  fraction of each PWI voxel they cover thresholded at 0.5 (or nearest neighbour).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path

import nibabel as nib
import numpy as np

from .._io import atomic_write_text
from .._safety import check_declared_image, check_participant_id, read_json_file
from ..exceptions import CohortError
from ..utils._verbosity import DEPRECATED, DEPRECATED_FLAG, progress_bar, resolve_verbose
from ..utils._warnings import find_stack_level
from ..utils.fixes import StrOptions, validate_params
from . import _coregister
from ._cohort import Patient
from ._grids import (
    _as_3d,
    _check_overlap,
    _inside,
    _squeeze_shape,
    resample_patient_images,  # noqa: F401  (its old home)
    resample_to_grid,
)
from ._layout import (
    _read_nonsteady,
    check_before_writing,
    check_target,
    claim_cohort_folder,
    load_cohort,
    parse_ht,
    patient_files,
    write_participants,
    write_patient,
)
from ._validation import check_acquisition, check_slice_timing

__all__ = ["import_cohort"]

DEFAULT_HT_PATTERN = "sub-*/[ses-*/]anat/*_label-HT_mask.nii*"
_PWI_PATTERNS = ("sub-*/[ses-*/]perf/*_dsc.nii*", "sub-*/[ses-*/]func/*_dsc.nii*")
_DWI_PATTERN = "sub-*/[ses-*/]dwi/*_dwi.nii*"
_ROLES = ("pwi", "dwi", "dwi_b0", "dwi_b1000", "ht_mask", "brain_mask")
_TARGET_ECHO_TIME = 0.030  # s, the paper's TE
_LOG = "import.json"


@dataclass
class _Plan:
    """What one participant's import reads and decides, checked before anything is read."""

    pid: str
    pwi: Path = None
    echo_time: float = None
    repetition_time: float = None
    slice_timing: np.ndarray = None
    n_nonsteady: int = None  # NonSteadyStateFrames, or 0 when BIDS says they were discarded
    field_strength: float = None  # MagneticFieldStrength (T), or None when not given
    dwi: Path = None
    b0_volumes: list = None
    b1000_volumes: list = None
    dwi_b0: Path = None
    dwi_b1000: Path = None
    ht_mask: Path = None
    brain_mask: Path = None
    ht: int = None  # from participants.tsv
    notes: list = field(default_factory=list)
    registration: dict = field(default_factory=dict)  # see _coregister


# -- finding files ---------------------------------------------------------------------------
def _expand(pattern):
    """Glob patterns of ``pattern`` whose ``[part/]`` groups are optional."""
    parts = re.split(r"\[([^\[\]]*/)\]", pattern)
    fixed, optional = parts[0::2], parts[1::2]
    out = []
    for keep in itertools.product((False, True), repeat=len(optional)):
        text = fixed[0]
        for use, opt, rest in zip(keep, optional, fixed[1:], strict=True):
            text += (opt if use else "") + rest
        out.append(text)
    return out


def _glob(root, pattern):
    found = set()
    for glob in _expand(pattern):
        found.update(p for p in root.glob(glob)
                     if p.is_file() and (p.name.endswith(".nii") or p.name.endswith(".nii.gz")))
    return sorted(found)


def _participant_of(root, path):
    first = path.relative_to(root).parts[0]
    return first if first.startswith("sub-") else None


def _session_of(root, path):
    for part in path.relative_to(root).parts[1:-1]:
        if part.startswith("ses-"):
            return part
    return None


def _stem(path):
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)])
    return path.with_suffix("")


def _read_table(path, required, what):
    text = Path(path).read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text), delimiter="\t")
    fields = [f.strip() for f in (reader.fieldnames or [])]
    missing = [c for c in required if c not in fields]
    if missing:
        raise CohortError(f"{path}: {what} needs tab-separated columns {list(required)} "
                          f"(found {fields}). Fix the header.")
    rows = []
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if any(row.values()):
            rows.append((line, row))
    return rows


def _read_participants(source):
    """``{participant_id: ht or None}`` from ``participants.tsv``; None when absent."""
    table = source / "participants.tsv"
    if not table.is_file():
        return None
    labels = {}
    for line, row in _read_table(table, ("participant_id",), "participants.tsv"):
        pid = row["participant_id"]
        ht = parse_ht(row.get("ht"), pid, table, line)
        if pid in labels:
            raise CohortError(f"participant {pid}: listed twice in {table}. Remove one row.")
        labels[pid] = ht
    return labels


def _discover_bids(source, ht_pattern, session):
    """``{pid: {role: [paths]}}`` of a BIDS-style tree."""
    found = {}

    def add(role, paths):
        for path in paths:
            pid = _participant_of(source, path)
            if pid is None:
                continue
            if role != "ht_mask" and session is not None and _session_of(source, path) \
                    != session:
                continue
            found.setdefault(pid, {}).setdefault(role, []).append(path)

    for pattern in _PWI_PATTERNS:
        add("pwi", _glob(source, pattern))
    add("dwi", _glob(source, _DWI_PATTERN))
    add("ht_mask", _glob(source, ht_pattern))
    return found


def _read_map(source, mapping):
    """``{pid: {role: [paths]}}`` from a map table (or rows of participant, role, path)."""
    if isinstance(mapping, (str, os.PathLike)):
        where = Path(mapping)
        if not where.is_file():
            raise CohortError(f"map file {where} does not exist. Give a tab-separated table "
                              "with columns participant, role, path.")
        rows = []
        for line, row in _read_table(where, ("role", "path"), "the map"):
            pid = row.get("participant") or row.get("participant_id")
            if not pid:
                raise CohortError(f"{where}, line {line}: no participant. Add a participant "
                                  "column (e.g. sub-001).")
            rows.append((f"{where}, line {line}", pid, row["role"], row["path"]))
    else:
        rows = [(f"map row {i}", *map(str, row)) for i, row in enumerate(mapping)]
    found = {}
    for where, pid, role, path in rows:
        if role not in _ROLES:
            raise CohortError(f"participant {pid}: {where}: unknown role {role!r}. Use one "
                              f"of {list(_ROLES)}.")
        file = Path(path) if Path(path).is_absolute() else source / path
        if not file.is_file():
            raise CohortError(f"participant {pid}: {where}: {file} does not exist. Fix the "
                              "path (relative paths start at the source folder).")
        found.setdefault(pid, {}).setdefault(role, []).append(file)
    return found


# -- sidecars ----------------------------------------------------------------------------------
def _sidecar(pid, image):
    path = Path(str(_stem(image)) + ".json")
    if not path.is_file():
        raise CohortError(
            f"participant {pid}: {path} (the JSON sidecar of {image.name}) is missing. "
            "Convert with dcm2niix -b y, or write it with EchoTime and RepetitionTime in "
            "seconds."
        )
    meta = read_json_file(path, f"participant {pid}: ")  # deep nesting, huge numbers
    if not isinstance(meta, dict):
        raise CohortError(f"participant {pid}: {path} does not hold a JSON object. Fix the "
                          "file.")
    return path, meta


def _number(pid, path, meta, key, example):
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise CohortError(f"participant {pid}: {path} has no numeric {key} (got {value!r}). "
                          f"Add it in seconds, e.g. \"{key}\": {example}.")
    return float(value)


def _timing(pid, path, meta, n_frames, n_slices, tolerance):
    """Echo time, repetition time and slice timing (seconds) of a DSC sidecar."""
    echo_time = _number(pid, path, meta, "EchoTime", "0.030")
    if meta.get("RepetitionTime") is not None:
        repetition_time = _number(pid, path, meta, "RepetitionTime", "1.8")
    elif meta.get("VolumeTiming") is not None:
        times = meta["VolumeTiming"]
        if not isinstance(times, list) or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) for t in times):
            raise CohortError(f"participant {pid}: {path}: VolumeTiming must be a list of "
                              "numbers (seconds). Fix it.")
        times = np.asarray(times, dtype=float)
        if times.size != n_frames:
            raise CohortError(f"participant {pid}: {path}: VolumeTiming has {times.size} "
                              f"values but the DSC series has {n_frames} frames. Give one "
                              "onset per frame.")
        steps = np.diff(times)
        repetition_time = float((times[-1] - times[0]) / (n_frames - 1))
        if not np.isfinite(steps).all() or steps.min() <= 0 or np.abs(
                steps - repetition_time).max() > tolerance * repetition_time:
            raise CohortError(
                f"participant {pid}: {path}: VolumeTiming is not uniform (frame intervals "
                f"from {steps.min():.4g} to {steps.max():.4g} s, more than "
                f"{100 * tolerance:g}% from their mean {repetition_time:.4g} s). The "
                "pipeline needs a constant frame interval: drop the irregular frames (and "
                "their VolumeTiming entries), or raise timing_tolerance if the jitter is "
                "harmless."
            )
    else:
        raise CohortError(f"participant {pid}: {path} has neither RepetitionTime nor "
                          "VolumeTiming. Add \"RepetitionTime\": the time between frames in "
                          "seconds.")
    check_acquisition(pid, path, echo_time, repetition_time)
    slice_timing = meta.get("SliceTiming")
    if slice_timing is not None:
        direction = meta.get("SliceEncodingDirection", "k")
        if direction not in ("k", "k-"):
            raise CohortError(
                f"participant {pid}: {path}: SliceEncodingDirection is {direction!r}; "
                "SliceTiming can only be used along the third image axis. Reorient the "
                "series so that slices lie along it (e.g. fslreorient2std before dcm2niix "
                "sidecars are written) or remove SliceTiming."
            )
        if not isinstance(slice_timing, list) or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) for t in slice_timing):
            raise CohortError(f"participant {pid}: {path}: SliceTiming must be a list of "
                              "numbers (seconds). Fix or remove it.")
        slice_timing = np.asarray(slice_timing, dtype=float)
        if direction == "k-":  # BIDS: the first entry is the slice of highest index
            slice_timing = slice_timing[::-1].copy()
        check_slice_timing(pid, path, slice_timing, n_slices, repetition_time)
    return (echo_time, repetition_time, slice_timing, _read_nonsteady(meta, path, pid),
            _field_strength(pid, path, meta))


def _field_strength(pid, path, meta):
    """``MagneticFieldStrength`` (tesla, as dcm2niix writes it) or None when absent: it
    selects the blood and tissue relaxivities that make the perfusion maps absolute."""
    value = meta.get("MagneticFieldStrength")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 < value < 20:
        raise CohortError(f"participant {pid}: {path} has MagneticFieldStrength {value!r}; it "
                          "must be the main field in tesla (e.g. 1.5 or 3) or be left out.")
    return float(value)


# -- planning (headers and sidecars only) --------------------------------------------------
def _load(pid, path):
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types on damaged headers
        raise CohortError(f"participant {pid}: {path} cannot be read as NIfTI ({exc}). "
                          "Re-export the file.") from exc
    check_declared_image(pid, path, img)  # from the header, before any grid is allocated
    return img


def _choose_pwi(plan, candidates, tolerance):
    pid = plan.pid
    if not candidates:
        raise CohortError(f"participant {pid}: no DSC series found (looked for "
                          f"{' and '.join(_PWI_PATTERNS)}). Add it, or map it with a "
                          "'pwi' row (--map).")
    series = []
    for path in candidates:
        img = _load(pid, path)
        if len(img.shape) != 4 or img.shape[3] < 2:
            raise CohortError(f"participant {pid}: {path} has shape {img.shape}; the DSC "
                              "series must be 4D (x, y, z, time). Convert the whole dynamic "
                              "series.")
        sidecar, meta = _sidecar(pid, path)
        timing = _timing(pid, sidecar, meta, img.shape[3], img.shape[2], tolerance)
        series.append((path, img, timing))
    if len(series) > 1:
        _check_same_timing(pid, series)
        echoes = [timing[0] for _, _, timing in series]
        sessions = {_session_of_any(path) for path, _, _ in series}
        if len(set(echoes)) != len(echoes) or len(sessions) > 1 or len(
                {img.shape for _, img, _ in series}) > 1:
            names = ", ".join(str(p) for p, _, _ in series)
            raise CohortError(
                f"participant {pid}: several DSC series ({names}) "
                "that are not the echoes of one acquisition. Choose one: pass session= "
                "(--session) or list it in a map (--map)."
            )
        order = np.argsort([abs(te - _TARGET_ECHO_TIME) for te in echoes], kind="stable")
        chosen = series[int(order[0])]
        note = (f"multi-echo DSC: using {chosen[0].name} (EchoTime {1000 * chosen[2][0]:g} "
                f"ms, nearest 30 ms) of echoes at "
                f"{', '.join(f'{1000 * te:g}' for te in sorted(echoes))} ms")
        plan.notes.append(note)
        warnings.warn(f"participant {pid}: {note}.", UserWarning, stacklevel=find_stack_level())
        series = [chosen]
    path, img, (echo_time, repetition_time, slice_timing, n_nonsteady, field) = series[0]
    plan.pwi, plan.echo_time, plan.repetition_time = path, echo_time, repetition_time
    plan.slice_timing, plan.n_nonsteady = slice_timing, n_nonsteady
    plan.field_strength = field
    return img


def _check_same_timing(pid, series):
    """Echoes of one DSC acquisition share its frame times: refuse "echoes" whose
    repetition times (or non-steady frames) differ, instead of silently using one."""
    for index, label in ((1, "RepetitionTime"), (3, "NonSteadyStateFrames")):
        values = [timing[index] for _, _, timing in series]
        first = values[0]
        differ = any((v is None) != (first is None) or (
            v is not None and not math.isclose(v, first, rel_tol=1e-3, abs_tol=1e-6))
            for v in values)
        if differ:
            shown = ", ".join(f"{path.name}: {v}" for (path, _, _), v in zip(series, values,
                                                                            strict=True))
            raise CohortError(
                f"participant {pid}: several DSC series with different {label} ({shown}) "
                "cannot be the echoes of one acquisition. Keep one: pass session= "
                "(--session) or list it in a map (--map).")


def _session_of_any(path):
    """The nearest ``ses-*`` folder above ``path``, or None."""
    for part in reversed(Path(path).parts[:-1]):
        if part.startswith("ses-"):
            return part
        if part.startswith("sub-"):
            return None
    return None


def _read_bvals(pid, dwi, n_volumes):
    path = Path(str(_stem(dwi)) + ".bval")
    if not path.is_file():
        raise CohortError(f"participant {pid}: {path} (the b-values of {dwi.name}) is "
                          "missing. Convert with dcm2niix (it writes .bval/.bvec) or write "
                          "one line of b-values in s/mm2.")
    try:
        bvals = np.array(path.read_text(encoding="utf-8").split(), dtype=float)
    except ValueError as exc:
        raise CohortError(f"participant {pid}: {path} does not hold numbers ({exc}). Fix "
                          "the file.") from exc
    bad = bvals[~np.isfinite(bvals) | (bvals < 0)]
    if bad.size:
        raise CohortError(f"participant {pid}: {path} holds the b-value(s) "
                          f"{sorted(set(bad.tolist()))}; b-values are finite and >= 0 "
                          "(s/mm2). Fix the file (a negative value is not b0).")
    if bvals.size != n_volumes:
        raise CohortError(f"participant {pid}: {path} has {bvals.size} b-values but "
                          f"{dwi.name} has {n_volumes} volume(s). Use the .bval written "
                          "with this series.")
    bvec = Path(str(_stem(dwi)) + ".bvec")
    if bvec.is_file():
        try:
            vectors = np.array(bvec.read_text(encoding="utf-8").split(), dtype=float)
        except ValueError as exc:
            raise CohortError(f"participant {pid}: {bvec} does not hold numbers ({exc}). "
                              "Fix or remove the file.") from exc
        if vectors.size != 3 * n_volumes:
            raise CohortError(f"participant {pid}: {bvec} has {vectors.size} numbers, not 3 "
                              f"per volume ({3 * n_volumes}). Use the .bvec written with "
                              "this series.")
    return path, bvals


def _plan_dwi(plan, roles, b_value, b_tolerance, pwi_session):
    pid = plan.pid
    split = [roles.get("dwi_b0", []), roles.get("dwi_b1000", [])]
    series = roles.get("dwi", [])
    if series and any(split):
        raise CohortError(f"participant {pid}: the map gives both a 'dwi' series and "
                          "'dwi_b0'/'dwi_b1000' images. Keep one or the other.")
    if len(series) > 1 and pwi_session is not None:
        series = [p for p in series if _session_of_any(p) == pwi_session] or series
    if len(series) > 1:
        raise CohortError(f"participant {pid}: several DWI series "
                          f"({', '.join(map(str, series))}). Choose one: pass session= "
                          "(--session) or list it in a map (--map).")
    if series:
        dwi = series[0]
        img = _load(pid, dwi)
        if _session_of_any(dwi) != pwi_session:
            note = (f"DWI from {_session_of_any(dwi) or 'no session'} and PWI from "
                    f"{pwi_session or 'no session'}: resampled through their affines, "
                    "which assumes they are registered")
            plan.notes.append(note)
            warnings.warn(f"participant {pid}: {note}; check it, or register the DWI to "
                          "the PWI first.", UserWarning, stacklevel=find_stack_level())
        n_volumes = img.shape[3] if len(img.shape) == 4 else 1
        if len(img.shape) not in (3, 4):
            raise CohortError(f"participant {pid}: {dwi} has shape {img.shape}; a DWI "
                              "series is 3D or 4D. Re-export it.")
        bval_file, bvals = _read_bvals(pid, dwi, n_volumes)
        b0 = np.flatnonzero(bvals <= b_tolerance).tolist()
        b1000 = np.flatnonzero(np.abs(bvals - b_value) <= b_tolerance).tolist()
        for name, chosen, wanted in (("b0", b0, f"b <= {b_tolerance:g}"),
                                     (f"b{b_value:g}", b1000,
                                      f"|b - {b_value:g}| <= {b_tolerance:g}")):
            if not chosen:
                raise CohortError(
                    f"participant {pid}: {dwi}: no {name} volume ({wanted} s/mm2) among the "
                    f"b-values {sorted(set(bvals.tolist()))} of {bval_file.name}. Add a "
                    f"series with {name}, give the {name} image itself in a map (role "
                    f"dwi_{'b0' if name == 'b0' else 'b1000'}), or widen b_tolerance."
                )
        plan.dwi, plan.b0_volumes, plan.b1000_volumes = dwi, b0, b1000
        other = sorted(set(bvals[np.setdiff1d(np.arange(bvals.size), b0 + b1000)].tolist()))
        plan.notes.append(f"DWI {dwi.name}: b0 = mean of volumes {b0}, b{b_value:g} = "
                          f"geometric mean of volumes {b1000}"
                          + (f"; b-values {other} ignored" if other else ""))
        return [(dwi, img)]
    if all(len(files) == 1 for files in split):
        plan.dwi_b0, plan.dwi_b1000 = split[0][0], split[1][0]
        pairs = [(path, _load(pid, path)) for path in (plan.dwi_b0, plan.dwi_b1000)]
        for path, img in pairs:
            if len(_squeeze_shape(img.shape)) != 3:
                raise CohortError(f"participant {pid}: {path} has shape {img.shape}; it must "
                                  "be a 3D volume.")
        return pairs
    if any(len(files) > 1 for files in split):
        raise CohortError(f"participant {pid}: several dwi_b0 or dwi_b1000 files in the "
                          "map. Keep one of each.")
    raise CohortError(f"participant {pid}: no DWI found (looked for {_DWI_PATTERN} with its "
                      ".bval, or dwi_b0 and dwi_b1000 rows in a map). Add the diffusion "
                      "series, or map it (--map).")


def _plan(source, mapping, ht_pattern, session, b_value, b_tolerance, tolerance,
          register="none"):
    labels = _read_participants(source)
    found = _read_map(source, mapping) if mapping is not None else _discover_bids(
        source, ht_pattern, session)
    if labels is not None:
        skipped = sorted(set(labels) - {pid for pid, roles in found.items() if "pwi" in roles})
        if skipped and mapping is None:
            warnings.warn(f"participants {skipped} of {source / 'participants.tsv'} have no DSC "
                          "series and are not imported.", UserWarning,
                          stacklevel=find_stack_level())
    no_pwi = sorted(pid for pid, roles in found.items() if "pwi" not in roles)
    if no_pwi and mapping is not None:
        raise CohortError(f"participants {no_pwi}: the map gives no 'pwi' row. Add one per "
                          "participant.")
    pids = sorted(pid for pid, roles in found.items() if "pwi" in roles)
    if not pids:
        raise CohortError(f"{source}: no DSC series found (looked for "
                          f"{' and '.join(_PWI_PATTERNS)}). For a tree that is not BIDS, "
                          "give a map (--map) of participant, role, path.")
    for pid in pids:  # ids name folders and table rows: all checked before any is read
        check_participant_id(pid, source)
    plans = []
    for pid in pids:
        roles = found[pid]
        plan = _Plan(pid, ht=None if labels is None else labels.get(pid))
        pwi = _choose_pwi(plan, roles["pwi"], tolerance)
        for path, img in _plan_dwi(plan, roles, b_value, b_tolerance,
                                   _session_of_any(plan.pwi)):
            _check_overlap(pid, path, img, pwi)
        for role in ("ht_mask", "brain_mask"):
            files = roles.get(role, [])
            if len(files) > 1:
                raise CohortError(
                    f"participant {pid}: several {role} files ({', '.join(map(str, files))}). "
                    + ("Narrow ht_pattern (--ht-pattern) or list one in a map (--map)."
                       if role == "ht_mask" else "Keep one in the map.")
                )
            if files:
                img = _load(pid, files[0])
                if len(_squeeze_shape(img.shape)) != 3:
                    raise CohortError(f"participant {pid}: {files[0]} has shape {img.shape}; "
                                      "a mask must be a 3D volume.")
                _check_overlap(pid, files[0], img, pwi)
                setattr(plan, role, files[0])
        _coregister.plan_registration(plan, register)
        plans.append(plan)
    return plans


# -- converting ------------------------------------------------------------------------------
def _dwi_pair(plan):
    """(b0, b1000, affine) on the DWI's own grid, float32."""
    if plan.dwi is not None:
        img = nib.load(plan.dwi)
        data = np.asarray(img.dataobj, dtype=np.float32)
        if data.ndim == 3:
            data = data[..., None]
        b0 = data[..., plan.b0_volumes].mean(axis=-1)
        directions = np.maximum(data[..., plan.b1000_volumes], 0)
        with np.errstate(divide="ignore"):
            # geometric mean of the directions: the trace image (0 where any is 0)
            b1000 = np.exp(np.log(directions).mean(axis=-1)).astype(np.float32)
        return b0, b1000, img.affine, img.affine
    b0, b1000 = nib.load(plan.dwi_b0), nib.load(plan.dwi_b1000)
    return (np.asarray(_as_3d(b0), dtype=np.float32), np.asarray(_as_3d(b1000), np.float32),
            b0.affine, b1000.affine)


def _coverage_warning(plan, where, src_shape, src_affine, pwi, brain, min_overlap):
    inside = _inside(pwi.shape[:3], pwi.affine, src_shape, src_affine)
    covered = float(inside[brain].mean()) if brain.any() else float(inside.mean())
    if covered < min_overlap:
        note = (f"{where} covers only {100 * covered:.0f}% of the head in the PWI field of "
                "view; voxels outside it read 0")
        plan.notes.append(note)
        warnings.warn(f"participant {plan.pid}: {note}. Check that the series belong to the "
                      "same session and were not cropped.", UserWarning,
                      stacklevel=find_stack_level())


def _convert(plan, mask_interpolation, mask_threshold, min_overlap):
    pid = plan.pid
    pwi, reference = _coregister.prepare_pwi(plan, nib.load(plan.pwi))
    grid, affine = tuple(pwi.shape[:3]), pwi.affine
    baseline = np.asarray(pwi.dataobj[..., : min(5, pwi.shape[3])], dtype=np.float32).mean(-1)
    brain = baseline > 0.1 * np.percentile(baseline, 99) if np.isfinite(baseline).all() \
        else np.ones(grid, dtype=bool)
    b0, b1000, b0_affine, b1000_affine = _dwi_pair(plan)
    b0_affine, b1000_affine = _coregister.dwi_affines(plan, b0, b0_affine, b1000_affine,
                                                      reference)
    dwi_where = plan.dwi or plan.dwi_b0
    _coverage_warning(plan, dwi_where, b0.shape, b0_affine, pwi, brain, min_overlap)
    images = {}
    for name, data, src_affine in (("dwi_b0", b0, b0_affine), ("dwi_b1000", b1000,
                                                                b1000_affine)):
        if data.shape == grid and np.allclose(src_affine, affine, atol=1e-3):
            images[name] = nib.Nifti1Image(data.astype(np.float32), affine)
        else:
            images[name] = nib.Nifti1Image(
                resample_to_grid(data, src_affine, grid, affine, kind="image"), affine)
    if plan.dwi is not None and not (b0.shape == grid and np.allclose(b0_affine, affine,
                                                                      atol=1e-3)):
        plan.notes.append(f"DWI resampled from {b0.shape} onto the PWI grid {grid} (linear)")
    ht = plan.ht
    for name in ("ht_mask", "brain_mask"):
        path = getattr(plan, name)
        if path is None:
            images[name] = None
            continue
        img = nib.load(path)
        data = _as_3d(img)
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            # NaN > 0 is False: it would silently read as "no bleed" in that voxel
            raise CohortError(
                f"participant {pid}: {path} ({name}) holds "
                f"{int((~np.isfinite(data)).sum())} NaN or infinite value(s); a mask is 0 "
                "or 1 in every voxel. Fix the file (e.g. set those voxels to 0 or 1).")
        src_affine = _coregister.mask_affine(plan, name, img.affine, reference)
        _coverage_warning(plan, path, data.shape, src_affine, pwi, brain, min_overlap)
        if data.shape == grid and np.allclose(src_affine, affine, atol=1e-3):
            mask = (np.asarray(data) > 0).astype(np.uint8)
        else:
            mask = resample_to_grid(data, src_affine, grid, affine, kind="mask",
                                    mask_interpolation=mask_interpolation,
                                    mask_threshold=mask_threshold)
            plan.notes.append(f"{name} resampled from {data.shape} onto the PWI grid "
                              f"({mask_interpolation})")
        images[name] = nib.Nifti1Image(mask, affine)
        if name != "ht_mask":
            continue
        n_source, n_grid = int((np.asarray(data) > 0).sum()), int(mask.sum())
        if ht is None:
            ht = int(n_grid > 0)
            plan.notes.append(f"ht = {ht} from {path.name} ({n_grid} voxels on the PWI grid)")
        elif ht == 1 and n_grid == 0:
            raise CohortError(
                f"participant {pid}: participants.tsv says ht = 1 but {path} marks "
                f"{n_source} voxel(s) of its own grid and none of the PWI grid after "
                "resampling. Check that the annotation lies in the brain of this session, "
                "or use mask_interpolation='nearest' (--mask-interpolation nearest) or a "
                "lower mask_threshold for very small bleeds."
            )
        elif ht == 0 and n_grid > 0:
            raise CohortError(f"participant {pid}: participants.tsv says ht = 0 but {path} "
                              f"marks {n_grid} PWI voxel(s). Make the label and the annotation "
                              "agree.")
    patient = Patient(pid, plan.pwi if "motion" not in plan.registration else pwi,
                      images["dwi_b0"], images["dwi_b1000"],
                      echo_time=plan.echo_time, repetition_time=plan.repetition_time, ht=ht,
                      brain_mask=images["brain_mask"], ht_mask=images["ht_mask"],
                      slice_timing=plan.slice_timing, n_nonsteady=plan.n_nonsteady,
                      field_strength=plan.field_strength)
    patient.validate()
    plan.ht = ht
    return patient


def _record(plan, source):
    def rel(path):
        if path is None:
            return None
        try:
            return str(Path(path).relative_to(source))
        except ValueError:
            return str(path)

    return {
        "pwi": rel(plan.pwi), "echo_time": plan.echo_time,
        "repetition_time": plan.repetition_time,
        "slice_timing": None if plan.slice_timing is None else plan.slice_timing.tolist(),
        "dwi": rel(plan.dwi), "dwi_b0": rel(plan.dwi_b0), "dwi_b1000": rel(plan.dwi_b1000),
        "ht_mask": rel(plan.ht_mask), "brain_mask": rel(plan.brain_mask), "ht": plan.ht,
        "registration": _coregister.record(plan, rel),
        "notes": plan.notes,
    }


@validate_params(
    {
        "source": [str, os.PathLike],
        "out_dir": [str, os.PathLike],
        "mapping": [str, os.PathLike, Iterable, None],  # a table's path or its rows
        "ht_pattern": [str],
        "session": [str, None],
        # the function's own checks give each range (and b_tolerance < b_value / 2)
        "b_value": [Real],
        "b_tolerance": [Real],
        "timing_tolerance": [Real],
        "mask_interpolation": [StrOptions({"fraction", "nearest"})],
        "mask_threshold": [Real],
        "min_overlap": [Real],
        "overwrite": ["boolean"],
        "register": [StrOptions({"auto", "all", "none"})],
        "verbose": [Integral],  # resolve_verbose's message names the function
        "progress": DEPRECATED_FLAG,
    },
    prefer_skip_nested_validation=True,
)
def import_cohort(source, out_dir, *, mapping=None, ht_pattern=DEFAULT_HT_PATTERN,
                  session=None, b_value=1000.0, b_tolerance=100.0, timing_tolerance=0.01,
                  mask_interpolation="fraction", mask_threshold=0.5, min_overlap=0.9,
                  overwrite=False, register="auto", verbose=0, progress=DEPRECATED):
    """Import a BIDS-style tree (or any tree through a map) into the cohort layout.

    Reads, per participant ``sub-*`` (optionally in ``ses-*`` folders):

    * the DSC series ``perf/*_dsc.nii[.gz]`` (or ``func/*_dsc.nii[.gz]``) with its JSON
      sidecar: ``EchoTime`` and ``RepetitionTime`` in seconds, ``VolumeTiming`` instead
      of ``RepetitionTime`` (uniform within ``timing_tolerance``), ``SliceTiming``
      (carried into ``pwi.json``: each slice's frames are then placed at their own
      acquisition times on the common time grid). Several echoes: the one nearest 30 ms
      is used, and a warning says so;
    * the diffusion series ``dwi/*_dwi.nii[.gz]`` with its ``.bval`` (and ``.bvec``): b0
      is the mean of the volumes with ``b <= b_tolerance``, b1000 the geometric mean of
      those with ``|b - b_value| <= b_tolerance`` (the trace image);
    * the follow-up HT annotation at ``ht_pattern`` (any session);
    * ``participants.tsv`` (``participant_id``, ``ht``) when present; otherwise, and for
      participants it does not label, ``ht`` is 1 when the annotation marks a PWI voxel,
      0 when it marks none and n/a without annotation.

    DWI and masks are resampled onto the PWI grid through their affines (after the
    registration of ``register``: a follow-up annotation is registered through the image
    it was drawn on; without it, it must already be registered to the PWI), with
    :func:`nibabel.processing.resample_from_to`: linear for images; for masks the
    fraction of each PWI voxel they cover, kept where it reaches ``mask_threshold`` (or
    nearest neighbour). The PWI is copied on its own grid (motion-corrected unless
    ``register="none"``). Every
    participant is planned and checked from headers and sidecars, then converted and
    validated, before anything is written; nothing is ever written into ``source``.
    ``out_dir/import.json`` records which file gave what and every decision taken.

    Parameters
    ----------
    source : path-like
        The tree to read (left untouched).
    out_dir : path-like
        The cohort folder to write (not inside ``source``).
    mapping : path-like, iterable of (participant, role, path) or None, default=None
        For trees that are not BIDS: a tab-separated table with columns ``participant``,
        ``role`` and ``path`` (relative to ``source`` or absolute), or its rows. Roles:
        ``pwi`` (several rows: the echoes of one series), ``dwi`` (4D, ``.bval`` beside
        it), ``dwi_b0`` and ``dwi_b1000`` (3D, instead of ``dwi``), ``ht_mask``,
        ``brain_mask``. Sidecars are found beside the images (same name, ``.json``).
    ht_pattern : str, default="sub-*/[ses-*/]anat/*_label-HT_mask.nii*"
        Glob of the HT annotations, relative to ``source``; a ``[part/]`` group is
        optional. Ignored with ``mapping``.
    session : str or None, default=None
        Session folder (e.g. ``"ses-acute"``) of the PWI and DWI when participants have
        several; None accepts a single one.
    b_value : float, default=1000.0
        The diffusion weighting of the ``dwi_b1000`` image, s/mm2.
    b_tolerance : float, default=100.0
        Tolerance on b-values (s/mm2), for b0 and for ``b_value``.
    timing_tolerance : float, default=0.01
        Largest relative deviation of a ``VolumeTiming`` interval from the mean one.
    mask_interpolation : {"fraction", "nearest"}, default="fraction"
        How masks reach the PWI grid (see above).
    mask_threshold : float in (0, 1], default=0.5
        Covered fraction from which a PWI voxel is in the mask.
    min_overlap : float in [0, 1], default=0.9
        Warn when an image covers less than this fraction of the head in the PWI field
        of view (images that do not overlap it at all are refused).
    overwrite : bool, default=False
        Allow writing over a cohort already in ``out_dir``, or into a folder holding
        files this package did not write there (only same-named files are replaced;
        nothing else is deleted).
    register : {"auto", "all", "none"}, default="auto"
        Rigid registration (SimpleITK, Mattes mutual information; the optional extra
        ``[registration]``). ``"auto"``: the DSC series is motion-corrected (every frame
        registered to the pre-bolus median, :func:`sklearn_hemo.registration.correct_motion`;
        the cohort gets the corrected series, the source keeps the raw one; grids under
        4096 voxels are left as they are), and an HT annotation from another session than
        the PWI's is carried over by registering the T2*-weighted image it was drawn on
        (``*_T2starw.nii*`` in the same folder) to the PWI pre-bolus median. ``"all"``:
        also the DWI series (its b0) to the PWI pre-bolus median. ``"none"``: through the
        affines only. ``import.json`` records, per participant, each transform (rotation
        in degrees, translation in mm, mutual information before and after) and the
        displacement of every DSC frame (mm); a registration that fails or raises the
        mutual information by less than 5 % warns, and so does a frame displaced by more
        than 1 mm. Without SimpleITK, ``"auto"`` skips motion correction with a warning
        and raises :class:`ImportError` for a follow-up to register.
    verbose : int, default=0
        0 silent; 1 a progress bar; 2 also one line per participant converted. Bars and lines go to
        standard error; warnings are raised whatever ``verbose`` is.
    progress : bool
        Deprecated, use ``verbose`` (``progress=True`` is ``verbose=1``); removed in 0.2.

    Returns
    -------
    cohort : Cohort
        The imported cohort, loaded from ``out_dir``.

    Raises
    ------
    CohortError
        Naming the participant, the file and the fix (missing b0 or b1000, non-uniform
        ``VolumeTiming``, images outside the PWI field of view, ambiguous series, ...).
    FileExistsError
        ``out_dir`` already holds a cohort and ``overwrite`` is False.

    See Also
    --------
    load_cohort : with ``resample=True``, puts images of a folder already in the cohort
        layout onto the PWI grid.

    Examples
    --------
    A one-participant BIDS-style tree made from a simulated patient:

    >>> import json, tempfile
    >>> from pathlib import Path
    >>> import nibabel as nib, numpy as np
    >>> from sklearn_hemo.datasets import import_cohort, make_stroke_cohort
    >>> p = make_stroke_cohort(1, (8, 8, 2), random_state=0)[0]
    >>> src, out = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp()) / "cohort"
    >>> for sub in ("perf", "dwi"):
    ...     (src / "sub-01" / sub).mkdir(parents=True)
    >>> nib.save(p.pwi, src / "sub-01/perf/sub-01_dsc.nii.gz")
    >>> _ = (src / "sub-01/perf/sub-01_dsc.json").write_text(json.dumps(
    ...     {"EchoTime": p.echo_time, "RepetitionTime": p.repetition_time}))
    >>> dwi = np.stack([p.dwi_b0.get_fdata(), p.dwi_b1000.get_fdata()], axis=-1)
    >>> nib.save(nib.Nifti1Image(dwi, p.affine), src / "sub-01/dwi/sub-01_dwi.nii.gz")
    >>> _ = (src / "sub-01/dwi/sub-01_dwi.bval").write_text("0 1000\\n")
    >>> cohort = import_cohort(src, out)
    >>> cohort.ids, cohort[0].shape == p.shape
    (['sub-01'], True)
    """
    verbose = resolve_verbose(verbose, "import_cohort", progress=progress)
    source = Path(source)
    if not source.is_dir():
        raise CohortError(f"source folder {source} does not exist or is not a folder.")
    out = Path(out_dir)
    src_abs, out_abs = source.resolve(), out.resolve()
    if out_abs == src_abs or src_abs in out_abs.parents:
        raise ValueError(f"out_dir {out} is inside the source {source}; import never writes "
                         "into its source. Choose a folder outside it.")
    if mask_interpolation not in ("fraction", "nearest"):
        raise ValueError(f"mask_interpolation must be 'fraction' or 'nearest', got "
                         f"{mask_interpolation!r}.")
    for name, value, low, high in (("mask_threshold", mask_threshold, 0, 1),
                                   ("min_overlap", min_overlap, 0, 1),
                                   ("timing_tolerance", timing_tolerance, 0, 1),
                                   ("b_tolerance", b_tolerance, 0, math.inf),
                                   ("b_value", b_value, 0, math.inf)):
        closed = "[" if name == "min_overlap" else "("
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not low <= value <= high or (closed == "(" and value == 0):
            raise ValueError(f"{name} must be a number in {closed}{low}, {high}], got "
                             f"{value!r}.")
    if b_tolerance >= b_value / 2:
        raise ValueError(f"b_tolerance ({b_tolerance:g}) must be below half of b_value "
                         f"({b_value:g}), or b0 and b{b_value:g} volumes could mix.")
    if register not in ("auto", "all", "none"):
        raise ValueError(f"register must be 'auto', 'all' or 'none', got {register!r}.")
    # refuse an existing cohort, or a folder of someone else's files, before reading
    check_target(out, overwrite, "import", inputs=[source])
    plans = _plan(source, mapping, ht_pattern, session, float(b_value), float(b_tolerance),
                  float(timing_tolerance), register)
    check_before_writing([Patient(p.pid, p.pwi, p.pwi, p.pwi, echo_time=p.echo_time,
                                  repetition_time=p.repetition_time) for p in plans])
    iterator = progress_bar(plans, verbose, line=lambda plan: f"converted {plan.pid}",
                            desc="importing", unit="patient")
    patients = [_convert(plan, mask_interpolation, float(mask_threshold), float(min_overlap))
                for plan in iterator]
    owned = claim_cohort_folder(out, overwrite, "import", inputs=[source])
    out = owned.path
    for patient in patients:
        with owned.writing(patient_files(patient.id)):
            write_patient(patient, out)
    log = {"source": str(src_abs), "participants": {p.pid: _record(p, source) for p in plans}}
    with owned.writing([_LOG, "participants.tsv"]):
        atomic_write_text(out / _LOG, json.dumps(log, indent=2) + "\n")
        write_participants(out, [(p.id, p.ht) for p in patients])
    return load_cohort(out)
