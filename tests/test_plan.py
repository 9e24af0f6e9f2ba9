"""The plan of a comparison (dry run): fits counted from grids and folds, calibrated times."""

import json
import math

import numpy as np
import pytest
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
    # nothing ran: only the plan is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(plan.rows))
    logistic = next(row for row in plan.rows if row["model"] == "logistic")
    assert logistic["fits_per_task"] == 3 * 2 + 1 and logistic["fits"] == 21
    for row in plan.rows:
        assert row["seconds"] > 0 and row["seconds_per_task"] > 0
        assert row["seconds"] == pytest.approx(row["seconds_per_task"] * RUN["n_outer"])
        assert row["peak_task_mb"] > 0
        # one small fit per candidate, and the first candidate at twice the size
        sizes = [n for n, _ in row["calibration"]["fit_seconds"]]
        assert len(sizes) == row["candidates"] + 1
    totals = plan.totals
    serial = totals["task_seconds"]
    assert serial == pytest.approx(sum(row["seconds"] for row in plan.rows))
    # two workers: at least half the serial time, at most all of it
    assert serial / 2 <= totals["projected_seconds"] - totals["features_seconds"] <= serial
    assert totals["peak_worker_mb"] == max(row["peak_task_mb"] for row in plan.rows)
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
