"""Voxel-wise HT risk maps: a fitted pipeline applied to every brain voxel of a patient.

The models of this package are trained on *sampled* voxels; the paper's clinical output is
the map of the probability of hemorrhagic transformation over the whole brain, which
this module draws and returns as a NIfTI image on the patient's PWI grid.

How the patient reaches the model
---------------------------------
A fitted pipeline starts with a :class:`~sklearn_hemo.preprocessing.PatchExtractor`
holding the *training* cohort and reading voxel references ``(patient index, i, j, k)``
of that cohort. To map a patient:

* of that cohort (given by index, id, or as the same :class:`Patient` object), the
  extractor is used as it is;
* of another cohort, or a new patient (e.g. ``sklearn-hemo predict --patient SUB_DIR``,
  or a model loaded by :func:`~sklearn_hemo.persistence.load_model` without a cohort),
  a shallow copy of the fitted extractor is pointed at a one-patient cohort
  ``Cohort([patient])`` with ``set_params(cohort=...)`` and the references use patient
  index 0. The copy keeps every fitted attribute; the pipeline itself is not modified,
  and no other step is copied (the remaining steps are used as they are, through
  ``pipeline[1:]``).

A model that reads voxel references itself (a one-step pipeline, or a bare estimator,
with a ``cohort`` parameter and ``predict_proba``, such as the zoo's ``roi-leakage-proxy`` row) is
re-pointed the same way and scored on chunks of references.

Features are computed and scored in chunks of ``chunk_size`` voxels (through the
extractor's ``iter_volume``, which reads the volume slab by slab), so memory is bounded
by one chunk of features whatever the volume size; the map equals
``pipeline.predict_proba(refs)[:, positive column]`` on the patient's brain voxels (up
to float rounding in the model). A gzip-compressed PWI (``pwi.nii.gz``) is first
streamed once into a temporary uncompressed file, deleted afterwards: reading it slab
by slab in place would decompress it again for every slab.

Probabilities, not scores
-------------------------
A map is a probability in [0, 1]: the pipeline's last step must have
``predict_proba``. Models that only give a ``decision_function`` (the linear, SR-KDA and
SVM rows of the model zoo) are wrapped by :func:`with_probabilities` (Platt scaling on
patient-grouped out-of-fold scores, as ``sklearn-hemo train`` does), rather than
pushed through an arbitrary squashing function that would only look like a probability.

Probabilities of whole brains
-----------------------------
Models are trained on a balanced sample (half HT), so their probabilities read against a
prevalence of one half; on a whole brain about 1 % of a bleeding patient's voxels bleed.
Maps are therefore drawn *whole-brain calibrated* by default where the package trains the
model: ``sklearn-hemo train`` (``--calibration whole-brain``), :func:`with_probabilities`
with ``prevalence=...`` and :func:`cross_val_risk_map_table` (``calibration="whole-brain"``,
used by ``compare --volumes``) wrap the model in
:class:`~sklearn_hemo.calibration.PriorShiftClassifier`, which moves its probabilities from
the training prevalence to the whole-brain prevalence of the training patients (Elkan
2001; Saerens et al. 2002; see :mod:`sklearn_hemo.calibration`). For a model trained
elsewhere, :func:`predict_risk_map`'s ``prevalence`` applies the same correction when the
map is drawn.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import numbers
import shutil
import tempfile
from numbers import Integral, Real
from pathlib import Path

import nibabel as nib
import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .datasets import Cohort, Patient
from .utils._training import final_step
from .utils.fixes import HasMethods, Interval, StrOptions, validate_params

__all__ = ["predict_risk_map", "predict_risk_maps", "risk_map_table", "brain_voxel_refs",
           "cross_val_risk_map_table", "with_probabilities"]

DEFAULT_CHUNK_SIZE = 16_384


# ---------------------------------------------------------------------------- pieces
def _reads_cohort(step):
    return "cohort" in step.get_params(deep=False)


def _split_pipeline(estimator):
    """Return ``(reader, rest)``: the step holding the cohort and what scores its output.

    ``rest`` is ``pipeline[1:]``, or None when the reader is the whole model (a pipeline
    of one step, or an estimator, that reads voxel references and has ``predict_proba``,
    e.g. the ``roi-leakage-proxy`` row).
    """
    reader, rest, _ = _split_calibrated(estimator)
    return reader, rest


def _split_calibrated(estimator):
    """``_split_pipeline`` and the prior shift of a model that reads voxel references
    itself and is wrapped whole in a :class:`~sklearn_hemo.calibration.PriorShiftClassifier`
    (e.g. the ``roi-leakage-proxy`` row trained whole-brain calibrated): the fitted inner
    model is the reader, and ``(training_prevalence_, prevalence_)`` comes third (None
    for every other model, whose wrapper sits after the reader and applies itself)."""
    from .calibration import PriorShiftClassifier

    steps = estimator.steps if isinstance(estimator, Pipeline) else [("model", estimator)]
    reader = steps[0][1]
    if (len(steps) == 1 and isinstance(reader, PriorShiftClassifier)
            and hasattr(reader, "estimator_") and _reads_cohort(reader.estimator_)):
        prior = (reader.training_prevalence_, reader.prevalence_)
        inner = reader.estimator_
        reader, rest = _split_pipeline(inner)
        return reader, rest, prior
    if not _reads_cohort(reader):
        raise TypeError(
            f"risk maps need a fitted Pipeline whose first step reads voxel references of "
            f"a cohort (a PatchExtractor); its first step is {type(reader).__name__}. Build "
            "it as Pipeline([('features', PatchExtractor(cohort, ...)), ..., ('model', "
            "classifier)]).")
    check_is_fitted(estimator)
    rest = estimator[1:] if len(steps) > 1 else None
    model = reader if rest is None else rest
    if not hasattr(model, "predict_proba"):
        raise TypeError(
            f"{type(steps[-1][1]).__name__} has no predict_proba, and a risk map is a "
            "probability. Wrap the pipeline with sklearn_hemo.risk.with_probabilities "
            "(Platt scaling on patient-grouped folds) or sklearn's CalibratedClassifierCV.")
    return reader, rest, None


def _cohort_patients(estimator, cohort, patients):
    """Return ``(cohort, patients)`` of a call on several patients.

    The cohort is the model's own when ``cohort`` is None; the patients are all of the
    cohort when ``patients`` is None.
    """
    reader, _ = _split_pipeline(estimator)
    source = reader.get_params(deep=False)["cohort"] if cohort is None else cohort
    if source is None:
        raise ValueError("the model holds no cohort; pass cohort=...")
    return source, range(len(source)) if patients is None else patients


def _positive_column(classes, positive_class):
    classes = np.asarray(classes).tolist()
    # label by label in Python: numpy < 2 compares a string with an integer array with a
    # FutureWarning ("elementwise comparison failed") instead of answering False
    hits = [i for i, label in enumerate(classes) if label == positive_class]
    if len(hits) != 1:
        raise ValueError(
            f"positive_class={positive_class!r} is not one of the model's classes "
            f"{classes}; pass the label that means HT.")
    return hits[0]


def _resolve_patient(extractor, patient, cohort):
    """Return ``(extractor to use, patient index in its cohort, Patient)``."""
    own = extractor.get_params(deep=False)["cohort"]
    source = own if cohort is None else cohort
    if isinstance(patient, Patient):
        if source is not None:
            for index, candidate in enumerate(source):
                if candidate is patient:
                    return _with_cohort(extractor, source), index, patient
        return _with_cohort(extractor, Cohort([patient])), 0, patient
    if source is None:
        raise ValueError(
            f"patient={patient!r} names a patient of a cohort, but the model holds no cohort "
            "(loaded without one?). Pass the Patient itself, or cohort=...")
    if isinstance(patient, str):
        index = source.index(patient)
    elif isinstance(patient, numbers.Integral) and not isinstance(patient, bool):
        index = int(patient)
        if not 0 <= index < len(source):
            raise ValueError(
                f"patient index {index} is out of range for a cohort of {len(source)} "
                "patients.")
    else:
        raise TypeError(
            f"patient must be a Patient, a patient index or a participant id, got "
            f"{type(patient).__name__}.")
    return _with_cohort(extractor, source), index, source[index]


def _with_cohort(extractor, cohort):
    """The extractor itself when it already reads ``cohort``, else a re-pointed copy."""
    if extractor.get_params(deep=False)["cohort"] is cohort:
        return extractor
    # A shallow copy keeps the fitted state and shares arrays with the original; only
    # the cohort parameter differs, so the caller's pipeline is left untouched.
    repointed = copy.copy(extractor)
    repointed.set_params(cohort=cohort)
    return repointed


@validate_params(
    {"patient": [Patient], "patient_index": [Integral], "mask": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def brain_voxel_refs(patient, patient_index=0, mask=None):
    """Voxel references ``(patient_index, i, j, k)`` of every brain voxel of a patient.

    Parameters
    ----------
    patient : :class:`~sklearn_hemo.datasets.Patient`
        The patient.
    patient_index : int, default=0
        Value of the first column (the patient's position in the extractor's cohort).
    mask : ndarray of bool or None, default=None
        Voxels to list; the patient's brain mask when None.

    Returns
    -------
    refs : ndarray of shape (n_voxels, 4), dtype int64
        Sorted by slice ``k``, then ``j``, then ``i``, so that a chunk of consecutive rows
        touches as few slices as possible.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hemo.datasets import make_stroke_cohort
    >>> from sklearn_hemo.risk import brain_voxel_refs
    >>> patient = make_stroke_cohort(1, (8, 8, 2), random_state=0)[0]
    >>> refs = brain_voxel_refs(patient)
    >>> refs.shape[1], bool(np.all(refs[:, 0] == 0))
    (4, True)
    """
    if mask is None:
        mask = patient.get_brain_mask()
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != patient.shape:
        raise ValueError(
            f"participant {patient.id}: mask has shape {mask.shape} but the PWI grid is "
            f"{patient.shape}.")
    # transposing makes C-order nonzero() run over k, then j, then i
    k, j, i = np.nonzero(mask.transpose(2, 1, 0))
    refs = np.empty((k.size, 4), dtype=np.int64)
    refs[:, 0] = patient_index
    refs[:, 1], refs[:, 2], refs[:, 3] = i, j, k
    return refs


@contextlib.contextmanager
def _uncompressed_pwi(patient):
    """The patient, or a copy whose PWI is an uncompressed temporary file.

    A 4D NIfTI stores time as the slowest axis, so every slab of slices read for the
    chunked features spans the whole file; in a ``.nii.gz`` each such read decompresses
    the file again from its start. One streamed decompression into a temporary ``.nii``
    (memory-mapped, deleted afterwards) reads the same bytes once, with flat memory.
    """
    source = patient.source("pwi")
    if source is None or not str(source).endswith(".gz"):
        yield patient
        return

    def image(name):  # file-backed images stay files; in-memory ones are shared
        found = patient.source(name)
        return found if found is not None else getattr(patient, name)

    with tempfile.TemporaryDirectory(prefix="sklearn-hemo-map-") as tmp:
        target = Path(tmp) / "pwi.nii"
        with gzip.open(source, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        yield Patient(patient.id, target, image("dwi_b0"), image("dwi_b1000"),
                      echo_time=patient.echo_time, repetition_time=patient.repetition_time,
                      ht=patient.ht, brain_mask=image("brain_mask"),
                      ht_mask=image("ht_mask"), aif=patient.aif,
                      slice_timing=patient.slice_timing, n_nonsteady=patient.n_nonsteady,
                      field_strength=patient.field_strength)


def _proba_chunks(reader, rest, patient, index, mask, chunk_size):
    """Yield ``(ijk, proba)`` for the voxels to map, ``chunk_size`` at a time.

    The extractor's own whole-volume path (``iter_volume``, which reads the volume block
    by block) serves the brain mask; an explicit mask, an extractor without that path,
    or a reader that is the whole model goes through chunks of voxel references.
    """
    if rest is not None and mask is None and hasattr(reader, "iter_volume"):
        for ijk, features in reader.iter_volume(index, chunk_size=chunk_size):
            yield ijk, rest.predict_proba(features)
        return
    refs = brain_voxel_refs(patient, index, mask)
    for start in range(0, len(refs), chunk_size):
        chunk = refs[start:start + chunk_size]
        proba = (reader.predict_proba(chunk) if rest is None
                 else rest.predict_proba(reader.transform(chunk)))
        yield chunk[:, 1:], proba


def _map_image(values, patient):
    """A 3D float32 NIfTI image on the patient's PWI grid (affine and header kept)."""
    header = patient.pwi.header.copy()
    header.set_data_shape(values.shape)
    header.set_data_dtype(np.float32)
    header.set_zooms(patient.pwi.header.get_zooms()[:3])
    if hasattr(header, "set_slope_inter"):
        header.set_slope_inter(1.0, 0.0)  # the source PWI may be scaled integers
    if "cal_min" in header:
        header["cal_min"], header["cal_max"] = 0.0, 1.0
    if "descrip" in header:
        header["descrip"] = b"sklearn-hemo HT risk (probability)"
    img = nib.Nifti1Image(values, patient.affine, header=header)
    return img


