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
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from ._config import DEFAULT_MAX_IMAGE_VOXELS, config_context, switch
from ._io import sha256_file
from .exceptions import OutputError  # defined there; re-exported here

__all__ = [
    "MAX_IMAGE_VOXELS",
    "ForeignFilesError",
    "OutputError",
    "OwnedFolder",
    "check_bundle_folder",
    "check_declared_image",
    "check_distinct_patients",
    "check_folder",
    "check_output_file",
    "check_participant_id",
    "check_patient_voxels",
    "check_stale_files",
    "check_writable_dir",
    "claim_folder",
    "claim_output_dir",
    "foreign_files",
    "is_owned",
    "read_json_file",
    "remove_if_owned",
    "validate_lazily",
]


#: Default of the largest number of voxels (x * y * z * frames) an image header may declare:
#: 2**28 (about 268 million), nine times a paper-sized patient (128 x 128 x 20 x 90
#: frames, 29.5 million). A header declaring more is refused before anything is read or
#: allocated (a gzip bomb, a forged header). The limit in force is the global switch
#: ``max_image_voxels`` (:func:`sklearn_hemo.set_config`; default: the environment
#: variable ``SKLEARN_HEMO_MAX_VOXELS``, else this).
MAX_IMAGE_VOXELS = DEFAULT_MAX_IMAGE_VOXELS

#: Fewest PWI frames a patient may have: a baseline, the bolus and its passage.
MIN_FRAMES = 10
#: frames averaged for the pre-bolus baseline check of :func:`check_patient_data`
N_BASELINE = 3
#: Shortest plausible echo time in seconds (DSC echo times are 20-60 ms).
MIN_ECHO_TIME = 1e-3

#: Name of the file that marks a folder as written by a command of this package.
OWNER_FILE = ".sklearn-hemo-owner.json"



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

    The folder is accepted when it does not exist, is empty, or holds only files that
    this package wrote there (its :data:`OWNER_FILE` lists them with their SHA-256) by an
    earlier run of the same ``command`` with the same ``settings``: that run is resumed.
    A folder holding anything else (files of the user, a run with other settings) is
    refused unless ``overwrite``. See :func:`claim_folder`, which this calls.

    Returns
    -------
    folder : pathlib.Path
    """
    return claim_folder(folder, command, settings=settings, inputs=inputs,
                        overwrite=overwrite, what=what).path


# ------------------------------------------------------------------------- ownership
#: format of :data:`OWNER_FILE` (1: command and settings only, no file list)
_OWNER_FORMAT = 2


class ForeignFilesError(OutputError, FileExistsError):
    """An output folder holds files this package did not write there.

    Both a :class:`OutputError` (a ``ValueError``) and a ``FileExistsError``, so that
    callers catching either keep working.
    """


def _folder_identity(folder):
    return os.path.realpath(folder)


def _read_owner(folder):
    """The valid owner record of ``folder``, or None.

    Valid: written by this package (format 2) *for this folder*: a marker copied into
    another folder names the folder it was written in, and is ignored there.
    """
    try:
        record = json.loads((Path(folder) / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("format") != _OWNER_FORMAT \
            or record.get("folder") != _folder_identity(folder) \
            or not isinstance(record.get("files"), dict):
        return None
    return record


def _entry_matches(path, entry):
    """Whether file ``path`` is still the one ``entry`` recorded (pending: any content)."""
    if isinstance(entry, str):  # a bare SHA-256 (a bundle's manifest)
        try:
            return path.is_file() and sha256_file(path) == entry
        except OSError:
            return False
    if not isinstance(entry, dict):
        return False
    if entry.get("pending") is True:
        return True
    try:
        stat = path.stat()
    except OSError:
        return False
    if stat.st_size != entry.get("size"):
        return False
    if [stat.st_mtime_ns, stat.st_ino] == [entry.get("mtime_ns"), entry.get("ino")]:
        return isinstance(entry.get("sha256"), str)  # unchanged since hashed
    try:
        return sha256_file(path) == entry.get("sha256")
    except OSError:
        return False


def _entry(path):
    stat = path.stat()
    return {"sha256": sha256_file(path), "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "ino": stat.st_ino}


def foreign_files(folder, record_files=None):
    """Files under ``folder`` that this package did not write there.

    The one test of ownership used by every writer (cohorts, comparisons, QC reports,
    model bundles): a file is the package's when a record lists its relative path with
    a SHA-256 that its content still has (or as pending: being written). ``record_files``
    is that record (``{relative path: entry}``); None reads the folder's
    :data:`OWNER_FILE` (a marker copied from another folder, or unreadable, counts as no
    record). A sub-folder with a valid owner file of its own is judged by it. Symbolic
    links and anything that is not a regular file are foreign.

    Returns
    -------
    foreign : list of str
        Relative paths (POSIX), sorted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    if record_files is None:
        record = _read_owner(folder)
        record_files = {} if record is None else record["files"]
    foreign = []
    for entry in sorted(folder.iterdir()):
        rel = entry.name
        if rel == OWNER_FILE and not entry.is_symlink():
            continue
        if entry.is_dir() and not entry.is_symlink():
            inner = _read_owner(entry)
            if inner is not None:
                foreign += [f"{rel}/{name}" for name in foreign_files(entry)]
                continue
            nested = {k[len(rel) + 1:]: v for k, v in record_files.items()
                      if k.startswith(rel + "/")}
            sub = foreign_files(entry, nested)
            foreign += [f"{rel}/{name}" for name in sub]
            continue
        if entry.is_symlink() or not entry.is_file() \
                or not _entry_matches(entry, record_files.get(rel)):
            foreign.append(rel)
    return foreign


