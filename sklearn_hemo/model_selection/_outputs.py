"""Every file of a comparison, as one set: the tables and figures of
:func:`~._report.write_outputs`, the whole-brain files of ``volumes=True``
(:mod:`._volumes`) and, last, ``report.html`` (:mod:`._html_report`), which shows them.

A module of its own so that ``_report`` (which the other two import) imports neither.
"""

from __future__ import annotations

from .._io import atomic_write_text, writes_one_set
from ._html_report import write_report
from ._report import write_outputs
from ._volumes import whole_brain_files


@writes_one_set  # all the files, or (on a failure part-way) none of them
def write_all_outputs(result, out_dir, plot=True, volumes=True, report=True):
    """Write the comparison's files into ``out_dir`` as one set, ``report.html`` last.

    ``volumes=False`` leaves out the whole-brain files; ``report=False`` the report.
    Returns the names of the files written (sorted).
    """
    # the undecorated writer: it writes into this call's staging folder
    write_outputs.__wrapped__(result, out_dir, plot=plot, volumes=volumes)
    if volumes:
        for name, text in whole_brain_files(result).items():
            atomic_write_text(out_dir / name, text)
    if report:
        write_report(result, out_dir, plot=plot, volumes=volumes)
