"""Issue 29: a recipe that learns, inputs the network can use, curves that show it."""

import json
import math
import warnings

import nibabel as nib
import numpy as np
import pytest
import sklearn
import torch
from scipy.integrate import trapezoid
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from skorch.callbacks import Callback
from skorch.history import History

from sklearn_hemo.datasets import ArterialInputFunction, Cohort, Patient, make_stroke_cohort
from sklearn_hemo.model_selection import compare_models, make_model_zoo
from sklearn_hemo.model_selection._curves import warn_plateau
from sklearn_hemo.neural import BlockScaler, LSTMClassifier
from sklearn_hemo.neural import _GatedEarlyStopping as GatedEarlyStopping
from sklearn_hemo.preprocessing import PatchExtractor, PerfusionMapExtractor
from sklearn_hemo.utils._training import PLATEAU_TOL

LN2 = math.log(2)


# -- early stopping on the plateau --------------------------------------------------------
class _FakeNet:
    """What skorch's EarlyStopping reads of a net: its history and module weights."""

    def __init__(self):
        self.history = History()
        self.module_ = torch.nn.Linear(1, 1)
        self.verbose = 0


def _run_stopper(stopper, train, valid):
    """Feed the epochs to the callback; return the epoch at which it stopped, or None."""
    net = _FakeNet()
    stopper.on_train_begin(net)
    for epoch, (t, v) in enumerate(zip(train, valid, strict=True), start=1):
        net.history.new_epoch()
        net.history.record("epoch", epoch)
        net.history.record("train_loss", t)
        net.history.record("valid_loss", v)
        try:
            stopper.on_epoch_end(net)
        except KeyboardInterrupt:
            return epoch, stopper
    return None, stopper


# a training loss on the ln 2 plateau for 6 epochs, then learning; the validation loss is
# lowest at epoch 1 (the plateau) until the net has learned, at epoch 10
TRAIN = [0.693, 0.692, 0.692, 0.691, 0.690, 0.689, 0.60, 0.50, 0.45, 0.42, 0.40, 0.38]
VALID = [0.690, 0.700, 0.705, 0.71, 0.72, 0.72, 0.70, 0.69, 0.66, 0.55, 0.58, 0.60]


def test_plain_early_stopping_stops_on_the_plateau():
    """Today's recipe (skorch's EarlyStopping, patience 5) stops at epoch 6 and keeps
    epoch 1: the failure the gated version prevents."""
    from skorch.callbacks import EarlyStopping

    stopped, stopper = _run_stopper(
        EarlyStopping(monitor="valid_loss", patience=5, load_best=True), TRAIN, VALID)
    assert stopped == 6 and stopper.best_epoch_ == 1


def test_gated_early_stopping_neither_stops_nor_keeps_a_plateau_epoch():
    stopped, stopper = _run_stopper(
        GatedEarlyStopping(monitor="valid_loss", patience=5, load_best=True), TRAIN, VALID)
    assert stopped is None  # never stopped on the plateau
    assert stopper.best_epoch_ == 10  # the best epoch after the plateau
    # min_epochs: no epoch before it counts, even off the plateau
    stopped, stopper = _run_stopper(
        GatedEarlyStopping(monitor="valid_loss", patience=1, load_best=True, min_epochs=11),
        TRAIN, VALID)
    assert stopped == 12 and stopper.best_epoch_ == 11  # epoch 11 counts first


