"""The job side of the wire contract (docs/wire-format.md sections 2, 3, 5 and 10):
names, limits, and a validated job encoded as MessagePack.

One definition of each protocol fact lives here; the clients only do I/O around it.
"""
from __future__ import annotations

import enum
import re
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import msgpack

from .errors import InvalidJob
from .tensor import MAX_ELEMENTS, Tensor, as_tensor, inputs_digest

SCHEMA_VERSION = 1
#: Default prefix of the Redis keys (deployments may change it).
KEY_PREFIX = "jetinfer"
#: Inputs whose tensor data totals at least this many bytes go by reference (section 10).
INLINE_LIMIT = 32 * 1024
#: Largest job message, and largest value of inputs sent by reference.
MAX_PAYLOAD = 8 * 1024 * 1024
MAX_INPUTS = 16
#: Stored inputs of a job without deadline live this long; with a deadline, until
#: INPUTS_TTL_MARGIN_MS after it.
INPUTS_TTL_MS = 3_600_000
INPUTS_TTL_MARGIN_MS = 60_000

_JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MODEL = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VERSION = re.compile(r"[A-Za-z0-9._-]{1,64}")


class Priority(str, enum.Enum):
    """``p0`` real-time (default deadline 5 s), ``p1`` interactive (30 s), ``p2`` batch (300 s)."""

    P0 = "p0"
    P1 = "p1"
    P2 = "p2"

    @classmethod
    def parse(cls, value: Union["Priority", str, int]) -> "Priority":
        """``Priority.P1``, ``"p1"``, ``"P1"`` or ``1``."""
        text = f"p{value}" if isinstance(value, int) and not isinstance(value, bool) else str(
            getattr(value, "value", value)).lower()
        try:
            return cls(text)
        except ValueError:
            raise InvalidJob(f"priority {value!r} is not p0, p1 or p2") from None


def job_subject(priority: Priority, model: str) -> str:
    return f"jetinfer.jobs.{priority.value}.{model}"


def done_subject(job_id: str) -> str:
    """Core NATS subject of a job's completion notice (``>`` gives all of them)."""
    return f"jetinfer.done.{job_id}"


def result_key(job_id: str, prefix: str = KEY_PREFIX) -> str:
    return f"{prefix}:result:{job_id}"


def input_key(job_id: str, prefix: str = KEY_PREFIX) -> str:
    return f"{prefix}:input:{job_id}"


def now_ms() -> int:
    return int(time.time() * 1000)


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise InvalidJob(f"job id {job_id!r} is not 1..128 characters of [A-Za-z0-9._:-]")
    return job_id


def _check_meta(meta: Mapping[str, str]) -> Dict[str, str]:
    if not isinstance(meta, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise InvalidJob("meta must map str to str")
    return dict(sorted(meta.items()))  # sorted, as the Rust encoder writes its BTreeMap


def build_job(job_id: str, model: str, inputs: Sequence[Any], *, version: Optional[str] = None,
              deadline_ms: Optional[int] = None, cache: Optional[bool] = None,
              meta: Optional[Mapping[str, str]] = None) -> Tuple[Dict[str, Any], List[Tensor]]:
    """The Job map (section 3) with its inputs inline, and those inputs as Tensors.

    Keys appear in the order of the Rust struct, optional ones only when set, so the
    bytes equal what the Rust encoder writes (example 9.1)."""
    check_job_id(job_id)
    if not isinstance(model, str) or not _MODEL.fullmatch(model):
        raise InvalidJob(f"model name {model!r} is not 1..64 characters of [A-Za-z0-9_-]")
    if version is not None and (not isinstance(version, str) or not _VERSION.fullmatch(version)):
        raise InvalidJob(f"version {version!r} is not 1..64 characters of [A-Za-z0-9._-]")
    if isinstance(inputs, (Tensor, bytes, bytearray)) or not isinstance(inputs, Sequence):
        raise InvalidJob("inputs must be a list of samples (numpy arrays, Tensors or bytes)")
    tensors = [as_tensor(x) for x in inputs]
    if not 1 <= len(tensors) <= MAX_INPUTS:
        raise InvalidJob(f"a job has 1..{MAX_INPUTS} inputs, got {len(tensors)}")
    for i, t in enumerate(tensors):
        if t.elements > MAX_ELEMENTS:
            raise InvalidJob(f"input {i} has {t.elements} elements, at most {MAX_ELEMENTS}")
    if deadline_ms is not None and (isinstance(deadline_ms, bool) or not isinstance(deadline_ms, int) or deadline_ms < 0):
        raise InvalidJob(f"deadline_ms {deadline_ms!r} is not Unix epoch milliseconds")
    if cache is not None and not isinstance(cache, bool):
        raise InvalidJob(f"cache {cache!r} is not a bool")
    job: Dict[str, Any] = {"v": SCHEMA_VERSION, "id": job_id, "model": model}
    if version is not None:
        job["version"] = version
    job["inputs"] = [t.to_wire() for t in tensors]
    if deadline_ms is not None:
        job["deadline_ms"] = deadline_ms
    if cache is not None:
        job["cache"] = cache
    if meta is not None:
        job["meta"] = _check_meta(meta)
    return job, tensors


def by_reference(job: Dict[str, Any], tensors: Sequence[Tensor]) -> Tuple[Dict[str, Any], bytes]:
    """The job with its inputs by reference, and the value to store under
    ``<prefix>:input:<id>`` (section 10; examples 9.4 and 9.5)."""
    value = pack([t.to_wire() for t in tensors])
    if len(value) > MAX_PAYLOAD:
        raise InvalidJob(f"inputs of {len(value)} bytes; at most {MAX_PAYLOAD} even by reference")
    ref = {"bytes": len(value), "digest": inputs_digest(tensors)}
    out: Dict[str, Any] = {}
    for key, v in job.items():  # same key order, inputs_ref right after inputs
        out[key] = [] if key == "inputs" else v
        if key == "inputs":
            out["inputs_ref"] = ref
    return out, value


def inputs_ttl_ms(deadline_ms: Optional[int], default_ms: int = INPUTS_TTL_MS) -> int:
    """How long stored inputs live: a minute past the deadline, else ``default_ms``."""
    if deadline_ms is None:
        return default_ms
    return max(deadline_ms - now_ms(), 0) + INPUTS_TTL_MARGIN_MS


def pack(obj: Any) -> bytes:
    """MessagePack as the wire wants it: str as str, bytes as bin."""
    return msgpack.packb(obj, use_bin_type=True)


def encode_job(job: Dict[str, Any]) -> bytes:
    payload = pack(job)
    if len(payload) > MAX_PAYLOAD:
        raise InvalidJob(f"job message of {len(payload)} bytes; at most {MAX_PAYLOAD}")
    return payload
