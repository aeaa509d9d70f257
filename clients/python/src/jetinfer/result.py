"""Results as read from Redis (docs/wire-format.md section 6): :class:`Result`, its
:class:`ErrorInfo` and :class:`Timings`, and :func:`decode_result`.

A reader accepts any documented key missing (it takes the documented default) and ignores
keys it does not know (kept in ``Result.extra``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import msgpack
import numpy as np

from .errors import JobExpired, JobFailed
from .tensor import Tensor

OK = "ok"
ERROR = "error"
EXPIRED = "expired"


@dataclass(frozen=True)
class ErrorInfo:
    """``code`` is stable (``bad_payload``, ``invalid_input``, ``unknown_model``,
    ``expired``, ``overloaded``, ``resource_exhausted``, ``poison``, ``internal``);
    branch on it, not on ``message``."""

    code: str
    message: str


@dataclass(frozen=True)
class Timings:
    queued_ms: float = 0.0
    batch_size: int = 0
    compute_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True)
class Result:
    """A job's final result. ``tensors`` are the outputs as on the wire; ``outputs``
    gives them as numpy arrays."""

    id: str
    status: str
    model: str
    version: str = ""
    tensors: List[Tensor] = field(default_factory=list)
    error: Optional[ErrorInfo] = None
    meta: Dict[str, str] = field(default_factory=dict)
    worker: str = ""
    cached: bool = False
    attempts: int = 0
    timings: Timings = field(default_factory=Timings)
    completed_at_ms: int = 0
    #: Digest of the inputs this result answers ("" when unknown): see :meth:`answers`.
    inputs_digest: str = ""
    #: The job's W3C trace id ("" when untraced).
    trace_id: str = ""
    #: Keys this version of the package does not know, as decoded.
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def outputs(self) -> List[np.ndarray]:
        """The outputs as read-only numpy arrays, one sample each (every dtype is read:
        an f16 deployment may return f16)."""
        return [t.numpy() for t in self.tensors]

    def answers(self, model: str, digest: str) -> bool:
        """False when this result provably belongs to another job under the same id: another
        model, or other inputs (by digest; a result without one cannot tell)."""
        return self.model == model and (not self.inputs_digest or self.inputs_digest == digest)

    def raise_for_status(self) -> "Result":
        """Returns self when ``ok``; raises :class:`JobExpired` for ``expired`` and
        :class:`JobFailed` (with ``.code``) for ``error``."""
        if self.status == OK:
            return self
        if self.status == EXPIRED:
            raise JobExpired(self)
        raise JobFailed(self)


_KNOWN = {"v", "id", "status", "model", "version", "outputs", "error", "meta", "worker", "cached",
          "attempts", "timings", "completed_at_ms", "inputs_digest", "trace_id"}


def decode_result(raw: bytes) -> Result:
    """A stored result from its MessagePack bytes; ValueError when they are not one."""
    try:
        r = msgpack.unpackb(raw, raw=False)
    except Exception as e:  # msgpack raises several unrelated types
        raise ValueError(f"result is not MessagePack: {e}") from e
    if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("id", "status", "model")):
        raise ValueError(f"not a jetinfer result: {r!r:.120}")
    err = r.get("error")
    t = r.get("timings") or {}
    return Result(
        id=r["id"],
        status=r["status"],
        model=r["model"],
        version=r.get("version") or "",
        tensors=[Tensor.from_wire(x) for x in r.get("outputs") or []],
        error=ErrorInfo(str(err.get("code", "")), str(err.get("message", ""))) if isinstance(err, dict) else None,
        meta=dict(r.get("meta") or {}),
        worker=r.get("worker") or "",
        cached=bool(r.get("cached", False)),
        attempts=int(r.get("attempts") or 0),
        timings=Timings(float(t.get("queued_ms", 0.0)), int(t.get("batch_size", 0)),
                        float(t.get("compute_ms", 0.0)), float(t.get("total_ms", 0.0))),
        completed_at_ms=int(r.get("completed_at_ms") or 0),
        inputs_digest=str(r.get("inputs_digest") or ""),
        trace_id=str(r.get("trace_id") or ""),
        extra={k: v for k, v in r.items() if k not in _KNOWN},
    )
