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

    The clean frame has the canonical columns only (lineage columns are dropped after use). The rules run
    on numpy arrays in one pass over the rows: each row-level check is a mask over the file's rows, and
    one sort by (ticker, date) serves the duplicate check, the order check and the output order.
    """
    rows = _Rows.of(raw.prices)
    report = QualityReport(layout=raw.layout, rows_in=rows.n, tickers_in=rows.tickers_present())
    report.notes.extend(raw.notes)

    prices = rows.prices
    o, h, low, c, a = (prices[k] for k in ("open", "high", "low", "close", "adj_close"))
    empty = np.isnan(o) & np.isnan(h) & np.isnan(low) & np.isnan(c) & np.isnan(a)
    report.add("empty_price_rows", "dropped (no price at all)", count=int(empty.sum()), examples=rows.examples(empty))
    alive = ~empty
    missing_close = alive & (np.isnan(c) | np.isnan(a))
    report.add("missing_close", "dropped (close or adjusted close missing)", count=int(missing_close.sum()),
               examples=rows.examples(missing_close))
    alive &= ~missing_close
    non_positive = alive & ((o <= 0) | (h <= 0) | (low <= 0) | (c <= 0) | (a <= 0))
    report.add("non_positive_price", "dropped (a price <= 0)", count=int(non_positive.sum()),
               examples=rows.examples(non_positive))
    alive &= ~non_positive
    negative_volume = alive & (prices["volume"] < 0)
    report.add("negative_volume", "dropped", count=int(negative_volume.sum()), examples=rows.examples(negative_volume))
    alive &= ~negative_volume

    inverted = alive & (h < low)
    report.add("high_below_low", "high and low set to missing, close kept", count=int(inverted.sum()),
               examples=rows.examples(inverted))
    if inverted.any():
        prices["high"] = h = np.where(inverted, np.nan, h)
        prices["low"] = low = np.where(inverted, np.nan, low)

    no_ohl = np.isnan(o) & np.isnan(h) & np.isnan(low)
    if (alive & ~no_ohl).any():  # the layout has open/high/low at all
        partial = alive & (np.isnan(o) | np.isnan(h) | np.isnan(low))
        report.add("missing_open_high_low", "kept (features needing them see a gap)", count=int(partial.sum()),
                   examples=rows.examples(partial))

    kept = np.flatnonzero(alive)
    order = _deduplicate(rows, kept, report)  # kept rows sorted by (ticker, date)
    _report_order(rows, order, report)
    clean = rows.take(order)
    if not raw.adjusted and cfg.adjust_splits:
        _adjust_splits(clean, cfg, report)
    limit = cfg.max_abs_log_return or (1.0 if raw.adjusted else 0.6)
    clean = _extreme_moves(clean, cfg.extreme_move_policy, limit, report)

    counts = clean.counts_per_ticker()
    short = [(code, n) for code, n in counts if n < cfg.min_history_days]
    for code, n in short:
        report.dropped_tickers[clean.names[code]] = f"short history: {int(n)} rows < {cfg.min_history_days}"
    report.add(
        "short_history",
        f"tickers dropped (< {cfg.min_history_days} rows)",
        count=len(short),
        examples=[f"{clean.names[code]}: {int(n)} rows" for code, n in short[:MAX_EXAMPLES]],
    )
    if short:
        clean = clean.without_tickers([code for code, _ in short])

    if clean.n == 0:
        raise DataValidationError(
            f"{', '.join(raw.sources)}: no rows left after validation; see the report:\n{report.summary()}"
        )

    benchmark = _validate_benchmark(raw.benchmark, report)

    frame = clean.frame()
    report.rows_out = clean.n
    report.tickers_out = clean.tickers_present()
    report.start = f"{pd.Timestamp(clean.dates.min()):%Y-%m-%d}"
    report.end = f"{pd.Timestamp(clean.dates.max()):%Y-%m-%d}"
    return frame, benchmark, report


@dataclass
class _Rows:
    """Rows as numpy arrays: dates (datetime64[ns]), ticker codes into sorted `names`, the prices, and
    the lineage (source file code into `sources`, data row). `index` is each row's position in the file
    read (examples and file order refer to it)."""

    dates: np.ndarray
    tickers: np.ndarray
    names: list[str]
    prices: dict[str, np.ndarray]
    sources: np.ndarray
    source_names: list[str]
    source_rows: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> "_Rows":
        tickers, names = _sorted_codes(frame["ticker"])
        sources, source_names = _sorted_codes(frame["source"])
        return cls(
            dates=frame["date"].to_numpy(dtype="datetime64[ns]"),
            tickers=tickers, names=names,
            prices={k: frame[k].to_numpy(dtype=float, copy=True) for k in ("open", "high", "low", "close", "adj_close", "volume")},
            sources=sources, source_names=source_names,
            source_rows=frame["source_row"].to_numpy(dtype=np.int64),
        )

    @property
    def n(self) -> int:
        return len(self.dates)

    def tickers_present(self) -> int:
        return int((np.bincount(self.tickers[self.tickers >= 0], minlength=len(self.names)) > 0).sum())

    def describe(self, i: int) -> str:
        return (f"{self.source_names[self.sources[i]]} data row {self.source_rows[i]}: "
                f"{self.names[self.tickers[i]]} {pd.Timestamp(self.dates[i]):%Y-%m-%d}")

    def examples(self, mask: np.ndarray) -> list[str]:
        return [self.describe(int(i)) for i in np.flatnonzero(mask)[:MAX_EXAMPLES]]

    def take(self, positions: np.ndarray | None) -> "_Rows":
        if positions is None:
            return self
        return _Rows(
            dates=self.dates[positions], tickers=self.tickers[positions], names=self.names,
            prices={k: v[positions] for k, v in self.prices.items()},
            sources=self.sources[positions], source_names=self.source_names, source_rows=self.source_rows[positions],
        )

    def runs(self) -> tuple[np.ndarray, np.ndarray]:
        """(first, end) row of each ticker's run of rows; the rows must be sorted by ticker."""
        boundary = np.flatnonzero(self.tickers[1:] != self.tickers[:-1]) + 1
        return np.concatenate([[0], boundary]), np.concatenate([boundary, [self.n]])

    def counts_per_ticker(self) -> list[tuple[int, int]]:
        """(ticker code, rows) in panel order (the rows must be sorted by ticker)."""
        first, end = self.runs()
        return [(int(self.tickers[f]), int(e - f)) for f, e in zip(first, end)] if self.n else []

    def without_tickers(self, codes: list[int]) -> "_Rows":
        drop = np.zeros(len(self.names), dtype=bool)
        drop[codes] = True
        return self.take(np.flatnonzero(~drop[self.tickers]))

    def frame(self) -> pd.DataFrame:
        """The canonical columns, ticker as pandas' default string dtype (what the Parquet file holds)."""
        try:
            import pyarrow as pa
        except ImportError:  # the model server has no pyarrow: pandas' python-backed strings, the same values
            ticker = pd.array(np.asarray(self.names, dtype=object)[self.tickers],
                              dtype=pd.StringDtype("python", na_value=np.nan))
        else:
            names = pa.array(self.names, type=pa.large_string())
            arrow = pa.DictionaryArray.from_arrays(pa.array(self.tickers.astype(np.int32)), names).cast(pa.large_string())
            ticker = pd.array(arrow, dtype=pd.StringDtype("pyarrow", na_value=np.nan))
        columns = {"date": self.dates, "ticker": ticker, **self.prices}
        return pd.DataFrame({k: columns[k] for k in CANONICAL_COLUMNS}, copy=False)


