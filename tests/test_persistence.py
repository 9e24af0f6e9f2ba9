"""Safe model bundles: save_model / load_model (sklearn_hemo.persistence)."""

import contextlib
import json
import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from sklearn_hemo.discriminant import SRKDAClassifier
from sklearn_hemo.neural import LSTMClassifier
from sklearn_hemo.persistence import (
    BundleError,
    BundleVersionWarning,
    load_model,
    read_manifest,
    save_model,
)


@contextlib.contextmanager
def pickle_disabled(monkeypatch):
    """Any unpickling (pickle, torch.load, joblib.load) raises inside the block."""

    def refuse(*args, **kwargs):
        raise AssertionError("a bundle must load without unpickling anything")

    with monkeypatch.context() as m:
        for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"),
                             (torch, "load"), (joblib, "load")):
            m.setattr(module, name, refuse)
        yield


def _data(n=120, n_features=12, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    y = (X[:, :3].sum(axis=1) > 0).astype(int)
    return X, y


@pytest.fixture(scope="module")
def lstm_pipeline():
    X, y = _data()
    model = make_pipeline(StandardScaler(),
                          LSTMClassifier(hidden_size=4, max_epochs=2, random_state=0))
    return model.fit(X, y), X


@pytest.fixture(scope="module")
def classic_pipeline():
    X, y = _data()
    model = make_pipeline(StandardScaler(), SRKDAClassifier(random_state=0))
    return model.fit(X, y), X


def _load_quietly(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BundleVersionWarning)
        return load_model(path, **kwargs)


def test_lstm_round_trip_without_pickle(lstm_pipeline, tmp_path, monkeypatch):
    model, X = lstm_pipeline
    path = save_model(model, tmp_path / "lstm")
    with pickle_disabled(monkeypatch):
        loaded = _load_quietly(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    assert len(loaded[-1].net_.history) == len(model[-1].net_.history)
    # the original is untouched by saving
    assert model[-1].net_ is not None


def test_classic_round_trip_without_pickle(classic_pipeline, tmp_path, monkeypatch):
    model, X = classic_pipeline
    path = save_model(model, tmp_path / "srkda")
    with pickle_disabled(monkeypatch):
        loaded = _load_quietly(path)
    np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))


def test_random_forest_needs_its_trusted_tree_type(tmp_path, monkeypatch):
    X, y = _data()
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    with pickle_disabled(monkeypatch):
        loaded = _load_quietly(save_model(forest, tmp_path / "forest"))
    np.testing.assert_array_equal(loaded.predict_proba(X), forest.predict_proba(X))


def test_bundle_has_no_pickle_and_records_versions(lstm_pipeline, tmp_path):
    model, _ = lstm_pipeline
    path = save_model(model, tmp_path / "m", metadata={"model": "tiny"})
    names = sorted(p.name for p in path.iterdir())
    assert names == ["estimator.json", "estimator.skops", "manifest.json", "net-0-history.json",
                     "net-0.json", "net-0.safetensors"]
    for file in path.iterdir():
        assert file.suffix not in (".pkl", ".pickle", ".joblib", ".pt", ".pth")
        assert not file.read_bytes().startswith(b"\x80")  # pickle protocol 2+ magic
    manifest = read_manifest(path)
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["metadata"] == {"model": "tiny"}
    assert set(manifest["files"]) == set(names) - {"manifest.json"}
    params = json.loads((path / "estimator.json").read_text())
    assert params["classes_"] == [0, 1]
    assert json.loads((path / "net-0.json").read_text())["params"]["module__hidden_size"] == 4


def test_tampered_bundle_is_refused(classic_pipeline, tmp_path):
    model, _ = classic_pipeline
    path = save_model(model, tmp_path / "m")
    data = bytearray((path / "estimator.skops").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "estimator.skops").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="tampered"):
        load_model(path)


def test_extra_and_missing_files_are_refused(lstm_pipeline, tmp_path):
    model, _ = lstm_pipeline
    path = save_model(model, tmp_path / "m")
    (path / "evil.pkl").write_bytes(pickle.dumps(1))
    with pytest.raises(BundleError, match=r"does not list.*evil\.pkl"):
        load_model(path)
    (path / "evil.pkl").unlink()
    (path / "net-0.safetensors").unlink()
    with pytest.raises(BundleError, match="missing 'net-0.safetensors'"):
        load_model(path)
    (path / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_model(path)


def test_network_files_outside_the_hashed_list_are_refused(lstm_pipeline, tmp_path):
    model, _ = lstm_pipeline
    path = save_model(model, tmp_path / "m")
    outside = tmp_path / "elsewhere.json"
    outside.write_text((path / "net-0.json").read_text())
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["nets"][0]["spec"] = str(outside)  # a name the hash check never saw
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="does not list with a hash"):
        load_model(path)


