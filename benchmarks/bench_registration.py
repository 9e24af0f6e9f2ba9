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


if __name__ == "__main__":
    # ``--smoke``: one small patient, seconds (the tests run it)
    if sys.argv[1:] == ["--smoke"]:
        main(1, smoke=True)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
