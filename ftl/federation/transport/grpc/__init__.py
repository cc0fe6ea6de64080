"""The gRPC transport with mutual TLS: ``ftl serve`` and :class:`ftl.RemoteParty`.

:mod:`.wire` is what travels (one service, chunked bytes, call metadata),
:mod:`.tls` the certificates each side presents, :mod:`.server` the host's
servicer and :mod:`.client` the driver's connection.
"""