def test_version_mismatch_warns(classic_pipeline, tmp_path):
    model, X = classic_pipeline
    path = save_model(model, tmp_path / "m")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["versions"]["sklearn"] = "0.0.1"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(BundleVersionWarning, match=r"sklearn 0\.0\.1 \(saved\)"):
        loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def _untrusted_function(X):
    return X


def test_untrusted_types_are_refused_unless_trusted(tmp_path):
    X, y = _data()
    model = make_pipeline(FunctionTransformer(_untrusted_function),
                          SRKDAClassifier(random_state=0)).fit(X, y)
    path = save_model(model, tmp_path / "m")
    with pytest.raises(BundleError, match="_untrusted_function"):
        load_model(path)
    name = f"{__name__}._untrusted_function"
    loaded = _load_quietly(path, trusted=[name])
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_untrusted_net_class_is_refused(lstm_pipeline, tmp_path):
    model, _ = lstm_pipeline
    path = save_model(model, tmp_path / "m")
    spec_file = path / "net-0.json"
    spec = json.loads(spec_file.read_text())
    spec["params"]["module"] = {"__callable__": "os.system"}
    spec_file.write_text(json.dumps(spec))
    # rehash so that only the trust check stands between the file and an import
    manifest = json.loads((path / "manifest.json").read_text())
    import hashlib

    manifest["files"]["net-0.json"] = hashlib.sha256(spec_file.read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="'os.system', which is not a trusted"):
        load_model(path)


def test_save_refuses_to_overwrite_by_default(classic_pipeline, tmp_path):
    model, X = classic_pipeline
    path = save_model(model, tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model(model, path)
    save_model(model, path, overwrite=True)
    assert _load_quietly(path).predict(X).shape == (len(X),)
    other = tmp_path / "not-a-bundle"
    other.mkdir()
    with pytest.raises(FileExistsError, match="not a model bundle"):
        save_model(model, other, overwrite=True)
    # nothing half-written is left beside the bundles
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "not-a-bundle"]


