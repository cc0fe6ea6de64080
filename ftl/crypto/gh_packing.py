"""Gradients and hessians packed into Paillier plaintexts: the key owner's side.

The guest (the key owner, who holds the labels) encrypts each training row's
gradient ``g`` and hessian ``h`` packed into one plaintext ``g + h * 2**w``
(:func:`encrypt_gh`) under a public :class:`GHLayout`; the hosts sum them per bin
and pack many bins into each ciphertext (:mod:`ftl.crypto.histograms`); the guest
decrypts and splits the slots apart again (:func:`decrypt_bin_sums`).

Slots are signed two's-complement fields of :attr:`GHLayout.slot_bits` bits: a
packed plaintext is the integer ``sum_j v_j * 2**(j * w)``, so any sum of packed
plaintexts is the slot-wise sum, carried exactly as long as every slot's total
stays in ``(-2**(w - 1), 2**(w - 1))``; the owner reads the slots from the
bottom and carries a borrow into the next one when a slot is negative. The slot
width follows from public quantities only (:func:`gh_layout`: row count,
fraction bits and the loss's bounds on ``|g|`` and ``h``), and values outside
the bounds are refused at encryption: overflow is an error, never garbage.

Precision: a value is carried as ``round(v * 2**frac_bits)``. A float32 value
with ``|v| >= 2**(23 - frac_bits)`` is a multiple of ``2**-frac_bits`` (24
significant bits), so it is encoded *exactly*, and the integer sums are exact.
With the default :data:`DEFAULT_FRAC_BITS` = 47 every float32 gradient or
hessian of magnitude at least ``2**-24`` (6e-8) is exact, so a bin's decoded
sum is its exact real sum rounded once to float64 -- within the rounding of
scikit-learn's own float64 accumulation. Smaller values are rounded to
``2**-48`` (3.6e-15) each: a bin sum then stays within 1e-9 of its sum of
``|g|`` (relative) as long as the bin's mean ``|g|`` is above 3.6e-6, which
only heavily over-fitted models undercut. 47 bits also keep a slot within 63
bits up to 2**15 rows at ``|g| <= 1`` (16 bins per 2048-bit ciphertext).

``encryption=None`` (:mod:`ftl.crypto.plain` keys) runs the same calls, here and
in the hosts' bin sums, on float64 values: the sums are then scikit-learn's
float64 sums bit for bit (the rows' float32 values added to their bin in
increasing row order), with no fixed point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ftl.crypto import fixedpoint
from ftl.crypto.arrays import CiphertextArray, PlainArray
from ftl.crypto.paillier import PaillierOwnKey

__all__ = [
    "DEFAULT_FRAC_BITS",
    "GHLayout",
    "bins_per_feature",
    "check_key_bits",
    "decrypt_bin_sums",
    "encrypt_gh",
    "gh_layout",
]

#: Fixed-point fraction bits of packed gradients and hessians (see the module notes).
DEFAULT_FRAC_BITS = 47


@dataclass(frozen=True)
class GHLayout:
    """How gradients and hessians are packed into Paillier plaintexts (public).

    Build it with :func:`gh_layout`. Everything here is public: the guest sends it
    to the hosts, which need :attr:`slot_bits` and :attr:`bins_per_ciphertext` to
    pack the bins.

    Parameters
    ----------
    key_bits : int
        Bits of the key owner's modulus ``n``.
    n_rows : int
        Most rows encrypted under the layout (hence most rows in one bin sum).
    g_bound : float
        Power of two with ``|g| <= g_bound`` for every row.
    h_bound : float or None
        Power of two with ``0 <= h <= h_bound``; ``None``: the hessians are
        constant (squared error) and not encrypted -- one slot per bin.
    frac_bits : int
        Fixed-point fraction bits.
    """

    key_bits: int
    n_rows: int
    g_bound: float
    h_bound: float | None
    frac_bits: int = DEFAULT_FRAC_BITS

    def __post_init__(self):
        for name in ("key_bits", "n_rows", "frac_bits"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.n_rows < 1 or self.frac_bits > 1022:
            raise ValueError("a layout needs n_rows >= 1 and frac_bits <= 1022")
        for name in ("g_bound", "h_bound"):
            value = getattr(self, name)
            if value is None and name == "h_bound":
                continue
            if not (np.isfinite(value) and value > 0 and math.frexp(value)[0] == 0.5):
                raise ValueError(f"{name} must be a positive power of two, got {value!r}")
        if self.bins_per_ciphertext < 1:
            raise fixedpoint.FixedPointOverflowError(
                f"a {self.key_bits}-bit key cannot hold one bin of {self.bin_bits} bits "
                f"({self.n_rows} rows at {self.frac_bits} fraction bits)"
            )

    @property
    def slots_per_bin(self) -> int:
        """2 (``g`` and ``h``), or 1 when the hessians are not encrypted."""
        return 1 if self.h_bound is None else 2

    @property
    def slot_bits(self) -> int:
        """Width of one signed slot: holds a sum of ``n_rows`` encoded values."""
        units = _bound_units(self.g_bound, self.frac_bits)
        if self.h_bound is not None:
            units = max(units, _bound_units(self.h_bound, self.frac_bits))
        return (self.n_rows * units).bit_length() + 1

    @property
    def bin_bits(self) -> int:
        """Bits of one bin (its ``g`` and ``h`` slots)."""
        return self.slots_per_bin * self.slot_bits

    @property
    def bins_per_ciphertext(self) -> int:
        """Bins packed into one ciphertext by :func:`~ftl.crypto.histograms.compress_bins`.

        ``k`` bins of ``s`` signed slots of ``w`` bits make a signed integer below
        ``2**(k*s*w - 1)`` in magnitude; it must stay below ``n / 2 >=
        2**(key_bits - 2)`` to decode from its residue mod ``n``.
        """
        return (self.key_bits - 1) // self.bin_bits


def _bound_units(bound: float, frac_bits: int) -> int:
    """Largest encoded magnitude of a value bounded by ``bound`` (a power of two)."""
    exponent = math.frexp(bound)[1] - 1  # bound == 2**exponent
    return 1 << max(0, exponent + frac_bits)


def _power_of_two_at_least(value: float, name: str) -> float:
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    mantissa, exponent = math.frexp(value)
    return math.ldexp(1.0, exponent - 1 if mantissa == 0.5 else exponent)


def gh_layout(
    key_bits: int,
    n_rows: int,
    g_bound: float,
    h_bound: float | None,
    frac_bits: int = DEFAULT_FRAC_BITS,
) -> GHLayout:
    """The packing layout for a tree's gradients and hessians, from public bounds.

    Parameters
    ----------
    key_bits : int
        Bits of the key owner's modulus (``own.n.bit_length()``).
    n_rows : int
        Training rows (every node and bin holds at most this many).
    g_bound : float
        Bound on ``|g|``, given by the loss (binary and multinomial log-loss: 1),
        or for squared error a bound the guest checks on its own data. Rounded up
        to a power of two, so the layout reveals at most its binary magnitude.
    h_bound : float or None
        Bound on ``h >= 0`` (log-losses: 0.25), rounded up likewise; ``None`` for
        constant hessians, which are then not encrypted.
    frac_bits : int, default=DEFAULT_FRAC_BITS
        Fixed-point fraction bits (precision: see the module notes).

    Returns
    -------
    GHLayout

    Raises
    ------
    FixedPointOverflowError
        If one bin does not fit the key.
    """
    return GHLayout(
        key_bits=int(key_bits),
        n_rows=int(n_rows),
        g_bound=_power_of_two_at_least(g_bound, "g_bound"),
        h_bound=None if h_bound is None else _power_of_two_at_least(h_bound, "h_bound"),
        frac_bits=int(frac_bits),
    )


def _checked_gh(gradients, hessians, layout: GHLayout) -> list[np.ndarray]:
    """The rows' values as float64 columns (``g``, then ``h``), within the layout."""
    g = np.asarray(gradients, dtype=np.float64)
    if g.ndim != 1:
        raise ValueError(f"gradients must be 1-d, got shape {g.shape}")
    if (hessians is None) != (layout.h_bound is None):
        raise ValueError("pass hessians exactly when the layout has an h_bound")
    columns = [g]
    if hessians is not None:
        h = np.asarray(hessians, dtype=np.float64)
        if h.shape != g.shape:
            raise ValueError(f"hessians of shape {h.shape} for gradients of shape {g.shape}")
        columns.append(h)
    if g.shape[0] > layout.n_rows:
        raise fixedpoint.FixedPointOverflowError(
            f"{g.shape[0]} rows for a layout of at most {layout.n_rows}: its slots could overflow"
        )
    if not all(np.isfinite(c).all() for c in columns):
        raise fixedpoint.FixedPointOverflowError("gradients and hessians must be finite")
    if g.size and np.abs(g).max() > layout.g_bound:
        raise fixedpoint.FixedPointOverflowError(
            f"a gradient of magnitude {np.abs(g).max():g} exceeds the layout's bound "
            f"|g| <= {layout.g_bound:g}"
        )
    if hessians is not None and g.size:
        h = columns[1]
        if h.min() < 0 or h.max() > layout.h_bound:
            raise fixedpoint.FixedPointOverflowError(
                f"hessians in [{h.min():g}, {h.max():g}] leave the layout's bounds "
                f"0 <= h <= {layout.h_bound:g}"
            )
    return columns


