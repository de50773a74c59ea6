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

    def by_ticker(self, column: str) -> np.ndarray:
        """getattr(self, column) transposed to (tickers, days), C-contiguous: each ticker's history in a row."""
        key = ("by_ticker", column)
        if key not in self._memo:
            self._memo[key] = np.ascontiguousarray(getattr(self, column).T)
        return self._memo[key]

    def returns_by_ticker(self) -> np.ndarray:
        """daily_returns() transposed: the same divisions of the same closes, in ticker-major order."""
        if ("by_ticker", "returns") not in self._memo:
            closes = self.by_ticker("adj_close")
            returns = np.full_like(closes, np.nan)
            np.divide(closes[:, 1:], closes[:, :-1], out=returns[:, 1:])
            returns[:, 1:] -= 1.0
            self._memo["by_ticker", "returns"] = returns
        return self._memo["by_ticker", "returns"]

    def rolling(self, name: str, window: int, how: str, by_ticker: Callable[[], np.ndarray]) -> np.ndarray:
        """_rolling over `window` days of the (tickers, days) array by_ticker() ("mean" or "std"), as
        (days, tickers), remembered under (name, window, how) for this grid."""
        key = (name, window, how)
        if key not in self._memo:
            if ("windows", window) not in self._memo:  # the same bounds serve every column rolled over `window`
                self._memo["windows", window] = _per_ticker_windows(*self.adj_close.shape, window)
            self._memo[key] = _rolling_by_ticker(by_ticker(), window, how, self._memo["windows", window])
        return self._memo[key]

    def forget(self) -> None:
        """Drop what was remembered (rolling windows, ticker-major copies): build_features is done with
        them once the features are computed, and their memory serves the arrays allocated next."""
        self._memo.clear()


