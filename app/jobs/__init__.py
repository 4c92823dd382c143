"""Background jobs and the run store. No streamlit here: workers import it.

The API the dashboard uses::

    from app.jobs import get_backend, RunStore

    backend = get_backend()                   # from settings: SQLite queue, or Redis if FLIPSCOPE_QUEUE
    run_id = backend.submit("emap", dataset={"name": "moons"}, model={"demo": "moons"},
                            params={"epochs": 5, "rows": 200})
    run = backend.store.get(run_id)           # Run: status, progress.fraction/stage/message/eta_seconds,
                                              # error (one line), metrics, device, seconds, artifacts
    backend.cancel(run_id)                    # a running job stops at its next epoch or batch
                                              # (killed after a few seconds if it does not)
    new_id = backend.retry(run_id)            # failed or cancelled runs; linked via retry_of/retried_by
    runs = backend.store.list()               # newest first; an unreadable run shows as failed
    explanation = backend.store.load_explanation(run_id)
    meta = backend.store.explanation_meta(run_id)  # what it holds, without reading its arrays
    text = backend.store.read_log(run_id)     # a failure's traceback is here

Job kinds (``app.jobs.kinds.KINDS``): ``blackbox`` (train a random forest; with the defaults on a
built-in data set, its demo black box), ``resnet`` (train an SN-ResNet and its feature density),
``density`` (fit the DDU density of a torch model), all three in ``app.jobs.training``, and one kind
per method of ``explainers.registry.METHODS``, under the method's kind (``emap``, ``deduce``,
``jsma``, ``lime``, ``shap``, ``ig``: fit and explain with it, ``app.jobs.method``). A kind's form
comes from ``KINDS[k].params()`` (a Params dataclass, see ``explainers.base.param_specs``);
explainer kinds also take ``rows`` (cap on the test rows explained), and those whose method
``accepts_surrogate`` (``ig``) take ``surrogate`` (a run of a method that ``provides_surrogate``,
EMAP's, whose surrogate gives the gradients). ``app.jobs.runtime`` runs a job and records its end.
Specs are ``DatasetSpec``/``ModelSpec`` in ``app.jobs.resolve``; models from finished runs are
``{"run": id}``. A page reads a run only through the store's methods (``get``: the record and its files in
``artifacts``; ``load_explanation``, ``explanation_meta``, ``read_log``), never its folders.
``submit(..., owner=user, session=id)`` caps the queued + running jobs of a signed-in user and of a
dashboard session (FLIPSCOPE_MAX_JOBS_PER_USER) and of the whole instance (FLIPSCOPE_MAX_JOBS_TOTAL,
the only cap on the command line). A job running past FLIPSCOPE_JOB_TIME_LIMIT_S, or using more than
FLIPSCOPE_JOB_MEMORY_MB, is stopped (killed if it does not stop at its own next check) and failed.
On a user's behalf, pass the user: ``submit(owner=)``, ``status/result/cancel/retry/delete(run_id,
user=)``; ``app.access`` decides and refuses with ``NotYours`` (None: sign-in off, or the operator,
may do everything).

Workers: ``flipscope worker`` (``FLIPSCOPE_QUEUE=redis://...`` to share a queue); ``flipscope run``
starts one beside the dashboard and restarts it if it dies. A worker that dies mid-job leaves the
run failed ("worker died") within seconds on the same machine, within 15 s elsewhere.
"""

from __future__ import annotations

from app.jobs.backend import JobBackend, get_backend
from app.jobs.store import (
    CANCELLED,
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    Progress,
    Run,
    RunNotFound,
    RunStateError,
    RunStore,
)

__all__ = [
    "CANCELLED",
    "FAILED",
    "FINISHED",
    "QUEUED",
    "RUNNING",
    "STATUSES",
    "SUCCEEDED",
    "JobBackend",
    "Progress",
    "Run",
    "RunNotFound",
    "RunStateError",
    "RunStore",
    "get_backend",
]
