"""Reading and writing cohorts in the on-disk layout (BIDS-inspired, times in seconds).

::

    cohort/
      participants.tsv        participant_id, ht (0, 1 or n/a)
      sub-XXX/
        pwi.nii.gz            4D source DSC signal (x, y, z, t)
        pwi.json              {"EchoTime": 0.030, "RepetitionTime": 1.8}, optional
                              "MagneticFieldStrength" (tesla, BIDS)
        dwi_b0.nii.gz         3D, same grid as pwi
        dwi_b1000.nii.gz      3D, same grid as pwi
        brain_mask.nii.gz     3D, optional
        aif.tsv               optional: columns time and concentration (or signal)
        ht_mask.nii.gz        3D, optional
        truth.npz             optional extension: ground truth of simulated patients

Images may also be uncompressed ``.nii``. ``truth.npz`` holds the arrays of
``patient.truth`` (see :func:`~sklearn_hemo.datasets.make_stroke_cohort`); it is read
lazily, without pickle.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
from numbers import Integral
from pathlib import Path

import nibabel as nib
import numpy as np

from .._io import atomic_path, atomic_write_text
from .._safety import (
    check_folder,
    check_participant_id,
    check_stale_files,
    claim_folder,
    read_json_file,
    remove_if_owned,
)
from ..exceptions import CohortError
from ..utils._verbosity import DEPRECATED, DEPRECATED_FLAG, progress_bar, resolve_verbose
from ..utils.fixes import Interval, validate_params
from ._cohort import ArterialInputFunction, Cohort, Patient
from ._grids import resample_patient_images
from ._validation import check_acquisition, check_file, check_patient, check_time_step

__all__ = ["load_cohort", "load_patient", "save_cohort", "write_cohort"]

_PARTICIPANTS = "participants.tsv"
_IMAGES = ("pwi", "dwi_b0", "dwi_b1000", "brain_mask", "ht_mask")
_OPTIONAL = ("brain_mask", "ht_mask")


# -- writing -------------------------------------------------------------------------------
@validate_params(
    {
        "cohort": [Iterable],  # a Cohort or any iterable of Patient
        "path": [str, os.PathLike],
        "overwrite": ["boolean"],
        "verbose": [Integral],  # resolve_verbose's message names the function
        "progress": DEPRECATED_FLAG,
    },
    prefer_skip_nested_validation=True,
)
def save_cohort(cohort, path, *, overwrite=False, verbose=0, progress=DEPRECATED):
    """Write ``cohort`` to folder ``path`` in the cohort layout.

    Every file is written atomically; ``participants.tsv`` comes last, so an interrupted
    write leaves a folder that :func:`load_cohort` refuses instead of a partial cohort.
    Ids are checked first (unique, usable as folder names): for a collection before any
    file is written, for a one-shot iterator before each patient's folder. The PWI header
    is written with ``pixdim[4]`` = ``repetition_time`` in seconds.

    Parameters
    ----------
    cohort : Cohort or iterable of Patient
        The patients to write (an iterable is consumed one patient at a time).
    path : path-like
        Output folder, created if needed.
    overwrite : bool, default=False
        Allow writing over a folder that already holds ``participants.tsv``, or files
        this package did not write there (recorded with their SHA-256 in
        ``.sklearn-hemo-owner.json``). Even then only same-named files are replaced:
        nothing else is deleted.
    verbose : int, default=0
        0 silent; 1 a progress bar; 2 also one line per patient written. Bars and lines go to
        standard error; warnings are raised whatever ``verbose`` is.
    progress : bool
        Deprecated, use ``verbose`` (``progress=True`` is ``verbose=1``); removed in 0.2.

    Returns
    -------
    path : pathlib.Path
        The cohort folder.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_hemo.datasets import load_cohort, make_stroke_cohort, save_cohort
    >>> cohort = make_stroke_cohort(n_patients=2, shape=(8, 8, 1), random_state=0)
    >>> folder = save_cohort(cohort, tempfile.mkdtemp())
    >>> load_cohort(folder).ids
    ['sub-001', 'sub-002']
    """
    verbose = resolve_verbose(verbose, "save_cohort", progress=progress)
    return _write(cohort, path, overwrite, verbose)


def write_cohort(patients, path, *, overwrite=False):
    """Write patients from an iterable one at a time (streaming); see :func:`save_cohort`."""
    return _write(patients, path, overwrite, 0)


def _write(patients, path, overwrite, verbose):
    if iter(patients) is not patients:
        # a collection can be checked in full first, so a bad id writes nothing at all
        check_before_writing(patients)
    total = len(patients) if hasattr(patients, "__len__") else None
    patients = progress_bar(patients, verbose, line=lambda p: f"wrote {p.id}", total=total,
                            desc="writing", unit="patient")
    owned = claim_cohort_folder(path, overwrite, "save_cohort")
    path = owned.path
    rows, seen = [], set()
    for patient in patients:
        # a one-shot iterator is checked as it goes: a repeated id never overwrites the
        # folder just written, and participants.tsv is not written
        check_before_writing([patient], seen)
        with owned.writing(patient_files(patient.id)):
            write_patient(patient, path)
        rows.append((patient.id, patient.ht))
    with owned.writing([_PARTICIPANTS]):
        write_participants(path, rows)
    return path


def check_before_writing(patients, seen=None):
    """Cheap checks of everything :func:`write_patient` would refuse, before any file.

    Types, ids that name a folder, unique ids (``seen`` collects them across calls) and
    in-memory truth entries that ``truth.npz`` cannot store.
    """
    seen = set() if seen is None else seen
    for patient in patients:
        if not isinstance(patient, Patient):
            raise TypeError(f"only Patient objects can be written, got "
                            f"{type(patient).__name__}.")
        _check_id(patient.id)
        if patient.id in seen:
            raise CohortError(f"participant {patient.id} appears twice; ids must be unique.")
        seen.add(patient.id)
        if patient._truth_source is None:  # a truth.npz is numeric (read without pickle)
            _truth_arrays(patient, patient._truth)


def _check_id(pid):
    check_participant_id(pid)
    if Path(pid).name != pid or pid in (".", ".."):
        raise CohortError(
            f"participant id {pid!r} cannot name a folder; use ids like 'sub-001'."
        )


def patient_files(pid):
    """Relative paths of every file :func:`write_patient` may write or remove."""
    names = [f"{name}{ext}" for name in _IMAGES for ext in (".nii.gz", ".nii")]
    return [f"{pid}/{name}" for name in (*names, "pwi.json", "aif.tsv", "truth.npz")]


def _truth_arrays(patient, truth):
    if truth is None:
        return None
    arrays = {key: np.asarray(value) for key, value in truth.items()}
    bad = [key for key, value in arrays.items() if value.dtype.hasobject]
    if bad:
        raise CohortError(
            f"participant {patient.id}: truth entries {bad} are not numeric arrays; "
            "truth.npz stores numeric arrays only (no pickle)."
        )
    return arrays


def _with_time_step(img, repetition_time):
    """A copy of 4D ``img`` whose header holds the frame time in seconds (pixdim[4]).

    So that files written here never disagree with their ``pwi.json``.
    """
    img = img.__class__(img.dataobj, img.affine, img.header)
    xyz, _ = img.header.get_xyzt_units()
    img.header.set_xyzt_units("mm" if xyz == "unknown" else xyz, "sec")
    img.header.set_zooms(tuple(img.header.get_zooms()[:3]) + (repetition_time,))
    return img


def claim_cohort_folder(path, overwrite, command="save_cohort", inputs=()):
    """Check the target, claim it (:func:`sklearn_hemo._safety.claim_folder`) and remove
    its table until the new one is complete; return the
    :class:`~sklearn_hemo._safety.OwnedFolder`."""
    path = check_target(path, overwrite, command, inputs)
    owned = claim_folder(path, command, overwrite=overwrite, inputs=inputs, what="path")
    table = path / _PARTICIPANTS
    if owned.may_delete(_PARTICIPANTS):  # an interrupted run leaves no loadable mix
        table.unlink(missing_ok=True)
        owned.adopt([_PARTICIPANTS])
    return owned


def prepare_folder(path, overwrite, command="save_cohort"):
    """:func:`claim_cohort_folder`, returning the folder's path."""
    return claim_cohort_folder(path, overwrite, command).path


