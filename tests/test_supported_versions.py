"""The supported versions of the core dependencies: what pyproject.toml declares is what CI
installs at the floors (.ci/lower-bounds.txt, used by .ci/lower-bounds)."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip(
    "tomllib", reason="reading pyproject.toml needs tomllib, in the standard library from 3.11"
)

ROOT = Path(__file__).resolve().parents[1]
# its floor cannot be installed here (PyPI's old torch is a multi-GB CUDA build)
UNTESTED_FLOORS = {"torch"}


def _core():
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