def _noise(n=240, n_features=12, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    y = np.tile([0, 1], n // 2)
    groups = np.repeat(np.arange(8), n // 8)
    return X, y, groups


def test_monitor_records_the_held_out_loss_but_trains_the_whole_budget():
    """``early_stopping="monitor"`` holds out the same patients as early stopping and
    records their loss, but neither stops nor restores: the net trains its step budget and
    keeps its last epoch, which early stopping on memorised noise would not."""
    X, y, groups = _noise()
    common = dict(hidden_size=8, batch_size=16, max_steps=400, max_epochs=500, lr=1e-2,
                  min_steps=30, n_iter_no_change=2, random_state=0)
    monitor = LSTMClassifier(early_stopping="monitor", **common).fit(X, y, groups=groups)
    stop = LSTMClassifier(early_stopping=True, **common).fit(X, y, groups=groups)
    batches = monitor.n_steps_ // monitor.n_iter_  # training batches per epoch
    assert monitor.n_steps_ == batches * monitor.n_iter_
    assert monitor.n_steps_ >= 400 > monitor.n_steps_ - batches  # the whole budget
    assert monitor.best_epoch_ == monitor.n_iter_  # its last weights
    assert len(monitor.valid_loss_curve_) == monitor.n_iter_
    assert stop.n_iter_ < monitor.n_iter_  # early stopping stopped on the same patients
    n = stop.n_iter_
    assert monitor.train_loss_curve_[:n] == pytest.approx(stop.train_loss_curve_)
    assert monitor.valid_loss_curve_[:n] == pytest.approx(stop.valid_loss_curve_)
    with pytest.raises(ValueError, match=r"early_stopping='monitor'\) needs the patient"):
        LSTMClassifier(early_stopping="monitor", max_epochs=1).fit(X, y)
    # a numpy bool, which the parameter check accepts, stops early as True does
    numpy_true = LSTMClassifier(early_stopping=np.True_, **common).fit(X, y, groups=groups)
    assert numpy_true.n_iter_ == stop.n_iter_ and numpy_true.best_epoch_ == stop.best_epoch_


def test_a_fit_on_the_plateau_runs_its_whole_budget():
    """On labels it cannot learn, skorch's early stopping (today's recipe) stopped after
    patience + 1 epochs and restored a plateau epoch; now no plateau epoch counts, the fit
    runs its step budget, keeps its last weights, and its curve shows the plateau."""
    X, y, groups = _noise()
    clf = LSTMClassifier(hidden_size=4, batch_size=30, early_stopping=True,
                         n_iter_no_change=1, validation_fraction=0.25, max_epochs=100,
                         max_steps=60, random_state=0).fit(X, y, groups=groups)
    assert clf.n_steps_ == 60 and clf.n_iter_ == 10  # 6 batches of 30 per epoch
    assert abs(clf.train_loss_curve_[-1] - LN2) < PLATEAU_TOL
    assert clf.best_epoch_ == clf.n_iter_


def test_a_fit_stuck_on_the_plateau_is_restarted():
    X, y, groups = _noise()
    common = dict(hidden_size=4, batch_size=30, max_epochs=2, random_state=0)
    once = LSTMClassifier(**common).fit(X, y)
    again = LSTMClassifier(**common, plateau_restarts=2).fit(X, y)
    assert once.n_restarts_ == 0 and again.n_restarts_ == 2  # noise: never leaves it
    assert again.n_steps_ == 3 * once.n_steps_  # every attempt's steps are counted
    # a net that learns at once is not restarted
    Xs = X.copy()
    Xs[:, -3:] += 3 * (2 * y[:, None] - 1)
    learns = LSTMClassifier(**common, lr=0.05, plateau_restarts=2).fit(Xs, y)
    assert learns.n_restarts_ == 0


class _FallBackOnce(Callback):
    """Zero the head in every batch of the first attempt's last epoch: the attempt leaves
    the plateau, then its last epoch's loss is exactly ln 2 (a fit that fell back)."""

    def __init__(self, last_epoch):
        self.last_epoch = last_epoch
        self.attempts = 0

    def on_train_begin(self, net, **kwargs):
        self.attempts += 1

    def on_batch_begin(self, net, training=False, **kwargs):
        if training and self.attempts == 1 and len(net.history) == self.last_epoch:
            with torch.no_grad():
                for parameter in net.module_.head.parameters():
                    parameter.zero_()


def test_a_fit_that_falls_back_to_the_plateau_is_restarted(monkeypatch):
    """The restart reads the last epoch's loss, as the plateau warning of compare does:
    a fit that left the plateau and came back to it is trained again too."""
    X, y, groups = _noise()
    X[:, -3:] += 3 * (2 * y[:, None] - 1)
    fall_back = _FallBackOnce(last_epoch=4)
    training_callbacks = LSTMClassifier._training_callbacks
    monkeypatch.setattr(LSTMClassifier, "_training_callbacks", lambda self, *args: (
        training_callbacks(self, *args) + [("fall_back", fall_back)]))
    common = dict(hidden_size=4, batch_size=30, max_epochs=4, lr=0.05, random_state=0)
    kept = LSTMClassifier(**common).fit(X, y)
    assert min(kept.train_loss_curve_) < LN2 - PLATEAU_TOL  # it left the plateau...
    assert kept.train_loss_curve_[-1] == pytest.approx(LN2)  # ...and fell back
    assert kept.n_restarts_ == 0
    fall_back.attempts = 0
    restarted = LSTMClassifier(**common, plateau_restarts=1).fit(X, y)
    assert restarted.n_restarts_ == 1 and fall_back.attempts == 2
    assert restarted.train_loss_curve_[-1] < LN2 - PLATEAU_TOL


def test_early_stopping_waits_for_min_steps():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(240, 12)).astype(np.float32)
    y = (X[:, -4:].mean(axis=1) > 0).astype(int)
    groups = np.repeat(np.arange(8), 30)
    common = dict(hidden_size=8, batch_size=30, early_stopping=True, n_iter_no_change=1,
                  validation_fraction=0.25, max_epochs=200, lr=0.02, random_state=0)
    early = LSTMClassifier(**common).fit(X, y, groups=groups)
    late = LSTMClassifier(**common, min_steps=120).fit(X, y, groups=groups)
    assert early.train_loss_curve_[-1] < LN2 - PLATEAU_TOL  # it learned
    assert early.n_steps_ < 120 <= late.n_steps_
    assert late.best_epoch_ >= 120 // 6


def test_max_steps_sets_the_training_length():
    X, y, _ = _noise(n=200)
    clf = LSTMClassifier(hidden_size=4, batch_size=50, max_epochs=100, max_steps=20,
                         random_state=0).fit(X, y)
    assert clf.n_steps_ == 20 and clf.n_iter_ == 5  # 4 batches per epoch
    assert len(clf.train_loss_curve_) == 5 and clf.valid_loss_curve_ is None


def test_forget_bias_clipping_and_schedule_reach_the_net():
    X, y, _ = _noise(n=64)
    clf = LSTMClassifier(hidden_size=3, max_epochs=1, forget_bias=1.0, clip_grad_norm=1.0,
                         lr_schedule="cosine", lr=0.0, random_state=0)
    with pytest.raises(ValueError, match="lr"):
        clf.fit(X, y)  # lr must be positive: the constraints still apply
    clf.set_params(lr=1e-12).fit(X, y)
    lstm = clf.net_.module_.lstm
    forget = (lstm.bias_ih_l0 + lstm.bias_hh_l0)[3:6].detach().numpy()
    np.testing.assert_allclose(forget, 1.0, atol=1e-6)  # lr ~ 0: still the initial value
    names = dict(clf.net_.callbacks_)
    assert {"gradient_clipping", "lr_scheduler", "forget_bias"} <= set(names)


@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True)])
def test_recurrent_init_draws_each_gate_orthogonal(num_layers, bidirectional):
    """Every gate's hidden-to-hidden block starts orthogonal, in every layer and
    direction; the input weights keep torch's draw; the default keeps torch's uniform
    recurrent draw, whose blocks are far from orthogonal."""
    X, y, _ = _noise(n=64)
    hidden = 5

    def initial(scheme):  # lr ~ 0: the weights after one epoch are the initial ones
        clf = LSTMClassifier(hidden_size=hidden, num_layers=num_layers,
                             bidirectional=bidirectional, max_epochs=1, lr=1e-12,
                             recurrent_init=scheme, random_state=0).fit(X, y)
        return dict(clf.net_.module_.lstm.named_parameters())

    orthogonal, uniform = initial("orthogonal"), initial("uniform")
    recurrent = [name for name in orthogonal if name.startswith("weight_hh")]
    assert len(recurrent) == num_layers * (2 if bidirectional else 1)
    for name in recurrent:
        for gate in range(4):
            block = orthogonal[name][gate * hidden:(gate + 1) * hidden].detach().numpy()
            np.testing.assert_allclose(block @ block.T, np.eye(hidden), atol=1e-5)
            block = uniform[name][gate * hidden:(gate + 1) * hidden].detach().numpy()
            assert np.abs(block @ block.T - np.eye(hidden)).max() > 0.3
    bound = 1 / np.sqrt(hidden)  # torch's uniform draw, kept for the input weights
    assert all(np.abs(p.detach().numpy()).max() <= bound
               for name, p in orthogonal.items() if name.startswith("weight_ih"))
    with pytest.raises(ValueError, match="recurrent_init"):
        LSTMClassifier(recurrent_init="xavier").fit(X, y)


