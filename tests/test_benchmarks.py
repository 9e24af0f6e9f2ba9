"""Every benchmark runs: each script in ``benchmarks/`` has a ``--smoke`` mode (tiny sizes,
seconds) that this test runs in a fresh interpreter, so that a change of the library that
breaks a benchmark's reference or call fails here rather than months later."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))
# Per script; the smoke modes take seconds each (most of it the imports).
TIMEOUT = 180


def test_every_benchmark_has_a_smoke_mode():
    assert len(BENCHMARKS) >= 10, [p.name for p in BENCHMARKS]
    for path in BENCHMARKS:
        assert "--smoke" in path.read_text(encoding="utf-8"), f"{path.name}: add --smoke"


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_smoke_mode_runs(path, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(path), "--smoke"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, (
        f"{path.name} --smoke failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}")
    assert proc.stdout.strip(), f"{path.name} --smoke printed nothing"
