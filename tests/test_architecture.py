"""The package's shape: layered imports, a lazy face, one family of errors.

docs/architecture.md describes the layers; ``[tool.importlinter]`` in
pyproject.toml states them as a contract, which the first test checks.
"""

import importlib
import inspect
import json
import logging
import pkgutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
from click.testing import CliRunner
from importlinter.cli import lint_imports_command

import ftl
from ftl import exceptions

ROOT = Path(__file__).resolve().parents[1]


def test_imports_follow_the_layers():
    """No module imports from a higher layer or an independent sibling (lazy,
    function-level imports included)."""
    # import-linter configures logging with dictConfig, which disables every logger
    # that exists (ftl's included) for the rest of the test session: restore them
    loggers = [
        log for log in logging.root.manager.loggerDict.values() if isinstance(log, logging.Logger)
    ]
    disabled = [log.disabled for log in loggers]
    try:
        result = CliRunner().invoke(
            lint_imports_command, ["--no-cache", str(ROOT / "pyproject.toml")]
        )
    finally:
        for log, was in zip(loggers, disabled, strict=True):
            log.disabled = was
    if result.exit_code != 0:
        pytest.fail(f"import-linter found upward imports:\n{result.output}", pytrace=False)


def _fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter (nothing of ftl imported yet); its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return done.stdout


def test_import_ftl_loads_no_estimator_or_higher_layer():
    loaded = json.loads(
        _fresh_python("import ftl, json, sys; print(json.dumps(sorted(sys.modules)))")
    )
    heavy = ("ftl.linear_model", "ftl.transfer", "ftl.persistence", "ftl.reporting", "sklearn")
    assert not [m for m in loaded if m.startswith(heavy)]


def test_every_public_name_resolves_through_the_lazy_face():
    names = json.loads(
        _fresh_python(
            "import ftl, json\n"
            "print(json.dumps({n: type(getattr(ftl, n)).__name__ for n in ftl.__all__}))"
        )
    )
    assert set(names) == set(ftl.__all__)
    assert names["Party"] == "type" and names["datasets"] == "module"
    assert set(ftl.__all__) <= set(dir(ftl))
    assert ftl.persistence.export_party is importlib.import_module("ftl.persistence").export_party
    with pytest.raises(AttributeError):
        ftl.no_such_name  # noqa: B018


def _ftl_modules():
    for info in pkgutil.walk_packages(ftl.__path__, "ftl."):
        if info.name not in ("ftl.__main__",):
            yield importlib.import_module(info.name)


def test_every_error_derives_from_ftl_error_and_lives_in_ftl_exceptions():
    found = {}
    for module in _ftl_modules():
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith("ftl.")
                and not name.startswith("_")  # private control flow, never raised to users
            ):
                found[name] = value
    assert found, "no error classes found"
    for name, cls in found.items():
        assert issubclass(cls, exceptions.FTLError), name
        assert getattr(exceptions, name, None) is cls, f"{name} is not in ftl.exceptions"


@pytest.mark.parametrize(
    "old_path, name, builtin",
    [
        ("ftl.federation.messages", "MessageError", ValueError),
        ("ftl.federation.messages", "MissingFieldError", KeyError),
        ("ftl.federation.service", "ProtocolError", RuntimeError),
        ("ftl.federation.server", "ReplayError", RuntimeError),
        ("ftl.federation.channel", "PartyUnavailableError", RuntimeError),
        ("ftl.federation.tls", "PeerIdentityError", PermissionError),
        ("ftl.federation.policy", "PolicyError", PermissionError),
        ("ftl.crypto.keys", "InsecureKeyError", ValueError),
        ("ftl.crypto.fixedpoint", "FixedPointOverflowError", OverflowError),
    ],
)
def test_errors_keep_their_old_homes_and_builtin_bases(old_path, name, builtin):
    cls = getattr(importlib.import_module(old_path), name)
    assert cls is getattr(exceptions, name)
    assert issubclass(cls, builtin) and issubclass(cls, exceptions.FTLError)


def test_moved_modules_keep_their_names():
    from ftl.crypto import arrays, scheme
    from ftl.federation import codec, messages, schema
    from ftl.federation import server as old_server
    from ftl.federation.transport.grpc import server

    assert messages.CiphertextArray is arrays.CiphertextArray is scheme.CiphertextArray
    assert messages.encode is codec.encode and messages.register is schema.register
    assert old_server.PartyServer is server.PartyServer


def test_the_key_size_floor_is_written_once():
    """The number 2048 appears in code only where crypto/keys.py defines the floor
    and the default key size (prose and comments may say it)."""
    places = []
    for path in sorted((ROOT / "ftl").rglob("*.py")):
        with tokenize.open(path) as source:
            for token in tokenize.generate_tokens(source.readline):
                if token.type == tokenize.NUMBER and token.string == "2048":
                    places.append(f"{path.relative_to(ROOT).as_posix()}:{token.start[0]}")
    assert [p for p in places if not p.startswith("ftl/crypto/keys.py:")] == []
