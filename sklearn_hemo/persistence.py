"""Save and load fitted models as bundles that load without executing code from the file.

``pickle`` and ``joblib`` files run arbitrary code when loaded, so a model shared between
sites would have to be trusted as much as a program. A bundle written by
:func:`save_model` is a folder instead::

    model/
      manifest.json          format, library versions, SHA-256 of every other file
      estimator.skops        the scikit-learn object tree (skops), without torch nets
                             and without the cohort
      estimator.json         class, parameters and classes_ of the estimator (to read)
      net-0.json             constructor parameters of each skorch net (JSON)
      net-0.safetensors      its weights (safetensors: tensors only, no code)
      net-0-history.json     its training history (skorch, JSON)

:func:`load_model` checks the manifest (an unlisted file or a changed hash refuses the
bundle), warns when library versions differ, loads the object tree through skops with
an explicit list of trusted types (refusing any other), puts back metadata-routing
requests (kept as JSON: their back-reference to the estimator is a cycle skops cannot
store), rebuilds every skorch net from its JSON parameters, resolving classes and
functions only from an explicit list of trusted names, and loads its weights from
safetensors. No step unpickles anything.

The cohort held by a :class:`~sklearn_hemo.preprocessing.PatchExtractor` is *not* saved
(it is data, often private, and can be large): its place is left empty and
``load_model(path, cohort=...)`` puts a cohort back. A model loaded without a cohort can
still draw risk maps, because :func:`sklearn_hemo.risk.predict_risk_map` points the
extractor at the patient it is given.

Hashes catch a corrupted or edited file, not a forger who rewrites the manifest too; what
keeps a hostile bundle from running code is that nothing in it is ever executed.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import json
import os
import pkgutil
import platform
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._io import UMASK, sha256_file
from ._safety import check_bundle_folder
from .datasets import Cohort
from .exceptions import BundleError, BundleVersionWarning
from .utils._warnings import find_stack_level
from .utils.fixes import HasMethods, validate_params

__all__ = ["BundleError", "BundleVersionWarning", "save_model", "load_model",
           "read_manifest", "default_trusted_types"]

FORMAT = "sklearn-hemo-model"
FORMAT_VERSION = 1
_MANIFEST = "manifest.json"
_ESTIMATOR = "estimator.skops"
_ESTIMATOR_JSON = "estimator.json"
_LIBRARIES = ("sklearn_hemo", "sklearn", "skops", "skorch", "torch", "safetensors", "numpy",
              "scipy")

# Deprecated aliases of renamed public modules (importing one warns).
_DEPRECATED_MODULES = ("sklearn_hemo.maps",)

# Types outside skops' defaults that the model zoo needs, beyond sklearn_hemo's own
# estimators (added at run time by default_trusted_types).
_EXTRA_TRUSTED_TYPES = (
    "sklearn.tree._tree.Tree",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn.utils._bunch.Bunch",
    # with_probabilities: CalibratedClassifierCV's fitted parts
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    # sklearn_hemo estimators under the private module paths of bundles written before
    # 0.2 (those modules were renamed and stay importable as aliases)
    "sklearn_hemo.preprocessing._maps.PerfusionMapExtractor",
)

# Classes and functions a skorch net's constructor parameters may name. The bundle gives
# names; only these are ever imported.
_TRUSTED_NET_CALLABLES = (
    "skorch.classifier.NeuralNetClassifier",
    "skorch.net.NeuralNet",
    "skorch.dataset.Dataset",
    "sklearn_hemo.neural.HemoLSTM",
    "sklearn_hemo.neural.TensorDataset",
    "sklearn_hemo.neural.batch_loader",
    # the same objects under the private path that bundles written before 0.2 name
    "sklearn_hemo._lstm_module.HemoLSTM",
    "sklearn_hemo._lstm_module.TensorDataset",
    "sklearn_hemo._lstm_module.batch_loader",
    "torch.nn.modules.loss.CrossEntropyLoss",
    "torch.nn.modules.loss.NLLLoss",
    "torch.optim.adam.Adam",
    "torch.optim.adamw.AdamW",
    "torch.optim.sgd.SGD",
    "torch.utils.data.dataloader.DataLoader",
)

# Net parameters that only matter while training and cannot be described in JSON; a
# loaded net gets skorch's defaults for them.
_TRAINING_ONLY_NET_PARAMS = ("callbacks", "train_split")


# --------------------------------------------------------------------------- helpers
def _versions():
    found = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            found[name] = importlib.import_module(name).__version__
        except ImportError:  # an optional library: recorded as absent
            found[name] = None
    return found


def _qualname(obj):
    return f"{obj.__module__}.{obj.__qualname__}"


def _json_default(value):
    """JSON for the human-readable estimator.json, which is never read back."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return repr(value)