# ------------------------------------------------------------------------------ maps
@validate_params(
    {
        # what the map needs of the model (a voxel-reference first step, probabilities)
        # is checked by the function, whose messages name the fix
        "estimator": [HasMethods(["fit"])],
        "patient": [Patient, Integral, str],
        "cohort": [Cohort, None],
        "chunk_size": [Integral],
        "positive_class": "no_validation",  # any label of the model's classes
        "mask": ["array-like", None],
        "prevalence": [Interval(Real, 0, 1, closed="neither"), None],
        "training_prevalence": [Interval(Real, 0, 1, closed="neither"), None],
    },
    prefer_skip_nested_validation=True,
)
def predict_risk_map(estimator, patient, *, cohort=None, chunk_size=DEFAULT_CHUNK_SIZE,
                     positive_class=1, mask=None, prevalence=None,
                     training_prevalence=None):
    """Voxel-wise probability of HT over a patient's brain, as a NIfTI image.

    Parameters
    ----------
    estimator : Pipeline or estimator
        Fitted pipeline whose first step is a
        :class:`~sklearn_hemo.preprocessing.PatchExtractor` (or another step with a
        ``cohort`` that reads voxel references) and whose last step has
        ``predict_proba`` (any model: LSTM or classic; see :func:`with_probabilities`
        for models without probabilities); or one estimator that reads voxel
        references and has ``predict_proba``.
    patient : Patient, int or str
        The patient to map: a :class:`~sklearn_hemo.datasets.Patient` (of any cohort,
        or none), or a patient index / participant id of ``cohort`` (default: the
        cohort the pipeline's extractor holds).
    cohort : Cohort or None, default=None
        Where an index or id is looked up, instead of the extractor's own cohort.
    chunk_size : int, default=16384
        Voxels whose features are computed and scored at once: the memory bound (about
        ``chunk_size * n_features * 4`` bytes of features).
    positive_class : label, default=1
        The class that means HT; its probability is mapped.
    mask : ndarray of bool or None, default=None
        Voxels to score; the patient's brain mask when None. The map is 0 elsewhere.
    prevalence : float in (0, 1) or None, default=None
        Whole-brain calibration when the map is drawn: move the model's probabilities
        from the prevalence they read against to this one
        (:func:`~sklearn_hemo.calibration.shift_prior`; e.g.
        :func:`~sklearn_hemo.calibration.whole_brain_prevalence` of the training
        patients). None maps the model's probabilities as they are: whole-brain
        calibrated when the model was trained so (``sklearn-hemo train``'s default, a
        last step :class:`~sklearn_hemo.calibration.PriorShiftClassifier`).
    training_prevalence : float in (0, 1) or None, default=None
        With ``prevalence``: the prevalence the model's probabilities read against; None
        takes the ``prevalence_`` of a last step
        :class:`~sklearn_hemo.calibration.PriorShiftClassifier`, else 0.5 (the balanced
        sample every model of the package is trained on).

    Returns
    -------
    risk_map : nibabel.Nifti1Image
        3D float32 image of HT probability in [0, 1] with the PWI's affine and (3D)
        header; 0 outside the mask.

    Raises
    ------
    TypeError
        The estimator does not start with a step that reads voxel references, or cannot
        give probabilities.
    ValueError
        The model returns non-finite probabilities, or ``patient`` / ``positive_class``
        do not fit the model and cohort.

    See Also
    --------
    predict_risk_maps : Maps for many patients.
    sklearn_hemo.metrics.patient_table : Volumes, Dice and risk scores from maps.

    Examples
    --------
    >>> from sklearn_hemo.risk import predict_risk_map
    >>> risk = predict_risk_map(pipeline, cohort[0])  # doctest: +SKIP
    >>> risk.shape == cohort[0].shape  # doctest: +SKIP
    True
    """
    if not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}.")
    reader, rest, prior = _split_calibrated(estimator)
    column = _positive_column((reader if rest is None else rest).classes_, positive_class)
    reader, index, patient = _resolve_patient(reader, patient, cohort)
    shift = None
    if prior is not None and prevalence is None:
        prevalence = prior[1]  # the wrapper's own whole-brain prevalence
    if prevalence is not None:
        from .calibration import shift_prior

        source = training_prevalence
        if source is None and prior is not None:
            source = prior[0]  # the unwrapped reader gives the sample's probabilities
        if source is None:
            final = final_step(reader if rest is None else rest)
            source = getattr(final, "prevalence_", None) or 0.5

        def shift(p, source=source):
            return shift_prior(p, training_prevalence=source, prevalence=prevalence)
    values = np.zeros(patient.shape, dtype=np.float32)
    with _uncompressed_pwi(patient) as readable:
        if readable is not patient:
            reader, index = _with_cohort(reader, Cohort([readable])), 0
        for ijk, proba in _proba_chunks(reader, rest, readable, index, mask, chunk_size):
            proba = proba[:, column]
            if not np.all(np.isfinite(proba)):
                raise ValueError(
                    f"participant {patient.id}: the model returned non-finite probabilities "
                    f"for {int(np.sum(~np.isfinite(proba)))} voxels; check the patient's "
                    "images (e.g. zero baseline signal) and the model.")
            if shift is not None:
                proba = shift(np.clip(proba, 0.0, 1.0))
            values[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = proba
    # float rounding can leave a softmax a hair outside [0, 1]
    np.clip(values, 0.0, 1.0, out=values)
    return _map_image(values, patient)


@validate_params(
    {
        "estimator": [HasMethods(["fit"])],
        "cohort": [Cohort, None],
        "patients": ["array-like", None],
    },
    # **kwargs go to predict_risk_map: let it check them
    prefer_skip_nested_validation=False,
)
def predict_risk_maps(estimator, cohort=None, patients=None, **kwargs):
    """Risk maps of several patients of a cohort.

    Parameters
    ----------
    estimator : Pipeline
        As in :func:`predict_risk_map`.
    cohort : Cohort or None, default=None
        The patients' cohort; the extractor's own cohort when None.
    patients : sequence of int or str, or None, default=None
        Patient indices or ids; all patients of the cohort when None.
    **kwargs
        Passed to :func:`predict_risk_map` (``chunk_size``, ``positive_class``).

    Returns
    -------
    maps : list of nibabel.Nifti1Image
        One map per patient, in the order asked.

    Examples
    --------
    >>> from sklearn_hemo.risk import predict_risk_maps
    >>> maps = predict_risk_maps(pipeline, test_cohort)  # doctest: +SKIP
    """
    source, patients = _cohort_patients(estimator, cohort, patients)
    return [predict_risk_map(estimator, p, cohort=source, **kwargs) for p in patients]


@validate_params(
    {
        "estimator": [HasMethods(["fit"])],
        "cohort": [Cohort, None],
        "patients": ["array-like", None],
        "threshold": [Interval(Real, 0, 1, closed="both")],
        "percentile": [Interval(Real, 0, 100, closed="both")],
    },
    # **kwargs go to predict_risk_map: let it check them
    prefer_skip_nested_validation=False,
)
def risk_map_table(estimator, cohort=None, patients=None, *, threshold=0.5, percentile=99.0,
                   **kwargs):
    """Per-patient volumes, risk scores and (when annotated) Dice, from risk maps.

    Draws :func:`predict_risk_maps` and passes them to
    :func:`sklearn_hemo.metrics.patient_table`; maps are dropped as soon as they are
    measured.

    Parameters
    ----------
    estimator : Pipeline
        As in :func:`predict_risk_map`.
    cohort : Cohort or None, default=None
        The patients' cohort; the extractor's own cohort when None.
    patients : sequence of int or str, or None, default=None
        Patient indices or ids (e.g. the test patients of a fold); all when None.
    threshold : float, default=0.5
        Risk at or above which a voxel counts as predicted HT.
    percentile : float, default=99.0
        Percentile of in-brain voxel risks used as the patient risk score.
    **kwargs
        Passed to :func:`predict_risk_map`.

    Returns
    -------
    rows : list of dict
        As :func:`sklearn_hemo.metrics.patient_table`.

    Examples
    --------
    >>> from sklearn_hemo.risk import risk_map_table
    >>> rows = risk_map_table(pipeline, cohort, patients=test_ids)  # doctest: +SKIP
    """
    from .metrics import patient_table

    source, patients = _cohort_patients(estimator, cohort, patients)
    rows = []
    for p in patients:
        risk = predict_risk_map(estimator, p, cohort=source, **kwargs)
        patient = source[source.index(p) if isinstance(p, str) else p]
        rows += patient_table([risk], [patient], threshold=threshold, percentile=percentile)
    return rows


@validate_params(
    {
        "pipeline": [Pipeline],
        "X": ["array-like"],
        "y": ["array-like"],
        "fold": ["array-like"],
        "params": [dict, None],
        "cohort": [Cohort, None],
        "threshold": [Interval(Real, 0, 1, closed="both")],
        "percentile": [Interval(Real, 0, 100, closed="both")],
        "calibration_splits": [Interval(Integral, 2, None, closed="left")],
        "chunk_size": [Integral],
        "calibration": [StrOptions({"whole-brain", "sample"})],
        "callback": [callable, None],
    },
    # fits clones of a pipeline that nothing has validated yet: let its steps check
    # their parameters (as scikit-learn's cross_validate)
    prefer_skip_nested_validation=False,
)
def cross_val_risk_map_table(pipeline, X, y, fold, *, params=None, cohort=None,
                             threshold=0.5, percentile=99.0, calibration_splits=3,
                             chunk_size=DEFAULT_CHUNK_SIZE, calibration="whole-brain",
                             callback=None):
    """Out-of-fold risk maps of whole patients, measured: volumes, Dice, risk scores.

    For each outer fold ``k``: a clone of ``pipeline`` (with ``params[k]``, and
    :func:`with_probabilities` when its model has no ``predict_proba``) is fitted on the
    voxel references of the other folds, and every patient of fold ``k`` is mapped in
    full and measured (:func:`sklearn_hemo.metrics.patient_table`). With the voxels,
    folds and chosen parameters of :func:`~sklearn_hemo.model_selection.compare_models`
    this gives the whole-brain, patient-level results of the same comparison.

    Parameters
    ----------
    pipeline : Pipeline
        Unfitted pipeline starting with a PatchExtractor (e.g. a model-zoo row).
    X : ndarray of shape (n_samples, 4)
        Voxel references (patient index, i, j, k) of the training sample.
    y : ndarray of shape (n_samples,)
        Their labels.
    fold : ndarray of shape (n_samples,)
        Outer fold of each row; all rows of a patient must share one fold.
    params : dict or None, default=None
        Fold -> parameters to set (keys int or str, as in the ``best_params`` of a
        comparison); None keeps the pipeline's.
    cohort : Cohort or None, default=None
        Set as the extractor's cohort when given.
    threshold, percentile
        As in :func:`sklearn_hemo.metrics.patient_table`.
    calibration_splits : int, default=3
        Patient-grouped folds of :func:`with_probabilities`, for models without
        ``predict_proba``.
    chunk_size : int, default=16384
        As in :func:`predict_risk_map`.
    calibration : {"whole-brain", "sample"}, default="whole-brain"
        ``"whole-brain"``: each fold's model is wrapped in
        :class:`~sklearn_hemo.calibration.PriorShiftClassifier`, moving its
        probabilities from the balanced training sample to the whole-brain prevalence
        of that fold's *training* patients (no held-out patient is looked at); the maps
        then read as probabilities of HT on a whole brain. ``"sample"``: probabilities
        of the training sample (half HT when sampled balanced) (what maps were before this option).
    callback : callable or None, default=None
        Called as ``callback(fold, patient, risk_map)`` with every held-out
        :class:`~sklearn_hemo.datasets.Patient` and its map, before the map is dropped
        (e.g. to accumulate calibration counts or draw a picture).

    Returns
    -------
    rows : list of dict
        One row per patient with a sampled voxel: ``fold``, the columns of
        :func:`~sklearn_hemo.metrics.patient_table`, and the patient-level answer of
        :func:`~sklearn_hemo.calibration.patient_answer` (``expected_volume_ml``,
        ``probability_any_ht``, the latter with the bleeding fraction of the fold's
        training patients).

    Raises
    ------
    ValueError
        A patient has rows in two folds (its voxels would be both trained and tested on).

    Examples
    --------
    >>> from sklearn_hemo.risk import cross_val_risk_map_table
    >>> rows = cross_val_risk_map_table(pipeline, X, y, fold)  # doctest: +SKIP
    """
    from sklearn.base import clone

    from .metrics import patient_table

    X, y, fold = np.asarray(X), np.asarray(y), np.asarray(fold)
    if not (len(X) == len(y) == len(fold)):
        raise ValueError(f"X, y and fold must have one entry per row, got {len(X)}, {len(y)} "
                         f"and {len(fold)}.")
    patients, first = np.unique(X[:, 0], return_index=True)
    owner = dict(zip(patients.tolist(), fold[first].tolist(), strict=True))
    split = np.flatnonzero(fold != np.array([owner[p] for p in X[:, 0].tolist()]))
    if split.size:
        raise ValueError(
            f"patient index {int(X[split[0], 0])} has rows in more than one fold; a patient "
            "must be on one side of every split.")
    from .calibration import bleeding_fraction, patient_answer, whole_brain_prevalence

    rows = []
    for k in np.unique(fold).tolist():
        model = clone(pipeline)
        if cohort is not None:
            model.steps[0][1].set_params(cohort=cohort)
        if params is not None:
            model.set_params(**params.get(k, params.get(str(k), {})))
        train = fold != k
        source = model.steps[0][1].get_params(deep=False)["cohort"]
        trained_on = sorted(set(X[train, 0].tolist()))
        fraction = bleeding_fraction(source, trained_on)
        prevalence = (whole_brain_prevalence(source, trained_on)
                      if calibration == "whole-brain" else None)
        model = with_probabilities(model, y[train], X[train, 0],
                                   n_splits=calibration_splits, prevalence=prevalence)
        model.fit(X[train], y[train])
        for index in sorted(set(X[~train, 0].tolist())):
            patient = source[index]
            risk = predict_risk_map(model, index, chunk_size=chunk_size)
            row = patient_table([risk], [patient], threshold=threshold,
                                percentile=percentile)[0]
            answer = patient_answer(risk, patient.get_brain_mask(),
                                    bleeding_fraction=fraction)
            rows.append({"fold": k, **row,
                         "expected_volume_ml": answer["expected_volume_ml"],
                         "probability_any_ht": answer["probability_any_ht"]})
            if callback is not None:
                callback(k, patient, risk)
    return rows


# -------------------------------------------------------------------- probabilities
@validate_params(
    {
        "pipeline": [Pipeline],
        "y": ["array-like"],
        "groups": ["array-like"],
        "n_splits": [Interval(Integral, 2, None, closed="left")],
        "step": [str, None],
        "prevalence": [Interval(Real, 0, 1, closed="neither"), None],
    },
    prefer_skip_nested_validation=True,
)
def with_probabilities(pipeline, y, groups, *, n_splits=3, step=None, prevalence=None):
    """Give a pipeline whose model has only ``decision_function`` a ``predict_proba``.

    The named step is replaced (in a copy of the pipeline's step list; the steps are
    not cloned) by :class:`~sklearn.calibration.CalibratedClassifierCV` with Platt
    (sigmoid) scaling, ``ensemble=False`` and patient-grouped folds over ``groups``
    (patients holding the rarer class dealt round-robin first, so that every fold
    trains on both classes): the sigmoid is fitted on out-of-fold decision values of
    held-out *patients* and a single model is then refitted on every voxel. Returns an
    unfitted pipeline, to fit on the same rows ``groups`` describes.

    Parameters
    ----------
    pipeline : Pipeline
        Unfitted pipeline (e.g. a model-zoo row).
    y : array-like of shape (n_samples,)
        Labels of the training rows (for stratified folds).
    groups : array-like of shape (n_samples,)
        Patient of each training row (``X[:, 0]`` of the voxel references).
    n_splits : int, default=3
        Patient-grouped folds for the calibration; fewer when fewer patients hold a
        class (each fold must train on both).
    step : str or None, default=None
        Name of the step to calibrate; None is the last step.
    prevalence : float in (0, 1) or None, default=None
        Whole-brain calibration: the (calibrated) step is wrapped in
        :class:`~sklearn_hemo.calibration.PriorShiftClassifier`, which moves its
        probabilities from the training sample's prevalence (read from ``y`` at fit) to
        this one, e.g. :func:`~sklearn_hemo.calibration.whole_brain_prevalence` of the
        training patients. None keeps the probabilities of the training sample.

    Returns
    -------
    pipeline : Pipeline
        The pipeline with a calibrated last step, or the same pipeline when the step has
        ``predict_proba`` already and ``prevalence`` is None.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import Pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn_hemo.linear_model import LinearRegressionClassifier
    >>> from sklearn_hemo.risk import with_probabilities
    >>> rng = np.random.RandomState(0)
    >>> X, y, groups = rng.normal(size=(60, 3)), np.arange(60) % 2, np.arange(60) // 10
    >>> pipe = Pipeline([("scale", StandardScaler()),
    ...                  ("model", LinearRegressionClassifier())])
    >>> with_probabilities(pipe, y, groups).fit(X, y).predict_proba(X).shape
    (60, 2)
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import PredefinedSplit

    step = pipeline.steps[-1][0] if step is None else step
    model = pipeline.named_steps[step]
    if hasattr(model, "predict_proba"):
        return _with_prior_shift(pipeline, step, model, prevalence)
    y, groups = np.asarray(y), np.asarray(groups)
    # every calibration fold must train on both classes: at most as many folds as there
    # are patients holding the rarer class
    per_class = {c: np.unique(groups[y == c]).size for c in np.unique(y)}
    n_folds = min([n_splits, *per_class.values()])
    if len(per_class) < 2 or n_folds < 2:
        raise ValueError(
            f"calibrating {type(model).__name__} into probabilities needs each class in the "
            f"voxels of at least 2 patients (patient-grouped folds); got patients per "
            f"class {per_class}. Train on more patients, or use a model with predict_proba.")
    # Deal the patients holding the rarer class round-robin over the folds first, then
    # the others, so that every fold holds out (and every training side keeps) both
    # classes; StratifiedGroupKFold balances voxel counts and can put them all together.
    rare = min(per_class, key=per_class.get)
    holders = np.unique(groups[y == rare])
    others = np.setdiff1d(np.unique(groups), holders)
    fold_of = {g: i % n_folds for i, g in enumerate([*holders.tolist(), *others.tolist()])}
    test_fold = np.array([fold_of[g] for g in groups.tolist()])
    # precomputed (train, test) index pairs: a Pipeline step cannot receive groups
    # without turning metadata routing on globally
    cv = list(PredefinedSplit(test_fold).split())
    for train, _ in cv:
        if np.unique(y[train]).size < 2:
            raise ValueError(
                f"cannot calibrate {type(model).__name__}: a patient-grouped fold would "
                "train on one class only. Train on more patients.")
    calibrated = CalibratedClassifierCV(model, method="sigmoid", cv=cv, ensemble=False)
    return _with_prior_shift(pipeline, step, calibrated, prevalence)


def _with_prior_shift(pipeline, step, model, prevalence):
    """The pipeline with ``model`` as ``step``, wrapped in a prior shift when asked."""
    if prevalence is not None:
        from .calibration import PriorShiftClassifier

        model = PriorShiftClassifier(model, prevalence=prevalence)
    if model is pipeline.named_steps[step]:
        return pipeline
    steps = [(name, model if name == step else est) for name, est in pipeline.steps]
    return Pipeline(steps, memory=pipeline.memory, verbose=pipeline.verbose)
