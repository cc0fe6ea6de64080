"""Transports: how encoded messages reach a party on another machine.

A transport is one folder. Its server answers a party's protocol operations with
what :class:`~ftl.federation.PartyService` answers in-process, behind the host's
policy, sessions and audit log (:mod:`ftl.federation.sessions`,
:mod:`ftl.federation.audit`, none of which knows the transport); its client is
what :class:`ftl.RemoteParty` sends requests through, an
:class:`~ftl.federation.channel.Endpoint` like any local party's. :mod:`.grpc` is
the one that ships: gRPC with mutual TLS.
"""
