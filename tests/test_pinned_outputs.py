"""Ingest and features are pinned bit for bit: a rewrite for speed must reproduce every byte.

Two small panels with every validation rule planted (a Kaggle-daily folder with an index, and an
unadjusted all_stocks_5yr file with splits) plus the embedded default go through ingest and features.
The literal constants below were computed from the implementation before the issue-14 speed rewrite
(pandas duplicated / groupby / rolling); the rewrite must give the same canonical content digest, the
same quality report (counts, examples, dropped tickers, split events) and the same feature matrix.

The panels are driven by integers only (prices are products of 1 + k/1000), so their CSV text does not
depend on a platform's exp/log. The features do use numpy's log and sqrt; should a pin fail on another
CPU family, the per-column digests name the column that moved.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from portfolio_mlops.config import FeatureConfig, LabelConfig, ValidationConfig
from portfolio_mlops.data.ingest import build_panel, ingest
from portfolio_mlops.features import build_features

START = "2015-01-01"
N_DAYS = 420


def _walk(rng: np.random.Generator, n: int, level: float) -> list[float]:
    """A price path from integer steps of 0.1% (no exp/log, so the same floats on every platform)."""
    closes, price = [], level
    for step in rng.integers(-25, 26, size=n):
        price = price * (1 + int(step) / 1000)
        closes.append(price)
    return closes


def _bars(rng: np.random.Generator, closes: list[float]) -> list[tuple[float, float, float, float, int]]:
    """(open, high, low, close, volume) per day, consistent: low <= open, close <= high."""
    bars = []
    for close in closes:
        open_ = close * (1 + int(rng.integers(-5, 6)) / 1000)
        high = max(open_, close) * (1 + int(rng.integers(0, 11)) / 1000)
        low = min(open_, close) * (1 - int(rng.integers(0, 11)) / 1000)
        bars.append((open_, high, low, close, int(rng.integers(10_000, 90_000)) * 10))
    return bars


def write_planted_daily(folder) -> None:
    """A Kaggle-daily folder (stocks, index, companies) with each rule of data/validation.py planted once."""
    rng = np.random.default_rng(14)
    days = [f"{d:%Y-%m-%d}" for d in pd.bdate_range(START, periods=N_DAYS)]
    lines: list[str] = []

    def row(day: str, symbol: str, bar, adj_scale: float = 0.97) -> str:
        open_, high, low, close, volume = bar
        return f"{day},{symbol},{close * adj_scale!r},{close!r},{high!r},{low!r},{open_!r},{volume}"

    for t in range(14):
        symbol = f"P{t:02d}"
        bars = _bars(rng, _walk(rng, N_DAYS, 20.0 + 5 * t))
        if symbol == "P10":  # extreme move: every price x3 from day 300 (log 3 > the adjusted limit 1.0)
            bars = [(o * 3, h * 3, l * 3, c * 3, v) if i >= 300 else (o, h, l, c, v)
                    for i, (o, h, l, c, v) in enumerate(bars)]
        ticker_lines = [row(d, symbol, b) for d, b in zip(days, bars)]
        if symbol == "P01":  # missing adjusted close
            ticker_lines[50] = ticker_lines[50].replace(f",{bars[50][3] * 0.97!r},", ",,", 1)
        if symbol == "P02":  # a non-positive low
            o, h, l, c, v = bars[60]
            ticker_lines[60] = row(days[60], symbol, (o, h, 0.0, c, v))
        if symbol == "P03":  # negative volume
            o, h, l, c, v = bars[70]
            ticker_lines[70] = row(days[70], symbol, (o, h, l, c, -5))
        if symbol == "P04":  # high below low
            o, h, l, c, v = bars[80]
            ticker_lines[80] = row(days[80], symbol, (o, l, h, c, v))
        if symbol == "P05":  # missing open on three days
            for i in (90, 91, 92):
                o, h, l, c, v = bars[i]
                ticker_lines[i] = f"{days[i]},{symbol},{c * 0.97!r},{c!r},{h!r},{l!r},,{v}"
        if symbol == "P06":  # an exact duplicate right after its original
            ticker_lines.insert(101, ticker_lines[100])
        if symbol == "P08":  # two days swapped: the ticker's rows go back in time
            ticker_lines[200], ticker_lines[201] = ticker_lines[201], ticker_lines[200]
        if symbol == "P11":  # a lower-case symbol on some rows: the same ticker after upper-casing
            ticker_lines[10:20] = [line.replace(",P11,", ",p11,") for line in ticker_lines[10:20]]
        if symbol == "P12":  # dates with a time of day (the first 10 characters are the date)
            ticker_lines[5:8] = [line.replace(days[i], f"{days[i]} 00:00:00+00:00") for i, line
                                 in zip(range(5, 8), ticker_lines[5:8])]
        lines += ticker_lines
    late = _bars(rng, _walk(rng, N_DAYS, 30.0))  # lists on day 100: Kaggle's empty rows before that
    lines += [f"{d},LATE,,,,,," if i < 100 else row(d, "LATE", b) for i, (d, b) in enumerate(zip(days, late))]
    short = _bars(rng, _walk(rng, 30, 15.0))  # 30 rows < min_history_days
    lines += [row(d, "SHRT", b) for d, b in zip(days[-30:], short)]
    lines.append(lines[7 * N_DAYS + 5])  # a second exact duplicate, at the end of the file (P07)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sp500_stocks.csv").write_text(
        "Date,Symbol,Adj Close,Close,High,Low,Open,Volume\n" + "\n".join(lines) + "\n", encoding="utf-8")
    levels = _walk(rng, N_DAYS, 2000.0)
    index_lines = [f"{d},{level!r}" for d, level in zip(days, levels)]
    index_lines[30] = f"{days[30]},"
    index_lines[31] = f"{days[31]},0"
    (folder / "sp500_index.csv").write_text("Date,S&P500\n" + "\n".join(index_lines) + "\n", encoding="utf-8")
    (folder / "sp500_companies.csv").write_text(
        "Symbol,Sector\n" + "\n".join(f"P{t:02d},Sector{t % 3}" for t in range(14)) + "\n", encoding="utf-8")


def write_planted_5yr(path) -> None:
    """An unadjusted all_stocks_5yr file, grouped by date like Kaggle's, with a 2:1 split, a 1:2 reverse
    split and a crash of split size (volume spike, not a lasting volume jump: not a split)."""
    rng = np.random.default_rng(5)
    days = [f"{d:%Y-%m-%d}" for d in pd.bdate_range(START, periods=N_DAYS)]
    per_ticker = {}
    for t in range(8):
        symbol = f"Q{t:02d}"
        bars = _bars(rng, _walk(rng, N_DAYS, 40.0 + 7 * t))
        if symbol in ("Q01", "Q02"):  # a calm volume (+-10%), so that only the split moves it
            calm = 500_000 + 1000 * rng.integers(-50, 51, size=N_DAYS)
            bars = [(o, h, l, c, int(v)) for (o, h, l, c, _), v in zip(bars, calm)]
        if symbol == "Q01":  # 2:1 split on day 200: prices halve, volume doubles
            bars = [(o / 2, h / 2, l / 2, c / 2, v * 2) if i >= 200 else (o, h, l, c, v)
                    for i, (o, h, l, c, v) in enumerate(bars)]
        if symbol == "Q02":  # 1:2 reverse split on day 250: prices double, volume halves
            bars = [(o * 2, h * 2, l * 2, c * 2, v // 2) if i >= 250 else (o, h, l, c, v)
                    for i, (o, h, l, c, v) in enumerate(bars)]
        if symbol == "Q03":  # a crash halving the price with a 12x volume spike that decays
            bars = [(o / 2, h / 2, l / 2, c / 2, v * (12 if i == 150 else 2 if i < 155 else 1)) if i >= 150
                    else (o, h, l, c, v) for i, (o, h, l, c, v) in enumerate(bars)]
        per_ticker[symbol] = bars
    lines = [f"{d},{o!r},{h!r},{l!r},{c!r},{v},{symbol}"
             for i, d in enumerate(days) for symbol, bars in per_ticker.items() for o, h, l, c, v in [bars[i]]]
    path.write_text("date,open,high,low,close,volume,Name\n" + "\n".join(lines) + "\n", encoding="utf-8")


def column_digests(frame: pd.DataFrame) -> dict[str, str]:
    """sha256 (16 hex) of each column's exact values, plus the index and the column names and dtypes."""

    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:16]

    out = {"__index__": sha(np.asarray(frame.index).astype(np.int64).tobytes()),
           "__columns__": sha(repr([(str(c), str(frame[c].dtype)) for c in frame.columns]).encode())}
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
            out[column] = sha(np.ascontiguousarray(values.to_numpy()).tobytes())
        else:
            out[column] = sha("\0".join(map(str, values)).encode())
    return out


