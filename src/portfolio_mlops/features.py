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

    def daily_returns(self) -> np.ndarray:
        """Simple daily returns of adjusted closes; row d is the return from close d-1 to close d."""
        returns = np.full_like(self.adj_close, np.nan)
        returns[1:] = self.adj_close[1:] / self.adj_close[:-1] - 1.0
        return returns


def to_grid(prices: pd.DataFrame) -> Grid:
    date_codes, dates = pd.factorize(prices["date"], sort=True)
    ticker_codes, tickers = pd.factorize(prices["ticker"], sort=True)
    shape = (len(dates), len(tickers))

    def place(column: str) -> np.ndarray:
        grid = np.full(shape, np.nan)
        grid[date_codes, ticker_codes] = prices[column].to_numpy(dtype=float)
        return grid

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


def _rolling(a: np.ndarray, window: int, how: str) -> np.ndarray:
    # pandas' rolling runs column-wise in C; a full window is required (no partial lookbacks).
    return getattr(pd.DataFrame(a).rolling(window, min_periods=window), how)().to_numpy()


# name -> (columns needed beyond adj_close, function of the grid). Windows are trading days.
def _feature_table() -> dict[str, tuple[tuple[str, ...], Callable[[Grid], np.ndarray]]]:
    def ret(k: int) -> Callable[[Grid], np.ndarray]:
        return lambda g: g.adj_close / _shift(g.adj_close, k) - 1.0

    def px_vs_sma(k: int) -> Callable[[Grid], np.ndarray]:
        return lambda g: g.adj_close / _rolling(g.adj_close, k, "mean") - 1.0

    def vol(k: int) -> Callable[[Grid], np.ndarray]:
        return lambda g: _rolling(g.daily_returns(), k, "std")

    return {
        "ret_1": ((), ret(1)),
        "ret_5": ((), ret(5)),
        "ret_21": ((), ret(21)),
        "ret_63": ((), ret(63)),
        # 12-1 momentum: the year's return skipping the latest month (short-term reversal lives there).
        "mom_12_1": ((), lambda g: _shift(g.adj_close, 21) / _shift(g.adj_close, 252) - 1.0),
        "px_sma10": ((), px_vs_sma(10)),
        "px_sma30": ((), px_vs_sma(30)),
        "sma10_sma30": ((), lambda g: _rolling(g.adj_close, 10, "mean") / _rolling(g.adj_close, 30, "mean") - 1.0),
        "vol_21": ((), vol(21)),
        "vol_63": ((), vol(63)),
        # Distance to the 52-week high (George & Hwang 2004 anchor effect).
        "dist_52w_high": ((), lambda g: g.adj_close / _rolling(g.adj_close, 252, "max") - 1.0),
        "volume_ratio_21": (("volume",), lambda g: g.volume / _rolling(g.volume, 21, "mean")),
        "log_dollar_volume_21": (
            ("volume",), lambda g: np.log(_rolling(g.close * g.volume, 21, "mean") + 1.0)
        ),
        "hl_range_21": (("high", "low"), lambda g: _rolling((g.high - g.low) / g.close, 21, "mean")),
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
    filled = np.where(finite, values, np.inf)  # non-finite sort last
    order = np.argsort(filled, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(values.shape[1])[None, :].repeat(values.shape[0], axis=0), axis=1)
    counts = finite.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        centred = (ranks + 0.5) / counts - 0.5
    return np.where(finite, centred, np.nan)


def winsorise_rows(values: np.ndarray, quantile: float) -> np.ndarray:
    """Clip each row at its own [q, 1-q] quantiles (NaN ignored)."""
    if quantile <= 0:
        return values
    finite_rows = np.isfinite(values).any(axis=1)
    lower = np.full(values.shape[0], np.nan)
    upper = np.full(values.shape[0], np.nan)
    lower[finite_rows] = np.nanquantile(values[finite_rows], quantile, axis=1)
    upper[finite_rows] = np.nanquantile(values[finite_rows], 1 - quantile, axis=1)
    return np.clip(values, lower[:, None], upper[:, None])


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
    with np.errstate(invalid="ignore", divide="ignore"):
        for name in wanted:
            needs, compute = table[name]
            missing = [column for column in needs if not _has(grid, column)]
            if missing:
                skipped[name] = f"needs {', '.join(missing)}, absent in this data"
                continue
            values = compute(grid)
            values = np.where(np.isfinite(values), values, np.nan)
            raw[name] = values
        for name in RAW_KEPT:  # benchmarks need these even when the model does not use them
            if name not in raw:
                raw[name] = table[name][1](grid)
    names = tuple(n for n in wanted if n in raw)

    eligible = np.isfinite(grid.adj_close)
    for name in names:
        eligible &= np.isfinite(raw[name])

    normalised = {}
    for name in names:
        masked = np.where(eligible, raw[name], np.nan)
        normalised[name] = (
            cross_sectional_rank(masked) if features.normalisation == "rank"
            else cross_sectional_zscore(masked, features.winsor_quantile)
        )

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

    rows, cols = np.nonzero(eligible)
    frame = pd.DataFrame({
        "date": grid.dates[rows],
        "ticker": grid.tickers[cols],
        "date_pos": rows.astype(np.int32),
    })
    for name in names:
        frame[name] = normalised[name][rows, cols]
    for name in RAW_KEPT:
        frame[f"raw_{name}"] = raw[name][rows, cols]
    frame["label_raw"] = forward[rows, cols]
    frame["label"] = demeaned[rows, cols]
    frame["label_train"] = train_label[rows, cols]
    frame["label_end_pos"] = (rows + lag + horizon).astype(np.int32)
    return FeatureSet(frame=frame, feature_names=names, skipped=skipped, dates=grid.dates)