@validate_params({}, prefer_skip_nested_validation=True)
def default_trusted_types():
    """Types :func:`load_model` lets skops build without being told.

    These are the estimators and transformers defined in sklearn_hemo (found by
    importing the installed package, never read from the bundle) plus the few
    scikit-learn internals the model zoo stores (e.g. ``sklearn.tree._tree.Tree`` for
    random forests). skops trusts plain scikit-learn estimators, numpy and builtins by
    itself.

    Returns
    -------
    types : list of str
        Fully qualified type names.

    Examples
    --------
    >>> from sklearn_hemo.persistence import default_trusted_types
    >>> "sklearn.tree._tree.Tree" in default_trusted_types()
    True
    """
    return sorted(set(_EXTRA_TRUSTED_TYPES) | _own_estimators())


@functools.lru_cache(maxsize=1)
def _own_estimators():
    """Fully qualified names of every estimator class defined in sklearn_hemo."""
    import sklearn_hemo

    names = set()
    for info in pkgutil.walk_packages(sklearn_hemo.__path__, "sklearn_hemo."):
        if info.name in _DEPRECATED_MODULES:  # aliases: importing them warns
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional dependency is missing: nothing there to trust
            continue
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, BaseEstimator)
                    and value.__module__.startswith("sklearn_hemo.")):
                names.add(_qualname(value))
    return frozenset(names)


# ------------------------------------------------------------ walking the object tree
def _is_skorch_net(obj):
    try:
        from skorch import NeuralNet
    except ImportError:  # skorch absent: nothing can be a net
        return False
    return isinstance(obj, NeuralNet)


def _is_cohort(obj):
    from .datasets import Cohort

    return isinstance(obj, Cohort)


def _walks_into(obj):
    """Whether :func:`_detach` looks inside ``obj``: estimators and the plain helper
    objects of scikit-learn and this package (e.g. the fitted ``_CalibratedClassifier``
    that holds a calibrated model)."""
    if isinstance(obj, BaseEstimator):
        return True
    root = type(obj).__module__.split(".")[0]
    return root in ("sklearn", "sklearn_hemo") and hasattr(obj, "__dict__") \
        and not isinstance(obj, type)


