"""Generate a synthetic full-S&P-500-scale panel in the Kaggle "S&P 500 stocks (daily updated)" layout.

Writes a folder with
    sp500_stocks.csv     Date,Symbol,Adj Close,Close,High,Low,Open,Volume  (sorted by Symbol, then Date)
    sp500_index.csv      Date,S&P500
    sp500_companies.csv  Exchange,Symbol,Shortname,...,Weight
    params.json          the generation parameters (written last; a rerun with the same ones is a no-op)

Prices are geometric random walks: log return = beta * market + sector + idiosyncratic (Student-t
tails, clipped at |0.25|), daily vol 1-3%, no serial dependence. Beta and volatility are fixed per stock,
so the cross-section is slightly predictable from volatility features (beta x positive market drift, and
the sigma^2/2 convexity of simple returns): a small positive IC (~0.01) is expected, not a leak.
Some tickers list later than 2010-01-04; a few of those carry empty-price rows (Date and Symbol only)
for the days before their first trade, as the real Kaggle file does. Adj Close includes a smooth
dividend adjustment, so Close > Adj Close in the past. Values are float32-rounded, like the real
file's ("44.01606750488281").

Usage:
    python benchmarks/make_synthetic_panel.py --output .bench/synthetic [--tickers 500 --days 3800 --seed 0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

STOCKS_HEADER = ["Date", "Symbol", "Adj Close", "Close", "High", "Low", "Open", "Volume"]
COMPANY_COLUMNS = [
    "Exchange", "Symbol", "Shortname", "Longname", "Sector", "Industry", "Currentprice", "Marketcap", "Ebitda",
    "Revenuegrowth", "City", "State", "Country", "Fulltimeemployees", "Longbusinesssummary", "Weight",
]
SECTORS = {
    "Technology": ("Software - Infrastructure", "Semiconductors", "Consumer Electronics"),
    "Healthcare": ("Drug Manufacturers - General", "Medical Devices", "Healthcare Plans"),
    "Financial Services": ("Banks - Diversified", "Asset Management", "Insurance - Diversified"),
    "Consumer Cyclical": ("Specialty Retail", "Restaurants", "Auto Manufacturers"),
    "Industrials": ("Aerospace & Defense", "Railroads", "Specialty Industrial Machinery"),
    "Communication Services": ("Internet Content & Information", "Telecom Services", "Entertainment"),
    "Consumer Defensive": ("Household & Personal Products", "Beverages - Non-Alcoholic", "Discount Stores"),
    "Energy": ("Oil & Gas Integrated", "Oil & Gas E&P", "Oil & Gas Midstream"),
    "Utilities": ("Utilities - Regulated Electric", "Utilities - Diversified"),
    "Real Estate": ("REIT - Specialty", "REIT - Residential", "REIT - Industrial"),
    "Basic Materials": ("Specialty Chemicals", "Gold", "Building Materials"),
}
CITIES = [("New York", "NY"), ("San Jose", "CA"), ("Chicago", "IL"), ("Houston", "TX"), ("Boston", "MA"),
          ("Atlanta", "GA"), ("Seattle", "WA"), ("Charlotte", "NC"), ("Minneapolis", "MN"), ("Denver", "CO")]
MAX_ABS_LOG_RETURN = 0.25  # far below the validation limit of 0.6 / 1.0
START_DATE = "2010-01-04"


def make_symbols(rng: np.random.Generator, n: int) -> np.ndarray:
    """n unique, sorted 2-4 letter upper-case symbols."""
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    symbols: set[str] = set()
    while len(symbols) < n:
        length = int(rng.choice([2, 3, 4], p=[0.1, 0.5, 0.4]))
        symbols.add("".join(rng.choice(letters, size=length)))
    return np.array(sorted(symbols))


def simulate(n_tickers: int, n_days: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(START_DATE, periods=n_days)
    symbols = make_symbols(rng, n_tickers)
    sector_names = list(SECTORS)
    sector = rng.integers(0, len(sector_names), size=n_tickers)

    # Listing day: 90% trade from the first day, the rest list later, within the first 40% of the
    # calendar (always leaving >= 400 rows, so no ticker falls under the 253-row short-history rule).
    start = np.zeros(n_tickers, dtype=np.int64)
    late = rng.random(n_tickers) < 0.10
    start[late] = rng.integers(20, max(21, min(int(n_days * 0.4), n_days - 400)), size=int(late.sum()))

    # Returns (days x tickers): market + sector + idiosyncratic, in log space.
    market = rng.normal(0.0003, 0.010, size=n_days)
    sector_ret = rng.normal(0.0, 0.006, size=(n_days, len(sector_names)))
    beta = rng.uniform(0.6, 1.4, size=n_tickers)
    idio_vol = rng.uniform(0.007, 0.020, size=n_tickers)
    tails = rng.standard_t(df=5, size=(n_days, n_tickers)) / np.sqrt(5 / 3)  # unit variance, fat tails
    log_ret = market[:, None] * beta + sector_ret[:, sector] + tails * idio_vol
    np.clip(log_ret, -MAX_ABS_LOG_RETURN, MAX_ABS_LOG_RETURN, out=log_ret)
    log_ret[0] = 0.0
    first_price = np.exp(rng.normal(np.log(60.0), 0.8, size=n_tickers))
    adj = first_price * np.exp(np.cumsum(log_ret, axis=0) - np.take_along_axis(
        np.cumsum(log_ret, axis=0), start[None, :], axis=0))  # price = first_price at each listing day

    # Close = Adj Close undone for dividends: yield q paid continuously, adjustment fades toward the end.
    dividend_yield = np.where(rng.random(n_tickers) < 0.75, rng.uniform(0.005, 0.04, size=n_tickers), 0.0)
    years_to_end = (n_days - 1 - np.arange(n_days))[:, None] / 252.0
    close = adj * np.exp(dividend_yield * years_to_end)

    daily_vol = np.sqrt((beta * 0.010) ** 2 + 0.006**2 + idio_vol**2)
    gap = rng.normal(0.0, 0.3, size=(n_days, n_tickers)) * daily_vol
    open_ = np.empty_like(close)
    open_[0] = close[0] * np.exp(gap[0])
    open_[1:] = close[:-1] * np.exp(gap[1:])
    upper = np.abs(rng.normal(0.0, 0.5, size=(n_days, n_tickers))) * daily_vol
    lower = np.abs(rng.normal(0.0, 0.5, size=(n_days, n_tickers))) * daily_vol
    high = np.maximum(open_, close) * np.exp(upper)
    low = np.minimum(open_, close) * np.exp(-lower)

    base_volume = np.exp(rng.normal(np.log(3e6), 1.0, size=n_tickers))
    volume = np.round(base_volume * np.exp(rng.normal(0.0, 0.35, size=(n_days, n_tickers))
                                           + 8.0 * np.abs(log_ret - market[:, None] * beta)))

    # float32 rounding like the real file; then make sure rounding did not break high/low bounds.
    adj, close, high, low, open_ = (a.astype(np.float32).astype(np.float64) for a in (adj, close, high, low, open_))
    high = np.maximum(high, np.maximum(open_, close))
    low = np.minimum(low, np.minimum(open_, close))

    index_level = 1115.1 * np.exp(np.cumsum(market) - market[0])
    return dict(rng=rng, dates=dates, symbols=symbols, sector=sector, sector_names=sector_names, start=start,
                late=late, adj=adj, close=close, high=high, low=low, open=open_, volume=volume,
                index_level=index_level, beta=beta)


def stocks_table(sim: dict, empty_rows_target: int) -> tuple[pa.Table, int]:
    """Long table sorted by Symbol then Date; a few late listers get empty-price rows before listing."""
    rng = sim["rng"]
    n_days, n_tickers = sim["adj"].shape
    start = sim["start"]
    # Empty rows: for some late listers, the k days right before listing (k <= start).
    first_row = start.copy()
    late_idx = np.flatnonzero(sim["late"])
    rng.shuffle(late_idx)
    remaining = empty_rows_target
    for ticker in late_idx:
        if remaining <= 0:
            break
        k = int(min(start[ticker], remaining, rng.integers(20, 90)))
        first_row[ticker] = start[ticker] - k
        remaining -= k
    empty_rows = int((start - first_row).sum())

    day = np.arange(n_days)[:, None]
    present = day >= first_row[None, :]  # (days, tickers)
    priced = day >= start[None, :]
    # Column-major (ticker-major) order = sorted by Symbol then Date.
    present_t = present.T.ravel()
    priced_t = priced.T.ravel()[present_t]
    tick_codes = np.repeat(np.arange(n_tickers), n_days)[present_t]
    day_codes = np.tile(np.arange(n_days), n_tickers)[present_t]
    mask = ~priced_t

    def column(a: np.ndarray) -> pa.Array:
        return pa.array(a.T.ravel()[present_t], type=pa.float64(), mask=mask)

    date_strings = pa.array(sim["dates"].strftime("%Y-%m-%d"))
    table = pa.table({
        "Date": date_strings.take(pa.array(day_codes)),
        "Symbol": pa.DictionaryArray.from_arrays(pa.array(tick_codes.astype(np.int32)), pa.array(sim["symbols"])).cast(pa.string()),
        "Adj Close": column(sim["adj"]),
        "Close": column(sim["close"]),
        "High": column(sim["high"]),
        "Low": column(sim["low"]),
        "Open": column(sim["open"]),
        "Volume": column(sim["volume"]),
    })
    return table, empty_rows


def write_csv(table: pa.Table, path: Path) -> None:
    """Unquoted header (like the Kaggle files), data via pyarrow's multi-threaded writer."""
    with open(path, "wb") as sink:
        sink.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))


