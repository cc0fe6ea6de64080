import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold, train_test_split

import ftl
from ftl.data.simulate import simulate_federation


def test_dataframe_party_and_array_party():
    df = pd.DataFrame({"id": ["a", "b"], "x": [1.0, 2.0], "flag": [True, False], "y": [0, 1]})
    p = ftl.Party("bank", df, id_column="id", label_column="y")
    assert (p.n_rows, p.n_features, p.has_labels) == (2, 2, True)
    assert p.feature_names == ["x", "flag"]
    q = ftl.Party("shop", np.ones((3, 2)), ids=[1, 2, 3])
    assert q.feature_names == ["x0", "x1"] and not q.has_labels


@pytest.mark.parametrize(
    "frame, kwargs, match",
    [
        (pd.DataFrame({"id": [1, 1], "x": [0.0, 1.0]}), {}, "duplicate ids"),
        (pd.DataFrame({"id": [1, None], "x": [0.0, 1.0]}), {}, "missing id"),
        (
            pd.DataFrame({"id": [1, 2], "x": ["a", "b"]}),
            {},
            r"non-numeric feature column\(s\) \['x'\]",
        ),
        (pd.DataFrame({"id": [1, 2, 3], "x": [0.0, np.nan, np.inf]}), {}, r"x \(2 rows\)"),
        (pd.DataFrame({"id": [1, 2], "x": [0.0, 1.0]}), {"label_column": "nope"}, "not in columns"),
        (
            pd.DataFrame({"id": [1, 2], "x": [0.0, 1.0], "y": [1, None]}),
            {"label_column": "y"},
            "missing label",
        ),
    ],
)
def test_bad_party_input_gives_clear_errors(frame, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ftl.Party("p", frame, id_column="id", **kwargs)


def test_missing_id_column_argument():
    with pytest.raises(ValueError, match="id_column"):
        ftl.Party("p", pd.DataFrame({"x": [1.0]}))


def test_select_returns_rows_of_one_party():
    p = ftl.Party("p", pd.DataFrame({"id": [5, 6, 7], "x": [0.0, 1.0, 2.0]}), id_column="id")
    h = p.select([7, 5])
    assert h.shape == (2, 1) and list(h.ids) == [7, 5]
    with pytest.raises(ValueError, match="not found"):
        p.select([99])


def test_vertical_handle_indexing_and_sklearn_splitters():
    rng = np.random.default_rng(0)
    X = simulate_federation(rng.normal(size=(20, 5)), rng.integers(0, 2, 20))
    assert X.shape == (20, 5) and len(X) == 20
    assert len(X[3]) == 1 and len(X[2:8]) == 6
    assert len(X[np.array([1, 2, 3])]) == 3 and len(X[np.arange(20) % 2 == 0]) == 10
    assert len(X[(np.array([0, 1]), Ellipsis)]) == 2
    for forbidden in ("fit", "iloc", "__array__"):
        assert not hasattr(X, forbidden)
    a, b = train_test_split(X, test_size=0.25, random_state=0)
    assert len(a) == 15 and len(b) == 5 and set(a.ids) | set(b.ids) == set(range(20))
    for train, _test in KFold(4).split(X):
        assert len(X[train]) == 15
    with pytest.raises(IndexError):
        X[25]
    again = pickle.loads(pickle.dumps(X[:4]))
    assert list(again.ids) == list(X.ids[:4])


def test_integer_ids_are_checked_for_repeats_without_text_keys():
    # a sort finds the repeats (the text keys of a million ids took seconds)
    with pytest.raises(ValueError, match=r"4 rows share duplicate ids \(e.g. 5, 3\)"):
        ftl.Party("p", np.zeros((6, 1)), ids=np.array([5, 3, 5, 7, 3, 9]))
    # objects may mix 1 and "1": still compared as text
    with pytest.raises(ValueError, match="2 rows share duplicate ids"):
        ftl.Party("p", np.zeros((3, 1)), ids=np.array([1, "1", 2], dtype=object))


def test_an_array_party_holds_the_same_as_a_table_party():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 3))
    X[4, 1] = np.nan
    ids, y = np.arange(50) * 7, rng.integers(0, 2, 50)
    from_array = ftl.Party("a", X, ids=ids, labels=y, allow_missing=True)
    table = pd.DataFrame(X, columns=["x0", "x1", "x2"]).assign(id=ids, y=y)
    from_table = ftl.Party("a", table, id_column="id", label_column="y", allow_missing=True)
    assert from_array.feature_names == from_table.feature_names
    np.testing.assert_array_equal(from_array._features, from_table._features)
    np.testing.assert_array_equal(from_array._ids, from_table._ids)
    np.testing.assert_array_equal(from_array._labels, from_table._labels)
    assert from_array._has_missing and from_table._has_missing
    with pytest.raises(ValueError, match="NaN or infinite values in feature column"):
        ftl.Party("a", X, ids=ids)
    with pytest.raises(ValueError, match="duplicate column names"):
        ftl.Party("a", X, ids=ids, feature_names=["u", "v", "u"])