def _date_codes(dates: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """pd.factorize(dates, sort=True) for midnight datetime64 dates without NaT, by a dense day table.

    Daily dates span a few thousand days, so a presence table over that span sorts and numbers them
    in two array passes instead of hashing millions of timestamps. Anything else goes to factorize.
    """
    values = dates.to_numpy()
    if len(values) and values.dtype.kind == "M" and not isinstance(dates.dtype, pd.DatetimeTZDtype):
        unit, _ = np.datetime_data(values.dtype)
        per_day = np.timedelta64(1, "D") // np.timedelta64(1, unit) if unit in ("s", "ms", "us", "ns") else 0
        ticks = values.view(np.int64)
        if per_day and ticks.min() != np.iinfo(np.int64).min:  # NaT is the int64 minimum
            first = ticks.min()
            days, remainder = np.divmod(ticks - first, per_day)
            span = int(days.max()) + 1
            if not remainder.any() and span <= 4 * len(values) + 1024:
                present = np.zeros(span, dtype=bool)
                present[days] = True
                number = np.cumsum(present, dtype=np.int64) - 1
                distinct = (np.flatnonzero(present) * per_day + first).view(values.dtype)
                return number[days], pd.Index(distinct)
    codes, uniques = pd.factorize(dates, sort=True)
    return codes, pd.Index(uniques)


def to_grid(prices: pd.DataFrame, keep_by_ticker: bool = False) -> Grid:
    """The price grid; keep_by_ticker also keeps each column's (tickers, days) copy (see Grid.by_ticker)."""
    date_codes, dates = _date_codes(prices["date"])
    ticker_codes, tickers = sorted_ticker_codes(prices["ticker"])
    shape = (len(dates), len(tickers))
    # Flat position of each row on the ticker-major grid: ascending for the canonical panel (sorted by
    # ticker, date), so the scatter writes memory in order; the (days, tickers) grid is its transpose.
    cell = ticker_codes.astype(np.int64) * shape[0] + date_codes
    by_ticker = {}

    def place(column: str) -> np.ndarray:
        grid = np.full(shape[0] * shape[1], np.nan)
        grid[cell] = prices[column].to_numpy(dtype=float)
        by_ticker[column] = grid.reshape(shape[1], shape[0])
        return np.ascontiguousarray(by_ticker[column].T)

    grid = Grid(
        dates=pd.DatetimeIndex(dates), tickers=pd.Index(tickers),
        adj_close=place("adj_close"), close=place("close"), high=place("high"), low=place("low"),
        volume=place("volume"),
    )
    if keep_by_ticker:
        grid._memo.update({("by_ticker", column): values for column, values in by_ticker.items()})
    return grid


def _growth(a: np.ndarray, later: int, earlier: int) -> np.ndarray:
    """a[t - later] / a[t - earlier] - 1.0 for each row t (a negative shift looks forward), NaN where a
    shift runs off the calendar: the divisions of the shifted copies, without making them."""
    days = a.shape[0]
    out = np.full_like(a, np.nan)
    lo, hi = max(later, earlier, 0), days + min(later, earlier, 0)
    if lo < hi:
        rows = out[lo:hi]
        np.divide(a[lo - later:hi - later], a[lo - earlier:hi - earlier], out=rows)
        rows -= 1.0
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
    """Rolling `how` ("mean", "std", "max") over `window` rows of each column of a, full windows only."""
    if how == "max":
        return _rolling_max(a, window)
    return _rolling_by_ticker(np.ascontiguousarray(a.T), window, how, windows)


def _rolling_by_ticker(a_t: np.ndarray, window: int, how: str, windows=None) -> np.ndarray:
    # A full window is required (no partial lookbacks). pandas' own kernels (Kahan-compensated mean,
    # Welford variance) give the exact values; one call over all tickers' rows laid end to end.
    tickers, days = a_t.shape
    series = pd.Series(a_t.reshape(-1), copy=False)
    windows = windows or _per_ticker_windows(days, tickers, window)
    rolled = getattr(series.rolling(windows, min_periods=window), how)()
    return np.ascontiguousarray(rolled.to_numpy().reshape(tickers, days).T)


def _rolling_max(a: np.ndarray, window: int) -> np.ndarray:
    """Rolling max over full windows, as pandas gives it: NaN when any value in the window is missing,
    and pandas counts +-inf as missing.

    A max is exact whatever the order of comparisons, so van Herk/Gil-Werman blocks (a running max
    forward and backward within blocks of `window` rows) give the same values in a few array passes.
    Missing values enter as +inf, so exactly the windows holding one have max +inf and become NaN.
    """
    days, tickers = a.shape
    out = np.full_like(a, np.nan)
    if days < window:
        return out
    blocks = -(-days // window)
    padded = np.empty((blocks * window, tickers))
    padded[days:] = -np.inf
    np.copyto(padded[:days], a)
    padded[:days][~np.isfinite(a)] = np.inf
    cube = padded.reshape(blocks, window, tickers)
    forward = np.maximum.accumulate(cube, axis=1).reshape(-1, tickers)
    backward = cube[:, ::-1]
    np.maximum.accumulate(backward, axis=1, out=backward)  # in place: padded now holds the backward maxima
    full = out[window - 1:]  # the window ending at row r is [r - window + 1, r]
    np.maximum(padded[:days - window + 1], forward[window - 1:days], out=full)
    full[full == np.inf] = np.nan
    return out


# name -> (columns needed beyond adj_close, function of the grid). Windows are trading days.
def _feature_table() -> dict[str, tuple[tuple[str, ...], Callable[[Grid], np.ndarray]]]:
    def ret(k: int) -> Callable[[Grid], np.ndarray]:
        return lambda g: _growth(g.adj_close, 0, k)

    def sma(g: Grid, k: int) -> np.ndarray:
        return g.rolling("adj_close", k, "mean", lambda: g.by_ticker("adj_close"))

    def px_vs_sma(k: int) -> Callable[[Grid], np.ndarray]:
        return lambda g: g.adj_close / sma(g, k) - 1.0

    def vol(k: int) -> Callable[[Grid], np.ndarray]:
        return lambda g: g.rolling("returns", k, "std", g.returns_by_ticker)

    return {
        "ret_1": ((), ret(1)),
        "ret_5": ((), ret(5)),
        "ret_21": ((), ret(21)),
        "ret_63": ((), ret(63)),
        # 12-1 momentum: the year's return skipping the latest month (short-term reversal lives there).
        "mom_12_1": ((), lambda g: _growth(g.adj_close, 21, 252)),
        "px_sma10": ((), px_vs_sma(10)),
        "px_sma30": ((), px_vs_sma(30)),
        "sma10_sma30": ((), lambda g: sma(g, 10) / sma(g, 30) - 1.0),
        "vol_21": ((), vol(21)),
        "vol_63": ((), vol(63)),
        # Distance to the 52-week high (George & Hwang 2004 anchor effect).
        "dist_52w_high": ((), lambda g: g.adj_close / _rolling_max(g.adj_close, 252) - 1.0),
        "volume_ratio_21": (
            ("volume",), lambda g: g.volume / g.rolling("volume", 21, "mean", lambda: g.by_ticker("volume"))
        ),
        "log_dollar_volume_21": (
            ("volume",), lambda g: np.log(g.rolling(
                "dollar_volume", 21, "mean", lambda: g.by_ticker("close") * g.by_ticker("volume")) + 1.0)
        ),
        "hl_range_21": (("high", "low"), lambda g: g.rolling(
            "hl_range", 21, "mean", lambda: (g.by_ticker("high") - g.by_ticker("low")) / g.by_ticker("close"))),
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
    return _RowRanker(finite).rank(values)


def _centred_ranks(cells: np.ndarray) -> np.ndarray:
    """(position + 0.5) / n - 0.5 for each sorted position of a row with n ranked cells; NaN beyond n."""
    counts = cells.sum(axis=1, keepdims=True)
    positions = np.arange(cells.shape[1])[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        centred = (positions + 0.5) / counts - 0.5
    centred[positions >= counts] = np.nan  # the cells not ranked, sorted last
    return centred


class _RowRanker:
    """Centred ranks of values among the same `cells` of each row (finite there), NaN elsewhere.

    The order is that of np.argsort(np.where(cells, values, inf), axis=1, kind="stable"): ties in
    column order. A 64-bit argsort is slow here, but numpy's SIMD sort of 32-bit integers is ~10x
    faster, so each value is first mapped to one of 2**23 buckets spanning its row's range and
    packed with its column number into a uint32 key. The mapping, floor((v - min) * scale), is made
    of correctly rounded, monotone operations, so a < b never lands in a higher bucket than b: the
    key sort orders cells by bucket, then column. Only runs sharing a bucket (near or exact ties, a
    few per feature) are re-sorted by (value, column), which gives the stable argsort's order.
    The buffers are reused: build_features ranks a dozen features over the same cells, and fresh
    15 MB arrays cost page faults.
    """

    def __init__(self, cells: np.ndarray):
        n_rows, n_cols = cells.shape
        self.cells = cells
        self.outside = ~cells
        self.centred = _centred_ranks(cells)
        self.col_bits = max(1, (n_cols - 1).bit_length())
        # uint32 keys up to 4096 columns (>= 20 value bits); wider rows keep more value bits in uint64.
        self.key_type = np.uint32 if self.col_bits <= 12 else np.uint64
        value_bits = 8 * np.dtype(self.key_type).itemsize - self.col_bits
        self.top = float(2**value_bits - 2)  # the highest bucket of a ranked cell; top + 1 = not ranked
        self.columns = np.arange(n_cols, dtype=self.key_type)[None, :]
        self.row_start = (np.arange(n_rows, dtype=np.intp) * n_cols)[:, None]
        # (row, position) pairs whose both positions hold ranked cells: only there do ties matter
        self.ranked_pairs = np.arange(1, n_cols)[None, :] < cells.sum(axis=1, keepdims=True)
        self.scaled = np.empty(cells.shape)
        self.keys = np.empty(cells.shape, dtype=self.key_type)
        self.order = np.empty(cells.shape, dtype=np.intp)
        self.tied = np.empty((n_rows, max(n_cols - 1, 0)), dtype=bool)

    def rank(self, values: np.ndarray) -> np.ndarray:
        """The centred ranks of values, in a buffer of this ranker that the next call overwrites."""
        order = self._flat_order(values)
        out = self.scaled  # free once the keys are sorted
        out.reshape(-1)[order.reshape(-1)] = self.centred.reshape(-1)
        return out

    def _flat_order(self, values: np.ndarray) -> np.ndarray:
        """np.argsort(np.where(cells, values, inf), axis=1, kind="stable") as flat cell numbers."""
        key_type, col_bits, top = self.key_type, self.col_bits, self.top
        scaled = self.scaled
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            np.copyto(scaled, values)
            scaled[self.outside] = np.inf
            low = scaled.min(axis=1, keepdims=True)
            scaled[self.outside] = -np.inf
            high = scaled.max(axis=1, keepdims=True)
            scale = top / (high - low)
            # <= 1 cell, all equal, or a span too wide (scale 0: inf * 0 = NaN) or too narrow for floats
            flat_rows = ~(np.isfinite(scale) & (scale > 0))[:, 0]
            scaled -= low
            scaled *= scale
        scaled[flat_rows] = 0.0  # one bucket: the whole row is ordered by the run repair below
        scaled[self.outside] = top + 1  # not ranked: sorted last (NaN/inf there must not reach the cast)
        keys = self.keys
        np.copyto(keys, scaled, casting="unsafe")  # truncation = floor: 0 <= scaled <= top + 1
        keys <<= key_type(col_bits)
        keys |= self.columns
        keys.sort(axis=1)
        order = self.order
        np.bitwise_and(keys, key_type((1 << col_bits) - 1), out=order, casting="unsafe")  # column of each position
        keys >>= key_type(col_bits)  # bucket of each position
        tied = np.equal(keys[:, 1:], keys[:, :-1], out=self.tied)
        tied &= self.ranked_pairs
        pairs = np.flatnonzero(tied)  # (row, position) of each ranked cell sharing its bucket with the next
        if len(pairs):  # re-sort the cells of shared buckets by (value, column)
            n_cols = values.shape[1]
            rows, positions = np.divmod(pairs, n_cols - 1)
            first = rows * n_cols + positions  # ascending
            # each pair's two cells; a pair's second cell is the next pair's first when they are adjacent
            second = first + 1
            members = np.sort(np.concatenate([first, second[np.append(first[1:] != second[:-1], True)]]))
            member_rows = members // n_cols
            # Runs: consecutive positions of one row. Two runs that touch merge harmlessly: their buckets
            # differ, so all values of the first are below those of the second.
            starts = np.ones(len(members), dtype=bool)
            starts[1:] = (members[1:] != members[:-1] + 1) | (member_rows[1:] != member_rows[:-1])
            run = np.cumsum(starts)
            flat_order = order.reshape(-1)
            columns = flat_order[members]  # ascending within a bucket, so equal values stay in column order
            flat_order[members] = columns[np.lexsort((values[member_rows, columns], run))]  # lexsort is stable
        order += self.row_start
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
    grid = to_grid(prices, keep_by_ticker=True)
    table = _feature_table()
    wanted = list(features.include) if features.include else list(table)
    unknown = [name for name in wanted if name not in table]
    if unknown:
        from portfolio_mlops.errors import ConfigError

        raise ConfigError(f"features.include: unknown feature(s) {unknown}; known: {list(table)}")
    skipped: dict[str, str] = {}
    # Raw values as computed, not masked: every later use (ranks, z-scores, the raw_ columns) reads
    # them only on eligible cells, where every included feature is finite.
    raw: dict[str, np.ndarray] = {}
    eligible = np.isfinite(grid.adj_close)
    finite = np.empty(eligible.shape, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        for name in wanted:
            needs, compute = table[name]
            missing = [column for column in needs if not _has(grid, column)]
            if missing:
                skipped[name] = f"needs {', '.join(missing)}, absent in this data"
                continue
            raw[name] = compute(grid)
            eligible &= np.isfinite(raw[name], out=finite)
        for name in RAW_KEPT:  # benchmarks need these even when the model does not use them
            if name not in raw:
                raw[name] = table[name][1](grid)
    names = tuple(n for n in wanted if n in raw)
    del finite
    # Only the adjusted closes, dates and tickers are read from here on: free the rest as early as
    # possible (each array dropped is memory the next ones can reuse instead of faulting in fresh pages).
    grid.forget()
    adj_close, dates, tickers = grid.adj_close, grid.dates, grid.tickers
    del grid

    cells = np.flatnonzero(eligible)  # row-major: the order of the samples
    # The float columns go into one block, filled in place row by row: a dict of columns would be
    # copied again when pandas consolidates them, and the normalised grids need not all live at once.
    float_names = [*names, *(f"raw_{name}" for name in RAW_KEPT), "label_raw", "label", "label_train"]
    block = np.empty((len(float_names), len(cells)))
    ranker = _RowRanker(eligible) if features.normalisation == "rank" else None
    for i, name in enumerate(names):
        if ranker is not None:  # every feature is finite on exactly the eligible cells
            normalised = ranker.rank(raw[name])
        else:
            normalised = cross_sectional_zscore(np.where(eligible, raw[name], np.nan), features.winsor_quantile)
        np.take(normalised.reshape(-1), cells, out=block[i], mode="clip")  # "raise" would buffer `out`
        if name not in RAW_KEPT:
            del raw[name]
    del ranker

    lag, horizon = labels.execution_lag_days, labels.horizon_days
    with np.errstate(invalid="ignore", divide="ignore"):
        forward = _growth(adj_close, -(lag + horizon), -lag)
    forward[~eligible] = np.nan
    known = np.isfinite(forward)
    counts = known.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        universe_mean = np.where(known, forward, 0.0).sum(axis=1, keepdims=True) / counts
    demeaned = forward - universe_mean
    train_label = winsorise_rows(demeaned, labels.winsor_quantile)

    for i, values in enumerate([*(raw[name] for name in RAW_KEPT), forward, demeaned, train_label], start=len(names)):
        np.take(values.reshape(-1), cells, out=block[i], mode="clip")
    del raw, forward, demeaned, train_label, values  # before the frame columns are made
    rows, cols = np.divmod(cells, eligible.shape[1])
    frame = pd.DataFrame(block.T, columns=float_names, copy=False)
    frame.insert(0, "date", dates[rows])
    frame.insert(1, "ticker", tickers[cols])
    frame.insert(2, "date_pos", rows.astype(np.int32))
    frame["label_end_pos"] = (rows + lag + horizon).astype(np.int32)
    return FeatureSet(frame=frame, feature_names=names, skipped=skipped, dates=dates)
