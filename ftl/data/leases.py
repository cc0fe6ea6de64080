"""Leases: how long a party keeps what it holds for its peers between sessions.

A served party keeps, for each peer, what later sessions of that peer may name:
the alignment tables of its PSI runs (aligned position -> local row) and the
shards of the models it trained (for predictions). Each is *leased*: the party
remembers when it was last used, and the host drops it once it has been unused
for longer than the host's own time-to-live for its kind (``ftl serve``'s
``alignment_ttl_hours`` and ``model_ttl_hours``). What was dropped is
remembered by id, so that a peer naming it later is told to align or fit again
rather than that it never existed. Files are never expired here: a model shard
kept in ``model_dir`` is the host's file, and only its copy in memory is dropped
(``ftl serve`` loads it again when it is next used).
"""

from __future__ import annotations

import time
from collections import OrderedDict

__all__ = ["Leased", "Leases", "expired_message"]

#: Expired ids remembered per party (the oldest are forgotten first).
_REMEMBERED = 10_000
#: What a peer is told to do about an expired item, by kind.
_AGAIN = {"alignment": "align again", "model": "fit the model again"}


def expired_message(party: str, kind: str, key: str, ttl: float) -> str:
    """The error a peer gets for an expired ``kind`` ``key`` (``ttl`` in seconds)."""
    return (
        f"party {party!r} dropped {kind} {key!r}: unused for more than {ttl / 3600:.3g} h "
        f"(its {kind}_ttl_hours); {_AGAIN.get(kind, 'start again')}"
    )


class Leases:
    """When each item a party keeps was last used, and which ones expired.

    Items are named by ``(kind, key)``; the clock is :func:`time.monotonic`.
    """

    def __init__(self):
        self._used: dict[tuple[str, str], float] = {}
        self._expired: OrderedDict[tuple[str, str], float] = OrderedDict()

    def touch(self, kind: str, key: str, now: float | None = None) -> None:
        """Mark an item as used now (kept, or named by a request)."""
        self._used[kind, key] = time.monotonic() if now is None else now
        self._expired.pop((kind, key), None)

    def holds(self, kind: str, key: str) -> bool:
        """Whether the item is leased here."""
        return (kind, key) in self._used

    def release(self, kind: str, key: str) -> None:
        """Forget an item the party dropped for another reason."""
        self._used.pop((kind, key), None)

    def expire(self, kind: str, ttl: float, now: float | None = None) -> list[tuple[str, float]]:
        """End the leases of ``kind`` unused for longer than ``ttl`` seconds.

        Returns
        -------
        list of (str, float)
            The expired keys, each with the seconds it was unused; the caller
            drops the items.
        """
        now = time.monotonic() if now is None else now
        stale = [
            (key, now - used)
            for (k, key), used in list(self._used.items())
            if k == kind and now - used > ttl
        ]
        for key, _ in stale:
            self._used.pop((kind, key), None)
            self._expired[kind, key] = ttl
            if len(self._expired) > _REMEMBERED:
                self._expired.popitem(last=False)
        return stale

    def expired_ttl(self, kind: str, key: str) -> float | None:
        """The time-to-live under which the item expired, if it did."""
        return self._expired.get((kind, key))


class Leased:
    """The leases of a party's alignment tables and model shards (a mixin of
    :class:`ftl.Party`, left of :class:`~ftl.data.stores.ModelStore`).

    Each party holds the leases of what it remembered itself; a derived party
    shares its base's alignment tables, so their leases are looked up from the
    derived party down to its base.
    """

    name: str
    _alignments: dict
    _models: dict

    @property
    def _leases(self) -> Leases:
        # made on first use: a party unpickled from an older ftl has none yet
        leases = self.__dict__.get("_lease_book")
        if leases is None:
            leases = self.__dict__["_lease_book"] = Leases()
        return leases

    def store_model(self, model_id: str, shard: dict) -> None:
        super().store_model(model_id, shard)
        self._leases.touch("model", model_id)

    def load_model(self, model_id: str) -> dict:
        """This party's shard of a fitted model (see :meth:`store_model`).

        A served party whose copy in memory expired loads the shard again from
        its ``model_dir``, if it kept it there; otherwise the error says the
        model expired.
        """
        shard = self._models.get(model_id)  # once: a sweep may drop it meanwhile
        if shard is None and self._leases.expired_ttl("model", model_id) is not None:
            reload = self._find_up("reload_model")
            if reload is not None:
                reload(self, model_id)
            shard = self._models.get(model_id)
            if shard is None:
                raise self._not_held("model", model_id)
        if shard is None:
            return super().load_model(model_id)  # its own error: never held here
        self._leases.touch("model", model_id)
        return shard

    def expire_kept(self, ttls: dict[str, float], now: float | None = None) -> list:
        """Drop what this party kept (not its derived parties) and nobody used for
        longer than its kind's time-to-live: alignment tables it remembered, model
        shards in memory (``ftl serve`` calls this per peer view).

        Parameters
        ----------
        ttls : dict
            Seconds per kind: ``"alignment"``, ``"model"`` (a kind not named is
            kept).
        now : float, optional
            The current :func:`time.monotonic` time.

        Returns
        -------
        list of (str, str, float)
            What was dropped: kind, id, and the seconds it was unused.
        """
        stores = {"alignment": self._alignments, "model": self._models}
        dropped = []
        for kind, ttl in ttls.items():
            for key, idle in self._leases.expire(kind, ttl, now):
                stores[kind].pop(key, None)
                dropped.append((kind, key, idle))
        return dropped

    def _lineage(self):
        """This party, then the party it derives from, and so on down to the base."""
        party = self
        while party is not None:
            yield party
            party = getattr(party, "_base", None)

    def _touch(self, kind: str, key: str) -> None:
        """Renew the lease of an item, held by this party or one it derives from
        (a derived party shares its base's alignments)."""
        for party in self._lineage():
            if party._leases.holds(kind, key):
                party._leases.touch(kind, key)
                return

    def _not_held(self, kind: str, key: str) -> ValueError:
        """The error for an item this party does not hold: expired, or never held."""
        for party in self._lineage():
            ttl = party._leases.expired_ttl(kind, key)
            if ttl is not None:
                return ValueError(expired_message(self.name, kind, key, ttl))
        return ValueError(f"party {self.name!r} has no {kind} {key!r}")

    def _find_up(self, attribute: str):
        """An attribute a server attached to this party or one it derives from."""
        for party in self._lineage():
            found = vars(party).get(attribute)
            if found is not None:
                return found
        return None
