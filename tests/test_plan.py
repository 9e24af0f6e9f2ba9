"""The plan of a comparison (dry run): fits counted from grids and folds, calibrated times."""

import json
import math
import sys
import time

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_hemo.datasets import make_stroke_cohort
from sklearn_hemo.model_selection import _plan as plan_module
from sklearn_hemo.model_selection import compare_models, make_model_zoo, plan_comparison
from sklearn_hemo.preprocessing import PatchExtractor

SMALL = {"n_patients": 8, "shape": (32, 32, 2), "ht_prevalence": 0.6, "n_frames": 40,
         "random_state": 0}
RUN = {"n_outer": 3, "n_inner": 2, "n_samples": 200, "random_state": 0}


@pytest.fixture(scope="module")
def cohort():
    return make_stroke_cohort(**SMALL)


def _zoo(cohort):
    zoo = make_model_zoo(cohort, models=["linear"], random_state=0)
    zoo["logistic"] = (
        Pipeline([("features", PatchExtractor(cohort, inputs="pwi", n_timepoints=20)),
                  ("scale", StandardScaler()),
                  ("model", LogisticRegression(max_iter=300))]),
        {"model__C": [0.01, 0.1, 1.0]},
    )
    return zoo


@pytest.mark.parametrize("n_outer, n_inner", [(3, 2), (4, 3)])
def test_fits_per_model_follow_the_grid_sizes_and_folds(cohort, n_outer, n_inner):
    zoo = make_model_zoo(cohort, "paper", random_state=0)
    plan = plan_comparison(cohort, zoo, protocol="paper", n_outer=n_outer, n_inner=n_inner,
                           n_samples=200, calibrate=False)
    assert [row["model"] for row in plan.rows] == list(zoo)
    for row in plan.rows:
        grid = zoo[row["model"]][1]
        candidates = math.prod(len(values) for values in grid.values())
        # a searched model: every candidate on every inner split, plus the refit
        per_task = candidates * n_inner + 1 if candidates > 1 else 1
        assert row["candidates"] == candidates
        assert row["tasks"] == n_outer
        assert row["fits_per_task"] == per_task
        assert row["fits"] == per_task * n_outer
        assert row["seconds"] is None and row["peak_task_mb"] is None
    # the paper's LSTM searches 4 learning rates (N_CANDIDATES, the same for every tuned
    # family): 4 x n_inner inner fits + 1 refit per fold
    lstm = next(row for row in plan.rows if row["model"] == "lstm-pwi")
    assert lstm["candidates"] == 4 and lstm["fits_per_task"] == 4 * n_inner + 1
    assert plan.totals["tasks"] == n_outer * len(zoo)
    assert plan.totals["fits"] == sum(row["fits"] for row in plan.rows)


def test_dry_run_calibrates_projects_and_writes_plan_json(cohort, tmp_path):
    plan = compare_models(cohort, _zoo(cohort), dry_run=True, n_jobs=2, out_dir=tmp_path,
                          **RUN)
    # nothing ran: only the plan is written (and the owner file that records it)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sklearn-hemo-owner.json",
                                                          "plan.json"]
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(plan.rows))
    logistic = next(row for row in plan.rows if row["model"] == "logistic")
    assert logistic["fits_per_task"] == 3 * 2 + 1 and logistic["fits"] == 21
    for row in plan.rows:
        assert row["seconds"] > 0 and row["seconds_per_task"] > 0
        assert row["seconds"] == pytest.approx(row["seconds_per_task"] * RUN["n_outer"])
        assert row["peak_task_mb"] > 0
        # every candidate at the two calibration sizes
        small, big = row["calibration"]["voxels"]
        sizes = [n for n, _ in row["calibration"]["fit_seconds"]]
        assert sizes == [small, big] * row["candidates"]
    totals = plan.totals
    serial = totals["task_seconds"]
    assert serial == pytest.approx(sum(row["seconds"] for row in plan.rows))
    # two workers: at least half the serial time, at most all of it
    assert serial / 2 <= totals["projected_seconds"] - totals["features_seconds"] <= serial
    # a worker keeps every row's first-call memory and the patients' cache between tasks,
    # and runs the largest task on top of them
    parts = totals["peak_worker_parts_mb"]
    assert totals["peak_worker_mb"] == pytest.approx(sum(parts.values()))
    assert parts["first_call"] == pytest.approx(
        sum(row["peak_task_parts_mb"]["first_call"] for row in plan.rows))
    assert parts["task"] == pytest.approx(max(
        row["peak_task_parts_mb"]["inputs"] + row["peak_task_parts_mb"]["fit"]
        for row in plan.rows))
    assert totals["peak_worker_mb"] >= max(row["peak_task_mb"] for row in plan.rows)
    assert "projected total on 2 worker(s)" in str(plan)


