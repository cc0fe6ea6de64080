"""Private set intersection (ECDH over the ristretto255 prime-order group).

:func:`ftl.align` uses this package to find and order the rows parties share;
:func:`intersection_size` returns only how many they share. Importing the
package registers the PSI message types and the ``psi.host`` role, which every
party that answers PSI requests needs.
"""

from ftl.psi import _protocol, messages  # noqa: F401  (registers the protocol and its messages)
from ftl.psi.cardinality import intersection_size
from ftl.psi.curve import canonical_ids, hash_to_curve
from ftl.psi.guest import DEFAULT_BATCH_SIZE, PROTOCOL, PSIPlan, run_psi
from ftl.psi.host import PSIHost

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "PROTOCOL",
    "PSIHost",
    "PSIPlan",
    "canonical_ids",
    "hash_to_curve",
    "intersection_size",
    "run_psi",
]
