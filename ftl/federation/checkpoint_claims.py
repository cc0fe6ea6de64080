"""Whose checkpoints: the party that holds them, and the session that runs a run.

A party's checkpoints (:class:`~ftl.federation.checkpoints.PartyCheckpoints`) are
attached to it -- by ``ftl serve`` to each peer's view, by a simulation's driver
to its in-process hosts (:func:`attached`) -- and its protocol roles find them
with :func:`checkpoints_of`.

A resume is the same run, never a new one, and it *supersedes* any live session of
the run: that session answers no more, so that a run never goes on in two sessions
at once. The checkpoints record with :class:`RunClaims` which session runs each
run, and keep a step only for that session; the roles refuse every operation of a
superseded session with :func:`refuse_superseded`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ftl.exceptions import CheckpointError, ProtocolError

if TYPE_CHECKING:
    from ftl.federation.checkpoints import PartyCheckpoints

__all__ = ["RunClaims", "attached", "checkpoints_of", "refuse_superseded"]


class RunClaims:
    """The session (a role object) that runs each run, by the run's key.

    Sessions are held weakly: a session that ended claims nothing. Not locked:
    its owner calls it with its own lock held, so that checking a session's claim
    and keeping that session's step happen at once (a claim between the two would
    let a superseded session overwrite its successor's step).
    """

    def __init__(self):
        self._live: dict[str, weakref.ref] = {}

    def claim(self, key: str, session: Any) -> Any:
        """Make ``session`` the one that runs ``key``; return the one it supersedes,
        if that is still alive, with its ``superseded`` flag set."""
        before = self._live.get(key)
        self._live[key] = weakref.ref(session)
        previous = None if before is None else before()
        if previous is None or previous is session:
            return None
        previous.superseded = True
        return previous

    def check(self, key: str, owner: Any) -> None:
        """Refuse to keep for a session that no longer runs ``key``: a request still
        in flight in a session a resume superseded, or of a finished run, must not
        overwrite what the run's current session keeps. ``owner=None`` checks nothing.

        Raises
        ------
        CheckpointError
            If ``owner`` is not the session that runs ``key``.
        """
        if owner is None:
            return
        live = self._live.get(key)
        if live is None or live() is not owner:
            raise CheckpointError(f"run {key} is no longer run by this session; not kept")

    def release(self, key: str) -> None:
        """Forget who runs ``key`` (the run finished)."""
        self._live.pop(key, None)

    def prune(self) -> None:
        """Forget the runs whose session ended without finishing them (a run that
        ends claims nothing: its next session claims it anew)."""
        for key in [k for k, ref in self._live.items() if ref() is None]:
            del self._live[key]

    def __len__(self) -> int:
        return len(self._live)


def refuse_superseded(session: Any, who: str, word: str, id_attribute: str) -> None:
    """Refuse every operation of a role's ``session`` whose run a resume has taken over.

    :meth:`~ftl.federation.checkpoints.PartyCheckpoints.claim` sets the superseded
    role's ``superseded``; it answers no more, so that a run never goes on in two
    sessions at once. ``who`` names the role in the message, ``word`` what it runs
    (``"fit"``, ``"run"``) and ``id_attribute`` the role's attribute holding the
    run's id (read only when refusing: a role that keeps no checkpoints may have none).

    Raises
    ------
    ProtocolError
        If ``session.superseded``.
    """
    if session.superseded:
        raise ProtocolError(
            f"{who}: {word} {getattr(session, id_attribute)} was resumed in another session; "
            "this one answers no more"
        )


# -- which checkpoints a party keeps --------------------------------------------------
def checkpoints_of(party: Any) -> PartyCheckpoints | None:
    """The checkpoints attached to ``party`` (by ``ftl serve``, or by a driver for its
    in-process hosts), or to the party it is derived from; ``None`` if none."""
    while party is not None:
        store = vars(party).get("checkpoints") if hasattr(party, "__dict__") else None
        if store is not None:
            return store
        party = getattr(party, "_base", None)
    return None


@contextmanager
def attached(party: Any, store: PartyCheckpoints) -> Iterator[PartyCheckpoints]:
    """Attach ``store`` to ``party`` for the duration of the block (a simulation's
    driver keeps its in-process hosts' checkpoints next to its own)."""
    before = vars(party).get("checkpoints")
    party.checkpoints = store
    try:
        yield store
    finally:
        if before is None:
            vars(party).pop("checkpoints", None)
        else:
            party.checkpoints = before
