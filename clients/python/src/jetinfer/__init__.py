"""jetinfer: submit inference jobs to a jetinfer worker pool and read their results.

Jobs go to NATS JetStream, results come from Redis, both MessagePack, as
docs/wire-format.md in the jetinfer repository specifies.

- :class:`Client` (``sync.py``): blocking; :class:`AsyncClient` (``aio.py``): asyncio.
  Both have ``submit``, ``get``, ``wait``, ``wait_many`` and ``infer`` (submit + wait).
- :class:`Result` (``result.py``): status, outputs as numpy arrays, error code, timings.
- :class:`Tensor` (``tensor.py``): one sample as the wire carries it; inputs may be numpy
  arrays, Tensors or raw bytes.
- ``errors.py``: the exception tree (ConnectError, InvalidJob, StreamFull, StreamMissing, Rejected,
  StoreError, Timeout, WaitManyTimeout, JobFailed, JobExpired).
- ``wire.py``: names, limits, job encoding, and the choice of partition stream and input
  store; ``_partitions.py``: each priority's partition count, read from JetStream;
  ``_gather.py``: wait_many's bookkeeping; ``_otel.py``: the ``traceparent`` header when
  OpenTelemetry is installed.

::

    import numpy as np, jetinfer
    with jetinfer.Client("nats://127.0.0.1:4222", "redis://127.0.0.1:6379") as c:
        r = c.infer("mlp", [np.zeros(16, np.float32)], timeout=10)
        print(r.outputs[0])
"""
from .aio import AsyncClient, Submitted
from .errors import (ConnectError, IdConflict, InvalidJob, JetinferError, JobExpired, JobFailed, Rejected, StoreError, StreamFull,
                     StreamMissing, Timeout, WaitManyTimeout)
from .result import ErrorInfo, Result, Timings, decode_result
from .sync import Client
from .tensor import Tensor, inputs_digest
from .wire import INLINE_LIMIT, Priority

__all__ = [
    "AsyncClient", "Client", "Submitted", "Result", "ErrorInfo", "Timings", "Tensor", "Priority",
    "INLINE_LIMIT", "decode_result", "inputs_digest",
    "JetinferError", "ConnectError", "InvalidJob", "Rejected", "StreamFull", "StreamMissing", "StoreError", "Timeout",
    "WaitManyTimeout", "JobFailed", "JobExpired", "IdConflict",
]
__version__ = "0.1.0"
