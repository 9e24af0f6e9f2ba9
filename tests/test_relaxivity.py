"""The relaxivity of gadolinium in whole blood and tissue (sklearn_hemo.relaxivity)."""

import json

import numpy as np
import pytest

from sklearn_hemo.datasets import load_cohort, make_stroke_cohort, save_cohort
from sklearn_hemo.relaxivity import (
    BLOOD_RELAXIVITY,
    TISSUE_RELAXIVITY,
    blood_concentration,
    blood_delta_r2star,
    tissue_concentration,
    tissue_delta_r2star,
)


@pytest.mark.parametrize("field, a, b", [(1.5, 7.6, 0.574), (3.0, 15.2, 2.296)])
def test_blood_follows_the_quadratic_of_kjolby_2006(field, a, b):
    # Kjolby et al. MRM 2006, whole blood: Delta R2* = a C + b C^2 (1/s, C in mM)
    c = np.array([0.0, 1.0, 5.0, 10.0])
    assert np.allclose(blood_delta_r2star(c, field), a * c + b * c**2)
    # 5 mM at 1.5 T: 38 + 14.35 = 52.35 1/s; at TE 30 ms the blood keeps exp(-1.57) = 21%
    if field == 1.5:
        assert blood_delta_r2star(5.0) == pytest.approx(52.35)
        assert np.exp(-0.030 * blood_delta_r2star(5.0)) == pytest.approx(0.208, abs=1e-3)
    assert BLOOD_RELAXIVITY[field] == (a, b)


@pytest.mark.parametrize("field, r", [(1.5, 44.0), (3.0, 87.0)])
def test_tissue_is_linear(field, r):
    c = np.array([0.0, 0.1, 0.3])
    assert np.allclose(tissue_delta_r2star(c, field), r * c)
    assert TISSUE_RELAXIVITY[field] == r
    # the tissue relaxivity per mM is larger than the blood's near 0 (extravascular dephasing)
    assert r > BLOOD_RELAXIVITY[field][0]


@pytest.mark.parametrize("field", [1.5, 3.0])
def test_inverses_round_trip(field):
    c = np.linspace(-3.0, 20.0, 47)
    assert np.allclose(blood_concentration(blood_delta_r2star(c, field), field), c)
    assert np.allclose(tissue_concentration(tissue_delta_r2star(c, field), field), c)
    r = np.linspace(-50.0, 400.0, 31)
    assert np.allclose(blood_delta_r2star(blood_concentration(r, field), field), r)


def test_negative_delta_r2star_extends_linearly_through_zero():
    a, _ = BLOOD_RELAXIVITY[1.5]
    r = np.array([-1e-6, -0.5, 0.0, 1e-6, 0.5])
    c = blood_concentration(r)
    assert np.all(np.isfinite(c))
    assert np.all(np.diff(c[np.argsort(r)]) >= 0)  # monotonic
    assert np.allclose(c[[0, 3]], r[[0, 3]] / a, rtol=1e-4)  # slope 1/a at 0
    assert c[1] == -blood_concentration(0.5)  # odd
    assert isinstance(blood_concentration(3.0), float)


@pytest.mark.parametrize("func", [blood_delta_r2star, blood_concentration,
                                  tissue_delta_r2star, tissue_concentration])
@pytest.mark.parametrize("field", [7.0, 0.0, float("nan")])
def test_unsupported_field_strength_names_the_fix(func, field):
    with pytest.raises(ValueError, match=r"1\.5 or 3\.0"):
        func(1.0, field)


def test_field_strength_is_written_and_read(tmp_path):
    cohort = make_stroke_cohort(2, (8, 8, 1), difficulty="easy", random_state=0)
    assert all(p.field_strength is None for p in cohort)
    cohort[0].field_strength = 3.0
    save_cohort(cohort, tmp_path / "c")
    sidecar = json.loads((tmp_path / "c" / "sub-001" / "pwi.json").read_text())
    assert sidecar["MagneticFieldStrength"] == 3.0
    assert "MagneticFieldStrength" not in json.loads(
        (tmp_path / "c" / "sub-002" / "pwi.json").read_text())
    loaded = load_cohort(tmp_path / "c")
    assert loaded[0].field_strength == 3.0
    assert loaded[1].field_strength is None


def test_a_bad_field_strength_in_the_sidecar_is_an_error(tmp_path):
    from sklearn_hemo.exceptions import CohortError

    cohort = make_stroke_cohort(1, (8, 8, 1), difficulty="easy", random_state=0)
    save_cohort(cohort, tmp_path / "c")
    path = tmp_path / "c" / "sub-001" / "pwi.json"
    sidecar = json.loads(path.read_text())
    sidecar["MagneticFieldStrength"] = "1.5T"
    path.write_text(json.dumps(sidecar))
    with pytest.raises(CohortError, match="MagneticFieldStrength"):
        load_cohort(tmp_path / "c")
