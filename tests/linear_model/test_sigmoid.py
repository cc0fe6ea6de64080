"""The sigmoid approximations and the near-lossless two-party default."""

import numpy as np
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import ftl
from ftl.data.simulate import simulate_federation
from ftl.linear_model._sigmoid import LocalPolynomial, Taylor1, make_approximation
from tests.conftest import SMALL_KEY, pooled


def _max_error(degree, radius, basis="monomial"):
    approx = LocalPolynomial(degree, radius, basis)
    u_guest = np.linspace(-10, 10, 201)
    a = approx.coefficients(u_guest)
    s = np.linspace(-1, 1, 101)
    if basis == "monomial":  # the documented formula, sum_k a_k s**k
        functions = s[:, None] ** np.arange(degree + 1)[None, :]
    else:
        functions = approx.functions(s)
    return np.abs(a @ functions.T - expit(u_guest[:, None] + radius * s[None, :])).max()


def test_local_polynomial_error_bounds_as_documented():
    # docs/sigmoid.md: worst-case residual error over all guest margins and |u_H| <= R
    assert _max_error(3, 8.0) < 0.17
    assert _max_error(5, 8.0) < 0.08
    assert _max_error(3, 4.0) < 0.05
    assert _max_error(5, 8.0) < _max_error(3, 8.0)
    # Taylor-1 is exact only at 0 and off by far more away from it
    t = Taylor1()
    u_guest = np.linspace(-10, 10, 201)
    err = np.abs(t.guest_own(u_guest, 0.0) / 4 + 3.0 / 4 - expit(u_guest + 3.0))
    assert err.max() > 0.5


def test_kernel_basis_is_as_accurate_as_one_power_more():
    """docs/sigmoid.md: the best K functions of s for the whole family
    s -> sigmoid(u + R s) come within 20 % of K + 1 powers (about one degree gained);
    the default K = 4 on R = 4 is twice as accurate as the previous default, five
    powers on R = 5."""
    for degree, radius in [(3, 4.0), (4, 4.0), (4, 5.0), (5, 5.0)]:
        kernel = _max_error(degree, radius, "kernel")
        assert kernel < _max_error(degree, radius)
        assert kernel < 1.2 * _max_error(degree + 1, radius)
    assert _max_error(4, 4.0, "kernel") < 0.013 < _max_error(5, 5.0) / 1.9


def test_kernel_basis_is_the_same_for_guest_and_host():
    """Both parties build the basis from the public K and R alone: bounded by 1 on
    [-1, 1], positive at s = 1 (a sign convention, so that no LAPACK's choice of
    singular-vector signs can make the two differ) and without the constant, which
    the guest's own term carries; the host refuses a basis it does not know."""
    approx = make_approximation(
        {"sigmoid": "poly", "sigmoid_degree": 4, "sigmoid_radius": 4.0, "sigmoid_basis": "kernel"}
    )
    s = np.linspace(-1, 1, 2001)
    phi = approx.functions(s)[:, 1:]
    np.testing.assert_allclose(np.abs(phi).max(axis=0), 1.0)
    assert (approx.functions(np.array([1.0]))[0, 1:] > 0).all()
    # orthogonal to the constant at Chebyshev points (the SVD of the centred kernel)
    nodes = np.cos(np.pi * (np.arange(64) + 0.5) / 64)
    assert np.abs(approx.functions(nodes)[:, 1:].mean(axis=0)).max() < 1e-12
    np.testing.assert_array_equal(
        approx.host_values(np.array([0.3, -7.0])),
        LocalPolynomial(4, 4.0, "kernel").host_values(np.array([0.3, -7.0])),
    )
    # a guest that sends no basis is an older guest: powers of s
    assert (
        make_approximation({"sigmoid": "poly", "sigmoid_degree": 3, "sigmoid_radius": 5.0}).basis
        == "monomial"
    )
    with pytest.raises(ValueError, match="sigmoid basis"):
        make_approximation(
            {
                "sigmoid": "poly",
                "sigmoid_degree": 3,
                "sigmoid_radius": 5.0,
                "sigmoid_basis": "fourier",
            }
        )


def test_columns_multiply_back_to_the_residual():
    rng = np.random.default_rng(0)
    ug, uh, y = rng.normal(size=50), rng.normal(size=50) * 3, rng.integers(0, 2, 50)
    for approx in (Taylor1(), LocalPolynomial(4, 6.0), LocalPolynomial(3, 4.0, "kernel")):
        g = approx.guest_values(ug, y)
        h = approx.host_weights(uh)  # the host's per-row weights for the guest's columns
        host_own = approx.host_own(uh)
        lhs = (g * h).sum(axis=1) + (0.0 if host_own is None else host_own)
        own = approx.guest_own(ug, y)
        rhs = own + (approx.guest_weights(ug) * approx.host_values(uh)).sum(axis=1)
        np.testing.assert_allclose(lhs, rhs, atol=1e-12)


