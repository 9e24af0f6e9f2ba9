"""How the package talks to its user (issue 18, item 5): warnings that name the user's
line, one ``verbose`` int (the old booleans deprecated), no print in library code, and
the comparison's one CSV writer (item 6)."""

import ast
import csv
import pathlib
import warnings

import nibabel as nib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sklearn_hemo
from sklearn_hemo.datasets import Cohort, Patient, make_stroke_cohort, save_cohort
from sklearn_hemo.linear_model import LinearRegressionClassifier
from sklearn_hemo.model_selection import ComparisonResult
from sklearn_hemo.model_selection._report import write_outputs
from sklearn_hemo.preprocessing import PatchExtractor
from sklearn_hemo.qc import write_qc_report
from sklearn_hemo.utils._warnings import find_stack_level


def _clipped_cohort():
    """One easy patient whose voxel (3, 3, 1) reads 0 in three frames (clipped)."""
    p = make_stroke_cohort(n_patients=1, shape=(8, 8, 2), n_frames=40, difficulty="easy",
                           random_state=0)[0]
    pwi = np.asarray(p.pwi.dataobj).copy()
    pwi[3, 3, 1, 20:23] = 0
    return Cohort([Patient("sub-z", nib.Nifti1Image(pwi, p.affine), p.dwi_b0, p.dwi_b1000,
                           echo_time=p.echo_time, repetition_time=p.repetition_time,
                           brain_mask=p.brain_mask)])


def test_find_stack_level_counts_the_package_frames_only():
    # called from this file (outside the package): 1, the caller of warnings.warn
    assert find_stack_level() == 1


def test_a_warning_raised_in_a_transform_names_the_users_line():
    cohort = _clipped_cohort()
    pipe = make_pipeline(PatchExtractor(cohort, inputs="pwi"), StandardScaler())
    with pytest.warns(UserWarning, match="sub-z: 3 PWI samples") as record:
        pipe.fit_transform(np.array([[0, 3, 3, 1], [0, 4, 4, 1]]))
    clipped = [w for w in record if "PWI samples" in str(w.message)]
    # not sklearn/utils/_set_output.py (the wrapper around transform), but this file
    assert clipped and all(w.filename == __file__ for w in clipped), \
        [w.filename for w in clipped]


def test_a_warning_raised_inside_a_search_names_the_users_line():
    # realistic patients are shorter than the common time grid: a note per patient, from
    # deep inside GridSearchCV -> Pipeline -> transform
    cohort = make_stroke_cohort(n_patients=2, shape=(12, 12, 2), random_state=0)
    X = np.array([[p, 5 + d, 6, 0] for p in range(2) for d in range(4)])
    y = np.tile([0, 1], 4)
    pipe = make_pipeline(PatchExtractor(cohort, inputs="pwi"), LinearRegressionClassifier())
    search = GridSearchCV(pipe, {"linearregressionclassifier__fit_intercept": [True]},
                          cv=2)
    with pytest.warns(UserWarning, match="common time grid") as record:
        search.fit(X, y)
    notes = [w for w in record if "common time grid" in str(w.message)]
    assert notes and all(w.filename == __file__ for w in notes), [w.filename for w in notes]


@pytest.mark.parametrize("call", ["save_cohort", "validate", "qc"])
def test_progress_is_deprecated_for_verbose(tmp_path, capsys, call):
    cohort = make_stroke_cohort(n_patients=2, shape=(8, 8, 1), difficulty="easy",
                                random_state=0)
    run = {"save_cohort": lambda **kw: save_cohort(cohort, tmp_path / "c", **kw),
           "validate": lambda **kw: cohort.validate(**kw),
           "qc": lambda **kw: write_qc_report(cohort, tmp_path / "qc", maps=False,
                                              overwrite=True, **kw)}[call]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # QC notes of the tiny patients
        with pytest.warns(FutureWarning, match="progress= is deprecated.*verbose=1") as old:
            run(progress=True, **({"overwrite": True} if call == "save_cohort" else {}))
        assert old[0].filename == __file__
        assert "patient" in capsys.readouterr().err  # progress=True still shows the bar
        kwargs = {"overwrite": True} if call == "save_cohort" else {}
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            run(verbose=0, **kwargs)
            assert capsys.readouterr() == ("", "")  # silent
            run(verbose=2, **kwargs)
    err = capsys.readouterr().err
    assert "sub-001" in err and "sub-002" in err  # verbose=2: a line per patient