def encrypt_gh(own, gradients, hessians, layout: GHLayout) -> CiphertextArray | PlainArray:
    """Key owner: one ciphertext per row holding its ``g`` and ``h`` packed.

    Parameters
    ----------
    own : PaillierOwnKey or PlainOwnKey
        The guest's key; fresh randomness on every call, from the key's pool of
        precomputed factors first, and CRT/DJN encryption (in joblib workers for
        long vectors) for the rest.
    gradients, hessians : array-like of shape (n_rows,)
        Per-row values (float32 from the loss); ``hessians`` is ``None`` exactly
        when ``layout.h_bound`` is.
    layout : GHLayout

    Returns
    -------
    CiphertextArray of shape (n_rows,), or PlainArray of shape (n_rows, slots)
        The plaintext mode keeps the float64 values (no fixed point).

    Raises
    ------
    FixedPointOverflowError
        If a value is not finite or leaves the layout's bounds, or there are more
        rows than ``layout.n_rows``.
    """
    columns = _checked_gh(gradients, hessians, layout)
    if not isinstance(own, PaillierOwnKey):
        return PlainArray(np.column_stack(columns))
    check_key_bits(own.n, layout)
    ints = [fixedpoint.encode(c, layout.frac_bits).tolist() for c in columns]
    if len(ints) == 2:
        shift = layout.slot_bits
        packed = [g + (h << shift) for g, h in zip(*ints, strict=True)]
    else:
        packed = ints[0]
    return own.encrypt_integers(packed, (len(packed),))