def test_recurrent_init_is_seeded_by_random_state():
    X, y, _ = _noise(n=64)
    params = dict(hidden_size=4, max_epochs=2, recurrent_init="orthogonal", random_state=3)
    a = LSTMClassifier(**params).fit(X, y).predict_proba(X)
    b = LSTMClassifier(**params).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, LSTMClassifier(**{**params, "random_state": 4})
                           .fit(X, y).predict_proba(X))


# -- the inputs: AIF and DWI normalised per patient ---------------------------------------
@pytest.fixture(scope="module")
def base_patient():
    return make_stroke_cohort(n_patients=1, shape=(12, 12, 2), n_frames=40,
                              random_state=0)[0]


def _copy(patient, id, *, aif=None, dwi_gain=1.0):
    def img(name):
        source = getattr(patient, name) if name != "brain_mask" else patient.pwi
        data = (np.asarray(source.dataobj, dtype=np.float32) if name != "brain_mask"
                else patient.get_brain_mask().astype(np.uint8))
        if name.startswith("dwi"):
            data = data * dwi_gain
        return nib.Nifti1Image(data, source.affine)

    return Patient(id, img("pwi"), img("dwi_b0"), img("dwi_b1000"),
                   echo_time=patient.echo_time, repetition_time=patient.repetition_time,
                   ht=patient.ht, brain_mask=img("brain_mask"), aif=aif,
                   n_nonsteady=0)


def _refs(cohort, n_voxels=6):
    ijk = np.argwhere(cohort[0].get_brain_mask())[:n_voxels]
    return np.vstack([np.column_stack([np.full(len(ijk), p), ijk])
                      for p in range(len(cohort))])


