"""The host's privacy budget: what a peer may learn from this party, and how often.

Each answer a host gives leaks a little about its data: a fitted model's scores
are ``X_H w_H`` for the rows scored, a fit on a handful of rows puts the host's
weights in the span of those rows, a PSI run tells the size of an intersection.
One answer is the protocol's documented disclosure; many small, chosen answers
add up to a reconstruction (docs/protocols.md §5). The budget bounds how many
answers a peer gets and how small each may be, and it is enforced by the party
whose data it protects -- by its own protocol roles, which read the
:class:`HostGuard` attached to the party they serve -- never by trusting the
driver's parameters.

A guard counts, per peer, alignments (PSI runs of either mode), fits, prediction
requests, rows scored and fitted transformers in a sliding 24-hour window (and
fits and predictions per alignment), keeps those counts in a JSON state file so
that a restart does not reset them, and refuses with :class:`PolicyError` what
would exceed a limit. A refused request consumes no budget.

In a simulation (driver and every party in one process) the driver already holds
all the data, so a local :class:`~ftl.Party` without a guard of its own is served
by :meth:`HostGuard.unrestricted`, which refuses nothing; ``ftl serve`` attaches a
guard built from the host's policy to each peer's view of the party.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ftl.exceptions import PolicyError

__all__ = ["BudgetLimits", "BudgetLedger", "HostGuard", "guard_of"]

_DAY = 24 * 3600.0
#: Events older than this are dropped from the ledger (per-alignment counts outlive
#: the alignments themselves, which a host keeps in memory only).
_KEEP = 7 * _DAY


@dataclass(frozen=True)
class BudgetLimits:
    """Limits of one peer's privacy budget (``None``: no limit).

    The defaults protect a host started with a minimal configuration: they admit
    the usual workflows (a fit, cross-validation, a small grid search, batch
    scoring) and refuse the many-tiny-queries patterns of docs/protocols.md §5.

    Parameters
    ----------
    min_fit_rows : int, default=100
        Fewest training rows of one fit.
    min_fit_rows_per_feature : int, default=5
        Fewest training rows per feature of this host's block; the effective
        minimum is the larger of the two, so a fit's rows always span far more
        than the host's column space.
    min_batch_rows : int, default=32
        Fewest rows of one training mini-batch (a full-batch pass over fewer
        rows is the fit itself, checked by ``min_fit_rows``).
    max_fits_per_alignment, max_fits_per_day : int, default=50 and 200
        Fits (any protocol) on one alignment, and in any 24 hours.
    min_prediction_rows : int, default=20
        Fewest rows of one prediction request.
    max_predictions_per_alignment, max_predictions_per_day : int, default=100 and 500
        Prediction requests on one alignment, and in any 24 hours.
    max_rows_scored_per_day : int, default=1_000_000
        Rows scored over all prediction requests in any 24 hours.
    min_transformer_rows : int, default=100
        Fewest rows a per-party transformer is fitted on.
    max_transformers_per_day : int, default=200
        Transformers fitted in any 24 hours.
    max_alignments_per_day : int, default=50
        PSI runs (default and cardinality mode) in any 24 hours.
    score_ids : bool, default=False
        Whether the peer may ask for rows to be scored by raw id (transfer
        prediction on customers outside the alignment); the host decides.
    max_epochs, max_pretrain_epochs : int, default=1000 and 200
        Passes over the data a peer may ask this host to run.
    max_hidden_units, max_hidden_layers : int, default=1024 and 4
        Size of a network a peer may ask this host to build and train (units
        summed over the hidden layers).
    max_n_bins : int, default=256
        Bins of a binning transformer or histogram.
    max_degree : int, default=3
        Degree of a polynomial-features transformer.
    max_output_features : int, default=4096
        Columns one fitted transformer may output.
    """

    min_fit_rows: int | None = 100
    min_fit_rows_per_feature: int | None = 5
    min_batch_rows: int | None = 32
    max_fits_per_alignment: int | None = 50
    max_fits_per_day: int | None = 200
    min_prediction_rows: int | None = 20
    max_predictions_per_alignment: int | None = 100
    max_predictions_per_day: int | None = 500
    max_rows_scored_per_day: int | None = 1_000_000
    min_transformer_rows: int | None = 100
    max_transformers_per_day: int | None = 200
    max_alignments_per_day: int | None = 50
    score_ids: bool = False
    max_epochs: int | None = 1000
    max_pretrain_epochs: int | None = 200
    max_hidden_units: int | None = 1024
    max_hidden_layers: int | None = 4
    max_n_bins: int | None = 256
    max_degree: int | None = 3
    max_output_features: int | None = 4096

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "score_ids":
                if not isinstance(value, bool):
                    raise ValueError("policy: score_ids must be true or false")
            elif value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                raise ValueError(f"policy: {f.name} must be a non-negative integer, got {value!r}")

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The policy keys of the budget (settable in ``[policy]`` and per peer)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def unrestricted(cls) -> BudgetLimits:
        """No limit at all (a simulation's parties)."""
        return cls(**{k: None for k in cls.keys() if k != "score_ids"}, score_ids=True)

    def min_fit(self, n_features: int) -> int:
        """The effective minimum of training rows for a block of ``n_features``."""
        per_feature = (self.min_fit_rows_per_feature or 0) * int(n_features)
        return max(self.min_fit_rows or 0, per_feature)


class BudgetLedger:
    """Per-peer counts of what was answered, persisted in a JSON state file.

    Thread-safe (``ftl serve`` serves sessions in threads). The file is written
    atomically after every admitted event, so a crash or restart never resets a
    peer's budget. Files written by earlier versions (alignment times only) are
    read too.

    Parameters
    ----------
    state_path : path, optional
        Where the counts are kept; ``None`` keeps them in memory only.
    """

    def __init__(self, state_path: str | Path | None = None):
        self.state_path = None if state_path is None else Path(state_path)
        self._lock = threading.Lock()
        # peer -> kind -> list of [time, alignment or "", rows]
        self._events: dict[str, dict[str, list[list]]] = {}
        if self.state_path is not None and self.state_path.exists():
            self._events = self._read(self.state_path)

    def __getstate__(self) -> dict:
        # A copy made for a worker process counts on its own (locks do not pickle).
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @staticmethod
    def _read(path: Path) -> dict[str, dict[str, list[list]]]:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(raw, dict) and raw.get("format") == "ftl.budget/1":
                return {
                    str(peer): {
                        str(kind): [[float(t), str(a), int(r)] for t, a, r in events]
                        for kind, events in kinds.items()
                    }
                    for peer, kinds in raw["peers"].items()
                }
            # the earlier format: peer -> list of alignment times
            return {
                str(peer): {"alignment": [[float(t), "", 0] for t in times]}
                for peer, times in raw.items()
            }
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise ValueError(f"policy state file {path} is corrupted") from exc

    def _write(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(
            json.dumps({"format": "ftl.budget/1", "peers": self._events}), encoding="utf-8"
        )
        tmp.replace(self.state_path)

    def _recent(self, peer: str, kind: str, now: float) -> list[list]:
        events = self._events.setdefault(peer, {}).setdefault(kind, [])
        events[:] = [e for e in events if now - e[0] < _KEEP]
        return events

    def admit(
        self,
        peer: str,
        kind: str,
        checks: list[tuple[str, int | None, Any]],
        alignment: str = "",
        rows: int = 0,
    ) -> None:
        """Record one event of ``kind`` unless a check fails (then nothing changes).

        ``checks`` are ``(policy key, limit, how)`` with ``how`` one of ``"day"``
        (events in 24 h), ``"alignment"`` (events on this alignment) or
        ``"rows_day"`` (rows summed over 24 h, this event's included).
        """
        now = time.time()
        with self._lock:
            events = self._recent(peer, kind, now)
            for key, limit, how in checks:
                if limit is None:
                    continue
                if how == "day":
                    used, asked = sum(now - e[0] < _DAY for e in events), 1
                elif how == "alignment":
                    used, asked = sum(e[1] == alignment for e in events), 1
                else:  # rows_day
                    used = sum(e[2] for e in events if now - e[0] < _DAY)
                    asked = rows
                if used + asked > limit:
                    scope = {
                        "day": "in the last 24 hours",
                        "alignment": "on this alignment",
                        "rows_day": "rows scored in the last 24 hours",
                    }[how]
                    raise PolicyError(
                        f"peer {peer!r} has used {used} of its {limit} {kind}(s) {scope} "
                        f"(this host's policy key {key!r}); refused"
                        if how != "rows_day"
                        else f"peer {peer!r} asked for {rows} more rows but has used {used} of "
                        f"its {limit} {scope} (this host's policy key {key!r}); refused"
                    )
            events.append([now, alignment, int(rows)])
            self._write()

    def used(self, peer: str, kind: str, *, rows: bool = False) -> int:
        """Events (or rows) of ``kind`` in the last 24 hours."""
        now = time.time()
        with self._lock:
            events = self._recent(peer, kind, now)
            return sum((e[2] if rows else 1) for e in events if now - e[0] < _DAY)


class HostGuard:
    """One peer's budget at this party: the checks its protocol roles call.

    Parameters
    ----------
    identity : str
        The peer (certificate identity) whose requests this guard admits.
    limits : BudgetLimits
        The peer's limits (from the host's policy).
    ledger : BudgetLedger
        Where admitted events are counted (shared by all peers of a server).
    min_intersection : int, default=0
        Smallest PSI result this host lets the peer learn.
    n_jobs : int or None, default=1
        The host's own parallelism; a peer's ``n_jobs`` is ignored.
    min_key_size : int, default=0
        Smallest Paillier modulus (bits) a role accepts for any key.
    enforce : bool, default=True
        False for :meth:`unrestricted`: nothing is counted or refused.
    """

    def __init__(
        self,
        identity: str,
        limits: BudgetLimits | None = None,
        ledger: BudgetLedger | None = None,
        *,
        min_intersection: int = 0,
        n_jobs: int | None = 1,
        min_key_size: int = 0,
        enforce: bool = True,
    ):
        self.identity = identity
        self.limits = BudgetLimits() if limits is None else limits
        self.ledger = BudgetLedger() if ledger is None else ledger
        self.min_intersection = int(min_intersection)
        self._n_jobs = n_jobs
        self.min_key_size = int(min_key_size)
        self.enforce = enforce

    @classmethod
    def from_policy(cls, policy: Any, identity: str) -> HostGuard:
        """The guard of peer ``identity`` under a :class:`~ftl.federation.policy.Policy`."""
        rule = policy.peer(identity)
        return cls(
            identity,
            rule.budget,
            policy.ledger,
            min_intersection=policy.min_intersection,
            n_jobs=policy.n_jobs,
            min_key_size=policy.min_key_size,
        )

    @classmethod
    def unrestricted(cls) -> HostGuard:
        """A guard that refuses nothing (a simulated party, whose driver holds all data)."""
        return cls("<simulation>", BudgetLimits.unrestricted(), n_jobs=None, enforce=False)

    # -- row minimums --------------------------------------------------------------------
    def _at_least(self, n_rows: int, minimum: int | None, what: str, key: str) -> None:
        if self.enforce and minimum and n_rows < minimum:
            raise PolicyError(
                f"{what} of {n_rows} rows is below this host's minimum of {minimum} rows "
                f"(policy key {key!r}; peer {self.identity!r})"
            )

    def _admit(self, kind: str, checks, alignment: str = "", rows: int = 0) -> None:
        if self.enforce:
            self.ledger.admit(self.identity, kind, checks, alignment, rows)

    # -- what the protocol roles call --------------------------------------------------
    def admit_alignment(self, mode: str, n_guest: int) -> None:
        """Count one PSI run (either mode) against the per-day limit."""
        limits = self.limits
        self._admit("alignment", [("max_alignments_per_day", limits.max_alignments_per_day, "day")])

    def check_fit_rows(self, protocol: str, n_rows: int, n_features: int) -> None:
        """Refuse a training run on fewer rows than the minimum for an ``n_features``
        block (counts nothing: a resumed run is checked again, not charged again)."""
        limits = self.limits
        minimum = limits.min_fit(n_features)
        key = "min_fit_rows_per_feature" if minimum > (limits.min_fit_rows or 0) else "min_fit_rows"
        self._at_least(int(n_rows), minimum, f"a {protocol} fit", key)

    def admit_fit(self, protocol: str, alignment: str, n_rows: int, n_features: int) -> None:
        """Admit one training run on ``n_rows`` aligned rows of an ``n_features`` block."""
        limits = self.limits
        self.check_fit_rows(protocol, n_rows, n_features)
        self._admit(
            "fit",
            [
                ("max_fits_per_alignment", limits.max_fits_per_alignment, "alignment"),
                ("max_fits_per_day", limits.max_fits_per_day, "day"),
            ],
            alignment=str(alignment),
            rows=int(n_rows),
        )

    def admit_batch(self, n_rows: int, n_total: int) -> None:
        """Admit one training batch (a full pass over a small fit is always admitted)."""
        minimum = self.limits.min_batch_rows
        if minimum is not None:
            minimum = min(minimum, int(n_total))
        self._at_least(int(n_rows), minimum, "a training batch", "min_batch_rows")

    def admit_prediction(self, protocol: str, alignment: str | None, n_rows: int) -> None:
        """Admit one prediction request scoring ``n_rows`` rows."""
        limits = self.limits
        self._at_least(
            int(n_rows),
            limits.min_prediction_rows,
            f"a {protocol} prediction request",
            "min_prediction_rows",
        )
        checks = [
            ("max_predictions_per_day", limits.max_predictions_per_day, "day"),
            ("max_rows_scored_per_day", limits.max_rows_scored_per_day, "rows_day"),
        ]
        if alignment:
            checks.insert(
                0,
                (
                    "max_predictions_per_alignment",
                    limits.max_predictions_per_alignment,
                    "alignment",
                ),
            )
        self._admit("prediction", checks, alignment=alignment or "", rows=int(n_rows))

    def admit_transformer_fit(self, n_rows: int) -> None:
        """Admit fitting one per-party transformer on ``n_rows`` rows."""
        limits = self.limits
        self._at_least(
            int(n_rows), limits.min_transformer_rows, "a transformer fit", "min_transformer_rows"
        )
        self._admit(
            "transformer",
            [("max_transformers_per_day", limits.max_transformers_per_day, "day")],
            rows=int(n_rows),
        )

    @property
    def may_score_ids(self) -> bool:
        """Whether the peer may have rows scored by raw id (outside any alignment)."""
        return bool(self.limits.score_ids)

    def n_jobs(self, requested: Any = None) -> int | None:
        """The parallelism this party uses: its own setting, whatever the peer asked."""
        return requested if not self.enforce else self._n_jobs

    _CAPS = {
        "epochs": "max_epochs",
        "pretrain_epochs": "max_pretrain_epochs",
        "hidden_units": "max_hidden_units",
        "hidden_layers": "max_hidden_layers",
        "n_bins": "max_n_bins",
        "degree": "max_degree",
        "output_features": "max_output_features",
    }

    def cap(self, name: str, value: int) -> int:
        """Refuse a peer-chosen resource ``value`` above this host's cap for ``name``."""
        key = self._CAPS[name]
        limit = getattr(self.limits, key)
        if self.enforce and limit is not None and int(value) > limit:
            raise PolicyError(
                f"{name}={int(value)} asked by peer {self.identity!r} exceeds this host's cap "
                f"of {limit} (policy key {key!r})"
            )
        return int(value)

    def readings(self) -> dict[str, dict[str, Any]]:
        """The budget as it stands: used and limit per counted item (24-hour window)."""
        limits, ledger, peer = self.limits, self.ledger, self.identity
        return {
            "alignments_per_day": {
                "used": ledger.used(peer, "alignment"),
                "limit": limits.max_alignments_per_day,
            },
            "fits_per_day": {"used": ledger.used(peer, "fit"), "limit": limits.max_fits_per_day},
            "predictions_per_day": {
                "used": ledger.used(peer, "prediction"),
                "limit": limits.max_predictions_per_day,
            },
            "rows_scored_per_day": {
                "used": ledger.used(peer, "prediction", rows=True),
                "limit": limits.max_rows_scored_per_day,
            },
            "transformers_per_day": {
                "used": ledger.used(peer, "transformer"),
                "limit": limits.max_transformers_per_day,
            },
            "limits": {k: v for k, v in asdict(limits).items()},
        }


_UNRESTRICTED = HostGuard.unrestricted()


def guard_of(party: Any) -> HostGuard:
    """The guard protecting ``party``: its own (set by ``ftl serve`` or a test), the one
    of the party it is derived from, or the unrestricted guard of a simulation."""
    while party is not None:
        guard = party.__dict__.get("guard") if hasattr(party, "__dict__") else None
        if guard is not None:
            return guard
        party = getattr(party, "_base", None)
    return _UNRESTRICTED
