"""Supported versions: pyproject.toml's floors are what CI installs (.ci/lower-bounds.txt,
used by .ci/lower-bounds), and the fixes for older releases (sklearn_hemo.utils._versions)
behave as the newest release does."""

from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from sklearn_hemo.utils import _versions
from sklearn_hemo.utils._versions import StratifiedGroupKFold

ROOT = Path(__file__).resolve().parents[1]
# its floor cannot be installed here (PyPI's old torch is a multi-GB CUDA build)
UNTESTED_FLOORS = {"torch"}


def _core():
    tomllib = pytest.importorskip(
        "tomllib", reason="reading pyproject.toml needs tomllib, standard from Python 3.11")
    with open(ROOT / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return [Requirement(d) for d in deps]


def _bound(requirement, operator):
    versions = [Version(s.version) for s in requirement.specifier if s.operator == operator]
    assert len(versions) == 1, f"{requirement}: expected one '{operator}' bound"
    return versions[0]


def _pinned():
    pins = {}
    for line in (ROOT / ".ci" / "lower-bounds.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{line}: pin the floor exactly with =="
            pins[requirement.name] = Version(spec.version)
    return pins


def test_the_lower_bounds_file_pins_every_floor_of_pyproject():
    floors = {r.name: _bound(r, ">=") for r in _core() if r.name not in UNTESTED_FLOORS}
    assert _pinned() == floors


def test_every_core_dependency_stays_below_a_next_major_version():
    # "<N": below a major release not yet out when the bound was written (numpy>=1.24,<3)
    for requirement in _core():
        floor, ceiling = _bound(requirement, ">="), _bound(requirement, "<")
        assert len(ceiling.release) == 1 and ceiling.major > floor.major, requirement


# -- StratifiedGroupKFold's shuffle (scikit-learn < 1.8 shuffled the class counts alone) --
def _grouped_labels(seed):
    # 30 patients of 5-39 voxels, 12 with HT (all their voxels positive)
    rng = np.random.default_rng(seed)
    groups = np.repeat(rng.permutation(np.arange(100, 130)), rng.integers(5, 40, size=30))
    return (groups < 112).astype(int), groups


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_stratified_group_folds_are_stratified(seed):
    y, groups = _grouped_labels(seed)
    cv = StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=seed)
    shares = [y[test].mean() for _, test in cv.split(y, y, groups)]
    # within 0.03 here; scikit-learn < 1.8's own shuffle, which balances other patients'
    # counts, is 0.13-0.52 apart on these seeds
    assert max(shares) - min(shares) < 0.05, shares


@pytest.mark.skipif(_versions.SHUFFLED_GROUP_COUNTS,
                    reason="the reference is scikit-learn's own fixed shuffle (1.8+)")
@pytest.mark.parametrize("seed", range(5))
def test_the_backported_shuffle_gives_scikit_learns_folds(seed, monkeypatch):
    from sklearn.model_selection import StratifiedGroupKFold as Reference

    y, groups = _grouped_labels(seed)
    expected = list(Reference(3, shuffle=True, random_state=seed).split(y, y, groups))
    monkeypatch.setattr(_versions, "SHUFFLED_GROUP_COUNTS", True)
    got = list(StratifiedGroupKFold(3, shuffle=True, random_state=seed).split(y, y, groups))
    for (train, test), (train_ref, test_ref) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(train, train_ref)
        np.testing.assert_array_equal(test, test_ref)
