"""Packed per-row pieces and their masked diagonal (``ftl.crypto.diagonal``).

Correctness against plaintext sums, the layout the owner enforces, and the attack
the middle-slot rule stops: an owner that returned whole plaintexts would hand the
requester the other slots -- sums over pieces it never asked for.
"""

from __future__ import annotations

import numpy as np
import pytest

from ftl.crypto import diagonal
from ftl.crypto.masking import FEATURE_FRAC_BITS, MASK_SLACK_BITS, VALUE_FRAC_BITS
from ftl.crypto.scheme import make_own_key, peer_key_from_public


@pytest.fixture(scope="module")
def keys():
    own = make_own_key("paillier", 1024, insecure_for_tests=True)
    peer = peer_key_from_public(own.public(), "paillier", insecure_for_tests=True)
    return own, peer


def _data(n_rows=40, n_pieces=4, p=3, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_rows, n_pieces)) * 3
    x = rng.normal(size=(n_rows, p))
    weights = rng.normal(size=(n_rows, n_pieces))
    features = [x * weights[:, k : k + 1] for k in range(n_pieces)]
    return values, features


def _exact(values, features):
    return sum(f.T @ values[:, k] for k, f in enumerate(features))


def _round_trip(own, peer, values, features):
    ct = diagonal.encrypt_pieces(own, values)
    masked, state = diagonal.masked_diagonal(peer, features, ct)
    n_rows, n_pieces = values.shape
    returned = diagonal.decrypt_diagonal(
        own, masked, state.slot_bits, n_rows, n_pieces, len(state.masks)
    )
    return ct, masked, state, peer.unmask(returned, state)


@pytest.mark.parametrize("n_pieces", [1, 2, 4, 5])
def test_the_diagonal_is_the_sum_of_every_piece_s_cross_term(keys, n_pieces):
    own, peer = keys
    values, features = _data(n_pieces=n_pieces)
    ct, _, _, got = _round_trip(own, peer, values, features)
    width = diagonal.slot_bits(len(values), n_pieces)
    size = diagonal.group_size(1024, width)
    assert ct.values.shape == (len(values), -(-n_pieces // size))
    # fixed point: features at 2**-20, values at 2**-32, summed over rows and pieces
    np.testing.assert_allclose(got, _exact(values, features), atol=1e-4)


def test_a_2048_bit_key_packs_five_pieces_of_a_full_batch_in_one_ciphertext():
    own = make_own_key("paillier", 2048)
    peer = peer_key_from_public(own.public(), "paillier")
    values, features = _data(n_rows=64, n_pieces=5, p=2, seed=1)
    # the layout of 21 000 rows (default credit): still one ciphertext a row
    assert diagonal.group_size(2048, diagonal.slot_bits(21_000, 5)) >= 5
    ct, _, _, got = _round_trip(own, peer, values, features)
    assert ct.values.shape == (64, 1)
    np.testing.assert_allclose(got, _exact(values, features), atol=1e-4)


def test_the_owner_refuses_another_slot_width_or_count(keys):
    own, peer = keys
    values, features = _data()
    ct = diagonal.encrypt_pieces(own, values)
    masked, state = diagonal.masked_diagonal(peer, features, ct)
    n_rows, n_pieces = values.shape
    with pytest.raises(ValueError, match="slots"):
        diagonal.decrypt_diagonal(own, masked, state.slot_bits + 8, n_rows, n_pieces, 3)
    with pytest.raises(ValueError, match="expected 4 masked diagonals"):
        diagonal.decrypt_diagonal(own, masked, state.slot_bits, n_rows, n_pieces, 4)


def test_the_owner_refuses_a_plaintext_wider_than_the_layout(keys):
    """A requester that packs more into the plaintext than ``2G - 1`` slots (say,
    results shifted further up) is refused, not answered with a middle slot."""
    own, peer = keys
    values, features = _data()
    ct = diagonal.encrypt_pieces(own, values)
    masked, state = diagonal.masked_diagonal(peer, features, ct)
    n_rows, n_pieces = values.shape
    size = diagonal.group_size(1024, state.slot_bits)
    top = 1 << ((2 * size - 1) * state.slot_bits)
    n, n2 = int(peer.n), int(peer.nsquare)
    widened = masked.values.copy()
    widened[0] = int(widened[0]) * (1 + top * n) % n2
    forged = type(masked)(widened, masked.key_id, masked.width)
    with pytest.raises(ValueError, match="wider than its layout"):
        diagonal.decrypt_diagonal(own, forged, state.slot_bits, n_rows, n_pieces, 3)


def _whole_plaintexts(own, ct, *args):
    """An owner without the middle-slot rule: it returns what it decrypted."""
    return own.decrypt_masked(ct)


@pytest.mark.parametrize("protected", [False, True])
def test_a_requester_reads_other_pieces_sums_only_from_whole_plaintexts(
    keys, monkeypatch, protected
):
    """The attack: the requester asks for feature j's cross term with piece 0 only
    (the other pieces' exponents zero) and knows every mask it added (here: all
    masks at their offset, no random part). From a whole plaintext it reads slot
    ``G`` too, ``sum_i x_ij w_i0 v_i1`` -- a sum over piece 1 it never asked for.
    The owner's rule (the middle slot back, nothing else) leaves it the one sum."""
    own, peer = keys
    values, features = _data(n_pieces=3, p=2, seed=3)
    features = [features[0]] + [np.zeros_like(f) for f in features[1:]]
    if not protected:
        monkeypatch.setattr(diagonal, "decrypt_diagonal", _whole_plaintexts)
    monkeypatch.setattr(diagonal.secrets, "randbits", lambda bits: 0)  # masks it knows
    ct = diagonal.encrypt_pieces(own, values)
    masked, state = diagonal.masked_diagonal(peer, features, ct)
    n_rows, n_pieces = values.shape
    reply = diagonal.decrypt_diagonal(
        own, masked, state.slot_bits, n_rows, n_pieces, len(state.masks)
    )
    width = state.slot_bits
    size = diagonal.group_size(1024, width)
    offset = 1 << (width - 1 - MASK_SLACK_BITS)  # each mask: the offset only
    slot = [(int(v) >> (size * width)) & ((1 << width) - 1) for v in reply]
    read = np.array([s - offset for s in slot], dtype=np.float64)
    read /= 2.0 ** (VALUE_FRAC_BITS + FEATURE_FRAC_BITS)
    other = features[0].T @ values[:, 1]
    if protected:
        assert all(int(v) < 1 << width for v in reply)  # one slot back, nothing above
        np.testing.assert_allclose(
            peer.unmask(reply, state), features[0].T @ values[:, 0], atol=1e-4
        )
        assert not np.allclose(read, other, atol=1e-3)
    else:
        np.testing.assert_allclose(read, other, atol=1e-4)  # the attack works
