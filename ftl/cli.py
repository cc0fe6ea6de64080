"""Command line: ``ftl demo``, ``ftl serve``, ``ftl certs`` and ``ftl report``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ftl.crypto.keys import DEFAULT_KEY_SIZE

__all__ = ["main"]


def _pooled_features(X) -> np.ndarray:
    """Columns of every party for the handle's rows -- only possible in a simulation,
    where all parties live in this process; used for the centralised baseline."""
    parts = []
    for party in X.parties:
        rows = party.aligned_rows(X.alignment.id, X.positions)
        parts.append(party.local_features(rows))
    return np.hstack(parts)


def demo(args: argparse.Namespace) -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    import ftl

    t0 = time.perf_counter()
    bank, shop = ftl.datasets.load_default_credit()
    print(f"guest {bank}\nhost  {shop}")
    print("1/3 private set intersection (ECDH over ristretto255)...")
    X, y = ftl.align(bank, shop, verbose=True)
    if args.rows:
        X, y = X[: args.rows], y[: args.rows]
    print(f"    shared customers: {len(X)}  ({time.perf_counter() - t0:.1f} s)")
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=0
    )
    encryption = None if args.encryption == "none" else "paillier"
    print(
        f"2/3 federated logistic regression ({encryption or 'PLAINTEXT, debugging only'}, "
        f"{args.key_size}-bit keys, sigmoid={args.sigmoid!r}) on {len(X_train)} rows..."
    )
    fast = args.sigmoid == "taylor"
    if fast:
        print(
            "    (FATE's fast degree-1 approximation with mini-batch Adam; `--sigmoid auto` "
            "trains the library's near-lossless default, the per-row polynomial with "
            "L-BFGS, in about twice the time: 1.5x the time per pass, 8 passes against 6)"
        )
    t1 = time.perf_counter()
    clf = ftl.FederatedLogisticRegression(
        encryption=encryption,
        key_size=args.key_size,
        n_jobs=args.n_jobs,
        sigmoid=args.sigmoid,
        # the fast path keeps FATE's recipe: mini-batch Adam, decayed every epoch
        optimizer="adam" if fast else "lbfgs",
        learning_rate_schedule="epoch" if fast else "adaptive",
        random_state=0,
        verbose=True,
    ).fit(X_train, y_train)
    fit_seconds = time.perf_counter() - t1
    unit = "epochs" if fast else "L-BFGS iterations"
    print(f"    converged after {clf.n_iter_[0]} {unit} in {fit_seconds:.1f} s")
    print(f"3/3 secure prediction for {len(X_test)} held-out rows...")
    auc_fed = roc_auc_score(y_test, clf.decision_function(X_test))
    pooled = LogisticRegression(C=clf.C, max_iter=1000).fit(_pooled_features(X_train), y_train)
    auc_pooled = roc_auc_score(y_test, pooled.decision_function(_pooled_features(X_test)))
    transcript = clf.transcript_
    path = Path(args.transcript)
    transcript.to_jsonl(path)
    print("\n== report ==")
    print(f"intersection size           {len(X)}")
    print(f"test AUC, federated         {auc_fed:.4f}")
    gap = auc_fed - auc_pooled
    print(f"test AUC, sklearn on pooled {auc_pooled:.4f}")
    print(
        f"gap, federated - pooled     {gap:+.4f}  "
        f"({_gap_meaning(gap)}; the pooled model is what ftl must not need)"
    )
    print(
        f"bytes exchanged (fit+pred)  {transcript.total_bytes / 1e6:.1f} MB "
        f"in {len(transcript)} messages"
    )
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(transcript.messages_by_kind().items()))
    print(f"messages by value kind      {kinds}")
    print(
        "                            (a message is counted once per kind of value it "
        "carries, so these add up to more than the messages)"
    )
    print(f"full transcript             {path.resolve()}")
    print(f"                            read it with: ftl report {path}")
    print(f"total time                  {time.perf_counter() - t0:.1f} s")
    return 0


def _gap_meaning(gap: float) -> str:
    """What the sign of ``federated - pooled`` AUC says, in words."""
    if abs(gap) < 5e-5:
        return "as good as pooling the data"
    side = "below" if gap < 0 else "above"
    return f"federated {abs(gap):.4f} {side} pooling the data"


def report(args: argparse.Namespace) -> int:
    from ftl.reporting import report as render

    fmt = args.format
    if fmt is None:
        suffix = Path(args.output).suffix.lower() if args.output else ""
        fmt = "html" if suffix in (".html", ".htm") else "markdown"
    text = render(args.transcript, format=fmt)
    if args.output:
        out = Path(args.output)
        out.write_text(text, encoding="utf-8")
        print(f"{fmt} report written to {out}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def serve(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from ftl.data.party import Party
    from ftl.federation.config import load_config
    from ftl.federation.server import PartyServer

    try:
        config = load_config(args.config)
        party = Party.from_file(**config.party_settings())
    except ValueError as exc:  # a config or data error of the operator's: one line
        print(f"ftl serve: error: {exc}", file=sys.stderr)
        return 2
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.log_file is not None:
        handlers.append(logging.FileHandler(config.log_file, encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=handlers,
    )
    server = PartyServer(
        party,
        config.policy,
        **config.server_settings(),
        audit_log=config.audit_log,
        model_dir=config.model_dir,
    )
    listen = args.listen or config.listen
    grpc_server, port = server.start(listen, config.tls, max_workers=config.max_workers)
    host = listen.rpartition(":")[0]
    # The first stdout line says where we listen (scripts and tests read it).
    print(f"ftl serve: {party!r} listening on {host}:{port}", flush=True)
    print(
        f"peers: {', '.join(sorted(config.policy.peers))}; audit log: {config.audit_log}",
        flush=True,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    logging.getLogger("ftl.serve").info("stopping: finishing open calls (up to 5 s)")
    grpc_server.stop(grace=5).wait()
    from ftl.crypto.lifecycle import end_worker_processes

    end_worker_processes()  # the pool's and joblib's workers end with the server
    logging.getLogger("ftl.serve").info("stopped")
    return 0


def certs(args: argparse.Namespace) -> int:
    from ftl.federation.certs import make_certificates

    paths = make_certificates(
        args.out,
        args.parties,
        hosts=args.host or ("localhost", "127.0.0.1"),
        days=args.days,
        overwrite=args.overwrite,
    )
    for name, p in paths.items():
        print(f"{name}: certificate {p.cert}, key {p.key}")
    print(f"CA certificate (give it to every party): {next(iter(paths.values())).ca}")
    print("These are throwaway test certificates; use your organisation's PKI in production.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ftl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="two simulated organisations on the bundled credit data")
    p.add_argument("--encryption", choices=["paillier", "none"], default="paillier")
    p.add_argument("--key-size", type=int, default=DEFAULT_KEY_SIZE)
    p.add_argument("--n-jobs", type=int, default=-1)
    p.add_argument("--rows", type=int, default=None, help="use only the first N shared rows")
    p.add_argument(
        "--sigmoid",
        choices=["taylor", "auto", "poly"],
        default="taylor",
        help="sigmoid approximation (default: taylor, the fast one)",
    )
    p.add_argument("--transcript", default="ftl-demo-transcript.jsonl")
    p.set_defaults(func=demo)
    r = sub.add_parser(
        "report", help="privacy report of a recorded transcript (.jsonl) for an auditor"
    )
    r.add_argument("transcript", help="transcript written by Transcript.to_jsonl")
    r.add_argument(
        "--format",
        choices=["markdown", "html"],
        default=None,
        help="output format (default: html if --output ends in .html, else markdown)",
    )
    r.add_argument("--output", "-o", default=None, help="write to this file, not stdout")
    r.set_defaults(func=report)
    s = sub.add_parser("serve", help="serve this party's data to its peers (gRPC + mutual TLS)")
    s.add_argument("--config", required=True, help="TOML file (see ftl.federation.config)")
    s.add_argument("--listen", default=None, help="override [server] listen, e.g. 0.0.0.0:50051")
    s.set_defaults(func=serve)
    c = sub.add_parser(
        "certs",
        help="make a throwaway CA and party certificates to try ftl serve",
        description="Make a throwaway CA and one certificate per party. A party's "
        "certificate names it twice: by its common name (how a host knows a driver) and "
        "by the DNS name <party>.ftl, which a driver's TLS checks when it connects to the "
        "party, so that no other party's certificate can serve as it.",
    )
    c.add_argument(
        "parties",
        nargs="+",
        help="party names (each certificate's common name and <party>.ftl)",
    )
    c.add_argument("--out", default="certs", help="output directory (default: certs)")
    c.add_argument(
        "--host",
        action="append",
        default=None,
        help="extra host name or IP put into every certificate, for TLS clients other "
        "than ftl's (repeatable; default: localhost and 127.0.0.1); ftl's driver checks "
        "<party>.ftl instead, so names under .ftl and wildcards are refused",
    )
    c.add_argument("--days", type=int, default=30)
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=certs)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