def _detach(obj, path, found):
    """Return ``obj`` without what skops cannot or must not store.

    ``found`` collects where each removed piece was: ``"nets"`` (skorch nets, stored
    as JSON + safetensors), ``"cohorts"`` (never stored) and ``"requests"`` (metadata
    routing requests, whose ``owner`` back-reference is a cycle skops cannot follow;
    stored as JSON). Copy on write: an object is shallow-copied (``copy.copy``) only
    when something inside it is removed, so arrays are shared and the original stays
    untouched.
    """
    from .datasets import Patient

    if _is_cohort(obj):
        found["cohorts"].append(path)
        found.setdefault("cohort_objects", []).append(obj)
        return None
    if _is_skorch_net(obj):
        found["nets"].append((path, obj))
        return None
    if isinstance(obj, Patient):
        raise TypeError(
            f"the estimator holds a Patient at {_describe(path)}; bundles do not store "
            "patient data. Hold patients in a Cohort (which is left out and re-attached "
            "by load_model(path, cohort=...)).")
    if _walks_into(obj):
        changes, drop = {}, False
        for name, value in vars(obj).items():
            if name == "_metadata_request" and hasattr(value, "_serialize"):
                found["requests"].append({"path": path, "requests": value._serialize()})
                drop = True
                continue
            new = _detach(value, [*path, ["attr", name]], found)
            if new is not value:
                changes[name] = new
        if not changes and not drop:
            return obj
        obj = copy.copy(obj)
        if drop:
            del obj._metadata_request
        for name, value in changes.items():
            setattr(obj, name, value)
        return obj
    if isinstance(obj, (list, tuple, dict)):
        keyed = obj.items() if isinstance(obj, dict) else enumerate(obj)
        kind = "key" if isinstance(obj, dict) else "item"
        changes = {}
        for key, value in keyed:
            new = _detach(value, [*path, [kind, key]], found)
            if new is not value:
                changes[key] = new
        if not changes:
            return obj
        if isinstance(obj, tuple):
            items = [changes.get(i, v) for i, v in enumerate(obj)]
            return type(obj)._make(items) if hasattr(obj, "_make") else type(obj)(items)
        obj = copy.copy(obj)  # keeps dict / list subclasses (e.g. Bunch)
        for key, value in changes.items():
            obj[key] = value
        return obj
    return obj


def _describe(path):
    parts = []
    for kind, key in path:
        parts.append(f".{key}" if kind == "attr" else f"[{key!r}]")
    return "estimator" + "".join(parts)


def _get_at(root, path):
    target = root
    for kind, key in path:
        target = getattr(target, key) if kind == "attr" else target[key]
    return target


def _restore_requests(estimator, requests):
    """Put back the metadata routing requests (e.g. ``set_fit_request(groups=True)``)."""
    request = estimator._get_metadata_request()
    for method, params in requests.items():
        for param, alias in params.items():
            getattr(request, method).add_request(param=param, alias=alias)
    estimator._metadata_request = request


def _set_at(root, path, value):
    """Set the attribute / item that ``path`` (from :func:`_detach`) names in ``root``."""
    if not path:
        raise BundleError("a bundle cannot hold a bare net or cohort at its root.")
    target = _get_at(root, path[:-1])
    kind, key = path[-1]
    if kind == "attr":
        setattr(target, key, value)
    elif isinstance(target, tuple):
        raise BundleError(f"cannot set {_describe(path)}: it lies inside a tuple.")
    else:
        target[key] = value


def _tuple_free(path):
    """Convert JSON lists back to [kind, key] pairs."""
    return [(kind, key) for kind, key in path]


# --------------------------------------------------------------------- skorch nets
def _net_spec(net):
    """JSON description of a fitted skorch net's constructor parameters."""
    params = {}
    for name, value in net.get_params(deep=False).items():
        if name.startswith("_") or name in _TRAINING_ONLY_NET_PARAMS:
            continue
        params[name] = _encode_param(name, value)
    return {"class": _qualname(type(net)), "params": params}


def _encode_param(name, value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return {"__tuple__" if isinstance(value, tuple) else "__list__":
                [_encode_param(name, v) for v in value]}
    if isinstance(value, type) or callable(value):
        return {"__callable__": _qualname(value)}
    raise TypeError(
        f"cannot store skorch net parameter {name}={value!r} in a bundle: only numbers, "
        "strings, lists and classes/functions are supported. Set it through the "
        "estimator's own parameters instead.")


def _decode_param(value, trusted):
    if isinstance(value, dict):
        if "__callable__" in value:
            return _resolve(value["__callable__"], trusted)
        if "__tuple__" in value:
            return tuple(_decode_param(v, trusted) for v in value["__tuple__"])
        if "__list__" in value:
            return [_decode_param(v, trusted) for v in value["__list__"]]
        raise BundleError(f"malformed net parameter {value!r}.")
    return value


def _resolve(name, trusted):
    if name not in trusted:
        raise BundleError(
            f"the bundle names {name!r}, which is not a trusted class or function. If you "
            f"trust it, pass load_model(..., trusted=[{name!r}]).")
    module_name, _, attr = name.rpartition(".")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _save_net(net, folder, key):
    import torch

    spec_name, weights_name, history_name = (f"{key}.json", f"{key}.safetensors",
                                             f"{key}-history.json")
    (folder / spec_name).write_text(json.dumps(_net_spec(net), indent=2), encoding="utf-8")
    # safetensors refuses tensors that share memory or live off the CPU; a contiguous CPU
    # copy of the state dict is what any device can read back.
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous().clone()
             for k, v in net.module_.state_dict().items() if isinstance(v, torch.Tensor)}
    save_file(state, str(folder / weights_name))
    net.save_params(f_history=str(folder / history_name))
    return {"spec": spec_name, "weights": weights_name, "history": history_name}


