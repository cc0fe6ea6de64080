"""A second federated estimator written in this one module: the protocol registry's
definition of done (issue 15).

The module is shaped like an estimator package -- messages, a host role, a codec of
the host's shard and of the guest's attributes, the estimator, the protocol's
declaration -- and nothing outside it knows the toy: it registers itself in
:mod:`ftl.federation.protocols` (for this module's tests only, see the
``registered`` fixture), and then the party service serves its role, the policy
admits or refuses its family, persistence saves and loads it per party, the
report lists it and scikit-learn's estimator checks run on it.

The toy, a *host-score classifier*: each host standardises its own columns on the
training rows (mean and scale stay at the host: its shard) and sends, per row,
the mean of its standardised columns; the guest fits a logistic regression on its
own columns and one score column per host. Not private -- the host's per-row
scores cross in the clear, which its disclosure says -- and not for real data.
"""

from __future__ import annotations

import uuid
from numbers import Integral, Real

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import Interval
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

import ftl
from ftl.data.handles import VerticalData
from ftl.data.simulate import simulate_federation
from ftl.exceptions import PolicyError
from ftl.federation import Channel, FieldSpec, Message, Transcript, ValueKind, register
from ftl.federation.disclosure import Disclosure, Leakage, PublicPerSample
from ftl.federation.json_forms import decode_array, encode_array, names_from_json, names_to_json
from ftl.federation.policy import PeerRule, Policy
from ftl.federation.protocols import (
    EstimatorSpec,
    ProtocolSpec,
    ShardCodec,
    protocols,
    register_protocol,
    unregister_protocol,
)
from ftl.federation.server import PartyServer
from ftl.federation.service import operation, role
from tests.security._serving import make_certs, tls_for

FAMILY = "test_toy"
PREFIX = "test.toy."  # "test." message types are left out of the wire fuzzing

# ----------------------------------------------------------------------------- messages
ROWS = register(
    PREFIX + "rows",
    "Guest names aligned rows (the positions of an alignment) for the host to score; "
    "`model_id` names the host's fitted shard, empty to fit one on these rows.",
    alignment=FieldSpec("str", ValueKind.PUBLIC, max_len=64),
    positions=FieldSpec("array", ValueKind.PUBLIC, ndim=1, dtypes=("int64",), max_len=10**6),
    model_id=FieldSpec("str", ValueKind.PUBLIC, max_len=64),
)
SCORES = register(
    PREFIX + "scores",
    "Host's score of each requested row: the mean of its standardised columns.",
    model_id=FieldSpec("str", ValueKind.PUBLIC, max_len=64),
    scores=FieldSpec(
        "array", ValueKind.PUBLIC, ndim=1, dtypes=("float64",), per_sample=True, max_len=10**6
    ),
)
OPEN = register(PREFIX + "open", "Guest opens a session at a host.")


# ----------------------------------------------------------------------------- host role
SHARD_KIND = PREFIX + "host"


