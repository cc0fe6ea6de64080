"""Attacks on per-party preprocessing: the guest fits transformers at a host to read it.

The guest runs the driver, so it chooses every transformer a host fits for it and
reads everything the host answers. Each test below is the attack: it fits at the
host what a curious guest would, through the real message path (a simulation runs
the same messages as ``ftl serve``; some tests also go through an in-process
:class:`~ftl.federation.server.PartyServer` and a :class:`~ftl.RemoteParty`), then
searches what the driver holds -- feature names, the driver-side objects, error
texts, and the encoded bytes of every message exchanged with the host -- for the
host's values: its category codes, its income figures and the bin edges of its
columns. The attack must learn nothing, or be refused with ``ftl.PolicyError``.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    KBinsDiscretizer,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    StandardScaler,
)

import ftl
from ftl import PolicyError
from ftl.federation.budget import BudgetLimits, HostGuard
from ftl.federation.policy import PeerRule, Policy
from ftl.preprocessing import FederatedStandardScaler, PerParty

#: The host's secret category codes (think postcodes of its customers).
CITIES = np.array([75056.0, 13055.0, 69123.0, 31555.0, 6088.0, 44109.0])
N = 300
ONE_HOT = dict(sparse_output=False, handle_unknown="ignore")
LR = dict(encryption=None, random_state=0, max_iter=2)


# --------------------------------------------------------------------------- the parties
def frames(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = np.arange(N)
    city = CITIES[np.arange(N) % len(CITIES)]
    income = np.round(rng.normal(41_234.5678, 9_876.5, N), 4)
    x = rng.normal(size=N)
    y = (x + (city > 40_000) + rng.normal(scale=0.5, size=N) > 1).astype(int)
    bank = pd.DataFrame({"id": ids, "x": x, "y": y})
    shop = pd.DataFrame({"id": ids[::-1], "city": city[::-1], "income": income[::-1]})
    return bank, shop


def policy(**limits) -> Policy:
    return Policy(
        peers={"bank": PeerRule("bank", budget=BudgetLimits(**limits))},
        min_key_size=512,
        allow_plaintext=True,
        min_intersection=0,
    )


def simulated(guarded: bool = True, **limits):
    """The bank (guest, driver) and a local shop host guarded as ``ftl serve`` guards it."""
    bank_df, shop_df = frames()
    bank = ftl.Party("bank", bank_df, id_column="id", label_column="y")
    shop = ftl.Party("shop", shop_df, id_column="id")
    if guarded:
        shop.guard = HostGuard.from_policy(policy(**limits), "bank")
    return bank, shop, shop_df


def host_secrets(shop_df: pd.DataFrame) -> list[float]:
    """Every value of the host's columns, and the bin edges a discretiser finds in them."""
    values = set(shop_df["city"]) | set(shop_df["income"])
    for strategy in ("uniform", "quantile"):
        edges = KBinsDiscretizer(n_bins=4, strategy=strategy).fit(shop_df[["income"]]).bin_edges_
        values |= set(edges[0].tolist())
    return sorted(float(v) for v in values)


def learned(secrets: list[float], texts: list[str], blobs: list[bytes]) -> list[float]:
    """The secrets that appear in what the driver holds: as text (a JSON float, a name)
    or as the bytes of a float64 in either byte order."""
    text = "\n".join(texts)
    data = b"\n".join([*blobs, text.encode("utf-8", "replace")])
    found = []
    for v in secrets:
        forms = {repr(v).encode(), np.float64(v).tobytes(), np.float64(v).byteswap().tobytes()}
        if any(f in data for f in forms):
            found.append(v)
    return found


class Tap:
    """Records the encoded bytes of every request to, and reply from, an endpoint."""

    def __init__(self, endpoint):
        self.blobs: list[bytes] = []
        real = endpoint.handle

        def handle(session, op, payload, *args, **kwargs):
            self.blobs.append(payload)
            reply = real(session, op, payload, *args, **kwargs)
            self.blobs.append(reply)
            return reply

        endpoint.handle = handle  # this object's calls only


def driver_view(step, Xt) -> list[str]:
    """What the driver holds after fitting and transforming: every name and attribute."""
    return [
        json.dumps([str(c) for c in step.get_feature_names_out()]),
        json.dumps([str(c) for c in Xt.feature_names]),
        json.dumps([list(map(str, p.feature_names)) for p in Xt.parties]),
        repr(vars(step)),
        repr(step.transcript_.records),
    ]


def encoders():
    """What a curious guest fits at the shop: encoders of all its columns, bins of income."""
    return [
        PerParty(OneHotEncoder(**ONE_HOT), party="shop"),
        PerParty(
            OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), party="shop"
        ),
        PerParty(KBinsDiscretizer(n_bins=4, strategy="uniform"), party="shop"),
        PerParty(KBinsDiscretizer(n_bins=4), party="shop", columns=["income"]),
    ]


