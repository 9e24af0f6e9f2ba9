"""Guards that keep the commands from losing or corrupting a user's data.

Small helpers called from the command line and the cohort reader:

* outputs: an output is never written into the command's inputs, never over a file the
  command did not create (unless ``--overwrite``), and its folder is checked writable
  before any work starts (:func:`check_output_file`, :func:`check_writable_dir`,
  :func:`claim_output_dir`);
* inputs: declared image sizes are bounded before anything is allocated
  (:func:`check_declared_image`, limit :data:`MAX_IMAGE_VOXELS`), the same patient
  folder may not appear under two ids and a stale ``pwi.nii`` beside ``pwi.nii.gz`` is
  refused (:func:`check_distinct_patients`, :func:`check_stale_files`), and the
  voxel-level checks of :meth:`Cohort.validate` run lazily, the first time a command
  touches each patient (:func:`validate_lazily`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

_CHECK_ON_FIRST_USE = False  # set while a command of the command line runs

__all__ = [
    "MAX_IMAGE_VOXELS",
    "OutputError",
    "check_declared_image",
    "check_distinct_patients",
    "check_output_file",
    "check_patient_voxels",
    "check_stale_files",
    "check_writable_dir",
    "claim_output_dir",
    "validate_lazily",
]


def _max_voxels_from_env():
    raw = os.environ.get("SKLEARN_HEMO_MAX_VOXELS")
    if raw is None:
        return 1 << 28
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"SKLEARN_HEMO_MAX_VOXELS={raw!r} is not an integer; set it to a "
                         "number of voxels, e.g. 268435456.") from None
    if value < 1:
        raise ValueError(f"SKLEARN_HEMO_MAX_VOXELS={raw!r} must be positive.")
    return value


#: Largest number of voxels (x * y * z * frames) an image header may declare: 2**28
#: (about 268 million), nine times a paper-sized patient (128 x 128 x 20 x 90 frames,
#: 29.5 million). A header declaring more is refused before anything is read or
#: allocated (a gzip bomb, a forged header). Raise it with the environment variable
#: ``SKLEARN_HEMO_MAX_VOXELS`` or by assigning ``sklearn_hemo._safety.MAX_IMAGE_VOXELS``.
MAX_IMAGE_VOXELS = _max_voxels_from_env()

#: Fewest PWI frames a patient may have: a baseline, the bolus and its passage.
MIN_FRAMES = 10
#: frames averaged for the pre-bolus baseline check of :func:`check_patient_data`
N_BASELINE = 3
#: Shortest plausible echo time in seconds (DSC echo times are 20-60 ms).
MIN_ECHO_TIME = 1e-3

#: Name of the file that marks a folder as written by a command of this package.
OWNER_FILE = ".sklearn-hemo-owner.json"


class OutputError(ValueError):
    """An output path would write into the inputs, over a foreign file, or is not writable.

    Examples
    --------
    >>> from sklearn_hemo._safety import OutputError, check_output_file
    >>> try:
    ...     check_output_file("/proc/risk.nii.gz")
    ... except OutputError as exc:
    ...     print(type(exc).__name__)
    OutputError
    """


# ---------------------------------------------------------------------------- outputs
def is_inside(path, folder):
    """Whether ``path`` is ``folder`` or lies under it (symlinks resolved)."""
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def _refuse_inside_inputs(path, inputs, what, fix):
    """OutputError when ``path`` is one of ``inputs`` (None entries skipped) or inside one."""
    for source in inputs:
        if source is not None and is_inside(path, source):
            raise OutputError(
                f"{what} {path} lies inside the input {source}; the command never writes "
                f"into its inputs. {fix}")


def _nearest_existing(path):
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_dir(folder, what="--out"):
    """Raise :class:`OutputError` unless files can be created in ``folder``.

    ``folder`` need not exist: its nearest existing ancestor must be a writable folder.
    A temporary file is created and removed to make sure (read-only mounts, ACLs).
    """
    folder = Path(folder)
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise OutputError(f"{what} {folder}: {base} exists and is not a folder. Choose a "
                          "path inside a folder.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".sklearn-hemo-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{what} {folder}: cannot write in {base} ({exc.strerror or exc}). "
                          "Choose a writable location or fix its permissions.") from None


def check_output_file(path, *, inputs=(), overwrite=False, what="--out"):
    """Check an output file before any work: not an input, not foreign, writable.

    Parameters
    ----------
    path : path-like
        The file the command will write.
    inputs : iterable of path-like
        Input files and folders of the command; ``path`` may be none of them and may not
        lie inside any of them.
    overwrite : bool, default=False
        Allow replacing an existing file (never an input).
    what : str, default="--out"
        How the message names the option.

    Raises
    ------
    OutputError
        Naming the path and the fix.
    """
    path = Path(path)
    _refuse_inside_inputs(path, inputs, what, "Write it somewhere else, e.g. a results "
                          "folder.")
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder. Give a file name, e.g. "
                          f"{path / 'risk.nii.gz'}.")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(f"{what} {path} already exists. Choose another name, or pass "
                          "--overwrite to replace it.")
    check_writable_dir(path.parent, what)


def claim_output_dir(folder, command, settings, *, inputs=(), overwrite=False,
                     what="--out"):
    """Make ``folder`` the output folder of ``command`` (resumable), before any work.

    The folder is accepted when it does not exist, is empty, or was made by an earlier run
    of the same ``command`` with the same ``settings`` (its :data:`OWNER_FILE` says so):
    that run is resumed. A folder holding anything else (files of the user, a run with
    other settings) is refused unless ``overwrite``. The owner file is written at once,
    which also proves the folder writable.

    Returns
    -------
    folder : pathlib.Path
    """
    folder = Path(folder)
    _refuse_inside_inputs(folder, inputs, what, "Choose a folder outside it.")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} exists and is not a folder. Choose a folder path.")
    owner = folder / OWNER_FILE
    record = {"command": command, "settings": settings}
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        try:
            previous = json.loads(owner.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous is None:
            raise OutputError(
                f"{what} {folder} already holds files that sklearn-hemo {command} did not "
                "write. Choose a new or empty folder, or pass --overwrite to write over "
                "same-named files there.")
        if previous != record:
            prev = previous.get("settings") if isinstance(previous, dict) else None
            differ = sorted(k for k in set(prev or {}) | set(settings)
                            if (prev or {}).get(k) != settings.get(k)) if isinstance(
                prev, dict) else ["command"]
            raise OutputError(
                f"{what} {folder} holds the results of an earlier run with other settings "
                f"({', '.join(differ) or 'command'} differ). Choose another folder, or pass "
                "--overwrite to replace those results.")
        return folder
    check_writable_dir(folder, what)
    from ._io import atomic_write_text

    try:
        atomic_write_text(owner, json.dumps(record, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise OutputError(f"{what} {folder}: cannot write there ({exc.strerror or exc}). "
                          "Choose a writable folder.") from None
    return folder


def owns_folder(folder, command):
    """Whether ``folder`` carries the owner file of an earlier ``command``."""
    try:
        record = json.loads((Path(folder) / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("command") == command


def mark_folder(folder, command, settings=None):
    """Write the owner file of ``command`` into ``folder`` (created if needed)."""
    from ._io import atomic_write_text

    atomic_write_text(Path(folder) / OWNER_FILE,
                      json.dumps({"command": command, "settings": settings or {}},
                                 indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- inputs
def _fail(pid, where, problem, fix):
    from .exceptions import CohortError

    raise CohortError(f"participant {pid}: {where}: {problem} {fix}")


def check_declared_image(pid, path, img):
    """Refuse, from the header alone, images too large to read or of unusable type.

    The declared number of voxels is bounded by :data:`MAX_IMAGE_VOXELS` (checked before
    any voxel is decompressed or allocated); complex, RGB / structured and object voxel
    types are refused.
    """
    shape = tuple(int(n) for n in img.shape)
    if any(n < 0 for n in shape):
        _fail(pid, path, f"declares a negative dimension {shape}.", "Re-export the file.")
    n_voxels = 1
    for n in shape:
        n_voxels *= n  # Python ints: no overflow for forged headers
    if n_voxels > MAX_IMAGE_VOXELS:
        _fail(pid, path, f"declares {shape} = {n_voxels:,} voxels, more than the limit of "
              f"{MAX_IMAGE_VOXELS:,} (a damaged or forged header, or not a patient image).",
              "Re-export the file; if the image really is that large, raise the limit with "
              "the environment variable SKLEARN_HEMO_MAX_VOXELS.")
    try:
        dtype = np.dtype(img.get_data_dtype())
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on odd headers
        _fail(pid, path, f"has an unreadable voxel type ({exc}).", "Re-export the file.")
    if dtype.fields is not None or dtype.kind in "cOVSUM" or dtype.hasobject:
        _fail(pid, path, f"stores voxels of type {dtype} (complex, RGB or other non-scalar "
              "values).", "Save real-valued scalar intensities (e.g. int16 or float32), "
              "one value per voxel.")


def check_stale_files(pid, folder):
    """Refuse a patient folder holding both ``name.nii.gz`` and ``name.nii``."""
    folder = Path(folder)
    for name in ("pwi", "dwi_b0", "dwi_b1000", "brain_mask", "ht_mask"):
        gz, plain = folder / f"{name}.nii.gz", folder / f"{name}.nii"
        if gz.exists() and plain.exists():
            _fail(pid, folder, f"holds both {gz.name} and {plain.name}; only one can be the "
                  "patient's image and it is unclear which is current.",
                  "Delete the stale one.")


def _identity(path):
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def check_distinct_patients(patients, root=None):
    """Refuse two participants whose folders (or PWI files) are the same on disk.

    Two ids resolving to one folder (a symlink, a case-insensitive file system, a hard
    link) would put one patient on both sides of a train/test split.
    """
    from .exceptions import CohortError

    seen = {}
    for patient in patients:
        source = patient.source("pwi")
        if source is None:
            continue
        keys = {_identity(Path(source).parent), _identity(source)} - {None}
        for key in keys:
            other = seen.get(key)
            if other is not None and other != patient.id:
                where = f" in {root}" if root is not None else ""
                raise CohortError(
                    f"participants {other} and {patient.id}{where} resolve to the same "
                    f"patient folder or PWI file ({Path(source).parent}). Each participant "
                    "must be a distinct folder; remove the duplicate row (or link).")
            seen[key] = patient.id


def image_location(patient, name):
    """Where ``patient``'s image ``name`` comes from, for messages: its file or "(in memory)"."""
    source = patient.source(name)
    return str(source) if source is not None else f"{name} (in memory)"