def _load_net(folder, files, trusted):
    import torch
    from safetensors.torch import load_file

    spec = json.loads((folder / files["spec"]).read_text(encoding="utf-8"))
    net_class = _resolve(spec["class"], trusted)
    params = {k: _decode_param(v, trusted) for k, v in spec["params"].items()}
    device = params.get("device", "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        params["device"] = "cpu"  # a GPU-trained model predicts on a CPU-only machine
    net = net_class(**params)
    # initialize() draws random initial weights; fork so the caller's RNG is untouched.
    with torch.random.fork_rng(devices=[]):
        net.initialize()
    state = load_file(str(folder / files["weights"]), device=str(params.get("device", "cpu")))
    net.module_.load_state_dict(state)
    net.load_params(f_history=str(folder / files["history"]))
    return net


# --------------------------------------------------------------------------- saving
@validate_params(
    {
        # whether it is fitted, and what it holds, is checked by the function
        "estimator": [HasMethods(["fit", "get_params"])],
        "path": [str, os.PathLike],
        "overwrite": ["boolean"],
        "metadata": [dict, None],  # and JSON-serialisable, checked by the function
    },
    prefer_skip_nested_validation=True,
)
def save_model(estimator, path, *, overwrite=False, metadata=None):
    """Save a fitted estimator as a bundle folder that loads without running its code.

    Parameters
    ----------
    estimator : fitted estimator
        Typically a :class:`~sklearn.pipeline.Pipeline` whose first step is a
        :class:`~sklearn_hemo.preprocessing.PatchExtractor`; its cohort is not saved.
        skorch nets anywhere in the estimator (e.g.
        :class:`~sklearn_hemo.neural.LSTMClassifier`'s ``net_``) are stored as JSON
        parameters plus safetensors weights (the optimizer state is not kept: resuming
        training from a bundle restarts Adam).
    path : path-like
        The bundle folder to create. It is written under a temporary name beside it and
        renamed into place, so an interrupted save leaves no half-written bundle.
    overwrite : bool, default=False
        Replace an existing bundle at ``path``; otherwise an existing ``path`` is an
        error. Only an intact bundle is replaced: a folder holding any file its
        ``manifest.json`` does not list with that SHA-256 (files of yours, a copied
        manifest) is refused even with ``overwrite=True``.
    metadata : dict or None, default=None
        JSON-serialisable provenance (training data, parameters, ...) stored in the
        manifest under ``"metadata"``; read it back with :func:`read_manifest`.

    Returns
    -------
    path : pathlib.Path
        The bundle folder.

    See Also
    --------
    load_model : Load a bundle.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn_hemo.persistence import load_model, save_model
    >>> clf = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    >>> folder = save_model(clf, "/tmp/sklearn-hemo-doc-model", overwrite=True)
    >>> load_model(folder).predict([[0.9]])
    array([1])
    """
    import skops.io as sio

    check_is_fitted(estimator)
    try:
        metadata = json.loads(json.dumps(metadata if metadata is not None else {}))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serialisable: {exc}") from None
    path = Path(path)
    check_bundle_folder(path, overwrite, _read_manifest)  # never a folder of other files
    found = {"nets": [], "cohorts": [], "requests": [], "cohort_objects": []}
    detached = _detach(estimator, [], found)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        # mkdtemp creates 0700: a bundle shared with colleagues gets ordinary permissions
        os.chmod(tmp, 0o777 & ~UMASK)
        sio.dump(detached, tmp / _ESTIMATOR)
        (tmp / _ESTIMATOR_JSON).write_text(json.dumps({
            "class": _qualname(type(estimator)),
            "params": detached.get_params(deep=False),
            "classes_": getattr(estimator, "classes_", None),
        }, indent=2, default=_json_default), encoding="utf-8")
        net_records = []
        for i, (net_path, net) in enumerate(found["nets"]):
            files = _save_net(net, tmp, f"net-{i}")
            net_records.append({"path": net_path, **files})
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "estimator": _qualname(type(estimator)),
            "versions": _versions(),
            "nets": net_records,
            "cohort_paths": found["cohorts"],
            # which cohort the voxel references of the held cohort(s) point into
            "cohort_fingerprints": [_cohort_fingerprint(c) for c in found["cohort_objects"]],
            "metadata_requests": found["requests"],
            "metadata": metadata,
            "files": {p.name: sha256_file(p) for p in sorted(tmp.iterdir())},
        }
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        for file in tmp.iterdir():  # some writers (safetensors) create files 0600
            os.chmod(file, 0o666 & ~UMASK)
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _swap_into_place(tmp, path):
    """Rename folder ``tmp`` to ``path``, replacing an existing bundle there."""
    if not path.exists():
        os.replace(tmp, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}-old-", dir=path.parent))
    os.replace(path, old / "bundle")
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old / "bundle", path)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