# --------------------------------------------------------------------------- names
def fit_encoders_in_simulation() -> tuple[list[float], list[str]]:
    """The attack: fit every encoder at the shop on all aligned rows, read the results."""
    bank, shop, shop_df = simulated()
    tap = Tap(shop.endpoint)
    X, _ = ftl.align(bank, shop)
    texts = []
    for step in encoders():
        Xt = step.fit(X).transform(X)
        texts += driver_view(step, Xt)
    return learned(host_secrets(shop_df), texts, tap.blobs), texts


def test_encoders_fitted_at_a_host_reveal_none_of_its_values():
    found, texts = fit_encoders_in_simulation()
    assert found == [], f"the driver learned host values {found[:5]}"
    # what does cross: how many outputs each column has (6 cities, 300 incomes)
    names = json.loads(texts[0])
    assert names[:7] == ["bank__x", *(f"shop__city_{k}" for k in range(6))]
    assert names[7:10] == ["shop__income_0", "shop__income_1", "shop__income_2"]
    assert len(names) == 1 + 6 + N


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    from ftl.federation.certs import make_certificates

    pytest.importorskip("grpc")
    out = tmp_path_factory.mktemp("prep-leak") / "certs"
    make_certificates(out, ["bank", "shop"])
    return out


def tls_for(certs, name: str) -> ftl.TLSConfig:
    return ftl.TLSConfig(ca=certs / "ca.crt", cert=certs / f"{name}.crt", key=certs / f"{name}.key")


class Served:
    """The shop behind an in-process ``PartyServer``, and the bank driving it remotely."""

    def __init__(self, certs, session_ttl: float = 3600.0, **limits):
        from ftl.federation.server import PartyServer

        bank_df, shop_df = frames()
        self.shop_df = shop_df
        self.bank = ftl.Party("bank", bank_df, id_column="id", label_column="y")
        shop = ftl.Party("shop", shop_df, id_column="id")
        self.server = PartyServer(shop, policy(**limits), session_ttl=session_ttl)
        self.grpc, port = self.server.start("127.0.0.1:0", tls_for(certs, "shop"))
        self.remote = ftl.RemoteParty("shop", f"localhost:{port}", tls=tls_for(certs, "bank"))
        self.tap = Tap(self.remote)

    def view(self):
        return self.server._view(self.server.policy.peer("bank"))

    def stop(self):
        self.grpc.stop(0)


@pytest.fixture
def served(certs):
    made = []

    def make(**kw) -> Served:
        made.append(Served(certs, **kw))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def test_encoders_fitted_at_a_served_host_reveal_none_of_its_values(served):
    shop = served()
    X, _ = ftl.align(shop.bank, shop.remote)
    texts = []
    for step in encoders():
        Xt = step.fit(X).transform(X)
        texts += driver_view(step, Xt)
        texts.append(json.dumps(Xt.parties[1]._info))  # the derived party's public facts
    found = learned(host_secrets(shop.shop_df), texts, shop.tap.blobs)
    assert found == [], f"the driver learned host values {found[:5]}"
    assert json.loads(texts[0])[1:3] == ["shop__city_0", "shop__city_1"]


# --------------------------------------------------------------------------- tiny fits
def fit_on_one_row(X) -> tuple[Exception | None, list[str]]:
    """The attack: one-hot encode the shop's columns on a single aligned row."""
    step = PerParty(OneHotEncoder(**ONE_HOT), party="shop")
    try:
        step.fit(X[:1])
    except (PolicyError, ValueError) as exc:
        return exc, [str(exc)]
    return None, [json.dumps(list(step.get_feature_names_out()))]


def test_a_one_row_fit_is_refused_by_a_guarded_host():
    bank, shop, shop_df = simulated()
    X, _ = ftl.align(bank, shop)
    error, texts = fit_on_one_row(X)
    assert learned(host_secrets(shop_df), texts, []) == []
    assert isinstance(error, PolicyError) and "min_transformer_rows" in str(error)
    assert shop.transformer_ids() == []


def test_a_one_row_fit_is_refused_by_a_served_host(served):
    shop = served()
    X, _ = ftl.align(shop.bank, shop.remote)
    error, texts = fit_on_one_row(X)
    assert learned(host_secrets(shop.shop_df), texts, shop.tap.blobs) == []
    assert isinstance(error, PolicyError) and "min_transformer_rows" in str(error)
    assert shop.view().transformer_ids() == []


def test_rows_outside_the_alignment_cannot_be_fitted_on():
    """Row numbers (a handle from Party.select) would reach the host's customers that
    are not in any alignment, past PSI and its minimum intersection."""
    bank, shop, shop_df = simulated()
    extra = ftl.Party("shop", shop_df.assign(id=shop_df["id"] + 10_000), id_column="id")
    extra.guard = shop.guard  # customers the bank does not share
    step = PerParty(OneHotEncoder(**ONE_HOT), party="shop")
    with pytest.raises(PolicyError, match="only on aligned rows"):
        step.fit(extra.select())
    assert extra.transformer_ids() == []


