"""The dry-run plan against a measured run: time per model and peak memory per worker.

A cohort is simulated to disk and read back file-backed (streamed, as ``compare --data``
reads it). :func:`~sklearn_hemo.model_selection.plan_comparison` projects each model's
time (the sum of its (model, outer fold) tasks) and a task's peak memory from its short
calibration; then :func:`~sklearn_hemo.model_selection.compare_models` runs the same
comparison on ``--n-jobs`` loky workers, and the measured time of a model is the sum of
its tasks' fit and score times as the workers recorded them. The peak resident memory of
each worker process (``VmHWM``, read from ``/proc`` after the run, Linux only) is printed
beside the plan's peak per worker.

Default: a reduced slice (8 patients of 48 x 48 x 6, 1,000 voxels, 3 outer x 2 inner
folds, the quick grids, every zoo row, 2 workers). The paper's one-tenth slice is
``--n-patients 16 --shape 128 128 20 --n-samples 5000 --n-outer 10 --n-inner 5
--protocol paper`` (hours on two cores).

Run: ``PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_scaling.py [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from sklearn_hemo.datasets import load_cohort, make_stroke_cohort
from sklearn_hemo.model_selection import compare_models, plan_comparison


def worker_peaks_mb():
    """``VmHWM`` (peak resident memory, MB) and CPU seconds of this process's child
    workers (Linux ``/proc``)."""
    peaks, cpu = {}, {}
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() != me or "resource_tracker" in cmdline:
            continue
        if "VmHWM" in fields:
            peaks[int(entry.name)] = int(fields["VmHWM"].split()[0]) / 1024
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cpu[int(entry.name)] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return peaks, cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-patients", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 48, 6))
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--n-outer", type=int, default=3)
    parser.add_argument("--n-inner", type=int, default=2)
    parser.add_argument("--protocol", default="quick", choices=("quick", "paper"))
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--out", default=None, help="keep plan.json and results here")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, seconds: checks that the script runs (the tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n_patients, args.shape, args.n_samples = 6, (24, 24, 3), 200
        args.models, args.n_jobs = args.models or ["linear"], 1

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        folder = out / "cohort"
        if not (folder / "participants.tsv").exists():
            make_stroke_cohort(n_patients=args.n_patients, shape=tuple(args.shape),
                               ht_prevalence=0.6, random_state=0, out_dir=folder,
                               overwrite=True)
        cohort = load_cohort(folder)
        common = dict(protocol=args.protocol, n_outer=args.n_outer, n_inner=args.n_inner,
                      n_samples=args.n_samples, n_jobs=args.n_jobs, random_state=0)
        start = time.perf_counter()
        plan = plan_comparison(cohort, args.models, out_dir=out / "plan", **common)
        plan_seconds = time.perf_counter() - start
        print(plan)
        print(f"(dry run took {plan_seconds:.0f} s)\n")
        start = time.perf_counter()
        compare_models(cohort, args.models, out_dir=out / "run", n_resamples=200,
                       plot=False, **common)
        wall = time.perf_counter() - start
        peaks, worker_cpu = worker_peaks_mb()
        measured, measured_cpu = {}, {}
        for part_file in sorted((out / "run" / "parts").glob("*/*__fold*.npz")):
            with np.load(part_file, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
            name = part_file.name.rsplit("__fold", 1)[0]
            measured[name] = measured.get(name, 0.0) + meta["fit_time"] + meta["score_time"]
            measured_cpu[name] = measured_cpu.get(name, 0.0) + meta.get("cpu_time", np.nan)

    lines = [f"{'model':20} {'wall: projected':>15} {'measured':>8} {'ratio':>5}   "
             f"{'CPU: projected':>14} {'measured':>8} {'ratio':>5}  {'plan peak MB':>12}"]
    table = []
    for row in plan.rows:
        got, got_cpu = measured.get(row["model"]), measured_cpu.get(row["model"])
        lines.append(f"{row['model']:20} {row['seconds']:15.1f} {got:8.1f} "
                     f"{row['seconds'] / got:5.2f}   {row['cpu_seconds']:14.1f} "
                     f"{got_cpu:8.1f} {row['cpu_seconds'] / got_cpu:5.2f}  "
                     f"{row['peak_task_mb']:12.0f}")
        table.append({"model": row["model"], "projected_s": row["seconds"],
                      "measured_s": got, "projected_cpu_s": row["cpu_seconds"],
                      "measured_cpu_s": got_cpu,
                      "peak_task_mb_projected": row["peak_task_mb"]})
    print("\n".join(lines))
    total_projected = plan.totals["projected_seconds"]
    print(f"total: projected {total_projected:.0f} s on {args.n_jobs} workers, measured "
          f"{wall:.0f} s wall (features, tasks, bootstrap and files); the sum of all tasks: "
          f"projected {plan.totals['task_cpu_seconds']:.1f} CPU s, measured "
          f"{sum(measured_cpu.values()):.1f} CPU s")
    print(f"CPU seconds of the workers (all their tasks, unpickling included): "
          f"{sum(worker_cpu.values()):.1f}; projected CPU of the tasks: "
          f"{plan.totals['task_cpu_seconds']:.1f}")
    print("peak resident memory per worker (VmHWM): "
          + ", ".join(f"{mb:.0f} MB" for mb in sorted(peaks.values()))
          + f"; plan: {plan.totals['peak_worker_mb']:.0f} MB")
    summary = {"settings": plan.settings, "rows": table, "wall_seconds": wall,
               "projected_seconds": total_projected, "worker_peak_mb": sorted(peaks.values()),
               "worker_cpu_seconds": sum(worker_cpu.values()),
               "projected_task_cpu_seconds": plan.totals["task_cpu_seconds"],
               "plan_peak_worker_mb": plan.totals["peak_worker_mb"],
               "dry_run_seconds": plan_seconds, "load": os.getloadavg()}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
