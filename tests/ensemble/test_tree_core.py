"""The tree core of ftl.ensemble grows scikit-learn's HistGradientBoosting trees.

Plaintext only: the pooled columns of the bundled data are cut into 1, 2 and 3
:class:`LocalBlock` s (as the guest's and hosts' columns are), and every tree is
compared node by node with the one scikit-learn 1.9 grows on the pooled columns
with the same parameters and early stopping off: split feature (pooled index),
bin and real threshold, children, leaf flags, counts, gains and values, then the
raw predictions. The sums are float64 sums of the same float32 gradients in the
same order, so in practice everything is bit for bit equal; the tests allow the
issue's 1e-6 (relative) on values and predictions only.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss, HalfSquaredError
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.ensemble._hist_gradient_boosting.binning import _BinMapper
from threadpoolctl import threadpool_limits

import ftl
from ftl.ensemble._binning import draw_seed, fit_binning
from ftl.ensemble._boosting import fit_boosting, predict_raw
from ftl.ensemble._grower import LocalBlock, grow_tree
from ftl.ensemble._histogram import Histogram, build_histogram
from ftl.ensemble._loss import make_loss
from ftl.ensemble._split import TreeParams, find_best_split
from ftl.ensemble._tree import go_left

#: Histogram width and tree parameters of the comparisons (scikit-learn's names).
PARAMS = {
    "default": {},
    "fate": {"max_depth": 3, "max_bins": 32},
    "l2": {"l2_regularization": 1.0, "min_samples_leaf": 5},
    "big_leaves": {"min_samples_leaf": 80, "max_leaf_nodes": 12},
    "deep": {"max_leaf_nodes": None, "max_depth": 6, "min_samples_leaf": 2},
}
#: Where the pooled columns are cut into blocks, as fractions of the columns.
CUTS = {1: [], 2: [0.5], 3: [0.3, 0.7]}


@functools.cache
def _pooled(name: str, n_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Guest columns then host columns, and the guest's labels (the bundled
    parties list the same ids in the same order)."""
    guest, host = getattr(ftl.datasets, name)()
    assert (guest.local_ids() == host.local_ids()).all()
    rows = np.arange(guest.n_rows if n_rows is None else n_rows)
    X = np.hstack([guest.local_features(rows), host.local_features(rows)])
    return X, guest.local_labels(rows).astype(np.float64)


def _offsets(n_features: int, n_blocks: int) -> list[int]:
    inner = [round(c * n_features) for c in CUTS[n_blocks]]
    return [0, *inner, n_features]


def _fit_sklearn(X, y, n_classes, params, max_iter):
    common = dict(max_iter=max_iter, early_stopping=False, random_state=0, **params)
    estimator = (
        HistGradientBoostingRegressor(**common)
        if n_classes is None
        else HistGradientBoostingClassifier(**common)
    )
    # One OpenMP thread: the trees do not depend on it, and spinning threads on a
    # busy machine slow scikit-learn down tenfold.
    with threadpool_limits(limits=1):
        return estimator.fit(X, y)


def _fit_ours(X, y, n_classes, params, max_iter, offsets, wrap=None, callback=None):
    """fit_boosting on LocalBlocks of the pooled columns, binned per block."""
    max_bins = params.get("max_bins", 255)
    seed = draw_seed(0)
    blocks, thresholds = [], []
    for start, stop in itertools.pairwise(offsets):
        binning = fit_binning(X[:, start:stop], max_bins, random_state=seed)
        block = LocalBlock(
            binning.transform(X[:, start:stop]), binning.n_bins_non_missing, binning.thresholds
        )
        blocks.append(block if wrap is None else wrap(block))
        thresholds.append(binning.thresholds)
    tree_params = TreeParams(
        **{k: v for k, v in params.items() if k != "max_bins"}, max_bins=max_bins
    )
    result = fit_boosting(
        blocks,
        y,
        make_loss(n_classes),
        tree_params,
        max_iter=max_iter,
        learning_rate=0.1,
        bin_thresholds=thresholds,
        callback=callback,
    )
    return result, blocks