def test_aifs_differing_by_a_factor_give_the_same_features(base_patient):
    times = base_patient.frame_times
    curve = 50 * (times / 10) ** 3 * np.exp(-times / 3)  # a gamma-variate bolus
    cohort = Cohort([
        _copy(base_patient, "sub-a", aif=ArterialInputFunction(times, curve)),
        _copy(base_patient, "sub-b", aif=ArterialInputFunction(times, 7.5 * curve)),
    ])
    refs = _refs(cohort)
    n = len(refs) // 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        features = PatchExtractor(cohort, inputs="pwi+aif").fit_transform(refs)
        raw = PatchExtractor(cohort, inputs="pwi+aif",
                             aif_normalization=None).fit_transform(refs)
    aif = slice(540, 600)
    np.testing.assert_allclose(features[:n], features[n:], rtol=1e-5, atol=1e-7)
    # unit area on the 1.8 s grid
    assert trapezoid(features[0, aif].astype(float), dx=1.8) == pytest.approx(1.0, rel=1e-4)
    # raw, the second patient's AIF is 7.5 times the first's: a patient fingerprint
    np.testing.assert_allclose(raw[n:, aif], 7.5 * raw[:n, aif], rtol=1e-4)
    assert not np.allclose(raw[:n], raw[n:])


def test_dwi_gain_is_divided_out_in_every_row_that_reads_dwi(base_patient):
    cohort = Cohort([_copy(base_patient, "sub-a"), _copy(base_patient, "sub-b", dwi_gain=1.7)])
    refs = _refs(cohort)
    n = len(refs) // 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        patches = PatchExtractor(cohort, inputs="pwi+dwi").fit_transform(refs)
        raw = PatchExtractor(cohort, inputs="pwi+dwi",
                             dwi_normalization=None).fit_transform(refs)
        maps = PerfusionMapExtractor(cohort, maps=("cbv",), dwi=True).fit_transform(refs)
    np.testing.assert_allclose(patches[:n], patches[n:], rtol=1e-5)
    np.testing.assert_allclose(maps[:n, 9:], maps[n:, 9:], rtol=1e-5)
    np.testing.assert_allclose(raw[n:, 540:], 1.7 * raw[:n, 540:], rtol=1e-4)
    # divided by the brain-median b0: the brain's b0 values sit around 1
    b0 = np.asarray(base_patient.dwi_b0.dataobj, dtype=float)
    median = np.median(b0[base_patient.get_brain_mask()])
    np.testing.assert_allclose(patches[:n, 540:549], raw[:n, 540:549] / median, rtol=1e-5)
    # the whole-volume path (risk maps) divides by the same
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _, chunk = next(PatchExtractor(cohort, inputs="pwi+dwi").iter_volume(1))
        _, raw_chunk = next(PatchExtractor(cohort, inputs="pwi+dwi",
                                           dwi_normalization=None).iter_volume(1))
    np.testing.assert_allclose(chunk[:, 540:], raw_chunk[:, 540:] / (1.7 * median), rtol=1e-5)


# -- no per-column scaling of the AIF -----------------------------------------------------
def test_block_scaler_refuses_to_scale_the_aif_per_column():
    X = np.random.RandomState(0).normal(size=(20, 618))
    with pytest.raises(ValueError, match="cannot scale the AIF block column by column"):
        BlockScaler("pwi+aif+dwi", per_column=("pwi", "aif")).fit(X)
    with pytest.raises(ValueError, match="per_column takes"):
        BlockScaler("pwi", per_column=("bogus",)).fit(X[:, :540])
    scaler = BlockScaler("pwi+aif+dwi", per_column=("pwi", "dwi")).fit(X)
    assert np.unique(scaler.scale_[540:600]).size == 1  # the AIF: one block
    assert np.unique(scaler.scale_[:540]).size == 540  # PWI: per column


def test_no_zoo_row_scales_the_aif_per_column(base_patient):
    cohort = Cohort([base_patient])
    X = np.random.RandomState(0).normal(size=(30, 618)) * np.linspace(1, 3, 618)
    for scaler_kind in ("block", "column"):
        zoo = make_model_zoo(cohort, models=["lstm-pwi+aif+dwi", "svm", "sr-kda"],
                             lstm_scaler=scaler_kind)
        for name, (pipeline, _) in zoo.items():
            scale = pipeline.named_steps["scale"].fit(X)
            assert np.unique(scale.scale_[540:600]).size == 1, (name, scaler_kind)


# -- curves and the plateau warning -------------------------------------------------------
def test_plateau_warning_names_the_row_and_fold():
    with pytest.warns(UserWarning, match=r"lstm-pwi\+aif, outer fold 2: .*not 0.05 below ln 2"):
        warn_plateau("lstm-pwi+aif", 2, {"train_loss": [0.70, 0.69, 0.68]})
    with pytest.warns(UserWarning, match="final training loss is 1.300"):  # diverged
        warn_plateau("lstm-pwi", 1, {"train_loss": [0.69, 0.5, 1.3]})
    with pytest.warns(UserWarning, match="1 of 2 inner fits"):
        warn_plateau("lstm-pwi", 0, {"train_loss": [0.69, 0.4]}, [0.4, 0.66])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_plateau("lstm-pwi", 0, {"train_loss": [0.69, 0.62]}, [0.5])


