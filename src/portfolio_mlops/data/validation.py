"""Check a raw panel and apply the documented rules; report every action, fix nothing silently.

Rules (each is a check in the data-quality report, with a count and up to five examples):

| check                 | action                                                   |
|-----------------------|----------------------------------------------------------|
| empty_price_rows      | dropped: no price at all (Kaggle's rows before a listing) |
| missing_close         | dropped: some prices but no close / adj close            |
| non_positive_price    | dropped: a price <= 0                                     |
| negative_volume       | dropped                                                   |
| high_below_low        | high and low set to missing for that row, close kept     |
| missing_open_high_low | kept: features needing them see a gap                    |
| duplicate_rows        | exact duplicates of (date, ticker): extra copies dropped |
| conflicting_duplicates| FATAL: the same (date, ticker) with different prices     |
| dates_out_of_order    | reported per ticker; the panel is sorted                 |
| splits_adjusted       | unadjusted layouts, split-like move + volume jump: earlier prices / ratio, volumes x ratio |
| extreme_moves         | |log return| above the limit: per policy drop the ticker (default), keep, or fail |
| short_history         | tickers with fewer rows than `min_history_days` dropped  |
| benchmark_rows_dropped| benchmark days with a missing or non-positive level      |

The policy for extreme moves and the short-history drop decide on the whole file, so they are
universe-level choices made with hindsight (like the survivorship of the Kaggle universes): both are
reported so a reader can judge them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from portfolio_mlops.config import ValidationConfig
from portfolio_mlops.data.layouts import CANONICAL_COLUMNS, RawDataset
from portfolio_mlops.errors import DataValidationError

MAX_EXAMPLES = 5


@dataclass
class CheckResult:
    name: str
    action: str
    count: int
    examples: list[str] = field(default_factory=list)


@dataclass
class QualityReport:
    layout: str
    rows_in: int
    rows_out: int = 0
    tickers_in: int = 0
    tickers_out: int = 0
    start: str | None = None
    end: str | None = None
    checks: list[CheckResult] = field(default_factory=list)
    dropped_tickers: dict[str, str] = field(default_factory=dict)
    splits_adjusted: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, action: str, rows: pd.DataFrame | None = None, count: int | None = None,
            examples: list[str] | None = None) -> None:
        if examples is None and rows is not None:
            examples = [_describe(r) for r in rows.head(MAX_EXAMPLES).itertuples(index=False)]
        n = count if count is not None else (len(rows) if rows is not None else 0)
        self.checks.append(CheckResult(name, action, int(n), examples or []))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"data quality ({self.layout}): {self.rows_in:,} rows in, {self.rows_out:,} kept; "
            f"{self.tickers_in} tickers in, {self.tickers_out} kept; {self.start} .. {self.end}"
        ]
        for check in self.checks:
            if check.count:
                example = f"  e.g. {check.examples[0]}" if check.examples else ""
                lines.append(f"  {check.name:<24} {check.count:>8,}  {check.action}{example}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def _describe(row: Any) -> str:
    fields = row._asdict()
    where = f"{fields.get('source', '?')} data row {fields.get('source_row', '?')}"
    date = fields.get("date")
    date_text = date.strftime("%Y-%m-%d") if hasattr(date, "strftime") else str(date)
    return f"{where}: {fields.get('ticker')} {date_text}"


def validate_prices(raw: RawDataset, cfg: ValidationConfig) -> tuple[pd.DataFrame, pd.Series | None, QualityReport]:
    """Apply the rules above. Returns (clean prices sorted by ticker then date, clean benchmark, report).

    The clean frame has the canonical columns only (lineage columns are dropped after use).
    """
    prices = raw.prices
    report = QualityReport(layout=raw.layout, rows_in=len(prices), tickers_in=int(prices["ticker"].nunique()))
    report.notes.extend(raw.notes)

    price_values = prices[["open", "high", "low", "close", "adj_close"]]
    empty = price_values.isna().all(axis=1)
    report.add("empty_price_rows", "dropped (no price at all)", prices[empty])
    prices = prices[~empty]

    missing_close = prices["close"].isna() | prices["adj_close"].isna()
    report.add("missing_close", "dropped (close or adjusted close missing)", prices[missing_close])
    prices = prices[~missing_close]

    non_positive = (prices[["open", "high", "low", "close", "adj_close"]] <= 0).any(axis=1)
    report.add("non_positive_price", "dropped (a price <= 0)", prices[non_positive])
    prices = prices[~non_positive]

    negative_volume = prices["volume"] < 0
    report.add("negative_volume", "dropped", prices[negative_volume])
    prices = prices[~negative_volume]

    prices = prices.copy()
    inverted = prices["high"] < prices["low"]
    report.add("high_below_low", "high and low set to missing, close kept", prices[inverted])
    prices.loc[inverted, ["high", "low"]] = np.nan

    has_ohl = prices[["open", "high", "low"]].notna().any(axis=None)
    if has_ohl:
        partial = prices[["open", "high", "low"]].isna().any(axis=1)
        report.add("missing_open_high_low", "kept (features needing them see a gap)", prices[partial])

    prices = _deduplicate(prices, report)
    prices = _sort_and_report_order(prices, report)
    if not raw.adjusted and cfg.adjust_splits:
        prices = _adjust_splits(prices, cfg, report)
    limit = cfg.max_abs_log_return or (1.0 if raw.adjusted else 0.6)
    prices = _extreme_moves(prices, cfg.extreme_move_policy, limit, report)

    counts = prices.groupby("ticker", sort=False).size()
    short = counts[counts < cfg.min_history_days]
    for ticker, n in short.items():
        report.dropped_tickers[str(ticker)] = f"short history: {int(n)} rows < {cfg.min_history_days}"
    report.add(
        "short_history",
        f"tickers dropped (< {cfg.min_history_days} rows)",
        count=len(short),
        examples=[f"{t}: {int(n)} rows" for t, n in short.head(MAX_EXAMPLES).items()],
    )
    prices = prices[~prices["ticker"].isin(short.index)]

    if prices.empty:
        raise DataValidationError(
            f"{', '.join(raw.sources)}: no rows left after validation; see the report:\n{report.summary()}"
        )

    benchmark = _validate_benchmark(raw.benchmark, report)

    clean = prices[list(CANONICAL_COLUMNS)].reset_index(drop=True)
    report.rows_out = len(clean)
    report.tickers_out = int(clean["ticker"].nunique())
    report.start = clean["date"].min().strftime("%Y-%m-%d")
    report.end = clean["date"].max().strftime("%Y-%m-%d")
    return clean, benchmark, report


def _deduplicate(prices: pd.DataFrame, report: QualityReport) -> pd.DataFrame:
    keys = ["date", "ticker"]
    value_cols = ["open", "high", "low", "close", "adj_close", "volume"]
    exact = prices.duplicated([*keys, *value_cols], keep="first")
    report.add("duplicate_rows", "extra copies dropped", prices[exact])
    unique = prices[~exact]
    conflicting = unique.duplicated(keys, keep=False)
    if conflicting.any():
        first = unique[conflicting].iloc[0]
        same_key = (prices["date"] == first["date"]) & (prices["ticker"] == first["ticker"])
        rows = ", ".join(f"{r.source} data row {r.source_row}" for r in prices[same_key].itertuples())
        pairs = unique[conflicting].drop_duplicates(keys).shape[0]
        raise DataValidationError(
            f"conflicting duplicates: {first['ticker']} on {first['date']:%Y-%m-%d} appears with different "
            f"prices at {rows} ({pairs} (date, ticker) pairs in all); keep one version of each"
        )
    return unique


def _sort_and_report_order(prices: pd.DataFrame, report: QualityReport) -> pd.DataFrame:
    # Files list each ticker's rows either date-ascending or grouped by date; both are fine. Report a
    # ticker whose own rows go backwards in time in file order, then sort.
    in_file_order = prices.sort_values(["ticker", "source", "source_row"], kind="stable")
    backwards = in_file_order.groupby("ticker", sort=False)["date"].diff() < pd.Timedelta(0)
    tickers = in_file_order.loc[backwards.to_numpy(), "ticker"].unique()
    report.add(
        "dates_out_of_order",
        "tickers whose rows go back in time in the file (panel sorted by date)",
        count=len(tickers),
        examples=[str(t) for t in tickers[:MAX_EXAMPLES]],
    )
    return prices.sort_values(["ticker", "date"], kind="stable")


VOLUME_WINDOW = 20  # trading days of volume compared before and after a candidate split


def _adjust_splits(prices: pd.DataFrame, cfg: ValidationConfig, report: QualityReport) -> pd.DataFrame:
    """Back-adjust split-like one-day moves of an unadjusted panel; every event goes into the report.

    A move is split-like when close[t-1] / close[t] is within cfg.split_tolerance (in log) of a split
    ratio new:old AND the volume moves by about that ratio: both the volume on day t and the median
    volume of the VOLUME_WINDOW rows from t on, over the median of the VOLUME_WINDOW rows before t, lie
    between ratio**(1/3) and ratio**2 (reverse splits: the same in the other direction). A 2:1 split
    doubles the share count, so volume roughly doubles from day t and stays there; an earnings crash
    of the same size brings a day-t volume spike of 5-25x (AMD -24% on 2017-05-02: 6x, BIIB -22% on
    2015-07-24: 11x, CHK -33% on 2016-02-08: 4.5x, all refused as 4:3/5:4/3:2 splits). Prices before t are
    divided by the ratio and volumes multiplied by it - exactly what a data vendor's adjusted series
    does: the split date is public and a split changes no holder's wealth, so the earlier prices carry
    no information from after their own date beyond that known event.
    """
    if prices["volume"].isna().all():
        report.add("splits_adjusted", "none: the layout has no volume to confirm a split", count=0)
        return prices
    ratios = []
    for text in cfg.split_ratios:
        new, old = (int(p) for p in text.split(":"))
        ratios.append((text, new / old))
    log_ratios = np.log(np.array([r for _, r in ratios]))
    prices = prices.reset_index(drop=True)
    close = prices["close"].to_numpy(dtype=float)
    tickers = prices["ticker"].to_numpy()
    same_ticker = np.zeros(len(prices), dtype=bool)
    same_ticker[1:] = tickers[1:] == tickers[:-1]
    implied = np.full(len(prices), np.nan)
    implied[1:] = np.log(close[:-1] / close[1:])  # log(old price / new price) = log(new shares / old shares)
    implied[~same_ticker] = np.nan
    distance = np.abs(implied[:, None] - log_ratios[None, :])
    best = np.nanargmin(np.where(np.isnan(distance), np.inf, distance), axis=1)
    near = same_ticker & (distance[np.arange(len(prices)), best] < cfg.split_tolerance)
    volume = prices["volume"].to_numpy(dtype=float)
    starts = prices.groupby("ticker", sort=False).cumcount().to_numpy()  # row number within the ticker
    factor = np.ones(len(prices))
    events = []
    for row in np.flatnonzero(near):
        first = row - starts[row]
        last = first + int((tickers[first:] == tickers[row]).argmin() or len(tickers) - first) - 1
        pre = volume[max(first, row - VOLUME_WINDOW):row]
        post = volume[row:min(last + 1, row + VOLUME_WINDOW)]
        if len(pre) < 5 or len(post) < 5 or not (np.nanmedian(pre) > 0):
            continue
        base = np.nanmedian(pre)
        volume_jump = np.log(np.nanmedian(post) / base)
        first_day = np.log(volume[row] / base) if volume[row] > 0 else -np.inf
        target = log_ratios[best[row]]
        if not all(abs(target) / 3 <= jump * np.sign(target) <= 2 * abs(target) for jump in (volume_jump, first_day)):
            continue
        text, ratio = ratios[best[row]]
        factor[first:row] *= ratio
        events.append({
            "ticker": str(tickers[row]),
            "date": f"{prices['date'].iloc[row]:%Y-%m-%d}",
            "ratio": text,
            "close_before": float(close[row - 1]),
            "close_after": float(close[row]),
            "volume_ratio": round(float(np.exp(volume_jump)), 3),
        })
    if events:
        prices = prices.copy()
        for column in ("open", "high", "low", "close", "adj_close"):
            prices[column] = prices[column] / factor
        prices["volume"] = prices["volume"] * factor
    report.splits_adjusted.extend(events)
    report.add(
        "splits_adjusted",
        "split-like move with a matching volume jump: earlier prices / ratio, volumes x ratio",
        count=len(events),
        examples=[f"{e['ticker']} {e['date']} {e['ratio']}" for e in events[:MAX_EXAMPLES]],
    )
    return prices


def _extreme_moves(prices: pd.DataFrame, policy: str, max_abs_log_return: float, report: QualityReport) -> pd.DataFrame:
    log_price = np.log(prices["adj_close"].to_numpy())
    same_ticker = prices["ticker"].to_numpy()[1:] == prices["ticker"].to_numpy()[:-1]
    jumps = np.zeros(len(prices), dtype=bool)
    jumps[1:] = same_ticker & (np.abs(np.diff(log_price)) > max_abs_log_return)
    flagged = prices[jumps]
    limit = f"|log return| > {max_abs_log_return:g}"
    examples = []
    for row_position in np.flatnonzero(jumps)[:MAX_EXAMPLES]:
        before, after = prices.iloc[row_position - 1], prices.iloc[row_position]
        examples.append(
            f"{after['source']} data row {after['source_row']}: {after['ticker']} {after['date']:%Y-%m-%d} "
            f"{before['adj_close']:g} -> {after['adj_close']:g} ({after['adj_close'] / before['adj_close'] - 1:+.1%})"
        )
    tickers = flagged["ticker"].unique()
    if policy == "fail" and len(flagged):
        raise DataValidationError(
            f"{len(flagged)} one-day moves with {limit} (likely unadjusted splits), e.g. {examples[0]}; "
            "fix the data or set validation.extreme_move_policy to drop_ticker or keep"
        )
    if policy == "drop_ticker":
        for ticker in tickers:
            report.dropped_tickers[str(ticker)] = f"extreme one-day move ({limit})"
        report.add("extreme_moves", f"{limit}: {len(tickers)} tickers dropped", count=len(flagged), examples=examples)
        return prices[~prices["ticker"].isin(tickers)]
    report.add("extreme_moves", f"{limit}: kept (policy keep)", count=len(flagged), examples=examples)
    return prices


def _validate_benchmark(benchmark: pd.Series | None, report: QualityReport) -> pd.Series | None:
    if benchmark is None:
        return None
    bad = benchmark.isna() | (benchmark <= 0)
    report.add(
        "benchmark_rows_dropped",
        "benchmark days with a missing or non-positive level dropped",
        count=int(bad.sum()),
        examples=[f"{d:%Y-%m-%d}" for d in benchmark.index[bad][:MAX_EXAMPLES]],
    )
    clean = benchmark[~bad]
    clean = clean[~clean.index.duplicated(keep="first")].sort_index()
    return clean.astype(float).rename("value")
