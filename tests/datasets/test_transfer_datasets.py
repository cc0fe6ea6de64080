"""Transfer-learning splits of the bundled data (ftl.datasets.load_*_transfer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ftl

DATA = Path(__file__).resolve().parents[2] / "ftl" / "datasets" / "data"

LOADERS = {
    "credit": (ftl.datasets.load_credit_transfer, 500, 30_000),
    "breast": (ftl.datasets.load_breast_transfer, 150, 569),
}


@pytest.fixture(scope="module", params=list(LOADERS))
def split(request):
    load, overlap, n_total = LOADERS[request.param]
    return request.param, load(overlap=overlap, random_state=0), overlap, n_total


@pytest.fixture(scope="module")
def raw_credit():
    return pd.read_csv(DATA / "UCI_Credit_Card.csv")


def _ids(party) -> set:
    return set(party.local_ids().tolist())


def test_ids_partition(split):
    _, data, overlap, n_total = split
    src, tgt = _ids(data.source), _ids(data.target)
    ov, so, to = (
        set(data[k].tolist()) for k in ("overlap_ids", "source_only_ids", "target_only_ids")
    )
    assert len(data.overlap_ids) == overlap
    for key in ("overlap_ids", "source_only_ids", "target_only_ids"):
        arr = data[key]
        assert isinstance(arr, np.ndarray)
        assert len(np.unique(arr)) == len(arr)
    assert len(data.source.local_ids()) == len(src)
    assert len(data.target.local_ids()) == len(tgt)
    assert ov <= src and ov <= tgt
    assert src & tgt == ov
    assert so == src - ov and not so & tgt
    assert to == tgt - ov and not to & src
    assert len(ov) + len(so) + len(to) == n_total
    assert data.source.n_rows == len(ov) + len(so)
    assert data.target.n_rows == len(ov) + len(to)
    assert len(so) > 0 and len(to) > 0


def test_features_and_labels(split):
    _, data, _, _ = split
    assert data.source.feature_names == data.source_features
    assert data.target.feature_names == data.target_features
    assert not set(data.source_features) & set(data.target_features)
    assert data.source.has_labels and data.source.label_column == "y"
    assert not data.target.has_labels and data.target.label_column is None
    assert data.source.id_column == data.target.id_column == "id"
    labels = data.source.local_labels(np.arange(data.source.n_rows))
    assert set(np.unique(labels)) == {0, 1}
    with pytest.raises(ValueError, match="no labels"):
        data.target.local_labels(np.arange(3))
    assert isinstance(data.DESCR, str) and "CC BY 4.0" in data.DESCR


def test_target_labels_cover_target(split):
    _, data, _, _ = split
    tl = data.target_labels
    assert isinstance(tl, pd.Series)
    assert np.array_equal(tl.index.to_numpy(), data.target.local_ids())
    assert tl.index.is_unique and set(np.unique(tl)) == {0, 1}
    # on the overlap they agree with the source's labels
    ov = data.overlap_ids
    src = data.source.local_labels(data.source.rows_for_ids(ov))
    assert np.array_equal(tl.loc[ov].to_numpy(), src)


@pytest.mark.parametrize("name", list(LOADERS))
def test_deterministic_and_seeded(name):
    load, overlap, _ = LOADERS[name]
    a = load(overlap=overlap, random_state=1)
    b = load(overlap=overlap, random_state=1)
    c = load(overlap=overlap, random_state=2)
    for key in ("overlap_ids", "source_only_ids", "target_only_ids"):
        assert np.array_equal(a[key], b[key])
    for party in ("source", "target"):
        rows = np.arange(a[party].n_rows)
        assert np.array_equal(a[party].local_ids(), b[party].local_ids())
        assert np.array_equal(a[party].local_features(rows), b[party].local_features(rows))
    assert not np.array_equal(a.overlap_ids, c.overlap_ids)


@pytest.mark.parametrize("name", list(LOADERS))
@pytest.mark.parametrize("bad", [0, -1, "all", 1.5, True, None])
def test_invalid_overlap(name, bad):
    load, _, _ = LOADERS[name]
    with pytest.raises(ValueError, match="overlap"):
        load(overlap=bad)


@pytest.mark.parametrize("name", list(LOADERS))
def test_overlap_too_large(name):
    load, _, n_total = LOADERS[name]
    with pytest.raises(ValueError, match="overlap"):
        load(overlap=n_total)


def test_credit_education_split(raw_credit):
    data = ftl.datasets.load_credit_transfer(overlap=1000, random_state=0)
    edu = raw_credit.set_index("ID")["EDUCATION"]
    assert not edu.loc[data.target_only_ids].isin([1, 2]).any()
    assert edu.loc[data.source_only_ids].isin([1, 2]).all()
    # the overlap is drawn from the whole table, so it holds both populations
    assert edu.loc[data.overlap_ids].isin([1, 2]).any()
    assert not edu.loc[data.overlap_ids].isin([1, 2]).all()
    assert data.source.n_features == 16 and data.target.n_features == 7


def test_credit_labels_and_scaling(raw_credit):
    data = ftl.datasets.load_credit_transfer(overlap=1000, random_state=0)
    truth = raw_credit.set_index("ID")["default.payment.next.month"]
    src_ids = data.source.local_ids()
    src_y = data.source.local_labels(np.arange(data.source.n_rows))
    assert np.array_equal(src_y, truth.loc[src_ids].to_numpy())
    assert np.array_equal(data.target_labels.to_numpy(), truth.loc[data.target_labels.index])
    for party in (data.source, data.target):
        X = party.local_features(np.arange(party.n_rows))
        np.testing.assert_allclose(X.mean(0), 0, atol=1e-9)
        np.testing.assert_allclose(X.std(0), 1, atol=1e-9)


def test_breast_values_from_fate_files():
    data = ftl.datasets.load_breast_transfer()
    guest = pd.read_csv(DATA / "breast_hetero_guest.csv").set_index("id")
    host = pd.read_csv(DATA / "breast_hetero_host.csv").set_index("id")
    src_ids, tgt_ids = data.source.local_ids(), data.target.local_ids()
    np.testing.assert_array_equal(
        data.source.local_features(np.arange(data.source.n_rows)),
        guest.loc[src_ids].drop(columns="y").to_numpy(),
    )
    np.testing.assert_array_equal(
        data.target.local_features(np.arange(data.target.n_rows)), host.loc[tgt_ids].to_numpy()
    )
    assert np.array_equal(data.target_labels.to_numpy(), guest.loc[tgt_ids, "y"].to_numpy())
    assert abs(len(data.source_only_ids) - len(data.target_only_ids)) <= 1
