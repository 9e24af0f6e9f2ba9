"""Registration: choice of the library, accuracy and seconds per patient (issue 31).

Run: ``nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/bench_registration.py [N]``
(N patients, default 4, default geometry 48 x 48 x 8). Writes nothing; prints tables.

1. Libraries (those installed of SimpleITK, dipy, ANTsPy), rigid, mutual information:
   the follow-up GRE of :func:`~sklearn_hemo.datasets.simulate_raw_tree` (own grid,
   8-17 degrees, a few mm) registered to the acute PWI pre-bolus median; rotation error
   (degrees, angle of the residual rotation), translation error (mm, residual displacement
   of the head centre) and seconds per registration. Threads limited to 1 (a shared
   2-core machine: times are indicative). "SimpleITK x3" is ``register_rigid``'s default
   (best of three starts), "SimpleITK" a single start.
2. Target of the follow-up (SimpleITK): the aligned DWI b0 or the PWI pre-bolus median.
3. Import with registration, seconds per patient (follow-up + DSC motion correction).
4. DWI b0 to the PWI pre-bolus median (``--register all``): residual displacement of the
   head voxels (mm) and angle (degrees), CPU seconds, settings of ``import`` (cubic
   B-spline interpolation, the DWI's zero-filled voxels left out) and linear
   interpolation (``import`` before issue 31's fix); the same with the DWI zero-filled
   where its slab reaches past the aligned cohort's (as the simulator wrote it before).
5. The load-time motion correction on ``make_stroke_cohort``'s default cohort (its own
   simulated motion: a drift and spikes in 30 % of the patients): error on the moved
   frames against the truth, still frames realigned, CPU seconds per patient (the cost
   the default ``compare`` pays once per patient; ``BENCH_LOAD_PATIENTS``, default 12).
"""

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from sklearn_hemo.datasets import simulate_raw_tree  # noqa: E402
from sklearn_hemo.registration import register_rigid, rotation_angle  # noqa: E402


def errors(est, true):
    residual = np.linalg.inv(true) @ est
    return rotation_angle(residual[:3, :3]), float(np.linalg.norm(residual[:3, 3]))


def prebolus(pwi):
    from sklearn_hemo.registration import prebolus_frames, prebolus_median

    data = np.asarray(pwi.dataobj, np.float32)
    start, stop = prebolus_frames(data)
    return nib.Nifti1Image(prebolus_median(data, start, stop), pwi.affine)


def sitk_reg(fixed, moving):
    return register_rigid(fixed, moving).matrix


def sitk_reg_1(fixed, moving):
    return register_rigid(fixed, moving, n_starts=1).matrix


def dipy_reg(fixed, moving):
    from dipy.align.imaffine import (
        AffineRegistration,
        MutualInformationMetric,
        transform_centers_of_mass,
    )
    from dipy.align.transforms import RigidTransform3D

    f, m = fixed.get_fdata(), moving.get_fdata()
    com = transform_centers_of_mass(f, fixed.affine, m, moving.affine)
    reg = AffineRegistration(metric=MutualInformationMetric(nbins=32),
                             level_iters=[200, 100], sigmas=[1.0, 0.0], factors=[2, 1],
                             verbosity=0)
    out = reg.optimize(f, m, RigidTransform3D(), None, static_grid2world=fixed.affine,
                       moving_grid2world=moving.affine, starting_affine=com.affine)
    return out.affine


def ants_reg(fixed, moving):
    import ants

    def img(x):
        a = x.affine
        spacing = np.linalg.norm(a[:3, :3], axis=0)
        return ants.from_numpy(x.get_fdata().astype(np.float32), origin=a[:3, 3].tolist(),
                               spacing=spacing.tolist(),
                               direction=(a[:3, :3] / spacing))

    out = ants.registration(img(fixed), img(moving), type_of_transform="Rigid",
                            aff_metric="mattes", verbose=False)
    tx = ants.read_transform(out["fwdtransforms"][0])
    p, c = np.asarray(tx.parameters), np.asarray(tx.fixed_parameters)
    mat = np.eye(4)
    mat[:3, :3] = p[:9].reshape(3, 3)
    mat[:3, 3] = p[9:12] + c - mat[:3, :3] @ c
    return mat


