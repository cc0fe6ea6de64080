"""ftl.report: the auditor-facing privacy report, and ``ftl report`` on the CLI."""

from __future__ import annotations

import html
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import ftl
from ftl.cli import main
from ftl.federation import FieldRecord, Transcript, TranscriptRecord
from ftl.federation.disclosure import Disclosure, Framing, Leakage, Para, Section
from ftl.federation.messages import schema_for
from ftl.federation.protocols import ProtocolSpec, register_protocol, unregister_protocol
from ftl.reporting import report
from ftl.transfer._disclosure import FTL_PROTOCOL
from tests.conftest import SMALL_KEY

PLAINTEXT_WARNING = "WARNING: plaintext values crossed party boundaries"
N_ROWS = 100


@pytest.fixture(scope="module")
def encrypted_clf(breast):
    X, y = breast
    clf = ftl.FederatedLogisticRegression(max_iter=2, random_state=0, **SMALL_KEY)
    clf.fit(X[:N_ROWS], y[:N_ROWS])
    clf.decision_function(X[:N_ROWS])
    return clf


@pytest.fixture(scope="module")
def plaintext_clf(breast):
    X, y = breast
    clf = ftl.FederatedLogisticRegression(encryption=None, max_iter=2, random_state=0)
    return clf.fit(X[:N_ROWS], y[:N_ROWS])


def _record(step, sender, receiver, type_, fields, nbytes=100, via=None):
    return TranscriptRecord(
        step=step,
        session="s",
        sender=sender,
        receiver=receiver,
        type=type_,
        nbytes=nbytes,
        fields=tuple(fields),
        via=via,
    )