def test_scaling_laws_and_budgets():
    from sklearn.ensemble import RandomForestClassifier

    from sklearn_hemo.discriminant import SRKDAClassifier
    from sklearn_hemo.neural import LSTMClassifier
    from sklearn_hemo.svm import ScalableSVC

    svm = ScalableSVC(max_exact_samples=1000, n_components=50)
    assert plan_module._law(svm, 1000) == ("n^2", {})
    # beyond the exact limit the calibration runs the Nystroem path too
    assert plan_module._law(svm, 1001) == (("nystroem", 50), {"max_exact_samples": 1})
    assert plan_module._law(SRKDAClassifier(), 10)[0] == "n^3"
    assert plan_module._law(RandomForestClassifier(), 10)[0] == "n log n"
    # Nystroem work: n m^2 + m^3 with m capped at n
    assert plan_module._work(("nystroem", 50), 20)[0] == 20 * 20 * 20 + 20 ** 3
    assert plan_module._work(("nystroem", 50), 200)[0] == 200 * 50 * 50 + 50 ** 3
    # an affine law through two points, and no negative slope from noisy timings
    assert plan_module._affine([(100, 2.0), (200, 3.0)]) == pytest.approx((1.0, 0.01))
    assert plan_module._affine([(100, 3.0), (200, 2.0)]) == pytest.approx((0.0, 3.0 / 200))
    # steeper than the law between the sizes: proportional through the larger size
    assert plan_module._affine([(100, 1.0), (200, 3.0)]) == pytest.approx((0.0, 3.0 / 200))
    params, time_factor, size_factor = plan_module._budget_params(
        LSTMClassifier(max_epochs=20), "model__")
    assert params == {"model__max_epochs": 2} and time_factor == 10 and size_factor == 1
    params, time_factor, size_factor = plan_module._budget_params(
        RandomForestClassifier(n_estimators=300), "model__")
    assert params == {"model__n_estimators": 20} and time_factor == size_factor == 15


def test_schedule_deals_tasks_to_the_first_free_worker():
    assert plan_module._schedule([4, 1, 1, 1, 1], 2) == 4
    assert plan_module._schedule([1, 1, 1, 1], 2) == 2
    assert plan_module._schedule([3, 3, 2], 1) == 8
    assert np.isclose(plan_module._schedule([], 3), 0)


