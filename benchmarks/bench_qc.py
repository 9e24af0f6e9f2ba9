"""How well the automatic steps do on the realistic simulated cohort (issue 14).

Prints, over ``--n-patients`` simulated patients (``difficulty="realistic"``):

* the AIF hit rate: the share of patients whose detected AIF voxels are all arteries
  (``truth["aif_voxels"]``), and how many detected voxels fell on veins;
* the brain-mask purity: the share of mask voxels that are not brain
  (``truth["head"] != 1``; target <= 2%), and the share of the brain covered;
* the dropped leading frames against ``truth["n_nonsteady"]``;
* for comparison, the same for the old mask (10% of the 99th percentile of the first
  five frames) and the old AIF detection (the cluster analysis without the physiological
  criteria: ``method="cluster", reject_late=False, peak_fraction=1, n_rounds=2,
  n_clusters=5``; on the same dropped frames and mask).

Run: ``PYTHONPATH=. python benchmarks/bench_qc.py [--n-patients 60] [--shape 48 48 8]
[--seeds 0 1 2]``. The default is the simulator's default geometry, 48 x 48 x 8 (5 mm
in-plane voxels), where the arteries (1-2 mm radius) fill at most about half a voxel
(``truth["aif_voxels"]`` holds the voxels at least 20% artery; ``truth["artery_fraction"]``
the partial-volume map). With several ``--seeds`` it prints each seed's cohort, then the
hit rate of each seed.
"""

from __future__ import annotations

import argparse
import inspect
import time
import warnings

import numpy as np

from sklearn_hemo.datasets import make_stroke_cohort
from sklearn_hemo.qc import patient_qc
from sklearn_hemo.signal import concentration, detect_aif, steady_frame_times


def _old_mask(patient):
    baseline = np.asarray(patient.pwi.dataobj[..., :5], dtype=np.float32).mean(axis=-1)
    return baseline > 0.1 * np.percentile(baseline, 99)


def _old_aif_voxels(patient, qc):
    data = np.asarray(patient.pwi.dataobj)
    start = qc.n_nonsteady
    curves = concentration(data[qc.brain_mask][:, start:].astype(np.float32),
                           patient.echo_time, baseline=slice(0, qc.arrival - start))
    _, idx = detect_aif(curves, steady_frame_times(patient, start), method="cluster",
                        reject_late=False, peak_fraction=1.0, n_rounds=2, n_clusters=5,
                        return_indices=True)
    return np.argwhere(qc.brain_mask)[idx]


def _share_in(voxels, reference):
    ref = {tuple(v) for v in np.asarray(reference).tolist()}
    return np.mean([tuple(v) in ref for v in np.asarray(voxels).tolist()]) if len(voxels) \
        else 0.0


def measure(n_patients, shape, random_state):
    """Print the measures of one simulated cohort; returns its AIF hit rate."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cohort = make_stroke_cohort(n_patients=n_patients, shape=tuple(shape),
                                    random_state=random_state, difficulty="realistic")
        rows = []
        for p in cohort:
            qc = patient_qc(p, maps=False)
            head = p.truth["head"]
            old = _old_mask(p)
            old_vox = _old_aif_voxels(p, qc)
            rows.append(dict(
                hit=len(qc.aif_voxels) > 0 and _share_in(qc.aif_voxels,
                                                          p.truth["aif_voxels"]) == 1.0,
                artery_share=_share_in(qc.aif_voxels, p.truth["aif_voxels"]),
                vein_share=_share_in(qc.aif_voxels, p.truth["vein_voxels"]),
                old_hit=_share_in(old_vox, p.truth["aif_voxels"]) == 1.0,
                old_vein_share=_share_in(old_vox, p.truth["vein_voxels"]),
                impurity=float(np.mean(head[qc.brain_mask] != 1)),
                coverage=float(np.mean(qc.brain_mask[head == 1])),
                old_impurity=float(np.mean(head[old] != 1)),
                frames_ok=qc.n_nonsteady == int(p.truth["n_nonsteady"]),
                n_aif=len(qc.aif_voxels)))
    n = len(rows)

    def mean(key):
        return float(np.mean([r[key] for r in rows]))

    print(f"{n} realistic patients, shape {tuple(shape)}, random_state {random_state}, "
          f"{time.perf_counter() - start:.0f} s")
    print(f"AIF hit rate (all detected voxels are arteries): {mean('hit'):.1%} "
          f"({sum(r['hit'] for r in rows)}/{n}); mean share of detected voxels on "
          f"arteries {mean('artery_share'):.1%}, on veins {mean('vein_share'):.1%}; "
          f"median {np.median([r['n_aif'] for r in rows]):.0f} voxels")
    print(f"  old detection: hit rate {mean('old_hit'):.1%}, share on veins "
          f"{mean('old_vein_share'):.1%}")
    print(f"mask purity: non-brain share of mask voxels mean {mean('impurity'):.2%}, "
          f"max {max(r['impurity'] for r in rows):.2%} (target <= 2%); brain covered "
          f"mean {mean('coverage'):.1%}, min {min(r['coverage'] for r in rows):.1%}")
    print(f"  old mask (10% of the 99th percentile): non-brain share mean "
          f"{mean('old_impurity'):.2%}")
    print(f"dropped frames equal truth['n_nonsteady']: {mean('frames_ok'):.1%}")
    return mean("hit"), sum(r["hit"] for r in rows), n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-patients", type=int, default=60)
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 48, 8))
    parser.add_argument("--seeds", "--random-state", type=int, nargs="+", default=[0],
                        dest="seeds", help="random_state of each simulated cohort")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, seconds: checks that the script runs (the tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n_patients, args.shape, args.seeds = 3, (24, 24, 3), [0]
    if "difficulty" not in inspect.signature(make_stroke_cohort).parameters:
        print("make_stroke_cohort has no difficulty argument: the realistic simulator is "
              "not merged; nothing to measure.")
        return 1
    rates = []
    for seed in args.seeds:
        rates.append((seed, *measure(args.n_patients, args.shape, seed)))
        print()
    if len(rates) > 1:
        print("AIF hit rate per seed: " + ", ".join(
            f"seed {seed} {rate:.1%} ({hits}/{n})" for seed, rate, hits, n in rates))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
