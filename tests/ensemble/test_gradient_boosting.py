"""Federated gradient boosting (SecureBoost): the protocol and the estimators.

* Plaintext mode grows scikit-learn's ``HistGradientBoosting*`` trees on the pooled
  columns (guest columns first, then each host's), node by node: split feature,
  the real threshold (a host's read from its shard, which only this test may do),
  children, leaf values; predictions agree to 1e-6. Early stopping too, with the
  validation rows scored through the prediction walk.
* Encrypted mode (Paillier, small insecure keys; one run at 2048 bits) grows the
  same trees, with one and two hosts.
* Persistence per party, the host's policy minimum leaf size through a served host,
  the host's own checks of every node, mask and walk, and the transcript: only
  ciphertexts, aggregates and the row partitions SecureBoost discloses cross.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import roc_auc_score
from sklearn.utils.estimator_checks import check_dataframe_column_names_consistency
from threadpoolctl import threadpool_limits

import ftl
from ftl.crypto.histograms import encrypt_gh, gh_layout
from ftl.crypto.plain import PlainOwnKey
from ftl.ensemble import FederatedGradientBoostingClassifier, FederatedGradientBoostingRegressor
from ftl.ensemble import _messages as msg
from ftl.ensemble import host as sbt_host
from ftl.federation import Channel, Message
from ftl.federation.budget import BudgetLimits, HostGuard
from ftl.federation.policy import PeerRule, Policy
from ftl.federation.server import PartyServer
from tests.conftest import SMALL_KEY, aligned_by_id, pooled
from tests.security._serving import make_certs, tls_for

PLAIN = dict(encryption=None, random_state=0)
#: A fast encrypted setting: few bins keep the histograms a few ciphertexts each.
SMALL_TREES = dict(max_iter=3, max_depth=3, max_bins=16, random_state=0)


def _sklearn(estimator, X, y, **params):
    """scikit-learn's model on the pooled columns (one OpenMP thread: the trees do
    not depend on it, and spinning threads slow a busy machine down)."""
    cls = (
        HistGradientBoostingRegressor
        if isinstance(estimator, FederatedGradientBoostingRegressor)
        else HistGradientBoostingClassifier
    )
    with threadpool_limits(limits=1):
        return cls(**params).fit(pooled(X), y)


def _host_splits(clf, X) -> dict:
    """Split id -> (pooled feature, real threshold), read from every host's shard."""
    splits, offset = {}, X.alignment.n_features[0]
    for host, width in zip(X.alignment.hosts, X.alignment.n_features[1:], strict=True):
        table = host.load_model(clf.model_id_)["splits"]
        for split_id, feature, threshold in zip(
            table.ids, table.feature, table.threshold, strict=True
        ):
            splits[split_id] = (offset + int(feature), float(threshold))
        offset += width
    return splits


def split_columns(clf, X, tree) -> np.ndarray:
    """Each split node's column within its party: the guest's tree holds it for the
    guest's splits, a host's pseudonym for the host's; the host's real column is
    read from its shard (which only a test may do). -1 at leaves."""
    columns = {}
    for host in X.alignment.hosts:
        table = host.load_model(clf.model_id_)["splits"]
        columns.update(zip(table.ids, table.feature.tolist(), strict=True))
    return np.array(
        [
            -1 if leaf else (feature if block == 0 else columns[split_id])
            for leaf, block, feature, split_id in zip(
                tree.is_leaf, tree.block, tree.feature, tree.split_id, strict=True
            )
        ],
        dtype=np.int64,
    )