def _compare_trees(sk, result, offsets) -> int:
    """Assert every node equal; the number of nodes compared."""
    n_nodes = 0
    assert len(result.trees) == len(sk._predictors)
    for ours_iteration, sk_iteration in zip(result.trees, sk._predictors, strict=True):
        assert len(ours_iteration) == len(sk_iteration)
        for ours, predictor in zip(ours_iteration, sk_iteration, strict=True):
            nodes = predictor.nodes
            assert ours.n_nodes == nodes.shape[0]
            np.testing.assert_array_equal(ours.is_leaf, nodes["is_leaf"].astype(bool))
            np.testing.assert_array_equal(ours.count, nodes["count"])
            np.testing.assert_array_equal(ours.depth, nodes["depth"])
            np.testing.assert_allclose(ours.gain, nodes["gain"], rtol=1e-6, atol=1e-12)
            np.testing.assert_allclose(ours.value, nodes["value"], rtol=1e-6, atol=1e-12)
            split = ~ours.is_leaf
            pooled = np.asarray(offsets)[ours.block[split]] + ours.feature[split]
            np.testing.assert_array_equal(pooled, nodes["feature_idx"][split])
            np.testing.assert_array_equal(ours.bin_threshold[split], nodes["bin_threshold"][split])
            np.testing.assert_array_equal(ours.num_threshold[split], nodes["num_threshold"][split])
            np.testing.assert_array_equal(ours.left[split], nodes["left"][split])
            np.testing.assert_array_equal(ours.right[split], nodes["right"][split])
            n_nodes += ours.n_nodes
    return n_nodes


def _sklearn_raw(sk, X) -> np.ndarray:
    with threadpool_limits(limits=1):
        if isinstance(sk, HistGradientBoostingRegressor):
            return sk.predict(X).reshape(-1, 1)
        return sk.decision_function(X).reshape(X.shape[0], -1)


def _check_same_model(X, y, n_classes, params, max_iter, n_blocks, n_train=None):
    """Fit both on the first ``n_train`` rows (all by default), compare the trees,
    the training raw predictions and the raw predictions of all rows."""
    X_train, y_train = X[:n_train], y[:n_train]
    sk = _fit_sklearn(X_train, y_train, n_classes, params, max_iter)
    offsets = _offsets(X.shape[1], n_blocks)
    result, _ = _fit_ours(X_train, y_train, n_classes, params, max_iter, offsets)
    np.testing.assert_array_equal(result.baseline, sk._baseline_prediction.ravel())
    n_nodes = _compare_trees(sk, result, offsets)
    expected = _sklearn_raw(sk, X_train)
    np.testing.assert_allclose(result.raw_predictions, expected, rtol=0, atol=1e-6)

    def decide(block, queries):
        return go_left(X[:, offsets[block] : offsets[block + 1]], queries)

    raw = predict_raw(result.baseline, result.trees, X.shape[0], decide)
    np.testing.assert_allclose(raw, _sklearn_raw(sk, X), rtol=0, atol=1e-6)
    return n_nodes


@pytest.mark.parametrize("n_blocks", [1, 2, 3])
@pytest.mark.parametrize("params", list(PARAMS), ids=list(PARAMS))
def test_same_trees_as_sklearn_on_default_credit_sample(params, n_blocks):
    X, y = _pooled("load_default_credit", 6000)  # 4000 to train, 2000 unseen
    assert _check_same_model(X, y, 2, PARAMS[params], 10, n_blocks, n_train=4000) > 10 * 3