def test_unfitted_estimator_is_refused(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        save_model(SRKDAClassifier(), tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("kind", ["lstm", "classic"])
def test_patch_pipeline_bundle_leaves_the_cohort_out(kind, tiny_cohort, tmp_path, monkeypatch):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from sklearn_hemo.preprocessing import PatchExtractor
    from sklearn_hemo.risk import predict_risk_map
    from sklearn_hemo.sampling import sample_voxels

    # all 6 HT voxels of the tiny cohort and 6 others: enough for a round trip
    X, y, _ = sample_voxels(tiny_cohort, n_samples=12, random_state=0)
    model = (LSTMClassifier("pwi+aif", n_timepoints=8, hidden_size=3, max_epochs=1,
                            random_state=0) if kind == "lstm"
             else LogisticRegression(max_iter=300))
    pipe = Pipeline([("features", PatchExtractor(tiny_cohort, inputs="pwi+aif",
                                                 n_timepoints=8)),
                     ("scale", StandardScaler()), ("model", model)]).fit(X, y)
    path = save_model(pipe, tmp_path / kind)
    assert pipe.named_steps["features"].cohort is tiny_cohort  # saving leaves it in place
    assert read_manifest(path)["cohort_paths"] == [
        [["attr", "steps"], ["item", 0], ["item", 1], ["attr", "cohort"]]]
    with pickle_disabled(monkeypatch):
        bare = _load_quietly(path)
        attached = _load_quietly(path, cohort=tiny_cohort)
    assert bare.named_steps["features"].cohort is None
    assert bare.named_steps["features"].get_params()["n_timepoints"] == 8
    np.testing.assert_array_equal(attached.predict_proba(X), pipe.predict_proba(X))
    # a bundle without its cohort still maps a patient handed to it
    np.testing.assert_array_equal(
        np.asarray(predict_risk_map(bare, tiny_cohort[0]).dataobj),
        np.asarray(predict_risk_map(pipe, 0).dataobj))


def test_metadata_routing_requests_survive(tmp_path):
    import sklearn

    X, y = _data(n=40)
    with sklearn.config_context(enable_metadata_routing=True):
        model = LSTMClassifier(hidden_size=2, max_epochs=1, random_state=0)
        model.set_fit_request(groups=True)
    model.fit(X, y)
    loaded = _load_quietly(save_model(model, tmp_path / "m"))
    assert loaded.get_metadata_routing().consumes("fit", ["groups"]) == {"groups"}
    fresh = LSTMClassifier()
    if fresh._get_metadata_request().fit.owner is fresh:
        assert loaded._metadata_request.fit.owner is loaded
    else:  # scikit-learn < 1.8 names the owner by its class
        assert loaded._metadata_request.fit.owner == "LSTMClassifier"
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_nets_nested_in_helper_objects(tmp_path):
    from sklearn.calibration import CalibratedClassifierCV

    X, y = _data(n=60, n_features=6)
    model = CalibratedClassifierCV(LSTMClassifier(hidden_size=2, max_epochs=1,
                                                  random_state=0), cv=2).fit(X, y)
    path = save_model(model, tmp_path / "m")
    assert len(read_manifest(path)["nets"]) == 2  # one per calibration fold
    loaded = _load_quietly(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert all(c.estimator.net_ is not None for c in model.calibrated_classifiers_)


def test_bundle_folder_gets_ordinary_permissions(classic_pipeline, tmp_path):
    # mkdtemp makes the temporary folder 0700; a shared model must stay readable by others
    import os
    import stat

    from sklearn_hemo._io import UMASK

    path = save_model(classic_pipeline[0], tmp_path / "m")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777 & ~UMASK


# -- class paths recorded in bundles (renamed private modules, issue 18) ----------------
def _rewrite_bundle_file(path, name, edit):
    """Rewrite one file of a bundle with ``edit(bytes) -> bytes`` and re-hash it in the
    manifest, as if an older version of the package had written it that way."""
    import hashlib

    target = path / name
    target.write_bytes(edit(target.read_bytes()))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256(target.read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_new_bundles_name_the_public_lstm_path(lstm_pipeline, tmp_path):
    model, _ = lstm_pipeline
    path = save_model(model, tmp_path / "m")
    spec = json.loads((path / "net-0.json").read_text())
    assert spec["params"]["module"] == {"__callable__": "sklearn_hemo.neural.HemoLSTM"}
    for name in ("net-0.json", "estimator.json", "manifest.json"):
        assert "_lstm_module" not in (path / name).read_text(), name


def test_bundle_naming_the_old_private_lstm_path_loads(lstm_pipeline, tmp_path, monkeypatch):
    from sklearn_hemo.neural import HemoLSTM

    model, X = lstm_pipeline
    path = save_model(model, tmp_path / "m")
    _rewrite_bundle_file(path, "net-0.json", lambda text: text.replace(
        b"sklearn_hemo.neural.", b"sklearn_hemo._lstm_module."))
    spec = json.loads((path / "net-0.json").read_text())
    assert spec["params"]["module"] == {"__callable__": "sklearn_hemo._lstm_module.HemoLSTM"}
    with pickle_disabled(monkeypatch):
        loaded = _load_quietly(path)
    assert isinstance(loaded[-1].net_.module_, HemoLSTM)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_bundle_naming_the_old_perfusion_feature_module_loads(tiny_cohort, tmp_path):
    import io
    import zipfile

    from sklearn_hemo.preprocessing import PerfusionMapExtractor

    X = np.array([[0, 5, 5, 0], [1, 6, 6, 1]])
    path = save_model(PerfusionMapExtractor(tiny_cohort).fit(X), tmp_path / "m")

    def old_paths(data):
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
            for item in src.infolist():
                content = src.read(item.filename)
                if item.filename == "schema.json":
                    assert b"preprocessing._perfusion_features" in content
                    content = content.replace(b"preprocessing._perfusion_features",
                                              b"preprocessing._maps")
                dst.writestr(item, content)
        return out.getvalue()

    _rewrite_bundle_file(path, "estimator.skops", old_paths)
    loaded = _load_quietly(path, cohort=tiny_cohort)
    assert type(loaded) is PerfusionMapExtractor
    assert loaded.get_params(deep=False).keys() == PerfusionMapExtractor().get_params().keys()
