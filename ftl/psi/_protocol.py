"""The PSI protocol's declaration in the protocol registry (family ``"psi"``)."""

from __future__ import annotations

from ftl.federation.protocols import ProtocolSpec, register_protocol
from ftl.psi._disclosure import DISCLOSURE
from ftl.psi.host import PSIHost

SPEC = register_protocol(
    ProtocolSpec(
        family="psi",
        title="private set intersection (ECDH over ristretto255)",
        message_prefix="psi.",
        roles=(PSIHost,),
        report=DISCLOSURE,
        docs="docs/protocols.md §2",
    )
)
