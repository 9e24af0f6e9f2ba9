"""Atomic file output: write to a temporary name in the same folder, then rename.

Every file this package writes goes through :func:`atomic_path`, so an interrupted run
never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_file_set", "atomic_path", "atomic_write_text", "atomic_write_bytes",
           "sha256_file", "writes_one_set"]

def sha256_file(path):
    """SHA-256 hex digest of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


UMASK = os.umask(0o022)  # read the process umask once (os.umask can only set it)
os.umask(UMASK)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary file keeps the suffixes of ``path`` (so nibabel and matplotlib pick
    the right format from it) and is removed if the block raises.

    Examples
    --------
    >>> import nibabel as nib, numpy as np
    >>> from sklearn_hemo._io import atomic_path
    >>> with atomic_path("/tmp/example.nii.gz") as tmp:  # doctest: +SKIP
    ...     nib.save(nib.Nifti1Image(np.zeros((2, 2, 2)), np.eye(4)), tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}-", suffix=suffix,
                               dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp creates 0600; outputs get ordinary permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text, encoding="utf-8"):
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_file_set(folder):
    """Write several files into ``folder`` as one set: all of them, or none.

    Yields ``stage(name)``, which returns a temporary path beside ``folder / name`` (same
    suffixes) to write that file to. When the block succeeds every staged file is renamed
    into place; when it raises (a full disk, an interrupt) the staged files are removed
    and the files already in ``folder`` stay as they were, so no mix of old and new
    outputs is left behind. A staged path the block deletes is skipped.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sklearn_hemo._io import atomic_file_set
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_file_set(folder) as stage:
    ...     _ = stage("a.txt").write_text("a")
    ...     _ = stage("b.txt").write_text("b")
    >>> sorted(p.name for p in folder.iterdir())
    ['a.txt', 'b.txt']
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staged = {}

    def stage(name):
        target = folder / name
        suffix = "".join(target.suffixes) or ".tmp"
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name.split('.')[0]}-", suffix=suffix,
                                   dir=target.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~UMASK)
        staged[target] = Path(tmp)
        return Path(tmp)

    try:
        yield stage
    except BaseException:
        for tmp in staged.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for target, tmp in staged.items():  # renames need no disk space: they all succeed
        if tmp.exists():  # a staged file the block removed again is not written
            os.replace(tmp, target)


def writes_one_set(writer):
    """Decorate ``writer(obj, out_dir, ...)`` so that its files land as one set.

    The writer runs against a temporary folder inside ``out_dir``; when it returns, each
    file it wrote is renamed into ``out_dir`` (renames need no disk space), and when it
    raises (a full disk, an interrupt) nothing of its output reaches ``out_dir``: the
    files already there stay as they were instead of becoming a mix of old and new.
    The decorated writer returns the names of the entries it placed in ``out_dir``
    (sorted), unless the writer itself returns something other than None.
    """

    @functools.wraps(writer)
    def wrapper(obj, out_dir, *args, **kwargs):
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
        try:
            result = writer(obj, staging, *args, **kwargs)
            written = []
            for entry in sorted(staging.iterdir()):
                target = out / entry.name
                if entry.is_dir() and target.is_dir():
                    shutil.rmtree(target)
                os.replace(entry, target)
                written.append(entry.name)
            return written if result is None else result
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    return wrapper
