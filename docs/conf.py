"""Sphinx configuration of the sklearn-hemo documentation.

Build with ``make -C docs html`` (or ``python -m sphinx -W -b html docs docs/_build/html``).
The build is offline: no intersphinx inventories are fetched, so cross-references to
numpy / scikit-learn are written as plain text.
"""

import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Import the package from this checkout even when it is not installed.
sys.path.insert(0, str(HERE.parent))
# Local Sphinx helpers (the gallery order).
sys.path.insert(0, str(HERE / "sphinxext"))

# Plots in the gallery render off-screen; the examples stay at their documented size.
os.environ.setdefault("MPLBACKEND", "Agg")
# A parallel build or a search inside an example must not oversubscribe the machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import sklearn_hemo

project = "sklearn-hemo"
author = "sklearn-hemo developers"
copyright = "sklearn-hemo developers, BSD-3-Clause"
release = sklearn_hemo.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "**/sg_execution_times.rst",
]
default_role = "literal"
nitpicky = False

# -- autodoc / autosummary / numpydoc ----------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"
# numpydoc renders the members table itself; autosummary stubs do not list them again.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Docstring completeness (an Examples section on every public name) is checked by
# tests/test_examples.py::test_public_docstrings_have_examples, not here, so that one
# missing section cannot fail the whole build.
numpydoc_validation_checks = set()

# No network at build time: intersphinx stays off.
intersphinx_mapping = {}



# A fitted-attribute name inside a shape, as in ``ndarray of shape (n_features_in_,)``,
# would be read by docutils as a link target ("name_"); render it literally instead.
_SHAPE_NAME = re.compile(r"(?<![`\w])([A-Za-z]\w*_)(?=\s*[,)])")


def _quote_shape_names(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        if "shape" in line:
            lines[i] = _SHAPE_NAME.sub(r"``\1``", line)


def _skip_routing_methods(app, what, name, obj, skip, options):
    """Hide scikit-learn's generated ``set_*_request`` methods (documented upstream)."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def _write_cli_help(app):
    """Write ``sklearn-hemo [COMMAND] --help`` into generated/ for the CLI page.

    The page then shows the real options of the installed command, never a stale copy.
    """
    import contextlib
    import io

    from sklearn_hemo.cli import main

    out = HERE / "generated"
    out.mkdir(exist_ok=True)
    os.environ["COLUMNS"] = "92"  # argparse wraps to the terminal width
    for command in ["", "simulate", "import", "compare", "train", "predict"]:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
            main(([command] if command else []) + ["--help"])
        name = f"cli_{command or 'main'}.txt"
        text = buffer.getvalue()
        target = out / name
        if not target.exists() or target.read_text() != text:
            target.write_text(text)


def setup(app):
    app.connect("builder-inited", _write_cli_help)
    app.connect("autodoc-skip-member", _skip_routing_methods)
    app.connect("autodoc-process-docstring", _quote_shape_names)


# -- sphinx-gallery ------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "gallery_order.GalleryOrder",
    "backreferences_dir": "gen_modules/backreferences",
    "doc_module": ("sklearn_hemo",),
    "reference_url": {"sklearn_hemo": None},
    "abort_on_example_error": True,
    "remove_config_comments": True,
    "plot_gallery": "True",
    "min_reported_time": 1,
    "show_memory": False,
    "matplotlib_animations": False,
    "write_computation_times": True,
    "download_all_examples": False,
}

# -- HTML ----------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-hemo {release}"
html_static_path = []
html_theme_options = {
    "navbar_end": ["navbar-icon-links"],
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_show_sourcelink = False