# -------------------------------------------------------------------------- loading
def _read_manifest(path):
    if not path.is_dir():
        raise BundleError(f"{path} is not a model bundle folder (see save_model).")
    if (path / _MANIFEST).is_symlink():
        raise BundleError(f"{path / _MANIFEST} is a symbolic link; a bundle is read only "
                          "from regular files inside it. Re-save the model.")
    try:
        manifest = json.loads((path / _MANIFEST).read_text(encoding="utf-8"))
    except RecursionError:
        raise BundleError(f"{path / _MANIFEST} is nested too deeply to be a manifest; the "
                          "bundle is damaged or forged. Re-save the model.") from None
    except FileNotFoundError:
        raise BundleError(
            f"{path} has no {_MANIFEST}: it is not a model bundle written by save_model."
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path / _MANIFEST} is not valid JSON ({exc}).") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path / _MANIFEST} does not describe a {FORMAT} bundle.")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path} uses bundle format version {manifest.get('format_version')!r}; this "
            f"sklearn-hemo reads version {FORMAT_VERSION}. Load it with the sklearn-hemo "
            "version that wrote it (see versions in manifest.json).")
    return manifest


@validate_params({"path": [str, os.PathLike]}, prefer_skip_nested_validation=True)
def read_manifest(path):
    """The manifest of a bundle: format, library versions, file hashes, metadata.

    Reads ``manifest.json`` only (JSON, nothing executed); use it to see what a bundle
    holds and how it was trained before loading it.

    Parameters
    ----------
    path : path-like
        The bundle folder.

    Returns
    -------
    manifest : dict
        With keys ``format``, ``format_version``, ``created``, ``estimator``,
        ``versions``, ``files``, ``nets``, ``cohort_paths``, ``metadata_requests`` and
        ``metadata``.

    Examples
    --------
    >>> from sklearn_hemo.persistence import read_manifest
    >>> read_manifest("models/lstm")["metadata"]["model"]  # doctest: +SKIP
    'lstm-pwi+aif+dwi'
    """
    return _read_manifest(Path(path))