def main(n=4, smoke=False):
    tmp = Path(tempfile.mkdtemp())
    raw = simulate_raw_tree(tmp / "raw", n, (32, 32, 6) if smoke else (48, 48, 8),
                            random_state=1)
    cases = []
    for k, pid in enumerate(sorted(raw.transforms)):
        gre = nib.load(next((raw.path / pid).glob("ses-followup/anat/*_T2starw.nii.gz")))
        aligned = raw.aligned[k]
        cases.append((pid, gre, prebolus(aligned.pwi), aligned.dwi_b0,
                      np.asarray(raw.transforms[pid]["followup"]["matrix"])))
    libs = {"SimpleITK": sitk_reg_1, "SimpleITK x3": sitk_reg, "dipy": dipy_reg,
            "ANTsPy": ants_reg}
    print("library     rot. error deg (mean/max)  transl. error mm (mean/max)  s/registration")
    for name, fn in libs.items():
        try:
            fn(cases[0][2], cases[0][1])
        except ImportError as exc:
            print(f"{name:10s}  not installed ({exc})")
            continue
        rot, tr, sec = [], [], []
        for _pid, gre, pre, _b0, true in cases:
            t0 = time.perf_counter()
            est = fn(pre, gre)
            sec.append(time.perf_counter() - t0)
            r, t = errors(est, true)
            rot.append(r)
            tr.append(t)
        print(f"{name:12s}{np.mean(rot):6.2f} / {np.max(rot):5.2f}            "
              f"{np.mean(tr):6.2f} / {np.max(tr):5.2f}               {np.mean(sec):6.2f}")
    print("\ntarget of the follow-up (SimpleITK): rot. error deg / transl. error mm (mean)")
    for label, idx in (("DWI b0", 3), ("PWI pre-bolus median", 2)):
        res = [errors(register_rigid(c[idx], c[1]).matrix, c[4]) for c in cases]
        print(f"{label:20s} {np.mean([r for r, _ in res]):.2f} / "
              f"{np.mean([t for _, t in res]):.2f}")
    if not smoke:  # the DWI and load-time tables register every patient: minutes
        dwi_table(raw)
        load_time_table(int(os.environ.get("BENCH_LOAD_PATIENTS", "12")))
    if smoke or os.environ.get("BENCH_SKIP_IMPORT"):  # the import registers: 15 s
        return
    from sklearn_hemo.datasets import import_cohort

    t0 = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import_cohort(raw.path, tmp / "cohort")
    per = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import_cohort(raw.path, tmp / "plain", register="none")
    plain = (time.perf_counter() - t0) / n
    print(f"\nimport, seconds per patient: {per:.1f} with registration (auto), "
          f"{plain:.1f} without (register='none')")


def _head_points(patient):
    head = np.argwhere(patient.truth["head"] > 0)
    return head @ patient.affine[:3, :3].T + patient.affine[:3, 3]


def _zero_filled(patient, b0, true):
    """The DWI b0 as the simulator wrote it before: zero where its slab reaches past the
    aligned cohort's."""
    from sklearn_hemo.datasets._raw import _resample

    data = _resample(patient.dwi_b0.get_fdata(), patient.affine, true, b0.shape, b0.affine,
                     order=1, mode="constant")
    return nib.Nifti1Image(np.rint(data).astype(np.float32), b0.affine)