def write_participants(path, rows):
    """Write ``participants.tsv`` from ``(participant_id, ht)`` pairs, last of all files."""
    seen = set()
    for pid, _ in rows:
        if pid in seen:
            raise CohortError(f"participant {pid} appears twice; ids must be unique.")
        seen.add(pid)
    lines = "".join(f"{pid}\t{'n/a' if ht is None else ht}\n" for pid, ht in rows)
    atomic_write_text(Path(path) / _PARTICIPANTS, "participant_id\tht\n" + lines)


def check_target(path, overwrite, command="save_cohort", inputs=()):
    """Refuse to write over an existing cohort unless ``overwrite``, and into a folder
    holding files the package did not write (even with ``overwrite`` those are never
    deleted); writes nothing. Return the Path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder. Choose a folder path.")
    if (path / _PARTICIPANTS).exists() and not overwrite:
        raise FileExistsError(
            f"{path} already holds a cohort ({_PARTICIPANTS}). Choose an empty folder "
            "or pass overwrite=True (--overwrite on the command line)."
        )
    check_folder(path, command, overwrite=overwrite, inputs=inputs, what="path")
    return path


def write_patient(patient, root):
    """Write one patient's folder under ``root`` (all files atomically)."""
    _check_id(patient.id)
    root = Path(root)
    folder = root / patient.id
    folder.mkdir(parents=True, exist_ok=True)
    for name in _IMAGES:
        # the series as given: the load-time motion correction is a cached step
        img = patient.raw_pwi if name == "pwi" else getattr(patient, name)
        if img is None:
            # never leave an older optional file behind to be read back with this patient
            for stale in (folder / f"{name}.nii.gz", folder / f"{name}.nii"):
                remove_if_owned(root, stale)
            continue
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            img = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine)
        if name == "pwi" and len(img.shape) == 4:
            img = _with_time_step(img, patient.repetition_time)
        with atomic_path(folder / f"{name}.nii.gz") as tmp:
            nib.save(img, tmp)
    sidecar = {"EchoTime": patient.echo_time, "RepetitionTime": patient.repetition_time}
    if patient.slice_timing is not None:
        sidecar["SliceTiming"] = [float(t) for t in patient.slice_timing]
    if getattr(patient, "n_nonsteady", None) is not None:
        sidecar["NonSteadyStateFrames"] = patient.n_nonsteady
    if getattr(patient, "field_strength", None) is not None:
        sidecar["MagneticFieldStrength"] = patient.field_strength
    atomic_write_text(folder / "pwi.json", json.dumps(sidecar, indent=2) + "\n")
    aif_file = folder / "aif.tsv"
    if patient.aif is not None:
        lines = [f"time\t{patient.aif.kind}"]
        lines += [f"{t!r}\t{v!r}" for t, v in zip(patient.aif.time.tolist(),
                                                  patient.aif.values.tolist(), strict=True)]
        atomic_write_text(aif_file, "\n".join(lines) + "\n")
    else:
        remove_if_owned(root, aif_file)
    truth_file = folder / "truth.npz"
    truth = patient.truth
    if truth is not None:
        arrays = _truth_arrays(patient, truth)
        with atomic_path(truth_file) as tmp:
            np.savez_compressed(tmp, **arrays)
    else:
        remove_if_owned(root, truth_file)