def assert_same_trees(clf, sk, X) -> int:
    """Every node of the federated trees equals scikit-learn's; the nodes compared."""
    splits = _host_splits(clf, X)
    compared = 0
    assert len(clf.trees_) == len(sk._predictors)
    for ours_iteration, sk_iteration in zip(clf.trees_, sk._predictors, strict=True):
        for ours, predictor in zip(ours_iteration, sk_iteration, strict=True):
            nodes = predictor.nodes
            assert ours.n_nodes == nodes.shape[0]
            np.testing.assert_array_equal(ours.is_leaf, nodes["is_leaf"].astype(bool))
            np.testing.assert_array_equal(ours.count, nodes["count"])
            np.testing.assert_allclose(ours.value, nodes["value"], rtol=1e-6, atol=1e-12)
            for i in np.flatnonzero(~ours.is_leaf):
                if ours.block[i] == 0:  # the guest's own split
                    feature, threshold = int(ours.feature[i]), float(ours.num_threshold[i])
                else:  # a host's: the guest holds its opaque id only
                    assert np.isnan(ours.num_threshold[i])
                    feature, threshold = splits[ours.split_id[i]]
                assert (feature, threshold) == (nodes["feature_idx"][i], nodes["num_threshold"][i])
                assert (ours.left[i], ours.right[i]) == (nodes["left"][i], nodes["right"][i])
            compared += ours.n_nodes
    return compared


def _raw(model, X):
    if isinstance(model, (HistGradientBoostingRegressor, FederatedGradientBoostingRegressor)):
        return model.predict(X)
    return model.decision_function(X)


# --------------------------------------------------------------------------- lossless
def _motor(n_hosts):
    X, y = ftl.align(*ftl.datasets.load_motor(n_hosts=n_hosts))
    order = np.argsort(X.ids)
    return X[order], y[order]