@pytest.mark.parametrize(
    "name, n_classes, params",
    [
        ("load_breast_cancer", 2, "default"),
        ("load_breast_cancer", 2, "l2"),
        ("load_vehicle", 4, "default"),
        ("load_vehicle", 4, "fate"),
        ("load_motor", None, "default"),
        ("load_motor", None, "deep"),
        ("load_student", None, "big_leaves"),
        ("load_student", None, "l2"),
    ],
)
@pytest.mark.parametrize("n_blocks", [2, 3])
def test_same_trees_as_sklearn_on_bundled_data(name, n_classes, params, n_blocks):
    X, y = _pooled(name)
    _check_same_model(X, y, n_classes, PARAMS[params], 8, n_blocks)


def test_same_trees_as_sklearn_on_full_default_credit():
    """The 30 000 rows (a few seconds): FATE's depth 3 and 32 bins, then the defaults."""
    X, y = _pooled("load_default_credit")
    assert X.shape == (30_000, 23)
    for params in ("fate", "default"):
        _check_same_model(X, y, 2, PARAMS[params], 20, 3)


def test_ties_go_to_the_first_block_and_feature():
    """Every column twice (the copy in a later block): scikit-learn takes the
    first of equal gains, and so must the scan over blocks."""
    X, y = _pooled("load_breast_cancer")
    doubled = np.hstack([X[:, :15], X, X[:, 15:]])
    offsets = [0, 15, 15 + X.shape[1], doubled.shape[1]]
    sk = _fit_sklearn(doubled, y, 2, {}, 5)
    result, _ = _fit_ours(doubled, y, 2, {}, 5, offsets)
    _compare_trees(sk, result, offsets)


class _RecordingBlock:
    """A LocalBlock that logs the grower's calls."""

    def __init__(self, block, index, log):
        self.block, self.index, self.log = block, index, log
        self.n_features = block.n_features
        self.n_bins_non_missing = block.n_bins_non_missing

    def begin_tree(self, gradients, hessians, tree):
        assert gradients.dtype == hessians.dtype == np.float32
        self.log.append(("begin", self.index, tree))
        self.block.begin_tree(gradients, hessians, tree)

    def histogram(self, node, rows):
        assert (np.diff(rows) > 0).all()
        self.log.append(("histogram", self.index, node))
        return self.block.histogram(node, rows)

    def split(self, node, rows, feature, bin_threshold, children, asked):
        self.log.append(("split", self.index, node, asked))
        return self.block.split(node, rows, feature, bin_threshold, children, asked)

    def partitioned(self, node, left, right, left_rows, right_rows):
        sizes = {left: left_rows.shape[0], right: right_rows.shape[0]}
        self.log.append(("partitioned", self.index, node, sizes))

    def end_tree(self):
        self.log.append(("end", self.index))


def test_grower_asks_blocks_in_order_and_for_the_smaller_child_only():
    X, y = _pooled("load_default_credit", 3000)
    log, n_blocks, n_iter = [], 3, 3
    counter = itertools.count()
    result, _ = _fit_ours(
        X,
        y,
        2,
        {},
        n_iter,
        _offsets(X.shape[1], n_blocks),
        wrap=lambda block: _RecordingBlock(block, next(counter), log),
    )
    kinds = [entry[0] for entry in log]
    assert kinds.count("begin") == kinds.count("end") == n_iter * n_blocks
    # every block hears each tree's number (over iterations and classes)
    assert [e[2] for e in log if e[0] == "begin"] == np.repeat(np.arange(n_iter), n_blocks).tolist()
    assert kinds.count("split") == sum(
        tree.n_nodes // 2 for trees in result.trees for tree in trees
    )
    for i, entry in enumerate(log):
        if entry[0] != "split":
            continue
        node = entry[2]
        # every block hears of the partition, in block order, right after the split
        notices = log[i + 1 : i + 1 + n_blocks]
        assert [notice[:3] for notice in notices] == [
            ("partitioned", b, node) for b in range(n_blocks)
        ]
        (left, n_left), (right, n_right) = notices[0][3].items()
        asked = []
        for later in log[i + 1 + n_blocks :]:
            if later[0] != "histogram":
                break
            asked.append(later)
        if asked:  # none when both children are leaves
            smaller = left if n_left < n_right else right
            assert asked == [("histogram", b, smaller) for b in range(n_blocks)]
        # the winning block was told which child's histogram comes next (a remote
        # block returns it with the partition: one round trip)
        assert entry[3] == (smaller if asked else -1)


