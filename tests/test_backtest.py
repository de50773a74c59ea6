"""Portfolio simulation: timing, drift, turnover and costs, checked against hand calculations."""

import numpy as np
import pandas as pd
import pytest

from portfolio_mlops.backtest import Book, index_returns, simulate, top_n_book
from portfolio_mlops.config import PortfolioConfig

DATES = pd.bdate_range("2020-01-01", periods=12)


def _returns(*columns):
    return np.column_stack(columns).astype(float)


def test_first_return_day_is_after_the_trade_close():
    daily = _returns(np.arange(12) / 100.0)
    book = Book(np.array([2]), [(np.array([0]), np.array([1.0]))])
    result = simulate("x", book, daily, DATES, execution_lag_days=1, rebalance_every_days=5)
    # decided at close 2, traded at close 3: the first return earned is close 3 -> close 4
    assert result.dates[0] == DATES[4]
    np.testing.assert_allclose(result.gross, daily[4:9, 0])


def test_weights_drift_with_prices_between_rebalances():
    a = np.full(12, 0.10)
    b = np.zeros(12)
    book = Book(np.array([0]), [(np.array([0, 1]), np.array([0.5, 0.5]))])
    result = simulate("x", book, _returns(a, b), DATES, execution_lag_days=0, rebalance_every_days=3)
    # day 1: 0.5*1.1 + 0.5 = 1.05; day 2: (0.5*1.21 + 0.5) / 1.05
    np.testing.assert_allclose(result.gross[:2], [0.05, (0.605 + 0.5) / 1.05 - 1])


def test_turnover_counts_buys_and_sells_of_the_drifted_book():
    a = np.full(12, 0.10)
    b = np.zeros(12)
    book = Book(np.array([0, 2]), [(np.array([0, 1]), np.array([0.5, 0.5])), (np.array([1]), np.array([1.0]))])
    result = simulate("x", book, _returns(a, b), DATES, execution_lag_days=0, rebalance_every_days=2)
    drifted_a = 0.5 * 1.21 / (0.5 * 1.21 + 0.5)
    assert result.turnover[0] == pytest.approx(1.0)  # buying the first book
    assert result.turnover[1] == pytest.approx(2 * drifted_a)  # sell all of a, buy the same value of b
    assert result.one_way_turnover == pytest.approx(drifted_a)


def test_costs_are_charged_per_side_on_the_first_day_of_each_period():
    daily = _returns(np.full(12, 0.01), np.full(12, 0.01))
    book = Book(np.array([0, 3]), [(np.array([0]), np.array([1.0])), (np.array([1]), np.array([1.0]))])
    result = simulate("x", book, daily, DATES, execution_lag_days=0, rebalance_every_days=3)
    net = result.net(10.0)
    assert net[0] == pytest.approx(1.01 * (1 - 0.001) - 1)  # buy 100%: 10 bps
    assert net[3] == pytest.approx(1.01 * (1 - 0.002) - 1)  # sell 100% and buy 100%: 20 bps
    np.testing.assert_allclose(np.delete(net, [0, 3]), 0.01)
    np.testing.assert_allclose(result.net(0.0), result.gross)


def test_a_held_stock_without_a_price_earns_zero_that_day_and_is_counted():
    daily = _returns(np.r_[np.full(6, 0.02), np.nan, np.full(5, 0.02)])
    book = Book(np.array([0]), [(np.array([0]), np.array([1.0]))])
    result = simulate("x", book, daily, DATES, execution_lag_days=0, rebalance_every_days=10)
    assert result.missing_held_returns == 1
    assert result.gross[5] == 0.0


def test_top_n_picks_highest_scores_with_ties_broken_by_ticker():
    rows = pd.DataFrame({
        "date_pos": [5, 5, 5, 5],
        "ticker": ["D", "C", "B", "A"],
        "prediction": [0.1, 0.3, 0.3, -1.0],
        "raw_vol_63": [0.01, 0.02, 0.04, 0.01],
    })
    tickers = pd.Index(["A", "B", "C", "D"])
    book = top_n_book(rows, "prediction", tickers, PortfolioConfig(top_n=2))
    assert list(tickers[book.holdings[0][0]]) == ["B", "C"]
    np.testing.assert_allclose(book.holdings[0][1], [0.5, 0.5])
    inverse = top_n_book(rows, "prediction", tickers, PortfolioConfig(top_n=2, weighting="inverse_vol"))
    np.testing.assert_allclose(inverse.holdings[0][1], [1 / 3, 2 / 3])  # B has twice C's volatility


def test_index_returns_follow_the_level_series_and_carry_over_gaps():
    levels = pd.Series([100.0, 101.0, 103.02, 100.0], index=pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-06", "2020-01-07"]))
    days = pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"])
    np.testing.assert_allclose(index_returns(levels, pd.DatetimeIndex(days)), [0.01, 0.0, 0.02, 100 / 103.02 - 1])


@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_top_n_picks_the_same_rows_in_the_same_order_as_sorting_by_date_score_and_name(seed, descending):
    rng = np.random.default_rng(seed)
    names = np.array([f"T{i:03d}" for i in range(60)])
    rows = pd.DataFrame({"date_pos": rng.integers(0, 8, 400), "ticker": rng.choice(names, 400),
                         "prediction": rng.choice([0.1, -0.2, 0.0, -0.0, 0.3, np.nan, np.inf, 0.05], 400)
                         if seed % 2 else rng.normal(size=400), "raw_vol_63": rng.uniform(0.1, 0.5, 400)})
    rows = rows.drop_duplicates(["date_pos", "ticker"]).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    expected = (rows.sort_values(["date_pos", "prediction", "ticker"], ascending=[True, not descending, True], kind="stable")
                .groupby("date_pos", sort=True).head(3))
    book = top_n_book(rows, "prediction", pd.Index(np.sort(names)), PortfolioConfig(top_n=3), descending)
    assert list(book.decision_pos) == sorted(expected["date_pos"].unique())
    picked = [list(np.sort(names)[held]) for held, _ in book.holdings]
    assert picked == [list(group["ticker"]) for _, group in expected.groupby("date_pos", sort=True)]
    # an index that is not sorted by name is sorted the slow way, to the same picks
    shuffled = pd.Index(rng.permutation(names))
    again = top_n_book(rows, "prediction", shuffled, PortfolioConfig(top_n=3), descending)
    assert [list(shuffled[held]) for held, _ in again.holdings] == picked
    # rows in (date, ticker) order, as a feature frame's universe: one sort of a dates x names grid
    ordered = rows.sort_values(["date_pos", "ticker"], kind="stable")
    grouped = top_n_book(ordered, "prediction", pd.Index(np.sort(names)), PortfolioConfig(top_n=3), descending)
    assert [list(np.sort(names)[held]) for held, _ in grouped.holdings] == picked
    # with the codes given by the caller (evaluation looks them up once for ~22 benchmark books)
    codes = pd.Index(np.sort(names)).get_indexer(ordered["ticker"])
    given = top_n_book(ordered, "prediction", pd.Index(np.sort(names)), PortfolioConfig(top_n=3), descending, codes)
    assert [list(np.sort(names)[held]) for held, _ in given.holdings] == picked
    assert all(np.array_equal(w1, w2) for (_, w1), (_, w2) in zip(given.holdings, book.holdings))