CASES = {
    "breast": (FederatedGradientBoostingClassifier, lambda: "breast", {}),
    "vehicle-multiclass": (
        FederatedGradientBoostingClassifier,
        lambda: "vehicle",
        {"max_depth": 4, "max_bins": 32},
    ),
    # FATE's SecureBoost defaults: depth 3, 32 bins
    "credit-2000-rows": (
        FederatedGradientBoostingClassifier,
        lambda: "credit",
        {"max_depth": 3, "max_bins": 32},
    ),
    "motor-regression": (FederatedGradientBoostingRegressor, lambda: _motor(1), {}),
    "motor-two-hosts": (
        FederatedGradientBoostingRegressor,
        lambda: _motor(2),
        {"min_samples_leaf": 5, "l2_regularization": 1.0},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_plaintext_grows_the_trees_of_sklearn_on_the_pooled_columns(request, case):
    cls, data, params = CASES[case]
    source = data()
    X, y = request.getfixturevalue(source) if isinstance(source, str) else source
    if case.startswith("credit"):
        X, y = X[:2000], y[:2000]
    clf = cls(max_iter=10, **PLAIN, **params).fit(X, y)
    sk = _sklearn(clf, X, y, max_iter=10, early_stopping=False, random_state=0, **params)
    assert assert_same_trees(clf, sk, X) > 100
    np.testing.assert_allclose(_raw(clf, X), _raw(sk, pooled(X)), rtol=1e-6, atol=1e-6)
    if len(X.alignment.hosts) > 1:  # every host split somewhere
        assert all(clf.party_split_counts_[host.name] > 0 for host in X.alignment.hosts)


@pytest.mark.parametrize("scoring", ["loss", "roc_auc"])
def test_early_stopping_scores_the_validation_rows_through_the_walk(breast, scoring):
    X, y = breast
    params = dict(early_stopping=True, scoring=scoring, n_iter_no_change=3, tol=1e-3, max_iter=60)
    clf = FederatedGradientBoostingClassifier(**PLAIN, **params).fit(X, y)
    sk = _sklearn(clf, X, y, random_state=0, **params)
    assert clf.do_early_stopping_ and clf.n_iter_ == sk.n_iter_ < 60
    np.testing.assert_allclose(clf.validation_score_, sk.validation_score_, rtol=1e-9)
    np.testing.assert_allclose(clf.train_score_, sk.train_score_, rtol=1e-9)
    assert_same_trees(clf, sk, X)
    # the host answered the walk of the validation rows after every iteration
    walks = [r for r in clf.transcript_.records if r.type == msg.DECIDE.name]
    assert len(walks) >= clf.n_iter_


def test_early_stopping_auto_follows_sklearns_rule(breast):
    X, y = breast
    clf = FederatedGradientBoostingClassifier(max_iter=2, **PLAIN).fit(X, y)
    assert not clf.do_early_stopping_ and clf.n_iter_ == 2
    assert clf.train_score_.shape == clf.validation_score_.shape == (0,)


def test_guest_only_iterations_leave_the_hosts_out_of_the_first_trees(breast):
    X, y = breast
    clf = FederatedGradientBoostingClassifier(max_iter=4, guest_only_iterations=2, **PLAIN)
    clf.fit(X, y)
    blocks = [set(t.block[~t.is_leaf]) for it in clf.trees_ for t in it]
    assert blocks[0] == blocks[1] == {0} and 1 in blocks[2] | blocks[3]
    sent = [r for r in clf.transcript_.records if r.type == msg.GRADIENTS.name]
    assert len(sent) == 2  # the hosts got the gradients of the last two trees only


# --------------------------------------------------------------------------- encrypted
def test_encrypted_grows_the_plaintext_trees(breast):
    X, y = breast
    enc = FederatedGradientBoostingClassifier(**SMALL_KEY, **SMALL_TREES).fit(X, y)
    plain = FederatedGradientBoostingClassifier(encryption=None, **SMALL_TREES).fit(X, y)
    for ours, theirs in zip(enc.trees_, plain.trees_, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a.block, b.block)
            # each fit names the host's features by a pseudonym of its own
            np.testing.assert_array_equal(split_columns(enc, X, a), split_columns(plain, X, b))
            np.testing.assert_array_equal(a.bin_threshold, b.bin_threshold)
            np.testing.assert_allclose(a.value, b.value, rtol=1e-9, atol=1e-12)
    scores = enc.decision_function(X)
    np.testing.assert_allclose(scores, plain.decision_function(X), atol=1e-9)
    assert abs(roc_auc_score(y, scores) - roc_auc_score(y, plain.decision_function(X))) <= 1e-4


def test_encrypted_regression_with_two_hosts():
    X, y = _motor(2)
    params = dict(max_iter=2, max_depth=2, max_bins=8, min_samples_leaf=5)
    enc = FederatedGradientBoostingRegressor(**SMALL_KEY, **params).fit(X, y)
    plain = FederatedGradientBoostingRegressor(encryption=None, **params).fit(X, y)
    np.testing.assert_allclose(enc.predict(X), plain.predict(X), atol=1e-9)
    assert sum(enc.party_split_counts_.values()) == sum(plain.party_split_counts_.values())


def test_encrypted_at_the_default_key_size(breast):
    # a few seconds: 200 rows, two trees of depth 3 on 16 bins
    X, y = breast
    X, y = X[:200], y[:200]
    params = dict(max_iter=2, max_depth=3, max_bins=16, min_samples_leaf=10)
    clf = FederatedGradientBoostingClassifier(**params).fit(X, y)
    plain = FederatedGradientBoostingClassifier(encryption=None, **params).fit(X, y)
    np.testing.assert_allclose(clf.decision_function(X), plain.decision_function(X), atol=1e-9)
    widths = {f.width for r in clf.transcript_.records for f in r.fields if f.width}
    assert widths == {512}  # a 2048-bit modulus: ciphertexts below n**2, 512 bytes


# --------------------------------------------------------------------------- transcript
def test_only_ciphertexts_aggregates_and_partitions_cross(breast):
    X, y = breast
    clf = FederatedGradientBoostingClassifier(**SMALL_KEY, **SMALL_TREES)
    clf.fit(X, y).predict(X)
    records = clf.transcript_.records
    kinds = {(r.type, f.name): f for r in records for f in r.fields}
    assert not [k for k, f in kinds.items() if f.kind == "plaintext"]
    per_sample = {k: f.kind for k, f in kinds.items() if f.per_sample}
    # the gradients cross per row only as ciphertexts under the guest's key
    assert per_sample.pop(("sbt.gradients", "values")) == "ciphertext"
    # the rest is SecureBoost's instance-space partition, public by design
    assert set(per_sample) <= {
        ("sbt.grow", "left"),
        ("sbt.split_grow", "left"),
        ("sbt.partition", "left"),
        ("sbt.split_histogram", "left"),
        ("sbt.decide", "pairs"),
        ("sbt.decisions", "left"),
    }
    assert set(per_sample.values()) == {"public"}
    histogram = kinds[("sbt.histogram", "sums")]
    assert histogram.kind == "ciphertext" and not histogram.per_sample
    # a histogram packs several bins into one ciphertext
    sums = [r for r in records if r.type == msg.HISTOGRAM.name]
    cells = [next(f for f in r.fields if f.name == "counts").shape for r in sums]
    assert all(
        next(f for f in r.fields if f.name == "sums").shape[0] < n * b
        for r, (n, b) in zip(sums, cells, strict=True)
    )
    text = ftl.report(clf)
    assert "| Per-sample fields are ciphertexts or masked | PASS |" in text
    assert "sbt.histogram.sums" in text and "by design" in text


def test_plaintext_mode_says_so_in_the_transcript(breast):
    X, y = breast
    clf = FederatedGradientBoostingClassifier(max_iter=1, **PLAIN).fit(X, y)
    kinds = {f.kind for r in clf.transcript_.records if r.type == "sbt.gradients" for f in r.fields}
    assert "plaintext" in kinds
    assert "WARNING: plaintext values crossed" in ftl.report(clf)


# --------------------------------------------------------------------------- importance
def test_each_party_sees_the_split_counts_of_its_own_features(breast):
    X, y = breast
    clf = FederatedGradientBoostingClassifier(max_iter=5, **PLAIN).fit(X, y)
    guest, host = X.parties
    table = host.load_model(clf.model_id_)["splits"]
    host_counts = table.counts(host.n_features)
    assert clf.split_counts_.shape == (guest.n_features,)
    assert clf.split_counts_.sum() == clf.party_split_counts_[guest.name]
    assert host_counts.sum() == clf.party_split_counts_[host.name] > 0
    assert (clf.split_gains_[clf.split_counts_ > 0] > 0).all()


# --------------------------------------------------------------------------- persistence
@pytest.mark.parametrize(
    "params", [PLAIN, dict(**SMALL_KEY, random_state=0)], ids=["plain", "paillier-512"]
)
def test_each_party_saves_and_loads_its_own_part(tmp_path, params):
    guest, host = ftl.datasets.load_breast_cancer()
    X, y = aligned_by_id(guest, host)
    clf = FederatedGradientBoostingClassifier(max_iter=3, max_depth=3, max_bins=16, **params)
    clf.fit(X, y)
    expected = clf.predict_proba(X)
    ftl.save_model(clf, tmp_path / "guest.json")
    host.export_model(clf.model_id_, tmp_path / "host.json")
    # the host's thresholds are in its own file only: the guest's has NaN there
    host_nodes = [(t.block > 0) for it in clf.trees_ for t in it]
    assert sum(m.sum() for m in host_nodes) > 0
    assert '"nan"' in (tmp_path / "guest.json").read_text()

    guest2, host2 = ftl.datasets.load_breast_cancer()
    assert host2.import_model(tmp_path / "host.json") == clf.model_id_
    clf2 = ftl.load_model(tmp_path / "guest.json")
    X2, _ = aligned_by_id(guest2, host2)
    np.testing.assert_array_equal(clf2.predict_proba(X2), expected)
    assert clf2.n_iter_ == clf.n_iter_ and clf2.party_split_counts_ == clf.party_split_counts_
    for ours, theirs in zip(clf2.trees_, clf.trees_, strict=True):
        np.testing.assert_array_equal(ours[0].split_id, theirs[0].split_id)
        np.testing.assert_array_equal(ours[0].num_threshold, theirs[0].num_threshold)

    # a shard of another party's width is refused
    other = ftl.Party("lab", np.zeros((3, 2)), ids=[1, 2, 3])
    with pytest.raises(ValueError, match="columns"):
        other.import_model(tmp_path / "host.json")


def test_a_simulated_federation_cannot_be_saved(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)), rng.integers(0, 2, 60)
    clf = FederatedGradientBoostingClassifier(max_iter=2, **PLAIN).fit(X, y)
    with pytest.raises(ValueError, match="simulated federation"):
        ftl.save_model(clf, tmp_path / "guest.json")


# --------------------------------------------------------------------------- policy
@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("sbt") / "certs")


