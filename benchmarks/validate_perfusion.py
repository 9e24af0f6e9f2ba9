"""Perfusion maps against the ground truth of the simulated cohort (issue 8, item 4).

Simulates a cohort with :func:`sklearn_hemo.datasets.make_stroke_cohort`, computes the maps
of every patient from its *source* signal (concentration, AIF, SVD deconvolution, exactly
as a user's data would go) and prints, per tissue class and bolus-delay bin, the median
signed ("bias") and absolute ("mare") relative errors of CBF, CBV, leakage-corrected CBV
and MTT, and the Tmax error in seconds (see :func:`sklearn_hemo.perfusion.compare_to_truth`).

Read the table with the simulator's physics in mind: its tissue curves are dispersed
(``beta = 0.5 + 0.35 delay`` s), and dispersion lowers the peak of the effective residue,
so every deconvolution method underestimates CBF (and overestimates MTT) there by design
(Calamante et al., MRM 44:466, 2000); CBV, an area ratio, is unaffected.

Run ``python benchmarks/validate_perfusion.py`` (about a minute) or with
``--n-patients 20 --shape 64 64 8`` for a larger sample; ``--method`` compares methods.
"""

from __future__ import annotations

import argparse
import time

from sklearn_hemo.datasets import make_stroke_cohort
from sklearn_hemo.perfusion import compare_to_truth

COLUMNS = (
    ("tissue", "{:<9}"),
    ("delay", "{:<7}"),
    ("n_voxels", "{:>7}"),
    ("cbf_bias", "{:>+9.2f}"),
    ("cbf_mare", "{:>9.2f}"),
    ("cbv_bias", "{:>+9.2f}"),
    ("cbv_mare", "{:>9.2f}"),
    ("cbv_corrected_bias", "{:>+9.2f}"),
    ("mtt_bias", "{:>+9.2f}"),
    ("mtt_mare", "{:>9.2f}"),
    ("tmax_bias", "{:>+9.2f}"),
    ("tmax_mae", "{:>9.2f}"),
)
HEADER = ("tissue", "delay", "n", "CBF bias", "CBF |e|", "CBV bias", "CBV |e|", "CBVc bias",
          "MTT bias", "MTT |e|", "Tmax (s)", "|Tmax| s")


def format_table(rows):
    """The rows of :func:`compare_to_truth` as a fixed-width text table."""
    widths = [9, 7, 7] + [9] * (len(HEADER) - 3)
    lines = [" ".join(f"{h:>{w}}" if i > 1 else f"{h:<{w}}"
                      for i, (h, w) in enumerate(zip(HEADER, widths, strict=True)))]
    for row in rows:
        lines.append(" ".join(fmt.format(row[key]) for key, fmt in COLUMNS))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-patients", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 48, 4))
    parser.add_argument("--snr", type=float, default=30.0)
    parser.add_argument("--method", nargs="+", default=["osvd"],
                        choices=["osvd", "csvd", "ssvd"])
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, seconds: checks that the script runs (the tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n_patients, args.shape = 2, (24, 24, 3)
    cohort = make_stroke_cohort(n_patients=args.n_patients, shape=tuple(args.shape),
                                snr=args.snr, random_state=args.random_state)
    print(f"{args.n_patients} simulated patients, {tuple(args.shape)} voxels, SNR {args.snr:g};"
          " relative errors are (estimate - truth) / truth, medians over voxels")
    for method in args.method:
        start = time.perf_counter()
        rows = compare_to_truth(cohort, method=method)
        print(f"\n{method}  ({time.perf_counter() - start:.1f} s)")
        print(format_table(rows))


if __name__ == "__main__":
    main()