@pytest.fixture(scope="module")
def small_cohort():
    return make_stroke_cohort(n_patients=8, shape=(32, 32, 2), ht_prevalence=0.6,
                              n_frames=40, random_state=0, difficulty="easy")


def test_compare_records_curves_draws_them_and_warns_on_the_plateau(small_cohort, tmp_path):
    pytest.importorskip("matplotlib")  # lstm_curves.png needs the plot extra
    with sklearn.config_context(enable_metadata_routing=True):
        nets = {}
        for name, lr in (("lstm-learns", 1e-2), ("lstm-stuck", 1e-9)):
            net = LSTMClassifier(inputs="pwi", n_timepoints=20, hidden_size=4,
                                 batch_size=32, max_steps=40, max_epochs=50,
                                 early_stopping=True, validation_fraction=0.3,
                                 min_steps=20, lr=lr, random_state=0, torch_num_threads=1,
                                 average_epochs=2)
            net.set_fit_request(groups=True)
            nets[name] = (Pipeline([
                ("features", PatchExtractor(small_cohort, inputs="pwi", n_timepoints=20)),
                ("scale", BlockScaler("pwi", n_timepoints=20)), ("model", net)]), {})
    with pytest.warns(UserWarning, match=r"lstm-stuck, outer fold \d: the refit's final "
                                         r"training loss"):
        compare_models(small_cohort, nets, out_dir=tmp_path, n_outer=2, n_samples=160,
                       n_resamples=50, random_state=0, oracle=False)
    run = json.loads((tmp_path / "run.json").read_text())
    for name in nets:
        curves = run["models"][name]["loss_curves"]
        assert set(curves) == {"0", "1"}
        for fold in curves.values():
            train_keys = [key for key in fold if "train" in key and "loss" in key]
            assert train_keys == ["train_loss"]
            n_epochs = len(fold["train_loss"])
            assert n_epochs >= 2 and len(fold["valid_loss"]) == n_epochs
            # the outer test fold's loss of every epoch's weights, after training
            assert len(fold["test_loss"]) == n_epochs
            assert all(0 < v < 5 for v in fold["test_loss"])
            assert 1 <= fold["best_epoch"] <= n_epochs
            averaged = fold["averaged_epochs"]  # the epochs whose mean weights were kept
            assert fold["best_epoch"] in averaged and averaged == sorted(averaged)
            assert max(averaged) - min(averaged) <= 4 and max(averaged) <= n_epochs
    assert any(len(fold["averaged_epochs"]) > 1
               for fold in run["models"]["lstm-learns"]["loss_curves"].values())
    assert all(fold["averaged_epochs"] == [fold["best_epoch"]]  # nothing off the plateau
               for fold in run["models"]["lstm-stuck"]["loss_curves"].values())
    stuck = run["models"]["lstm-stuck"]["loss_curves"]["0"]["train_loss"][-1]
    assert abs(stuck - LN2) < PLATEAU_TOL
    # the stuck net predicts a constant guess on the test fold too; the learning one
    # does better than it there, in its last epoch
    assert abs(run["models"]["lstm-stuck"]["loss_curves"]["0"]["test_loss"][-1] - LN2) < 0.05
    assert all(fold["test_loss"] != fold["train_loss"]  # another set of patients
               for fold in run["models"]["lstm-learns"]["loss_curves"].values())
    assert (tmp_path / "lstm_curves.png").stat().st_size > 0


@pytest.mark.filterwarnings("error::UserWarning")  # log_loss warns on rows not summing to 1
def test_the_test_loss_curve_reads_the_pipeline_as_predict_does():
    """test_loss_curve passes the rows through the pipeline's earlier steps and scores
    each epoch's weights: without averaging, its last value is the model's own loss."""
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    from sklearn_hemo.model_selection._curves import test_loss_curve

    X, y, _ = _noise()
    X[:, -3:] += 2 * y[:, None] - 1
    X = X * 10 + 5  # the scaler matters
    model = Pipeline([("scale", StandardScaler()), ("model", LSTMClassifier(
        hidden_size=4, batch_size=30, max_epochs=5, lr=0.05, random_state=0))])
    model.fit(X[:160], y[:160])
    curve = test_loss_curve(model, X[160:], y[160:])
    assert len(curve) == 5
    assert curve[-1] == pytest.approx(log_loss(y[160:], model.predict_proba(X[160:])),
                                      rel=1e-5)
    # an estimator without staged predictions has no curve
    assert test_loss_curve(Pipeline([("model", LogisticRegression())]).fit(X, y), X, y) is None


