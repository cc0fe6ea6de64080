"""Typed cross-party messages and their explicit byte serialisation.

The names protocols import, from where they live: the encrypted value types in
:mod:`ftl.crypto.arrays`, the schemas in :mod:`ftl.federation.schema`, the byte
codec in :mod:`ftl.federation.codec`.
"""

from ftl.crypto.arrays import CiphertextArray, PlainArray
from ftl.federation import codec, schema
from ftl.federation.codec import *  # noqa: F403  (the codec's names)
from ftl.federation.schema import *  # noqa: F403  (the schemas' names)

__all__ = ["CiphertextArray", "PlainArray", *codec.__all__, *schema.__all__]
