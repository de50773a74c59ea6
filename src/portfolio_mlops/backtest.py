"""Top-N portfolios from predictions, simulated on daily returns with turnover costs.

Timing: the portfolio chosen at decision close T is traded at close T+lag and held, weights drifting
with prices, until the next trade. Daily return d of a period is the return from close d-1 to
close d. A held stock with no price that day (a gap or a delisting) earns 0 for that day and the
count is reported. Costs: `bps` per side, charged on sum |w_target - w_drifted| (every buy and every
sell) at each trade, deducted from the first day's return of the new period. The first trade buys
the whole book (turnover 1). Reported turnover is one-way: half of sum |dw| per rebalance.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import pandas as pd

from portfolio_mlops.config import PortfolioConfig


@dataclass(frozen=True)
class Book:
    """Target weights per decision date: ticker columns (grid indices) and weights summing to 1."""

    decision_pos: np.ndarray  # calendar positions
    holdings: list[tuple[np.ndarray, np.ndarray]]  # per decision: (ticker indices, weights)


@dataclass(frozen=True)
class BacktestResult:
    name: str
    dates: pd.DatetimeIndex  # the return days
    gross: np.ndarray  # daily gross returns
    turnover: np.ndarray  # sum |dw| at each trade (two-way)
    period_start: np.ndarray  # index into `gross` of each period's first day
    missing_held_returns: int  # (day, stock) cells held without a price

    def net(self, bps_per_side: float) -> np.ndarray:
        net = self.gross.copy()
        cost = self.turnover * bps_per_side / 10_000.0
        net[self.period_start] = (1.0 + net[self.period_start]) * (1.0 - cost) - 1.0
        return net

    @property
    def one_way_turnover(self) -> float:
        """Mean one-way turnover per rebalance, excluding the initial purchase."""
        later = self.turnover[1:]
        return float(later.mean() / 2.0) if len(later) else float("nan")


def simulate(name: str, book: Book, daily_returns: np.ndarray, dates: pd.DatetimeIndex,
             execution_lag_days: int, rebalance_every_days: int) -> BacktestResult:
    """Run the book through daily returns (days x tickers grid, NaN where no price)."""
    n_days, n_tickers = daily_returns.shape
    trades = book.decision_pos + execution_lag_days
    keep = trades < n_days - 1
    trades = trades[keep]
    holdings = [h for h, k in zip(book.holdings, keep) if k]
    ends = np.append(trades[1:], min(trades[-1] + rebalance_every_days, n_days - 1))
    gross_parts, turnovers, starts = [], [], []
    drifted = np.zeros(n_tickers)
    missing = 0
    offset = 0
    for trade, end, (tickers, weights) in zip(trades, ends, holdings):
        target = np.zeros(n_tickers)
        target[tickers] = weights
        turnovers.append(float(np.abs(target - drifted).sum()))
        block = daily_returns[trade + 1:end + 1][:, tickers]
        gaps = ~np.isfinite(block)
        missing += int(gaps.sum())
        growth = np.cumprod(1.0 + np.where(gaps, 0.0, block), axis=0)
        value = np.concatenate([[weights.sum()], growth @ weights])
        gross_parts.append(value[1:] / value[:-1] - 1.0)
        drifted = np.zeros(n_tickers)
        drifted[tickers] = weights * growth[-1] / value[-1]
        starts.append(offset)
        offset += len(value) - 1
    return BacktestResult(
        name=name,
        dates=dates[trades[0] + 1:ends[-1] + 1],
        gross=np.concatenate(gross_parts),
        turnover=np.asarray(turnovers),
        period_start=np.asarray(starts),
        missing_held_returns=missing,
    )


def top_n_book(predictions: pd.DataFrame, score: str, ticker_index: pd.Index, portfolio: PortfolioConfig,
               descending: bool = True, ticker_codes: np.ndarray | None = None) -> Book:
    """Pick the top-N rows by `score` at each date_pos; equal or inverse-volatility weights.

    Ties are broken by ticker name so that runs are reproducible. `ticker_codes`: the rows' positions
    in a sorted `ticker_index`, when the caller already has them (several books of one universe).
    """
    chosen, codes = _top_rows(predictions, score, ticker_index, portfolio.top_n, descending, ticker_codes)
    return _book_from_rows(chosen, ticker_index, portfolio.weighting, codes)


def _top_rows(predictions: pd.DataFrame, score: str, ticker_index: pd.Index, top_n: int, descending: bool,
              codes: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The first `top_n` rows of each date_pos in the order (date_pos, score (descending or not), ticker);
    NaN scores last; with the chosen rows' ticker codes when known. A run's evaluation asks this ~30
    times of every decision's universe, so when `ticker_index` is sorted (the grid's tickers) the sort
    is one numpy sort on integer ticker codes (the same order as sorting the names); otherwise pandas
    sorts the names themselves."""
    if not ticker_index.is_monotonic_increasing:
        codes = None  # code order is name order only in a sorted index
    elif codes is None:
        codes = ticker_index.get_indexer(predictions["ticker"])
    if codes is None or (codes < 0).any():
        ordered = predictions.sort_values(["date_pos", score, "ticker"], ascending=[True, not descending, True],
                                          kind="stable")
        return ordered.groupby("date_pos", sort=True).head(top_n), None
    values = predictions[score].to_numpy(dtype=float)
    keys = -values if descending else values
    date_pos = predictions["date_pos"].to_numpy()
    if len(date_pos) and _in_date_then_code_order(date_pos, codes):
        chosen = _first_by_key_within_dates(date_pos, keys, top_n)
    else:
        order = np.lexsort((codes, keys, date_pos))  # stable; NaN sorts last either way
        dates = date_pos[order]
        starts = np.flatnonzero(np.r_[True, dates[1:] != dates[:-1]])
        place = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        chosen = order[place < top_n]
    return predictions.iloc[chosen], codes[chosen]