def _row_scores(features: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    if features.shape[1] == 0:  # a host without columns scores nothing
        return np.zeros(len(features))
    return ((features - mean) / scale).mean(axis=1)


@role(PREFIX + "host", opens=(OPEN.name,))
class ToyHost:
    """A host's side: fit its standardisation on aligned rows, score rows with it."""

    def __init__(self, party, request: Message):
        self.party = party

    def _features(self, request: Message) -> np.ndarray:
        rows = self.party.aligned_rows(request["alignment"], request["positions"])
        return self.party.local_features(rows)

    @operation(accepts=(ROWS.name,))
    def fit(self, request: Message) -> Message:
        features = self._features(request)
        scale = features.std(axis=0)
        shard = {
            "kind": SHARD_KIND,
            "mean": features.mean(axis=0),
            "scale": np.where(scale > 0, scale, 1.0),
        }
        model_id = uuid.uuid4().hex
        self.party.store_model(model_id, shard)
        scores = _row_scores(features, shard["mean"], shard["scale"])
        return Message(SCORES.name, {"model_id": model_id, "scores": scores})

    @operation(accepts=(ROWS.name,))
    def score(self, request: Message) -> Message:
        shard = self.party.load_model(request["model_id"])
        scores = _row_scores(self._features(request), shard["mean"], shard["scale"])
        return Message(SCORES.name, {"model_id": request["model_id"], "scores": scores})


def _host_scores(handle: VerticalData, channel: Channel, model_ids: list[str] | None) -> tuple:
    """One score column per host (fitting each host's shard when ``model_ids`` is None)."""
    alignment = handle.alignment
    columns, ids = [], []
    for k, host in enumerate(alignment.hosts):
        endpoint, name = host.endpoint, PREFIX + "host"
        channel.call(endpoint, f"{name}.open", Message(OPEN.name, {}))
        request = {
            "alignment": alignment.id,
            "positions": np.asarray(handle.positions, dtype=np.int64),
            "model_id": "" if model_ids is None else model_ids[k],
        }
        op = "fit" if model_ids is None else "score"
        reply = channel.call(endpoint, f"{name}.{op}", Message(ROWS.name, request))
        channel.call(endpoint, f"{name}.close", Message("ack", {}))
        columns.append(reply["scores"])
        ids.append(reply["model_id"])
    return np.column_stack(columns) if columns else np.empty((len(handle), 0)), ids


# ----------------------------------------------------------------------------- estimator
class ToyHostScoreClassifier(ClassifierMixin, BaseEstimator):
    """Logistic regression on the guest's columns and one score per host (a toy).

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength of the guest's logistic regression.
    simulated_hosts : int, default=1
        Hosts of the simulated federation a plain array is split into.
    """

    _parameter_constraints: dict = {
        "C": [Interval(Real, 0, None, closed="neither")],
        "simulated_hosts": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, C=1.0, simulated_hosts=1):
        self.C = C
        self.simulated_hosts = simulated_hosts

    def _handle(self, X, y=None, *, fitting: bool):
        if isinstance(X, VerticalData):
            if fitting:
                self.party_names_ = [p.name for p in X.parties]
                self.n_features_in_ = X.shape[1]
                self.feature_names_in_ = np.asarray(X.feature_names, dtype=object)
                self._simulated = None
                return X, column_or_1d(np.asarray(y), warn=True)
            if [p.name for p in X.parties] != self.party_names_:
                raise ValueError("X is aligned over other parties than the model")
            return X
        if fitting:
            X, y = validate_data(self, X, y, dtype=np.float64)
            handle = simulate_federation(X, y, self.simulated_hosts)
            self.party_names_ = None
            self._simulated = handle.alignment.hosts
            return handle, y
        if self._simulated is None:
            raise ValueError("fitted on an aligned handle: predict on one too")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        handle = simulate_federation(X, None, self.simulated_hosts)
        for new, old in zip(handle.alignment.hosts, self._simulated, strict=True):
            for model_id in old.model_ids():
                new.store_model(model_id, old.load_model(model_id))
        return handle

    def _design(self, handle: VerticalData, model_ids: list[str] | None) -> np.ndarray:
        channel = Channel(handle.alignment.guest.name, self.transcript_)
        scores, ids = _host_scores(handle, channel, model_ids)
        self._fitted_ids = ids
        guest = handle.alignment.guest
        own = guest.local_features(guest.aligned_rows(handle.alignment.id, handle.positions))
        return np.hstack([own, scores])

    def fit(self, X, y):
        """Fit on a handle from :func:`ftl.align` or a plain array (simulated)."""
        self._validate_params()
        handle, y = self._handle(X, y, fitting=True)
        check_classification_targets(y)
        self.transcript_ = Transcript()
        design = self._design(handle, None)
        model = LogisticRegression(C=self.C).fit(design, y)
        self.classes_ = model.classes_
        self.coef_ = model.coef_
        self.intercept_ = model.intercept_
        self.model_ids_ = self._fitted_ids
        return self

    def decision_function(self, X):
        check_is_fitted(self)
        design = self._design(self._handle(X, fitting=False), self.model_ids_)
        scores = design @ self.coef_.T + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X):
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = expit(scores)
            return np.column_stack([1 - p, p])
        return softmax(scores, axis=1)

    def predict(self, X):
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]


# ----------------------------------------------------------------------------- codecs
def _attributes_to_json(clf: ToyHostScoreClassifier) -> dict:
    return {
        "classes_": encode_array(clf.classes_),
        "coef_": encode_array(clf.coef_),
        "intercept_": encode_array(clf.intercept_),
        "model_ids_": list(clf.model_ids_),
        **names_to_json(clf),
    }


def _attributes_from_json(clf: ToyHostScoreClassifier, attrs: dict, path) -> None:
    clf.classes_ = decode_array(attrs["classes_"], "classes_")
    clf.coef_ = decode_array(attrs["coef_"], "coef_")
    clf.intercept_ = decode_array(attrs["intercept_"], "intercept_")
    clf.model_ids_ = [str(m) for m in attrs["model_ids_"]]
    for name, value in names_from_json(attrs, path).items():
        setattr(clf, name, value)
    if len(clf.model_ids_) != len(clf.party_names_) - 1:
        raise ValueError(f"{path} is corrupted: one model id per host")
    clf.transcript_ = Transcript()
    clf._simulated = None


def _shard_to_json(shard: dict) -> dict:
    return {"mean": encode_array(shard["mean"]), "scale": encode_array(shard["scale"])}


def _shard_from_json(fields: dict, party) -> dict:
    mean, scale = decode_array(fields["mean"], "mean"), decode_array(fields["scale"], "scale")
    if mean.shape != (party.n_features,) or scale.shape != mean.shape:
        raise ValueError(f"the shard does not fit a party with {party.n_features} features")
    return {"kind": SHARD_KIND, "mean": mean, "scale": scale}