def companies_frame(sim: dict) -> pd.DataFrame:
    rng = sim["rng"]
    symbols, sector, names = sim["symbols"], sim["sector"], sim["sector_names"]
    n = len(symbols)
    last_close = sim["close"][-1]
    marketcap = np.round(np.clip(np.exp(rng.normal(np.log(3e10), 1.0, size=n)), 3e9, 3e12))
    city = rng.integers(0, len(CITIES), size=n)
    industry = [SECTORS[names[s]][int(rng.integers(0, len(SECTORS[names[s]])))] for s in sector]
    return pd.DataFrame({
        "Exchange": rng.choice(["NMS", "NYQ"], size=n),
        "Symbol": symbols,
        "Shortname": [f"{s} Corp" for s in symbols],
        "Longname": [f"{s} Corporation" for s in symbols],
        "Sector": [names[s] for s in sector],
        "Industry": industry,
        "Currentprice": np.round(last_close, 2),
        "Marketcap": marketcap.astype(np.int64),
        "Ebitda": np.round(marketcap * rng.uniform(0.03, 0.12, size=n)).astype(np.int64),
        "Revenuegrowth": np.round(rng.normal(0.05, 0.08, size=n), 3),
        "City": [CITIES[c][0] for c in city],
        "State": [CITIES[c][1] for c in city],
        "Country": "United States",
        "Fulltimeemployees": np.round(np.exp(rng.normal(np.log(20000), 1.2, size=n))).astype(np.int64),
        "Longbusinesssummary": [f"{s} Corporation, a synthetic company, operates in {ind.lower()}, "
                                f"serving customers in the United States and internationally." for s, ind in zip(symbols, industry)],
        "Weight": marketcap / marketcap.sum(),
    }).sort_values("Marketcap", ascending=False)