def test_lstm_curves_say_when_the_kept_weights_are_a_mean_of_epochs(tmp_path):
    pytest.importorskip("matplotlib")
    from sklearn_hemo.model_selection._curves import plot_loss_curves

    def models(averaged):
        curve = {"train_loss": [0.69, 0.6, 0.5, 0.45, 0.4, 0.38],
                 "valid_loss": [0.69, 0.65, 0.6, 0.62, 0.63, 0.66], "best_epoch": 3,
                 "averaged_epochs": averaged, "n_steps": 60}
        return {"lstm-pwi": {"loss_curves": {"0": curve}}}

    def title(figure):  # the title is wrapped to the figure's width
        return " ".join(figure._suptitle.get_text().split())

    averaged = plot_loss_curves(models([2, 3, 4, 5]), tmp_path / "a.png")
    single = plot_loss_curves(models([3]), tmp_path / "b.png")
    assert "mean weights are kept" in title(averaged)
    assert "mean weights" not in title(single)
    assert "dot: best epoch" in title(single) and "test fold" not in title(single)
    unvalidated = models([4, 5, 6])
    unvalidated["lstm-pwi"]["loss_curves"]["0"].update(valid_loss=None, best_epoch=6,
                                                       test_loss=[0.7, 0.6, 0.62, 0.6,
                                                                  0.61, 0.63])
    tested = plot_loss_curves(unvalidated, tmp_path / "c.png")
    assert "mean weights are kept" in title(tested) and "held-out" not in title(tested)
    assert "dash-dot: the outer test fold" in title(tested)
    assert any(line.get_linestyle() == "-." for line in tested.axes[0].get_lines())
    assert max(len(line) for line in tested._suptitle.get_text().split("\n")) <= 60
    # the band is one more line on the panel, over the averaged epochs only
    lines = averaged.axes[0].get_lines()
    assert len(lines) == len(single.axes[0].get_lines()) + 1
    assert any(list(line.get_xdata()) == [2, 3, 4, 5] for line in lines)


def test_objects_pickled_before_the_new_options_keep_their_old_behaviour():
    import pickle

    old_values = {
        PatchExtractor(): {"aif_normalization": None, "dwi_normalization": None},
        PerfusionMapExtractor(): {"dwi_normalization": None},
        BlockScaler(): {"per_column": ("dwi",)},
        LSTMClassifier(): {"max_steps": None, "min_steps": 0, "plateau_restarts": 0,
                           "forget_bias": None, "clip_grad_norm": None,
                           "recurrent_init": "uniform", "lr_schedule": "constant",
                           "aif_dropout": 0.0, "weight_decay": 0.0, "average_epochs": 0,
                           "time_shift": 0},
    }
    for estimator, values in old_values.items():
        for name in values:
            delattr(estimator, name)  # as an object saved before the option existed
        restored = pickle.loads(pickle.dumps(estimator))
        params = restored.get_params()
        assert {name: params[name] for name in values} == values


# -- the AIF pathway: dropped in training, read in prediction -----------------------------
def test_aif_dropout_drops_whole_aifs_in_training_only():
    import torch

    from sklearn_hemo.neural import HemoLSTM

    torch.manual_seed(0)
    net = HemoLSTM(n_timepoints=5, n_step_features=9, n_classes=2, aif=True, hidden_size=4,
                   aif_dropout=0.5)
    X = torch.randn(400, 50)
    no_aif = X.clone()
    no_aif[:, 45:] = 0.0
    with torch.no_grad():
        net.eval()
        read, blind = net(X), net(no_aif)
        assert not torch.allclose(read, blind)  # prediction reads every AIF
        net.train()
        torch.manual_seed(1)
        trained = net(X)
    dropped = torch.isclose(trained, blind, atol=1e-6).all(dim=1)
    kept = torch.isclose(trained, read, atol=1e-6).all(dim=1)
    assert bool((dropped | kept).all())  # each row's AIF whole, or none of it
    assert 0.35 < dropped.float().mean() < 0.65


