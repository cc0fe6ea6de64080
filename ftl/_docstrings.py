"""Docstring text that several public functions and classes share, written once.

A docstring names a shared fragment on a line of its own, ``%(name)s`` indented
as the text it stands for; :func:`fill_doc` replaces that line with the fragment,
every line of it indented alike. ``help()``, :func:`inspect.getdoc` and Sphinx
then read the docstring as if it had been written out in full.

The fragments below are numpydoc text written from column 0; a fragment that only
one package needs lives in that package.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

__all__ = [
    "CHECKPOINT_DIR_PARAMETER",
    "ENCRYPTION_PARAMETERS",
    "N_JOBS_PARAMETER",
    "PREDICT_BATCH_ROWS_PARAMETER",
    "WRITTEN_FILE",
    "fill_doc",
]

_T = TypeVar("_T")
_PLACEHOLDER = re.compile(r"^([ \t]*)%\((\w+)\)s[ \t]*$", re.MULTILINE)

#: ``path`` and the return value of a function that writes one JSON file.
WRITTEN_FILE = """\
path : str or path-like
    Where to write the file (replaced if it exists).

Returns
-------
pathlib.Path
    The written path."""

#: The crypto parameters every federated estimator takes.
ENCRYPTION_PARAMETERS = """\
encryption : {"paillier"} or None, default="paillier"
    ``None`` runs the same protocol in plaintext (for debugging, tuning and
    measuring what encryption costs; never for real data).
key_size : int, default=2048
    Paillier modulus bits of every party's key.
insecure_for_tests : bool, default=False
    Allow keys below 2048 bits (tests only)."""

#: joblib parallelism of a federated estimator's encrypted arithmetic.
N_JOBS_PARAMETER = """\
n_jobs : int, default=None
    joblib workers for encryption and encrypted products."""


#: Checkpoint and resume of a fit (the linear estimators, transfer learning).
CHECKPOINT_DIR_PARAMETER = """\
checkpoint_dir : str, path-like or None, default=None
    Folder where the guest keeps its checkpoint of the fit after every
    completed iteration (an epoch, with Adam or SGD): its weights, optimiser
    state, counters, random generator and its own key pair, in one JSON file
    (mode 0600) per fit, named by the fit's fingerprint (parameters, alignment,
    the guest's training data, the hosts). Calling ``fit`` again with the same
    fingerprint -- after the driver crashed or was stopped -- resumes from the
    last completed iteration and ends with the model an uninterrupted fit
    gives; the file is removed when the fit ends. Each host keeps its own part
    (``ftl serve``'s ``checkpoint_dir``; the driver keeps a simulation's). A
    host that restarts mid-fit is resumed without it (docs/howto/deploy.md,
    *Checkpoints and resume*). With ``predict_batch_rows`` prediction keeps
    its finished batches there too. ``None``: nothing is written."""

#: Batch prediction of every federated estimator (docs/howto/deploy.md).
PREDICT_BATCH_ROWS_PARAMETER = """\
predict_batch_rows : int or None, default=None
    Score the rows of ``predict``, ``predict_proba`` and ``decision_function``
    in batches of at least this many rows (``n_rows // predict_batch_rows``
    batches of nearly equal size), each one complete prediction request to
    every host -- counted by each host's policy and privacy budget like any
    other, so keep it at or above the hosts' ``min_prediction_rows``. With
    ``checkpoint_dir`` the guest keeps the finished batches' scores there, and
    a call with the same model and rows after a crash of the driver or a host
    scores only the batches still missing and returns what an uninterrupted
    call returns; a re-scored batch is a new request to the hosts. ``None``:
    one request of every row."""


def fill_doc(**fragments: str) -> Callable[[_T], _T]:
    """Decorate a function or class: put ``fragments`` into its docstring.

    Parameters
    ----------
    **fragments : str
        The text of each placeholder ``%(name)s`` in the docstring, written from
        column 0.

    Returns
    -------
    callable
        The decorator; it returns the object it is given, with its docstring
        filled in.

    Raises
    ------
    KeyError
        If the docstring names a fragment that is not given.
    ValueError
        If a fragment is given that the docstring does not name (a typo would
        otherwise leave text out silently).
    """

    def decorate(obj: _T) -> _T:
        used: set[str] = set()

        def fragment(match: re.Match) -> str:
            indent, name = match.groups()
            used.add(name)
            lines = fragments[name].splitlines()
            return "\n".join(indent + line if line else line for line in lines)

        doc = obj.__doc__ or ""
        filled = _PLACEHOLDER.sub(fragment, doc)
        unused = sorted(set(fragments) - used)
        if unused:
            raise ValueError(f"{obj.__qualname__}'s docstring names no fragment {unused}")
        obj.__doc__ = filled
        return obj

    return decorate
