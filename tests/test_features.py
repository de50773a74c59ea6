"""Features use data up to t only; labels start after the decision and say when they are known."""

import numpy as np
import pandas as pd
import pytest

from portfolio_mlops.config import FeatureConfig, LabelConfig
from portfolio_mlops.errors import ConfigError
from portfolio_mlops.features import (
    FEATURE_NAMES,
    _date_codes,
    _rolling,
    build_features,
    cross_sectional_rank,
    cross_sectional_zscore,
    winsorise_rows,
)
from synthetic import random_walk_panel

FEATURES = FeatureConfig()
LABELS = LabelConfig()


def _feature_rows(panel, features=FEATURES, labels=LABELS):
    fs = build_features(panel, features, labels)
    return fs, fs.frame.set_index(["date", "ticker"]).sort_index()


@pytest.mark.parametrize("normalisation", ["rank", "zscore"])
def test_changing_prices_after_t_changes_no_feature_at_or_before_t(normalisation):
    panel = random_walk_panel(n_tickers=25, n_days=500, seed=1)
    cutoff = panel["date"].sort_values().unique()[400]
    changed = panel.copy()
    later = changed["date"] > cutoff
    rng = np.random.default_rng(5)
    for column in ("open", "high", "low", "close", "adj_close", "volume"):
        changed.loc[later, column] *= rng.uniform(0.5, 1.5, later.sum())
    cfg = FeatureConfig(normalisation=normalisation)
    fs, before = _feature_rows(panel, cfg)
    _, after = _feature_rows(changed, cfg)
    upto = before.index.get_level_values("date") <= cutoff
    columns = [*fs.feature_names, "raw_mom_12_1", "raw_ret_21", "raw_vol_63"]
    pd.testing.assert_frame_equal(before.loc[upto, columns], after.loc[after.index.get_level_values("date") <= cutoff, columns])
    # ...and something after the cutoff did change, so the comparison is not vacuous.
    assert not before.loc[~upto, columns].equals(after.loc[~upto, columns])


def test_appending_days_changes_no_feature_already_computed():
    panel = random_walk_panel(n_tickers=20, n_days=450, seed=2)
    last_date = panel["date"].max()
    shorter = panel[panel["date"] < last_date - pd.Timedelta(days=30)]
    fs, full = _feature_rows(panel)
    _, short = _feature_rows(shorter)
    pd.testing.assert_frame_equal(full.loc[short.index, list(fs.feature_names)], short[list(fs.feature_names)])


def test_labels_known_at_cutoff_do_not_change_when_later_prices_change():
    panel = random_walk_panel(n_tickers=20, n_days=450, seed=3)
    fs, before = _feature_rows(panel)
    cutoff_pos = 380
    cutoff = fs.dates[cutoff_pos]
    changed = panel.copy()
    changed.loc[changed["date"] > cutoff, ["adj_close", "close"]] *= 1.7
    _, after = _feature_rows(changed)
    known = before["label_end_pos"] <= cutoff_pos
    pd.testing.assert_series_equal(before.loc[known, "label"], after.loc[known, "label"])
    assert not np.allclose(before.loc[~known, "label_raw"].dropna(), after.loc[~known, "label_raw"].dropna())


def test_label_is_forward_return_from_the_trade_close_after_the_decision():
    panel = random_walk_panel(n_tickers=8, n_days=400, seed=4)
    labels = LabelConfig(horizon_days=5, execution_lag_days=1)
    fs = build_features(panel, FEATURES, labels)
    prices = panel.pivot(index="date", columns="ticker", values="adj_close")
    row = fs.frame.iloc[100]
    t = prices.index.get_loc(row["date"])
    expected = prices[row["ticker"]].iloc[t + 6] / prices[row["ticker"]].iloc[t + 1] - 1
    assert row["label_raw"] == pytest.approx(expected)
    assert row["label_end_pos"] == t + 6


def test_label_is_demeaned_across_the_dates_universe():
    fs = build_features(random_walk_panel(n_tickers=10, n_days=400, seed=5), FEATURES, LABELS)
    per_date = fs.frame.dropna(subset=["label"]).groupby("date")["label"].mean()
    np.testing.assert_allclose(per_date.to_numpy(), 0.0, atol=1e-12)


