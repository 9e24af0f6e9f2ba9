"""Tests for sklearn_hemo.neural.LSTMClassifier (issue 4)."""

import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from sklearn import config_context
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_hemo._lstm_module import expected_feature_names
from sklearn_hemo.neural import BlockScaler, LSTMClassifier

MODES = ["pwi", "pwi+aif", "pwi+dwi", "pwi+aif+dwi"]

# Small, fast settings that still learn; torch_num_threads=1 keeps the tests from
# competing for the shared cores.
FAST = dict(hidden_size=8, batch_size=16, lr=0.05, max_epochs=4, torch_num_threads=1)


def make_sequences(n, n_timepoints, seed, inputs="pwi+aif+dwi"):
    """A learnable task in the PatchExtractor layout: the bolus peaks later for class 1."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 2, n)
    t = np.arange(n_timepoints)
    peak = np.where(y == 1, 0.5, 0.25) * n_timepoints + rng.normal(0, 0.5, n)
    curve = np.exp(-0.5 * ((t[None, :] - peak[:, None]) / 1.5) ** 2)
    parts = [(curve[:, :, None] + rng.normal(0, 0.3, (n, n_timepoints, 9))).reshape(n, -1)]
    if "aif" in inputs:
        aif = np.exp(-0.5 * ((t - 0.2 * n_timepoints) / 1.5) ** 2)
        parts.append(aif[None, :] + rng.normal(0, 0.05, (n, n_timepoints)))
    if "dwi" in inputs:
        parts.append(rng.normal(0, 1, (n, 18)))
    return np.hstack(parts).astype(np.float32), y


@pytest.mark.parametrize("inputs, step_features, dense_in", [
    ("pwi", 9, 60), ("pwi+aif", 10, 60), ("pwi+dwi", 9, 78), ("pwi+aif+dwi", 10, 78),
])
def test_mode_shapes_follow_the_paper(inputs, step_features, dense_in):
    X, y = make_sequences(8, 60, 0, inputs)
    clf = LSTMClassifier(inputs=inputs, max_epochs=1, torch_num_threads=1, random_state=0)
    clf.fit(X, y)
    module = clf.net_.module_
    assert module.lstm.input_size == step_features
    assert module.lstm.hidden_size == 60
    first_dense = next(m for m in module.head if isinstance(m, torch.nn.Linear))
    assert first_dense.in_features == dense_in == module.dense_in_features
    assert clf.predict_proba(X).shape == (8, 2)


def test_dense_head_bidirectional_and_hidden_layers():
    X, y = make_sequences(8, 5, 0)
    clf = LSTMClassifier(inputs="pwi+aif+dwi", n_timepoints=5, hidden_size=7,
                         bidirectional=True, num_layers=2, dropout=0.2, dense_sizes=(6, 4),
                         max_epochs=1, torch_num_threads=1, random_state=0).fit(X, y)
    linears = [m for m in clf.net_.module_.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2 * 7 + 18, 6), (6, 4),
                                                                  (4, 2)]


@pytest.mark.parametrize("inputs", MODES)
def test_learnable_sequence_task(inputs):
    X, y = make_sequences(400, 12, 0, inputs)
    X_test, y_test = make_sequences(400, 12, 1, inputs)
    clf = LSTMClassifier(inputs=inputs, n_timepoints=12, hidden_size=16, batch_size=32,
                         lr=0.01, max_epochs=5, torch_num_threads=1, random_state=0)
    clf.fit(X, y)
    assert roc_auc_score(y_test, clf.predict_proba(X_test)[:, 1]) > 0.9


def test_univariate_rows_learn():
    X, y = make_sequences(300, 12, 0, "pwi")
    X = X.reshape(300, 12, 9).mean(axis=2)  # one value per time step
    X_test, y_test = make_sequences(300, 12, 1, "pwi")
    X_test = X_test.reshape(300, 12, 9).mean(axis=2)
    clf = LSTMClassifier(hidden_size=16, batch_size=32, lr=0.01, max_epochs=5,
                         torch_num_threads=1, random_state=0).fit(X, y)
    assert clf.net_.module_.lstm.input_size == 1
    assert roc_auc_score(y_test, clf.predict_proba(X_test)[:, 1]) > 0.9


def test_same_random_state_gives_identical_predictions():
    X, y = make_sequences(200, 6, 0)
    params = dict(inputs="pwi+aif+dwi", n_timepoints=6, dropout=0.3, **FAST)
    rng_state = torch.get_rng_state()
    p1 = LSTMClassifier(random_state=3, **params).fit(X, y).predict_proba(X)
    # Fitting must not consume the caller's global torch RNG.
    assert torch.equal(torch.get_rng_state(), rng_state)
    p2 = LSTMClassifier(random_state=3, **params).fit(X, y).predict_proba(X)
    p3 = LSTMClassifier(random_state=4, **params).fit(X, y).predict_proba(X)
    assert_array_equal(p1, p2)
    assert not np.allclose(p1, p3)


def test_pickle_round_trip_gives_identical_probabilities():
    X, y = make_sequences(100, 6, 0)
    clf = LSTMClassifier(inputs="pwi+aif+dwi", n_timepoints=6, random_state=0, **FAST)
    clf.fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    assert_array_equal(restored.classes_, clf.classes_)


def test_string_and_multiclass_labels():
    X, y = make_sequences(120, 6, 0, "pwi")
    names = np.array(["no_ht", "ht"])[y]
    clf = LSTMClassifier(inputs="pwi", n_timepoints=6, random_state=0, **FAST).fit(X, names)
    assert_array_equal(clf.classes_, ["ht", "no_ht"])
    assert set(clf.predict(X)) <= {"ht", "no_ht"}
    three = np.array(["a", "b", "c"])[np.arange(120) % 3]
    clf.fit(X, three)
    proba = clf.predict_proba(X)
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)


def test_wrong_column_count_names_expected_widths():
    X, y = make_sequences(10, 60, 0, "pwi+aif")  # 600 columns
    with pytest.raises(ValueError, match=r"expects 540 .*got 600.*inputs='pwi\+aif'"):
        LSTMClassifier(inputs="pwi", max_epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="pwi=540, pwi\\+aif=600, pwi\\+dwi=558, "
                                         "pwi\\+aif\\+dwi=618"):
        LSTMClassifier(inputs="pwi+dwi", max_epochs=1).fit(X[:, :100], y)


def test_misordered_named_columns_are_rejected():
    pd = pytest.importorskip("pandas", reason="feature-name check needs pandas frames")
    X, y = make_sequences(10, 3, 0, "pwi+aif")
    names = expected_feature_names("pwi+aif", 3)
    frame = pd.DataFrame(X, columns=names)
    LSTMClassifier(inputs="pwi+aif", n_timepoints=3, max_epochs=1).fit(frame, y)
    shuffled = frame[names[-3:] + names[:-3]]
    with pytest.raises(ValueError, match="column 0 is named 'aif_t00' where 'pwi_t00_p0'"):
        LSTMClassifier(inputs="pwi+aif", n_timepoints=3, max_epochs=1).fit(shuffled, y)


def test_invalid_dense_sizes():
    X, y = make_sequences(10, 3, 0, "pwi")
    with pytest.raises(ValueError, match="dense_sizes must be a tuple of positive ints"):
        LSTMClassifier(inputs="pwi", n_timepoints=3, dense_sizes=(4, 0)).fit(X, y)


def test_pipeline_grid_search_group_kfold():
    X, y = make_sequences(240, 6, 0, "pwi+dwi")
    groups = np.repeat(np.arange(6), 40)
    pipe = Pipeline([("scale", StandardScaler()),
                     ("lstm", LSTMClassifier(inputs="pwi+dwi", n_timepoints=6,
                                             random_state=0, **FAST))])
    search = GridSearchCV(pipe, {"lstm__hidden_size": [4, 8]}, cv=GroupKFold(n_splits=3),
                          scoring="roc_auc", n_jobs=2)
    search.fit(X, y, groups=groups)
    assert search.best_params_["lstm__hidden_size"] in (4, 8)
    assert search.best_estimator_.named_steps["lstm"].net_.module_.lstm.hidden_size == \
        search.best_params_["lstm__hidden_size"]
    assert search.best_score_ > 0.8
    assert clone(pipe).set_params(lstm__hidden_size=5).get_params()["lstm__hidden_size"] == 5


def test_no_internal_validation_split_by_default():
    X, y = make_sequences(50, 3, 0, "pwi")
    clf = LSTMClassifier(inputs="pwi", n_timepoints=3, random_state=0, **FAST).fit(X, y)
    assert clf.net_.train_split is None
    assert "valid_loss" not in clf.net_.history[-1]
    assert clf.n_iter_ == FAST["max_epochs"]


def test_early_stopping_requires_groups():
    X, y = make_sequences(50, 3, 0, "pwi")
    clf = LSTMClassifier(inputs="pwi", n_timepoints=3, early_stopping=True, max_epochs=2)
    with pytest.raises(ValueError, match=r"groups=patient_ids"):
        clf.fit(X, y)
    with pytest.raises(ValueError, match="at least 2 patients"):
        clf.fit(X, y, groups=np.zeros(50))


def test_early_stopping_holds_out_whole_patients():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    y = rng.randint(0, 2, 300)  # noise: validation loss rises once the net memorises
    groups = np.repeat(np.arange(10), 30)
    clf = LSTMClassifier(hidden_size=32, batch_size=16, lr=0.05, max_epochs=40,
                         early_stopping=True, validation_fraction=0.2, n_iter_no_change=2,
                         torch_num_threads=1, random_state=0)
    train, valid = clf._patient_split(X, y, groups, seed=0)
    assert not set(groups[train]) & set(groups[valid])
    assert len(set(groups[valid])) == 2
    clf.fit(X, y, groups=groups)
    assert len(clf.net_.train_split.keywords["valid_ds"]) == 60  # 2 whole patients
    assert "valid_loss" in clf.net_.history[-1]
    assert clf.n_iter_ < 40


def test_groups_routed_by_metadata_routing():
    X, y = make_sequences(160, 3, 0, "pwi")
    groups = np.repeat(np.arange(8), 20)
    lstm = LSTMClassifier(inputs="pwi", n_timepoints=3, early_stopping=True, random_state=0,
                          **FAST)
    with config_context(enable_metadata_routing=True):
        lstm.set_fit_request(groups=True)
        search = GridSearchCV(lstm, {"lr": [0.05]}, cv=GroupKFold(n_splits=2),
                              scoring="roc_auc")
        search.fit(X, y, groups=groups)
    assert "valid_loss" in search.best_estimator_.net_.history[-1]


def test_verbose_prints_epochs_and_default_is_silent(capsys):
    X, y = make_sequences(40, 3, 0, "pwi")
    LSTMClassifier(inputs="pwi", n_timepoints=3, random_state=0, **FAST).fit(X, y)
    assert capsys.readouterr().out == ""
    LSTMClassifier(inputs="pwi", n_timepoints=3, verbose=1, random_state=0, **FAST).fit(X, y)
    out = capsys.readouterr().out
    assert "train_loss" in out and out.count("\n") >= FAST["max_epochs"]
    clf = LSTMClassifier(inputs="pwi", n_timepoints=3, verbose=2, random_state=0, **FAST)
    clf.fit(X, y)
    assert "progress_bar" in dict(clf.net_.callbacks_)


def test_torch_threads_are_restored():
    X, y = make_sequences(40, 3, 0, "pwi")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        clf = LSTMClassifier(inputs="pwi", n_timepoints=3, random_state=0, **FAST).fit(X, y)
        clf.predict(X)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_cuda_unavailable_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; the error path only exists without a GPU")
    X, y = make_sequences(10, 3, 0, "pwi")
    with pytest.raises(ValueError, match="no CUDA device; use device='cpu'"):
        LSTMClassifier(inputs="pwi", n_timepoints=3, device="cuda").fit(X, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_trained_model_predicts_on_cpu():
    X, y = make_sequences(200, 6, 0)
    clf = LSTMClassifier(inputs="pwi+aif+dwi", n_timepoints=6, device="cuda", random_state=0,
                         **FAST).fit(X, y)
    assert next(clf.net_.module_.parameters()).is_cuda
    proba_gpu = clf.predict_proba(X)
    restored = pickle.loads(pickle.dumps(clf))
    restored.set_params(device="cpu")
    proba_cpu = restored.predict_proba(X)
    assert not next(restored.net_.module_.parameters()).is_cuda
    np.testing.assert_allclose(proba_cpu, proba_gpu, atol=1e-5)


def test_block_scaler_keeps_each_curve_shape():
    X, _ = make_sequences(50, 6, 0, "pwi+aif+dwi")
    X[:, :54] = X[:, :54] * 100 + 500  # scanner units
    scaler = BlockScaler("pwi+aif+dwi", n_timepoints=6).fit(X)
    Xt = scaler.transform(X)
    # one mean and SD for every PWI column, one for the AIF, per column for DWI
    assert np.unique(scaler.scale_[:54]).size == 1 and np.unique(scaler.mean_[:54]).size == 1
    assert np.unique(scaler.scale_[54:60]).size == 1
    assert np.unique(scaler.scale_[60:]).size == 18
    np.testing.assert_allclose(Xt[:, :54].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(Xt[:, :54].std(), 1, rtol=1e-4)
    # a curve's shape survives: differences between time points scale by one factor
    np.testing.assert_allclose(np.diff(Xt[:, :54], axis=1),
                               np.diff(X[:, :54], axis=1) / scaler.scale_[0], rtol=1e-3,
                               atol=1e-4)
    np.testing.assert_allclose(scaler.inverse_transform(Xt), X, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="expects 78 columns"):
        BlockScaler("pwi+aif+dwi", n_timepoints=6).fit(X[:, :-1])


def test_n_steps_counts_the_optimiser_steps():
    X, y = make_sequences(50, 3, 0, "pwi")
    clf = LSTMClassifier(inputs="pwi", n_timepoints=3, random_state=0, **FAST).fit(X, y)
    # 50 rows in batches of 16: 4 steps per epoch
    assert clf.n_steps_ == FAST["max_epochs"] * 4


def test_staged_predict_proba_gives_each_epochs_weights(tmp_path):
    """One probability array per epoch; the last epoch's is the model's own prediction
    (no averaging, no early stopping); staging leaves the fitted module untouched, survives
    a pickle, and a bundle (final weights only) refuses with a message."""
    from sklearn_hemo.persistence import load_model, save_model

    X, y = make_sequences(160, 6, 0)
    clf = LSTMClassifier(inputs="pwi+aif+dwi", n_timepoints=6, random_state=0, **FAST)
    clf.fit(X, y)
    before = clf.predict_proba(X)
    # rows sum to 1 in float64 (log_loss warns otherwise), not only in float32
    np.testing.assert_allclose(before.sum(axis=1), 1.0, rtol=1e-12)
    staged = list(clf.staged_predict_proba(X[:50]))
    assert len(staged) == clf.n_iter_ == FAST["max_epochs"]
    for proba in staged:
        assert proba.shape == (50, 2) and proba.dtype == np.float64
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(staged[-1], before[:50], rtol=1e-5, atol=1e-6)
    assert not np.allclose(staged[0], staged[-1])  # the epochs differ
    assert_array_equal(clf.predict_proba(X), before)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(next(restored.staged_predict_proba(X[:50])), staged[0])
    loaded = load_model(save_model(clf, tmp_path / "lstm"))
    with pytest.raises(ValueError, match="holds no per-epoch weights.*Fit it again"):
        next(loaded.staged_predict_proba(X))


def test_staged_predict_proba_spans_every_epoch_with_averaging_and_stopping():
    """With weight averaging the staged arrays are still the raw epochs' weights, and with
    early stopping they run to the last epoch trained, past the restored best one."""
    X, y = make_sequences(240, 6, 1)
    groups = np.repeat(np.arange(8), 30)
    clf = LSTMClassifier(inputs="pwi+aif+dwi", n_timepoints=6, random_state=0,
                         early_stopping=True, n_iter_no_change=2, average_epochs=1,
                         **{**FAST, "max_epochs": 30}).fit(X, y, groups=groups)
    staged = list(clf.staged_predict_proba(X))
    assert len(staged) == clf.n_iter_ > clf.best_epoch_