def shown_names(names, limit=5):
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class OwnedFolder:
    """An output folder claimed by :func:`claim_folder`, and the record of what was
    written there.

    Attributes
    ----------
    path : pathlib.Path
    command : str
    foreign : frozenset of str
        Relative paths of files found there that the package did not write (only with
        ``overwrite=True``); they may be replaced by same-named outputs, never deleted.
    """

    def __init__(self, path, command, foreign=()):
        self.path, self.command = Path(path), command
        # what each foreign file was when claimed: still so, it is never recorded as ours
        self._foreign = {name: self._stat(name) for name in foreign}

    @property
    def foreign(self):
        return frozenset(self._foreign)

    @classmethod
    def of(cls, folder, command):
        """The folder as it is now: every file not recorded as the package's is foreign."""
        return cls(folder, command, foreign_files(folder))

    def _stat(self, name):
        try:
            stat = (self.path / name).stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def _update(self, change):
        from ._io import atomic_write_text

        record = _read_owner(self.path) or {
            "format": _OWNER_FORMAT, "folder": _folder_identity(self.path),
            "command": self.command, "settings": None, "files": {}}
        change(record["files"])
        atomic_write_text(self.path / OWNER_FILE,
                          json.dumps(record, indent=1, sort_keys=True) + "\n")

    def _rel(self, name):
        name = Path(name)
        if name.is_absolute():
            name = Path(os.path.abspath(name)).relative_to(os.path.abspath(self.path))
        return name.as_posix()

    def expect(self, names):
        """Record ``names`` (relative paths) as being written: whatever they hold counts
        as the package's until :meth:`adopt` records their content (an interrupted run
        may be rerun into the folder)."""
        names = [self._rel(n) for n in names]

        def change(files):
            for name in names:
                if name not in self.foreign:  # a file of the user's stays foreign
                    files[name] = {"pending": True}
        self._update(change)

    def adopt(self, names):
        """Record the current content (SHA-256) of ``names``; absent ones are dropped."""
        names = [self._rel(n) for n in names]

        def change(files):
            for name in names:
                path = self.path / name
                if name in self._foreign:
                    if self._stat(name) == self._foreign[name]:
                        continue  # not written: still the user's file
                    del self._foreign[name]
                if path.is_file() and not path.is_symlink():
                    files[name] = _entry(path)
                else:
                    files.pop(name, None)
        self._update(change)

    @contextlib.contextmanager
    def writing(self, names=(), *, changed=False):
        """Within the block, ``names`` are written: recorded as being written now, and
        with their content when the block ends (even by an error). ``changed=True`` also
        records every file that appears or changes under the folder meanwhile."""
        names = list(names)
        before = self._snapshot() if changed else None
        if names:
            self.expect(names)
        try:
            yield self
        finally:
            if changed:
                after = self._snapshot()
                names += [n for n, key in after.items() if before.get(n) != key]
            self.adopt(names)

    def _snapshot(self):
        found = {}
        for path in self.path.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.name != OWNER_FILE:
                stat = path.stat()
                found[path.relative_to(self.path).as_posix()] = (
                    stat.st_ino, stat.st_size, stat.st_mtime_ns)
        return found

    def may_delete(self, name):
        """Whether file ``name`` may be removed: it is not a file the package found
        there and did not write."""
        return self._rel(name) not in self._foreign

    def remove(self, name):
        """Delete file ``name`` if present; refuse (:class:`ForeignFilesError`) when the
        package did not write it."""
        path = self.path / self._rel(name)
        if not (path.exists() or path.is_symlink()):
            return
        if not self.may_delete(name):
            raise ForeignFilesError(
                f"{path} was not written by sklearn-hemo and would have to be removed (it "
                "would be read back as part of the new output); refusing to delete it. "
                "Remove or move it yourself.")
        path.unlink()
        self.adopt([name])


