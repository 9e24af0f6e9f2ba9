"""Relaxivity of gadolinium in whole blood and in brain tissue (DSC, gradient echo).

A DSC scan measures the change of the transverse relaxation rate ``Delta R2*`` (1/s),
``Delta R2*(t) = -ln(S(t) / S0) / TE`` (Eq. 1 of Yu et al. 2019; Rosen et al. 1990).
How ``Delta R2*`` depends on the gadolinium concentration ``C`` (mM) differs between
whole blood in a large artery or vein and the brain parenchyma:

* **Whole blood** (a large vessel filling the voxel): quadratic. Kjolby, Ostergaard and
  Kiselev (MRM 2006; 56:187-197) derived from a model of red blood cells in plasma (whole
  blood, haematocrit 0.4 in their simulations) ``Delta R2* = a C + b C^2`` with
  ``a = 7.6 s^-1 mM^-1`` and ``b = 0.574 s^-1 mM^-2`` at 1.5 T; the relation agrees in
  shape with the in-vitro measurements of van Osch et al. (MRM 2003; 49:1067-1076),
  ``2.62 C + 0.493 C^2``, whose smaller linear term comes from their shorter echo
  spacing. At 3 T the same model scales the linear (mesoscopic, static-dephasing) term
  with the field and the quadratic (diffusion-narrowed) term with its square:
  ``a = 15.2``, ``b = 2.30`` (Kjolby 2006, field dependence of the model; the 3 T
  coefficients here are that scaling of the 1.5 T fit, not a separate fit).
* **Tissue** (capillaries and small vessels within parenchyma): linear,
  ``Delta R2* = r C_t`` with ``C_t`` the tissue-averaged concentration (mmol per litre of
  tissue) and ``r = 44 s^-1 mM^-1`` at 1.5 T and ``87 s^-1 mM^-1`` at 3 T (Kjolby 2006,
  tissue relaxivity of a capillary network, linear in the field in the static-dephasing
  regime: Yablonskiy & Haacke, MRM 1994; 32:749-763). The tissue relaxivity is
  much larger than the blood one per mM because the gadolinium is confined to the
  vessels and dephases the extravascular water around them.

The package treats ``Delta R2*`` as concentration (kappa 1) whenever the field strength
of a scan is unknown; these functions convert when it is known.

References
----------
Kjolby BF, Ostergaard L, Kiselev VG. Theoretical model of intravascular paramagnetic
tracers effect on tissue relaxation. Magn Reson Med 2006; 56:187-197.
van Osch MJP, Vonken EPA, Viergever MA, van der Grond J, Bakker CJG. Measuring the
arterial input function with gradient echo sequences. Magn Reson Med 2003; 49:1067-1076.
Yablonskiy DA, Haacke EM. Theory of NMR signal behavior in magnetically inhomogeneous
tissues: the static dephasing regime. Magn Reson Med 1994; 32:749-763.
Rosen BR, Belliveau JW, Vevea JM, Brady TJ. Perfusion imaging with NMR contrast agents.
Magn Reson Med 1990; 14:249-265.
"""

from __future__ import annotations

import types
from numbers import Real

import numpy as np

from .utils.fixes import validate_params

__all__ = [
    "BLOOD_RELAXIVITY",
    "TISSUE_RELAXIVITY",
    "blood_concentration",
    "blood_delta_r2star",
    "tissue_concentration",
    "tissue_delta_r2star",
]

#: Whole-blood ``Delta R2* = a C + b C^2`` (1/s, C in mM): field strength (T) -> (a, b).
BLOOD_RELAXIVITY = types.MappingProxyType({1.5: (7.6, 0.574), 3.0: (15.2, 2.296)})
#: Tissue ``Delta R2* = r C_t`` (1/s, C_t in mM of tissue): field strength (T) -> r.
TISSUE_RELAXIVITY = types.MappingProxyType({1.5: 44.0, 3.0: 87.0})


#: how far a scanner's nominal field may lie from a supported one (Siemens "3 T" systems
#: such as the Trio and Verio write 2.89 T into DICOM, and so into dcm2niix sidecars)
FIELD_TOLERANCE = 0.15


def _field(field_strength):
    """The supported field strength nearest ``field_strength`` (within FIELD_TOLERANCE)."""
    value = float(field_strength)
    for supported in BLOOD_RELAXIVITY:
        if np.isfinite(value) and abs(value - supported) <= FIELD_TOLERANCE:
            return supported
    raise ValueError(
        f"field_strength must be one of {sorted(BLOOD_RELAXIVITY)} tesla (the fields with "
        f"published relaxivities), got {field_strength!r}. Pass 1.5 or 3.0, or leave the "
        "field strength unknown (None on the patient) to keep Delta R2* as concentration."
    )


_PARAMS = {"field_strength": [Real]}


@validate_params({"concentration": ["array-like", Real], **_PARAMS},
                 prefer_skip_nested_validation=True)