def _bank_and_shop(n=300):
    """A labelled bank and a shop (served) that share every customer."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] + X[:, 3] - X[:, 4] > 0).astype(int)
    bank = ftl.Party("bank", X[:, :2], ids=np.arange(n), labels=y)
    shop = ftl.Party("shop", X[:, 2:], ids=np.arange(n))
    return bank, shop


@contextmanager
def _served_shop(certs, **settings):
    """The bank and the shop served (gRPC + mTLS) under a policy with the protocol
    ``settings``, aligned: ``(X, y)``."""
    bank, shop = _bank_and_shop()
    policy = Policy(
        peers={"bank": PeerRule("bank")},
        allow_plaintext=True,
        min_intersection=0,
        settings=settings,
    )
    grpc_server, port = PartyServer(shop, policy).start("127.0.0.1:0", tls_for(certs, "shop"))
    try:
        remote = ftl.RemoteParty("shop", f"localhost:{port}", tls=tls_for(certs, "bank"))
        yield ftl.align(bank, remote)
    finally:
        grpc_server.stop(0)


def test_a_served_host_refuses_leaves_below_its_policy_minimum(certs):
    with _served_shop(certs, sbt_min_samples_leaf=40) as (X, y):
        with pytest.raises(ftl.PolicyError, match="sbt_min_samples_leaf"):
            FederatedGradientBoostingClassifier(max_iter=2, **PLAIN).fit(X, y)
        clf = FederatedGradientBoostingClassifier(max_iter=2, min_samples_leaf=40, **PLAIN)
        assert clf.fit(X, y).score(X, y) > 0.7
        assert clf.party_split_counts_["shop"] > 0
        assert min(t.count[t.is_leaf].min() for it in clf.trees_ for t in it) >= 40


def test_a_served_host_refuses_more_trees_than_its_policy_allows(certs):
    """``sbt_max_trees`` bounds the trees a fit declares at its open (iterations
    times classes); the host's role then refuses any tree beyond the declared number
    (``tests/security/test_secureboost_attacks.py``)."""
    with _served_shop(certs, sbt_max_trees=3) as (X, y):
        with pytest.raises(ftl.PolicyError, match="sbt_max_trees"):
            FederatedGradientBoostingClassifier(max_iter=4, max_depth=2, **PLAIN).fit(X, y)
        clf = FederatedGradientBoostingClassifier(max_iter=3, max_depth=2, **PLAIN).fit(X, y)
        assert clf.n_iter_ == 3


# --------------------------------------------------------------------------- host checks
class _Session:
    """A guest that talks to a local host's roles by hand (a deviating guest)."""

    def __init__(self, n=300, **params):
        self.bank, self.shop = _bank_and_shop(n)
        X, self.y = ftl.align(self.bank, self.shop)
        self.X = X
        self.channel = Channel("bank")
        self.params = {
            "max_bins": 16,
            "min_samples_leaf": 20,
            "max_leaf_nodes": 31,
            "max_depth": None,
            "seed": 0,
            "encryption": None,
            "key_size": 0,
            "insecure_for_tests": False,
            "n_jobs": None,
            **params,
        }

    def call(self, op, type_, **fields):
        return self.channel.call(self.shop.endpoint, f"sbt.host.{op}", Message(type_, fields))

    def open(self, validation=()):
        return self.call(
            "open",
            msg.OPEN.name,
            params=self.params,
            public_key={"scheme": "plain", "n": 0, "hs": 0, "key_id": "plaintext"},
            alignment=self.X.alignment.id,
            positions=np.arange(len(self.X), dtype=np.int64),
            validation=np.asarray(validation, dtype=np.int64),
        )

    def gradients(self, g=None):
        n = len(self.X)
        g = np.linspace(-1, 1, n) if g is None else g
        layout = gh_layout(4096, n, 1.0, 0.25)
        values = encrypt_gh(PlainOwnKey(), g, np.full(n, 0.25), layout)
        return self.call(
            "gradients", msg.GRADIENTS.name, values=values, layout=msg.layout_to_json(layout)
        )

    def grow(self, node, partitions=(), left=()):
        return self.call(
            "grow",
            msg.GROW.name,
            partitions=np.asarray(partitions, dtype=np.int64).reshape(-1, 3),
            left=np.asarray(left, dtype=bool),
            node=node,
        )