def test_cli_dry_run_prints_the_plan_and_writes_plan_json(cohort, tmp_path, capsys):
    from sklearn_hemo.cli import main
    from sklearn_hemo.datasets import save_cohort

    data = save_cohort(cohort, tmp_path / "cohort")
    out = tmp_path / "results"
    code = main(["compare", "--data", str(data), "--models", "linear", "--n-outer", "3",
                 "--n-inner", "2", "--n-samples", "200", "--n-jobs", "2", "--out", str(out),
                 "--dry-run", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "projected total on 2 worker(s)" in printed and "Nothing was run" in printed
    # (besides the hidden owner file that lets the real run resume in this folder)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["plan.json"]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["rows"][0]["model"] == "linear" and plan["rows"][0]["fits"] == 3


class _Sleeper(ClassifierMixin, BaseEstimator):
    """Fits in ``seconds[i]`` on its i-th fit (of every instance), or ``per_voxel`` seconds
    per training voxel."""

    calls = []

    def __init__(self, seconds=(), per_voxel=0.0):
        self.seconds = seconds
        self.per_voxel = per_voxel

    def fit(self, X, y):
        k = len(_Sleeper.calls)
        _Sleeper.calls.append(len(X))
        time.sleep(self.seconds[k % len(self.seconds)] if self.seconds
                   else self.per_voxel * len(X))
        self.classes_ = np.unique(y)
        return self

    def decision_function(self, X):
        return np.zeros(len(X))


def test_short_calibration_fits_are_timed_three_times_and_the_median_kept():
    X, y = np.zeros((10, 2)), np.arange(10) % 2
    _Sleeper.calls.clear()
    # one slow outlier among three short fits: the median ignores it
    _, (wall, _), _ = plan_module._fit_timed(_Sleeper(seconds=(0.01, 0.3, 0.02)), {}, X, y,
                                             None, None, [], repeat=True)
    assert len(_Sleeper.calls) == 3
    assert 0.02 <= wall < 0.1
    # a long fit is timed once
    _Sleeper.calls.clear()
    _, (wall, _), _ = plan_module._fit_timed(_Sleeper(seconds=(0.6,)), {}, X, y, None, None,
                                             [], repeat=True)
    assert len(_Sleeper.calls) == 1 and wall >= 0.6


def test_cheap_fits_are_calibrated_on_doubled_sizes_slow_ones_are_not(cohort):
    from sklearn_hemo.model_selection._setup import make_setup

    zoo = {"cheap": (Pipeline([("model", _Sleeper(per_voxel=1e-6))]), {}),
           "slow": (Pipeline([("model", _Sleeper(
               per_voxel=1.2 * plan_module._MIN_FIT_SECONDS / 20))]), {})}
    plan = plan_comparison(cohort, zoo, calibration_samples=10, **RUN)
    cheap, slow = (row["calibration"] for row in plan.rows)
    setup = make_setup(cohort, zoo, "quick", RUN["n_outer"], RUN["n_inner"],
                       RUN["n_samples"], RUN["random_state"], "cpu")
    n_max = max(np.sum(setup.fold != k) for k in range(RUN["n_outer"]))
    # the cheap row doubles its sizes (10/20, 20/40, ...) until the next pair would pass
    # the largest outer training part; its law is fitted on the last pair
    sizes = [small for small, _, _ in cheap["sizes_tried"]]
    assert sizes[0] == 10 and len(sizes) >= 2
    assert all(b == 2 * a for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    assert all(big == 2 * small for small, big, _ in cheap["sizes_tried"])
    assert 2 * sizes[-1] <= n_max < 4 * sizes[-1]
    assert cheap["voxels"] == [sizes[-1], 2 * sizes[-1]]
    assert [n for n, _ in cheap["fit_seconds"]] == [sizes[-1], 2 * sizes[-1]]
    # its fit at 20 voxels takes longer than the threshold: no doubling
    assert [small for small, _, _ in slow["sizes_tried"]] == [10]
    assert slow["voxels"] == [10, 20]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_memory_a_fit_adds_is_seen_even_after_a_fit_freed_as_much():
    # a warm process reuses what an earlier fit freed: without handing the free pages
    # back, the second fit would seem to add nothing
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.RandomState(0)
    X = rng.randn(3000, 20)
    y = (X[:, 0] + rng.randn(3000) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=100, random_state=0)
    added = []
    for _ in range(2):
        model, _, bytes_added = plan_module._fit_timed(forest, {}, X, y, None, None, [])
        added.append(bytes_added)
        del model
    assert added[0] > 5 * 2**20
    assert added[1] > 0.5 * added[0]


def test_a_row_that_reads_images_in_its_tasks_is_charged_the_patient_cache(cohort):
    plan = plan_comparison(cohort, ["roi-leakage-proxy", "linear"], **RUN)
    roi, linear = plan.rows
    assert roi["calibration"]["cold_read_seconds"] is not None
    assert roi["calibration"]["cache_mb_per_patient"] > 0
    assert roi["peak_task_parts_mb"]["patient_cache"] > 0
    assert linear["peak_task_parts_mb"]["patient_cache"] == 0
    assert plan.totals["peak_worker_parts_mb"]["cache"] == pytest.approx(
        roi["peak_task_parts_mb"]["patient_cache"])


def test_only_the_per_unit_part_of_a_fit_scales_with_its_budget():
    # t = F + B u with F = 1 s per fit and u = 0.01 s per epoch and voxel/100: a fit cut to
    # 2 epochs of a 20-epoch budget, timed at 100 and 200 voxels and once whole at 200
    def t(n, epochs):
        return 1.0 + epochs * 0.01 * n / 100

    cal = {"law": "linear", "n_cal": 100, "n_big": 200, "time_factor": 10.0,
           "times": [(0, 100, (t(100, 2),) * 2), (0, 200, (t(200, 2),) * 2)],
           "whole_budget": (200, (t(200, 20),) * 2), "size_factor": 1.0,
           "score_per_voxel": (0.0, 0.0), "one_off": (0.0, 0.0), "cold": None}
    # one candidate, one task of 1,000 training voxels: F once, 20 epochs of u
    seconds = plan_module._project(0, cal, [{}], np.array([1000]), np.array([0]), 5, 1, [4])
    assert seconds == [pytest.approx(t(1000, 20))]
    # without the whole-budget fit, F would be charged once per cut-budget share
    naive = plan_module._project(0, {**cal, "whole_budget": None}, [{}], np.array([1000]),
                                 np.array([0]), 5, 1, [4])
    assert naive[0] == pytest.approx(10 * t(1000, 2))


def test_tasks_that_run_side_by_side_are_charged_their_measured_slow_down(cohort):
    cal = {"law": "linear", "n_cal": 100, "n_big": 200, "time_factor": 1.0,
           "times": [(0, 100, (1.0, 1.0)), (0, 200, (2.0, 2.0))], "whole_budget": None,
           "size_factor": 1.0, "score_per_voxel": (0.0, 0.0), "one_off": (0.0, 0.0),
           "cold": None}
    args = ([{}], np.array([400]), np.array([0]), 5, 2, [4])
    alone = plan_module._project(0, cal, *args)
    beside = plan_module._project(0, {**cal, "contention": (1.5, 1.2)}, *args)
    assert beside == [pytest.approx(1.5 * alone[0])]
    assert plan_module._project(1, {**cal, "contention": (1.5, 1.2)}, *args) == [
        pytest.approx(1.2 * alone[0])]
    # one worker: nothing runs beside a task, and no worker is started to find out
    assert plan_module._contention(None, 1) == (1.0, 1.0)
    # two workers: measured in two loky workers, never below 1
    one = plan_comparison(cohort, ["linear"], n_jobs=1, **RUN).rows[0]["calibration"]
    two = plan_comparison(cohort, ["linear", "roi-leakage-proxy"], n_jobs=2, **RUN).rows
    assert one["contention"] == [1.0, 1.0]
    assert all(value > 0 for row in two for value in row["calibration"]["contention"])
    # (the ROI row's tasks read images: its probe fits start from an empty patient cache,
    # and are timed alone as well, a slow-down of at least 1)
    assert all(value >= 1.0 for value in two[1]["calibration"]["contention"])


def test_the_side_by_side_factor_is_taken_against_the_calibration_round():
    # the projection is built on the calibration's round of fits: the factor is the
    # side-by-side time over that round (which cancels a calibration that ran slow), not
    # a slow-down floored at 1
    rng = np.random.RandomState(0)
    X, y = rng.normal(size=(400, 5)), np.arange(400) % 2
    pipeline = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())])
    args = (pipeline, [{}, {"model__C": 0.1}], X, y, None, None, [])
    slow_reference = plan_module._contention(args, 2, rounds=3, reference=(100.0, 100.0))
    assert all(0 < value < 0.01 for value in slow_reference)
    # without a reference the same fits are timed alone in a worker: a slow-down
    assert all(value >= 1.0 for value in plan_module._contention(args, 2, rounds=3))