def _read(patient, name):
    img = getattr(patient, name)
    try:
        return np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel/gzip/zlib raise many types on damaged files
        _fail(patient.id, image_location(patient, name), f"cannot be read ({exc}).",
              "Re-copy or re-export the file.")


def check_patient_data(patient):
    """Read every image of ``patient`` and check its values (finite, positive baseline).

    Moved here from ``datasets/_validation.py`` (which re-exports it) so that the two
    modules do not import each other.
    """
    pid = patient.id
    pwi = _read(patient, "pwi")
    if pwi.dtype.kind == "f" and not np.isfinite(pwi).all():
        n = int((~np.isfinite(pwi)).sum())
        _fail(pid, image_location(patient, "pwi"), f"holds {n} NaN or infinite value(s).",
              "Fix or mask the corrupt voxels upstream; nothing is interpolated here.")
    arrays = {}
    for name in ("dwi_b0", "dwi_b1000", "brain_mask", "ht_mask"):
        if getattr(patient, name) is None:
            continue
        arrays[name] = data = _read(patient, name)
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            _fail(pid, image_location(patient, name), "holds NaN or infinite values.",
                  "Fix the image upstream.")
    baseline = pwi[..., : min(N_BASELINE, pwi.shape[3])].astype(np.float64).mean(axis=-1)
    if "brain_mask" in arrays:
        brain = arrays["brain_mask"] > 0
        if not brain.any():
            _fail(pid, image_location(patient, "brain_mask"), "is empty.",
                  "Provide a mask with the brain voxels set to 1.")
        bad = int((baseline[brain] <= 0).sum())
        if bad:
            _fail(pid, image_location(patient, "pwi"), "has a non-positive pre-bolus baseline "
                  f"(mean of the first {N_BASELINE} frames) in {bad} brain voxel(s); the "
                  "concentration -ln(S/S0)/TE is undefined there.",
                  "Check the scaling of the series or exclude those voxels from brain_mask.")
    elif not np.any(baseline > 0):
        _fail(pid, image_location(patient, "pwi"), "has no positive baseline signal.",
              "Check the scaling of the series.")
    if "ht_mask" in arrays and patient.ht is not None:
        n_ht = int((arrays["ht_mask"] > 0).sum())
        if patient.ht == 0 and n_ht:
            _fail(pid, image_location(patient, "ht_mask"), f"marks {n_ht} voxel(s) but "
                  "participants.tsv says ht = 0.", "Make the label and the annotation agree.")
        if patient.ht == 1 and not n_ht:
            _fail(pid, image_location(patient, "ht_mask"), "marks no voxel but "
                  "participants.tsv says ht = 1.", "Make the label and the annotation agree "
                  "(annotate the bleed or set ht = 0).")