def dwi_table(raw):
    from sklearn_hemo.datasets._coregister import DWI_REGISTRATION
    from sklearn_hemo.registration import mean_displacement, prebolus_frames, prebolus_median

    linear = {**DWI_REGISTRATION, "interpolator": "linear", "exclude_zeros": False}
    settings = {"import (B-spline, zeros left out)": (DWI_REGISTRATION, False),
                "linear (import before)": (linear, False),
                "import, DWI zero-filled": (DWI_REGISTRATION, True),
                "linear, DWI zero-filled": (linear, True)}
    rows = {name: [] for name in settings}
    for patient in raw.aligned:
        pid = patient.id
        true = np.asarray(raw.transforms[pid]["dwi"]["matrix"])
        points = _head_points(patient)
        pwi = nib.load(next((raw.path / pid).glob("ses-acute/perf/*_dsc.nii.gz")))
        data = np.asarray(pwi.dataobj, np.float32)
        start, stop = prebolus_frames(data)
        ref = nib.Nifti1Image(prebolus_median(data, start, stop), pwi.affine)
        dwi = nib.load(next((raw.path / pid).glob("ses-acute/dwi/*_dwi.nii.gz")))
        b0 = nib.Nifti1Image(np.asarray(dwi.dataobj, np.float32)[..., 0], dwi.affine)
        for name, (kwargs, zeros) in settings.items():
            t0 = time.process_time()
            est = register_rigid(ref, _zero_filled(patient, b0, true) if zeros else b0,
                                 **kwargs).matrix
            residual = np.linalg.inv(true) @ est
            rows[name].append((mean_displacement(true, points),
                               mean_displacement(residual, points),
                               rotation_angle(residual[:3, :3]), time.process_time() - t0))
    print("\nDWI b0 -> PWI (--register all), best of 3: before mm | after mm mean/max | "
          "deg mean/max | CPU s")
    for name, values in rows.items():
        a = np.array(values)
        print(f"{name:35s} {a[:, 0].mean():4.1f} | {a[:, 1].mean():.2f} / {a[:, 1].max():.2f}"
              f" | {a[:, 2].mean():.2f} / {a[:, 2].max():.2f} | {a[:, 3].mean():.1f}")


def load_time_table(n):
    import warnings

    from sklearn_hemo.datasets import make_stroke_cohort
    from sklearn_hemo.registration import correct_motion, mean_displacement

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cohort = make_stroke_cohort(n_patients=n, random_state=0)
    moved_cpu, still_cpu, reductions, worst, changed, n_still = [], [], [], [], 0, 0
    for patient in cohort:
        t0 = time.process_time()
        _, info = correct_motion(patient.raw_pwi, warn_mm=None)
        cpu = time.process_time() - t0
        motion = patient.truth["motion"]
        moved = [t for t in range(patient.n_frames) if np.abs(motion[t]).any()]
        if not moved:
            still_cpu.append(cpu)
            changed += len(info["corrected_frames"])
            n_still += patient.n_frames
            continue
        moved_cpu.append(cpu)
        points = _head_points(patient)
        before = after = 0.0
        for t in moved:
            dx, dy, angle = motion[t]
            theta = np.radians(angle)
            rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0],
                            [0, 0, 1]])
            centre = (np.asarray(patient.shape) - 1) / 2.0
            voxel = np.eye(4)
            voxel[:3, :3] = rot.T
            voxel[:3, 3] = rot.T @ (np.array([dx, dy, 0.0]) - centre) + centre
            true = patient.affine @ voxel @ np.linalg.inv(patient.affine)
            residual = np.linalg.inv(true) @ np.asarray(info["matrices"][t])
            before += mean_displacement(true, points)
            after += mean_displacement(residual, points)
            worst.append((mean_displacement(residual, points),
                          rotation_angle(residual[:3, :3])))
        reductions.append(1 - after / before)
    worst = np.array(worst)
    print(f"\nload-time motion correction, make_stroke_cohort({n}, random_state=0):")
    print(f"  moved patients {len(moved_cpu)}: error on moved frames reduced by "
          f"{100 * min(reductions):.0f}-{100 * max(reductions):.0f} % (pooled mean "
          f"{100 * np.mean(reductions):.0f} %); worst frame {worst[:, 0].max():.2f} mm, "
          f"{worst[:, 1].max():.2f} deg")
    print(f"  still patients {len(still_cpu)}: {changed} of {n_still} frames realigned")
    every = moved_cpu + still_cpu
    print(f"  CPU s per patient: moved {np.mean(moved_cpu):.2f}, still {np.mean(still_cpu):.2f}; "
          f"60 patients at this mix ~{60 * np.mean(every):.0f} s")


if __name__ == "__main__":
    # ``--smoke``: one small patient, seconds (the tests run it)
    if sys.argv[1:] == ["--smoke"]:
        main(1, smoke=True)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
