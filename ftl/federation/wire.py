"""Moved to :mod:`ftl.federation.transport.grpc.wire`; its names stay importable here."""

from ftl.federation.transport.grpc.wire import *  # noqa: F403  (the moved module's names)
from ftl.federation.transport.grpc.wire import __all__  # noqa: F401
