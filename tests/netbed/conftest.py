"""Fixtures of the network tests: the bed, the parties' files, ``ftl serve`` on the link.

The network tests need network namespaces (root and iproute2): where those cannot
be made, :func:`bed` skips them with the reason, and nothing else skips (the
proxy's own tests need neither).
"""

from __future__ import annotations

import pytest

from .bed import NetBed, namespaces_unavailable
from .deployment import TEST_POLICY, prepare

#: Shared customers of the test runs: a few hundred rows of the bundled breast data.
ROWS = 300


def require_namespaces() -> None:
    """Skip the calling test, with the reason, where network namespaces cannot be made."""
    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def bed(tmp_path_factory):
    """Two namespaces joined by a veth pair for the whole session, deleted at its end."""
    require_namespaces()
    with NetBed(tmp_path_factory.mktemp("netbed")) as made:
        yield made


@pytest.fixture(scope="module")
def deployment(bed, tmp_path_factory):
    """A hospital (guest) and a lab (host) sharing ``ROWS`` customers."""
    return prepare(tmp_path_factory.mktemp("deployment"), "breast", rows=ROWS)


@pytest.fixture(scope="module")
def lab(bed, deployment):
    """``ftl serve`` for the lab in the host's namespace, allowing plaintext mode."""
    host = bed.serve(deployment.write_config("lab", TEST_POLICY))
    yield host
    host.stop()
