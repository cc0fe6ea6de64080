"""The report package renders what the single-module report of ftl 0.1.0 rendered.

``tests/fixtures/report_v1/`` holds transcripts and the Markdown and HTML reports the
old ``ftl/_report.py`` made of them (``generate.py`` there says how). Reports of
estimators are asked for again from an estimator rebuilt with the same parameters
and fitted attributes, so the protocols' estimator hooks are exercised too.

The only differences allowed are listed in :data:`CHANGED` with their reason.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

import ftl
from ftl.federation import Transcript
from ftl.preprocessing import FederatedStandardScaler

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "report_v1"
CASES = sorted(p.stem for p in DATA.glob("*.json"))
ESTIMATORS = {
    cls.__name__: cls
    for cls in (
        ftl.FederatedLogisticRegression,
        ftl.FederatedTransferClassifier,
        FederatedStandardScaler,
    )
}

#: Plaintext-mode logistic regression sends no ciphertext, so there is nothing for
#: the key-owner check to pass: the old report said PASS for logistic regression and
#: n/a for transfer learning (a protocol-specific branch); both now say n/a.
_OWNER_PASS = {
    "md": "| No ciphertext sent back to its key owner | PASS |  |",
    "html": '<td>No ciphertext sent back to its key owner</td><td class="PASS">PASS</td><td></td>',
}
_OWNER_NA = {
    "md": "| No ciphertext sent back to its key owner | n/a | no ciphertexts (plaintext mode) |",
    "html": "<td>No ciphertext sent back to its key owner</td><td>n/a</td>"
    "<td>no ciphertexts (plaintext mode)</td>",
}
#: The label leakage of logistic regression now names the one bound on it
#: (label_privacy), which was added since, and spy columns (docs/protocols.md §5.2),
#: which read labels in every batch whatever the first batch's defences.
_LABELS_OLD = (
    "Labels to every host: per batch a host learns its gradient term `X_Hᵀ (residual)`; "
    "in the first batch this is exactly `X_Hᵀ y` for the batch, which recovers every label "
    "of the batch when the host has at least as many columns as the batch has rows. No "
    "defence (noise, clipping) is implemented."
)
_LABELS_NEW = (
    "Labels to every host: per batch a host learns its gradient term `X_Hᵀ (residual)` "
    "(the residual `σ̃(z) − y`; a regressor's: prediction minus target), which correlates "
    "with the labels; a host column non-zero on a single row (a spy column, which the guest "
    "can neither see nor refuse) makes that row's residual, and so its label, an entry of "
    "it in every batch. Only `label_privacy=ε` bounds what a host learns of each label "
    "(ε-label-DP: randomized response, or Laplace noise on a regressor's targets); whether "
    "a fit used it is the guest's to know: an estimator's report shows it in the summary "
    "(row Label privacy), a transcript does not record it."
)


def _both_forms(text: str) -> dict:
    """Report text as Markdown and as HTML (escaped, backticked spans as code)."""
    escaped = html.escape(text)
    return {"md": text, "html": re.sub(r"`([^`]*)`", r"<code>\1</code>", escaped)}


_LABELS = (_both_forms(_LABELS_OLD), _both_forms(_LABELS_NEW))

#: A logistic regression's summary says whether it trained with label privacy (a
#: row after the optimiser's, which is filled in).
_OPTIMISER = {
    "md": "| Optimiser | `{}` |\n",
    "html": "<tr><td>Optimiser</td><td><code>{}</code></td></tr>\n",
}
_NO_LABEL_PRIVACY = {
    "md": "| Label privacy | off |\n",
    "html": "<tr><td>Label privacy</td><td>off</td></tr>\n",
}


def _changes(name: str) -> list:
    """The differences :data:`CHANGED` allows in case ``name``, with their reasons."""
    changes = []
    if name in ("lr_plaintext", "lr_two_hosts_plaintext", "pipeline_psi_preprocessing_lr"):
        changes.append((_OWNER_PASS, _OWNER_NA))
    if _LABELS_OLD in (DATA / f"{name}.md").read_text(encoding="utf-8"):
        changes.append(_LABELS)
    request = json.loads((DATA / f"{name}.json").read_text())
    if request.get("estimator") == "FederatedLogisticRegression":
        optimiser = {k: row.format(request["params"]["optimizer"]) for k, row in _OPTIMISER.items()}
        changes.append((optimiser, {k: row + _NO_LABEL_PRIVACY[k] for k, row in optimiser.items()}))
    return changes


CHANGED = {name: _changes(name) for name in CASES}


def _ask_again(name: str):
    """The transcript, or an estimator like the one the fixture was made from."""
    transcript = Transcript.from_jsonl(DATA / f"{name}.jsonl")
    request = json.loads((DATA / f"{name}.json").read_text())
    if request["input"] == "transcript":
        return transcript
    est = ESTIMATORS[request["estimator"]](**request["params"])
    fitted = request["fitted"]
    if "n_iter_" in fitted:  # an int, or an array of one count per binary model
        est.n_iter_ = np.asarray(fitted["n_iter_"])
    if "party_names_" in fitted:
        est.party_names_ = list(fitted["party_names_"])
    est.transcript_ = transcript
    return est


def _expected(name: str, suffix: str) -> str:
    text = (DATA / f"{name}.{suffix}").read_text(encoding="utf-8")
    for old, new in CHANGED.get(name, []):
        assert old[suffix] in text, (name, old[suffix])
        text = text.replace(old[suffix], new[suffix])
    return text


def test_every_case_has_a_markdown_report():
    assert CASES == sorted(p.stem for p in DATA.glob("*.md"))


@pytest.mark.parametrize(
    ("name", "suffix"),
    [(p.stem, p.suffix[1:]) for p in sorted(DATA.glob("*.md")) + sorted(DATA.glob("*.html"))],
)
def test_report_renders_as_before(name, suffix):
    fmt = "markdown" if suffix == "md" else "html"
    text = ftl.report(_ask_again(name), format=fmt)
    assert text == _expected(name, suffix)


def test_fixtures_cover_every_protocol_and_input():
    """The fixtures hold messages of every built-in protocol, estimators of both
    training protocols and bare transcripts."""
    types = set()
    inputs = set()
    for name in CASES:
        types |= {r.type.split(".")[0] for r in Transcript.from_jsonl(DATA / f"{name}.jsonl")}
        request = json.loads((DATA / f"{name}.json").read_text())
        inputs.add(request.get("estimator", request["input"]))
    assert {"psi", "prep", "lr", "ftl"} <= types
    assert set(ESTIMATORS) | {"transcript"} <= inputs
