"""Moved to :mod:`ftl.federation.transport.grpc.server` (``ftl serve``); its names
stay importable here."""

from ftl.federation.transport.grpc.server import *  # noqa: F403  (the moved module's names)
from ftl.federation.transport.grpc.server import __all__  # noqa: F401