# -- reading -------------------------------------------------------------------------------
@validate_params(
    {"path": [str, os.PathLike], "resample": ["boolean"],
     "motion_correction": ["boolean", None]},
    prefer_skip_nested_validation=True,
)
def load_cohort(path, *, resample=False, motion_correction=None):
    """Read a cohort folder in the cohort layout, checking it up front.

    Images are not read: they load lazily (memory-mapped where the format allows) when a
    patient's image is first used. The checks here cover the table, the folders, every
    header (dimensions, grids, affines), truncated files and the ``pwi.json`` sidecars;
    :meth:`Cohort.validate` additionally reads the voxels.

    Parameters
    ----------
    path : path-like
        The cohort folder.
    resample : bool, default=False
        Put DWI, brain mask and HT annotation that are not on the PWI grid onto it, in
        memory, through their affines (scanner space, no registration), as
        :func:`import_cohort` does: linear interpolation for the DWI, the covered
        fraction of each PWI voxel thresholded at 0.5 for the masks. A warning names
        each resampled file; nothing on disk changes (the resampled images live in
        memory, so such patients pickle with their voxels). False (the default) refuses
        mismatched grids with a :class:`CohortError`.
    motion_correction : bool or None, default=None
        Correct the head motion of each DSC series when it is first read for processing
        (a cached step, the same correction as :func:`import_cohort`'s; nothing in the
        folder changes; see :class:`Patient`). None follows the environment variable
        ``SKLEARN_HEMO_MOTION_CORRECTION`` (on unless ``off``); False reads the series as
        they are. Series that ``import.json`` records as corrected are not corrected
        again.

    Returns
    -------
    cohort : Cohort
        File-backed patients in the order of ``participants.tsv``.

    Raises
    ------
    CohortError
        Naming the participant, the file and the fix, for any problem found.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_hemo.datasets import load_cohort, make_stroke_cohort, save_cohort
    >>> folder = save_cohort(make_stroke_cohort(2, (8, 8, 1), random_state=0),
    ...                      tempfile.mkdtemp())
    >>> cohort = load_cohort(folder)
    >>> cohort[0].pwi.ndim, cohort[0].echo_time < 1
    (4, True)
    """
    path = Path(path)
    if not path.is_dir():
        raise CohortError(f"cohort folder {path} does not exist or is not a folder.")
    rows = _read_participants(path)
    patients = []
    for pid, ht in rows:  # a loop, not a comprehension: warnings point at the caller
        patients.append(_read_patient(path, pid, ht, resample))
        patients[-1].motion_correction = motion_correction
    return Cohort(patients, path=path)