def check_key_bits(n, layout: GHLayout) -> None:
    if int(n).bit_length() != layout.key_bits:
        raise ValueError(
            f"layout made for a {layout.key_bits}-bit key, used with a "
            f"{int(n).bit_length()}-bit one"
        )


def bins_per_feature(n_bins, n_features: int, n_bins_max: int) -> np.ndarray:
    if n_bins is None:
        return np.full(n_features, n_bins_max, dtype=np.int64)
    n_bins = np.asarray(n_bins)
    if n_bins.shape != (n_features,) or not np.issubdtype(n_bins.dtype, np.integer):
        raise ValueError(f"n_bins must hold one bin count per feature ({n_features})")
    if n_bins.size and (n_bins.min() < 0 or n_bins.max() > n_bins_max):
        raise ValueError(f"bin counts must lie in [0, {n_bins_max}]")
    return n_bins.astype(np.int64)


def decrypt_bin_sums(
    own,
    packed: CiphertextArray | PlainArray,
    layout: GHLayout,
    n_features: int,
    n_bins_max: int,
    n_bins: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Key owner: decrypt packed bin sums and decode their signed slots.

    Parameters
    ----------
    own : PaillierOwnKey or PlainOwnKey
    packed : CiphertextArray or PlainArray
        :func:`~ftl.crypto.histograms.compress_bins`' output.
    layout : GHLayout
    n_features, n_bins_max : int
        Shape of the histogram.
    n_bins : ndarray of int of shape (n_features,), optional
        As given to :func:`~ftl.crypto.histograms.compress_bins` (bins not sent are zero).

    Returns
    -------
    sum_gradients : ndarray of float64, shape (n_features, n_bins_max)
    sum_hessians : ndarray of float64 of the same shape, or None
        ``None`` when the layout has no hessians.

    Raises
    ------
    ValueError
        If the ciphertexts do not match the layout (count, key, or a plaintext
        wider than the packed slots).
    """
    n_bins = bins_per_feature(n_bins, n_features, n_bins_max)
    n_cells = int(n_bins.sum())
    slots = layout.slots_per_bin
    if not isinstance(own, PaillierOwnKey):
        if not isinstance(packed, PlainArray) or packed.values.shape != (n_cells, slots):
            raise ValueError("plaintext-mode bin sums of the wrong shape")
        cells = packed.values
    else:
        check_key_bits(own.n, layout)
        k = layout.bins_per_ciphertext
        if not isinstance(packed, CiphertextArray) or packed.values.shape != (-(-n_cells // k),):
            raise ValueError("packed bin sums do not match the layout")
        plain = own.decrypt_masked(packed)
        ints = _signed_slots(plain, int(own.n), layout.slot_bits, k * slots)
        cells = fixedpoint.decode(ints[: n_cells * slots], layout.frac_bits).reshape(-1, slots)
    out = np.zeros((slots, n_features, n_bins_max), dtype=np.float64)
    mask = np.arange(n_bins_max) < n_bins[:, None]
    for s in range(slots):
        out[s][mask] = cells[:, s]
    return out[0], (out[1] if slots == 2 else None)


def _signed_slots(plain: np.ndarray, n: int, width: int, count: int) -> np.ndarray:
    """Split residues mod ``n`` into ``count`` signed ``width``-bit slots each.

    A residue above ``n / 2`` is negative; each slot is read from the bottom as
    two's complement, and a negative slot borrows one from the slots above it,
    which is added back before reading them. Anything left above the last slot
    means the plaintext was not made with this layout.
    """
    full, half, mask = 1 << width, 1 << (width - 1), (1 << width) - 1
    out = []
    for value in plain.tolist():
        value = int(value)
        if value > n // 2:
            value -= n
        for _ in range(count):
            low = value & mask
            if low >= half:
                low -= full
            out.append(low)
            value = (value - low) >> width
        if value:
            raise ValueError("a decrypted bin sum overflows the layout's slots")
    result = np.empty(len(out), dtype=object)
    result[:] = out
    return result