def test_features_are_cross_sectionally_normalised_per_date():
    fs = build_features(random_walk_panel(n_tickers=30, n_days=400, seed=6), FEATURES, LABELS)
    by_date = fs.frame.groupby("date")["mom_12_1"]
    assert by_date.min().min() > -0.5 and by_date.max().max() < 0.5
    np.testing.assert_allclose(by_date.mean().to_numpy(), 0.0, atol=1e-12)


def test_rank_ignores_missing_cells_and_centres_ranks():
    values = np.array([[3.0, np.nan, 1.0, 2.0]])
    np.testing.assert_allclose(cross_sectional_rank(values), [[1 / 3, np.nan, -1 / 3, 0.0]])


def test_zscore_is_winsorised_before_scaling():
    values = np.array([np.r_[np.zeros(98), 1.0, 1000.0]])
    z = cross_sectional_zscore(values, winsor_quantile=0.01)
    assert np.nanmax(z) < 15  # the outlier is clipped to the 99th percentile before scaling


def test_features_needing_volume_or_high_low_are_skipped_and_reported_when_absent():
    panel = random_walk_panel(n_tickers=10, n_days=400, seed=7)
    panel[["open", "high", "low", "volume"]] = np.nan
    fs = build_features(panel, FEATURES, LABELS)
    assert set(fs.skipped) == {"volume_ratio_21", "log_dollar_volume_21", "hl_range_21"}
    assert "needs volume" in fs.skipped["volume_ratio_21"]
    assert set(fs.feature_names) == set(FEATURE_NAMES) - set(fs.skipped)


def test_no_sample_before_the_longest_lookback_is_complete():
    fs = build_features(random_walk_panel(n_tickers=5, n_days=400, seed=8), FEATURES, LABELS)
    assert fs.frame["date_pos"].min() == 252  # mom_12_1 needs adj_close[t-252]


def test_unknown_feature_name_is_a_config_error():
    with pytest.raises(ConfigError, match="no_such_feature"):
        build_features(random_walk_panel(n_tickers=5, n_days=300), FeatureConfig(include=["no_such_feature"]), LABELS)


def test_sma_feature_matches_a_direct_computation():
    panel = random_walk_panel(n_tickers=4, n_days=400, seed=9)
    fs = build_features(panel, FeatureConfig(include=["px_sma30"], normalisation="rank"), LABELS)
    wide = panel.pivot(index="date", columns="ticker", values="adj_close")
    raw = wide / wide.rolling(30).mean() - 1
    day = fs.dates[300]
    expected_order = raw.loc[day].sort_values().index.tolist()
    got = fs.frame[fs.frame["date"] == day].sort_values("px_sma30")["ticker"].tolist()
    assert got == expected_order


# --- the fast paths give exactly what the plain pandas/numpy computation gives -----------------------------

def _gappy_grid(seed: int, days: int = 300, tickers: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (days, tickers)), axis=0))
    grid[rng.random(grid.shape) < 0.03] = np.nan  # missing days inside histories
    grid[:40, 2] = np.nan  # a late listing
    grid[250:, 5] = np.nan  # a delisting
    return grid


@pytest.mark.parametrize(("window", "how"), [(10, "mean"), (21, "std"), (63, "std"), (252, "max"), (5, "max")])
def test_rolling_over_all_tickers_at_once_equals_pandas_per_column_bit_for_bit(window, how):
    grid = _gappy_grid(seed=window)

    expected = getattr(pd.DataFrame(grid).rolling(window, min_periods=window), how)().to_numpy()

    assert _rolling(grid, window, how).tobytes() == expected.tobytes()


def test_equal_values_rank_in_column_order_like_a_stable_sort():
    rng = np.random.default_rng(11)
    values = rng.integers(0, 4, size=(200, 30)).astype(float)  # many ties per row
    values[rng.random(values.shape) < 0.2] = np.nan
    values[5, :] = 2.0  # a row of one value

    finite = np.isfinite(values)
    order = np.argsort(np.where(finite, values, np.inf), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(values.shape[1])[None, :].repeat(values.shape[0], axis=0), axis=1)
    expected = np.where(finite, (ranks + 0.5) / finite.sum(axis=1, keepdims=True) - 0.5, np.nan)

    assert cross_sectional_rank(values).tobytes() == expected.tobytes()