def test_predict_asks_each_block_once_per_level():
    X, y = _pooled("load_vehicle")
    offsets = _offsets(X.shape[1], 2)
    result, _ = _fit_ours(X, y, 4, PARAMS["fate"], 5, offsets)
    calls = []

    def decide(block, queries):
        calls.append(block)
        return go_left(X[:, offsets[block] : offsets[block + 1]], queries)

    predict_raw(result.baseline, result.trees, X.shape[0], decide)
    depth = max(tree.max_depth for trees in result.trees for tree in trees)
    for block in (0, 1):
        assert 1 <= calls.count(block) <= depth


def test_binning_equals_sklearn_bin_mapper():
    rng = np.random.default_rng(0)
    n = 3000
    columns = [
        rng.normal(size=n),  # many distinct values: percentiles
        np.round(rng.normal(size=n), 1),  # some dozens of values, heavy ties
        rng.integers(0, 5, n).astype(float),  # few distinct values: midpoints
        rng.integers(0, 2, n).astype(float),  # binary
        np.full(n, 3.5),  # constant: a single bin
        np.where(rng.random(n) < 0.97, 0.0, rng.exponential(size=n)),  # mostly one value
        rng.choice([-1e305, 0.0, 1e305], n),  # extreme values
        rng.standard_t(1, size=n),  # heavy tails
    ]
    X = np.column_stack(columns)
    for max_bins in (2, 3, 10, 32, 255):
        for subsample, seed in ((None, None), (500, 7), (500, draw_seed(3))):
            ours = fit_binning(X, max_bins, subsample=subsample, random_state=seed)
            theirs = _BinMapper(n_bins=max_bins + 1, subsample=subsample, random_state=seed).fit(X)
            for mine, expected in zip(ours.thresholds, theirs.bin_thresholds_, strict=True):
                np.testing.assert_array_equal(mine, expected)
            np.testing.assert_array_equal(ours.n_bins_non_missing, theirs.n_bins_non_missing_)
            np.testing.assert_array_equal(ours.transform(X), theirs.transform(X))
    assert fit_binning(X[:, 4:5]).n_bins_non_missing.tolist() == [1]


def test_draw_seed_is_sklearn_random_seed():
    X, y = _pooled("load_breast_cancer")
    for random_state in (0, 42, 123456):
        sk = HistGradientBoostingClassifier(max_iter=1, random_state=random_state)
        with threadpool_limits(limits=1):
            sk.fit(X, y)
        assert draw_seed(random_state) == sk._random_seed


def test_losses_equal_sklearn_bit_for_bit():
    rng = np.random.default_rng(1)
    n = 200_000
    raw = np.concatenate([rng.normal(scale=4, size=n), rng.uniform(-60, 40, size=1000)])
    y = (rng.random(raw.shape[0]) < 0.3).astype(np.float64)
    for ours, theirs, target in (
        (make_loss(2), HalfBinomialLoss(), y),
        (make_loss(None), HalfSquaredError(), rng.normal(size=raw.shape[0])),
    ):
        gradient = np.empty(raw.shape[0], dtype=np.float32)
        hessian = np.ones_like(gradient)
        if ours.constant_hessian:
            theirs.gradient(target, raw, gradient_out=gradient)
        else:
            theirs.gradient_hessian(target, raw, gradient_out=gradient, hessian_out=hessian)
        g, h = ours.gradient_hessian(target, raw)
        np.testing.assert_array_equal(g[:, 0], gradient)
        np.testing.assert_array_equal(h[:, 0], hessian)
        np.testing.assert_array_equal(ours.baseline(target), theirs.fit_intercept_only(target))
        assert ours.mean_loss(target, raw) == pytest.approx(theirs(target, raw), rel=1e-12)
    n_classes = 5
    raw = np.asfortranarray(rng.normal(scale=3, size=(n, n_classes)))
    y = rng.integers(0, n_classes, n).astype(np.float64)
    theirs = HalfMultinomialLoss(n_classes=n_classes)
    gradient = np.empty((n, n_classes), dtype=np.float32, order="F")
    hessian = np.empty_like(gradient)
    theirs.gradient_hessian(y, raw, gradient_out=gradient, hessian_out=hessian)
    ours = make_loss(n_classes)
    g, h = ours.gradient_hessian(y, raw)
    np.testing.assert_array_equal(g, gradient)
    np.testing.assert_array_equal(h, hessian)
    np.testing.assert_array_equal(ours.baseline(y), theirs.fit_intercept_only(y))
    assert ours.mean_loss(y, raw) == pytest.approx(theirs(y, raw), rel=1e-12)
    np.testing.assert_allclose(ours.predict_proba(raw), theirs.predict_proba(raw), rtol=1e-12)