def _in_date_then_code_order(date_pos: np.ndarray, codes: np.ndarray) -> bool:
    """Rows sorted by (date_pos, ticker code) with one row per pair (a feature frame's universe)."""
    step = np.diff(date_pos)
    return bool((step >= 0).all() and ((step > 0) | (np.diff(codes) > 0)).all())


def _first_by_key_within_dates(date_pos: np.ndarray, keys: np.ndarray, top_n: int) -> np.ndarray:
    """Row numbers of the `top_n` smallest keys of each date (NaN last), dates ascending, ties in row
    order; rows already grouped by date. Equal to the lexsort by (date_pos, key, code) on rows in
    (date_pos, code) order, as one stable sort of a dates x names grid instead of a 3-key sort."""
    starts = np.flatnonzero(np.r_[True, date_pos[1:] != date_pos[:-1]])
    sizes = np.diff(np.r_[starts, len(date_pos)])
    row = np.repeat(np.arange(len(starts)), sizes)
    grid = np.full((len(starts), int(sizes.max())), np.nan)  # padding: NaN after every real row's key
    grid[row, np.arange(len(date_pos)) - starts[row]] = keys
    # stable: equal keys keep row (= ticker code) order, and a real NaN comes before the padding
    first = np.argsort(grid, axis=1, kind="stable")[:, :top_n]
    real = first < sizes[:, None]
    return (starts[:, None] + first)[real]


PORTFOLIO_COLUMNS = ("date", "ticker", "score", "rank", "selected", "weight")


def decision_portfolio(rows: pd.DataFrame, scores: np.ndarray, portfolio: PortfolioConfig) -> pd.DataFrame:
    """The book one decision date gets: every scored ticker with its rank, whether held, and its weight.

    `rows` are one date's feature rows (date, ticker, date_pos, raw_vol_63); `scores` the model's
    predictions for them. The picks and weights come from `top_n_book` itself, so this table is the
    book the backtest trades for that date (rank 1 = highest score, ties broken by ticker name).
    Weights of the selected tickers sum to 1; unselected tickers have weight 0.
    """
    if rows["date_pos"].nunique() != 1:
        raise ValueError("decision_portfolio takes the rows of exactly one decision date")
    scored = rows.assign(score=np.asarray(scores, dtype=float)).sort_values(["score", "ticker"], ascending=[False, True],
                                                                           kind="stable")
    tickers = pd.Index(scored["ticker"])
    [(held, weights)] = top_n_book(scored, "score", tickers, portfolio).holdings
    weight = np.zeros(len(scored))
    weight[held] = weights
    selected = np.zeros(len(scored), dtype=bool)
    selected[held] = True
    return pd.DataFrame({
        "date": pd.DatetimeIndex(scored["date"]).strftime("%Y-%m-%d"),
        "ticker": tickers.astype(str),
        "score": scored["score"].to_numpy(),
        "rank": np.arange(1, len(scored) + 1, dtype=np.int64),
        "selected": selected,
        "weight": weight,
    })


def equal_weight_book(universe: pd.DataFrame, ticker_index: pd.Index, ticker_codes: np.ndarray | None = None) -> Book:
    return _book_from_rows(universe, ticker_index, "equal", ticker_codes)


def random_book(universe: pd.DataFrame, ticker_index: pd.Index, portfolio: PortfolioConfig, seed: int,
                ticker_codes: np.ndarray | None = None) -> Book:
    rng = np.random.default_rng(seed)
    scored = universe.assign(_random=rng.random(len(universe)))
    return top_n_book(scored, "_random", ticker_index, portfolio, ticker_codes=ticker_codes)


def _book_from_rows(rows: pd.DataFrame, ticker_index: pd.Index, weighting: str, codes: np.ndarray | None = None) -> Book:
    positions, holdings = [], []
    if codes is None:
        codes = ticker_index.get_indexer(rows["ticker"])
    vol = rows["raw_vol_63"].to_numpy() if weighting == "inverse_vol" else None
    date_pos = rows["date_pos"].to_numpy()
    bounds = np.flatnonzero(np.diff(date_pos)) + 1
    for chunk in np.split(np.arange(len(rows)), bounds):
        if len(chunk) == 0:
            continue
        if vol is not None:
            inverse = 1.0 / vol[chunk]
            weights = inverse / inverse.sum()
        else:
            weights = np.full(len(chunk), 1.0 / len(chunk))
        positions.append(int(date_pos[chunk[0]]))
        holdings.append((codes[chunk], weights))
    return Book(np.asarray(positions), holdings)


def index_returns(benchmark: pd.Series, dates: pd.DatetimeIndex) -> np.ndarray:
    """Daily returns of an index level series on the given return days (levels carried over gaps)."""
    start = dates[0] - pd.Timedelta(days=10)
    levels = benchmark[benchmark.index >= start].sort_index()
    calendar = levels.index.union(dates)
    aligned = levels.reindex(calendar).ffill()
    returns = aligned.pct_change(fill_method=None).reindex(dates)
    return returns.fillna(0.0).to_numpy()

