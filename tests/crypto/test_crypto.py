import numpy as np
import phe
import pytest
from gmpy2 import mpz

from ftl.crypto import fixedpoint
from ftl.crypto.engine import CRTEncryptor, column_multiexp, djn_generator
from ftl.crypto.keys import InsecureKeyError, check_key_size, generate_keypair
from ftl.crypto.scheme import (
    FEATURE_FRAC_BITS,
    VALUE_FRAC_BITS,
    make_own_key,
    peer_key_from_public,
)
from ftl.exceptions import PolicyError


@pytest.fixture(scope="module")
def small_keys():
    pk, sk = generate_keypair(512, insecure_for_tests=True)
    hs = djn_generator(pk.n, sk.p, sk.q)
    return pk, sk, CRTEncryptor(pk.n, sk.p, sk.q, hs)


def test_small_keys_need_the_explicit_switch():
    with pytest.raises(InsecureKeyError, match="too small"):
        check_key_size(1024)
    with pytest.raises(InsecureKeyError):
        make_own_key("paillier", 512)
    assert check_key_size(1024, insecure_for_tests=True) == 1024
    with pytest.raises(ValueError, match="multiple of 64"):
        check_key_size(1000, insecure_for_tests=True)


def test_fast_encryption_decrypts_with_phe_and_interoperates(small_keys):
    pk, sk, enc = small_keys
    values = [0, 1, 12345, pk.n - 1, pk.n // 2]
    cts = enc.encrypt_ints(values)
    assert [sk.raw_decrypt(int(c)) for c in cts] == values
    # phe's EncryptedNumber arithmetic works on our ciphertexts
    a = phe.EncryptedNumber(pk, int(cts[2]), 0)
    assert sk.decrypt(a + 5) == 12350
    assert sk.decrypt(a * 3) == 37035


def test_every_ciphertext_is_randomised(small_keys):
    pk, sk, enc = small_keys
    n, n2 = pk.n, pk.n**2
    cts = enc.encrypt_ints([7, 7, 7, 0, 0])
    assert len({int(c) for c in cts}) == 5
    for c, m in zip(cts, [7, 7, 7, 0, 0], strict=False):
        assert int(c) != (1 + m * n) % n2  # never the deterministic form


def test_own_key_encrypt_is_randomised_on_real_key_size():
    own = make_own_key("paillier", 2048)
    ct = own.encrypt(np.array([0.5, 0.5, 0.0]))
    vals = [int(v) for v in ct.values]
    assert len(set(vals)) == 3
    n2 = own.n**2
    m = fixedpoint.encode(np.array([0.5]), VALUE_FRAC_BITS)[0]
    assert all(v != (1 + m * own.n) % n2 and v != 1 for v in vals)
    np.testing.assert_allclose(own.decrypt_values(ct, VALUE_FRAC_BITS), [0.5, 0.5, 0.0])


@pytest.mark.parametrize("n_rows", [1, 7, 300])
def test_column_multiexp_matches_phe_loop(small_keys, n_rows):
    pk, sk, enc = small_keys
    rng = np.random.default_rng(n_rows)
    values = rng.integers(-(2**40), 2**40, size=n_rows)
    cts = enc.encrypt_ints([int(v) % pk.n for v in values])
    exps = rng.integers(-(2**30), 2**30, size=(n_rows, 4))
    exps[0, :] = 0  # zeros
    exps[:, 1] = -np.abs(exps[:, 1])  # an all-negative column
    got = column_multiexp(cts, exps, pk.nsquare)
    for j in range(4):
        expected = phe.EncryptedNumber(pk, 1, 0)
        for i in range(n_rows):
            expected = expected + phe.EncryptedNumber(pk, int(cts[i]), 0) * int(exps[i, j])
        assert sk.decrypt(phe.EncryptedNumber(pk, int(got[j]), 0)) == sk.decrypt(expected)


@pytest.mark.parametrize("width", [1, 3, 25])
def test_masked_cross_term_roundtrip_packing_and_mask_hides_value(width):
    own = make_own_key("paillier", 1024, insecure_for_tests=True)
    peer = peer_key_from_public(own.public(), "paillier", insecure_for_tests=True)
    rng = np.random.default_rng(width)
    v = rng.normal(size=50)
    X = rng.normal(size=(50, width)) * 3
    masked, state = peer.masked_cross_term(X, own.encrypt(v))
    per_ct = (1024 - 2) // state.slot_bits
    assert masked.values.shape == (-(-width // per_ct),)  # several values per ciphertext
    raw = own.decrypt_packed(masked, state.slot_bits, width)  # what the key owner sees
    true_ints = fixedpoint.encode(X.T @ v, VALUE_FRAC_BITS + FEATURE_FRAC_BITS)
    for seen, true in zip(raw, true_ints, strict=True):
        assert abs(int(seen) - int(true)) > 2**40  # masked: far from the value
        assert 0 <= int(seen) < 2**state.slot_bits
    np.testing.assert_allclose(peer.unmask(raw, state), X.T @ v, atol=1e-4)
    # the sum of several pieces is masked as one: the owner sees only the total
    X2 = rng.normal(size=(50, width))
    v2 = rng.normal(size=50)
    masked, state = peer.masked_cross_term([X, X2], [own.encrypt(v), own.encrypt(v2)])
    total = peer.unmask(own.decrypt_packed(masked, state.slot_bits, width), state)
    np.testing.assert_allclose(total, X.T @ v + X2.T @ v2, atol=1e-4)
    with pytest.raises(ValueError, match="declared slots"):
        own.decrypt_packed(masked, state.slot_bits, width + per_ct)


def test_overflow_is_an_error_not_garbage():
    own = make_own_key("paillier", 512, insecure_for_tests=True)
    with pytest.raises(fixedpoint.FixedPointOverflowError, match="diverged"):
        own.encrypt(np.array([2.0**40]))
    with pytest.raises(fixedpoint.FixedPointOverflowError):
        fixedpoint.encode(np.array([np.nan]), 10)
    from ftl.crypto.scheme import encode_features

    with pytest.raises(fixedpoint.FixedPointOverflowError, match="standardise"):
        encode_features(np.array([[2.0**45]]))


def test_peer_key_policy():
    own = make_own_key("paillier", 512, insecure_for_tests=True)
    with pytest.raises(PolicyError, match="at least 2048"):  # the receiver's own refusal
        peer_key_from_public(own.public(), "paillier")
    with pytest.raises(ValueError, match="expects"):
        peer_key_from_public(own.public(), "plain")
    bad = dict(own.public(), hs=1)
    with pytest.raises(ValueError, match="DJN base"):
        peer_key_from_public(bad, "paillier", insecure_for_tests=True)


def test_decrypt_refuses_foreign_ciphertexts():
    a = make_own_key("paillier", 512, insecure_for_tests=True)
    b = make_own_key("paillier", 512, insecure_for_tests=True)
    with pytest.raises(ValueError, match="not this party"):
        b.decrypt_masked(a.encrypt(np.array([1.0])))


def test_fixedpoint_roundtrip():
    x = np.array([-1.5, 0.0, 3.25, 1e-6])
    np.testing.assert_allclose(fixedpoint.decode(fixedpoint.encode(x, 32), 32), x, atol=1e-9)
    assert isinstance(fixedpoint.encode(x, 32)[0], int) and mpz is not None


def test_masked_vector_packs_many_rows_per_decryption():
    own = make_own_key("paillier", 1024, insecure_for_tests=True)
    peer = peer_key_from_public(own.public(), "paillier", insecure_for_tests=True)
    v = np.random.default_rng(3).normal(size=23) * 50
    v[0] = -(2.0**31) + 1  # extreme margins still fit
    masked, state = peer.masked_vector(own.encrypt(v))
    per_ct = (1024 - 2) // state.slot_bits
    assert per_ct > 1 and masked.values.shape == (-(-23 // per_ct),)
    raw = own.decrypt_packed(masked, state.slot_bits, 23)
    assert all(int(x) > 2**64 for x in raw)  # every slot masked and positive
    np.testing.assert_allclose(peer.unmask(raw, state), v, atol=1e-8)


def test_random_exponent_bits_are_in_range_and_unbiased():
    from ftl.crypto.engine import _random_bits

    bits = _random_bits(2000, 1021)
    assert bits.shape == (2000, 1021) and set(np.unique(bits)) <= {0, 1}
    exps = [sum(int(b) << t for t, b in enumerate(row)) for row in bits[:50]]
    assert all(0 <= e < 2**1021 for e in exps) and len(set(exps)) == 50
    assert abs(bits.mean() - 0.5) < 0.01
    assert abs(bits[:, -1].mean() - 0.5) < 0.05  # the top bit is as random as the rest


@pytest.mark.parametrize(
    "exp_bits, window, n_tables", [(256, 12, 16), (200, 5, 3), (64, 3, 100), (17, 4, 2), (1, 1, 1)]
)
def test_comb_table_powers_match_powmod(small_keys, exp_bits, window, n_tables):
    import random

    import gmpy2

    from ftl.crypto.engine import FixedBaseTable

    pk, sk, enc = small_keys
    m = mpz(sk.p) ** 2
    table = FixedBaseTable(12345, m, exp_bits, window, n_tables)
    rng = random.Random(exp_bits)
    edges = [0, 1, 2 ** (exp_bits - 1), 2**exp_bits - 1]
    for e in edges + [rng.getrandbits(exp_bits) for _ in range(30)]:
        assert table.pow(e) == gmpy2.powmod(12345, e, m)
    digits = table.random_digits(100)
    assert digits.shape == (100, table.steps, table.n_tables)
    assert digits.min() >= 0 and digits.max() < 2**window
    with pytest.raises(ValueError, match="out of range"):
        table.pow(2**exp_bits)


def test_default_tables_are_small_and_cheap_for_2048_bit_keys():
    # one prime's table of a 2048-bit key (modulus p**2 of 2048 bits, exponents of
    # 1024): at most 2**16 residues (~20 MB) and at most 94 modular operations per
    # power (what the former 11-bit windows cost with three times the memory)
    from ftl.crypto.engine import FixedBaseTable

    table = FixedBaseTable(3, mpz(2) ** 2048 - 159, 1024)
    assert sum(len(t) for t in table.tables) <= 2**16
    assert (table.steps - 1) + table.cols <= 94


def test_workers_keep_few_keys_tables_and_drop_them_before_building(monkeypatch):
    from collections import OrderedDict

    from ftl.crypto import workers

    kept = []
    monkeypatch.setattr(workers, "_WORKER_ENCRYPTORS", OrderedDict())

    class Recorder:
        def __init__(self, n, p, q, hs):
            kept.append(len(workers._WORKER_ENCRYPTORS))  # tables alive while building

    monkeypatch.setattr(workers, "CRTEncryptor", Recorder)
    for n in [1, 2, 3, 4, 1, 5, 5, 2]:
        workers.worker_encryptor(n, 0, 0, 7)
    assert max(kept) < workers.WORKER_KEYS_KEPT
    assert len(workers._WORKER_ENCRYPTORS) == workers.WORKER_KEYS_KEPT
    assert list(workers._WORKER_ENCRYPTORS) == [(1, 7), (5, 7), (2, 7)]  # least recent first
