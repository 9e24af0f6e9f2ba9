"""The registration steps of :func:`import_cohort` (issue 31), kept out of ``_import.py``.

* ``register="auto"`` (default): the DSC series is motion-corrected (every frame
  registered rigidly to the pre-bolus median, see
  :func:`sklearn_hemo.registration.correct_motion`), and an HT annotation drawn in
  another session than the PWI's is carried over by registering the T2*-weighted image
  it was drawn on (``*_T2starw.nii*`` beside it) to the PWI pre-bolus median;
* ``register="all"``: also the DWI series (its b0) to the PWI pre-bolus median;
* ``register="none"``: through the affines only (the behaviour before registration).

The PWI pre-bolus median (of the steady pre-bolus frames) is the target of both
(measured in ``benchmarks/bench_registration.py``: as accurate as the DWI b0 for the
follow-up, 0.54 against 0.48 degrees and 0.18 against 0.22 mm on five patients, and
already in the PWI's pose, while the DWI series is in its own).
"""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np

from ..exceptions import CohortError
from ..utils._warnings import find_stack_level

#: motion correction needs this many voxels per frame (smaller grids are kept as they are)
_MIN_VOXELS = 4096
#: a registration whose mutual information rises by less than this fraction warns
_MIN_GAIN = 0.05
#: ... and so does one that ends below this mutual information (nats; images of one head
#: reach 0.4-0.9 on the default geometry; unrelated images reach 0.1 on tiny grids, where
#: few voxels inflate the estimate)
_MIN_MI = 0.2
_GRE_GLOBS = ("*_T2starw.nii.gz", "*_T2starw.nii", "*_GRE.nii.gz", "*_GRE.nii")
_TARGET = "PWI pre-bolus median"
#: the DWI b0 to the PWI (``register="all"``): a series of the same session, a small
#: misalignment, so from the scanner's frame, three levels, 4 mm of smoothing at full
#: resolution, best of three starts; cubic B-spline interpolation (linear blurs the moving
#: image by an amount that depends on the sub-voxel offset) and the DWI's zero-filled
#: voxels (outside the field of view it acquired, after reslicing) left out of the metric.
#: benchmarks/bench_registration.py, 3 simulated trees of 4 patients moved by 2.7-4.3 mm:
#: 0.43 mm mean residual, at most 0.64 mm and 0.69 degrees (linear: 0.42, 0.70 mm, 0.61
#: degrees, half the CPU time); with the DWI zero-filled over a sixth of its slab (as the
#: simulator wrote it before) 0.75 mm mean and at most 1.6 mm / 1.5 degrees, where linear
#: interpolation with the zeros counted left 1.31 mm and up to 2.8 mm / 1.75 degrees
DWI_REGISTRATION = {"init": "geometry", "levels": 3, "smooth_mm": 4.0,
                    "interpolator": "bspline", "exclude_zeros": True}


def _session(path):
    for part in reversed(path.parts[:-1]):
        if part.startswith("ses-"):
            return part
        if part.startswith("sub-"):
            return None
    return None


def _available():
    from ..registration import has_registration

    return has_registration()


def plan_registration(plan, register):
    """Decide, from paths only, what ``plan`` registers; raise early when impossible."""
    from ..registration import EXTRA_MESSAGE

    plan.registration = {"mode": register}
    if register == "none":
        return
    if plan.ht_mask is not None and _session(plan.ht_mask) != _session(plan.pwi):
        found = sorted({p for g in _GRE_GLOBS for p in plan.ht_mask.parent.glob(g)})
        if len(found) > 1:
            raise CohortError(f"participant {plan.pid}: several follow-up images beside "
                              f"{plan.ht_mask} ({', '.join(p.name for p in found)}); the "
                              "one the annotation was drawn on is ambiguous. Keep one, or "
                              "import with register='none' (--register none).")
        if found:
            plan.registration["followup_image"] = found[0]
        else:
            note = (f"the HT annotation is from {_session(plan.ht_mask) or 'no session'} and "
                    f"the PWI from {_session(plan.pwi) or 'no session'}, with no T2*-weighted "
                    "image (*_T2starw.nii*) beside the annotation to register: carried "
                    "through the affines, which assumes the sessions are registered")
            # a note, not a warning: the documented contract before registration existed
            plan.notes.append(note)
    needs = "followup_image" in plan.registration or register == "all"
    if not _available():
        if needs:
            raise ImportError(f"participant {plan.pid}: {EXTRA_MESSAGE}")
        plan.registration["motion_skipped"] = "SimpleITK not installed"


