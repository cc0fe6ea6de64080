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