def blood_delta_r2star(concentration, field_strength=1.5):
    """Whole-blood ``Delta R2*`` (1/s) of a gadolinium concentration (mM).

    The quadratic relation of Kjolby et al. (MRM 2006) for whole blood,
    ``a C + b C^2`` with ``(a, b) = (7.6, 0.574)`` at 1.5 T and ``(15.2, 2.296)`` at 3 T
    (module docstring). Negative concentrations (noise) follow the odd extension
    ``a C + b C |C|``, so that :func:`blood_concentration` inverts every value.

    Parameters
    ----------
    concentration : float or array-like
        Gadolinium concentration of whole blood in mM.
    field_strength : float, default=1.5
        Main field in tesla: 1.5 or 3.0.

    Returns
    -------
    delta_r2star : float or ndarray
        ``Delta R2*`` in 1/s, the shape of ``concentration``.

    Examples
    --------
    >>> from sklearn_hemo.relaxivity import blood_delta_r2star
    >>> round(float(blood_delta_r2star(5.0)), 2)
    52.35
    """
    a, b = BLOOD_RELAXIVITY[_field(field_strength)]
    c = np.asarray(concentration, dtype=float)
    out = a * c + b * c * np.abs(c)
    return out if out.ndim else float(out)


@validate_params({"delta_r2star": ["array-like", Real], **_PARAMS},
                 prefer_skip_nested_validation=True)
def blood_concentration(delta_r2star, field_strength=1.5):
    """Whole-blood gadolinium concentration (mM) of a ``Delta R2*`` (1/s).

    The positive root of :func:`blood_delta_r2star`,
    ``C = (sqrt(a^2 + 4 b R) - a) / (2 b)``. A negative ``Delta R2*`` (noise around the
    baseline) gives the negative root of the odd extension, ``-C(|R|)``: the mapping is
    continuous, monotonic, close to the linear ``R / a`` near 0, and never NaN.

    Parameters
    ----------
    delta_r2star : float or array-like
        ``Delta R2*`` of whole blood in 1/s (``-ln(S / S0) / TE``).
    field_strength : float, default=1.5
        Main field in tesla: 1.5 or 3.0.

    Returns
    -------
    concentration : float or ndarray
        Concentration in mM, the shape of ``delta_r2star``.

    Examples
    --------
    >>> from sklearn_hemo.relaxivity import blood_concentration
    >>> round(float(blood_concentration(52.35)), 6)
    5.0
    """
    a, b = BLOOD_RELAXIVITY[_field(field_strength)]
    r = np.asarray(delta_r2star, dtype=float)
    magnitude = np.abs(r)
    # (sqrt(a^2 + 4 b R) - a) / (2 b), written without cancellation for small R
    root = 2.0 * magnitude / (a + np.sqrt(a * a + 4.0 * b * magnitude))
    out = np.sign(r) * root
    return out if out.ndim else float(out)


@validate_params({"concentration": ["array-like", Real], **_PARAMS},
                 prefer_skip_nested_validation=True)
def tissue_delta_r2star(concentration, field_strength=1.5):
    """Tissue ``Delta R2*`` (1/s) of a tissue-averaged gadolinium concentration (mM).

    Linear, ``r C_t`` with ``r = 44`` (1.5 T) or ``87`` (3 T) ``s^-1 mM^-1`` (Kjolby et
    al. MRM 2006; module docstring).

    Parameters
    ----------
    concentration : float or array-like
        Tissue concentration in mM (mmol per litre of tissue).
    field_strength : float, default=1.5
        Main field in tesla: 1.5 or 3.0.

    Returns
    -------
    delta_r2star : float or ndarray
        ``Delta R2*`` in 1/s, the shape of ``concentration``.

    Examples
    --------
    >>> from sklearn_hemo.relaxivity import tissue_delta_r2star
    >>> float(tissue_delta_r2star(0.25))
    11.0
    """
    r = TISSUE_RELAXIVITY[_field(field_strength)]
    out = r * np.asarray(concentration, dtype=float)
    return out if out.ndim else float(out)


@validate_params({"delta_r2star": ["array-like", Real], **_PARAMS},
                 prefer_skip_nested_validation=True)
def tissue_concentration(delta_r2star, field_strength=1.5):
    """Tissue-averaged gadolinium concentration (mM) of a tissue ``Delta R2*`` (1/s).

    The inverse of :func:`tissue_delta_r2star` (linear; negative values stay negative).

    Parameters
    ----------
    delta_r2star : float or array-like
        Tissue ``Delta R2*`` in 1/s.
    field_strength : float, default=1.5
        Main field in tesla: 1.5 or 3.0.

    Returns
    -------
    concentration : float or ndarray
        Concentration in mM, the shape of ``delta_r2star``.

    Examples
    --------
    >>> from sklearn_hemo.relaxivity import tissue_concentration
    >>> float(tissue_concentration(11.0))
    0.25
    """
    r = TISSUE_RELAXIVITY[_field(field_strength)]
    out = np.asarray(delta_r2star, dtype=float) / r
    return out if out.ndim else float(out)