@validate_params(
    {"path": [str, os.PathLike], "ht": [Interval(Integral, 0, 1, closed="both"), None]},
    prefer_skip_nested_validation=True,
)
def load_patient(path, *, ht=None):
    """Read one patient folder of the cohort layout, e.g. a new patient to predict.

    The folder needs no ``participants.tsv`` around it; its name is the participant id.
    Checks and lazy loading are those of :func:`load_cohort`.

    Parameters
    ----------
    path : path-like
        The patient folder (``pwi.nii.gz``, ``pwi.json``, ``dwi_b0.nii.gz``,
        ``dwi_b1000.nii.gz``, optional ``brain_mask``, ``aif.tsv``, ``ht_mask``).
    ht : int or None, default=None
        Patient-level HT label when known.

    Returns
    -------
    patient : Patient
        File-backed patient.

    Raises
    ------
    CohortError
        Naming the file and the fix, for any problem found.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_hemo.datasets import load_patient, make_stroke_cohort, save_cohort
    >>> folder = save_cohort(make_stroke_cohort(1, (8, 8, 1), random_state=0),
    ...                      tempfile.mkdtemp())
    >>> load_patient(folder / "sub-001").id
    'sub-001'
    """
    # absolute, so that "." or "sub-001/.." still name the folder (and the participant id)
    path = Path(os.path.abspath(path))
    if not path.is_dir():
        raise CohortError(f"patient folder {path} does not exist or is not a folder.")
    return _read_patient(path.parent, path.name, ht)


