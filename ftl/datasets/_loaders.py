"""Loaders returning (guest, host) :class:`~ftl.Party` pairs for the bundled data."""

from __future__ import annotations

from importlib.resources import files

import pandas as pd

from ftl.data.party import Party

_DATA = files("ftl.datasets") / "data"


def _read(name: str) -> pd.DataFrame:
    with (_DATA / name).open("rb") as fh:
        return pd.read_csv(fh)


def _pair(
    stem: str,
    id_column: str,
    label_column: str,
    guest_name: str,
    host_name: str,
    fill_missing: bool = False,
) -> tuple[Party, Party]:
    guest = _read(f"{stem}_guest.csv")
    host = _read(f"{stem}_host.csv")
    if fill_missing:
        # LIBSVM sparse sources leave zero features out; FATE's CSVs keep them empty.
        guest = guest.fillna(0.0)
        host = host.fillna(0.0)
    return (
        Party(guest_name, guest, id_column=id_column, label_column=label_column),
        Party(host_name, host, id_column=id_column),
    )


def load_default_credit() -> tuple[Party, Party]:
    """UCI "default of credit card clients" (30 000 customers), FATE's vertical split.

    The guest (``"bank"``) holds the label ``y`` (default next month; 6 636 ones)
    and 13 repayment/bill features; the host (``"shop"``) holds 10 features
    (limit, sex, education, marriage, age, recent repayment status). Features are
    z-scored. Source: Yeh & Lien (2009), UCI Machine Learning Repository.

    Returns
    -------
    guest, host : Party
    """
    return _pair("default_credit_hetero", "id", "y", "bank", "shop")


def load_breast_cancer() -> tuple[Party, Party]:
    """Wisconsin diagnostic breast cancer (569 rows), FATE's vertical split.

    Guest: label ``y`` (1 = benign) and the 10 "worst" features; host: the 20
    "mean" and "error" features. Features are z-scored.

    Returns
    -------
    guest, host : Party
    """
    return _pair("breast_hetero", "id", "y", "hospital", "lab")


def load_vehicle() -> tuple[Party, Party]:
    """Statlog vehicle silhouettes (846 rows, 4 classes), FATE's vertical split (9 + 9).

    Returns
    -------
    guest, host : Party
    """
    return _pair("vehicle_scale_hetero", "id", "y", "guest", "host")


def load_ionosphere() -> tuple[Party, Party]:
    """Ionosphere radar returns (351 rows, binary), FATE's vertical split (15 + 19).

    Missing cells are features the LIBSVM source leaves out, i.e. zeros.

    Returns
    -------
    guest, host : Party
    """
    return _pair("ionosphere_scale_hetero", "sid", "label", "guest", "host", fill_missing=True)
