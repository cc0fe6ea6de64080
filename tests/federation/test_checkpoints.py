"""Checkpoint files and a party's checkpoints (``ftl.federation.checkpoints``).

The estimator-level behaviour (a resumed fit is the uninterrupted one) is in
``tests/linear_model/test_checkpoint.py``; a restarted ``ftl serve`` in
``tests/data/test_remote_resume.py``.
"""

from __future__ import annotations

import json
import stat
import textwrap

import numpy as np
import pytest

from ftl.exceptions import CheckpointError
from ftl.federation.checkpoints import (
    PartyCheckpoints,
    checkpoints_of,
    fingerprint,
    read_checkpoint,
    write_checkpoint,
)
from ftl.federation.config import load_config


def state(step: int, rows: int = 0) -> dict:
    return {"step": step, "rows": rows, "weights": np.array([0.1, -2.5, 1e-300]), "big": 2**200}


def test_a_checkpoint_round_trips_exactly_and_privately(tmp_path):
    body = {"w": np.array([[0.1, 1 / 3], [np.inf, -0.0]]), "n": 2**130, "s": "x", "none": None}
    path = write_checkpoint(tmp_path / "new" / "run.json", "test", "fp", body)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not list(path.parent.glob(".*"))  # no temporary file left
    back = read_checkpoint(path, "test", "fp")
    np.testing.assert_array_equal(back["w"], body["w"])
    assert back["w"].tobytes() == body["w"].tobytes()  # bit for bit
    assert (back["n"], back["s"], back["none"]) == (2**130, "x", None)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d["body"].update(n=3), "corrupted or was modified"),
        (lambda d: d.update(digest="0" * 64), "corrupted or was modified"),
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d.update(format="other"), "not an ftl checkpoint"),
    ],
)
def test_a_modified_checkpoint_is_refused(tmp_path, change, match):
    path = write_checkpoint(tmp_path / "run.json", "test", "fp", {"n": 2})
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=match):
        read_checkpoint(path, "test", "fp")


def test_a_checkpoint_of_another_kind_or_run_is_refused(tmp_path):
    path = write_checkpoint(tmp_path / "run.json", "test", "fp", {"n": 2})
    with pytest.raises(CheckpointError, match="not a 'other'"):
        read_checkpoint(path, "other", "fp")
    with pytest.raises(CheckpointError, match="belongs to another run"):
        read_checkpoint(path, "test", "another")
    path.write_text("not json")
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_checkpoint(path, "test")


def test_fingerprints_see_values_and_array_bytes():
    a = {"p": 1, "x": np.arange(3.0)}
    assert fingerprint(a) == fingerprint({"x": np.arange(3.0), "p": 1})
    assert fingerprint(a) != fingerprint({"p": 1, "x": np.arange(3.0) + [0, 0, 1e-9]})
    assert fingerprint(a) != fingerprint({"p": 1, "x": np.arange(3)})  # another dtype


def test_a_party_keeps_its_last_two_steps_and_rows_never_go_back(tmp_path):
    kept = PartyCheckpoints(tmp_path, "bank")
    for step in range(4):
        kept.keep("lr", "a" * 32, state(step, rows=100 * step))
    # after a restart (a new store on the same folder): the last two steps only
    again = PartyCheckpoints(tmp_path, "bank")
    with pytest.raises(CheckpointError, match=r"keeps steps \[2, 3\], not step 1"):
        again.load("lr", "a" * 32, 1)
    back = again.load("lr", "a" * 32, 2)
    assert back["step"] == 2 and back["rows"] == 300  # the later step's rows count
    assert back["big"] == 2**200 and back["weights"].tobytes() == state(2)["weights"].tobytes()
    assert again.load("lr", "a" * 32, 3)["step"] == 3  # a load changes nothing
    # going on from step 2 replaces step 3, and keeps step 2 as the previous one
    again.keep("lr", "a" * 32, state(3, rows=350))
    assert again.load("lr", "a" * 32, 3)["rows"] == 350
    assert again.load("lr", "a" * 32, 2)["step"] == 2
    again.discard("lr", "a" * 32)
    assert not list((tmp_path / "lr").iterdir())