def test_each_candidate_is_projected_on_its_own_growth_with_the_voxels():
    # the first candidate costs 0.9 s + 1 ms per voxel; the second is cheaper on the
    # calibration sizes but grows ten times faster with the voxels (LIBSVM at a large C)
    cal = {"law": "linear", "n_cal": 100, "n_big": 200, "time_factor": 1.0,
           "times": [(0, 100, (1.0, 1.0)), (0, 200, (1.1, 1.1)),
                     (1, 100, (0.1, 0.1)), (1, 200, (0.2, 0.2))],
           "whole_budget": None, "size_factor": 1.0, "score_per_voxel": (0.0, 0.0),
           "one_off": (0.0, 0.0), "cold": None}
    # one task of 1,000 training voxels, 5 inner folds of 800: both candidates on every
    # inner split (1.7 s + 0.8 s), and the refit of an average candidate ((1.9 s + 1 s) / 2)
    seconds = plan_module._project(0, cal, [{}, {}], np.array([1000]), np.array([0]), 5, 1,
                                   [4])
    assert seconds == [pytest.approx(5 * (1.7 + 0.8) + (1.9 + 1.0) / 2)]


def test_the_side_by_side_probe_fits_for_at_least_its_probe_seconds():
    rounds = plan_module._probe_rounds
    one_second = math.ceil(plan_module._PROBE_SECONDS / 1.0)
    assert 3 < one_second <= plan_module._MAX_PROBE_ROUNDS
    assert rounds(1.0) == one_second
    assert rounds(1.0) * 1.0 >= plan_module._PROBE_SECONDS
    # a long round: still three, for a median
    assert rounds(50.0) == 3
    # a round too short to time: bounded
    assert rounds(0.0) == rounds(1e-6) == plan_module._MAX_PROBE_ROUNDS