def test_histogram_sums_are_float64_sums_of_the_float32_values_in_row_order():
    """scikit-learn adds float32 values into float64 bins, row after row; so must
    we (a float32 accumulation, or another order, would differ in the last bits)."""
    rng = np.random.default_rng(2)
    n, n_bins = 5000, 7
    binned = np.asfortranarray(rng.integers(0, n_bins, (n, 3)).astype(np.uint8))
    gradients = rng.normal(scale=1e3, size=n).astype(np.float32)
    hessians = rng.random(n).astype(np.float32)
    rows = np.sort(rng.choice(n, 3000, replace=False))
    histogram = build_histogram(binned, gradients, hessians, rows, n_bins)
    expected = np.zeros((3, n_bins))
    for f in range(3):
        for r in rows:
            expected[f, binned[r, f]] += float(gradients[r])
    np.testing.assert_array_equal(histogram.sum_gradients, expected)
    float32_sums = np.zeros((3, n_bins), dtype=np.float32)
    for f in range(3):
        np.add.at(float32_sums[f], binned[rows, f], gradients[rows])
    assert (float32_sums != expected).any()
    sibling = build_histogram(binned, gradients, hessians, np.setdiff1d(np.arange(n), rows), n_bins)
    parent = build_histogram(binned, gradients, hessians, np.arange(n), n_bins)
    np.testing.assert_array_equal((parent - histogram).count, sibling.count)
    np.testing.assert_allclose((parent - histogram).sum_hessians, sibling.sum_hessians, rtol=1e-12)


def test_a_block_whose_partition_disagrees_with_its_histogram_is_refused():
    X, y = _pooled("load_breast_cancer")
    binning = fit_binning(X)
    block = LocalBlock(binning.transform(X), binning.n_bins_non_missing, binning.thresholds)
    block.split = lambda node, rows, *split: (np.zeros(rows.shape, bool), "", None)
    gradients, hessians = make_loss(2).gradient_hessian(y, np.zeros(y.shape[0]))
    with pytest.raises(ValueError, match="partitioned node 0"):
        grow_tree([block], gradients[:, 0], hessians[:, 0], TreeParams())


def test_callback_sees_sklearn_staged_predictions_and_can_stop():
    X, y = _pooled("load_vehicle")
    offsets = _offsets(X.shape[1], 2)
    staged = []

    def callback(iteration, trees, raw):
        assert len(trees) == 4 and iteration == len(staged)
        staged.append(raw.copy())

    result, _ = _fit_ours(X, y, 4, {}, 6, offsets, callback=callback)
    sk = _fit_sklearn(X, y, 4, {}, 6)
    with threadpool_limits(limits=1):
        expected = list(sk.staged_decision_function(X))
    assert len(staged) == len(expected) == 6
    for ours, theirs in zip(staged, expected, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)

    result, _ = _fit_ours(X, y, 4, {}, 6, offsets, callback=lambda i, trees, raw: i == 2)
    assert len(result.trees) == 3