def report_digest(report) -> str:
    return hashlib.sha256(json.dumps(report.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def counts(report) -> dict[str, int]:
    return {c.name: c.count for c in report.checks}


@pytest.fixture(scope="module")
def daily_panel(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pinned") / "kaggle"
    write_planted_daily(folder)
    return build_panel(folder, ValidationConfig())


@pytest.fixture(scope="module")
def five_year_panel(tmp_path_factory):
    path = tmp_path_factory.mktemp("pinned") / "all_stocks_5yr.csv"
    write_planted_5yr(path)
    return build_panel(path, ValidationConfig())


@pytest.fixture(scope="module")
def embedded_panel():
    return build_panel(None, ValidationConfig())


# --- ingest + validation ----------------------------------------------------------------------------------

def test_planted_daily_panel_reports_each_rule_with_the_pinned_counts(daily_panel):
    _, report = daily_panel

    assert (report.rows_in, report.rows_out, report.tickers_in, report.tickers_out) == PINNED_DAILY_ROWS
    assert counts(report) == PINNED_DAILY_COUNTS
    assert report.dropped_tickers == PINNED_DAILY_DROPPED
    assert report_digest(report) == PINNED_DAILY_REPORT


def test_planted_daily_panel_has_the_pinned_canonical_content(daily_panel):
    panel, _ = daily_panel

    assert panel.manifest["content_digest"] == PINNED_DAILY_CONTENT
    assert column_digests(panel.prices) == PINNED_DAILY_PRICES
    assert {k: panel.manifest[k] for k in ("rows", "tickers", "trading_days", "start", "end")} == PINNED_DAILY_MANIFEST


def test_planted_5yr_panel_back_adjusts_the_splits_and_keeps_the_pinned_content(five_year_panel):
    panel, report = five_year_panel

    assert counts(report) == PINNED_5YR_COUNTS
    assert [(e["ticker"], e["date"], e["ratio"]) for e in report.splits_adjusted] == PINNED_5YR_SPLITS
    assert report.dropped_tickers == PINNED_5YR_DROPPED
    assert report_digest(report) == PINNED_5YR_REPORT
    assert panel.manifest["content_digest"] == PINNED_5YR_CONTENT
    assert column_digests(panel.prices) == PINNED_5YR_PRICES


def test_embedded_default_keeps_the_pinned_content(embedded_panel):
    panel, report = embedded_panel

    assert counts(report) == PINNED_EMBEDDED_COUNTS
    assert panel.manifest["content_digest"] == PINNED_EMBEDDED_CONTENT


def test_written_parquet_reads_back_to_the_pinned_canonical_frame(tmp_path):
    folder = tmp_path / "kaggle"
    write_planted_daily(folder)

    ingest(folder, tmp_path / "out", ValidationConfig())

    written = pd.read_parquet(tmp_path / "out" / "prices.parquet")
    assert column_digests(written) == PINNED_DAILY_PRICES
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["content_digest"] == PINNED_DAILY_CONTENT


# --- features ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("normalisation", ["rank", "zscore"])
def test_feature_matrix_of_the_planted_daily_panel_is_pinned(daily_panel, normalisation):
    panel, _ = daily_panel

    features = build_features(panel.prices, FeatureConfig(normalisation=normalisation), LabelConfig())

    assert features.feature_names == PINNED_FEATURE_NAMES
    assert len(features.frame) == PINNED_DAILY_SAMPLES
    assert column_digests(features.frame) == PINNED_DAILY_FEATURES[normalisation]


def test_feature_matrix_of_the_5yr_panel_is_pinned(five_year_panel):
    panel, _ = five_year_panel

    features = build_features(panel.prices, FeatureConfig(), LabelConfig(horizon_days=5, execution_lag_days=0))

    assert column_digests(features.frame) == PINNED_5YR_FEATURES


def test_feature_matrix_of_the_embedded_default_is_pinned(embedded_panel):
    panel, _ = embedded_panel

    features = build_features(panel.prices, FeatureConfig(), LabelConfig())

    assert features.skipped == PINNED_EMBEDDED_SKIPPED
    assert column_digests(features.frame) == PINNED_EMBEDDED_FEATURES


# --- the pins (computed from the implementation before the speed rewrite) ---------------------------------
# Written by running the tests' own helpers on commit eb86212 (before issue 14's rewrite).

PINNED_DAILY_ROWS = (6332, 5777, 16, 14)
PINNED_DAILY_COUNTS = {'empty_price_rows': 100,
 'missing_close': 1,
 'non_positive_price': 1,
 'negative_volume': 1,
 'high_below_low': 1,
 'missing_open_high_low': 4,
 'duplicate_rows': 2,
 'dates_out_of_order': 1,
 'extreme_moves': 1,
 'short_history': 1,
 'benchmark_rows_dropped': 2}
PINNED_DAILY_DROPPED = {'P10': 'extreme one-day move (|log return| > 1)', 'SHRT': 'short history: 30 rows < 253'}
PINNED_DAILY_REPORT = 'f3c526435a7b748b'
PINNED_DAILY_CONTENT = 'sha256:64149dece4a090c3fded0a5c55dec94c71d4ea30acf7e6d1bde21f595689aaf6'
PINNED_DAILY_PRICES = {'__index__': '6be40a1929d3cf08',
 '__columns__': '99e89e2264547dd1',
 'date': 'ca6a897af8e13983',
 'ticker': '5b473e9209a3d217',
 'open': '7e34e4337248c06d',
 'high': 'ba459900537b806e',
 'low': '727379d5937c92db',
 'close': 'f20083d3ef304bab',
 'adj_close': '496185c53bf04779',
 'volume': '41c1dc7646371640'}
PINNED_DAILY_MANIFEST = {'rows': 5777, 'tickers': 14, 'trading_days': 420, 'start': '2015-01-01', 'end': '2016-08-10'}
PINNED_5YR_COUNTS = {'empty_price_rows': 0,
 'missing_close': 0,
 'non_positive_price': 0,
 'negative_volume': 0,
 'high_below_low': 0,
 'missing_open_high_low': 0,
 'duplicate_rows': 0,
 'dates_out_of_order': 0,
 'splits_adjusted': 2,
 'extreme_moves': 1,
 'short_history': 0}
PINNED_5YR_SPLITS = [('Q01', '2015-10-08', '2:1'), ('Q02', '2015-12-17', '1:2')]
PINNED_5YR_DROPPED = {'Q03': 'extreme one-day move (|log return| > 0.6)'}
PINNED_5YR_REPORT = '35910373ca012d6e'
PINNED_5YR_CONTENT = 'sha256:ba71ded42c96d19ef8c658d6ef2fbb346ecf39b6d6601dd6b1f633a5fbfa2168'
PINNED_5YR_PRICES = {'__index__': '198589ca4288f7d6',
 '__columns__': '99e89e2264547dd1',
 'date': '6f0c8fcaea55bac4',
 'ticker': 'a3013e27fa23970c',
 'open': '9fd80e3fa8a94c71',
 'high': '3be10daac8379258',
 'low': '25a73b9fbe3c1c0e',
 'close': 'fe5912ea126a5e44',
 'adj_close': 'fe5912ea126a5e44',
 'volume': '34e29f5c2c900d6d'}
PINNED_EMBEDDED_COUNTS = {'empty_price_rows': 0,
 'missing_close': 0,
 'non_positive_price': 0,
 'negative_volume': 0,
 'high_below_low': 0,
 'duplicate_rows': 0,
 'dates_out_of_order': 0,
 'extreme_moves': 1,
 'short_history': 0,
 'benchmark_rows_dropped': 0}
PINNED_EMBEDDED_CONTENT = 'sha256:410696eeedee1a50c5ef85821fdabda95ffc0c6cfe9441e7b3f992ae8f974ed1'
PINNED_FEATURE_NAMES = ('ret_1',
 'ret_5',
 'ret_21',
 'ret_63',
 'mom_12_1',
 'px_sma10',
 'px_sma30',
 'sma10_sma30',
 'vol_21',
 'vol_63',
 'dist_52w_high',
 'volume_ratio_21',
 'log_dollar_volume_21',
 'hl_range_21')
PINNED_DAILY_SAMPLES = 2069
PINNED_DAILY_FEATURES = {'rank': {'__index__': '258c475add717fc2',
          '__columns__': '001a1441c2ac186f',
          'date': '57207c474ea027af',
          'ticker': '7ea1f52c3b8852ea',
          'date_pos': 'fe3f1690db436d40',
          'ret_1': '91850d06785b8b6e',
          'ret_5': '7d8af41494b6b45a',
          'ret_21': 'ccda8de893900048',
          'ret_63': '1619dc92fc2ece96',
          'mom_12_1': 'f404c6d07af9c996',
          'px_sma10': 'b8b5394836677770',
          'px_sma30': 'e59f6034207962dc',
          'sma10_sma30': 'af37fef9d0b0a471',
          'vol_21': '89c219cbc6b75cd4',
          'vol_63': '02d7ca26c1e1a1dc',
          'dist_52w_high': 'e508d0ee5ba65aac',
          'volume_ratio_21': '7f83bb0e8e4baaf5',
          'log_dollar_volume_21': '9e80c997c4ed4328',
          'hl_range_21': '98de3642e863b060',
          'raw_mom_12_1': '06b4b8f018181a98',
          'raw_ret_21': 'ae09627ac044fe60',
          'raw_vol_63': '83c243dc72192102',
          'label_raw': '2c92551399748957',
          'label': '9c01bf9fd39e7557',
          'label_train': 'f14766fb058c690c',
          'label_end_pos': '118e1339d9af71cf'},
 'zscore': {'__index__': '258c475add717fc2',
            '__columns__': '001a1441c2ac186f',
            'date': '57207c474ea027af',
            'ticker': '7ea1f52c3b8852ea',
            'date_pos': 'fe3f1690db436d40',
            'ret_1': '7bbb0f99a7fa296e',
            'ret_5': '08f540901c65e680',
            'ret_21': '38ed1e9e2a2a5639',
            'ret_63': '1fb0431922165ce2',
            'mom_12_1': '28365c4bfd8c143c',
            'px_sma10': 'ed80baadb4be5ace',
            'px_sma30': '7bd31a8ae50f9596',
            'sma10_sma30': '1c7614fc03fbb6d4',
            'vol_21': 'f50ecc0b9338fdcd',
            'vol_63': '12d2b63a95401f77',
            'dist_52w_high': '291da4998d1f33ac',
            'volume_ratio_21': '5c357216525f43da',
            'log_dollar_volume_21': 'b61e410c86d45e78',
            'hl_range_21': '2084b6091e482382',
            'raw_mom_12_1': '06b4b8f018181a98',
            'raw_ret_21': 'ae09627ac044fe60',
            'raw_vol_63': '83c243dc72192102',
            'label_raw': '2c92551399748957',
            'label': '9c01bf9fd39e7557',
            'label_train': 'f14766fb058c690c',
            'label_end_pos': '118e1339d9af71cf'}}
PINNED_5YR_FEATURES = {'__index__': '902b7e12d1b259b3',
 '__columns__': '001a1441c2ac186f',
 'date': '8d7886150efd020d',
 'ticker': '7fe0771d93c9c5da',
 'date_pos': '5a268d6114028bdd',
 'ret_1': 'd15948d5e675f0bb',
 'ret_5': '7e4598bb5bd33333',
 'ret_21': 'bd00f56a0f823237',
 'ret_63': '6debcc2f9b1b3fe4',
 'mom_12_1': '8198a3afaf8a4943',
 'px_sma10': 'f878d8d5e40e40a9',
 'px_sma30': 'b00a7f140b220b65',
 'sma10_sma30': 'e2f22cdc151de958',
 'vol_21': '09e7db8c266f7a88',
 'vol_63': 'fa7f23ea9ec01b11',
 'dist_52w_high': 'ab6826d47af8ea27',
 'volume_ratio_21': '6e569130fb0ad9c5',
 'log_dollar_volume_21': '2df858b22c21a9cc',
 'hl_range_21': 'fd97c2c10319f268',
 'raw_mom_12_1': '27c11dd2285aebb5',
 'raw_ret_21': '8cdaec970bc93a89',
 'raw_vol_63': '7753833ef0def023',
 'label_raw': 'f620b0a880ff810a',
 'label': '66d64b7007f87124',
 'label_train': '9ef64a2d34e4d065',
 'label_end_pos': '8c7d8926cd126527'}
PINNED_EMBEDDED_SKIPPED = {'volume_ratio_21': 'needs volume, absent in this data',
 'log_dollar_volume_21': 'needs volume, absent in this data',
 'hl_range_21': 'needs high, low, absent in this data'}
PINNED_EMBEDDED_FEATURES = {'__index__': 'da6d532b17e8fc77',
 '__columns__': '2dea972a9d6dac8f',
 'date': '784b4a16c702b3c3',
 'ticker': '171b4434c4a83cf5',
 'date_pos': '045f2d5ac829986c',
 'ret_1': '8eaab561cbe4b4c8',
 'ret_5': '4a88f83da447aaf2',
 'ret_21': 'dbe0771c68424916',
 'ret_63': 'e9ee6a3e4e5dea6f',
 'mom_12_1': '955e280bb00d4a96',
 'px_sma10': 'c6014f931949204c',
 'px_sma30': 'cae611b5a07ae371',
 'sma10_sma30': 'b33f8063a311a6fe',
 'vol_21': '5c0c8cfb79198119',
 'vol_63': '4c6569337a0d8bd8',
 'dist_52w_high': '73504c716e144a5e',
 'raw_mom_12_1': 'e89227f3d7b2253e',
 'raw_ret_21': 'dd9f268286de61b1',
 'raw_vol_63': '888c8a60bc544234',
 'label_raw': '6830e8217bd59dd8',
 'label': '4cfb311c0a0b74dc',
 'label_train': 'b3e1fdf85cffdc68',
 'label_end_pos': '3ea7ff38b453d05a'}