def test_aif_dropout_makes_the_network_read_the_tissue():
    """The label follows the AIF exactly (a fingerprint of the bleeding patients) and the
    tissue curves only partly: without AIF dropout the network rests on the AIF and, shown
    rows without it, ranks them worse than the network trained with the AIF dropped half
    the time, which had to learn the tissue."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.RandomState(0)
    n, t = 600, 6
    y = np.arange(n) % 2
    tissue = rng.normal(size=(n, t, 9)) + 0.3 * y[:, None, None]
    aif = np.where(y[:, None] == 1, 1.0, -1.0) + 0.05 * rng.normal(size=(n, t))
    X = np.hstack([tissue.reshape(n, -1), aif]).astype(np.float32)
    without = X.copy()
    without[:, -t:] = 0.0
    scores = {}
    for p in (0.0, 0.5):
        clf = LSTMClassifier("pwi+aif", n_timepoints=t, hidden_size=8, max_epochs=30, lr=1e-2,
                             aif_dropout=p, random_state=0).fit(X, y)
        assert roc_auc_score(y, clf.predict_proba(X)[:, 1]) > 0.99  # both use the AIF
        scores[p] = roc_auc_score(y, clf.predict_proba(without)[:, 1])
    assert scores[0.5] > scores[0.0] + 0.05


# -- time-shift augmentation: timing relative to the AIF, not the patient's arrival ------
def test_time_shift_moves_pwi_and_aif_together_in_training_only():
    import torch

    from sklearn_hemo._lstm_module import _shift_in_time
    from sklearn_hemo.neural import HemoLSTM

    torch.manual_seed(0)
    t = 8
    seq = torch.arange(t, dtype=torch.float32).reshape(1, t, 1).repeat(200, 1, 3)
    seq[:, :, 2] *= 10  # the AIF column: a different curve, the same clock
    shifted = _shift_in_time(seq, 2)
    lag = shifted[:, 3, 0] - seq[:, 3, 0]  # a row's shift, read at a middle time point
    assert set(lag.tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    assert torch.equal(shifted[:, :, 2], 10 * shifted[:, :, 0])  # moved together
    assert torch.equal(shifted[:, :, 1], shifted[:, :, 0])
    expected = (torch.arange(t)[None, :] + lag[:, None].long()).clamp(0, t - 1)
    assert torch.equal(shifted[:, :, 0], expected.float())  # the edge value repeats

    net = HemoLSTM(n_timepoints=t, n_step_features=9, n_classes=2, aif=True, n_static=18,
                   hidden_size=4, time_shift=3)
    X = torch.randn(50, 9 * t + t + 18)
    with torch.no_grad():
        net.eval()
        assert torch.equal(net(X), net(X))  # prediction reads the series as they are
        net.train()
        assert not torch.allclose(net(X), net(X))  # training draws new shifts


def _bolus(t, arrival):
    x = np.clip(np.arange(t)[None, :] - arrival[:, None], 0, None)
    return x * np.exp(-x / 1.5)


def _delayed_tissue(rng, n, t, aif_arrival):
    """Rows whose label is the tissue's delay after the AIF (4 frames against 2)."""
    y = np.arange(n) % 2
    arrival = aif_arrival + rng.uniform(-0.5, 0.5, n)
    tissue = (_bolus(t, arrival + np.where(y == 1, 4.0, 2.0))[:, :, None]
              + 0.05 * rng.normal(size=(n, t, 9)))
    return np.hstack([tissue.reshape(n, -1), _bolus(t, arrival)]).astype(np.float32), y


