"""A fit's step that ``ftl serve`` keeps in memory leaves memory once no request
kept or loaded it for ``session_ttl``, with the sweep of expired sessions -- not
only when its peer next keeps or loads a step, which an abandoned fit's peer may
never do. Its file, with ``checkpoint_dir``, stays: a driver still resumes from it.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import ftl
from ftl.exceptions import CheckpointError
from ftl.federation import Channel
from ftl.federation.audit import AuditLog
from ftl.federation.checkpoints import PartyCheckpoints
from ftl.federation.peer_views import PeerViews
from tests.security._serving import make_certs, policy, shop_party, start_server, tls_for

FIT_ID = "f" * 32


def step(number: int) -> dict:
    return {"step": number, "rows": 10 * number, "weights": np.arange(3.0)}


def peer_views(**kwargs) -> PeerViews:
    return PeerViews(
        shop_party(),
        policy("bank"),
        lock=threading.Lock(),
        audit=AuditLog("shop"),
        session_ttl=60.0,
        lease_ttls={"alignment": 1e6, "model": 1e6},
        **kwargs,
    )


def sweep(views: PeerViews, seconds_on: float) -> None:
    """Sweep as the session table does on a request ``seconds_on`` from now (no
    session of its own expired: the steps do not wait for one)."""
    with views._lock:
        views.free_expired([], time.monotonic() + seconds_on)


def test_the_sweep_frees_a_step_idle_in_memory_for_the_session_ttl():
    views = peer_views()
    kept = views.get("bank").checkpoints
    kept.keep("lr", FIT_ID, step(0))
    sweep(views, 30)
    assert kept.has("lr", FIT_ID)  # used within its ttl: kept
    sweep(views, 61)
    assert not kept.has("lr", FIT_ID)


def test_a_checkpoint_file_stays_when_its_copy_in_memory_is_freed(tmp_path):
    views = peer_views(checkpoint_dir=tmp_path)
    kept = views.get("bank").checkpoints
    kept.keep("lr", FIT_ID, step(0))
    kept.keep("lr", FIT_ID, step(1))
    sweep(views, 61)
    assert len(kept) == 0
    assert kept.load("lr", FIT_ID, 0)["rows"] == 10  # read back from its file


def test_the_sweep_frees_parts_of_a_run_that_kept_no_step_and_ended_sessions_claims():
    kept = PartyCheckpoints(None, "bank", ttl=60.0)

    class Session:
        superseded = False

    session = Session()
    kept.claim("psi", FIT_ID, session)
    kept.keep_part("psi", FIT_ID, "batch-0", {"rows": np.arange(4)}, owner=session)
    now = time.monotonic()
    kept.forget_idle(now + 30)
    assert kept.load_part("psi", FIT_ID, "batch-0")["rows"].size == 4  # within its ttl
    del session  # the driver went away: its session ended without finishing the run
    kept.forget_idle(now + 61)
    with pytest.raises(CheckpointError, match="lacks batch-0"):
        kept.load_part("psi", FIT_ID, "batch-0")
    assert len(kept._claims) == 0


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("checkpoint-expiry") / "certs")


def test_ftl_serve_frees_an_abandoned_fits_step_from_memory_after_the_session_ttl(
    certs, monkeypatch
):
    server, grpc_server, address = start_server(certs, session_ttl=1.0)
    rng = np.random.default_rng(1)
    bank = ftl.Party(
        "bank", rng.normal(size=(120, 2)), ids=np.arange(120), labels=rng.random(120) < 0.5
    )
    try:
        shop = ftl.RemoteParty("shop", address, tls=tls_for(certs, "bank"))
        X, y = ftl.align(bank, shop, order="id")

        class Crash(BaseException):
            """The driver stops mid-fit, and its user never fits again."""

        real_call = Channel.call

        def call(self, endpoint, name, request, origin=None):
            if name == "lr.host.update":
                raise Crash
            return real_call(self, endpoint, name, request, origin)

        with monkeypatch.context() as patch:
            patch.setattr(Channel, "call", call)
            with pytest.raises(Crash):
                ftl.FederatedLogisticRegression(encryption=None, max_iter=3).fit(X, y)
        kept = server.peers.get("bank").checkpoints
        # the driver closed its session (best effort), the host kept step 0 at the open
        assert len(kept) == 1
        time.sleep(1.5)  # longer than the session_ttl: nothing touches the step
        ftl.align(bank, shop)  # its first request sweeps
        assert len(kept) == 0
    finally:
        grpc_server.stop(0)
