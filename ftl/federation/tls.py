"""Moved to :mod:`ftl.federation.transport.grpc.tls`; its names stay importable here."""

from ftl.federation.transport.grpc.tls import *  # noqa: F403  (the moved module's names)
from ftl.federation.transport.grpc.tls import __all__  # noqa: F401