def generate(output: Path, tickers: int, days: int, seed: int, empty_rows: int, force: bool = False) -> dict:
    params = {"tickers": tickers, "days": days, "seed": seed, "empty_rows": empty_rows, "start": START_DATE, "version": 2}
    params_path = output / "params.json"
    wanted = ("sp500_stocks.csv", "sp500_index.csv", "sp500_companies.csv")
    if not force and params_path.is_file() and all((output / f).is_file() for f in wanted):
        stored = json.loads(params_path.read_text())
        if stored.get("params") == params:
            stored["skipped"] = True
            return stored
    started = time.perf_counter()
    sim = simulate(tickers, days, seed)
    table, n_empty = stocks_table(sim, empty_rows)

    tmp = output.with_name(output.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write_csv(table, tmp / "sp500_stocks.csv")
    index = pd.DataFrame({"Date": sim["dates"].strftime("%Y-%m-%d"), "S&P500": np.round(sim["index_level"], 2)})
    index.to_csv(tmp / "sp500_index.csv", index=False)
    companies_frame(sim).to_csv(tmp / "sp500_companies.csv", index=False)

    log_ret = np.diff(np.log(sim["adj"]), axis=0)
    listed = np.arange(1, days)[:, None] > sim["start"][None, :]
    stats = {
        "rows": table.num_rows,
        "empty_price_rows": n_empty,
        "late_listers": int(sim["late"].sum()),
        "first_date": str(sim["dates"][0].date()),
        "last_date": str(sim["dates"][-1].date()),
        "stocks_csv_bytes": (tmp / "sp500_stocks.csv").stat().st_size,
        "max_abs_log_return": float(np.abs(log_ret[listed]).max()),
        "median_daily_vol": float(np.median(np.std(np.where(listed, log_ret, np.nan), axis=0, where=listed))),
        "seconds": round(time.perf_counter() - started, 2),
    }
    record = {"params": params, "stats": stats}
    (tmp / "params.json").write_text(json.dumps(record, indent=2) + "\n")  # last: marks a complete folder
    if output.exists():
        shutil.rmtree(output)
    tmp.rename(output)
    record["skipped"] = False
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--days", type=int, default=3800, help="business days from 2010-01-04")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--empty-rows", type=int, default=300, help="approximate count of empty-price rows")
    parser.add_argument("--output", type=Path, required=True, help="folder to write (created)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the parameters match")
    args = parser.parse_args(argv)
    if args.tickers < 1 or args.days < 500:
        parser.error("need --tickers >= 1 and --days >= 500")
    record = generate(args.output, args.tickers, args.days, args.seed, args.empty_rows, args.force)
    stats = record["stats"]
    verb = "up to date (same parameters), kept" if record["skipped"] else f"written in {stats['seconds']:.1f}s"
    print(f"{args.output}: {verb}: {stats['rows']:,} rows ({stats['empty_price_rows']} empty-price), "
          f"{args.tickers} tickers, {stats['first_date']} .. {stats['last_date']}, "
          f"sp500_stocks.csv {stats['stocks_csv_bytes'] / 1e6:.0f} MB, median daily vol {stats['median_daily_vol']:.2%}, "
          f"max |log return| {stats['max_abs_log_return']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
