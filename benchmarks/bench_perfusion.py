"""Benchmark: perfusion maps of a whole paper-sized patient, vectorised vs per voxel.

One simulated patient on the grid of Yu et al. (128 x 128 x 20 voxels, 60 frames 1.8 s
apart, :func:`~sklearn_hemo.datasets.make_stroke_cohort`) is converted to concentration,
then CBF, CBV, MTT and Tmax are computed for every brain voxel in two ways:

* ``vectorised``: one :func:`sklearn_hemo.perfusion.perfusion_maps` call on all brain
  voxels (one SVD of the AIF matrix, voxels as rows of matrix products);
* ``per-voxel``: the plain alternative, a Python loop calling it on one curve at a time
  (one SVD per voxel). Looping over the ~150,000 brain voxels would take long, so the
  loop runs on a random subsample of ``--loop-voxels`` voxels and its time is
  **extrapolated** linearly to all brain voxels (printed as such).

Both use the same method; by default every method is measured. The script prints the
times and the ratio per-voxel / vectorised, and checks that both give the same maps on
the subsample. Run ``python benchmarks/bench_perfusion.py`` (about a minute on one core)
or ``--shape 64 64 10`` for a quicker look.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sklearn_hemo.datasets import make_stroke_cohort
from sklearn_hemo.perfusion import perfusion_maps
from sklearn_hemo.signal import concentration, patient_aif


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 128, 20))
    parser.add_argument("--n-frames", type=int, default=60)
    parser.add_argument("--loop-voxels", type=int, default=300)
    parser.add_argument("--method", nargs="+", default=["osvd", "csvd", "ssvd"],
                        choices=["osvd", "csvd", "ssvd"])
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, seconds: checks that the script runs (the tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.shape, args.loop_voxels = (24, 24, 3), 20

    start = time.perf_counter()
    patient = make_stroke_cohort(n_patients=1, shape=tuple(args.shape),
                                 n_frames=args.n_frames, repetition_time=1.8,
                                 random_state=args.random_state)[0]
    brain = patient.get_brain_mask()
    signal = np.asarray(patient.pwi.dataobj)[brain].astype(np.float64)
    conc = concentration(signal, patient.echo_time)
    aif = patient_aif(patient, n_timepoints=patient.n_frames, time_step=1.8)
    n_brain = conc.shape[0]
    print(f"patient {tuple(args.shape)} x {args.n_frames} frames: {n_brain} brain voxels "
          f"(simulated and converted in {time.perf_counter() - start:.1f} s)")

    rng = np.random.default_rng(args.random_state)
    sample = rng.choice(n_brain, size=min(args.loop_voxels, n_brain), replace=False)
    print(f"{'method':<6} {'vectorised s':>13} {'per-voxel s':>12} {'ratio':>8}  note")
    for method in args.method:
        start = time.perf_counter()
        maps = perfusion_maps(conc, aif, 1.8, method=method)
        vectorised = time.perf_counter() - start

        start = time.perf_counter()
        looped = [perfusion_maps(conc[i], aif, 1.8, method=method) for i in sample]
        per_voxel = (time.perf_counter() - start) / sample.size * n_brain
        for name in ("cbf", "cbv", "mtt", "tmax"):
            np.testing.assert_allclose([float(m[name]) for m in looped], maps[name][sample],
                                       rtol=1e-6, atol=1e-6)
        print(f"{method:<6} {vectorised:>13.2f} {per_voxel:>12.1f} {per_voxel / vectorised:>7.0f}x"
              f"  per-voxel extrapolated from {sample.size} voxels; same maps")


if __name__ == "__main__":
    main()