def _verify_files(path, manifest):
    listed = manifest.get("files")
    if not isinstance(listed, dict) or _ESTIMATOR not in listed:
        raise BundleError(f"{path / _MANIFEST} lists no files; the bundle is damaged.")
    for entry in path.iterdir():
        # a link could make a checked name read a file outside the bundle
        if entry.is_symlink() or not entry.is_file():
            raise BundleError(
                f"{entry} is {'a symbolic link' if entry.is_symlink() else 'not a file'}; "
                "a bundle is read only from regular files inside it. Refusing to load it; "
                "re-save the model.")
    present = {p.name for p in path.iterdir()} - {_MANIFEST}
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise BundleError(
            f"{path} holds files its manifest does not list: {unlisted}. The bundle was "
            "modified after saving; refusing to load it. Re-save the model.")
    for name, expected in listed.items():
        file = path / name
        if Path(name).name != name or not file.is_file():
            raise BundleError(f"{path} is missing {name!r}, listed in its manifest.")
        if sha256_file(file) != expected:
            raise BundleError(
                f"{file} does not match the SHA-256 recorded in {_MANIFEST}: the bundle "
                "was tampered with or corrupted; refusing to load it. Re-save the model.")


def _warn_versions(path, manifest):
    saved = manifest.get("versions") or {}
    current = _versions()
    differ = [f"{name} {saved.get(name)} (saved) vs {current.get(name)} (here)"
              for name in sorted(set(saved) | set(current))
              if saved.get(name) != current.get(name)]
    if differ:
        warnings.warn(
            f"model bundle {path} was saved with other library versions: "
            + "; ".join(differ) + ". Predictions may differ; re-save the model with these "
            "versions once checked.", BundleVersionWarning, stacklevel=find_stack_level())


@validate_params(
    {
        "path": [str, os.PathLike],
        "cohort": [Cohort, None],
        "trusted": [list, tuple, set, None],  # names, never one string split into letters
    },
    prefer_skip_nested_validation=True,
)
def load_model(path, cohort=None, *, trusted=None):
    """Load a bundle written by :func:`save_model`, without executing code from it.

    Parameters
    ----------
    path : path-like
        The bundle folder.
    cohort : :class:`~sklearn_hemo.datasets.Cohort` or None, default=None
        Put back where the saved estimator held a cohort (the ``cohort`` of each
        PatchExtractor), so that ``predict_proba`` on voxel references of this cohort
        works again. Leave None to draw risk maps only:
        :func:`sklearn_hemo.risk.predict_risk_map` supplies the patient itself.
    trusted : list of str or None, default=None
        Extra fully qualified type or function names to trust, beyond
        :func:`default_trusted_types` and the classes a skorch net of this package
        needs. Anything else the bundle names makes loading fail.

    Returns
    -------
    estimator : fitted estimator
        Predicts as the saved one did.

    Raises
    ------
    BundleError
        The folder is not a bundle, a file is missing, unlisted or changed since saving,
        the bundle names types that are not trusted, or ``cohort`` is not the cohort
        the estimator held when saved (its ids in order and image shapes, stored as a
        fingerprint in the manifest): voxel references would point at other voxels.

    Warns
    -----
    BundleVersionWarning
        The bundle was saved with other versions of Python, sklearn-hemo, scikit-learn,
        skops, skorch, torch, safetensors, numpy or scipy.

    Examples
    --------
    >>> from sklearn_hemo.persistence import load_model
    >>> model = load_model("models/lstm", cohort=cohort)  # doctest: +SKIP
    """
    from .datasets import Cohort

    if cohort is not None and not isinstance(cohort, Cohort):
        raise TypeError(f"cohort must be a Cohort or None, got {type(cohort).__name__}.")
    path = Path(path)
    try:
        return _load(path, cohort, trusted)
    except BundleError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a forged file provokes
        raise BundleError(
            f"{path} cannot be loaded as a model bundle ({type(exc).__name__}: {exc}). It "
            "is damaged or was modified after saving; re-save the model.") from exc