def _read_participants(path):
    table = path / _PARTICIPANTS
    if not table.is_file():
        raise CohortError(
            f"{table} is missing. Write a tab-separated table with a participant_id column "
            "(and ht = 0/1), one row per patient folder."
        )
    text = _read_text(table, None, encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text), delimiter="\t")
    if not reader.fieldnames or "participant_id" not in reader.fieldnames:
        raise CohortError(
            f"{table}: no participant_id column (found {reader.fieldnames}). The table must "
            "be tab-separated with a participant_id header."
        )
    rows, lines = [], {}
    for line, row in enumerate(reader, start=2):
        pid = (row.get("participant_id") or "").strip()
        if not pid and not any((v or "").strip() for v in row.values()):
            continue  # blank line
        if not pid or Path(pid).name != pid or pid in (".", ".."):
            raise CohortError(f"{table}, line {line}: participant_id {pid!r} is not a folder "
                              "name. Use ids like 'sub-001'.")
        check_participant_id(pid, f"{table}, line {line}")
        if pid in lines:
            raise CohortError(
                f"participant {pid}: listed twice in {table} (lines {lines[pid]} and {line}). "
                "Participant ids must be unique; remove or rename one row."
            )
        lines[pid] = line
        rows.append((pid, parse_ht(row.get("ht"), pid, table, line)))
    if not rows:
        raise CohortError(f"{table} lists no participants.")
    return rows


def _find_image(folder, pid, name, required):
    for candidate in (folder / f"{name}.nii.gz", folder / f"{name}.nii"):
        if candidate.is_file():
            break
    else:
        if required:
            raise CohortError(
                f"participant {pid}: {folder / (name + '.nii.gz')} is missing. Add it (same "
                "grid as pwi.nii.gz) or remove the participant from participants.tsv."
            )
        return None, None
    try:
        img = nib.load(candidate, mmap=True)
    except Exception as exc:  # nibabel raises many types on damaged headers
        raise CohortError(
            f"participant {pid}: {candidate} cannot be read as NIfTI ({exc}). Re-copy or "
            "re-export the file."
        ) from exc
    check_file(pid, candidate, img)
    return candidate, img


def _read_patient(root, pid, ht, resample=False):
    check_participant_id(pid, root / pid)
    folder = root / pid
    if not folder.is_dir():
        raise CohortError(
            f"participant {pid}: listed in {root / _PARTICIPANTS} but folder {folder} does not "
            "exist. Add the folder or remove the row."
        )
    check_stale_files(pid, folder)
    found = {name: _find_image(folder, pid, name, name not in _OPTIONAL) for name in _IMAGES}
    images = {name: path for name, (path, _) in found.items()}
    echo_time, repetition_time, slice_timing, n_nonsteady = _read_sidecar(
        folder / "pwi.json", pid)
    check_time_step(pid, images["pwi"], found["pwi"][1], repetition_time)
    aif_file = folder / "aif.tsv"
    truth_file = folder / "truth.npz"
    patient = Patient(
        pid,
        images["pwi"],
        images["dwi_b0"],
        images["dwi_b1000"],
        echo_time=echo_time,
        repetition_time=repetition_time,
        ht=ht,
        brain_mask=images["brain_mask"],
        ht_mask=images["ht_mask"],
        aif=read_aif(aif_file, pid) if aif_file.is_file() else None,
        truth=truth_file if truth_file.is_file() else None,
        slice_timing=slice_timing,
        n_nonsteady=n_nonsteady,
        field_strength=_read_field_strength(folder / "pwi.json", pid),
    )
    # reuse the headers just read (still lazy: the proxies are dropped when pickled)
    patient._images.update({name: img for name, (_, img) in found.items() if img is not None})
    if resample:
        resample_patient_images(patient)
    check_patient(patient)
    return patient


def _read_sidecar(path, pid):
    if not path.is_file():
        raise CohortError(
            f"participant {pid}: {path} is missing. Write the PWI sidecar "
            '{"EchoTime": 0.030, "RepetitionTime": 1.8} (seconds).'
        )
    meta = read_json_file(path, f"participant {pid}: ")
    values = []
    for key in ("EchoTime", "RepetitionTime"):
        value = meta.get(key) if isinstance(meta, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 1e300:
            value = math.inf  # a 400-digit integer: math.isfinite would raise OverflowError
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value):
            raise CohortError(
                f"participant {pid}: {path} has no numeric {key} (got {value!r}). Add it in "
                "seconds, e.g. " + ('"EchoTime": 0.030' if key == "EchoTime" else
                                    '"RepetitionTime": 1.8') + "."
            )
        values.append(float(value))
    check_acquisition(pid, path, *values)
    slice_timing = meta.get("SliceTiming")
    if slice_timing is not None:
        if not isinstance(slice_timing, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in slice_timing):
            raise CohortError(f"participant {pid}: {path}: SliceTiming must be a list of "
                              f"numbers in seconds (got {slice_timing!r}). Fix or remove it.")
        slice_timing = np.asarray(slice_timing, dtype=float)
    return (*values, slice_timing, _read_nonsteady(meta, path, pid))