def claim_folder(folder, command, *, settings=None, overwrite=False, inputs=(),
                 what="out_dir"):
    """Claim ``folder`` as an output folder of ``command``, before any work.

    The one ownership guard of the package (used by the command line and by
    ``save_cohort``, ``import_cohort``, ``make_stroke_cohort``, ``compare_models`` and
    ``write_qc_report``; model bundles apply the same :func:`foreign_files` test to
    their manifest). The folder must not lie inside one of ``inputs``. When it holds
    files the package did not write there (see :func:`foreign_files`), it is refused
    unless ``overwrite``; even then those files are only ever replaced by same-named
    outputs, never deleted (:meth:`OwnedFolder.remove` refuses). With ``settings``, a
    folder written by another command or with other settings is refused too unless
    ``overwrite``. The owner file is written at once (which also proves the folder
    writable).

    Returns
    -------
    owned : OwnedFolder

    Raises
    ------
    OutputError
        Inside an input, not a folder, or not writable.
    ForeignFilesError
        Foreign files and ``overwrite=False``.
    """
    folder = Path(folder)
    foreign = check_folder(folder, command, overwrite=overwrite, inputs=inputs, what=what)
    record = _read_owner(folder) if folder.is_dir() else None
    if settings is not None and record is not None and not overwrite and record["files"]:
        previous = record.get("settings") if record.get("command") == command else None
        if previous != settings:
            prev = previous if isinstance(previous, dict) else {}
            differ = sorted(k for k in set(prev) | set(settings)
                            if prev.get(k) != settings.get(k)) \
                if isinstance(previous, dict) else ["command"]
            raise OutputError(
                f"{what} {folder} holds the results of an earlier run with other settings "
                f"({', '.join(differ) or 'command'} differ). Choose another folder, or pass "
                "--overwrite to replace those results.")
    check_writable_dir(folder, what)
    from ._io import atomic_write_text

    files = {} if record is None else record["files"]
    kept = {name: entry for name, entry in files.items()
            if name not in foreign and (folder / name).is_file()}
    new = {"format": _OWNER_FORMAT, "folder": _folder_identity(folder), "command": command,
           "settings": settings if settings is not None else (
               record.get("settings") if record is not None else None),
           "files": kept}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / OWNER_FILE, json.dumps(new, indent=1, sort_keys=True)
                          + "\n")
    except OSError as exc:
        raise OutputError(f"{what} {folder}: cannot write there ({exc.strerror or exc}). "
                          "Choose a writable folder.") from None
    return OwnedFolder(folder, command, foreign)


def check_folder(folder, command, *, overwrite=False, inputs=(), what="out_dir"):
    """The checks of :func:`claim_folder` without writing anything (no settings)."""
    folder = Path(folder)
    _refuse_inside_inputs(folder, inputs, what, "Choose a folder outside it.")
    if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
        raise OutputError(f"{what} {folder} exists and is not a folder. Choose a folder path.")
    foreign = foreign_files(folder) if folder.is_dir() else []
    if foreign and not overwrite:
        raise ForeignFilesError(
            f"{what} {folder} already holds files that sklearn-hemo {command} did not "
            f"write ({shown_names(foreign)}). Choose a new or empty folder, or pass "
            "overwrite=True (--overwrite) to write over same-named files there (nothing "
            "else is deleted).")
    return foreign


def is_owned(folder, path):
    """Whether file ``path`` (under ``folder``) is recorded in ``folder``'s owner file
    with its current content (or as being written)."""
    record = _read_owner(folder)
    if record is None:
        return False
    rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(folder)).as_posix()
    return _entry_matches(Path(path), record["files"].get(rel))


