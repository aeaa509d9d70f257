"""The blocking client: :class:`Client` runs an :class:`~jetinfer.aio.AsyncClient` on a
private event loop in a daemon thread and waits for each call. Safe to share between
threads; every call is serialized onto that loop."""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine, List, Optional, Sequence, TypeVar

from .aio import AsyncClient, Submitted
from .result import Result

T = TypeVar("T")


class Client:
    """``Client(nats_url, redis_url, **options)``: the same options, methods and errors as
    :meth:`AsyncClient.connect <jetinfer.aio.AsyncClient.connect>`, without ``await``."""

    def __init__(self, nats_url: str = "nats://127.0.0.1:4222", redis_url: str = "redis://127.0.0.1:6379",
                 **options: Any):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="jetinfer-client", daemon=True)
        self._thread.start()
        try:
            self._aio = self._run(AsyncClient.connect(nats_url, redis_url, **options))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._aio.close())
        finally:
            self._stop_loop()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def submit(self, model: str, inputs: Sequence[Any], **options: Any) -> Submitted:
        """See :meth:`AsyncClient.submit <jetinfer.aio.AsyncClient.submit>`."""
        return self._run(self._aio.submit(model, inputs, **options))

    def get(self, id: str) -> Optional[Result]:
        """See :meth:`AsyncClient.get <jetinfer.aio.AsyncClient.get>`."""
        return self._run(self._aio.get(id))

    def wait(self, id: str, timeout: float = 30.0) -> Result:
        """See :meth:`AsyncClient.wait <jetinfer.aio.AsyncClient.wait>`."""
        return self._run(self._aio.wait(id, timeout))

    def wait_many(self, ids: Sequence[str], timeout: float = 60.0) -> List[Result]:
        """See :meth:`AsyncClient.wait_many <jetinfer.aio.AsyncClient.wait_many>`."""
        return self._run(self._aio.wait_many(ids, timeout))

    def infer(self, model: str, inputs: Sequence[Any], **options: Any) -> Result:
        """See :meth:`AsyncClient.infer <jetinfer.aio.AsyncClient.infer>`."""
        return self._run(self._aio.infer(model, inputs, **options))
