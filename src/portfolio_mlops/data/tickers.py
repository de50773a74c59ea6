"""Codes of a ticker column: what pd.factorize(sort=True) gives, fast for a panel sorted by ticker."""

from __future__ import annotations

import numpy as np
import pandas as pd


def ticker_codes(tickers: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """(codes, sorted distinct tickers) with tickers[i] == distinct[codes[i]], as pd.factorize(sort=True).

    The canonical panel is sorted by ticker, so each ticker is one run of rows: then the codes are the
    run numbers, found by comparing neighbours (no hash table over millions of strings). Any other
    order, and categorical or missing values, fall back to factorize.
    """
    values = tickers.array
    if len(tickers) and isinstance(values, pd.arrays.ArrowStringArray):
        import pyarrow as pa
        import pyarrow.compute as pc

        arrow = values._pa_array  # noqa: SLF001 - the Arrow data behind pandas' default str dtype
        arrow = arrow.combine_chunks() if isinstance(arrow, pa.ChunkedArray) else arrow
        if arrow.null_count == 0:
            boundary = np.empty(len(arrow), dtype=bool)
            boundary[0] = True
            boundary[1:] = pc.not_equal(arrow[1:], arrow[:-1]).to_numpy(zero_copy_only=False)
            starts = np.flatnonzero(boundary)
            runs = arrow.take(pa.array(starts))
            if len(starts) == 1 or pc.all(pc.less(runs[:-1], runs[1:])).as_py():
                return np.cumsum(boundary) - 1, pd.Index(tickers.iloc[starts].to_numpy(), dtype=tickers.dtype)
    codes, uniques = pd.factorize(tickers, sort=True)
    return codes, pd.Index(uniques)


def with_categorical_tickers(prices: pd.DataFrame) -> pd.DataFrame:
    """The same frame with a categorical ticker column: equal values, equal pandas hashes, cheaper to hash."""
    if isinstance(prices["ticker"].dtype, pd.CategoricalDtype) or prices["ticker"].isna().any():
        return prices
    codes, distinct = ticker_codes(prices["ticker"])
    return prices.assign(ticker=pd.Categorical.from_codes(codes, categories=distinct))