def test_a_bad_verbose_is_refused_naming_the_function():
    cohort = make_stroke_cohort(n_patients=1, shape=(8, 8, 1), difficulty="easy",
                                random_state=0)
    with pytest.raises(TypeError, match="Cohort.validate: verbose must be an int"):
        cohort.validate(verbose="yes")
    with pytest.raises(ValueError, match="make_stroke_cohort: verbose must be 0 or more"):
        make_stroke_cohort(n_patients=1, shape=(8, 8, 1), verbose=-1)


def test_make_stroke_cohort_verbose_two_writes_a_line_per_patient(capsys):
    make_stroke_cohort(n_patients=2, shape=(8, 8, 1), difficulty="easy", random_state=0,
                       verbose=2)
    printed = capsys.readouterr()
    assert printed.out == "" and "simulated sub-001" in printed.err
    with pytest.warns(FutureWarning, match="make_stroke_cohort: progress="):
        make_stroke_cohort(n_patients=1, shape=(8, 8, 1), difficulty="easy",
                           random_state=0, progress=False)


def test_no_print_in_library_code():
    # the CLI prints (it is the CLI); the library talks through verbose and warnings
    root = pathlib.Path(sklearn_hemo.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "print"):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not found, found


def test_cli_verbosity_flags():
    from sklearn_hemo.cli import _build_parser, _verbose

    parser = _build_parser()
    for command in (["compare"], ["simulate", "out"], ["qc", "--data", "d", "--out", "o"],
                    ["import", "src", "--out", "o"],
                    ["train", "--data", "d", "--model", "linear", "--out", "o"]):
        assert _verbose(parser.parse_args(command)) == 1  # the default: progress bars
        assert _verbose(parser.parse_args(command + ["--quiet"])) == 0
        assert _verbose(parser.parse_args(command + ["-v"])) == 2
        assert _verbose(parser.parse_args(command + ["-vv"])) == 3
        assert _verbose(parser.parse_args(command + ["--verbose"])) == 2
        with pytest.raises(SystemExit):  # one or the other
            parser.parse_args(command + ["--quiet", "-v"])


def _result(table, volumes=None, summary=None):
    return ComparisonResult(table=table, fold_table=[], predictions={}, folds={},
                            best_params={}, replicates={}, volumes=volumes,
                            volumes_summary=summary)


def test_one_csv_writer_writes_a_missing_value_as_na_in_every_file(tmp_path):
    # NaN and None are written the same way (NA) in table.csv and volumes.csv: before,
    # the CLI's own writer wrote a NaN volume cell as "nan"
    row = dict(model="m", inputs="PWI", auc_roc=float("nan"), auc_roc_low=np.float64(0.1),
               auc_roc_high=0.9, auc_pr=np.nan, auc_pr_low=0.5, auc_pr_high=0.7,
               n_patients=3, n_voxels=10)
    volume = dict(model="m", fold=0, patient_id="sub-001", ht=1, risk_score=np.nan,
                  predicted_volume_ml=1.5, annotated_volume_ml=None, volume_error_ml=None,
                  dice=float("nan"))
    summary = dict(model="m", n_patients=1, occurrence_auc=None, dice_mean=np.nan,
                   volume_abs_error_mean_ml=0.25)
    write_outputs(_result([row], [volume], [summary]), tmp_path, plot=False)

    def cells(name):
        with open(tmp_path / name, newline="") as handle:
            return next(csv.DictReader(handle))

    table, volumes, summaries = (cells("table.csv"), cells("volumes.csv"),
                                 cells("volumes_summary.csv"))
    assert table["auc_roc"] == table["auc_pr"] == "NA"
    assert volumes["risk_score"] == volumes["dice"] == volumes["annotated_volume_ml"] == "NA"
    assert summaries["dice_mean"] == summaries["occurrence_auc"] == "NA"
    # the rest as before: floats by repr, numpy floats too
    assert table["auc_roc_low"] == "0.1" and volumes["predicted_volume_ml"] == "1.5"
    assert "nan" not in (tmp_path / "volumes.csv").read_text()
    # no volumes asked for: no volumes files
    write_outputs(_result([row]), tmp_path / "plain", plot=False)
    assert not (tmp_path / "plain" / "volumes.csv").exists()
