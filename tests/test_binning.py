"""Gradient boosting's bin thresholds found by hashing (portfolio_mlops/binning.py) are scikit-learn's own,
bit for bit, on every kind of column, and a fit inside `fast_binning` is the stock fit."""

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.ensemble._hist_gradient_boosting import binning as sklearn_binning

from portfolio_mlops.binning import fast_binning, hashed_thresholds

ORIGINAL = sklearn_binning._find_binning_thresholds


def snapped(values: np.ndarray, levels: int = 64) -> np.ndarray:
    lo, step = np.nanmin(values), (np.nanmax(values) - np.nanmin(values)) / levels
    return (np.ceil((values - lo) / step) - 0.5) * step + lo


def columns() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n = 20_000
    with_nan = snapped(rng.uniform(-0.5, 0.5, n))
    with_nan[rng.random(n) < 0.05] = np.nan
    signed_zeros = rng.choice([-0.0, 0.0, 1.5, -2.25], n)
    return {
        "snapped to 64 steps": snapped(rng.uniform(-0.5, 0.5, n)),
        "snapped, with NaN": with_nan,
        "many distinct values (quantiles)": rng.normal(size=n),
        "exactly 255 distinct": rng.permutation(np.resize(np.arange(255, dtype=float) * 0.37, n)),
        "256 distinct": rng.permutation(np.resize(np.arange(256, dtype=float) * 0.37, n)),
        "one value": np.full(n, 3.5),
        "one value and NaN": np.where(rng.random(n) < 0.5, np.nan, 3.5),
        "all NaN": np.full(n, np.nan),
        "signed zeros": signed_zeros,
        "infinities": rng.choice([-np.inf, np.inf, 0.25, 1e308, -1e308], n),
        "subnormals": rng.choice([5e-324, 1e-310, -5e-324, 0.0], n),
        "one step apart": np.nextafter(1.0, 2.0) * rng.integers(0, 2, n) + 1.0,
    }


@pytest.mark.parametrize("name", list(columns()))
def test_hashed_thresholds_are_scikit_learns(name):
    column = columns()[name]
    for max_bins in (255, 63, 2):
        try:
            expected = ORIGINAL(column.copy(), max_bins)
        except ValueError as error:  # all NaN: scikit-learn's own error, from its own code
            with pytest.raises(ValueError, match=str(error)):
                hashed_thresholds(column.copy(), max_bins)
            continue
        got = hashed_thresholds(column.copy(), max_bins)
        assert got.dtype == expected.dtype
        assert got.tobytes() == expected.tobytes(), (name, max_bins)


def test_sample_weights_take_scikit_learns_path_unchanged():
    rng = np.random.default_rng(1)
    column, weights = snapped(rng.normal(size=5000)), rng.uniform(0, 2, 5000)
    weights[::7] = 0.0
    expected = ORIGINAL(column.copy(), 255, sample_weight=weights.copy())
    assert hashed_thresholds(column.copy(), 255, sample_weight=weights.copy()).tobytes() == expected.tobytes()


def fitted(x: np.ndarray, y: np.ndarray, fast: bool) -> HistGradientBoostingRegressor:
    model = HistGradientBoostingRegressor(max_iter=15, learning_rate=0.15, max_leaf_nodes=15, min_samples_leaf=50,
                                          random_state=3, early_stopping=False)
    if fast:
        with fast_binning():
            return model.fit(x, y)
    return model.fit(x, y)


@pytest.mark.parametrize("rows", [30_000, 210_000], ids=["all rows binned", "over 200,000: subsampled"])
def test_a_fit_inside_fast_binning_is_the_stock_fit_bit_for_bit(rows):
    rng = np.random.default_rng(11)
    x = np.column_stack([snapped(rng.uniform(-0.5, 0.5, rows)) for _ in range(5)] + [rng.normal(size=rows)])
    x[rng.random(x.shape) < 0.02] = np.nan
    y = np.nan_to_num(x[:, 0]) * 0.1 + np.nan_to_num(x[:, 5]) * 0.05 + rng.normal(scale=0.1, size=rows)

    stock, fast = fitted(x, y, fast=False), fitted(x, y, fast=True)

    for ours, theirs in zip(fast._bin_mapper.bin_thresholds_, stock._bin_mapper.bin_thresholds_):
        assert ours.tobytes() == theirs.tobytes()
    assert fast.predict(x).tobytes() == stock.predict(x).tobytes()
    assert type(fast) is HistGradientBoostingRegressor and type(fast._bin_mapper) is sklearn_binning._BinMapper


def test_the_swap_lasts_only_for_the_block_even_when_the_fit_fails():
    with pytest.raises(ValueError):
        with fast_binning():
            assert sklearn_binning._find_binning_thresholds is hashed_thresholds
            HistGradientBoostingRegressor().fit(np.zeros((3, 2)), np.zeros(4))  # mismatched lengths
    assert sklearn_binning._find_binning_thresholds is ORIGINAL