def test_time_shift_teaches_timing_relative_to_the_aif():
    """Training patients' boluses all arrive at frame 3, test patients' at frame 7, and the
    label is the tissue's delay after the AIF. With the AIF dropped half the time (the
    recipe), an unshifted network learns the absolute arrival, which also separates the
    training rows, and fails on the later boluses at some initialisations; shifted in
    training, PWI and AIF together, it can only use the delay and ranks them all."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.RandomState(0)
    t = 20
    X, y = _delayed_tissue(rng, 400, t, 3.0)
    X_later, y_later = _delayed_tissue(rng, 200, t, 7.0)
    scores = {}
    for shift in (0, 4):
        scores[shift] = [roc_auc_score(y_later, LSTMClassifier(
            "pwi+aif", n_timepoints=t, hidden_size=8, max_epochs=20, lr=1e-2,
            aif_dropout=0.5, time_shift=shift, random_state=seed).fit(X, y)
            .predict_proba(X_later)[:, 1]) for seed in range(4)]
    assert min(scores[4]) > 0.95
    assert np.mean(scores[0]) < 0.8  # the trap: absolute arrival learned at some seeds


def test_weight_decay_reaches_adam_and_shrinks_the_weights():
    X, y, _ = _noise(n=128)
    norms = {}
    for decay in (0.0, 0.5):
        clf = LSTMClassifier(hidden_size=4, max_epochs=20, lr=1e-2, weight_decay=decay,
                             random_state=0).fit(X, y)
        assert clf.net_.optimizer_.param_groups[0]["weight_decay"] == decay
        norms[decay] = sum(float(p.detach().norm()) for p in clf.net_.module_.parameters())
    assert norms[0.5] < 0.5 * norms[0.0]


# -- averaging the weights of the last epochs (seed stability) -----------------------------
def _learnable(n=320, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 12)).astype(np.float32)
    y = (X[:, -4:].mean(axis=1) + 0.5 * rng.normal(size=n) > 0).astype(int)
    groups = np.repeat(np.arange(8), n // 8)
    return X, y, groups


def _weights(clf):
    return {k: v.detach().clone() for k, v in clf.net_.module_.state_dict().items()}


@pytest.mark.parametrize("early_stopping", [True, False])
def test_average_epochs_loads_the_mean_of_the_kept_epochs_weights(early_stopping,
                                                                  monkeypatch):
    """Training is the same fit with and without averaging (same seed, same steps); the
    averaged net holds the element-wise mean of the weights at the end of the epochs
    within ``average_epochs`` of the kept one (with early stopping, the epochs trained
    after the best one too; without it, the last epochs), and predicts differently."""
    import torch

    import sklearn_hemo.neural as neural

    averaged_states = []

    def spy(snapshots):  # the weights handed to the average, epoch by epoch
        averaged_states.append(snapshots)
        return average_state(snapshots)

    average_state = neural._average_state
    monkeypatch.setattr(neural, "_average_state", spy)
    X, y, groups = _learnable()
    common = dict(hidden_size=6, batch_size=32, max_epochs=10, lr=0.01,
                  early_stopping=early_stopping, validation_fraction=0.25,
                  n_iter_no_change=3, min_steps=16, random_state=0)
    fit = {"groups": groups} if early_stopping else {}
    plain = LSTMClassifier(**common).fit(X, y, **fit)
    averaged = LSTMClassifier(**common, average_epochs=2).fit(X, y, **fit)
    assert plain.averaged_epochs_ == [plain.best_epoch_]
    assert averaged.n_steps_ == plain.n_steps_ and averaged.best_epoch_ == plain.best_epoch_
    best = averaged.best_epoch_
    after = min(2, averaged.n_iter_ - best)
    assert after == (2 if early_stopping else 0)  # patience 3: epochs after the best
    assert averaged.averaged_epochs_ == list(range(best - 2, best + after + 1))
    assert len(averaged_states) == 1
    snapshots = dict(zip(averaged.averaged_epochs_, averaged_states[0], strict=True))
    # the kept epoch's weights are the plain fit's: averaging does not change training
    for key, value in _weights(plain).items():
        torch.testing.assert_close(snapshots[best][key], value)
    mean = {key: torch.stack([s[key] for s in snapshots.values()]).mean(0)
            for key in snapshots[best]}
    for key, value in _weights(averaged).items():
        torch.testing.assert_close(value, mean[key])
    assert not np.allclose(plain.predict_proba(X), averaged.predict_proba(X))
    # one copy of the weights per epoch in the fitted net (staged_predict_proba's; the
    # averaging reads the same copies), no second set
    callbacks = dict(averaged.net_.callbacks_)
    assert len(callbacks["epoch_weights"].snapshots_) == averaged.n_iter_
    assert "weight_average" not in callbacks
    # reproducible with random_state
    again = LSTMClassifier(**common, average_epochs=2).fit(X, y, **fit)
    np.testing.assert_array_equal(again.predict_proba(X), averaged.predict_proba(X))


def test_average_epochs_never_averages_an_epoch_before_the_gate():
    """Epochs that early stopping does not count (before ``min_steps``, or on the ln 2
    plateau) are not averaged either: with the kept epoch at the gate, fewer are."""
    X, y, groups = _learnable()
    clf = LSTMClassifier(hidden_size=6, batch_size=32, max_epochs=40, lr=0.02,
                         early_stopping=True, validation_fraction=0.25, n_iter_no_change=2,
                         min_steps=70, average_epochs=15, random_state=0)
    clf.fit(X, y, groups=groups)
    gate = -(-70 // 8)  # 240 training rows of 8 patients less 2 held out: 8 batches
    assert clf.best_epoch_ - 15 < gate <= min(clf.averaged_epochs_)  # the gate limits it
    assert clf.averaged_epochs_ == list(range(min(clf.averaged_epochs_), clf.n_iter_ + 1))
    noise, labels, _ = _noise()
    stuck = LSTMClassifier(hidden_size=4, batch_size=30, max_epochs=3, average_epochs=2,
                           random_state=0).fit(noise, labels)
    assert stuck.averaged_epochs_ == [stuck.best_epoch_]  # every epoch on the plateau


def test_zoo_lstm_rows_follow_the_recipe(base_patient):
    """The standard rows: a fixed step budget without early stopping, the mean weights of
    the last epochs, series shifted in time in training; the quick rows stop early on
    held-out patients (their 2-minute budget); the paper protocol keeps the paper's 20
    epochs and its last weights."""
    lstm_rows = ["lstm-pwi", "lstm-pwi+aif", "lstm-pwi+dwi", "lstm-pwi+aif+dwi"]
    # the standard rows draw orthogonal recurrent weights and search learning rates
    # where that draw trains steadily (at most 0.002); the quick rows (their higher
    # rates) and the paper protocol (the paper states no initialisation) keep torch's
    expected = {"quick": (200, 2, 3, True, "uniform"),
                "standard": (320, 7, 3, False, "orthogonal"),
                "paper": (None, 0, 0, False, "uniform")}
    for protocol, recipe in expected.items():
        zoo = make_model_zoo(Cohort([base_patient]), models=lstm_rows, protocol=protocol)
        assert sorted(zoo) == sorted(lstm_rows)
        for pipeline, grid in zoo.values():
            model = pipeline.named_steps["model"]
            assert (model.max_steps, model.average_epochs, model.time_shift,
                    model.early_stopping, model.recurrent_init) == recipe
            if protocol == "standard":
                assert len(grid["model__lr"]) == 4 and max(grid["model__lr"]) <= 2e-3
    # the shift is 3 frames of the 60-point grid: the same share of another grid
    zoo = make_model_zoo(Cohort([base_patient]), models=["lstm-pwi"], n_timepoints=20)
    assert zoo["lstm-pwi"][0].named_steps["model"].time_shift == 1