def test_the_host_builds_histograms_only_for_nodes_it_knows():
    s = _Session()
    s.open()
    s.gradients()
    with pytest.raises(ValueError, match="root"):  # a tree starts at the training rows
        s.grow(5, partitions=[(0, 1, 2)], left=np.ones(300, dtype=bool))
    root = s.grow(0)
    assert root["counts"].sum(axis=1).tolist() == [300, 300, 300]
    with pytest.raises(ValueError, match="already built"):
        s.grow(0)
    with pytest.raises(ValueError, match="unknown"):
        s.grow(7)
    left = np.zeros(300, dtype=bool)
    left[:10] = True  # a child of 10 rows: below the run's minimum of 20
    with pytest.raises(ValueError, match="minimum leaf size"):
        s.grow(1, partitions=[(0, 1, 2)], left=left)
    with pytest.raises(ValueError, match="too short"):
        s.grow(1, partitions=[(0, 1, 2)], left=left[:100])
    left[:150] = True
    assert s.grow(1, partitions=[(0, 1, 2)], left=left)["counts"].sum() == 150 * 3
    with pytest.raises(ValueError, match="already split"):
        s.grow(-1, partitions=[(0, 3, 4)], left=left)


def test_the_host_splits_at_its_own_minimum_and_keeps_the_threshold():
    s = _Session(min_samples_leaf=50)
    opened = s.open()
    s.gradients()
    s.grow(0)
    last = int(opened["n_bins_non_missing"][0]) - 1
    with pytest.raises(ValueError, match="bin threshold"):
        s.call("split", msg.SPLIT.name, node=0, feature=0, bin_threshold=last)
    with pytest.raises(ValueError, match="minimum leaf size"):  # one bin's rows only
        s.call("split", msg.SPLIT.name, node=0, feature=0, bin_threshold=0)
    reply = s.call("split", msg.SPLIT.name, node=0, feature=0, bin_threshold=7)
    assert reply["left"].shape == (300,) and len(reply["split_id"]) == 16
    # the host's own split needs no mask in the partition
    assert s.grow(1, partitions=[(0, 1, 2)])["node"] == 1


