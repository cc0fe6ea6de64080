"""Which party's columns each boosting iteration's trees may split on (the tree plan).

Standard trees split on every party's columns. SecureBoost's "complete secure"
mode grows the trees of the first ``guest_only_iterations`` iterations on the
guest's columns only. SecureBoost+'s mixed trees (FATE's ``tree_mode="mixed"``,
``tree_num_per_party``) let the parties take turns after those: the guest grows
the trees of ``tree_num_per_party`` iterations on its own columns, then host 1
the next ``tree_num_per_party`` on its own, then host 2, and so on, round after
round. An iteration of several classes (one tree per class) belongs to one party,
as FATE plans its boosting rounds.

The plan is public: the guest sends it at ``sbt.open`` and every host computes
from it which trees are its own (:meth:`TreePlan.owns`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["TreePlan"]


def _count(fields: Mapping, name: str, low: int) -> int:
    value = fields.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"mixed-tree plan: {name} must be an integer >= {low}, got {value!r}")
    return value


@dataclass(frozen=True)
class TreePlan:
    """Who owns the trees of each iteration.

    Parameters
    ----------
    guest_only_iterations : int, default=0
        The first iterations' trees split on the guest's columns only.
    tree_num_per_party : int or None, default=None
        Mixed trees: the iterations of each party's turn after those; None for
        trees that split on every party's columns.
    n_parties : int, default=1
        The guest and the hosts (the mixed turns go round them).
    n_trees_per_iteration : int, default=1
        Trees per iteration (one per class for several classes).
    """

    guest_only_iterations: int = 0
    tree_num_per_party: int | None = None
    n_parties: int = 1
    n_trees_per_iteration: int = 1

    @property
    def mixed(self) -> bool:
        return self.tree_num_per_party is not None

    def owner(self, iteration: int) -> int | None:
        """The block (0 is the guest's) whose columns alone the trees of
        ``iteration`` split on; None: every block's."""
        turn = iteration - self.guest_only_iterations
        if turn < 0:
            return 0
        if self.tree_num_per_party is None:
            return None
        return (turn // self.tree_num_per_party) % self.n_parties

    def owns(self, party: int, tree: int) -> bool:
        """Whether tree number ``tree`` (over all iterations and classes) splits on
        ``party``'s columns alone."""
        return self.owner(tree // self.n_trees_per_iteration) == party

    def to_json(self) -> dict:
        """The mixed plan as the guest sends it at ``sbt.open`` (mixed trees only)."""
        return {
            "guest_only_iterations": int(self.guest_only_iterations),
            "tree_num_per_party": int(self.tree_num_per_party),
            "n_parties": int(self.n_parties),
            "n_trees_per_iteration": int(self.n_trees_per_iteration),
        }

    @classmethod
    def from_json(cls, fields) -> TreePlan:
        """A host's check of a mixed plan; ``ValueError`` for a malformed one."""
        names = {
            "guest_only_iterations",
            "tree_num_per_party",
            "n_parties",
            "n_trees_per_iteration",
        }
        if not isinstance(fields, Mapping) or set(fields) != names:
            raise ValueError(f"a mixed-tree plan has exactly the fields {sorted(names)}")
        return cls(
            guest_only_iterations=_count(fields, "guest_only_iterations", 0),
            tree_num_per_party=_count(fields, "tree_num_per_party", 1),
            # the guest and at least this host
            n_parties=_count(fields, "n_parties", 2),
            n_trees_per_iteration=_count(fields, "n_trees_per_iteration", 1),
        )
