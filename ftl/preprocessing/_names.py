"""Output feature names that carry no data: positional names a party may publish.

A fitted scikit-learn transformer names its outputs after what it learned:
``OneHotEncoder`` writes every category it found into a name (``city_75056.0``).
Feature names cross to the driver (in ``prep.fitted``, ``prep.derived`` and the
served party's public facts), so a party never publishes those names. It fits
every transformer on columns named by *placeholders* (``<0>``, ``<1>``, ...),
lets scikit-learn name the outputs from them, and keeps of each name only which
placeholders it mentions; everything else -- categories, thresholds, anything a
future scikit-learn writes there -- is dropped. The published names are:

* the input column's name, for an output that is exactly one input column
  passed through, scaled or imputed (``income``);
* ``<input>_<k>``, the ``k``-th of the outputs derived from that input column
  (one-hot columns, bins, a missing-value indicator: ``city_0``, ``city_1``);
* ``<input> <input>_<k>`` for an output derived from several columns (a
  polynomial interaction) and ``1_<k>`` for one derived from none (a bias).

So only counts cross: how many outputs each input column has, which is the
width of the party's block. The scikit-learn names stay at the party, inside
the fitted transformer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["legacy_placeholder_names", "placeholders", "positional_names"]

_PLACEHOLDER = re.compile(r"<(\d+)>")


def placeholders(n: int) -> list[str]:
    """Column names a party fits its transformers on (``<0>`` ... ``<n-1>``).

    Party features are numbers, and no name scikit-learn builds from numbers
    (``1.0``, ``-2.5e-05``, ``nan``, ``infrequent_sklearn``, ``x0^2``) holds an
    angle bracket, so a placeholder in an output name always names an input.
    """
    return [f"<{j}>" for j in range(int(n))]


def positional_names(raw: Sequence[str], input_names: Sequence[str]) -> list[str]:
    """Publishable names of outputs that scikit-learn named from :func:`placeholders`.

    Parameters
    ----------
    raw : sequence of str
        ``get_feature_names_out()`` of a transformer fitted on placeholder columns.
    input_names : sequence of str
        The party's names of those columns.

    Returns
    -------
    list of str
        One name per output, built only from ``input_names`` and counters.

    Raises
    ------
    ValueError
        If a name mentions an unknown placeholder, or two outputs would share
        a name (an input column named like another's derived output, e.g.
        ``city_0`` next to an encoded ``city``).
    """
    inputs = [str(c) for c in input_names]
    counters: dict[tuple[int, ...], int] = {}
    out = []
    for name in raw:
        found = [int(j) for j in _PLACEHOLDER.findall(str(name))]
        if any(j >= len(inputs) for j in found):
            raise ValueError(f"output name {name!r} names an unknown input column")
        if len(found) == 1 and str(name) == f"<{found[0]}>":
            out.append(inputs[found[0]])  # the column itself (scaled, imputed, ...)
            continue
        key = tuple(dict.fromkeys(found))  # the columns it derives from, in order
        k = counters.get(key, 0)
        counters[key] = k + 1
        base = " ".join(inputs[j] for j in key) or "1"
        out.append(f"{base}_{k}")
    if len(set(out)) != len(out):
        seen: set[str] = set()
        clash = next(c for c in out if c in seen or seen.add(c))
        raise ValueError(
            f"two output features would both be named {clash!r}; rename the party's "
            "column so that it does not look like another column's derived output"
        )
    return out


def legacy_placeholder_names(raw: Sequence[str], input_names: Sequence[str]) -> list[str]:
    """Names written by a transformer fitted on real column names, in placeholder form.

    Transformers saved by ftl before positional names were fitted on the party's
    column names, so their scikit-learn names hold the column names (and an
    encoder's categories). Each name is attributed to the columns it starts
    with or consists of -- the forms the allowlisted transformers produce --
    and rewritten with placeholders for :func:`positional_names`. What is not
    attributed counts as derived from no column; the result never holds more
    than input names and counters.
    """
    inputs = [str(c) for c in input_names]
    index = {name: j for j, name in enumerate(inputs)}
    by_length = sorted(index, key=len, reverse=True)
    out = []
    for name in (str(n) for n in raw):
        if name in index:
            out.append(f"<{index[name]}>")
            continue
        body = name.removeprefix("missingindicator_")
        if body in index:
            out.append(f"missingindicator_<{index[body]}>")
            continue
        prefix = next((p for p in by_length if body.startswith(f"{p}_")), None)
        if prefix is not None:
            out.append(f"<{index[prefix]}>_")
            continue
        terms = [re.sub(r"\^\d+$", "", t) for t in name.split(" ")]
        if all(t in index for t in terms):
            out.append(" ".join(f"<{index[t]}>^" for t in terms))
        else:
            out.append("")
    return out
