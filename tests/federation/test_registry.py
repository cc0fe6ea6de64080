"""The protocol registry: one declaration per protocol, every name claimed once, and
the service, policy and persistence reading it (ftl/federation/protocols.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ftl
from ftl.exceptions import PolicyError
from ftl.federation import Message
from ftl.federation.policy import PROTOCOL_ROLES, Policy
from ftl.federation.protocols import (
    EstimatorSpec,
    ProtocolSpec,
    RegistryError,
    ShardCodec,
    estimator_spec,
    load_protocols,
    protocol,
    protocol_of_role,
    register_protocol,
    role_class,
    roles,
    shard_codec,
    unregister_protocol,
)
from ftl.federation.service import PartyService, ProtocolError, role

#: What policy.py hard-coded before the registry: the built-in families and roles.
BUILTIN_ROLES = {
    "psi": {"psi.host"},
    "lr": {"lr.host", "lr.predict"},
    "transfer": {"ftl.target", "ftl.target_predict"},
    "preprocessing": {"prep.party"},
}


@role("test.reg.host")
class _Host:
    def __init__(self, party, request):
        self.party = party


@role("test.reg.host")
class _SameName:
    def __init__(self, party, request):
        self.party = party


@role("test.other.host")
class _Other:
    def __init__(self, party, request):
        self.party = party


@pytest.fixture
def registered():
    """Register specs for one test; every one is removed afterwards."""
    families = []

    def register(**fields):
        spec = register_protocol(ProtocolSpec(**{"title": "test", **fields}))
        families.append(spec.family)
        return spec

    yield register
    for family in families:
        unregister_protocol(family)


def test_the_built_in_protocols_declare_what_was_hard_coded():
    specs = {spec.family: spec for spec in load_protocols()}
    assert {f: set(specs[f].role_names) for f in BUILTIN_ROLES} == BUILTIN_ROLES
    assert {f: set(PROTOCOL_ROLES[f]) for f in BUILTIN_ROLES} == BUILTIN_ROLES
    assert protocol("lr").policy_settings == {"allow_lbfgs": True}
    assert estimator_spec("FederatedLogisticRegression").driver_role == "guest"
    assert estimator_spec("FederatedTransferClassifier").driver_role == "source"
    assert (shard_codec("lr").role, shard_codec("ftl.target").role) == ("host", "target")
    assert role_class("lr.host").role_name == "lr.host"
    assert load_protocols() == load_protocols()  # imports once


def test_a_role_is_served_only_while_a_registered_spec_lists_it(registered):
    service = PartyService(ftl.Party("p", np.zeros((2, 1)), ids=[1, 2]))
    with pytest.raises(ProtocolError, match="unknown protocol role 'test.reg.host'"):
        service.admit("s" * 32, "test.reg.host.open")
    spec = registered(family="test_reg", message_prefix="test.reg.", roles=(_Host,))
    assert roles()["test.reg.host"] is _Host and protocol_of_role("test.reg.host") is spec
    assert service.admit("s" * 32, "test.reg.host.open") == {"ack"} | {
        t for t in ftl.federation.messages.registered_types() if t.startswith("test.reg.")
    }
    unregister_protocol("test_reg")
    with pytest.raises(ProtocolError, match="unknown protocol role"):
        service.admit("s" * 32, "test.reg.host.open")
    register_protocol(spec)  # for the fixture to remove


@pytest.mark.parametrize(
    "first, second, match",
    [
        # a role name twice: two classes of one name, or one class in two specs
        (dict(roles=(_Host,)), dict(roles=(_SameName,)), "role 'test.reg.host'"),
        (dict(roles=(_Host,)), dict(roles=(_Host,)), "role 'test.reg.host'"),
        (dict(), dict(family="test_reg"), "family 'test_reg' is already registered"),
        (dict(), dict(message_prefix="test.reg."), "message prefix"),
        (dict(), dict(message_prefix="test.reg.sub."), "message prefix"),
        (
            dict(estimators=(EstimatorSpec(_Host),)),
            dict(estimators=(EstimatorSpec(_Host),)),
            "estimator '_Host'",
        ),
        (
            dict(shards=(ShardCodec("k", "host", dict, dict),)),
            dict(shards=(ShardCodec("k", "host", dict, dict),)),
            "shard kind 'k'",
        ),
        (dict(policy_settings={"x": 1}), dict(policy_settings={"x": 2}), "policy setting 'x'"),
    ],
)
def test_a_name_claimed_twice_is_an_error(registered, first, second, match):
    registered(family="test_reg", message_prefix="test.reg.", **first)
    second = {"family": "test_two", "message_prefix": "test.two.", **second}
    with pytest.raises(RegistryError, match=match):
        registered(**second)
    assert "test_two" not in PROTOCOL_ROLES


def test_a_spec_that_contradicts_itself_is_refused(registered):
    with pytest.raises(RegistryError, match="declared twice"):
        registered(family="t", message_prefix="test.reg.", roles=(_Host, _SameName))
    with pytest.raises(RegistryError, match="does not start with its message prefix"):
        registered(family="t", message_prefix="test.two.", roles=(_Other,))
    with pytest.raises(RegistryError, match="message prefix ending in '.'"):
        registered(family="t", message_prefix="test")
    with pytest.raises(RegistryError, match="not all of to_json, from_json and shard_ids"):
        registered(
            family="t", message_prefix="test.t.", estimators=(EstimatorSpec(_Host, "guest"),)
        )
    with pytest.raises(RegistryError, match="not marked with @role"):
        registered(family="t", message_prefix="test.t.", roles=(dict,))
    with pytest.raises(RegistryError, match="unknown protocol family 'nope'"):
        unregister_protocol("nope")


def test_policy_families_settings_and_checks_come_from_the_registry(registered):
    seen = []

    def check(params, policy, rule):
        seen.append((dict(params), policy.setting("test_depth"), rule.identity))
        if params.get("depth", 0) > policy.test_depth:
            raise PolicyError(f"depth above {policy.test_depth}")

    registered(
        family="test_reg",
        message_prefix="test.reg.",
        roles=(_Host,),
        check_params=check,
        policy_settings={"test_depth": 3},
    )
    policy = Policy.from_dict({"test_depth": 5, "peers": [{"identity": "bank"}]})
    rule = policy.peer("bank")
    assert "test_reg" in rule.protocols and "test.reg.host" in rule.roles
    open_ = Message("ack", {"params": {"depth": 4}})
    policy.check_request(rule, "test.reg.host.open", open_)
    assert seen == [({"depth": 4}, 5, "bank")]
    with pytest.raises(PolicyError, match="depth above 3"):
        Policy(peers={"bank": rule}).check_request(rule, "test.reg.host.open", open_)
    # checks of another family's operations are not this one's
    policy.check_request(rule, "lr.host.open", Message("ack", {"params": {"depth": 9}}))
    assert len(seen) == 2
    with pytest.raises(ValueError, match="test_depth must be of type int"):
        Policy.from_dict({"test_depth": "deep", "peers": [{"identity": "bank"}]})
    with pytest.raises(
        ValueError, match=r"unknown protocol\(s\) \['nope'\]; known: \[.*'test_reg'"
    ):
        Policy.from_dict({"protocols": ["nope"], "peers": [{"identity": "bank"}]})
    with pytest.raises(ValueError, match="unknown protocol setting 'depth'"):
        Policy(settings={"depth": 1})
    with pytest.raises(AttributeError):
        _ = policy.no_such_setting


def test_persistence_names_unknown_estimators_and_shard_kinds(tmp_path):
    doc = {"format": "ftl-model", "version": 1, "role": "guest", "estimator": "os.system"}
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"unknown estimator 'os.system'; supported: \[.*Fed"):
        ftl.load_model(tmp_path / "m.json")
    party = ftl.Party("lab", np.zeros((2, 1)), ids=[1, 2])
    shard = {"format": "ftl-model-shard", "version": 1, "role": "host", "party": "lab"}
    (tmp_path / "s.json").write_text(json.dumps({**shard, "model_id": "m", "kind": "x.y"}))
    with pytest.raises(ValueError, match="unknown model kind 'x.y'"):
        party.import_model(tmp_path / "s.json")
    party.store_model("m", {"kind": "x.y"})
    with pytest.raises(ValueError, match="cannot save a model shard of kind 'x.y'"):
        party.export_model("m", tmp_path / "out.json")
