"""Validation rules: each one pinned by its count in the QualityReport and by the rows that come out."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from portfolio_mlops.config import ValidationConfig
from portfolio_mlops.data.layouts import CANONICAL_COLUMNS, read_dataset
from portfolio_mlops.data.validation import validate_prices
from portfolio_mlops.errors import DataValidationError

DAYS = ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07", "2020-01-08"]
LATER = "2020-01-09"


def flat(ticker: str, price: float = 10.0, days: list[str] = DAYS) -> list[str]:
    """Kaggle-daily lines (Date,Symbol,Adj Close,Close,High,Low,Open,Volume) of a quiet, valid history."""
    return [f"{d},{ticker},{price},{price},{price * 1.05:g},{price * 0.95:g},{price},100" for d in days]


def daily_closes(ticker: str, closes: list[float]) -> list[str]:
    days = pd.bdate_range("2020-01-01", periods=len(closes))
    return [f"{d:%Y-%m-%d},{ticker},{c},{c},{c},{c},{c},100" for d, c in zip(days, closes)]


def five_yr_closes(ticker: str, closes: list[float]) -> list[str]:
    days = pd.bdate_range("2013-02-08", periods=len(closes))
    return [f"{d:%Y-%m-%d},{c},{c},{c},{c},100,{ticker}" for d, c in zip(days, closes)]


def validate(path, **options):
    return validate_prices(read_dataset(path), ValidationConfig(**{"min_history_days": 2, **options}))


def count(report, check: str) -> int:
    (found,) = [c.count for c in report.checks if c.name == check]
    return found


# --- row rules ------------------------------------------------------------------------------------------

def test_empty_price_rows_are_dropped_and_counted(write_daily):
    folder = write_daily(["2019-12-31,AAA,,,,,,", *flat("AAA")])

    clean, _, report = validate(folder)

    assert count(report, "empty_price_rows") == 1
    assert len(clean) == 5
    assert clean["date"].min() == pd.Timestamp(DAYS[0])


def test_row_with_prices_but_no_close_is_dropped_as_missing_close(write_daily):
    folder = write_daily([*flat("AAA"), f"{LATER},AAA,10,,10.5,9.5,10,100"])

    clean, _, report = validate(folder)

    assert count(report, "missing_close") == 1
    assert count(report, "empty_price_rows") == 0
    assert pd.Timestamp(LATER) not in set(clean["date"])


def test_row_with_a_non_positive_price_in_any_column_is_dropped(write_daily):
    folder = write_daily([*flat("AAA"), f"{LATER},AAA,10,10,10.5,0,10,100", "2020-01-10,AAA,10,10,10.5,9.5,-1,100"])

    clean, _, report = validate(folder)

    assert count(report, "non_positive_price") == 2
    assert len(clean) == 5


def test_row_with_negative_volume_is_dropped(write_daily):
    folder = write_daily([*flat("AAA"), f"{LATER},AAA,10,10,10.5,9.5,10,-100"])

    clean, _, report = validate(folder)

    assert count(report, "negative_volume") == 1
    assert len(clean) == 5


def test_high_below_low_nulls_high_and_low_but_keeps_the_row_and_its_close(write_daily):
    folder = write_daily([*flat("AAA"), f"{LATER},AAA,10.2,10.1,9,11,10,100"])

    clean, _, report = validate(folder)

    assert count(report, "high_below_low") == 1
    row = clean[clean["date"] == pd.Timestamp(LATER)].iloc[0]
    assert math.isnan(row["high"]) and math.isnan(row["low"])
    assert (row["close"], row["adj_close"], row["open"]) == (10.1, 10.2, 10)


def test_rows_missing_open_high_or_low_are_kept_and_counted(write_daily):
    folder = write_daily([*flat("AAA"), f"{LATER},AAA,10,10,,,10,100"])

    clean, _, report = validate(folder)

    assert count(report, "missing_open_high_low") == 1
    assert len(clean) == 6


def test_exact_duplicate_rows_keep_one_copy_and_are_counted(write_daily):
    lines = flat("AAA")
    folder = write_daily([*lines, lines[2], lines[2]])

    clean, _, report = validate(folder)

    assert count(report, "duplicate_rows") == 2
    assert len(clean) == 5
    assert not clean.duplicated(["date", "ticker"]).any()


def test_conflicting_duplicates_are_fatal_and_the_message_names_both_rows(write_daily):
    folder = write_daily([*flat("AAA"), f"{DAYS[2]},AAA,11,11,11.5,10.5,11,100"])

    with pytest.raises(DataValidationError) as info:
        validate(folder)

    message = str(info.value)
    assert "conflicting duplicates: AAA on 2020-01-06" in message
    assert "sp500_stocks.csv data row 3" in message and "sp500_stocks.csv data row 6" in message


def test_conflicting_duplicates_are_fatal_even_when_each_version_appears_twice(write_daily):
    other = f"{DAYS[2]},AAA,11,11,11.5,10.5,11,100"
    folder = write_daily([*flat("AAA"), flat("AAA")[2], other, other])

    with pytest.raises(DataValidationError, match="conflicting duplicates"):
        validate(folder)


def test_conflicting_duplicate_message_names_the_row_each_version_comes_from(write_daily):
    folder = write_daily([*flat("AAA"), flat("AAA")[2], f"{DAYS[2]},AAA,11,11,11.5,10.5,11,100"])

    with pytest.raises(DataValidationError) as info:
        validate(folder)

    message = str(info.value)
    assert "data row 7" in message
    assert "data row 3" in message or "data row 6" in message


def test_dates_out_of_order_are_reported_per_ticker_and_the_output_is_sorted(write_daily):
    folder = write_daily([*reversed(flat("BBB")), *flat("AAA")])

    clean, _, report = validate(folder)

    (check,) = [c for c in report.checks if c.name == "dates_out_of_order"]
    assert (check.count, check.examples) == (1, ["BBB"])
    assert len(clean) == 10
    assert clean["ticker"].tolist() == ["AAA"] * 5 + ["BBB"] * 5
    assert clean["date"].tolist() == [pd.Timestamp(d) for d in DAYS] * 2


def test_file_grouped_by_date_is_not_reported_out_of_order(write_daily):
    interleaved = [line for pair in zip(flat("AAA"), flat("BBB")) for line in pair]

    _, _, report = validate(write_daily(interleaved))

    assert count(report, "dates_out_of_order") == 0


def test_clean_prices_have_only_the_canonical_columns(write_daily):
    clean, _, _ = validate(write_daily(flat("AAA")))

    assert list(clean.columns) == list(CANONICAL_COLUMNS)


# --- extreme one-day moves ----------------------------------------------------------------------------

def test_extreme_move_drops_the_ticker_by_default_and_records_why(write_daily):
    folder = write_daily([*daily_closes("AAA", [10, 10, 40, 40, 40]), *flat("BBB")])  # log(4) = 1.39

    clean, _, report = validate(folder)

    assert count(report, "extreme_moves") == 1
    assert set(clean["ticker"]) == {"BBB"}
    assert "extreme one-day move" in report.dropped_tickers["AAA"]


def test_extreme_move_policy_keep_keeps_the_ticker_and_still_counts_the_move(write_daily):
    folder = write_daily([*daily_closes("AAA", [10, 10, 40, 40, 40]), *flat("BBB")])

    clean, _, report = validate(folder, extreme_move_policy="keep")

    assert count(report, "extreme_moves") == 1
    assert set(clean["ticker"]) == {"AAA", "BBB"}
    assert report.dropped_tickers == {}


def test_extreme_move_policy_fail_raises_naming_the_row(write_daily):
    folder = write_daily([*daily_closes("AAA", [10, 10, 40, 40, 40]), *flat("BBB")])

    with pytest.raises(DataValidationError, match=r"sp500_stocks\.csv data row 3: AAA 2020-01-03 10 -> 40"):
        validate(folder, extreme_move_policy="fail")


def test_explicit_max_abs_log_return_replaces_the_auto_limit(write_daily):
    folder = write_daily([*daily_closes("AAA", [10, 10, 7, 7, 7]), *flat("BBB")])  # log(0.7) = -0.36

    clean, _, report = validate(folder, max_abs_log_return=0.3)

    assert count(report, "extreme_moves") == 1
    assert "AAA" in report.dropped_tickers


def test_auto_limit_flags_a_halving_in_the_unadjusted_all_stocks_5yr_layout(write_5yr):
    path = write_5yr([*five_yr_closes("AAL", [100, 100, 50, 50, 50]), *five_yr_closes("AAPL", [20] * 5)])

    clean, _, report = validate(path)  # log(0.5) = -0.69: an unadjusted 2:1 split looks like this

    assert count(report, "extreme_moves") == 1
    assert "AAL" in report.dropped_tickers


# --- splits in unadjusted layouts ------------------------------------------------------------------------

def five_yr_rows(ticker: str, closes: list[float], volumes: list[float]) -> list[str]:
    days = pd.bdate_range("2013-02-08", periods=len(closes))
    return [f"{d:%Y-%m-%d},{c},{c * 1.01:g},{c * 0.99:g},{c},{v:g},{ticker}" for d, c, v in zip(days, closes, volumes)]


def wiggle(n: int, level: float, seed: int) -> list[float]:
    """A quiet random walk (daily sd 1%) so that nothing but the planted events looks like a split."""
    rng = np.random.default_rng(seed)
    return list(level * np.exp(np.cumsum(rng.normal(0, 0.01, n))))


def test_planted_splits_are_back_adjusted_and_a_crash_of_split_size_is_not(write_5yr):
    n, cut = 80, 40
    # SPLT2: a 2:1 split on day 40 - the price halves and the share volume doubles from then on.
    c2 = wiggle(n, 100, 1)
    closes2 = [c if i < cut else c / 2 for i, c in enumerate(c2)]
    volumes2 = [1000 if i < cut else 2000 for i in range(n)]
    # SPLT3: a 3:2 split on day 40 - price x 2/3, volume x 1.5.
    c3 = wiggle(n, 60, 2)
    closes3 = [c if i < cut else c * 2 / 3 for i, c in enumerate(c3)]
    volumes3 = [500 if i < cut else 750 for i in range(n)]
    # CRASH: halves on day 40 like a 2:1 split, but with the volume of a crash: 12x on the day, decaying.
    c4 = wiggle(n, 80, 3)
    closes4 = [c if i < cut else c / 2 for i, c in enumerate(c4)]
    volumes4 = [300 if i < cut else 300 * (1 + 11 * 0.7 ** (i - cut)) for i in range(n)]
    path = write_5yr([*five_yr_rows("SPLT2", closes2, volumes2), *five_yr_rows("SPLT3", closes3, volumes3),
                      *five_yr_rows("CRASH", closes4, volumes4)])

    clean, _, report = validate(path)

    split_day = f"{pd.bdate_range('2013-02-08', periods=n)[cut]:%Y-%m-%d}"
    assert [(e["ticker"], e["date"], e["ratio"]) for e in report.splits_adjusted] == [
        ("SPLT2", split_day, "2:1"), ("SPLT3", split_day, "3:2")]
    assert count(report, "splits_adjusted") == 2
    for ticker, raw, factor, volume_before in (("SPLT2", c2, 2, 1000), ("SPLT3", c3, 1.5, 500)):
        rows = clean[clean["ticker"] == ticker].reset_index(drop=True)
        # before the split: prices / ratio, volume x ratio; from the split on: untouched raw values
        assert rows["close"].iloc[:cut].to_numpy() == pytest.approx([c / factor for c in raw[:cut]], rel=1e-9)
        assert rows["adj_close"].iloc[:cut].to_numpy() == pytest.approx([c / factor for c in raw[:cut]], rel=1e-9)
        assert rows["high"].iloc[:cut].to_numpy() == pytest.approx([c * 1.01 / factor for c in raw[:cut]], rel=1e-5)
        assert rows["volume"].iloc[:cut].tolist() == pytest.approx([volume_before * factor] * cut)
        assert rows["close"].iloc[cut:].to_numpy() == pytest.approx(
            [c / 2 if ticker == "SPLT2" else c * 2 / 3 for c in raw[cut:]], rel=1e-5)
        # the adjusted series has no jump left, so the extreme-move check keeps the ticker
        assert abs(math.log(rows["close"].iloc[cut] / rows["close"].iloc[cut - 1])) < 0.05
    # the crash keeps the current policy: flagged as an extreme move, the ticker dropped
    assert "CRASH" not in set(clean["ticker"])
    assert "extreme one-day move" in report.dropped_tickers["CRASH"]
    assert report.to_dict()["splits_adjusted"][0]["ratio"] == "2:1"


def test_split_adjustment_leaves_layouts_with_adjusted_close_alone(write_daily):
    days = pd.bdate_range("2020-01-01", periods=60)
    lines = [f"{d:%Y-%m-%d},AAA,{c},{c},{c},{c},{c},{v}" for d, c, v in
             zip(days, [100.0] * 30 + [50.0] * 30, [1000] * 30 + [2000] * 30)]
    folder = write_daily([*lines, *[f"{d:%Y-%m-%d},BBB,10,10,10,10,10,100" for d in days]])

    clean, _, report = validate(folder)

    assert report.splits_adjusted == []
    assert clean[clean["ticker"] == "AAA"]["close"].iloc[0] == 100.0


def test_auto_limit_lets_a_real_halving_pass_in_a_layout_with_adjusted_close(write_daily):
    folder = write_daily([*daily_closes("AAA", [100, 100, 50, 50, 50]), *flat("BBB")])

    clean, _, report = validate(folder)

    assert count(report, "extreme_moves") == 0
    assert set(clean["ticker"]) == {"AAA", "BBB"}


def test_embedded_default_keeps_aapl_through_its_real_2000_crash():
    clean, _, report = validate_prices(read_dataset(None), ValidationConfig())

    assert "AAPL" in set(clean["ticker"])


# --- universe-level rules and the benchmark -------------------------------------------------------------

def test_short_history_tickers_are_dropped_and_recorded(write_daily):
    folder = write_daily([*flat("AAA"), *flat("BBB", days=DAYS[:4])])

    clean, _, report = validate(folder, min_history_days=5)

    assert count(report, "short_history") == 1
    assert set(clean["ticker"]) == {"AAA"}  # exactly min_history_days rows is enough
    assert report.dropped_tickers == {"BBB": "short history: 4 rows < 5"}


def test_benchmark_days_with_missing_or_non_positive_level_are_dropped(write_daily):
    index = [f"{DAYS[0]},3000", f"{DAYS[1]},0", f"{DAYS[2]},-5", f"{DAYS[3]},", f"{DAYS[4]},3010.5"]

    _, benchmark, report = validate(write_daily(flat("AAA"), index=index))

    assert count(report, "benchmark_rows_dropped") == 3
    assert benchmark.to_dict() == {pd.Timestamp(DAYS[0]): 3000.0, pd.Timestamp(DAYS[4]): 3010.5}


def test_nothing_left_after_validation_is_an_error_that_shows_the_report(write_daily):
    folder = write_daily(flat("AAA", days=DAYS[:3]))

    with pytest.raises(DataValidationError, match="(?s)no rows left after validation.*short_history"):
        validate(folder, min_history_days=5)


# --- the report -----------------------------------------------------------------------------------------

def test_report_counts_rows_and_tickers_in_and_out_and_the_date_range(write_daily):
    folder = write_daily([*flat("AAA"), *flat("BBB", days=DAYS[:2]), f"{LATER},AAA,,,,,,"])

    _, _, report = validate(folder, min_history_days=3)

    assert (report.rows_in, report.rows_out) == (8, 5)
    assert (report.tickers_in, report.tickers_out) == (2, 1)
    assert (report.start, report.end) == (DAYS[0], DAYS[-1])
    assert report.layout == "kaggle_sp500_daily"


def test_summary_mentions_the_checks_that_fired_and_omits_the_rest(write_daily):
    folder = write_daily([*flat("AAA"), f"{LATER},AAA,,,,,,", "2020-01-10,AAA,10,10,10.5,9.5,10,-1"])

    summary = validate(folder)[2].summary()

    assert "empty_price_rows" in summary and "negative_volume" in summary
    assert "sp500_stocks.csv data row 6: AAA 2020-01-09" in summary  # the first example, with its lineage
    for silent in ("missing_close", "non_positive_price", "high_below_low", "duplicate_rows", "extreme_moves"):
        assert silent not in summary


def test_report_serialises_every_check_with_count_and_examples(write_daily):
    folder = write_daily([*flat("AAA"), f"{LATER},AAA,,,,,,"])

    as_dict = validate(folder)[2].to_dict()

    checks = {c["name"]: c for c in as_dict["checks"]}
    assert checks["empty_price_rows"]["count"] == 1
    assert checks["empty_price_rows"]["examples"] == ["sp500_stocks.csv data row 6: AAA 2020-01-09"]
    assert {"duplicate_rows", "dates_out_of_order", "extreme_moves", "short_history"} <= set(checks)