def check_patient_voxels(patient):
    """Every voxel-level check of :meth:`Patient.validate`, plus a few the pipeline needs.

    Reads the patient's images. Raises :class:`~sklearn_hemo.datasets.CohortError`
    naming the participant, the file and the fix.
    """
    pid = patient.id
    where = patient.source("pwi") or "pwi (in memory)"
    for name in ("pwi", "dwi_b0", "dwi_b1000", "brain_mask", "ht_mask"):
        img = getattr(patient, name)
        if img is not None:
            check_declared_image(pid, patient.source(name) or f"{name} (in memory)", img)
    if len(patient.pwi.shape) == 4 and patient.n_frames < MIN_FRAMES:
        _fail(pid, where, f"has {patient.n_frames} time frames; at least {MIN_FRAMES} are "
              "needed (a baseline before the bolus and its passage).",
              "Save the whole dynamic DSC series.")
    if not patient.echo_time >= MIN_ECHO_TIME:
        _fail(pid, "pwi.json", f"EchoTime {patient.echo_time:g} s is implausibly short "
              f"(DSC echo times are 20-60 ms).", "Give EchoTime in seconds, e.g. 0.030.")
    check_patient_data(patient)
    if patient.ht_mask is not None:
        values = np.unique(np.asanyarray(patient.ht_mask.dataobj))
        odd = [v for v in values.tolist() if v not in (0, 1)]
        if odd:
            shown = ", ".join(f"{v:g}" for v in odd[:5]) + (" ..." if len(odd) > 5 else "")
            _fail(pid, patient.source("ht_mask") or "ht_mask (in memory)",
                  f"holds values other than 0 and 1 ({shown}); an annotation is binary.",
                  "Save it with 1 for HT voxels and 0 elsewhere (e.g. threshold a "
                  "probabilistic or label map yourself).")


@contextlib.contextmanager
def checking_on_first_use():
    """Within the block, every new :class:`~sklearn_hemo.datasets.Cohort` is armed with
    :func:`validate_lazily` (the command line runs each command inside it)."""
    global _CHECK_ON_FIRST_USE
    previous, _CHECK_ON_FIRST_USE = _CHECK_ON_FIRST_USE, True
    try:
        yield
    finally:
        _CHECK_ON_FIRST_USE = previous


def guard_new_cohort(patients):
    """Called by ``Cohort.__init__``: refuse one folder under two ids; arm the lazy checks
    when running inside :func:`checking_on_first_use`."""
    check_distinct_patients(patients)
    if _CHECK_ON_FIRST_USE:
        validate_lazily(patients)


def validate_lazily(cohort_or_patients):
    """Arrange for :func:`check_patient_voxels` to run when each patient is first used.

    Nothing is read now; the first access to one of a patient's images runs its checks
    once (in the process that touches it), so a command reads and checks one patient at
    a time. Returns its argument.
    """
    patients = [cohort_or_patients] if hasattr(cohort_or_patients, "_image") else \
        cohort_or_patients
    for patient in patients:
        patient._on_first_use = check_patient_voxels
    return cohort_or_patients