def test_the_side_by_side_probe_weighs_each_candidate_by_its_cost():
    # a round is one fit of each candidate: 0.05 s + 0.15 s
    X, y = np.zeros((10, 2)), np.arange(10) % 2
    _Sleeper.calls.clear()
    wall, _ = plan_module._probe_fits(_Sleeper(), [{"seconds": (0.05,)}, {"seconds": (0.15,)}],
                                      X, y, None, None, [], 2)
    assert len(_Sleeper.calls) == 4
    assert 0.2 <= wall < 0.3


class _Hog(ClassifierMixin, BaseEstimator):
    """Keeps ``mb`` MiB (touched) as a fitted attribute."""

    def __init__(self, mb=1):
        self.mb = mb

    def fit(self, X, y):
        self.ballast_ = np.ones(self.mb * 2**20 // 8)
        self.classes_ = np.unique(y)
        return self

    def decision_function(self, X):
        return np.zeros(len(X))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_a_task_is_charged_the_memory_of_its_largest_candidate(cohort):
    # the first candidate keeps 1 MiB, the second 64 MiB: a task fits both
    zoo = {"hog": (Pipeline([("model", _Hog())]), {"model__mb": [1, 64]})}
    row = plan_comparison(cohort, zoo, **RUN).rows[0]
    assert row["peak_task_parts_mb"]["fit"] >= 48


def test_a_row_that_reads_images_is_charged_per_image_byte_of_its_training_patients():
    # warm, a fit takes 1 s at 200 voxels; cold, 3 s: 2 s reading 100 bytes of images
    cal = {"law": "linear", "n_cal": 100, "n_big": 200, "time_factor": 1.0,
           "times": [(0, 100, (0.5, 0.5)), (0, 200, (1.0, 1.0))], "whole_budget": None,
           "size_factor": 1.0, "score_per_voxel": (0.0, 0.0), "one_off": (0.0, 0.0),
           "cold": (3.0, 3.0), "cal_bytes": 100}
    # two tasks of 200 voxels whose training patients hold 100 and 300 bytes
    seconds = plan_module._project(0, cal, [{}], np.array([200, 200]), np.array([0, 0]), 5,
                                   1, [100, 300])
    assert seconds == [pytest.approx(1.0 + 2.0), pytest.approx(1.0 + 6.0)]


def test_image_bytes_are_read_from_the_headers(cohort):
    patient = cohort[0]
    expected = sum(np.asarray(getattr(patient, name).dataobj).nbytes
                   for name in ("pwi", "dwi_b0", "dwi_b1000"))
    assert plan_module._image_bytes(patient) == expected
