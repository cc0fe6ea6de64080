"""The documentation builds with Sphinx without a single warning.

Runs ``python -m sphinx -W --keep-going -b html docs <tmp>`` exactly as a
developer would: numpydoc docstrings, MyST pages, cross-references and section
anchors are checked, and the notebooks in ``notebooks/`` are rendered from their
stored outputs (never executed), so this takes seconds, not minutes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("numpydoc")
pytest.importorskip("myst_nb")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    out = tmp_path / "html"
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-j",
        "1",
        "-q",
        "-b",
        "html",
        "-d",
        str(tmp_path / "doctrees"),
        str(DOCS),
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"sphinx-build failed (exit {proc.returncode}); warnings and errors:\n"
        f"{proc.stderr}\n{proc.stdout[-3000:]}"
    )
    assert (out / "index.html").is_file()
    assert (out / "api" / "index.html").is_file()
    # every notebook is a tutorial page (the tutorial's toctree globs them)
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert (out / "tutorial" / "notebooks" / f"{notebook.stem}.html").is_file(), notebook
