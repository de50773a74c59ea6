"""Synthetic price panels for tests: known truth, so a result can be checked against it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def random_walk_panel(
    n_tickers: int = 60,
    n_days: int = 900,
    seed: int = 0,
    signal_strength: float = 0.0,
    regime_days: int = 126,
    daily_vol: float = 0.02,
) -> pd.DataFrame:
    """Canonical long prices (date, ticker, open, high, low, close, adj_close, volume).

    With signal_strength = 0, returns are i.i.d. noise plus a common market factor: nothing is
    predictable. With signal_strength > 0, each ticker has a hidden daily drift, drawn from
    N(0, signal_strength) and held for `regime_days`, so past returns carry information about
    future returns: a planted momentum signal.
    """
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2005-01-03", periods=n_days)
    market = rng.normal(0.0003, 0.01, size=(n_days, 1))
    drift = np.zeros((n_days, n_tickers))
    if signal_strength > 0:
        for start in range(0, n_days, regime_days):
            drift[start:start + regime_days] = rng.normal(0.0, signal_strength, size=n_tickers)
    noise = rng.normal(0.0, daily_vol, size=(n_days, n_tickers))
    log_returns = market + drift + noise
    close = 50.0 * np.exp(np.cumsum(log_returns, axis=0))
    spread = np.abs(rng.normal(0.0, 0.01, size=close.shape))
    tickers = [f"T{i:03d}" for i in range(n_tickers)]
    frame = pd.DataFrame({
        "date": np.repeat(dates.to_numpy(), n_tickers),
        "ticker": np.tile(tickers, n_days),
        "open": (close * (1 + rng.normal(0, 0.003, close.shape))).ravel(),
        "high": (close * (1 + spread)).ravel(),
        "low": (close * (1 - spread)).ravel(),
        "close": close.ravel(),
        "adj_close": close.ravel(),
        "volume": rng.integers(100_000, 5_000_000, size=close.size).astype(float),
    })
    frame["high"] = frame[["open", "high", "close"]].max(axis=1)
    frame["low"] = frame[["open", "low", "close"]].min(axis=1)
    return frame.sort_values(["ticker", "date"], ignore_index=True)


def write_kaggle_daily(prices: pd.DataFrame, folder) -> Path:
    """Write a canonical panel (random_walk_panel's columns) as a Kaggle-daily folder: sp500_stocks.csv
    with Date,Symbol,Adj Close,Close,High,Low,Open,Volume. Returns the folder."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stocks = pd.DataFrame({
        "Date": pd.to_datetime(prices["date"]).dt.strftime("%Y-%m-%d"), "Symbol": prices["ticker"],
        "Adj Close": prices["adj_close"], "Close": prices["close"], "High": prices["high"], "Low": prices["low"],
        "Open": prices["open"], "Volume": prices["volume"],
    })
    stocks.to_csv(folder / "sp500_stocks.csv", index=False)
    return folder