def test_poly_step_sends_only_ciphertexts_of_the_host_margin_powers(breast):
    X, y = breast
    Xs, ys = X[:96], y[:96]
    clf = ftl.FederatedLogisticRegression(random_state=0, max_iter=2, **SMALL_KEY).fit(Xs, ys)
    host = X.alignment.hosts[0].name
    from_host = [r for r in clf.transcript_ if r.sender == host and r.type == "lr.contribution"]
    assert from_host
    keys = set()
    for rec in from_host:
        (values,) = rec.fields[1:]  # fields are sorted: owner, values
        assert values.name == "values" and values.kind == "ciphertext"
        assert values.shape[1] == clf.sigmoid_degree  # phi_1(s), ..., phi_K(s)
        keys.add(values.key_id)
    assert len(keys) == 1
    # nothing else the host sends carries per-sample data
    for rec in clf.transcript_:
        if rec.sender == host and rec.type != "lr.contribution":
            assert not any(f.per_sample for f in rec.fields), rec.type


def test_encrypted_poly_fit_is_near_lossless_on_breast(breast):
    X, y = breast
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=1)
    enc = ftl.FederatedLogisticRegression(random_state=0, **SMALL_KEY).fit(X_tr, y_tr)
    plain = ftl.FederatedLogisticRegression(encryption=None, random_state=0).fit(X_tr, y_tr)
    # both stop at ||gradient|| <= tol; their margins agree far below what moves AUC
    m_enc, m_plain = enc.decision_function(X_tr), plain.decision_function(X_tr)
    assert np.linalg.norm(m_enc - m_plain) / np.linalg.norm(m_plain) < 2e-3
    sk = LogisticRegression(max_iter=5000).fit(pooled(X_tr), y_tr)
    auc_sk = roc_auc_score(y_te, sk.decision_function(pooled(X_te)))
    auc_enc = roc_auc_score(y_te, enc.decision_function(X_te))
    assert auc_enc >= auc_sk - 0.003, (auc_enc, auc_sk)


@pytest.mark.parametrize("dataset", ["credit", "breast"])
def test_default_is_closer_to_pooled_than_fate_taylor(dataset, request):
    X, y = request.getfixturevalue(dataset)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    sk = LogisticRegression(max_iter=5000).fit(pooled(X_tr), y_tr)
    auc = {"sklearn": roc_auc_score(y_te, sk.decision_function(pooled(X_te)))}
    for name, kw in (("default", {}), ("taylor", {"sigmoid": "taylor"})):
        clf = ftl.FederatedLogisticRegression(encryption=None, random_state=0, **kw)
        auc[name] = roc_auc_score(y_te, clf.fit(X_tr, y_tr).decision_function(X_te))
    assert auc["default"] >= auc["sklearn"] - 0.004, auc
    assert auc["sklearn"] - auc["default"] < auc["sklearn"] - auc["taylor"], auc


def test_poly_needs_exactly_one_host_and_auto_falls_back(breast):
    X, y = breast
    three = simulate_federation(pooled(X), y, n_hosts=2)
    with pytest.raises(ValueError, match="exactly one host"):
        ftl.FederatedLogisticRegression(encryption=None, sigmoid="poly").fit(three, y)
    clf = ftl.FederatedLogisticRegression(encryption=None, max_iter=2).fit(three, y)
    contrib = [r for r in clf.transcript_ if r.type == "lr.contribution"]
    assert all(f.shape[1] == 1 for r in contrib for f in r.fields if f.name == "values")


def test_default_poly_trains_nearly_the_same_model_as_sklearn(breast):
    """Not only the ranking: the default's margins X w + b stay close to pooled
    scikit-learn's (docs/accuracy.md; the old K=3, R=8 was 70 % off on default credit)."""
    X, y = breast
    X_tr, _, y_tr, _ = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    fed = ftl.FederatedLogisticRegression(encryption=None, random_state=0).fit(X_tr, y_tr)
    sk = LogisticRegression(max_iter=5000).fit(pooled(X_tr), y_tr)
    m_fed, m_sk = fed.decision_function(X_tr), sk.decision_function(pooled(X_tr))
    assert np.linalg.norm(m_fed - m_sk) / np.linalg.norm(m_sk) < 0.1
