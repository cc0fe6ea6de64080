"""Attack: transfer prediction by raw id as a membership oracle (issue 13, item 4(b)).

The source (driver) may ask the target to score rows it names by raw id (rows
outside any alignment, e.g. customers the target told it about). It used to answer
"1 requested id(s) not found" for an id the target lacks and to score any customer
it has, so one candidate id among known ones told the source whether that person is
a customer of the target. Now the target decides: a served target does not score
by raw id unless its policy says ``score_ids = true``; where it does, every
unscorable request gets the same refusal, and every probe is charged to the
prediction budget. (The PSI oracle, item 4(a), is tested in test_membership_psi.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

import ftl
from ftl.data.handles import PartyRows

try:
    from ftl.federation.budget import BudgetLimits, HostGuard
except ImportError:  # the code before the privacy budget: there is no guard to attach
    BudgetLimits = HostGuard = None


@pytest.fixture(scope="module")
def trained():
    data = ftl.datasets.load_breast_transfer()
    X, y = ftl.align(data.source, data.target, how="left")
    clf = ftl.FederatedTransferClassifier(
        encryption=None,
        n_components=4,
        hidden_layer_sizes=(4,),
        pretrain_epochs=2,
        max_iter=3,
        random_state=0,
    ).fit(X, y)
    return data, clf


def guard_target(data, **limits) -> None:
    """Give the target the guard ``ftl serve`` gives it for peer "hospital"."""
    data.target.guard = None if HostGuard is None else HostGuard("hospital", BudgetLimits(**limits))


def candidates(data) -> tuple:
    """Ids the source knows (the target gave them), a customer of the target it does
    not know, and a person who is not the target's customer."""
    target_ids = data.target.local_ids()
    known = list(data.target_only_ids[:19])
    member = next(i for i in target_ids if i not in set(known))
    outsider = int(max(int(i) for i in target_ids)) + 1000
    return known, member, outsider


def probe(clf, target, ids) -> str:
    """Ask the target to score ``ids`` (as ``RemoteParty.select`` names them); what the
    source sees."""
    rows = PartyRows(target, np.arange(len(ids)), np.asarray(ids, dtype=object))
    try:
        clf.predict_proba(rows)
    except (ValueError, PermissionError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "scored"


def test_raw_id_scoring_does_not_tell_members_from_outsiders(trained):
    """Default policy of a served target: one candidate among known ids gets the same
    answer whether or not it is the target's customer."""
    data, clf = trained
    guard_target(data)
    try:
        known, member, outsider = candidates(data)
        as_member = probe(clf, data.target, known + [member])
        as_outsider = probe(clf, data.target, known + [outsider])
    finally:
        data.target.guard = None
    assert as_member == as_outsider
    assert as_member.startswith("PolicyError") and "score_ids" in as_member


def test_where_ids_are_scored_refusals_say_nothing_and_probes_are_charged(trained):
    """A target that allows raw-id scoring: the refusal names neither the ids nor how
    many are unknown, and each probe (refused or not) spends the prediction budget."""
    data, clf = trained
    guard_target(data, score_ids=True, max_predictions_per_day=3)
    try:
        known, member, outsider = candidates(data)
        answers = [
            probe(clf, data.target, known + [outsider]),
            probe(clf, data.target, known[:17] + [outsider, outsider + 1, outsider + 2]),
            probe(clf, data.target, known + [member]),
            probe(clf, data.target, known + [outsider]),  # the budget is spent
        ]
    finally:
        data.target.guard = None
    assert answers[0] == answers[1]
    assert not any(ch.isdigit() for ch in answers[0].partition(": ")[2])
    assert answers[2] == "scored"
    assert answers[3].startswith("PolicyError") and "max_predictions_per_day" in answers[3]


def test_aligned_prediction_is_unaffected(trained):
    """Scoring aligned rows needs no raw ids and stays within the default budget."""
    data, clf = trained
    X, _ = ftl.align(data.source, data.target, how="left")
    guard_target(data)
    try:
        proba = clf.predict_proba(X)
    finally:
        data.target.guard = None
    assert proba.shape == (len(X), 2)
