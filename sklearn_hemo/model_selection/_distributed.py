"""Starting the parallel runtimes of ``compare_models`` (loky's workers, ray; dask lives
in _compare).

Kept apart from the comparison so that the backends can change without touching it.
"""

from __future__ import annotations

import builtins
import importlib
import os
from pathlib import Path

from joblib import cpu_count


def n_workers(n_jobs):
    """Workers for joblib's ``n_jobs`` (-1: every core, -2: all but one, ...)."""
    return max(1, n_jobs if n_jobs > 0 else cpu_count() + 1 + n_jobs)


def import_modules(names):
    """Import the modules ``names``: the initializer of compare's loky workers.

    loky measures a worker's memory after its first task and restarts the worker, with
    the warning "A worker stopped while some jobs were given to the executor ... memory
    leak", once it has grown 300 MB past that. Importing torch and training a network
    grows a worker by about that much: a worker whose first task was lighter (a
    simulated patient of the cohort, a linear fit) was restarted at its first network,
    and every default ``compare`` printed the warning. Workers that import the rows'
    estimator modules before any task count them in their first measurement.
    """
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # the task that needs it says so when it is unpickled, more clearly


def task_modules(pipelines):
    """The modules of the estimators in ``pipelines``' steps, sorted (loky compares an
    executor's initializer arguments to decide whether to reuse its workers)."""
    return tuple(sorted({type(step).__module__ for pipeline in pipelines
                         for _, step in getattr(pipeline, "steps", [(None, pipeline)])}))


def init_ray(ray, address, n_jobs):
    """Join the ray cluster at ``address``, or start a local runtime of ``n_jobs`` CPUs.

    The local runtime has no dashboard (nothing listens on a web port) and its worker
    processes import this very copy of the package: the folder holding ``sklearn_hemo``
    goes first on their ``PYTHONPATH``, as a checkout run from its root expects.

    Returns a function to call after ``ray.shutdown()``: it puts back the builtin
    ``print`` that ray's driver replaces (``ray.experimental.tqdm_ray``) and never
    restores, which would otherwise, e.g., make skorch print its epoch table whatever
    its ``verbose``.
    """
    original_print = builtins.print

    def restore():
        builtins.print = original_print

    if address is not None:
        ray.init(address=address)
        return restore
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=n_workers(n_jobs), include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    return restore


def run_unordered(tasks, n_jobs, backend):
    """Results of joblib ``tasks`` as they finish, in whatever order.

    joblib's ray backend (a multiprocessing pool) cannot return a generator, so with ray
    the tasks go in batches of twice the workers, each batch returned whole: a finished
    batch is in the caller's hands (and saved) before the next starts, at the cost of
    workers idling at the end of each batch.
    """
    from joblib import Parallel

    if backend != "ray":
        yield from Parallel(n_jobs=n_jobs, return_as="generator_unordered")(tasks)
        return
    tasks = list(tasks)
    size = 2 * _ray_workers(n_jobs)
    for start in range(0, len(tasks), size):
        yield from Parallel(n_jobs=n_jobs)(tasks[start:start + size])


def _ray_workers(n_jobs):
    if n_jobs > 0:
        return n_jobs
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))
