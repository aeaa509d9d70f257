"""What can go wrong talking to jetinfer, as one exception tree.

::

    JetinferError
    ├── ConnectError                   NATS or Redis could not be reached at connect time
    ├── InvalidJob (also ValueError)   the job breaks a wire rule; nothing was sent
    ├── Rejected                       JetStream did not accept the job
    │   ├── StreamFull                 that priority's stream is full: back off, retry
    │   └── StreamMissing              no stream listens (no responders): no dispatcher yet
    ├── StoreError                     Redis failed (reading a result, storing inputs)
    ├── Timeout (also TimeoutError)    no result in time
    │   └── WaitManyTimeout            ... for some of a wait_many's ids (keeps the others)
    └── JobFailed                      the result's status is "error": see .code
        └── JobExpired                 the result's status is "expired"

A job that was refused can be published again with the same id: JetStream de-duplicates
on ``Nats-Msg-Id``. A result is final, so a failed job is retried with a new id.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .result import Result


class JetinferError(Exception):
    """Base of every error this package raises."""


class ConnectError(JetinferError):
    """NATS refused or did not answer when connecting, or a URL is malformed."""


class InvalidJob(JetinferError, ValueError):
    """The job (id, model name, version, inputs, options) breaks a rule of the wire format."""


class Rejected(JetinferError):
    """JetStream did not accept the job (and did not store it)."""

    def __init__(self, message: str, subject: str = "", job_id: str = ""):
        super().__init__(message)
        self.subject = subject
        self.job_id = job_id


class StreamFull(Rejected):
    """The priority's stream is at its message or byte limit (backpressure): retry later."""


class StreamMissing(Rejected):
    """No stream listens on the job's subject: the dispatcher has not created it yet."""


class StoreError(JetinferError):
    """Redis refused or did not answer (the cause is chained as ``__cause__``)."""


class Timeout(JetinferError, TimeoutError):
    """No result for ``job_id`` within ``timeout`` seconds."""

    def __init__(self, job_id: str, timeout: float):
        super().__init__(f"no result for {job_id} within {timeout:g} s")
        self.job_id = job_id
        self.timeout = timeout


class WaitManyTimeout(Timeout):
    """Some ids of a ``wait_many`` had no result in time. ``missing`` lists them (each
    once, in the order given); ``results`` has one entry per id given: the result, or None."""

    def __init__(self, missing: Sequence[str], results: "List[Optional[Result]]", timeout: float):
        JetinferError.__init__(
            self,
            f"{len(missing)} of {len(results)} results missing after {timeout:g} s: "
            f"{list(missing[:5])}{' and more' if len(missing) > 5 else ''}",
        )
        self.job_id = missing[0] if missing else ""
        self.timeout = timeout
        self.missing = list(missing)
        self.results = results


class JobFailed(JetinferError):
    """A result whose status is not ``ok``. ``code`` is the stable error code
    (``unknown_model``, ``invalid_input``, ``bad_payload``, ...), ``result`` the whole result."""

    def __init__(self, result: "Result"):
        err = result.error
        code = err.code if err else "internal"
        message = err.message if err else "(no error in the result)"
        super().__init__(f"job {result.id} on {result.model}: {result.status}, {code}: {message}")
        self.result = result
        self.code = code
        self.message = message


class IdConflict(JetinferError):
    """The result stored under the job's id answers another job (other inputs or model):
    the id was reused. ``result`` is that other job's result; publish again with a new id."""

    def __init__(self, job_id: str, result: "Result"):
        super().__init__(f"job {job_id}: the stored result answers another job with this id "
                         f"(model {result.model}, inputs digest {result.inputs_digest[:16]}...); use a new id")
        self.result = result


class JobExpired(JobFailed):
    """The job's deadline passed before it reached a model (status ``expired``)."""
