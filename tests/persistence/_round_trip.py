"""What the persistence tests share: editing a saved file, comparing reloaded scores."""

from __future__ import annotations

import json

import numpy as np
import pytest


def rewrite(path, change):
    """Apply ``change`` to the JSON document in ``path`` and write it back; the path."""
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return path


def assert_same_scores(got, expected, params, atol):
    """A reloaded model scores as the saved one: bit for bit in plaintext mode, within
    ``atol`` when encrypted (the host's part crosses as fixed point)."""
    if params.get("encryption", "paillier") is None:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


def assert_each_change_refused(path, read, cases):
    """``read(path)`` raises a ValueError matching ``match`` after each ``(change,
    match)`` of ``cases``, each ``change`` made to the document ``path`` holds now."""
    original = path.read_text()
    for change, match in cases:
        path.write_text(original)
        with pytest.raises(ValueError, match=match):
            read(rewrite(path, change))
    path.write_text(original)