def prepare_pwi(plan, pwi):
    """The (motion-corrected) PWI and the reference volume registrations aim at."""
    from ..registration import correct_motion, prebolus_frames, prebolus_median

    info = plan.registration
    data = np.asarray(pwi.dataobj, dtype=np.float32)
    if info.get("mode", "none") == "none" or "motion_skipped" in info:
        if "motion_skipped" in info:
            warnings.warn(f"participant {plan.pid}: the DSC series is not motion-corrected: "
                          "SimpleITK is not installed (pip install "
                          "\"sklearn-hemo[registration]\").", UserWarning,
                          stacklevel=find_stack_level())
        return pwi, None
    if int(np.prod(pwi.shape[:3])) < _MIN_VOXELS:
        info["motion_skipped"] = (f"grid {tuple(pwi.shape[:3])} too small for motion "
                                  f"correction (< {_MIN_VOXELS} voxels)")
        start, stop = prebolus_frames(data)
        return pwi, nib.Nifti1Image(prebolus_median(data, start, stop), pwi.affine)
    corrected, motion = correct_motion(pwi, pid=plan.pid)
    motion.pop("matrices")
    info["motion"] = motion
    if motion["corrected_frames"]:
        plan.notes.append(f"DSC motion: {len(motion['corrected_frames'])} frame(s) realigned "
                          f"to the pre-bolus median (largest displacement "
                          f"{max(motion['displacement_mm']):.2f} mm)")
    start, stop = motion.get("prebolus_frames", motion["reference_frames"])
    data = np.asarray(corrected.dataobj, dtype=np.float32)
    return corrected, nib.Nifti1Image(prebolus_median(data, start, stop), pwi.affine)


def _register(plan, what, moving, reference, **kwargs):
    from ..registration import register_rigid

    result = register_rigid(reference, moving, **kwargs)
    target = _TARGET + (" (motion-corrected)" if "motion" in plan.registration else "")
    record = {"target": target, **result.to_dict()}
    plan.registration[what] = record
    before, after = result.similarity_before, result.similarity_after
    if not result.converged or after < before * (1 + _MIN_GAIN) or after < _MIN_MI:
        reason = ("failed to converge" if not result.converged else
                  f"{'barely improved' if after < before * (1 + _MIN_GAIN) else 'ended at'}"
                  f" a low similarity ({before:.3f} -> {after:.3f} nats of mutual "
                  "information)")
        record["warning"] = reason
        plan.notes.append(f"{what} registration {reason}")
        warnings.warn(f"participant {plan.pid}: the {what} registration to the PWI {reason}; "
                      "check the overlay on the QC page, or import with register='none' "
                      "(--register none) if the images were already registered.",
                      UserWarning, stacklevel=find_stack_level())
    return result.matrix


def dwi_affines(plan, b0, b0_affine, b1000_affine, reference):
    """The DWI affines, registered to the PWI when ``register="all"``."""
    if plan.registration.get("mode") != "all" or reference is None:
        return b0_affine, b1000_affine
    from ..registration import aligned_affine

    matrix = _register(plan, "dwi", nib.Nifti1Image(b0, b0_affine), reference,
                       **DWI_REGISTRATION)
    return aligned_affine(b0_affine, matrix), aligned_affine(b1000_affine, matrix)


def mask_affine(plan, name, affine, reference):
    """The affine of the ``name`` mask, registered through its follow-up image if any."""
    image = plan.registration.get("followup_image")
    if name != "ht_mask" or image is None or reference is None:
        return affine
    from ..registration import aligned_affine

    gre = nib.load(image)
    matrix = _register(plan, "followup", gre, reference)
    plan.registration["followup"]["image"] = str(image)
    gre_affine = gre.affine
    if not np.allclose(gre_affine, affine, atol=1e-3):
        plan.notes.append(f"{image.name} and the HT annotation have different affines; the "
                          "annotation's own is used after registration")
    return aligned_affine(affine, matrix)


def record(plan, rel=str):
    """The JSON-ready registration record of ``plan`` (for ``import.json``); ``rel``
    writes a path relative to the source."""
    out = dict(plan.registration)
    if "followup_image" in out:
        out["followup_image"] = rel(out["followup_image"])
    if "followup" in out:
        out["followup"] = {**out["followup"], "image": rel(out["followup"]["image"])}
    return out