def test_the_host_caps_trees_and_bins():
    s = _Session(max_bins=64)
    s.shop.guard = HostGuard("bank", BudgetLimits(max_n_bins=32, max_epochs=2, min_fit_rows=10))
    with pytest.raises(ftl.PolicyError, match="max_n_bins"):
        s.open()
    s.params["max_bins"] = 32
    s.open()
    s.gradients()
    s.gradients()
    with pytest.raises(ftl.PolicyError, match="max_epochs"):
        s.gradients()


def test_the_walk_answers_each_row_once_per_tree_and_depth():
    s = _Session()
    s.open(validation=np.arange(50))
    s.gradients()
    s.grow(0)
    split_id = s.call("split", msg.SPLIT.name, node=0, feature=1, bin_threshold=7)["split_id"]
    pairs = np.column_stack([np.arange(50), np.zeros(50)]).astype(np.int64)
    answer = s.call("decide", msg.DECIDE.name, split_ids=[split_id], pairs=pairs)
    assert answer["left"].shape == (50,)
    with pytest.raises(ValueError, match="twice"):
        s.call("decide", msg.DECIDE.name, split_ids=[split_id], pairs=pairs[:1])
    with pytest.raises(ValueError, match="unknown split"):
        s.call("decide", msg.DECIDE.name, split_ids=["f" * 16], pairs=pairs[:1])
    with pytest.raises(ValueError, match="out of range"):
        s.call("decide", msg.DECIDE.name, split_ids=[split_id], pairs=pairs[:1] + [50, 0])