def _unrestored_nets(obj, seen=None):
    """Places in a loaded estimator that should hold a skorch net but hold None."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    missing = []
    if _walks_into(obj):
        for name, value in vars(obj).items():
            if name == "net_" and value is None:
                missing.append(type(obj).__name__)
            else:
                missing += _unrestored_nets(value, seen)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            missing += _unrestored_nets(value, seen)
    elif isinstance(obj, dict):
        for value in obj.values():
            missing += _unrestored_nets(value, seen)
    return missing


def _load(path, cohort, trusted):
    import skops.io as sio

    manifest = _read_manifest(path)
    _verify_files(path, manifest)
    _warn_versions(path, manifest)
    nets = manifest.get("nets", [])
    if not isinstance(nets, list) or not all(isinstance(r, dict) for r in nets):
        raise BundleError(f"{path / _MANIFEST}: 'nets' is not a list of records; the bundle "
                          "is damaged or forged. Re-save the model.")
    extra = set(trusted or ())
    allowed = set(default_trusted_types()) | extra
    untrusted = sio.get_untrusted_types(file=path / _ESTIMATOR)
    refused = sorted(set(untrusted) - allowed)
    if refused:
        raise BundleError(
            f"{path / _ESTIMATOR} contains types that are not trusted: {refused}. Loading "
            "them could run code. If you trust their source, pass "
            f"load_model(..., trusted={refused!r}).")
    estimator = sio.load(path / _ESTIMATOR, trusted=list(untrusted))
    net_trusted = set(_TRUSTED_NET_CALLABLES) | extra
    for record in nets:
        # only files whose hashes were just verified may be read (no path outside the bundle)
        stray = [record.get(k) for k in ("spec", "weights", "history")
                 if record.get(k) not in manifest["files"]]
        if stray:
            raise BundleError(
                f"{path / _MANIFEST} names network files it does not list with a hash: "
                f"{stray}. The bundle was modified after saving; refusing to load it.")
        _set_at(estimator, _tuple_free(record["path"]),
                _load_net(path, record, net_trusted))
    for record in manifest.get("metadata_requests", []):
        _restore_requests(_get_at(estimator, _tuple_free(record["path"])),
                          record["requests"])
    missing = _unrestored_nets(estimator)
    if missing:
        raise BundleError(
            f"{path / _MANIFEST} lists {len(nets)} network(s) but the estimator holds "
            f"{len(missing) + len(nets)} ({', '.join(missing)} without its net_): the "
            "manifest was edited. Refusing to load a model that cannot predict; re-save it.")
    if cohort is not None and manifest.get("cohort_paths"):
        _check_cohort(path, manifest, cohort)
        for cohort_path in manifest.get("cohort_paths", []):
            _set_at(estimator, _tuple_free(cohort_path), cohort)
    return estimator


def _cohort_fingerprint(cohort):
    """What a voxel reference of ``cohort`` depends on: the ids in order and each PWI's
    shape (headers only). Stored in a bundle so that :func:`load_model` can refuse to
    attach another cohort."""
    items = [[patient.id, [int(n) for n in patient.pwi.shape]] for patient in cohort]
    digest = hashlib.sha256(json.dumps(items).encode()).hexdigest()
    return {"n_patients": len(items), "first_ids": [i for i, _ in items[:3]],
            "sha256": digest}


def _check_cohort(path, manifest, cohort):
    """BundleError when ``cohort`` is not the cohort the bundle's estimator held."""
    saved = manifest.get("cohort_fingerprints")
    if not isinstance(saved, list) or not saved:
        return  # a bundle written before fingerprints were stored
    given = _cohort_fingerprint(cohort)
    if all(isinstance(f, dict) and f.get("sha256") == given["sha256"] for f in saved):
        return
    first = saved[0] if isinstance(saved[0], dict) else {}
    raise BundleError(
        f"the cohort given to load_model is not the one the model in {path} was trained "
        f"with (saved: {first.get('n_patients')} patients starting "
        f"{first.get('first_ids')}; given: {given['n_patients']} patients starting "
        f"{given['first_ids']}, or other image shapes): its voxel references would point at "
        "other patients' voxels. Pass the training cohort, or load without a cohort and "
        "map new patients with sklearn_hemo.risk.predict_risk_map.")