# ----------------------------------------------------------------------------- declaration
DISCLOSURE = Disclosure(
    owner_types=frozenset(),
    public_per_sample=PublicPerSample(
        label="toy host scores",
        meaning="each row's mean standardised host feature, sent in the clear by design",
        check_note="toy host scores are public by the toy's design",
    ),
    leakages=(
        Leakage(
            "training",
            "the guest learns every host's per-row score (toy protocol)",
            "tests/test_toy_protocol.py",
            lambda findings: SCORES.name in findings.type_set,
        ),
    ),
)

SPEC = ProtocolSpec(
    family=FAMILY,
    title="toy host-score classifier",
    message_prefix=PREFIX,
    roles=(ToyHost,),
    estimators=(
        EstimatorSpec(
            ToyHostScoreClassifier,
            driver_role="guest",
            to_json=_attributes_to_json,
            from_json=_attributes_from_json,
            shard_ids=lambda clf: list(clf.model_ids_),
            check_instances=lambda: [ToyHostScoreClassifier()],
        ),
    ),
    shards=(ShardCodec(SHARD_KIND, "host", _shard_to_json, _shard_from_json),),
    report=DISCLOSURE,
    docs="tests/test_toy_protocol.py",
)


@pytest.fixture(autouse=True, scope="module")
def registered():
    """The toy is registered for this module's tests only."""
    register_protocol(SPEC)
    yield SPEC
    unregister_protocol(FAMILY)


# ----------------------------------------------------------------------------- tests
def _parties(n=300):
    """A labelled bank and a shop that share every customer, stored in other orders."""
    rng = np.random.default_rng(0)
    ids = np.arange(n)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + X[:, 2] + X[:, 3] > 0).astype(int)  # the host score carries c + d
    bank = ftl.Party("bank", X[:, :2], ids=ids, labels=y, feature_names=["a", "b"])
    order = rng.permutation(n)
    shop = ftl.Party("shop", X[order, 2:], ids=ids[order], feature_names=["c", "d"])
    return bank, shop


def test_the_toy_is_registered_for_this_module_only():
    assert FAMILY in [spec.family for spec in protocols()]
    assert SPEC.role_names == {PREFIX + "host"}


def test_the_toy_fits_over_an_alignment_and_persists_per_party(tmp_path):
    bank, shop = _parties()
    X, y = ftl.align(bank, shop)
    clf = ToyHostScoreClassifier().fit(X, y)
    assert clf.score(X, y) > 0.9
    expected = clf.predict_proba(X)
    # the driver's file and the host's shard, each party its own
    ftl.save_model(clf, tmp_path / "bank.json")
    shop.export_model(clf.model_ids_[0], tmp_path / "shop.json")
    bank2, shop2 = _parties()
    assert shop2.import_model(tmp_path / "shop.json") == clf.model_ids_[0]
    clf2 = ftl.load_model(tmp_path / "bank.json", estimator=ToyHostScoreClassifier)
    X2, _ = ftl.align(bank2, shop2)
    order = np.argsort(X.ids), np.argsort(X2.ids)
    np.testing.assert_array_equal(clf2.predict_proba(X2)[order[1]], expected[order[0]])


def test_the_toy_appears_in_the_report():
    bank, shop = _parties()
    X, y = ftl.align(bank, shop)
    clf = ToyHostScoreClassifier().fit(X, y)
    assert {r.type for r in clf.transcript_.records} >= {ROWS.name, SCORES.name}
    text = ftl.report(clf)
    assert SCORES.name in text
    assert "the guest learns every host's per-row score (toy protocol)" in text


def test_a_host_policy_that_does_not_list_the_toy_refuses_it():
    allowed = PeerRule("bank")  # by default every registered family
    strict = PeerRule("bank", protocols=("psi", "lr"))
    policy = Policy(peers={"bank": strict})
    policy.check_operation(allowed, PREFIX + "host.open")
    with pytest.raises(PolicyError, match=rf"may not run '{PREFIX}host'"):
        policy.check_operation(strict, PREFIX + "host.open")
    with pytest.raises(ValueError, match="unknown protocol"):
        PeerRule("bank", protocols=("toy_unknown",))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("toy") / "certs")


@pytest.mark.parametrize("families", [("psi",), ("psi", FAMILY)], ids=["unlisted", "listed"])
def test_a_served_host_runs_the_toy_only_if_its_policy_lists_it(certs, families):
    bank, shop = _parties()
    rule = PeerRule("bank", protocols=families)
    policy = Policy(peers={"bank": rule}, allow_plaintext=True, min_intersection=0)
    grpc_server, port = PartyServer(shop, policy).start("127.0.0.1:0", tls_for(certs, "shop"))
    try:
        remote = ftl.RemoteParty("shop", f"localhost:{port}", tls=tls_for(certs, "bank"))
        X, y = ftl.align(bank, remote)
        if FAMILY in families:
            assert ToyHostScoreClassifier().fit(X, y).score(X, y) > 0.9
        else:
            with pytest.raises(PolicyError, match=rf"may not run '{PREFIX}host'"):
                ToyHostScoreClassifier().fit(X, y)
    finally:
        grpc_server.stop(0)


@parametrize_with_checks([ToyHostScoreClassifier()])
def test_the_toy_passes_the_estimator_checks(estimator, check):
    check(estimator)