# --------------------------------------------------------------------------- sklearn API
@pytest.mark.parametrize(
    "estimator",
    [
        FederatedGradientBoostingClassifier(max_iter=3, **PLAIN),
        FederatedGradientBoostingRegressor(max_iter=3, simulated_hosts=2, **PLAIN),
    ],
    ids=["classifier", "regressor-2hosts"],
)
def test_dataframe_column_names_consistency(estimator):
    check_dataframe_column_names_consistency(type(estimator).__name__, estimator)


def test_parameters_are_sklearns(breast):
    ours = FederatedGradientBoostingClassifier().get_params()
    theirs = HistGradientBoostingClassifier().get_params()
    shared = set(ours) & set(theirs)
    assert shared >= {"loss", "learning_rate", "max_iter", "max_leaf_nodes", "max_depth"}
    assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}
    assert FederatedGradientBoostingRegressor().loss == HistGradientBoostingRegressor().loss
    assert ours["encryption"] == "paillier" and ours["key_size"] == 2048


# --------------------------------------------------------------------------- layered trees
#: One host layer above two guest layers.
LAYERED = dict(tree_mode="layered", host_depth=1, guest_depth=2)


def test_layered_trees_split_on_the_hosts_above_host_depth_and_the_guest_below(breast):
    # SecureBoost+'s layered mode: no equality with scikit-learn is expected
    X, y = breast
    clf = FederatedGradientBoostingClassifier(
        max_iter=3, tree_mode="layered", host_depth=2, guest_depth=2, **PLAIN
    ).fit(X, y)
    nodes = [t for it in clf.trees_ for t in it]
    host_depths = np.concatenate([t.depth[~t.is_leaf & (t.block > 0)] for t in nodes])
    guest_depths = np.concatenate([t.depth[~t.is_leaf & (t.block == 0)] for t in nodes])
    assert host_depths.size and guest_depths.size
    assert host_depths.max() < 2 <= guest_depths.min()
    assert max(t.depth.max() for t in nodes) <= 4
    # the host's own record agrees: it split nothing below its layers
    table = X.alignment.hosts[0].load_model(clf.model_id_)["splits"]
    assert table.depth.size == host_depths.size and table.depth.max() < 2
    assert roc_auc_score(y, clf.decision_function(X)) > 0.95


def test_layered_trees_share_the_host_layers_among_several_hosts():
    X, y = _motor(2)
    reg = FederatedGradientBoostingRegressor(
        max_iter=2, min_samples_leaf=5, encryption=None, **LAYERED
    ).fit(X, y)
    for t in (t for it in reg.trees_ for t in it):
        assert set(t.block[~t.is_leaf & (t.depth < 1)]) <= {1, 2}
        assert set(t.block[~t.is_leaf & (t.depth >= 1)]) <= {0}


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(tree_mode="layered", host_depth=2), "needs host_depth and guest_depth"),
        (dict(tree_mode="layered", host_depth=2, guest_depth=1, max_depth=4), "max_depth"),
        (dict(tree_mode="mixing"), "tree_mode"),
        (dict(tree_mode="layered", host_depth=0, guest_depth=1), "host_depth"),
    ],
)
def test_layered_trees_need_both_depths(breast, params, match):
    X, y = breast
    with pytest.raises(ValueError, match=match):
        FederatedGradientBoostingClassifier(max_iter=1, **params, **PLAIN).fit(X, y)


def split_fields(node, children, asked, feature=0, bin_threshold=7) -> dict:
    """The fields of an ``sbt.split_grow`` with no partitions pending."""
    return dict(
        partitions=np.zeros((0, 3), dtype=np.int64),
        left=np.zeros(0, dtype=bool),
        node=node,
        feature=feature,
        bin_threshold=bin_threshold,
        children=np.asarray(children, dtype=np.int64),
        asked=asked,
    )