def _read_field_strength(path, pid):
    """BIDS ``MagneticFieldStrength`` (tesla) of the PWI sidecar, or None when absent."""
    meta = read_json_file(path, f"participant {pid}: ")  # valid: _read_sidecar read it
    value = meta.get("MagneticFieldStrength") if isinstance(meta, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise CohortError(
            f"participant {pid}: {path} has MagneticFieldStrength {value!r}; it must be the "
            "main field in tesla (e.g. \"MagneticFieldStrength\": 1.5) or be left out.")
    return float(value)


def _read_nonsteady(meta, path, pid):
    """Leading non-steady frames still in the PWI according to its sidecar, or None.

    ``NonSteadyStateFrames`` (this package) counts frames to drop; BIDS's
    ``NumberOfVolumesDiscardedByUser`` / ``...ByScanner`` say they were already removed
    (nothing left to drop). None: not said, detect them from the signal.
    """
    if "NonSteadyStateFrames" in meta:
        value = meta["NonSteadyStateFrames"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0 or int(value) != value:
            raise CohortError(
                f"participant {pid}: {path} has NonSteadyStateFrames {value!r}; it must be a "
                "whole number of leading frames >= 0 (e.g. \"NonSteadyStateFrames\": 2).")
        return int(value)
    if any(key in meta for key in ("NumberOfVolumesDiscardedByUser",
                                   "NumberOfVolumesDiscardedByScanner")):
        return 0
    return None


def _read_text(path, pid, encoding="utf-8"):
    """The text of ``path``, or a CohortError naming the file when it is not UTF-8."""
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        who = f"participant {pid}: " if pid else ""
        raise CohortError(f"{who}{path} is not UTF-8 text ({exc}). Save it as UTF-8 "
                          "(tab-separated text).") from None


def parse_ht(value, pid, table, line):
    """The ``ht`` cell of a participants table: 0, 1 or None (``n/a``, ``na`` or empty)."""
    raw = (value or "n/a").strip().lower()
    if raw in ("n/a", "na", ""):
        return None
    if raw in ("0", "1", "0.0", "1.0"):
        return int(float(raw))
    raise CohortError(f"participant {pid}: {table}, line {line}: ht is {raw!r}; it "
                      "must be 0, 1 or n/a. Fix the value.")


def read_aif(path, pid):
    """The :class:`ArterialInputFunction` of an ``aif.tsv`` file (also read by
    :func:`sklearn_hemo.signal.aif_from_tsv`); errors name participant ``pid``."""
    text = _read_text(path, pid)
    reader = csv.reader(io.StringIO(text), delimiter="\t")
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        header = []
    kinds = [k for k in ("concentration", "signal") if k in header]
    if "time" not in header or len(kinds) != 1:
        raise CohortError(
            f"participant {pid}: {path} must have a 'time' column and exactly one of "
            f"'concentration' or 'signal' (found {header}). Rename the columns."
        )
    t_col, v_col = header.index("time"), header.index(kinds[0])
    times, values = [], []
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            times.append(float(row[t_col]))
            values.append(float(row[v_col]))
        except (IndexError, ValueError):
            raise CohortError(f"participant {pid}: {path}, line {line}: expected two numbers, "
                              f"got {row}. Fix the row.") from None
    aif = ArterialInputFunction(np.array(times), np.array(values), kinds[0])
    if aif.time.size < 2 or not (np.isfinite(aif.time).all() and np.isfinite(aif.values).all()):
        raise CohortError(f"participant {pid}: {path} needs at least 2 rows of finite numbers.")
    if np.any(np.diff(aif.time) <= 0):
        raise CohortError(f"participant {pid}: {path} has times that do not increase. Sort "
                          "the rows by time and remove duplicates.")
    return aif
