"""PatchExtractor throughput and memory on a paper-sized patient, as ratios of one run.

One simulated patient of the size of Yu et al. (128 x 128 x 20, 60 frames, TR 1.8 s)
goes through ``PatchExtractor(inputs="pwi+aif+dwi")`` for every brain voxel, once with
``transform`` and once through the chunked ``iter_volume``. The times are compared with

(a) a plain numpy copy of the same number of output bytes (``np.copy`` into a fresh array,
    the memory-bandwidth bound of any code that writes the features), and
(b) a straightforward per-voxel Python loop (concentration and ``np.interp`` per
    neighbour curve), timed on a random subsample of voxels and extrapolated linearly to
    all brain voxels (the loop's cost per voxel does not depend on the number of voxels).

Then the peak traced memory (``tracemalloc``) of consuming ``iter_volume`` is measured on
volumes of three sizes: it must not grow with the volume.

Targets: transform at >= 0.25 x the copy bandwidth, faster than the loop, and a
whole-volume peak independent of the volume size.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_patches.py [--quick | --smoke]``.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import nibabel as nib
import numpy as np

from sklearn_hemo.datasets import ArterialInputFunction, Patient, make_stroke_cohort
from sklearn_hemo.datasets._cohort import Cohort
from sklearn_hemo.preprocessing import PatchExtractor
from sklearn_hemo.preprocessing._patches import _gather_rows, _neighbour_index
from sklearn_hemo.signal import patient_aif, patient_timing, steady_frame_times


class Timing:
    """Best wall-clock and CPU (process) time over repeats.

    On a shared machine the wall clock also counts the time spent waiting for a core;
    the process time does not, so both are reported.
    """

    def __init__(self):
        self.wall = self.cpu = np.inf

    def __call__(self, function):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        self.wall = min(self.wall, time.perf_counter() - wall)
        self.cpu = min(self.cpu, time.process_time() - cpu)
        return result


def time_copy(nbytes, timing, preallocated=False):
    """Copy ``nbytes``: into a fresh array (``np.copy``, which pays the page faults of new
    memory as any transform's output does) or into a reused one."""
    source = np.ones(nbytes // 4, dtype=np.float32)
    if preallocated:
        target = np.empty_like(source)
        timing(lambda: np.copyto(target, source))
    else:
        timing(source.copy)


def time_gathers(shape, ijk, ours, fancy):
    """The PWI-block gather alone, from precomputed rows: ours, and a plain element-wise
    fancy index (its index array precomputed, not timed). Returns the output bytes."""
    rows = np.random.default_rng(0).random((int(np.prod(shape)), 60), dtype=np.float32)
    inside = np.zeros(shape, dtype=bool)
    inside[tuple(ijk.T)] = True  # the brain voxels: brain-edge patches read their centre
    index = _neighbour_index(ijk, shape, 3, inside)
    a = ours(lambda: _gather_rows(rows, index, np.empty((len(ijk), 60, 9), np.float32)))
    elements = index[:, None, :] * 60 + np.arange(60)[None, :, None]
    b = fancy(lambda: rows.reshape(-1)[elements])
    np.testing.assert_array_equal(a, b)
    return a.nbytes


def loop_features(patient, ijk, aif, te):
    """The straightforward per-voxel implementation (reference for speed and values).

    Neighbours outside the brain mask read the centre (``mask_neighbours=True``). Leading
    non-steady frames are dropped and the grid starts at the first steady-state frame, as
    in the extractor (:func:`~sklearn_hemo.signal.patient_timing`)."""
    data = np.asarray(patient.pwi.dataobj)
    inside = patient.get_brain_mask()
    b0 = np.asarray(patient.dwi_b0.dataobj)
    b1000 = np.asarray(patient.dwi_b1000.dataobj)
    timing = patient_timing(patient)
    start = timing.n_nonsteady
    baseline = slice(0, timing.arrival - start)
    times, grid = steady_frame_times(patient, start), np.arange(60) * 1.8
    nx, ny, _ = patient.shape
    out = np.empty((len(ijk), 618), dtype=np.float32)
    for row, (i, j, k) in enumerate(ijk):
        p = 0
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                ii, jj = min(max(i + di, 0), nx - 1), min(max(j + dj, 0), ny - 1)
                if not inside[ii, jj, k]:
                    ii, jj = i, j
                signal = data[ii, jj, k, start:].astype(np.float32)
                i0 = signal[baseline].mean()
                if i0 > 0:
                    conc = -np.log(np.maximum(signal, 1e-3 * i0) / i0) / te
                else:
                    conc = np.zeros_like(signal)
                out[row, p:540:9] = np.interp(grid, times, conc)
                out[row, 600 + p] = b0[ii, jj, k]
                out[row, 609 + p] = b1000[ii, jj, k]
                p += 1
        out[row, 540:600] = aif
    return out


def synthetic_patient(shape, n_frames=60, tr=1.8, te=0.03, seed=0):
    """A quick DSC-like patient (ellipsoid brain, gamma-variate bolus) for memory runs."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, dtype=np.float32) - 1) / 2
    radius = np.array(shape, dtype=np.float32) * 0.42
    brain = (((grid - centre[:, None, None, None]) / radius[:, None, None, None]) ** 2).sum(0) < 1
    t = np.arange(n_frames, dtype=np.float32) * tr
    x = np.clip(t - 15, 0, None) / 5
    shape_curve = x**3 * np.exp(3 * (1 - x))
    pwi = np.empty(shape + (n_frames,), dtype=np.int16)
    for k in range(shape[2]):  # slice by slice to keep the builder light
        height = rng.uniform(2, 15, shape[:2] + (1,)).astype(np.float32)
        s0 = 800 * brain[:, :, k, None] + 20
        pwi[:, :, k] = np.round(s0 * np.exp(-te * height * shape_curve)
                                + rng.normal(0, 5, shape[:2] + (n_frames,)))
    affine = np.diag([240 / shape[0], 240 / shape[1], 5.0, 1.0])
    dwi = nib.Nifti1Image((brain * 700.0).astype(np.float32), affine)
    aif = ArterialInputFunction(t, 50 * shape_curve)
    return Patient("sub-bench", nib.Nifti1Image(pwi, affine), dwi, dwi, echo_time=te,
                   repetition_time=tr, brain_mask=nib.Nifti1Image(brain.astype(np.uint8),
                                                                  affine), aif=aif)


def peak_memory_of_iter_volume(shape, chunk_size):
    patient = synthetic_patient(shape)
    extractor = PatchExtractor(Cohort([patient]))
    n = 0
    tracemalloc.start()
    for ijk, _ in extractor.iter_volume(0, chunk_size=chunk_size):
        n += len(ijk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return n, peak, patient.pwi.dataobj.nbytes


def main(quick=False, smoke=False):
    quick = quick or smoke
    shape = (24, 24, 3) if smoke else (64, 64, 10) if quick else (128, 128, 20)
    repeat = 1 if quick else 5
    print(f"simulating one patient {shape}, 60 frames, TR 1.8 s ...", flush=True)
    patient = make_stroke_cohort(n_patients=1, shape=shape, n_frames=60, repetition_time=1.8,
                                 echo_time=0.03, random_state=0)[0]
    cohort = Cohort([patient])
    ijk = np.argwhere(patient.get_brain_mask())
    X = np.column_stack([np.zeros(len(ijk), dtype=np.int64), ijk])
    # raw AIF and DWI intensities, as the per-voxel reference computes them (the default
    # per-patient normalisations multiply by one scalar per patient: no cost to measure)
    extractor = PatchExtractor(cohort, inputs="pwi+aif+dwi", aif_normalization=None,
                               dwi_normalization=None)
    n, width = len(X), 618
    nbytes = n * width * 4
    print(f"brain voxels: {n}, features: {width} float32 -> {nbytes / 1e6:.0f} MB")

    def consume():
        for _ in extractor.iter_volume(0, chunk_size=4096):
            pass

    # interleaved repeats, best of each: a shared machine slows all of them alike
    copy, transform, chunked = Timing(), Timing(), Timing()
    for _ in range(repeat):
        time_copy(nbytes, copy)
        features = transform(lambda: extractor.transform(X))
        chunked(consume)
    warm, gather, fancy, gather_copy = Timing(), Timing(), Timing(), Timing()
    for _ in range(repeat):
        time_copy(nbytes, warm, preallocated=True)
        gather_bytes = time_gathers(patient.shape, ijk, gather, fancy)
        time_copy(gather_bytes, gather_copy)

    n_loop = 50 if smoke else 300 if quick else 2000
    sample = np.random.default_rng(0).choice(n, size=min(n_loop, n), replace=False)
    aif = patient_aif(patient).astype(np.float32)
    loop = Timing()
    reference = loop(lambda: loop_features(patient, ijk[sample], aif, patient.echo_time))
    np.testing.assert_allclose(features[sample], reference, rtol=1e-4, atol=1e-3)
    loop.wall, loop.cpu = loop.wall * n / len(sample), loop.cpu * n / len(sample)

    def row(name, timing, reference=copy, note=""):
        print(f"{name:34s} {timing.wall:8.3f} {timing.cpu:8.3f}   "
              f"{reference.wall / timing.wall:6.2f} {reference.cpu / timing.cpu:6.2f}  {note}")

    print(f"{'':34s} {'wall s':>8s} {'cpu s':>8s}   ratio to copy (wall, cpu)")
    row(f"numpy copy of {nbytes / 1e6:.0f} MB (fresh array)", copy)
    row("PatchExtractor.transform", transform, note="target >= 0.25")
    row("PatchExtractor.iter_volume", chunked)
    row("copy into a reused array", warm, note="no page faults: the raw bandwidth")
    row("  transform against that copy", transform, reference=warm)
    row("  gather alone (PWI block)", gather, reference=gather_copy)
    row("  plain fancy-index gather", fancy, reference=gather_copy)
    print(f"per-voxel Python loop: {loop.wall:.1f} s wall, {loop.cpu:.1f} s cpu (timed on "
          f"{len(sample)} voxels, extrapolated to {n}); transform is "
          f"{loop.wall / transform.wall:.0f} x (wall), {loop.cpu / transform.cpu:.0f} x (cpu) "
          "faster")

    print("peak traced memory of iter_volume(chunk_size=4096):")
    sizes = [(128, 128, 10), (128, 128, 40), (256, 256, 20)]
    if quick:
        sizes = [(16, 16, 2), (24, 24, 3)] if smoke else [(32, 32, 5), (64, 64, 10)]
    for size in sizes:
        n_vox, peak, volume_bytes = peak_memory_of_iter_volume(size, 4096)
        print(f"  {size!s:16} {n_vox:7d} brain voxels, PWI {volume_bytes / 1e6:6.1f} MB: "
              f"peak {peak / 1e6:6.1f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes: checks that the script runs (tests/test_benchmarks.py)")
    main(**vars(parser.parse_args()))