def remove_if_owned(folder, path):
    """Delete file ``path`` under ``folder`` when the package wrote it; refuse
    (:class:`ForeignFilesError`) when it did not. Nothing happens when it is absent."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if not is_owned(folder, path):
        raise ForeignFilesError(
            f"{path} was not written by sklearn-hemo and would be read back as part of the "
            "new output; refusing to delete it. Remove or move it yourself.")
    path.unlink()


# ------------------------------------------------------------------------ identifiers
def check_participant_id(pid, where=""):
    """Refuse a participant id that cannot safely name a folder, a table row or a link.

    No control or format characters (newline, tab, NUL, bidirectional overrides), no
    path separator, no leading dot, no leading or trailing white space, at most 200
    bytes. Raises :class:`~sklearn_hemo.datasets.CohortError` naming the id.
    """
    import unicodedata

    from .exceptions import CohortError

    problem = None
    if not isinstance(pid, str) or not pid:
        problem = "is empty"
    elif any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in pid):
        problem = "holds a control character (newline, tab, ...)"
    elif "/" in pid or "\\" in pid:
        problem = "holds a path separator"
    elif pid.startswith("."):
        problem = "starts with a dot"
    elif pid != pid.strip():
        problem = "starts or ends with white space"
    elif len(pid.encode("utf-8", "surrogatepass")) > 200:
        problem = "is longer than 200 bytes"
    if problem is not None:
        raise CohortError(
            f"participant id {pid!r}{' (' + str(where) + ')' if where else ''} cannot name "
            f"a folder or a table row: it {problem}. Use ids like 'sub-001' (letters, "
            "digits, '-' and '_').")
    return pid


# ------------------------------------------------------------------------------ JSON
_MAX_INT_DIGITS = 30


def _parse_int(text):
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        # no acquisition parameter is that large: infinite, so that the check of the key
        # (finite, in range) names it, instead of an OverflowError in float() later
        return -math.inf if text.startswith("-") else math.inf
    return int(text)


def read_json_file(path, who=""):
    """The JSON value in ``path``; a :class:`~sklearn_hemo.datasets.CohortError` naming
    the file for anything that is not plain JSON of sane size: invalid text, nesting too
    deep to parse. Integers of more than 30 digits read as infinite (they would overflow
    ``float``), so the check of their key refuses them by name."""
    from .exceptions import CohortError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text, parse_int=_parse_int)
    except RecursionError:
        raise CohortError(f"{who}{path} is nested too deeply to be a sidecar (a damaged or "
                          "forged file). Fix the file.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CohortError(f"{who}{path} is not valid JSON ({exc}). Fix the file.") from None


def check_bundle_folder(path, overwrite, read_manifest):
    """Refuse a model bundle folder ``save_model`` may not write: an existing ``path``
    without ``overwrite`` and, even with it, anything but an intact bundle it wrote.

    The folder is replaced (deleted) only when every file in it is listed in its
    ``manifest.json`` (read by ``read_manifest(path)``, which raises on anything that is
    not a bundle manifest) with the SHA-256 it still has (:func:`foreign_files`, the one
    ownership test): a folder that merely holds a file named ``manifest.json`` (a web
    app, a copied manifest) or a bundle with files added or edited is never deleted.

    Raises
    ------
    FileExistsError
        Naming the folder, the files that are not the bundle's, and the fix.
    """
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise FileExistsError(
            f"{path} already exists; choose another folder or pass overwrite=True.")
    if path.is_symlink() or not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a model bundle folder; refusing to "
                              "replace it. Remove it or choose another folder.")
    try:
        listed = read_manifest(path).get("files")
    except Exception:  # noqa: BLE001 - whatever the reader refuses is no bundle manifest
        listed = None
    if not isinstance(listed, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in listed.items()):
        raise FileExistsError(
            f"{path} exists and is not a model bundle (no valid manifest.json); refusing to "
            "replace it. Remove it or choose another folder.")
    foreign = foreign_files(path, {**listed, "manifest.json": {"pending": True}})
    if foreign:
        raise ForeignFilesError(
            f"{path} holds files that are not part of the model bundle saved there "
            f"({shown_names(foreign)}: not listed in its manifest.json, or changed since); "
            "refusing to replace the folder even with overwrite, which only replaces a "
            "bundle save_model wrote. Move those files, or choose another folder.")


# ----------------------------------------------------------------------------- inputs
def _fail(pid, where, problem, fix):
    from .exceptions import CohortError

    raise CohortError(f"participant {pid}: {where}: {problem} {fix}")


def check_declared_image(pid, path, img):
    """Refuse, from the header alone, images too large to read or of unusable type.

    The declared number of voxels is bounded by the global switch ``max_image_voxels``
    (:func:`sklearn_hemo.set_config`, default :data:`MAX_IMAGE_VOXELS`; checked before
    any voxel is decompressed or allocated); complex, RGB / structured and object voxel
    types are refused.
    """
    shape = tuple(int(n) for n in img.shape)
    if any(n < 0 for n in shape):
        _fail(pid, path, f"declares a negative dimension {shape}.", "Re-export the file.")
    n_voxels = 1
    for n in shape:
        n_voxels *= n  # Python ints: no overflow for forged headers
    limit = switch("max_image_voxels")
    if n_voxels > limit:
        _fail(pid, path, f"declares {shape} = {n_voxels:,} voxels, more than the limit of "
              f"{limit:,} (a damaged or forged header, or not a patient image).",
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
    with config_context(check_on_first_use=True):
        yield


def guard_new_cohort(patients):
    """Called by ``Cohort.__init__``: refuse one folder under two ids; arm the lazy checks
    when running inside :func:`checking_on_first_use`."""
    check_distinct_patients(patients)
    if switch("check_on_first_use"):
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
