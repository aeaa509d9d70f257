"""The asyncio client: :class:`AsyncClient` publishes jobs to JetStream (inputs of 32 KiB
or more by reference through Redis, spread over the input stores; each job to its
priority's partition stream) and reads their results from Redis, waking up on the
completion notices of core NATS and polling Redis as the fallback.
"""
from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import nats
import nats.errors
import nats.js.errors
import redis.asyncio as aioredis
import redis.exceptions

from ._gather import MGET_CHUNK, Gather, id_of_notice, notice_subjects
from ._otel import trace_headers
from ._partitions import PartitionCounts, check_fixed
from .errors import ConnectError, IdConflict, InvalidJob, Rejected, StoreError, StreamFull, StreamMissing, Timeout, WaitManyTimeout
from .result import Result, decode_result
from .tensor import inputs_digest
from .wire import (INLINE_LIMIT, INPUTS_TTL_MS, KEY_PREFIX, Priority, build_job, by_reference, check_job_id,
                   encode_job, input_key, input_store_for, inputs_ttl_ms, now_ms, partition_for, partition_subject,
                   result_key)

#: First and longest pause between two polls of Redis while waiting (it doubles).
POLL_FIRST = 0.02
POLL_MAX = 0.5

# Redis failures, whatever layer raises them (the socket, the protocol, the server).
_REDIS_ERRORS = (redis.exceptions.RedisError, OSError)


@dataclass(frozen=True)
class Submitted:
    """JetStream's acknowledgement of one job."""

    id: str
    #: True when JetStream had already stored a job with this id (de-duplicated).
    duplicate: bool
    #: True when the inputs went through Redis (section 10 of the wire format).
    by_reference: bool
    stream: str
    seq: int
    #: Digest of the inputs sent (section 8): the result must record the same one.
    digest: str = ""


def normalize_redis_url(url: str) -> str:
    """redis-py's spelling of a URL: ``redis+unix:///path`` becomes ``unix:///path``."""
    return "unix://" + url[len("redis+unix://"):] if url.startswith("redis+unix://") else url


def _url_list(urls: Union[str, Sequence[str], None]) -> List[str]:
    """A list of URLs from a list or a comma-separated string (as JETINFER_INPUTS_REDIS_URLS)."""
    if urls is None:
        return []
    if isinstance(urls, str):
        urls = urls.split(",")
    return [u.strip() for u in urls if u.strip()]


