"""How many partition streams each priority has (docs/wire-format.md section 2.1), as the
dispatcher writes it in the metadata of the priority's partition-0 stream: read on the
first publish of a priority, kept, and read again after a publish found no stream (the
dispatcher may have been restarted with another count, or was not running yet).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, Optional, Set

import nats.errors
import nats.js.errors

from .wire import MAX_PARTITIONS, PARTITIONS_METADATA_KEY, Priority, partition_stream, partitions_from_metadata

log = logging.getLogger("jetinfer")


def check_fixed(fixed: Optional[int]) -> None:
    """Refuses a fixed partition count out of 1..MAX_PARTITIONS (ValueError)."""
    if fixed is not None and (isinstance(fixed, bool) or not isinstance(fixed, int)
                              or not 1 <= fixed <= MAX_PARTITIONS):
        raise ValueError(f"partitions must be 1..{MAX_PARTITIONS}, got {fixed!r}")


class PartitionCounts:
    """Each priority's N for one client; ``fixed`` skips the lookups (every priority has
    that many partitions)."""

    def __init__(self, js: Any, fixed: Optional[int] = None):
        check_fixed(fixed)
        self.js = js
        self.fixed = fixed
        self._known: Dict[Priority, int] = {}
        # One lookup per priority at a time: concurrent first publishes share it.
        self._locks: Dict[Priority, asyncio.Lock] = {}
        self._warned: Set[Priority] = set()

    async def count(self, priority: Priority) -> int:
        if self.fixed is not None:
            return self.fixed
        known = self._known.get(priority)
        if known is not None:
            return known
        async with self._locks.setdefault(priority, asyncio.Lock()):
            if priority not in self._known:
                self._known[priority] = await self._read(priority)
            return self._known[priority]

    def forget(self, priority: Priority) -> bool:
        """Drops the priority's count so the next publish reads it again; False when the
        count is fixed (reading again changes nothing)."""
        if self.fixed is not None:
            return False
        self._known.pop(priority, None)
        return True

    async def _read(self, priority: Priority) -> int:
        name = partition_stream(priority, 0)
        try:
            info = await self.js.stream_info(name)
        except nats.js.errors.NotFoundError:
            # No dispatcher has made the stream yet: its publish fails as StreamMissing,
            # which makes the next publish read the count again.
            return 1
        except (nats.errors.Error, asyncio.TimeoutError) as e:
            # No permission to read the stream, or no answer: partition 0 is always a
            # right place to publish, only not spread.
            if priority not in self._warned:
                self._warned.add(priority)
                log.warning("jetinfer: cannot read the partition count of %s (%s: %s); publishing "
                            "%s jobs to partition 0 only", name, type(e).__name__, e, priority.value)
            return 1
        metadata = getattr(info.config, "metadata", None) or {}
        return partitions_from_metadata(metadata.get(PARTITIONS_METADATA_KEY))