def _stable_argsort_ranks(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    order = np.argsort(np.where(finite, values, np.inf), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(values.shape[1])[None, :].repeat(values.shape[0], axis=0), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite, (ranks + 0.5) / finite.sum(axis=1, keepdims=True) - 0.5, np.nan)


@pytest.mark.parametrize("case", ["one_ulp_apart", "span_overflows", "signed_zeros_and_subnormals",
                                  "infinities_unranked", "one_value_per_row", "wider_than_4096_columns"])
def test_ranks_equal_a_stable_argsort_where_the_bucketed_sort_is_hardest(case):
    """The ranker sorts 32-bit keys of value buckets; values sharing a bucket must still come out in the
    order of a stable argsort of the floats, whatever the values' spread."""
    rng = np.random.default_rng(len(case))
    shape = (30, 5000) if case == "wider_than_4096_columns" else (60, 300)
    if case == "one_ulp_apart":  # neighbours in the same bucket, equal values in column order
        values = 1.0 + rng.integers(0, 4, shape) * np.finfo(float).eps
    elif case == "span_overflows":  # max - min is inf: the whole row shares one bucket
        values = rng.standard_normal(shape)
        values[:, ::7], values[:, ::11] = 1e308, -1e308
    elif case == "signed_zeros_and_subnormals":  # -0.0 == 0.0 ties; a span too narrow to scale
        values = np.where(rng.random(shape) < 0.5, 0.0, -0.0) + rng.integers(0, 3, shape) * 5e-324
    elif case == "infinities_unranked":
        values = rng.standard_normal(shape)
        values[:, ::3], values[:, ::5] = np.inf, -np.inf
    elif case == "one_value_per_row":
        values = np.full(shape, np.nan)
        values[np.arange(shape[0]), rng.integers(0, shape[1], shape[0])] = 1.5
    else:
        values = rng.standard_normal(shape) * 10.0 ** rng.integers(-200, 200, (shape[0], 1))
    if case != "one_value_per_row":
        values[rng.random(shape) < 0.2] = np.nan

    assert cross_sectional_rank(values).tobytes() == _stable_argsort_ranks(values).tobytes()


def test_rolling_max_counts_infinite_values_as_missing_like_pandas():
    grid = _gappy_grid(seed=4)
    grid[100, 1], grid[150, 3] = np.inf, -np.inf

    expected = pd.DataFrame(grid).rolling(21, min_periods=21).max().to_numpy()

    assert _rolling(grid, 21, "max").tobytes() == expected.tobytes()


@pytest.mark.parametrize("case", ["daily_ns", "daily_seconds", "intraday_times", "with_nat", "tz_aware", "shuffled"])
def test_trading_dates_are_numbered_as_pandas_factorize_numbers_them(case):
    dates = pd.Series(pd.bdate_range("2015-01-01", periods=400).repeat(3), name="date")
    if case == "daily_seconds":
        dates = dates.astype("datetime64[s]")
    elif case == "intraday_times":  # not midnight: the dense day table does not apply
        dates.iloc[5] += pd.Timedelta(hours=9)
    elif case == "with_nat":
        dates.iloc[7] = pd.NaT
    elif case == "tz_aware":
        dates = dates.dt.tz_localize("America/New_York")
    elif case == "shuffled":
        dates = dates.sample(frac=1.0, random_state=2)

    codes, distinct = _date_codes(dates)
    expected_codes, expected = pd.factorize(dates, sort=True)

    np.testing.assert_array_equal(codes, expected_codes)
    pd.testing.assert_index_equal(distinct, pd.Index(expected), exact=True)


def test_row_winsorising_clips_at_numpys_own_nanquantile():
    values = _gappy_grid(seed=3, tickers=40)
    values[7] = np.nan  # a day with no value at all
    values[8, 1:] = np.nan  # a day with one value

    clipped = winsorise_rows(values, 0.05)

    rows = np.isfinite(values).any(axis=1)
    lower = np.full(len(values), np.nan)
    upper = np.full(len(values), np.nan)
    lower[rows] = np.nanquantile(values[rows], 0.05, axis=1)
    upper[rows] = np.nanquantile(values[rows], 0.95, axis=1)
    assert clipped.tobytes() == np.clip(values, lower[:, None], upper[:, None]).tobytes()


def test_features_do_not_depend_on_the_order_of_the_input_rows():
    panel = random_walk_panel(n_tickers=12, n_days=320, seed=12)
    shuffled = panel.sample(frac=1.0, random_state=3)  # not sorted by ticker: the grid's fallback path

    sorted_frame = build_features(panel, FEATURES, LABELS).frame
    shuffled_frame = build_features(shuffled, FEATURES, LABELS).frame

    pd.testing.assert_frame_equal(shuffled_frame, sorted_frame, check_exact=True)
