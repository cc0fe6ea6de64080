"""Every fast Paillier path against python-paillier on random inputs (hypothesis).

Negative numbers, zeros and values at the edges of their fixed-point ranges are
drawn on purpose; a value outside its range must raise
:class:`~ftl.crypto.fixedpoint.FixedPointOverflowError`, never wrap silently.
"""

from __future__ import annotations

import gmpy2
import numpy as np
import phe
import pytest
from gmpy2 import mpz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ftl.crypto import fixedpoint, packed
from ftl.crypto.engine import (
    CRTEncryptor,
    FixedBaseTable,
    column_multiexp,
    digit_windows,
    djn_generator,
    signed_digits,
)
from ftl.crypto.keys import generate_keypair
from ftl.crypto.scheme import (
    FEATURE_FRAC_BITS,
    VALUE_FRAC_BITS,
    VALUE_INT_BITS,
    make_own_key,
    peer_key_from_public,
)

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Values inside the encrypted range, with the edges and zero drawn often.
VALUES = st.one_of(
    st.just(0.0),
    st.floats(-(2.0**VALUE_INT_BITS) + 1, 2.0**VALUE_INT_BITS - 1, allow_nan=False),
    st.sampled_from([-1.0, 1.0, 2.0**-VALUE_FRAC_BITS, -(2.0**31), 2.0**31]),
)


@pytest.fixture(scope="module")
def keys():
    pk, sk = generate_keypair(1024, insecure_for_tests=True)
    return pk, sk, CRTEncryptor(pk.n, sk.p, sk.q, djn_generator(pk.n, sk.p, sk.q))


@pytest.fixture(scope="module")
def own():
    return make_own_key("paillier", 1024, insecure_for_tests=True)


@pytest.fixture(scope="module")
def pooled_own():
    # a pool smaller than some inputs: calls use pooled factors, on-demand ones or both
    return make_own_key("paillier", 1024, insecure_for_tests=True, pool_capacity=24)


@SETTINGS
@given(st.lists(st.integers(min_value=-(2**200), max_value=2**200), min_size=1, max_size=8))
def test_fast_encryption_decrypts_with_phe_including_negatives(keys, ints):
    pk, sk, enc = keys
    cts = enc.encrypt_ints([v % pk.n for v in ints])
    for c, v in zip(cts, ints, strict=True):
        number = phe.EncryptedNumber(pk, int(c), 0)
        assert sk.decrypt(number) == v  # phe reads negatives as n - |v|
        assert int(c) != (1 + (v % pk.n) * pk.n) % pk.nsquare  # randomised


@SETTINGS
@given(st.integers(1, 300), st.integers(1, 8), st.integers(1, 20), st.data())
def test_comb_table_matches_powmod_for_any_layout(keys, exp_bits, window, n_tables, data):
    pk, sk, enc = keys
    modulus = mpz(sk.q) ** 2
    base = data.draw(st.integers(2, 2**64))
    table = FixedBaseTable(base, modulus, exp_bits, window, n_tables)
    exps = data.draw(st.lists(st.integers(0, 2**exp_bits - 1), min_size=1, max_size=6))
    for e in exps:
        assert table.pow(e) == gmpy2.powmod(base, e, modulus)


_POOLED_SEEN: set[int] = set()


@SETTINGS
@given(hnp.arrays(np.float64, st.integers(1, 40), elements=VALUES))
def test_pooled_encryption_decrypts_with_phe_and_never_repeats(pooled_own, values):
    ct = pooled_own.encrypt(values)
    pk, sk = pooled_own.public_key, pooled_own.private_key
    ints = fixedpoint.encode(values, VALUE_FRAC_BITS)
    for c, m in zip(ct.values, ints, strict=True):
        assert sk.decrypt(phe.EncryptedNumber(pk, int(c), 0)) == int(m)
        assert int(c) != (1 + (int(m) % pk.n) * pk.n) % pk.nsquare  # randomised
        assert int(c) not in _POOLED_SEEN  # no factor is used twice, across calls too
        _POOLED_SEEN.add(int(c))


@SETTINGS
@given(
    hnp.arrays(
        np.int64,
        st.tuples(st.integers(1, 12), st.integers(1, 4)),
        elements=st.integers(-(2**62), 2**62 - 1),
    ),
    st.data(),
)
def test_multiexp_matches_a_phe_loop_for_any_int64_exponents(keys, exps, data):
    pk, sk, enc = keys
    values = data.draw(
        st.lists(st.integers(-(2**60), 2**60), min_size=exps.shape[0], max_size=exps.shape[0])
    )
    cts = enc.encrypt_ints([v % pk.n for v in values])
    got = column_multiexp(cts, exps, pk.nsquare)
    for j in range(exps.shape[1]):
        expected = sum(int(exps[i, j]) * values[i] for i in range(len(values)))
        assert sk.decrypt(phe.EncryptedNumber(pk, int(got[j]), 0)) == expected


@SETTINGS
@given(
    st.lists(
        st.one_of(st.integers(0, 2**62), st.sampled_from([0, 1, 2**62, 2**21 - 1, 2**22 - 1])),
        min_size=1,
        max_size=30,
    ),
    st.integers(2, 14),
)
def test_signed_digits_rebuild_every_magnitude_within_their_range(magnitudes, width):
    bits = max(magnitudes).bit_length()
    digits = signed_digits(np.array(magnitudes, dtype=np.uint64), width, digit_windows(bits, width))
    half = 1 << (width - 1)
    assert digits.min() > -half and digits.max() <= half
    weights = [1 << (width * k) for k in range(digits.shape[1])]
    for m, row in zip(magnitudes, digits.tolist(), strict=True):
        assert sum(d * w for d, w in zip(row, weights, strict=True)) == m


