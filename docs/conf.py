"""Sphinx configuration of the ftl documentation.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(``tests/test_docs.py`` runs exactly that). Notebooks are rendered from their
stored outputs and never executed here.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import sys
import tempfile
import textwrap
from pathlib import Path

from sphinx.util import logging

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Document the source tree next to this file, also when an installed copy exists.
sys.path.insert(0, str(ROOT))

import ftl  # noqa: E402

logger = logging.getLogger(__name__)

# -- project -------------------------------------------------------------------------
project = "ftl"
author = "ftl developers"
copyright = "ftl developers"  # noqa: A001
release = ftl.__version__
version = ".".join(release.split(".")[:2])

# -- general -------------------------------------------------------------------------
extensions = [
    "myst_nb",  # MyST Markdown (myst_parser) and notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
]
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "**.ipynb_checkpoints",
    "jupyter_execute",
]
root_doc = "index"
language = "en"

# -- MyST and notebooks ----------------------------------------------------------------
# Pages link to section anchors such as ``protocols.md#25-howleft``.
myst_heading_anchors = 3
# $...$ and $$...$$ math, as Jupyter renders it in the notebooks
myst_enable_extensions = ["colon_fence", "dollarmath"]
# ```math fences (GitHub's syntax, used by the explanation pages) are LaTeX display math
myst_fence_as_directive = ["math"]
# Notebooks are committed with their outputs (executed by the test suite); render
# them as stored.
nb_execution_mode = "off"

# -- autodoc, autosummary, numpydoc ----------------------------------------------------
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc "Parameters" sections say it all
autosummary_generate = False  # summary tables only; the pages use autodoc directives
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# -- HTML ----------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"ftl {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Privacy-preserving federated learning with a scikit-learn face",
    "fixed_sidebar": True,
}

# -- notebooks: copied from ../notebooks at build time --------------------------------
NOTEBOOKS_SRC = ROOT / "notebooks"
NOTEBOOKS_DST = DOCS / "tutorial" / "notebooks"  # generated, git-ignored
TUTORIAL_INDEX = "tutorial/index"
_NOTEBOOKS: list[str] = []  # names of the notebooks copied by this build


# Files outside docs/ that the documentation renders under another name.
_RENDERED_AS = {ROOT / "benchmarks" / "RESULTS.md": DOCS / "benchmarks.md"}
_MD_LINK = re.compile(r"(!?\[[^\]\n]*\]\(<?)([^)\s>]+)")


def _rebase_link(target: str) -> str:
    """A link written relative to ``notebooks/``, made relative to the copy's folder.

    Links to the documentation's own pages (``../docs/protocols.md#...``,
    ``../benchmarks/RESULTS.md``) and to other notebooks keep working in the
    copy; URLs, anchors and other targets are left as they are.
    """
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return target
    path, hash_, fragment = target.partition("#")
    resolved = (NOTEBOOKS_SRC / path).resolve()
    if resolved.parent == NOTEBOOKS_SRC.resolve():
        return target  # another notebook: copied next to this one
    resolved = _RENDERED_AS.get(resolved, resolved)
    if DOCS not in resolved.parents:
        return target
    return Path(os.path.relpath(resolved, NOTEBOOKS_DST)).as_posix() + hash_ + fragment


def _notebook_copy(src: Path) -> bytes:
    """The bytes of ``src`` for the docs: itself, or with its Markdown links rebased."""
    raw = src.read_bytes()
    try:
        notebook = json.loads(raw)
    except ValueError:
        return raw  # not JSON: let myst-nb report it
    changed = False
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        text = "".join(cell.get("source", ""))
        new = _MD_LINK.sub(lambda m: m.group(1) + _rebase_link(m.group(2)), text)
        if new != text:
            cell["source"], changed = new, True
    if not changed:
        return raw
    return (json.dumps(notebook, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def _copy_notebooks(app) -> None:
    """Mirror ``../notebooks/*.ipynb`` into ``docs/tutorial/notebooks/``.

    Markdown links relative to ``notebooks/`` are rebased (see :func:`_rebase_link`);
    unchanged copies are left alone (their mtimes too, so incremental builds stay
    incremental); copies of notebooks removed from ``notebooks/`` are deleted.
    """
    NOTEBOOKS_DST.mkdir(parents=True, exist_ok=True)
    sources = sorted(NOTEBOOKS_SRC.glob("*.ipynb")) if NOTEBOOKS_SRC.is_dir() else []
    names = {p.name for p in sources}
    for stale in NOTEBOOKS_DST.glob("*.ipynb"):
        if stale.name not in names:
            stale.unlink()
    for src in sources:
        dst = NOTEBOOKS_DST / src.name
        content = _notebook_copy(src)
        if dst.exists() and dst.read_bytes() == content:
            continue
        # write then rename, so that a concurrent build never reads half a file
        fd, tmp = tempfile.mkstemp(dir=NOTEBOOKS_DST, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        mtime = src.stat().st_mtime
        os.utime(tmp, (mtime, mtime))
        os.replace(tmp, dst)
    _NOTEBOOKS[:] = sorted(names)


def _tutorial_without_notebooks(app, docname: str, source: list[str]) -> None:
    """Drop the tutorial's glob toctree while ``notebooks/`` has no notebooks.

    Sphinx warns about a glob that matches nothing, which ``-W`` turns into an
    error; the glob itself stays in the page, so notebooks appear as soon as they
    are added.
    """
    if docname != TUTORIAL_INDEX or _NOTEBOOKS:
        return
    text = source[0]
    start = text.find("```{toctree}")
    if start >= 0:
        end = text.find("```", start + len("```{toctree}"))
        source[0] = text[:start] + text[end + 3 :]


def _always_reread(app, env, added, changed, removed) -> list[str]:
    """Pages whose content depends on more than their source: re-read them every time.

    The tutorial index (its toctree depends on ``notebooks/``) and the pages that
    include an optional module (it may have appeared since the last build).
    """
    return [d for d in (TUTORIAL_INDEX, *OPTIONAL_MODULE_PAGES) if d in env.found_docs]


# -- optional module: documented once it exports something ---------------------------
# ``ftl.preprocessing`` is being written. A page includes it with
#
#     .. ftl-optional-module:: ftl.preprocessing
#
#        <indented reST, e.g. a section with automodule>
#
# and may list its classes and functions with ``.. ftl-module-summary:: NAME`` (an
# autosummary table of ``__all__``; it sets the current module to NAME). Both are
# expanded in the page source, so that section titles nest like any other: to
# nothing while the module does not exist or has neither a docstring nor
# ``__all__``; a module that fails to import is reported as a warning.
_OPTIONAL_BLOCK = re.compile(r"^\.\. ftl-optional-module:: *(\S+)\n((?:[ \t]*\n|   .*\n)*)", re.M)
_SUMMARY = re.compile(r"^([ \t]*)\.\. ftl-module-summary:: *(\S+)[ \t]*$", re.M)
OPTIONAL_MODULE_PAGES = ("api/index", "api/preprocessing")


def _import_optional(name: str, docname: str):
    """The module ``name``, or None if it does not exist (quietly) or fails (warning)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            return None  # the module (or its package) does not exist yet
        logger.warning("cannot import %s: %r", name, exc, location=docname)
    except Exception as exc:  # noqa: BLE001 - report any import failure
        logger.warning("cannot import %s: %r", name, exc, location=docname)
    return None


def _module_summary(match: re.Match, docname: str) -> str:
    indent, name = match.group(1), match.group(2)
    module = _import_optional(name, docname)
    exported = [
        n
        for n in getattr(module, "__all__", ())
        if inspect.isclass(getattr(module, n, None)) or inspect.isfunction(getattr(module, n, None))
    ]
    if not exported:
        return ""
    # sets the current module, like ``.. currentmodule::`` (set it again afterwards)
    lines = [f"{indent}.. currentmodule:: {name}", "", f"{indent}.. autosummary::", ""]
    return "\n".join(lines + [f"{indent}   {n}" for n in exported])


def _optional_block(match: re.Match, docname: str) -> str:
    module = _import_optional(match.group(1), docname)
    if module is None or not (module.__doc__ or getattr(module, "__all__", None)):
        return ""
    return textwrap.dedent(match.group(2))


def _expand_optional_modules(app, docname: str, source: list[str]) -> None:
    text = source[0]
    if "ftl-optional-module" not in text and "ftl-module-summary" not in text:
        return
    text = _OPTIONAL_BLOCK.sub(lambda m: _optional_block(m, docname), text)
    source[0] = _SUMMARY.sub(lambda m: _module_summary(m, docname), text)


def setup(app):
    # ```mermaid fences (rendered by GitHub) are shown as their plain-text source
    from pygments.lexers.special import TextLexer

    app.add_lexer("mermaid", TextLexer)
    app.connect("builder-inited", _copy_notebooks)
    app.connect("source-read", _tutorial_without_notebooks)
    app.connect("source-read", _expand_optional_modules)
    app.connect("env-get-outdated", _always_reread)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