# --------------------------------------------------------------------------- oracles
def membership_oracle(X, make_step) -> dict[float, object]:
    """The attack: for each candidate city code, fit a transformer whose parameters name
    it and record what the host answers (output count, or the error)."""
    answers = {}
    for candidate in (75056.0, 12345.0):  # a code the shop holds, one it does not
        step = make_step(candidate)
        try:
            answers[candidate] = len(step.fit(X).get_feature_names_out())
        except (PolicyError, ValueError) as exc:
            answers[candidate] = type(exc).__name__
    return answers


@pytest.mark.parametrize(
    "make_step",
    [
        # an indicator column appears iff some fitted row holds the "missing" value
        lambda v: PerParty(
            SimpleImputer(missing_values=v, add_indicator=True), party="shop", columns=["city"]
        ),
        # dropping a category fails iff the host has no such category
        lambda v: PerParty(OneHotEncoder(drop=[v], **ONE_HOT), party="shop", columns=["city"]),
        # explicit categories: the fit fails iff the host holds another value
        lambda v: PerParty(
            OrdinalEncoder(categories=[sorted([*CITIES[1:], v])]), party="shop", columns=["city"]
        ),
    ],
    ids=["imputer-missing-values", "one-hot-drop", "ordinal-categories"],
)
def test_parameters_naming_values_are_no_membership_oracle(make_step):
    bank, shop, _ = simulated()
    X, _ = ftl.align(bank, shop)
    answers = membership_oracle(X, make_step)
    assert answers[75056.0] == answers[12345.0], f"the host's answers differ: {answers}"
    assert shop.transformer_ids() == []  # refused before any data was read


def test_error_texts_do_not_quote_host_values():
    """scikit-learn quotes the values it trips over; a host lets only the error type cross."""
    bank, shop, shop_df = simulated(guarded=False)
    secrets = host_secrets(shop_df)
    X, y = ftl.align(bank, shop)
    texts = []
    # explicit categories: scikit-learn lists the host's other values in its error
    step = PerParty(OneHotEncoder(categories=[[0.0], [0.0]]), party="shop")
    with pytest.raises(ValueError) as err:
        step.fit(X)
    texts.append(str(err.value))
    # a transformer fitted without the rare city meets it in a later request
    city = shop.raw_features(shop.aligned_rows(X.alignment.id, X.positions))[:, 0]
    common = np.flatnonzero(city != 6088.0)
    step = PerParty(OneHotEncoder(sparse_output=False), party="shop", columns=["city"])
    Xt = step.fit(X[common]).transform(X)
    with pytest.raises(ValueError) as err:
        ftl.FederatedLogisticRegression(**LR).fit(Xt, y)
    texts.append(str(err.value))
    assert learned(secrets, texts, []) == [], texts


# --------------------------------------------------------------------------- resources
@pytest.mark.parametrize(
    "step, key",
    [
        (PerParty(KBinsDiscretizer(n_bins=100_000), party="shop"), "max_n_bins"),
        (PerParty(PolynomialFeatures(degree=12), party="shop"), "degree"),
        (PerParty(OneHotEncoder(**ONE_HOT), party="shop"), "features"),  # 300 incomes
    ],
    ids=["n_bins", "degree", "output-width"],
)
def test_guest_chosen_resources_are_capped_by_the_host(step, key, monkeypatch):
    # a host that accepts at most 100 output features per transformer (its policy's
    # max_output_features where the budget has that key, else the party's built-in cap)
    if "max_output_features" in BudgetLimits.keys():
        bank, shop, _ = simulated(max_output_features=100)
    else:
        monkeypatch.setattr(
            "ftl.preprocessing.party.DEFAULT_MAX_OUTPUT_FEATURES", 100, raising=False
        )
        bank, shop, _ = simulated()
    X, _ = ftl.align(bank, shop)
    with pytest.raises((PolicyError, ValueError), match=key):
        step.fit(X)
    assert shop.transformer_ids() == []


def test_transformers_per_day_are_limited():
    bank, shop, _ = simulated(max_transformers_per_day=3)
    X, _ = ftl.align(bank, shop)
    for _ in range(3):
        PerParty(StandardScaler(), party="shop").fit(X)
    with pytest.raises(PolicyError, match="max_transformers_per_day"):
        PerParty(StandardScaler(), party="shop").fit(X)
    assert len(shop.transformer_ids()) == 3


# --------------------------------------------------------------------------- lifetime
def test_a_transformer_no_kept_model_needs_expires_with_its_session(served):
    shop = served(session_ttl=1.0)
    X, y = ftl.align(shop.bank, shop.remote)
    probe = FederatedStandardScaler().fit(X)  # fitted, then left behind
    pipe = make_pipeline(FederatedStandardScaler(), ftl.FederatedLogisticRegression(**LR))
    pipe.fit(X, y)  # its model at the shop needs its transformer
    view = shop.view()
    assert set(view.transformer_ids()) == {probe.transformer_id_, pipe[0].transformer_id_}
    time.sleep(1.5)
    before = pipe.decision_function(X)  # any request lets the host expire idle state
    assert view.transformer_ids() == [pipe[0].transformer_id_]
    with pytest.raises(ValueError, match="dropped|holds no fitted transformer"):
        probe.transform(X)
    np.testing.assert_array_equal(pipe.decision_function(X), before)
