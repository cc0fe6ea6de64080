"""Shared docstring text: filled in where it is named, nowhere left as a placeholder."""

import importlib
import inspect
import pkgutil

import pytest

import ftl
from ftl._docstrings import WRITTEN_FILE, fill_doc


def test_a_fragment_takes_the_indentation_of_its_placeholder():
    @fill_doc(written_file=WRITTEN_FILE)
    def write(path):
        """Write something.

        Parameters
        ----------
        %(written_file)s
        """

    expected = """Write something.

        Parameters
        ----------
        path : str or path-like
            Where to write the file (replaced if it exists).

        Returns
        -------
        pathlib.Path
            The written path.
        """
    assert write.__doc__ == expected
    assert "%(" not in inspect.getdoc(write)


def test_a_missing_or_unused_fragment_is_an_error_at_import():
    def documented():
        """%(nowhere)s"""

    with pytest.raises(KeyError, match="nowhere"):
        fill_doc()(documented)
    with pytest.raises(ValueError, match=r"names no fragment \['typo'\]"):
        fill_doc(nowhere="text", typo="text")(documented)


def _documented_objects():
    for info in pkgutil.walk_packages(ftl.__path__, "ftl."):
        if info.name == "ftl.__main__":
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(value) or inspect.isclass(value):
                yield value
                if inspect.isclass(value):
                    yield from (m for m in vars(value).values() if inspect.isfunction(m))


def test_no_docstring_in_ftl_keeps_a_placeholder():
    left = [
        obj.__qualname__
        for obj in _documented_objects()
        if obj.__doc__ and "%(" in obj.__doc__ and obj is not fill_doc
    ]
    assert left == []