def test_another_identity_finds_nothing_of_a_run(tmp_path):
    PartyCheckpoints.for_peer(tmp_path, "bank").keep("lr", "b" * 32, state(0))
    stranger = PartyCheckpoints.for_peer(tmp_path, "stranger")
    with pytest.raises(CheckpointError, match="no resumable lr run .* of peer 'stranger'"):
        stranger.load("lr", "b" * 32, 0)
    # a file copied into the stranger's folder is refused too
    (tmp_path / "stranger" / "lr").mkdir(parents=True)
    source = tmp_path / "bank" / "lr" / f"{'b' * 32}.json"
    (tmp_path / "stranger" / "lr" / source.name).write_text(source.read_text())
    with pytest.raises(CheckpointError, match="belongs to another run"):
        stranger.load("lr", "b" * 32, 0)
    with pytest.raises(CheckpointError, match="not a valid id"):
        stranger.load("lr", "../bank/lr/" + "b" * 32, 0)
    with pytest.raises(ValueError, match="cannot name a checkpoint folder"):
        PartyCheckpoints.for_peer(tmp_path, "../bank")


def test_memory_checkpoints_serve_a_live_party_and_are_forgotten_after_their_ttl(tmp_path):
    kept = PartyCheckpoints(None, "bank", ttl=0.0)
    kept.keep("lr", "c" * 32, state(0))
    with pytest.raises(CheckpointError, match="no resumable"):
        kept.load("lr", "c" * 32, 0)  # idle for longer than its ttl
    kept = PartyCheckpoints(None, "bank")
    kept.keep("lr", "c" * 32, state(0))
    assert kept.load("lr", "c" * 32, 0)["step"] == 0
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_claim_names_and_stops_the_session_it_supersedes():
    class Session:
        superseded = False

    kept = PartyCheckpoints(None, "bank")
    first, second = Session(), Session()
    assert kept.claim("lr", "d" * 32, first) is None
    assert kept.claim("lr", "d" * 32, second) is first
    assert first.superseded and not second.superseded
    assert kept.claim("lr", "d" * 32, second) is None  # claiming again supersedes nothing
    assert not second.superseded
    del first
    assert kept.claim("lr", "d" * 32, Session()) is second
    assert second.superseded


def test_alignment_tables_are_kept_and_reloaded(tmp_path):
    class Party:
        def __init__(self):
            self.alignments = {}

        def remember_alignment(self, alignment_id, rows):
            self.alignments[alignment_id] = rows

    kept = PartyCheckpoints(tmp_path, "bank")
    kept.keep_alignment("e" * 32, np.array([4, 0, 2]))
    (tmp_path / "alignments" / "broken.json").write_text("{}")
    party = Party()
    assert kept.reload_alignments(party) == 1  # the broken file is logged and skipped
    np.testing.assert_array_equal(party.alignments["e" * 32], [4, 0, 2])
    party.checkpoints = kept
    derived = type("Derived", (), {"_base": party})()
    assert checkpoints_of(derived) is kept and checkpoints_of(object()) is None


def test_the_host_config_names_a_checkpoint_dir(tmp_path):
    (tmp_path / "shop.csv").write_text("id,a\n1,0.5\n")
    config = tmp_path / "shop.toml"
    config.write_text(
        textwrap.dedent(
            """
            [party]
            name = "shop"
            data = "shop.csv"
            id_column = "id"

            [server]
            checkpoint_dir = "ckpt"

            [tls]
            cert = "shop.crt"
            key = "shop.key"
            ca = "ca.crt"

            [[policy.peers]]
            identity = "bank"
            """
        )
    )
    settings = load_config(config).server_settings()
    assert settings["checkpoint_dir"] == tmp_path / "ckpt"