class _TagChecker(HTMLParser):
    """Checks that every non-void element is closed in order."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def _check_html(text: str) -> _TagChecker:
    assert text.startswith("<!DOCTYPE html>")
    checker = _TagChecker()
    checker.feed(text)
    checker.close()
    assert checker.stack == []
    assert "<table>" in text and "<style>" in text
    assert "http://" not in text and "https://" not in text  # no external assets
    assert "script" not in checker.tags and "link" not in checker.tags
    return checker


def test_encrypted_fit_report_lists_types_and_no_plaintext_warning(encrypted_clf):
    text = report(encrypted_clf)
    types = {r.type for r in encrypted_clf.transcript_}
    assert {"lr.contribution", "lr.cross_term", "lr.masked_margin"} <= types
    for name in types:
        assert f"`{name}`" in text
    assert schema_for("lr.contribution").doc in text
    assert PLAINTEXT_WARNING not in text
    assert "| No field of kind `plaintext` | PASS |" in text
    assert "| Per-sample fields are ciphertexts or masked | PASS |" in text
    assert "| No ciphertext sent back to its key owner | PASS |" in text
    # parties, totals, directions, data categories, key size, leakages
    assert "`hospital`" in text and "`lab`" in text and "guest (driver)" in text
    assert f"{encrypted_clf.transcript_.total_bytes:,}" in text
    assert f"| Messages | {len(encrypted_clf.transcript_):,} |" in text
    assert "lab → hospital" in text and "hospital → lab" in text
    assert "Per-sample ciphertexts" in text and "Masked aggregates" in text
    assert "512-bit Paillier" in text
    assert "WARNING: weak keys" in text  # 512-bit test keys are flagged
    assert "docs/protocols.md" in text and "§5.2" in text
    assert "No PSI messages in this transcript" in text


def test_plaintext_fit_report_warns(plaintext_clf):
    text = report(plaintext_clf)
    assert PLAINTEXT_WARNING in text
    assert "## WARNINGS" in text
    assert "| No field of kind `plaintext` | FAIL |" in text
    assert "`lr.contribution.values`" in text
    assert "PLAINTEXT values" in text
    assert "encryption=None" in text
    assert "weak keys" not in text


def test_html_report_is_standalone_and_escaped(encrypted_clf, plaintext_clf):
    text = report(encrypted_clf, format="html")
    _check_html(text)
    assert "<code>lr.contribution</code>" in text
    # the registered docs are escaped ("Host's" -> "Host&#x27;s")
    doc = schema_for("lr.opened").doc
    assert "'" in doc and html.escape(doc) in text and doc not in text
    warned = report(plaintext_clf, format="html")
    _check_html(warned)
    assert '<section class="warning">' in warned
    assert html.escape(PLAINTEXT_WARNING) in warned


def test_html_escapes_hostile_names():
    evil = '<script>alert("x")</script>'
    t = Transcript(
        [
            _record(
                0, "guest", evil, "lr.epoch_end", [FieldRecord("epoch", "public", "int", (), False)]
            ),
            _record(1, evil, "guest", "ack", []),
        ]
    )
    text = report(t, format="html", title="<b>audit</b>")
    _check_html(text)
    assert "<script>" not in text and "<b>audit</b>" not in text
    assert html.escape(evil) in text and "&lt;b&gt;audit&lt;/b&gt;" in text


def test_bare_transcript_and_psi_mode(tmp_path, breast):
    X, _ = breast
    path = X.alignment.psi["transcript"].to_jsonl(tmp_path / "psi.jsonl")
    text = report(path)
    assert "not recorded" in text
    assert "transcript file" in text and str(path) in text
    assert "default (full alignment" in text
    assert "`psi.host_points_reblinded`" in text
    assert "PSI points are public by design" in text
    assert "WARNING" not in text

    card = Transcript()
    ftl.intersection_size(*ftl.datasets.load_breast_cancer(), transcript=card)
    text = report(card)
    assert "cardinality-only" in text and "`psi.shuffled_doubles`" in text


def test_failed_checks_on_synthetic_transcript():
    ct = FieldRecord("values", "ciphertext", "encrypted", (5, 1), True, key_id="k1")
    t = Transcript(
        [
            _record(0, "g", "h", "lr.contribution", [ct]),
            _record(1, "h", "g", "lr.contribution", [ct]),  # back to the key owner
            _record(2, "g", "h", "x.leak", [FieldRecord("rows", "public", "array", (5,), True)]),
        ]
    )
    text = report(t)
    assert "WARNING: ciphertexts of kind `ciphertext` were sent to the owner" in text
    assert "WARNING: per-sample fields that are neither ciphertexts nor masked" in text
    assert "`x.leak.rows`" in text and "(unregistered message type)" in text
    assert PLAINTEXT_WARNING not in text


def test_bad_inputs(encrypted_clf):
    with pytest.raises(ValueError, match="format"):
        report(encrypted_clf, format="pdf")
    with pytest.raises(NotFittedError):
        report(ftl.FederatedLogisticRegression())
    with pytest.raises(TypeError):
        report(42)
    assert "No fields were exchanged" in report(Transcript())


def test_cli_report_writes_output(tmp_path, capsys, encrypted_clf):
    path = encrypted_clf.transcript_.to_jsonl(tmp_path / "t.jsonl")
    out = tmp_path / "report.md"
    assert main(["report", str(path), "--output", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# ftl privacy report") and "lr.contribution" in text
    # a bare file holds no key parameters, but the width of every ciphertext
    assert "| Key size | 512-bit Paillier modulus for every party, read from" in text
    assert "| Key size ≥ 2048 bits | FAIL | 512 bits |" in text

    page = tmp_path / "report.html"
    assert main(["report", str(path), "--output", str(page)]) == 0  # html by suffix
    _check_html(page.read_text(encoding="utf-8"))
    forced = tmp_path / "forced.txt"
    assert main(["report", str(path), "--format", "html", "-o", str(forced)]) == 0
    assert forced.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    capsys.readouterr()

    assert main(["report", str(path)]) == 0
    assert "| `lr.contribution` |" in capsys.readouterr().out


# ---------------------------------------------------------------- transfer learning
TRANSFER = dict(max_iter=2, n_components=4, hidden_layer_sizes=(4,), random_state=0)


def _transfer_fit(by_ids: bool, **params):
    data = ftl.datasets.load_breast_transfer()
    X, y = ftl.align(data.source, data.target, how="left")
    clf = ftl.FederatedTransferClassifier(**TRANSFER, **params).fit(X, y)
    clf.predict_proba(X[:20])  # aligned rows: source-only rows locally, shared ones securely
    if by_ids:
        clf.predict_proba(data.target.select(data.target_only_ids[:10]))
    return clf


@pytest.fixture(scope="module")
def transfer_clf():
    return _transfer_fit(True, **SMALL_KEY)


@pytest.fixture(scope="module")
def transfer_plain_clf():
    return _transfer_fit(False, encryption=None)


def _row(text: str, start: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(start)]
    return line


def test_transfer_report(transfer_clf):
    text = report(transfer_clf)  # n_iter_ is an int here, not one per binary model
    types = {r.type for r in transfer_clf.transcript_}
    assert {"ftl.open", "ftl.source_terms", "ftl.target_terms", "ftl.scores"} <= types
    for name in types:
        assert f"`{name}`" in text
    assert schema_for("ftl.target_terms").doc in text
    assert f"| Protocol | {FTL_PROTOCOL} |" in text
    assert "(Liu et al. 2018), secure: row-packed Paillier, masked gradients" in text
    assert "| Epochs | 2 |" in text and "per binary model" not in text
    assert "| `hospital` | source (labelled, runs the driver) |" in text
    assert "| `lab` | target (unlabelled) |" in text
    assert "guest (driver)" not in text
    assert "512-bit Paillier modulus for every key" in text and "WARNING: weak keys" in text
    # checks: all pass; the scores return to their key owner, the driver, by design
    assert PLAINTEXT_WARNING not in text
    assert "| No field of kind `plaintext` | PASS |" in text
    assert "| Per-sample fields are ciphertexts or masked | PASS |" in text
    owner = _row(text, "| No ciphertext sent back to its key owner |")
    assert "| PASS |" in owner and "`ftl.scores.values (lab → hospital)`" in owner
    # what crossed, per field, and whose key it is under
    assert "`rows` (ciphertext, per-sample, under the sender's key)" in text
    assert "`gradient` (masked, under the receiver's key)" in text
    assert _row(text, "| `ftl.scores` | lab → hospital |").endswith(
        "`values` (ciphertext, per-sample, under the receiver's key) |"
    )
    # the transfer protocol's leakages apply; logistic regression's are not listed
    for start, applies in [
        ("| training | The target learns the gradient of its own output layer", "yes"),
        ("| training | The source learns the gradient of its own output layer", "yes"),
        ("| training | Both parties learn which aligned rows are in the overlap", "yes"),
        ("| prediction | The source learns the scores `P u_T,j`", "yes"),
        ("| prediction | Target rows scored by id", "yes"),
        ("| all | Plaintext mode", "no"),
        ("| all | Non-goals", "yes"),
    ]:
        assert f"| {applies} |" in _row(text, start), start
    assert "M = PᵀQP" in text and "U_TᵀU_T / n" in text and "K' ≥ d" in text
    assert "X_Hᵀ (residual)" not in text  # logistic regression's label leakage
    assert "`docs/transfer.md`" in text


def test_transfer_plaintext_report(transfer_plain_clf):
    text = report(transfer_plain_clf)
    assert PLAINTEXT_WARNING in text and "## WARNINGS" in text
    assert "PLAINTEXT MODE" in text and "`encryption=None`" in text
    assert "| No field of kind `plaintext` | FAIL |" in text
    per_sample = _row(text, "| Per-sample fields are ciphertexts or masked |")
    assert "| FAIL |" in per_sample and "`ftl.source_terms.rows`" in per_sample
    assert "`ftl.target_terms.rows`" in per_sample and "`ftl.scores.values`" in per_sample
    assert "| n/a | no ciphertexts (plaintext mode) |" in text
    assert "| yes |" in _row(text, "| all | Plaintext mode")
    assert "| no |" in _row(text, "| prediction | Target rows scored by id")  # aligned rows only
    assert "weak keys" not in text


def test_transfer_report_from_file_and_html(tmp_path, capsys, transfer_clf):
    path = transfer_clf.transcript_.to_jsonl(tmp_path / "ftl.jsonl")
    assert main(["report", str(path)]) == 0
    text = capsys.readouterr().out
    assert "| `hospital` | source (labelled, runs the driver) |" in text
    assert "| Protocol |" in text
    assert "512-bit Paillier modulus for every key (each party's training key" in text
    assert "| PASS |" in _row(text, "| No ciphertext sent back to its key owner |")
    assert "| yes |" in _row(text, "| prediction | Target rows scored by id")
    page = report(transfer_clf, format="html")
    _check_html(page)
    assert "<code>ftl.source_terms</code>" in page and "Federated transfer learning" in page


def test_transfer_scores_to_another_party_fail():
    """Only the party that opened a prediction session may receive its scores."""
    ct = FieldRecord("prototypes", "ciphertext", "encrypted", (4, 1), False, key_id="kp")
    scores = FieldRecord("values", "ciphertext", "encrypted", (3,), True, key_id="kp")
    rows = FieldRecord("rows", "ciphertext", "encrypted", (5, 1), True, key_id="ks")
    base = [
        _record(0, "src", "tgt", "ftl.predict_open", [ct]),
        _record(1, "tgt", "src", "ftl.scores", [scores]),
    ]
    text = report(Transcript(base))
    assert "| PASS |" in _row(text, "| No ciphertext sent back to its key owner |")
    bad = Transcript(
        [
            *base,
            _record(2, "src", "tgt", "ftl.source_terms", [rows]),
            _record(3, "tgt", "src", "ftl.target_terms", [rows]),  # the source's own rows back
        ]
    )
    text = report(bad)
    owner = _row(text, "| No ciphertext sent back to its key owner |")
    assert "| FAIL |" in owner and "`ftl.target_terms.rows (tgt → src)`" in owner
    assert "WARNING: ciphertexts of kind `ciphertext` were sent to the owner" in text
    # scores under a prediction key, but in a session that no ftl.predict_open opened
    stray = TranscriptRecord(
        step=2,
        session="other",
        sender="tgt",
        receiver="src",
        type="ftl.scores",
        nbytes=10,
        fields=(scores,),
    )
    text = report(Transcript([*base, stray]))
    owner = _row(text, "| No ciphertext sent back to its key owner |")
    assert "| FAIL |" in owner and "`ftl.scores.values (tgt → src)`" in owner


# ---------------------------------------------------------------- key sizes, old imports
def _ciphertexts(width: int, key_id: str = "k1"):
    from ftl.federation.messages import CiphertextArray, Message

    values = np.empty((3, 1), dtype=object)
    values[:] = 12345
    return Message(
        "lr.contribution",
        {"owner": "g", "values": CiphertextArray(values, key_id, width)},
    )


def test_key_size_is_read_from_the_recorded_ciphertext_width():
    """Issue 18: a transcript records each ciphertext field's width (bytes per
    ciphertext on the wire), both in process and from an encoded message's
    header (a served party's audit log), so a bare transcript's key size is known."""
    from ftl.federation.messages import encode

    t = Transcript()
    t.record("s", "g", "h", _ciphertexts(512), nbytes=100)
    t.record_encoded("s", "g", "h", encode(_ciphertexts(512)))
    assert [r.fields[1].width for r in t] == [512, 512]
    text = report(t)
    assert "| Key size | 2048-bit Paillier modulus for every party, read from" in text
    assert "| Key size ≥ 2048 bits | PASS | 2048 bits |" in text

    t.record("s", "g", "h", _ciphertexts(128, key_id="k2"), nbytes=100)  # a 512-bit key
    text = report(t)
    assert "512-bit and 2048-bit Paillier moduli" in text
    assert "| Key size ≥ 2048 bits | FAIL | 512 bits |" in text and "WARNING: weak keys" in text


def test_transcripts_without_widths_still_load_and_say_not_recorded(tmp_path):
    t = Transcript()
    t.record("s", "g", "h", _ciphertexts(512), nbytes=100)
    path = t.to_jsonl(tmp_path / "t.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:  # as written before widths were recorded
        for f in line["fields"]:
            del f["width"]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    text = report(path)
    assert "not recorded (a bare transcript holds no key parameters)" in text


def test_old_import_paths_keep_working():
    import ftl._report as old
    from ftl.crypto.keys import MIN_SECURE_KEY_SIZE
    from ftl.reporting import KIND_ORDER, as_transcript, human_bytes, payload_kind

    assert old.report is report is ftl.report
    assert (old.as_transcript, old.payload_kind, old.KIND_ORDER) == (
        as_transcript,
        payload_kind,
        KIND_ORDER,
    )
    assert old._human_bytes is human_bytes and human_bytes(1500) == "1.5 kB"
    assert old.MIN_SECURE_KEY_SIZE == MIN_SECURE_KEY_SIZE and old.FTL_PROTOCOL == FTL_PROTOCOL


# ---------------------------------------------------------------- a protocol's own disclosure
TOY = Disclosure(
    name="toy protocol (tests)",
    owner_types=frozenset({"toyreport.terms"}),
    leakages=(
        Leakage("training", "The helper learns the toy's sum.", "toy.md", lambda a: True),
        Leakage("prediction", "Nothing is predicted.", "§9.9", lambda a: False),
    ),
    plaintext_values=" (toy terms)",
    framing=Framing(
        roles=("toy driver", "toy helper"),
        parties_note="Toy roles.",
        key_scope="every toy key",
        leakage_intro="Toy leakages.",
    ),
    section=lambda a: Section("Toy protocol", [Para(f"{a.n_hosts} helper(s).")]),
    category_note=lambda key, a: " Toy rows are public." if key == "unprotected" else "",
    estimator_facts=lambda est: [("Toy fact", "42")],
)


@pytest.fixture
def toy_protocol():
    spec = register_protocol(
        ProtocolSpec(family="toyreport", title="toy", message_prefix="toyreport.", report=TOY)
    )
    yield spec
    unregister_protocol(spec.family)


def test_a_registered_protocol_is_reported_from_its_disclosure(toy_protocol):
    """The report names no protocol: a new one appears through its declaration."""
    rows = FieldRecord("rows", "public", "array", (5,), True)
    terms = FieldRecord("values", "ciphertext", "encrypted", (5,), True, key_id="kt")
    t = Transcript(
        [
            _record(0, "d", "h", "toyreport.open", [rows]),
            _record(1, "d", "h", "toyreport.terms", [terms]),
            _record(2, "h", "d", "toyreport.terms", [terms]),  # back to its key owner
        ]
    )
    text = report(t)
    assert "| Protocol | toy protocol (tests) |" in text
    assert "| `d` | toy driver |" in text and "| `h` | toy helper |" in text
    assert "Toy roles." in text and "Toy leakages." in text
    assert "## Toy protocol\n\n1 helper(s)." in text
    assert "| training | The helper learns the toy's sum. | yes | toy.md |" in text
    assert "| prediction | Nothing is predicted. | no | `docs/protocols.md` §9.9 |" in text
    assert (
        "Row-level values outside PSI that are not ciphertexts or masked values. Toy rows" in text
    )
    owner = _row(text, "| No ciphertext sent back to its key owner |")
    assert "| FAIL |" in owner and "`toyreport.terms.values (h → d)`" in owner
    # PSI (listed always) is there; logistic regression's rows are not (a framed report)
    assert "| PSI | Set sizes are revealed" in text and "X_Hᵀ (residual)" not in text


def test_estimator_facts_come_from_the_estimator_s_protocol(toy_protocol, plaintext_clf):
    """Summary rows an estimator's own protocol declares (logistic regression: the
    effective sigmoid; no toy fact, which belongs to another protocol)."""
    text = report(plaintext_clf)
    assert "| Sigmoid approximation | auto (→ poly) |" in text
    assert "| L-BFGS iterations per binary model | 2 |" in text and "Toy fact" not in text


def test_the_report_package_names_no_protocol():
    """Every protocol-specific word comes from a protocol's own declaration: no
    string in ``ftl.reporting`` starts with a registered message prefix or names
    a registered estimator."""
    import pathlib

    import ftl.reporting
    from ftl.federation.protocols import load_protocols

    sources = {
        path.name: path.read_text(encoding="utf-8")
        for path in pathlib.Path(ftl.reporting.__file__).parent.glob("*.py")
    }
    for spec in load_protocols():
        for name, source in sources.items():
            for quote in "\"'":
                assert quote + spec.message_prefix not in source, (name, spec.family)
            for est in spec.estimators:
                code = [line for line in source.splitlines() if ">>>" not in line]
                assert est.cls.__name__ not in "\n".join(code), (name, est.cls.__name__)