def _sequential_scan(histogram, n_bins, sum_gradients, sum_hessians, n_samples, value, params):
    """scikit-learn's left-to-right loop, one bin at a time, in Python floats."""
    best = None
    for feature in range(histogram.n_features):
        gradient_left = hessian_left = 0.0
        n_left = 0
        best_gain = -1.0
        for b in range(n_bins[feature] - 1):
            n_left += int(histogram.count[feature, b])
            hessian_left += float(histogram.sum_hessians[feature, b])
            gradient_left += float(histogram.sum_gradients[feature, b])
            n_right = n_samples - n_left
            hessian_right = sum_hessians - hessian_left
            gradient_right = sum_gradients - gradient_left
            if n_left < params.min_samples_leaf:
                continue
            if n_right < params.min_samples_leaf:
                break
            if hessian_left < params.min_hessian_to_split:
                continue
            if hessian_right < params.min_hessian_to_split:
                break
            l2 = params.l2_regularization
            value_left = -gradient_left / (hessian_left + l2 + 1e-15)
            value_right = -gradient_right / (hessian_right + l2 + 1e-15)
            gain = sum_gradients * value
            gain -= gradient_left * value_left
            gain -= gradient_right * value_right
            if gain > best_gain and gain > params.min_gain_to_split:
                best_gain = gain
                if best is None or gain > best[0]:
                    best = (gain, feature, b, gradient_left, hessian_left, n_left)
    return best


def test_vectorised_scan_equals_the_sequential_loop_bit_for_bit():
    """np.cumsum adds along the bins one at a time, so every gain is the float of
    scikit-learn's loop; ties (integer gradients) go to the first feature and bin."""
    rng = np.random.default_rng(3)
    for trial in range(300):
        n_features, n_bins = rng.integers(1, 6), rng.integers(2, 40)
        count = rng.integers(0, 30, (n_features, n_bins))
        if trial % 2:
            sum_gradients = rng.integers(-3, 4, (n_features, n_bins)).astype(float)
            sum_hessians = count.astype(float)
        else:
            sum_gradients = rng.normal(size=(n_features, n_bins)) * count
            sum_hessians = rng.random((n_features, n_bins)) * count
        if trial % 3 == 0:  # a repeated feature: an exact tie across features
            count[-1], sum_gradients[-1], sum_hessians[-1] = (
                count[0],
                sum_gradients[0],
                sum_hessians[0],
            )
        histogram = Histogram(sum_gradients, sum_hessians, count)
        n_bins_non_missing = rng.integers(1, n_bins + 1, n_features)
        for f in range(n_features):
            histogram.count[f, n_bins_non_missing[f] :] = 0
            histogram.sum_gradients[f, n_bins_non_missing[f] :] = 0
            histogram.sum_hessians[f, n_bins_non_missing[f] :] = 0
        node = dict(
            sum_gradients=float(sum_gradients.sum(axis=1)[0]),
            sum_hessians=float(sum_hessians.sum(axis=1)[0]),
            n_samples=int(count.sum(axis=1)[0]),
            value=float(rng.normal()) if trial % 4 else 0.0,
        )
        params = TreeParams(
            min_samples_leaf=int(rng.integers(1, 40)),
            l2_regularization=float(rng.choice([0.0, 0.5])),
        )
        expected = _sequential_scan(histogram, n_bins_non_missing, **node, params=params)
        split = find_best_split([histogram], [n_bins_non_missing], **node, params=params)
        if expected is None:
            assert split is None
            continue
        gain, feature, bin_threshold, gradient_left, hessian_left, n_left = expected
        assert (split.gain, split.feature, split.bin_threshold) == (gain, feature, bin_threshold)
        assert (split.sum_gradient_left, split.sum_hessian_left) == (gradient_left, hessian_left)
        assert split.n_left == n_left