def test_a_ciphertext_sharing_a_factor_with_n_is_refused_not_a_crash(keys):
    # only the key owner can make one (it knows p): a deviating owner's message
    pk, sk, enc = keys
    cts = enc.encrypt_ints([1, 2, 3])
    cts[1] = mpz(sk.p) * 7
    with pytest.raises(ValueError, match="not a unit"):
        column_multiexp(cts, np.array([[1], [-1], [2]], dtype=np.int64), pk.nsquare)


@SETTINGS
@given(hnp.arrays(np.float64, st.integers(1, 20), elements=VALUES))
def test_own_key_encrypt_roundtrip_and_phe_interoperation(own, values):
    ct = own.encrypt(values)
    np.testing.assert_allclose(
        own.decrypt_values(ct, VALUE_FRAC_BITS), values, atol=2.0**-VALUE_FRAC_BITS
    )
    # phe decrypts our ciphertexts, and our decryption reads phe's arithmetic on them
    pk, sk = own.public_key, own.private_key
    ints = fixedpoint.encode(values, VALUE_FRAC_BITS)
    for c, m in zip(ct.values, ints, strict=True):
        number = phe.EncryptedNumber(pk, int(c), 0)
        assert sk.decrypt(number) == int(m)
        assert sk.decrypt(number * -3 + 7) == -3 * int(m) + 7


@SETTINGS
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(1, 5)), elements=VALUES),
    st.data(),
)
def test_masked_cross_term_equals_numpy(own, x_raw, data):
    peer = peer_key_from_public(own.public(), "paillier", insecure_for_tests=True)
    n_rows = x_raw.shape[0]
    v = data.draw(hnp.arrays(np.float64, n_rows, elements=st.floats(-1e3, 1e3)))
    x = np.clip(x_raw, -1e6, 1e6)  # feature range of standardised data, and beyond
    masked, state = peer.masked_cross_term(x, own.encrypt(v))
    got = peer.unmask(own.decrypt_packed(masked, state.slot_bits, x.shape[1]), state)
    enc_x = np.rint(np.ldexp(x, FEATURE_FRAC_BITS))
    enc_v = np.rint(np.ldexp(v, VALUE_FRAC_BITS))
    exact = (enc_x.T.astype(object) @ enc_v.astype(object)).astype(np.float64)
    np.testing.assert_allclose(got, np.ldexp(exact, -(FEATURE_FRAC_BITS + VALUE_FRAC_BITS)))


# Row-packed vectors (transfer learning) use their own, narrower fixed point.
PACKED_VALUES = st.one_of(
    st.just(0.0),
    st.floats(-(2.0**packed.VALUE_INT_BITS) + 1, 2.0**packed.VALUE_INT_BITS - 1),
    st.sampled_from([-1.0, 1.0, 2.0**-packed.VALUE_FRAC_BITS]),
)


@SETTINGS
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 9)), elements=PACKED_VALUES)
)
def test_packed_rows_decrypt_to_their_slots(own, values):
    width = packed.slot_bits(8, values.shape[1])
    ct = packed.encrypt_rows(own, values, width)
    per_ct, n_ct = packed.layout(own.n.bit_length(), width, values.shape[1])
    assert ct.values.shape == (values.shape[0], n_ct)
    plain = own.decrypt_masked(ct).reshape(-1)  # the key owner reads packed signed slots
    for r in range(values.shape[0]):
        slots = []
        for t in range(n_ct):
            acc = int(plain[r * n_ct + t]) % own.n
            acc = acc - own.n if acc > own.n // 2 else acc
            for _ in range(per_ct):
                low = acc & ((1 << width) - 1)
                low = low - (1 << width) if low >= 1 << (width - 1) else low
                slots.append(low)
                acc = (acc - low) >> width
        got = fixedpoint.decode(
            np.array(slots[: values.shape[1]], dtype=object), packed.VALUE_FRAC_BITS
        )
        np.testing.assert_allclose(got, values[r], atol=2.0**-packed.VALUE_FRAC_BITS)


@pytest.mark.parametrize(
    "bad",
    [2.0**VALUE_INT_BITS, -(2.0**VALUE_INT_BITS) - 1, np.inf, -np.inf, np.nan],
)
def test_values_out_of_range_raise_instead_of_wrapping(own, bad):
    with pytest.raises(fixedpoint.FixedPointOverflowError):
        own.encrypt(np.array([0.0, bad]))
    with pytest.raises(fixedpoint.FixedPointOverflowError):
        packed.encrypt_rows(own, np.array([[0.0, bad]]), packed.slot_bits(4, 2))


def test_features_out_of_range_raise_in_products(own):
    peer = peer_key_from_public(own.public(), "paillier", insecure_for_tests=True)
    ct = own.encrypt(np.ones(2))
    with pytest.raises(fixedpoint.FixedPointOverflowError, match="standardise"):
        peer.masked_cross_term(np.array([[2.0**43], [0.0]]), ct)
