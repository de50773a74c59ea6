"""Point-in-time features and forward-return labels, vectorised over a (trading day x ticker) grid.

Contract: the feature row of (t, ticker) is a function of prices dated <= t only, and the per-date
normalisation uses only the cross-section of date t. Labels look forward by construction and carry
`label_end_pos`, the calendar position at which each label becomes known; walk-forward training uses
a sample only once that position is <= the decision date.

Execution convention (LabelConfig): decide at close t, trade at close t+lag, hold `horizon` days:
    label(t) = adj_close[t + lag + horizon] / adj_close[t + lag] - 1
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from portfolio_mlops.config import FeatureConfig, LabelConfig
from portfolio_mlops.data.tickers import ticker_codes as sorted_ticker_codes


@dataclass(frozen=True)
class Grid:
    """Prices pivoted onto the trading calendar: arrays of shape (days, tickers), NaN where absent."""

    dates: pd.DatetimeIndex
    tickers: pd.Index
    adj_close: np.ndarray
    close: np.ndarray
    high: np.ndarray
    low: np.ndarray
    volume: np.ndarray
    # Rolling windows shared by several features (sma10 feeds px_sma10 and sma10_sma30): computed once.
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    def daily_returns(self) -> np.ndarray:
        """Simple daily returns of adjusted closes; row d is the return from close d-1 to close d."""
        if "returns" not in self._memo:
            returns = np.full_like(self.adj_close, np.nan)
            returns[1:] = self.adj_close[1:] / self.adj_close[:-1] - 1.0
            self._memo["returns"] = returns
        return self._memo["returns"]

    def rolling(self, name: str, window: int, how: str, values: Callable[[], np.ndarray]) -> np.ndarray:
        """_rolling(values(), window, how), remembered under (name, window, how) for this grid."""
        key = (name, window, how)
        if key not in self._memo:
            if ("windows", window) not in self._memo:  # the same bounds serve every column rolled over `window`
                self._memo["windows", window] = _per_ticker_windows(*self.adj_close.shape, window)
            self._memo[key] = _rolling(values(), window, how, self._memo["windows", window])
        return self._memo[key]


def to_grid(prices: pd.DataFrame) -> Grid:
    date_codes, dates = pd.factorize(prices["date"], sort=True)
    ticker_codes, tickers = sorted_ticker_codes(prices["ticker"])
    shape = (len(dates), len(tickers))
    cell = date_codes.astype(np.int64) * shape[1] + ticker_codes  # flat position of each row on the grid

    def place(column: str) -> np.ndarray:
        grid = np.full(shape[0] * shape[1], np.nan)
        grid[cell] = prices[column].to_numpy(dtype=float)
        return grid.reshape(shape)

    return Grid(
        dates=pd.DatetimeIndex(dates), tickers=pd.Index(tickers),
        adj_close=place("adj_close"), close=place("close"), high=place("high"), low=place("low"),
        volume=place("volume"),
    )


def _shift(a: np.ndarray, k: int) -> np.ndarray:
    """Row shift: positive k looks back k days (a[t-k]), negative k looks forward."""
    out = np.full_like(a, np.nan)
    if k > 0:
        out[k:] = a[:-k]
    elif k < 0:
        out[:k] = a[-k:]
    else:
        out[:] = a
    return out


def _per_ticker_windows(days: int, tickers: int, window: int):
    """Window bounds for one pandas rolling call over every ticker's column laid end to end.

    Each column's first window starts afresh at the column's first day, so pandas' kernel resets its
    running sums there: the values are those of a rolling call per column, without 500 calls.
    """
    from functools import lru_cache

    from pandas.api.indexers import BaseIndexer

    @lru_cache(maxsize=1)
    def bounds() -> tuple[np.ndarray, np.ndarray]:
        column_start = np.arange(0, days * tickers, days, dtype=np.int64)[:, None]
        start = column_start + np.maximum(np.arange(days, dtype=np.int64) + 1 - window, 0)[None, :]
        end = column_start + np.arange(1, days + 1, dtype=np.int64)[None, :]
        return start.reshape(-1), end.reshape(-1)

    class PerTicker(BaseIndexer):
        def get_window_bounds(self, num_values=0, min_periods=None, center=None, closed=None, step=None):
            return bounds()

    return PerTicker(window_size=window)


def _rolling(a: np.ndarray, window: int, how: str, windows=None) -> np.ndarray:
    # A full window is required (no partial lookbacks). pandas' own kernels (Kahan-compensated mean,
    # Welford variance) give the exact values; one call over all columns instead of one per column.
    days, tickers = a.shape
    if how == "max":
        return _rolling_max(a, window)
    series = pd.Series(np.ascontiguousarray(a.T).reshape(-1), copy=False)
    windows = windows or _per_ticker_windows(days, tickers, window)
    rolled = getattr(series.rolling(windows, min_periods=window), how)()
    return np.ascontiguousarray(rolled.to_numpy().reshape(tickers, days).T)


def _rolling_max(a: np.ndarray, window: int) -> np.ndarray:
    """Rolling max over full windows (NaN when any value in the window is NaN), as pandas gives it.

    A max is exact whatever the order of comparisons, so van Herk/Gil-Werman blocks (a running max
    forward and backward within blocks of `window` rows) give the same values in a few array passes.
    """
    days, tickers = a.shape
    out = np.full_like(a, np.nan)
    if days < window:
        return out
    blocks = -(-days // window)
    padded = np.full((blocks * window, tickers), -np.inf)
    padded[:days] = np.where(np.isnan(a), -np.inf, a)
    cube = padded.reshape(blocks, window, tickers)
    forward = np.maximum.accumulate(cube, axis=1).reshape(-1, tickers)
    backward = np.maximum.accumulate(cube[:, ::-1], axis=1)[:, ::-1].reshape(-1, tickers)
    end = np.arange(window - 1, days)  # window [end - window + 1, end]
    out[window - 1:] = np.maximum(backward[end - window + 1], forward[end])
    missing = np.isnan(a).astype(np.int32).cumsum(axis=0)
    gaps = missing[window - 1:] - np.vstack([np.zeros((1, tickers), np.int32), missing[:-window]])
    out[window - 1:][gaps > 0] = np.nan
    return out


# name -> (columns needed beyond adj_close, function of the grid). Windows are trading days.
def _feature_table() -> dict[str, tuple[tuple[str, ...], Callable[[Grid], np.ndarray]]]:
    def ret(k: int) -> Callable[[Grid], np.ndarray]:
        return lambda g: g.adj_close / _shift(g.adj_close, k) - 1.0

    def sma(g: Grid, k: int) -> np.ndarray:
        return g.rolling("adj_close", k, "mean", lambda: g.adj_close)

    def px_vs_sma(k: int) -> Callable[[Grid], np.ndarray]:
        return lambda g: g.adj_close / sma(g, k) - 1.0

    def vol(k: int) -> Callable[[Grid], np.ndarray]:
        return lambda g: g.rolling("returns", k, "std", g.daily_returns)

    return {
        "ret_1": ((), ret(1)),
        "ret_5": ((), ret(5)),
        "ret_21": ((), ret(21)),
        "ret_63": ((), ret(63)),
        # 12-1 momentum: the year's return skipping the latest month (short-term reversal lives there).
        "mom_12_1": ((), lambda g: _shift(g.adj_close, 21) / _shift(g.adj_close, 252) - 1.0),
        "px_sma10": ((), px_vs_sma(10)),
        "px_sma30": ((), px_vs_sma(30)),
        "sma10_sma30": ((), lambda g: sma(g, 10) / sma(g, 30) - 1.0),
        "vol_21": ((), vol(21)),
        "vol_63": ((), vol(63)),
        # Distance to the 52-week high (George & Hwang 2004 anchor effect).
        "dist_52w_high": ((), lambda g: g.adj_close / g.rolling("adj_close", 252, "max", lambda: g.adj_close) - 1.0),
        "volume_ratio_21": (("volume",), lambda g: g.volume / g.rolling("volume", 21, "mean", lambda: g.volume)),
        "log_dollar_volume_21": (
            ("volume",), lambda g: np.log(g.rolling("dollar_volume", 21, "mean", lambda: g.close * g.volume) + 1.0)
        ),
        "hl_range_21": (("high", "low"), lambda g: g.rolling("hl_range", 21, "mean", lambda: (g.high - g.low) / g.close)),
    }


FEATURE_NAMES = tuple(_feature_table())
LONGEST_LOOKBACK_DAYS = 253  # mom_12_1 and dist_52w_high need 252 past days plus today
# Raw (un-normalised) values kept for benchmarks and inverse-vol weights.
RAW_KEPT = ("mom_12_1", "ret_21", "vol_63")


@dataclass(frozen=True)
class FeatureSet:
    """Samples in long form: one row per (date, ticker) whose features are all known at that date.

    Columns: date, ticker, date_pos (row of the trading calendar), the normalised features,
    raw_<name> for RAW_KEPT, label_raw (forward return), label (label_raw minus the date's
    equal-weight mean over the eligible universe), label_train (label winsorised per date),
    label_end_pos (calendar row where the label becomes known).
    """

    frame: pd.DataFrame
    feature_names: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    dates: pd.DatetimeIndex = field(default_factory=lambda: pd.DatetimeIndex([]))


def _has(grid: Grid, column: str) -> bool:
    return bool(np.isfinite(getattr(grid, column)).any())


def cross_sectional_rank(values: np.ndarray) -> np.ndarray:
    """Per row: centred rank in (-0.5, 0.5) over the finite cells; NaN stays NaN. Ties by column order."""
    finite = np.isfinite(values)
    return _rank_cells(values, finite, _centred_ranks(finite))


def _centred_ranks(cells: np.ndarray) -> np.ndarray:
    """(position + 0.5) / n - 0.5 for each sorted position of a row with n ranked cells; NaN beyond n."""
    counts = cells.sum(axis=1, keepdims=True)
    positions = np.arange(cells.shape[1])[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        centred = (positions + 0.5) / counts - 0.5
    centred[positions >= counts] = np.nan  # the cells not ranked, sorted last
    return centred


def _rank_cells(values: np.ndarray, cells: np.ndarray, centred: np.ndarray,
                out: np.ndarray | None = None, filled: np.ndarray | None = None) -> np.ndarray:
    """Centred rank of values among the `cells` of each row (finite there), NaN elsewhere.

    `out` and `filled` (arrays shaped like values) are reused when given: build_features ranks a dozen
    features one after another, and fresh 15 MB arrays cost page faults.
    """
    if filled is None:
        filled = np.empty_like(values)
    np.copyto(filled, values)
    filled[~cells] = np.inf  # cells not ranked sort last
    out = np.empty_like(centred) if out is None else out
    out.reshape(-1)[_stable_row_order(filled).reshape(-1)] = centred.reshape(-1)
    return out


def _stable_row_order(filled: np.ndarray) -> np.ndarray:
    """np.argsort(filled, axis=1, kind="stable") as flat cell numbers, for rows whose unranked cells are +inf.

    A stable argsort is 4x slower than numpy's SIMD quicksort, so sort unstably, then put each run of
    equal finite values back into column order: the same order wherever it matters (the +inf cells
    come last either way and are not ranked).
    """
    n_rows, n_cols = filled.shape
    order = np.argsort(filled, axis=1)
    order += (np.arange(n_rows) * n_cols)[:, None]  # flat cell of each sorted position
    ordered = filled.reshape(-1)[order.reshape(-1)].reshape(filled.shape)
    tied = (ordered[:, 1:] == ordered[:, :-1]) & np.isfinite(ordered[:, 1:])
    if tied.any():
        in_run = np.zeros(filled.shape, dtype=bool)
        in_run[:, 1:] |= tied
        in_run[:, :-1] |= tied
        rows, positions = np.nonzero(in_run)  # row-major: each run is contiguous, positions ascending
        first = np.ones(len(rows), dtype=bool)
        first[1:] = (rows[1:] != rows[:-1]) | ~tied[rows[1:], positions[1:] - 1]
        run = np.cumsum(first)
        cells = order[rows, positions]  # same row, so the cell number orders like the column
        order[rows, positions] = cells[np.lexsort((cells, run))]  # each run's cells ascending
    return order


def winsorise_rows(values: np.ndarray, quantile: float) -> np.ndarray:
    """Clip each row at its own [q, 1-q] quantiles (NaN ignored).

    The quantiles are numpy's nanquantile (method "linear") computed for all rows from one sort: the
    same index arithmetic and interpolation, so the same floats, without a Python call per row.
    """
    if quantile <= 0:
        return values
    ordered = np.sort(values, axis=1)  # NaN last
    counts = (~np.isnan(values)).sum(axis=1)
    lower = _sorted_row_quantile(ordered, counts, quantile)
    upper = _sorted_row_quantile(ordered, counts, 1 - quantile)
    return np.clip(values, lower[:, None], upper[:, None])


def _sorted_row_quantile(ordered: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """numpy.lib._function_base_impl._quantile (linear) per row over the first counts[i] sorted values."""
    n = counts.astype(np.float64)
    virtual = (n - 1) * q  # numpy's _QuantileMethods["linear"]["get_virtual_index"]
    previous = np.floor(virtual)
    following = previous + 1
    above = virtual >= n - 1  # numpy then takes the last (largest) value for both neighbours
    previous[above] = -1
    following[above] = -1
    below = virtual < 0
    previous[below] = 0
    following[below] = 0
    previous, following = previous.astype(np.intp), following.astype(np.intp)
    gamma = virtual - previous
    last = np.maximum(counts - 1, 0)
    rows = np.arange(len(counts))
    a = ordered[rows, np.where(previous < 0, last, previous)]
    b = ordered[rows, np.where(following < 0, last, following)]
    with np.errstate(invalid="ignore"):
        diff = b - a
        result = a + diff * gamma
        result = np.where(gamma >= 0.5, b - diff * (1 - gamma), result)  # numpy's _lerp
    return np.where(counts > 0, result, np.nan)


def cross_sectional_zscore(values: np.ndarray, winsor_quantile: float) -> np.ndarray:
    clipped = winsorise_rows(values, winsor_quantile)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # dates with no eligible names are all-NaN rows
        mean = np.nanmean(clipped, axis=1, keepdims=True)
        std = np.nanstd(clipped, axis=1, keepdims=True)
        z = (clipped - mean) / np.where(std > 0, std, np.nan)
    return np.where(np.isfinite(values), np.nan_to_num(z, nan=0.0), np.nan)


def build_features(prices: pd.DataFrame, features: FeatureConfig, labels: LabelConfig) -> FeatureSet:
    """Features, labels and their timing for every eligible (date, ticker). See the module docstring."""
    grid = to_grid(prices)
    table = _feature_table()
    wanted = list(features.include) if features.include else list(table)
    unknown = [name for name in wanted if name not in table]
    if unknown:
        from portfolio_mlops.errors import ConfigError

        raise ConfigError(f"features.include: unknown feature(s) {unknown}; known: {list(table)}")
    skipped: dict[str, str] = {}
    raw: dict[str, np.ndarray] = {}
    finite: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name in wanted:
            needs, compute = table[name]
            missing = [column for column in needs if not _has(grid, column)]
            if missing:
                skipped[name] = f"needs {', '.join(missing)}, absent in this data"
                continue
            values = compute(grid)
            finite[name] = np.isfinite(values)
            raw[name] = np.where(finite[name], values, np.nan)
        for name in RAW_KEPT:  # benchmarks need these even when the model does not use them
            if name not in raw:
                raw[name] = table[name][1](grid)
    names = tuple(n for n in wanted if n in raw)

    eligible = np.isfinite(grid.adj_close)
    for name in names:
        eligible &= finite[name]

    rows, cols = np.nonzero(eligible)  # row-major: the order of the samples
    cells = rows * eligible.shape[1] + cols
    # The float columns go into one block, filled in place row by row: a dict of columns would be
    # copied again when pandas consolidates them, and the normalised grids need not all live at once.
    float_names = [*names, *(f"raw_{name}" for name in RAW_KEPT), "label_raw", "label", "label_train"]
    block = np.empty((len(float_names), len(rows)))
    centred = _centred_ranks(eligible) if features.normalisation == "rank" else None
    out, filled = np.empty(eligible.shape), np.empty(eligible.shape)
    for i, name in enumerate(names):
        if centred is not None:  # every feature is finite on exactly the eligible cells
            normalised = _rank_cells(raw[name], eligible, centred, out=out, filled=filled)
        else:
            normalised = cross_sectional_zscore(np.where(eligible, raw[name], np.nan), features.winsor_quantile)
        np.take(normalised.reshape(-1), cells, out=block[i], mode="clip")  # "raise" would buffer `out`
    del out, filled

    lag, horizon = labels.execution_lag_days, labels.horizon_days
    with np.errstate(invalid="ignore", divide="ignore"):
        forward = _shift(grid.adj_close, -(lag + horizon)) / _shift(grid.adj_close, -lag) - 1.0
    forward = np.where(eligible, forward, np.nan)
    known = np.isfinite(forward)
    counts = known.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        universe_mean = np.where(known, forward, 0.0).sum(axis=1, keepdims=True) / counts
    demeaned = forward - universe_mean
    train_label = winsorise_rows(demeaned, labels.winsor_quantile)

    for i, values in enumerate([*(raw[name] for name in RAW_KEPT), forward, demeaned, train_label], start=len(names)):
        np.take(values.reshape(-1), cells, out=block[i], mode="clip")
    frame = pd.DataFrame(block.T, columns=float_names, copy=False)
    frame.insert(0, "date", grid.dates[rows])
    frame.insert(1, "ticker", grid.tickers[cols])
    frame.insert(2, "date_pos", rows.astype(np.int32))
    frame["label_end_pos"] = (rows + lag + horizon).astype(np.int32)
    return FeatureSet(frame=frame, feature_names=names, skipped=skipped, dates=grid.dates)