def _sorted_codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes into the sorted distinct values (as strings); -1 where missing."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype("category")
    names = [str(v) for v in values.cat.categories]
    codes = values.cat.codes.to_numpy().astype(np.int64)
    rank = np.argsort(np.array(names, dtype=object), kind="stable")
    if (rank != np.arange(len(names))).any():
        remap = np.empty(len(names), dtype=np.int64)
        remap[rank] = np.arange(len(names))
        codes = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
        names = [names[i] for i in rank]
    return codes, names


def _sort_key(rows: _Rows, kept: np.ndarray) -> np.ndarray:
    """An int64 per kept row ordering by (ticker, date); equal exactly when both are equal."""
    stamps = rows.dates[kept].view(np.int64)
    if len(stamps) == 0:
        return stamps
    day = np.int64(86_400_000_000_000)
    if (stamps % day == 0).all():
        days = stamps // day
        days = days - days.min()
        width = int(days.max()) + 1
    else:
        days, uniques = pd.factorize(stamps, sort=True)
        width = len(uniques)
    return rows.tickers[kept].astype(np.int64) * width + days


def _deduplicate(rows: _Rows, kept: np.ndarray, report: QualityReport) -> np.ndarray:
    """Drop exact duplicates of (date, ticker) (first copy kept), refuse conflicting ones; returns the
    remaining rows' positions sorted by (ticker, date)."""
    key = _sort_key(rows, kept)
    if len(key) < 2 or (key[1:] > key[:-1]).all():  # already sorted, every (ticker, date) once
        report.add("duplicate_rows", "extra copies dropped", count=0, examples=[])
        return kept
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    same = sorted_key[1:] == sorted_key[:-1]
    if not same.any():
        report.add("duplicate_rows", "extra copies dropped", count=0, examples=[])
        return kept[order]
    shared = np.zeros(len(key), dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    involved = np.sort(kept[order[shared]])  # every row whose (date, ticker) appears more than once, file order
    sub = rows.take(involved)
    subset = pd.DataFrame({
        "date": sub.dates, "ticker": [rows.names[t] for t in sub.tickers], **sub.prices,
        "source": [rows.source_names[s] for s in sub.sources], "source_row": sub.source_rows,
    })
    keys = ["date", "ticker"]
    value_cols = ["open", "high", "low", "close", "adj_close", "volume"]
    exact = subset.duplicated([*keys, *value_cols], keep="first").to_numpy()
    report.add("duplicate_rows", "extra copies dropped", count=int(exact.sum()),
               examples=[sub.describe(int(i)) for i in np.flatnonzero(exact)[:MAX_EXAMPLES]])
    unique = subset[~exact]
    conflicting = unique.duplicated(keys, keep=False)
    if conflicting.any():
        first = unique[conflicting].iloc[0]
        same_key = (subset["date"] == first["date"]) & (subset["ticker"] == first["ticker"])
        where = ", ".join(f"{r.source} data row {r.source_row}" for r in subset[same_key].itertuples())
        pairs = unique[conflicting].drop_duplicates(keys).shape[0]
        raise DataValidationError(
            f"conflicting duplicates: {first['ticker']} on {first['date']:%Y-%m-%d} appears with different "
            f"prices at {where} ({pairs} (date, ticker) pairs in all); keep one version of each"
        )
    dropped = np.zeros(rows.n, dtype=bool)
    dropped[involved[exact]] = True
    sorted_rows = kept[order]
    return sorted_rows[~dropped[sorted_rows]]


def _report_order(rows: _Rows, order: np.ndarray, report: QualityReport) -> None:
    # Files list each ticker's rows either date-ascending or grouped by date; both are fine. Report a
    # ticker whose own rows go backwards in time in file order (the panel is sorted anyway). With one row
    # per (ticker, date), that is a ticker whose date-sorted rows do not come in file order.
    file_order = rows.sources[order] * (int(rows.source_rows.max(initial=0)) + 1) + rows.source_rows[order]
    tickers = rows.tickers[order]
    backwards = (file_order[1:] < file_order[:-1]) & (tickers[1:] == tickers[:-1])
    codes = np.unique(tickers[1:][backwards])
    report.add(
        "dates_out_of_order",
        "tickers whose rows go back in time in the file (panel sorted by date)",
        count=len(codes),
        examples=[rows.names[c] for c in codes[:MAX_EXAMPLES]],
    )


VOLUME_WINDOW = 20  # trading days of volume compared before and after a candidate split


def _adjust_splits(rows: _Rows, cfg: ValidationConfig, report: QualityReport) -> None:
    """Back-adjust split-like one-day moves of an unadjusted panel (rows sorted by ticker, date) in place;
    every event goes into the report.

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
    volume = rows.prices["volume"]
    if np.isnan(volume).all():
        report.add("splits_adjusted", "none: the layout has no volume to confirm a split", count=0)
        return
    ratios = []
    for text in cfg.split_ratios:
        new, old = (int(p) for p in text.split(":"))
        ratios.append((text, new / old))
    log_ratios = np.log(np.array([r for _, r in ratios]))
    close = rows.prices["close"]
    tickers = rows.tickers
    same_ticker = np.zeros(rows.n, dtype=bool)
    same_ticker[1:] = tickers[1:] == tickers[:-1]
    implied = np.full(rows.n, np.nan)
    implied[1:] = np.log(close[:-1] / close[1:])  # log(old price / new price) = log(new shares / old shares)
    implied[~same_ticker] = np.nan
    distance = np.abs(implied[:, None] - log_ratios[None, :])
    best = np.argmin(np.where(np.isnan(distance), np.inf, distance), axis=1)  # no NaN left: argmin = nanargmin
    near = same_ticker & (distance[np.arange(rows.n), best] < cfg.split_tolerance)
    run_first, run_end = rows.runs()
    run_of = np.repeat(np.arange(len(run_first)), run_end - run_first)
    factor = np.ones(rows.n)
    events = []
    for row in np.flatnonzero(near):
        first, last = run_first[run_of[row]], run_end[run_of[row]] - 1
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
            "ticker": rows.names[tickers[row]],
            "date": f"{pd.Timestamp(rows.dates[row]):%Y-%m-%d}",
            "ratio": text,
            "close_before": float(close[row - 1]),
            "close_after": float(close[row]),
            "volume_ratio": round(float(np.exp(volume_jump)), 3),
        })
    if events:
        for column in ("open", "high", "low", "close", "adj_close"):
            rows.prices[column] = rows.prices[column] / factor
        rows.prices["volume"] = rows.prices["volume"] * factor
    report.splits_adjusted.extend(events)
    report.add(
        "splits_adjusted",
        "split-like move with a matching volume jump: earlier prices / ratio, volumes x ratio",
        count=len(events),
        examples=[f"{e['ticker']} {e['date']} {e['ratio']}" for e in events[:MAX_EXAMPLES]],
    )


def _extreme_moves(rows: _Rows, policy: str, max_abs_log_return: float, report: QualityReport) -> _Rows:
    adj_close = rows.prices["adj_close"]
    log_price = np.log(adj_close)
    same_ticker = rows.tickers[1:] == rows.tickers[:-1]
    jumps = np.zeros(rows.n, dtype=bool)
    jumps[1:] = same_ticker & (np.abs(np.diff(log_price)) > max_abs_log_return)
    limit = f"|log return| > {max_abs_log_return:g}"
    examples = []
    for after in np.flatnonzero(jumps)[:MAX_EXAMPLES]:
        before = after - 1
        examples.append(
            f"{rows.describe(int(after))} "
            f"{adj_close[before]:g} -> {adj_close[after]:g} ({adj_close[after] / adj_close[before] - 1:+.1%})"
        )
    flagged = int(jumps.sum())
    codes = np.unique(rows.tickers[jumps])  # ascending: the panel's ticker order
    if policy == "fail" and flagged:
        raise DataValidationError(
            f"{flagged} one-day moves with {limit} (likely unadjusted splits), e.g. {examples[0]}; "
            "fix the data or set validation.extreme_move_policy to drop_ticker or keep"
        )
    if policy == "drop_ticker":
        for code in codes:
            report.dropped_tickers[rows.names[code]] = f"extreme one-day move ({limit})"
        report.add("extreme_moves", f"{limit}: {len(codes)} tickers dropped", count=flagged, examples=examples)
        return rows.without_tickers(list(codes)) if len(codes) else rows
    report.add("extreme_moves", f"{limit}: kept (policy keep)", count=flagged, examples=examples)
    return rows


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
