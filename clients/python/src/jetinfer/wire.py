"""The job side of the wire contract (docs/wire-format.md sections 2, 3, 5 and 10):
names, limits, partition streams and input stores, and a validated job encoded as
MessagePack.

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

#: Most partition streams per priority (the dispatcher's ``--partitions``, section 2.1).
MAX_PARTITIONS = 8
#: Metadata key of a priority's partition-0 stream that holds its partition count N.
PARTITIONS_METADATA_KEY = "jetinfer.partitions"

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


def fnv1a_32(data: bytes) -> int:
    """FNV-1a, 32 bit: how jobs are spread over partitions and input stores
    (``fnv1a_32(b"a") == 0xe40c292c``)."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def partition_for(job_id: str, partitions: int) -> int:
    """The partition stream of a job when its priority has ``partitions`` of them
    (section 2.1): the same id always lands in the same stream, so de-duplication holds."""
    return 0 if partitions <= 1 else fnv1a_32(job_id.encode()) % partitions


def input_store_for(job_id: str, stores: int) -> int:
    """The input store of a job's inputs sent by reference, out of ``stores`` (store 0 is
    the result store; section 10, "Several input stores")."""
    return 0 if stores <= 1 else fnv1a_32(job_id.encode()) % stores


def partition_stream(priority: Priority, k: int) -> str:
    """Stream of partition ``k`` of a priority: ``JETINFER_P1``, ``JETINFER_P1_<k>``."""
    name = f"JETINFER_{priority.value.upper()}"
    return name if k == 0 else f"{name}_{k}"


def partition_subject(priority: Priority, model: str, k: int) -> str:
    """Subject of a job of ``model`` in partition ``k``: partition 0's is the plain one."""
    subject = job_subject(priority, model)
    return subject if k == 0 else f"{subject}.{k}"


def partitions_from_metadata(value: Optional[str]) -> int:
    """N from a partition-0 stream's metadata value; absent, unreadable or out of range
    counts as 1, so there is always a stream to publish to."""
    try:
        n = int(value.strip()) if isinstance(value, str) else 1
    except ValueError:
        return 1
    return n if 1 <= n <= MAX_PARTITIONS else 1


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


def by_reference(job: Dict[str, Any], tensors: Sequence[Tensor], store: int = 0) -> Tuple[Dict[str, Any], bytes]:
    """The job with its inputs by reference, and the value to store under
    ``<prefix>:input:<id>`` in input store ``store`` (section 10; examples 9.4 to 9.6)."""
    value = pack([t.to_wire() for t in tensors])
    if len(value) > MAX_PAYLOAD:
        raise InvalidJob(f"inputs of {len(value)} bytes; at most {MAX_PAYLOAD} even by reference")
    ref: Dict[str, Any] = {"bytes": len(value), "digest": inputs_digest(tensors)}
    if store:  # left out for store 0, so one-store references are unchanged
        ref["store"] = store
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
