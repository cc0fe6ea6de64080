"""Write the report fixtures of ``tests/test_reporting_golden.py`` with a given ftl.

The fixtures are the reports that ftl 0.1.0's single-module report
(``ftl/_report.py`` before it became the ``ftl.reporting`` package) rendered, so that
the package can be shown to render the very same text. They were written from a
checkout of that version::

    git worktree add /tmp/wt-report <commit>
    PYTHONPATH=/tmp/wt-report python tests/data/report_v1/generate.py

Each case is ``<name>.jsonl`` (the transcript), ``<name>.json`` (how the report was
asked for: from a bare transcript, or from an estimator -- its class, parameters
and the fitted attributes the report reads), ``<name>.md``, and for a few cases
``<name>.html``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.pipeline import make_pipeline

import ftl
from ftl.federation import FieldRecord, Transcript, TranscriptRecord
from ftl.preprocessing import FederatedStandardScaler

HERE = Path(__file__).resolve().parent
SMALL_KEY = dict(key_size=512, insecure_for_tests=True)
N_ROWS = 100
#: Cases also rendered as HTML: a warning section, PASS and FAIL cells, every block.
HTML_CASES = ("lr_plaintext", "synthetic_failed_checks", "transfer_encrypted_by_ids")
#: The fitted attributes the report reads from an estimator (besides its parameters).
FITTED = ("n_iter_", "party_names_")


def breast():
    X, y = ftl.align(*ftl.datasets.load_breast_cancer())
    order = np.argsort(X.ids)
    return X[order], y[order]


def as_request(obj) -> dict:
    """How the report was asked for, enough to ask again (see the golden test)."""
    if isinstance(obj, Transcript):
        return {"input": "transcript"}
    fitted = {}
    for name in FITTED:
        value = getattr(obj, name, None)
        if value is not None:
            fitted[name] = np.asarray(value).tolist()
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in obj.get_params().items()}
    return {
        "input": "estimator",
        "estimator": type(obj).__name__,
        "params": params,
        "fitted": fitted,
    }


def write(name: str, obj) -> None:
    transcript = obj if isinstance(obj, Transcript) else obj.transcript_
    transcript.to_jsonl(HERE / f"{name}.jsonl")
    (HERE / f"{name}.json").write_text(json.dumps(as_request(obj), indent=1) + "\n")
    (HERE / f"{name}.md").write_text(ftl.report(obj), encoding="utf-8")
    if name in HTML_CASES:
        (HERE / f"{name}.html").write_text(ftl.report(obj, format="html"), encoding="utf-8")
    print(name, len(transcript), "messages", file=sys.stderr)


def record(step, sender, receiver, type_, fields, session="s"):
    return TranscriptRecord(step, session, sender, receiver, type_, 100, tuple(fields))


def synthetic() -> dict[str, Transcript]:
    """Hand-made transcripts for the checks that real runs pass."""
    ct = FieldRecord("values", "ciphertext", "encrypted", (5, 1), True, key_id="k1")
    leak = FieldRecord("rows", "public", "array", (5,), True)
    protos = FieldRecord("prototypes", "ciphertext", "encrypted", (4, 1), False, key_id="kp")
    scores = FieldRecord("values", "ciphertext", "encrypted", (3,), True, key_id="kp")
    rows = FieldRecord("rows", "ciphertext", "encrypted", (5, 1), True, key_id="ks")
    return {
        "synthetic_failed_checks": Transcript(
            [
                record(0, "g", "h", "lr.contribution", [ct]),
                record(1, "h", "g", "lr.contribution", [ct]),
                record(2, "g", "h", "x.leak", [leak]),
            ]
        ),
        "synthetic_transfer_and_lr": Transcript(
            [
                record(0, "src", "tgt", "ftl.predict_open", [protos]),
                record(1, "tgt", "src", "ftl.scores", [scores]),
                record(2, "src", "tgt", "ftl.source_terms", [rows]),
                record(3, "tgt", "src", "ftl.target_terms", [rows]),
                record(4, "tgt", "src", "ftl.scores", [scores], session="other"),
                record(5, "src", "tgt", "lr.contribution", [ct]),
                record(6, "src", "tgt", "psi.open", []),
            ]
        ),
        "synthetic_empty": Transcript(),
    }


def main() -> None:
    X, y = breast()
    X, y = X[:N_ROWS], y[:N_ROWS]

    clf = ftl.FederatedLogisticRegression(encryption=None, max_iter=2, random_state=0)
    clf.fit(X, y).decision_function(X)
    write("lr_plaintext", clf)

    clf = ftl.FederatedLogisticRegression(
        max_iter=2, random_state=0, verbose=True, optimizer="adam", **SMALL_KEY
    )
    clf.fit(X, y).decision_function(X[:20])
    write("lr_encrypted_verbose_loss", clf)

    clf = ftl.FederatedLogisticRegression(
        encryption=None, max_iter=2, random_state=0, simulated_hosts=2
    )
    features, labels = load_breast_cancer(return_X_y=True)
    clf.fit(features[:N_ROWS], labels[:N_ROWS])
    write("lr_two_hosts_plaintext", clf)

    psi = X.alignment.psi["transcript"]
    write("psi_only", psi)
    card = Transcript()
    ftl.intersection_size(*ftl.datasets.load_breast_cancer(), transcript=card)
    write("psi_cardinality", card)

    scaler = FederatedStandardScaler()
    pipe = make_pipeline(
        scaler, ftl.FederatedLogisticRegression(encryption=None, max_iter=2, random_state=0)
    ).fit(X, y)
    write("preprocessing_scaler", scaler)
    combined = Transcript()
    for part in (psi, scaler.transcript_, pipe[-1].transcript_):
        combined.extend(part)
    write("pipeline_psi_preprocessing_lr", combined)

    data = ftl.datasets.load_breast_transfer()
    Xt, yt = ftl.align(data.source, data.target, how="left")
    transfer = dict(max_iter=2, n_components=4, hidden_layer_sizes=(4,), random_state=0)
    clf = ftl.FederatedTransferClassifier(**transfer, **SMALL_KEY).fit(Xt, yt)
    clf.predict_proba(Xt[:20])
    clf.predict_proba(data.target.select(data.target_only_ids[:10]))
    write("transfer_encrypted_by_ids", clf)
    clf = ftl.FederatedTransferClassifier(**transfer, encryption=None).fit(Xt, yt)
    clf.predict_proba(Xt[:20])
    write("transfer_plaintext", clf)
    write("transfer_plaintext_bare", clf.transcript_)

    for name, transcript in synthetic().items():
        write(name, transcript)


if __name__ == "__main__":
    main()
