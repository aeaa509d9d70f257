"""The bookkeeping of ``wait_many``: which ids still wait for a result, which of them a
completion notice announced, and the subjects to listen on. Pure state, no I/O."""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Set

from .errors import WaitManyTimeout
from .result import Result
from .wire import done_subject

#: Up to this many distinct ids, each gets its own notice subscription; above it, one
#: ``jetinfer.done.>`` subscription serves them all (a long wait costs one subscription).
PER_ID_SUBSCRIPTIONS_MAX = 64
#: Keys asked for by one MGET.
MGET_CHUNK = 500

_DONE_PREFIX = done_subject("")


def notice_subjects(unique_ids: Sequence[str]) -> List[str]:
    if len(unique_ids) <= PER_ID_SUBSCRIPTIONS_MAX:
        return [done_subject(i) for i in unique_ids]
    return [done_subject(">")]


def id_of_notice(subject: str) -> Optional[str]:
    """``jetinfer.done.<id>`` -> ``<id>``."""
    if subject.startswith(_DONE_PREFIX) and len(subject) > len(_DONE_PREFIX):
        return subject[len(_DONE_PREFIX):]
    return None


class Gather:
    """Results gathered so far for a list of ids (which may repeat an id)."""

    def __init__(self, ids: Iterable[str]):
        self.ids = list(ids)
        self.unique = list(dict.fromkeys(self.ids))
        self.unique_set = set(self.unique)
        self.found: Dict[str, Result] = {}
        self.announced: Set[str] = set()

    @property
    def complete(self) -> bool:
        return len(self.found) == len(self.unique)

    def missing(self) -> List[str]:
        return [i for i in self.unique if i not in self.found]

    def announce(self, job_id: str) -> bool:
        """Notes a completion notice; True when it is about an id still waited for."""
        wanted = job_id in self.unique_set and job_id not in self.found
        if wanted:
            self.announced.add(job_id)
        return wanted

    def take_announced(self) -> List[str]:
        ids = [i for i in self.announced if i not in self.found]
        self.announced.clear()
        return ids

    def fill(self, ids: Sequence[str], got: Sequence[Optional[Result]]) -> None:
        """Stores what a fetch of ``ids`` returned; the first result of an id wins."""
        for job_id, result in zip(ids, got):
            if result is not None and job_id in self.unique_set:
                self.found.setdefault(job_id, result)

    def finish(self, timeout: float) -> List[Result]:
        """Every result in the order given, or WaitManyTimeout with what was gathered."""
        if self.complete:
            return [self.found[i] for i in self.ids]
        raise WaitManyTimeout(self.missing(), [self.found.get(i) for i in self.ids], timeout)