def _split_grow(s, node, children, asked, feature=0, bin_threshold=7):
    return s.call(
        "split_grow",
        msg.SPLIT_GROW.name,
        **split_fields(node, children, asked, feature, bin_threshold),
    )


def test_a_host_split_returns_the_asked_childs_histogram():
    s = _Session()
    s.open()
    s.gradients()
    s.grow(0)
    with pytest.raises(ValueError, match="no child"):
        _split_grow(s, 0, (1, 2), 5)
    with pytest.raises(ValueError, match="two children"):
        _split_grow(s, 0, (1,), 1)
    reply = _split_grow(s, 0, (1, 2), 2)
    assert reply.type == msg.SPLIT_HISTOGRAM.name
    n_right = int((~reply["left"]).sum())
    assert reply["node"] == 2 and (reply["counts"].sum(axis=1) == n_right).all()
    # the host knows the children: node 1 is built from its own partition, once
    assert s.grow(1)["counts"].sum(axis=1)[0] == 300 - n_right
    with pytest.raises(ValueError, match="already built"):
        s.grow(2)
    with pytest.raises(ValueError, match="already split"):
        _split_grow(s, 0, (3, 4), -1)
    # without a histogram asked for: the partition only
    assert _split_grow(s, 1, (3, 4), -1, feature=1).type == msg.PARTITION.name


def test_of_tied_splits_the_host_applies_its_first_column(monkeypatch):
    """The guest knows the host's features by pseudonym: of splits of the same gain
    it names them all, and the host applies the one on its first column (what
    scikit-learn takes on the pooled columns), records that column and says which."""
    order = np.array([2, 0, 1])  # pseudonym p is column order[p]
    monkeypatch.setattr(sbt_host, "secret_feature_order", lambda n: order)
    s = _Session()
    bins = s.open()["n_bins_non_missing"]
    s.gradients()
    s.grow(0)
    tied = split_fields(0, (1, 2), 1)
    with pytest.raises(ValueError, match="different features"):
        s.call("split_grow", msg.SPLIT_GROW_TIED.name, **tied, ties=np.array([[0, 6, 1]]))
    ties = np.array([[1, 5, 2], [2, 7, -1]])  # pseudonym 1 is column 0: it wins
    reply = s.call("split_grow", msg.SPLIT_GROW_TIED.name, **tied, ties=ties)
    assert reply.type == msg.TIED_SPLIT_HISTOGRAM.name
    assert (reply["choice"], reply["node"]) == (1, 2)  # the tie's own child asked for
    assert reply["counts"].shape[0] == bins.shape[0] == 3
    s.call("finish", msg.FINISH.name, model_id="tied")
    table = s.shop.load_model("tied")["splits"]
    assert table.feature.tolist() == [0]  # the column, never the pseudonym


def test_the_host_refuses_its_own_splits_below_host_depth():
    s = _Session(host_depth=1, max_depth=3)
    s.open()
    s.gradients()
    s.grow(0)
    left = np.zeros(300, dtype=bool)
    left[:150] = True
    s.grow(-1, partitions=[(0, 1, 2)], left=left)  # a guest split of the root
    with pytest.raises(ValueError, match="below the host layers"):
        s.call("split", msg.SPLIT.name, node=1, feature=0, bin_threshold=7)
    with pytest.raises(ValueError, match="below the host layers"):
        _split_grow(s, 1, (3, 4), -1)
    # nor does it build a histogram of a node below its layers
    with pytest.raises(ValueError, match="below the host layers"):
        s.grow(1)


def test_guest_only_iterations_of_layered_trees_split_on_the_guest_at_every_depth(breast):
    X, y = breast
    clf = FederatedGradientBoostingClassifier(
        max_iter=2, guest_only_iterations=1, **LAYERED, **PLAIN
    ).fit(X, y)
    first, second = clf.trees_[0][0], clf.trees_[1][0]
    assert set(first.block[~first.is_leaf]) == {0} and first.depth[~first.is_leaf].min() == 0
    assert second.block[0] == 1  # the next trees are layered: a host splits the root