def _redact(url: str) -> str:
    """The URL without its credentials, for error messages."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}" if sep and "@" in rest.split("/", 1)[0] else url


async def _quiet(e: Exception) -> None:
    """nats-py's error callback: the failures that matter surface as exceptions of the
    calls that hit them; the default callback would log a traceback per attempt."""


def _rejected(e: Exception, subject: str, job_id: str) -> Rejected:
    """The typed cause of a refused publish."""
    if isinstance(e, nats.js.errors.NoStreamResponseError):
        return StreamMissing(f"no stream listens on {subject} (no responders): is the dispatcher running?",
                             subject, job_id)
    if isinstance(e, nats.js.errors.APIError):
        text = f"{e.description} (code {e.code}, err_code {e.err_code})"
        # DiscardNew streams refuse with "maximum messages exceeded", "maximum bytes
        # exceeded" or "maximum messages per subject exceeded".
        if "maximum messages" in (e.description or "") or "maximum bytes" in (e.description or ""):
            return StreamFull(f"stream full for {subject}: {text}", subject, job_id)
        return Rejected(f"JetStream refused {job_id} on {subject}: {text}", subject, job_id)
    if isinstance(e, (nats.errors.TimeoutError, asyncio.TimeoutError)):
        return Rejected(f"no publish ack for {job_id} on {subject} in time (retry with the same id)",
                        subject, job_id)
    return Rejected(f"publish of {job_id} on {subject} failed: {type(e).__name__}: {e}", subject, job_id)


class AsyncClient:
    """A producer and result reader over one NATS connection and one Redis pool.

    Use :meth:`connect` (or ``async with await AsyncClient.connect(...)``); :meth:`close`
    closes the connections it opened."""

    def __init__(self, nc: Any, redis: Any, *, inline_limit: int = INLINE_LIMIT,
                 inputs_ttl: float = INPUTS_TTL_MS / 1000, key_prefix: str = KEY_PREFIX,
                 publish_timeout: float = 5.0, inputs_redis: Sequence[Any] = (),
                 partitions: Optional[int] = None, owns_connections: bool = False):
        self.nc = nc
        self.js = nc.jetstream()
        self.redis = redis
        #: Where inputs sent by reference go: store 0 is the result store, then
        #: ``inputs_redis`` in order (the workers' ``--inputs-redis-url`` list).
        self.input_stores: List[Any] = [redis, *inputs_redis]
        try:
            self.partitions = PartitionCounts(self.js, partitions)
        except ValueError as e:
            raise InvalidJob(str(e)) from None
        self.inline_limit = inline_limit
        self.inputs_ttl_ms = int(inputs_ttl * 1000)
        self.key_prefix = key_prefix
        self.publish_timeout = publish_timeout
        self._owns = owns_connections

    @classmethod
    async def connect(cls, nats_url: str = "nats://127.0.0.1:4222", redis_url: str = "redis://127.0.0.1:6379",
                      *, name: Optional[str] = None, nats_options: Optional[Dict[str, Any]] = None,
                      connect_wait: float = 10.0, inputs_redis_urls: Union[str, Sequence[str], None] = None,
                      **options: Any) -> "AsyncClient":
        """Connects to NATS (``nats_options`` go to ``nats.connect``: user, token, tls, ...)
        and prepares a Redis pool (``redis://``, ``rediss://``, ``unix://`` or
        ``redis+unix://`` URL). ``options``: ``inline_limit`` (bytes; 0 sends every job's
        inputs by reference), ``inputs_ttl`` (seconds, for jobs without deadline),
        ``key_prefix``, ``publish_timeout`` (seconds), ``partitions`` (a fixed partition
        count instead of the one the dispatcher publishes). ``inputs_redis_urls``: extra
        Redis servers for inputs sent by reference (input stores 1, 2, ...; a list or a
        comma-separated string), the same list in the same order as the workers'
        ``--inputs-redis-url``. Raises ConnectError when NATS is not reached within
        ``connect_wait`` seconds."""
        try:  # before connecting: a bad option is the caller's to fix, not a connection problem
            check_fixed(options.get("partitions"))
        except ValueError as e:
            raise InvalidJob(str(e)) from None
        opts = {"connect_timeout": 5, "error_cb": _quiet, **(nats_options or {})}
        try:
            # nats-py retries an unreachable server for minutes; give up sooner.
            nc = await asyncio.wait_for(nats.connect(nats_url, name=name, **opts), connect_wait)
        except asyncio.TimeoutError as e:
            raise ConnectError(f"NATS at {_redact(nats_url)}: no connection within {connect_wait:g} s") from e
        except (nats.errors.Error, OSError) as e:
            raise ConnectError(f"NATS at {_redact(nats_url)}: {type(e).__name__}: {e}") from e
        stores: List[Any] = []
        try:
            for url in [redis_url, *_url_list(inputs_redis_urls)]:
                try:
                    stores.append(aioredis.Redis.from_url(normalize_redis_url(url)))
                except ValueError as e:
                    raise ConnectError(f"Redis URL {_redact(url)}: {e}") from e
            return cls(nc, stores[0], inputs_redis=stores[1:], owns_connections=True, **options)
        except BaseException:
            for store in stores:
                await store.aclose()
            await nc.close()
            raise

    async def close(self) -> None:
        if self._owns:
            for store in self.input_stores:
                await store.aclose()
            await self.nc.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def submit(self, model: str, inputs: Sequence[Any], *, priority: Union[Priority, str, int] = Priority.P1,
                     id: Optional[str] = None, version: Optional[str] = None,
                     meta: Optional[Mapping[str, str]] = None, cache: Optional[bool] = None,
                     deadline_ms: Optional[int] = None, deadline_in: Optional[float] = None) -> Submitted:
        """Publishes a job on ``jetinfer.jobs.<priority>.<model>`` (followed by ``.<k>`` in
        partition k >= 1, chosen from the id) with ``Nats-Msg-Id: <id>`` and waits for
        JetStream's ack.

        ``inputs``: one sample per model argument (numpy arrays, :class:`~jetinfer.Tensor`
        or raw bytes as a ``u8`` vector), no batch dimension. ``id`` defaults to a fresh
        ``py-<uuid>``. The deadline is ``deadline_ms`` (Unix ms) or ``deadline_in`` seconds
        from now; without one the priority's default applies. Inputs with at least
        ``inline_limit`` bytes of data, or too big for the server's ``max_payload`` inline,
        are stored in Redis first (in the id's input store) and sent by reference.

        Raises InvalidJob (nothing sent), StoreError (nothing published), StreamFull,
        StreamMissing or Rejected (not stored: retry with the same id)."""
        prio = Priority.parse(priority)
        job_id = f"py-{uuid.uuid4().hex}" if id is None else id
        if deadline_in is not None:
            if deadline_ms is not None:
                raise InvalidJob("give deadline_ms or deadline_in, not both")
            deadline_ms = now_ms() + int(deadline_in * 1000)
        job, tensors = build_job(job_id, model, inputs, version=version, deadline_ms=deadline_ms,
                                 cache=cache, meta=meta)
        data_bytes = sum(len(t.data) for t in tensors)
        payload = encode_job(job) if data_bytes < self.inline_limit else None
        if payload is None or len(payload) > self.nc.max_payload:
            store = input_store_for(job_id, len(self.input_stores))
            ref_job, value = by_reference(job, tensors, store)
            payload = encode_job(ref_job)
            ttl = inputs_ttl_ms(deadline_ms, self.inputs_ttl_ms)
            try:  # stored (and acknowledged) before publishing: an accepted job finds them
                await self.input_stores[store].set(input_key(job_id, self.key_prefix), value, px=max(ttl, 1))
            except _REDIS_ERRORS as e:
                raise StoreError(f"storing the inputs of {job_id} in input store {store}: {e}") from e
            by_ref = True
        else:
            by_ref = False
        headers = {"Nats-Msg-Id": job_id, **trace_headers()}
        ack = await self._publish(prio, model, job_id, payload, headers)
        return Submitted(job_id, bool(ack.duplicate), by_ref, ack.stream, ack.seq, inputs_digest(tensors))

    async def _publish(self, prio: Priority, model: str, job_id: str, payload: bytes, headers: Dict[str, str]) -> Any:
        """Publishes to the job's partition of ``prio``. When no stream takes the subject
        the count is read again (the dispatcher may run with fewer partitions now, or
        was not running), and a job of partition k >= 1 is published once more."""
        k = partition_for(job_id, await self.partitions.count(prio))
        try:
            return await self._publish_to(partition_subject(prio, model, k), job_id, payload, headers)
        except StreamMissing:
            if not self.partitions.forget(prio) or k == 0:
                raise
        k = partition_for(job_id, await self.partitions.count(prio))
        return await self._publish_to(partition_subject(prio, model, k), job_id, payload, headers)

    async def _publish_to(self, subject: str, job_id: str, payload: bytes, headers: Dict[str, str]) -> Any:
        try:
            return await self.js.publish(subject, payload, timeout=self.publish_timeout, headers=headers)
        except (nats.errors.Error, asyncio.TimeoutError) as e:
            raise _rejected(e, subject, job_id) from e

    async def get(self, id: str) -> Optional[Result]:
        """The job's result, or None while it is not finished."""
        return (await self._get_many([check_job_id(id)]))[0]

    async def wait(self, id: str, timeout: float = 30.0) -> Result:
        """Waits for a job's result (any status; see ``Result.raise_for_status``); raises
        :class:`~jetinfer.Timeout` after ``timeout`` seconds."""
        try:
            return (await self.wait_many([id], timeout))[0]
        except WaitManyTimeout:
            raise Timeout(id, timeout) from None

    async def wait_many(self, ids: Sequence[str], timeout: float = 60.0) -> List[Result]:
        """The results of ``ids``, in their order (an id given twice gets its result twice).
        Listens for completion notices and fetches the announced results; in between
        polls Redis for every missing id (batched MGETs), 20 ms doubling to 500 ms. Raises
        :class:`~jetinfer.WaitManyTimeout`, which keeps the results that arrived."""
        if isinstance(ids, str):
            raise InvalidJob("wait_many takes a list of ids")
        for i in ids:
            check_job_id(i)
        gather = Gather(ids)
        notices = await _Notices.start(self.nc, gather)
        try:
            return await self._gather(gather, notices, timeout)
        finally:
            await notices.stop()

    async def infer(self, model: str, inputs: Sequence[Any], *, timeout: float = 30.0, check: bool = True,
                    **submit_options: Any) -> Result:
        """Submits a job and waits for its result. Listens for the completion notice before
        publishing, so a fast result is not missed. With ``check`` (default) a status other
        than ``ok`` raises JobFailed / JobExpired. A result that answers another job under
        the same id (the id was reused with other inputs) raises IdConflict."""
        job_id = submit_options.pop("id", None) or f"py-{uuid.uuid4().hex}"
        gather = Gather([check_job_id(job_id)])
        notices = await _Notices.start(self.nc, gather)
        try:
            submitted = await self.submit(model, inputs, id=job_id, **submit_options)
            try:
                result = (await self._gather(gather, notices, timeout))[0]
            except WaitManyTimeout:
                raise Timeout(job_id, timeout) from None
        finally:
            await notices.stop()
        if not result.answers(model, submitted.digest):
            raise IdConflict(job_id, result)
        return result.raise_for_status() if check else result

    async def _gather(self, gather: Gather, notices: "_Notices", timeout: float) -> List[Result]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        poll_every, next_sweep = POLL_FIRST, loop.time()
        while True:
            notices.event.clear()  # a notice arriving from here on wakes the wait below
            now = loop.time()
            if now >= next_sweep or now >= deadline:
                gather.take_announced()  # the sweep covers them
                ids = gather.missing()
                next_sweep, poll_every = now + poll_every, min(poll_every * 2, POLL_MAX)
            else:
                ids = gather.take_announced()
            for start in range(0, len(ids), MGET_CHUNK):
                chunk = ids[start:start + MGET_CHUNK]
                gather.fill(chunk, await self._get_many(chunk))
            if gather.complete or now >= deadline:
                return gather.finish(timeout)
            try:
                await asyncio.wait_for(notices.event.wait(), max(min(next_sweep, deadline) - loop.time(), 0))
            except asyncio.TimeoutError:
                pass

    async def _get_many(self, ids: Sequence[str]) -> List[Optional[Result]]:
        try:
            raws = await self.redis.mget([result_key(i, self.key_prefix) for i in ids])
        except _REDIS_ERRORS as e:
            raise StoreError(f"reading results: {e}") from e
        return [None if raw is None else decode_result(raw) for raw in raws]


class _Notices:
    """Completion-notice subscriptions for one wait; marks announced ids in the Gather
    and sets ``event``. When NATS refuses to subscribe, the wait relies on polling."""

    def __init__(self, gather: Gather):
        self.gather = gather
        self.event = asyncio.Event()
        self.subs: List[Any] = []

    @classmethod
    async def start(cls, nc: Any, gather: Gather) -> "_Notices":
        self = cls(gather)
        try:
            for subject in notice_subjects(gather.missing()):
                self.subs.append(await nc.subscribe(subject, cb=self._on_notice))
            await nc.flush()  # the server knows the subscriptions before the caller publishes
        except (nats.errors.Error, asyncio.TimeoutError):
            await self.stop()
        return self

    async def _on_notice(self, msg: Any) -> None:
        job_id = id_of_notice(msg.subject)
        if job_id is not None and self.gather.announce(job_id):
            self.event.set()

    async def stop(self) -> None:
        subs, self.subs = self.subs, []
        for sub in subs:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass  # the connection is closing: the subscription goes with it
