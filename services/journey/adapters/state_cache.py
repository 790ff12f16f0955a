"""Customer states a journey process committed, kept for the next batch of the same customers.

A customer's events come in bursts (a session: views, cart updates, a checkout), spread over
several batches, and the partition's events all reach the same process. Each batch used to read
every customer's row, runs and timer back and decode the JSON it had written a moment before.
With the cache, a batch still locks the customers' rows (``SELECT … FOR UPDATE`` of their key and
stamp, so an event and a timer of one customer still run one after the other), and reads and
decodes in full only the rows whose state it does not hold.

Trust rests on the row's ``stamp`` (migration j0007): each save writes a new random 63-bit stamp,
shared by the rows of its transaction, and the cache holds each state with the stamp it was saved
under, put there only once the transaction committed. A row whose stamp differs was written since
by someone else (another replica after a rebalance, the timer poller of another process, a
writer that does not know the stamp, whose UPDATE the j0007 trigger leaves with none): its state
is read from the database. An erased or merged customer has no row, so nothing cached for it is
ever used.

A state taken out of the cache belongs to the transaction that took it until that transaction
commits and puts it back: a failed transaction drops it, and the next batch reads the row.

Memory is bounded: at most ``size`` states, the least recently saved dropped first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from secrets import randbits

from prometheus_client import Counter

from services.journey.domain.customer import CustomerState

Key = tuple[str, str]

LOOKUPS = Counter(
    "ciclo_journey_state_cache_lookups_total",
    "Customer rows of the event consumer's batches, by whether the state cache held them "
    "under the row's stamp",
    ["result"],
)
_HIT, _MISS = LOOKUPS.labels("hit"), LOOKUPS.labels("miss")


def new_stamp() -> int:
    """A save's stamp: random, so that no two saves of a row share one (63 bits: a BIGINT)."""
    return randbits(63)


class StateCache:
    """At most ``size`` customer states by (workspace, customer), each with its row's stamp."""

    def __init__(self, size: int, *, verify: bool = False) -> None:
        """``verify``: a check mode, for tests and for a doubt in production. Every row is read
        anyway, and a state taken from the cache that differs from what its row gives raises
        ``StateCacheMismatch`` (it costs more than no cache at all)."""
        if size < 1:
            raise ValueError("a state cache holds at least one state")
        self.size = size
        self.verify = verify
        self._entries: OrderedDict[Key, tuple[int, CustomerState]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, key: Key, stamp: int | None, now: datetime) -> CustomerState | None:
        """The state of ``key`` if the cache holds it under ``stamp`` (the row's stamp, read
        under the row's lock), as ``CustomerStates.load`` would build it at ``now``; it leaves
        the cache either way. The caller counts the lookups of its batch (``count``)."""
        entry = self._entries.pop(key, None)
        if entry is None or stamp is None or entry[0] != stamp:
            return None
        return _as_loaded(entry[1], now)

    def count(self, *, hits: int, misses: int) -> None:
        """A batch's lookups: the cache's own tallies and the metric, once per batch."""
        self.hits += hits
        self.misses += misses
        _HIT.inc(hits)
        _MISS.inc(misses)

    def keep(self, states: Iterable[CustomerState], stamp: int) -> None:
        """Hold ``states``, committed with ``stamp``, dropping the least recently kept beyond
        ``size``."""
        entries = self._entries
        for state in states:
            key = (state.workspace_id, state.customer_id)
            entries.pop(key, None)
            entries[key] = (stamp, state)
        while len(entries) > self.size:
            entries.popitem(last=False)


def _as_loaded(state: CustomerState, now: datetime) -> CustomerState:
    """``state`` as a load from its row would give it: only runs still tracked at ``now``, and
    nothing of the last transaction's working values (rules, instant, touched names, the
    band memo)."""
    state.instances = {r: i for r, i in state.instances.items() if i.tracked(now)}
    state.intel = None
    state.now = None
    state.traits_set = False
    facts = state.facts
    facts.touched = set()
    facts.banded = None
    facts.decided = True  # a saved row always has its segment state (``Facts.to_json``)
    return state
