"""Layout detection and reading: every supported layout, the tolerated variations, and strict refusals."""

from __future__ import annotations

import gzip
import re

import pandas as pd
import pytest

from portfolio_mlops.data.layouts import CANONICAL_COLUMNS, read_dataset
from portfolio_mlops.errors import DataLayoutError, DataValidationError, PortfolioMLOpsError

DAILY_HEADER = "Date,Symbol,Adj Close,Close,High,Low,Open,Volume"
FIVE_YR_HEADER = "date,open,high,low,close,volume,Name"
DAILY_LINES = [
    "2020-01-02,AAA,10.5,10,11,9,10,100",
    "2020-01-03,AAA,11.5,11,12,10,11,200",
    "2020-01-02,BBB,20.5,20,21,19,20,300",
    "2020-01-03,BBB,21.5,21,22,20,21,400",
]
FIVE_YR_LINES = [
    "2013-02-08,10,11,9,10.5,100,AAL",
    "2013-02-11,10.5,12,10,11.5,200,AAL",
    "2013-02-08,20,21,19,20.5,300,AAPL",
    "2013-02-11,20.5,22,20,21.5,400,AAPL",
]


def _gzip(path, text: str):
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    return path


# --- Kaggle "S&P 500 stocks (daily updated)" -------------------------------------------------------

def test_kaggle_daily_folder_reads_prices_index_and_sectors(write_daily):
    folder = write_daily(DAILY_LINES, index=["2020-01-02,3257.85", "2020-01-03,3234.85"],
                         companies=["AAA,Technology", "BBB,Energy"])

    raw = read_dataset(folder)

    assert raw.layout == "kaggle_sp500_daily"
    assert raw.adjusted is True
    assert list(raw.prices.columns[: len(CANONICAL_COLUMNS)]) == list(CANONICAL_COLUMNS)
    aaa = raw.prices[raw.prices["ticker"] == "AAA"].iloc[1]
    assert (aaa["adj_close"], aaa["close"], aaa["high"], aaa["low"], aaa["open"], aaa["volume"]) == (11.5, 11, 12, 10, 11, 200)
    assert raw.benchmark.to_dict() == {pd.Timestamp("2020-01-02"): 3257.85, pd.Timestamp("2020-01-03"): 3234.85}
    assert raw.benchmark_name == "sp500_index"
    assert raw.sectors.to_dict() == {"AAA": "Technology", "BBB": "Energy"}


def test_kaggle_daily_folder_without_index_reads_prices_and_notes_the_missing_benchmark(write_daily):
    raw = read_dataset(write_daily(DAILY_LINES))

    assert raw.benchmark is None
    assert len(raw.prices) == 4
    assert any("sp500_index" in note for note in raw.notes)


def test_sp500_stocks_file_alone_is_read_as_kaggle_daily(write_daily):
    raw = read_dataset(write_daily(DAILY_LINES) / "sp500_stocks.csv")

    assert raw.layout == "kaggle_sp500_daily"
    assert sorted(raw.prices["ticker"].unique()) == ["AAA", "BBB"]


def test_every_row_carries_its_source_file_and_data_row_number(write_daily):
    raw = read_dataset(write_daily(DAILY_LINES))

    assert set(raw.prices["source"]) == {"sp500_stocks.csv"}
    assert raw.prices["source_row"].tolist() == [1, 2, 3, 4]


# --- Kaggle "S&P 500 stock data" (all_stocks_5yr / individual_stocks_5yr) ----------------------------

def test_all_stocks_5yr_file_is_read_as_unadjusted_with_adj_close_equal_to_close(write_5yr):
    raw = read_dataset(write_5yr(FIVE_YR_LINES))

    assert raw.layout == "kaggle_all_stocks_5yr"
    assert raw.adjusted is False
    assert raw.benchmark is None
    assert raw.prices["adj_close"].tolist() == raw.prices["close"].tolist() == [10.5, 11.5, 20.5, 21.5]
    assert sorted(raw.prices["ticker"].unique()) == ["AAL", "AAPL"]


def test_folder_holding_all_stocks_5yr_is_detected(write_5yr):
    path = write_5yr(FIVE_YR_LINES)

    assert read_dataset(path.parent).layout == "kaggle_all_stocks_5yr"


def test_individual_stocks_5yr_folder_concatenates_one_file_per_ticker(tmp_path):
    folder = tmp_path / "individual_stocks_5yr"
    folder.mkdir()
    (folder / "AAL_data.csv").write_text("\n".join([FIVE_YR_HEADER, *FIVE_YR_LINES[:2]]) + "\n")
    (folder / "AAPL_data.csv").write_text("\n".join([FIVE_YR_HEADER, *FIVE_YR_LINES[2:]]) + "\n")

    raw = read_dataset(tmp_path)

    assert raw.layout == "kaggle_individual_stocks_5yr"
    assert raw.adjusted is False
    assert len(raw.sources) == 2
    assert raw.prices.groupby("ticker")["source"].first().to_dict() == {"AAL": "AAL_data.csv", "AAPL": "AAPL_data.csv"}
    assert raw.prices["source_row"].tolist() == [1, 2, 1, 2]


# --- gzip ----------------------------------------------------------------------------------------------

def test_gzipped_sp500_stocks_file_reads_like_the_plain_one(write_daily, tmp_path):
    plain = read_dataset(write_daily(DAILY_LINES))
    gz = _gzip(tmp_path / "sp500_stocks.csv.gz", "\n".join([DAILY_HEADER, *DAILY_LINES]) + "\n")

    raw = read_dataset(gz)

    assert raw.layout == "kaggle_sp500_daily"
    pd.testing.assert_frame_equal(raw.prices.drop(columns="source"), plain.prices.drop(columns="source"))


def test_folder_with_gzipped_kaggle_daily_files_is_detected(tmp_path):
    _gzip(tmp_path / "sp500_stocks.csv.gz", "\n".join([DAILY_HEADER, *DAILY_LINES]) + "\n")
    _gzip(tmp_path / "sp500_index.csv.gz", "Date,S&P500\n2020-01-02,3257.85\n2020-01-03,3234.85\n")

    raw = read_dataset(tmp_path)

    assert raw.layout == "kaggle_sp500_daily"
    assert len(raw.prices) == 4
    assert len(raw.benchmark) == 2


def test_gzipped_all_stocks_5yr_file_is_read(tmp_path):
    gz = _gzip(tmp_path / "all_stocks_5yr.csv.gz", "\n".join([FIVE_YR_HEADER, *FIVE_YR_LINES]) + "\n")

    raw = read_dataset(gz)

    assert raw.layout == "kaggle_all_stocks_5yr"
    assert raw.prices["close"].tolist() == [10.5, 11.5, 20.5, 21.5]


# --- canonical Parquet ---------------------------------------------------------------------------------

def _canonical_prices() -> pd.DataFrame:
    return pd.DataFrame({
        "date": pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-02", "2020-01-03"]),
        "ticker": ["AAA", "AAA", "BBB", "BBB"],
        "close": [10.0, 11.0, 20.0, 21.0],
        "adj_close": [10.5, 11.5, 20.5, 21.5],
        "volume": [100.0, 200.0, 300.0, 400.0],
    })


def test_canonical_parquet_folder_reads_prices_and_benchmark(tmp_path):
    _canonical_prices().to_parquet(tmp_path / "prices.parquet", index=False)
    pd.DataFrame({"date": pd.to_datetime(["2020-01-02", "2020-01-03"]), "value": [3257.85, 3234.85]}).to_parquet(
        tmp_path / "benchmark.parquet", index=False)

    raw = read_dataset(tmp_path)

    assert raw.layout == "canonical_parquet"
    assert raw.adjusted is True
    assert raw.prices["adj_close"].tolist() == [10.5, 11.5, 20.5, 21.5]
    assert raw.prices["open"].isna().all()  # absent optional columns come back as missing, not invented
    assert raw.benchmark.tolist() == [3257.85, 3234.85]


def test_single_canonical_parquet_file_is_read(tmp_path):
    path = tmp_path / "my_prices.parquet"
    _canonical_prices().to_parquet(path, index=False)

    raw = read_dataset(path)

    assert raw.layout == "canonical_parquet"
    assert raw.benchmark is None
    assert raw.prices["ticker"].tolist() == ["AAA", "AAA", "BBB", "BBB"]


def test_canonical_parquet_with_only_adj_close_uses_it_as_close(tmp_path):
    path = tmp_path / "prices.parquet"
    _canonical_prices().drop(columns="close").to_parquet(path, index=False)

    raw = read_dataset(path)

    assert raw.prices["close"].tolist() == raw.prices["adj_close"].tolist() == [10.5, 11.5, 20.5, 21.5]


def test_canonical_parquet_without_a_price_column_is_refused(tmp_path):
    path = tmp_path / "prices.parquet"
    _canonical_prices().drop(columns=["close", "adj_close"]).to_parquet(path, index=False)

    with pytest.raises(DataLayoutError, match="date, ticker and close or adj_close"):
        read_dataset(path)


def test_corrupt_parquet_file_is_a_layout_error(tmp_path):
    path = tmp_path / "prices.parquet"
    path.write_bytes(b"not parquet at all")

    with pytest.raises(DataLayoutError, match="cannot read as Parquet"):
        read_dataset(path)


# --- embedded default ---------------------------------------------------------------------------------

def test_embedded_default_has_20_tickers_a_benchmark_and_no_volume():
    raw = read_dataset(None)

    assert raw.layout == "embedded_sp500_20"
    assert raw.prices["ticker"].nunique() == 20
    assert raw.benchmark is not None and len(raw.benchmark) > 1000
    assert "volume" not in raw.available_columns
    assert {"date", "ticker", "close", "adj_close"} <= set(raw.available_columns)


# --- tolerance ----------------------------------------------------------------------------------------

def test_extra_columns_are_ignored(tmp_path):
    path = tmp_path / "sp500_stocks.csv"
    path.write_text("Exchange,Date,Symbol,Adj Close,Close,High,Low,Open,Volume,Dividends\n"
                    "NYSE,2020-01-02,AAA,10.5,10,11,9,10,100,0.2\n")

    raw = read_dataset(path)

    assert raw.prices.iloc[0][["ticker", "adj_close", "volume"]].tolist() == ["AAA", 10.5, 100]
    assert "dividends" not in raw.prices and "exchange" not in raw.prices


def test_header_names_match_ignoring_case_and_surrounding_spaces(tmp_path):
    path = tmp_path / "sp500_stocks.csv"
    path.write_text(" DATE , symbol ,adj CLOSE ,Close,HIGH,low,Open , VOLUME\n2020-01-02,AAA,10.5,10,11,9,10,100\n")

    raw = read_dataset(path)

    assert raw.layout == "kaggle_sp500_daily"
    assert raw.prices.iloc[0][["ticker", "adj_close", "close", "high", "low", "open", "volume"]].tolist() == [
        "AAA", 10.5, 10, 11, 9, 10, 100]


def test_symbols_are_stripped_and_upper_cased(tmp_path):
    path = tmp_path / "sp500_stocks.csv"
    path.write_text(DAILY_HEADER + "\n2020-01-02, brk.b ,10.5,10,11,9,10,100\n")

    assert read_dataset(path).prices["ticker"].tolist() == ["BRK.B"]


def test_unsorted_symbols_and_dates_are_read_in_file_order(write_daily):
    lines = [DAILY_LINES[3], DAILY_LINES[0], DAILY_LINES[2], DAILY_LINES[1]]

    raw = read_dataset(write_daily(lines))

    assert list(zip(raw.prices["ticker"], raw.prices["date"].dt.day)) == [("BBB", 3), ("AAA", 2), ("BBB", 2), ("AAA", 3)]


def test_empty_lines_are_skipped(tmp_path):
    path = tmp_path / "sp500_stocks.csv"
    path.write_text(DAILY_HEADER + "\n\n" + DAILY_LINES[0] + "\n\n\n" + DAILY_LINES[1] + "\n\n")

    raw = read_dataset(path)

    assert len(raw.prices) == 2
    assert raw.prices["source_row"].tolist() == [1, 2]


def test_na_tokens_and_empty_fields_read_as_missing_prices(write_daily):
    raw = read_dataset(write_daily(["2020-01-02,AAA,NA,,null,N/A,NaN,"]))

    assert raw.prices[["adj_close", "close", "high", "low", "open", "volume"]].isna().all(axis=None)


# --- strictness ---------------------------------------------------------------------------------------

def test_csv_with_unknown_header_names_missing_columns_and_lists_supported_layouts(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("Date,Symbol,Adj Close,Close,High,Low,Open\n2020-01-02,AAA,10.5,10,11,9,10\n")

    with pytest.raises(DataLayoutError) as info:
        read_dataset(path)

    message = str(info.value)
    assert str(path) in message
    assert "closest is missing ['volume']" in message
    assert "Supported layouts" in message
    assert "sp500_stocks.csv" in message and "all_stocks_5yr.csv" in message and "prices.parquet" in message


def test_missing_path_is_a_layout_error_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "sp500_stocks.csv"

    with pytest.raises(DataLayoutError, match=re.escape(str(missing)) + ": no such file or folder"):
        read_dataset(missing)


def test_non_csv_file_is_a_layout_error(tmp_path):
    path = tmp_path / "prices.xlsx"
    path.write_bytes(b"PK\x03\x04")

    with pytest.raises(DataLayoutError, match=r"expected a \.csv, \.csv\.gz or \.parquet file"):
        read_dataset(path)


def test_folder_without_a_supported_layout_lists_what_it_holds(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "stocks.json").write_text("{}")

    with pytest.raises(DataLayoutError, match=r"no supported layout found \(folder holds: readme.txt, stocks.json\)"):
        read_dataset(tmp_path)


def test_non_numeric_price_names_file_data_row_and_field(write_daily):
    folder = write_daily([DAILY_LINES[0], DAILY_LINES[1], "2020-01-06,AAA,12.5,abc,13,11,12,300"])

    with pytest.raises(DataValidationError) as info:
        read_dataset(folder)

    message = str(info.value)
    assert str(folder / "sp500_stocks.csv") in message
    assert "data row 3" in message
    assert "'Close'" in message and "'abc'" in message


def test_unparseable_date_names_file_data_row_and_field(write_daily):
    folder = write_daily([DAILY_LINES[0], "2020-13-45,AAA,11.5,11,12,10,11,200"])

    with pytest.raises(DataValidationError) as info:
        read_dataset(folder)

    message = str(info.value)
    assert str(folder / "sp500_stocks.csv") in message
    assert "data row 2" in message and "'date'" in message and "'2020-13-45'" in message


def test_empty_date_names_file_data_row_and_field(write_daily):
    folder = write_daily([DAILY_LINES[0], DAILY_LINES[1], ",AAA,11.5,11,12,10,11,200"])

    with pytest.raises(DataValidationError, match=r"sp500_stocks\.csv: data row 3, field 'date': the date is empty"):
        read_dataset(folder)


def test_empty_symbol_names_file_data_row_and_field(write_daily):
    folder = write_daily([DAILY_LINES[0], "2020-01-03,,11.5,11,12,10,11,200"])

    with pytest.raises(DataValidationError, match=r"sp500_stocks\.csv: data row 2, field 'ticker': the symbol is empty"):
        read_dataset(folder)


def test_whitespace_only_symbol_is_refused_like_an_empty_one(write_daily):
    folder = write_daily([DAILY_LINES[0], "2020-01-03,   ,11.5,11,12,10,11,200"])

    with pytest.raises(DataValidationError, match="data row 2, field 'ticker'"):
        read_dataset(folder)


def test_non_numeric_price_in_all_stocks_5yr_names_file_row_and_field(write_5yr):
    path = write_5yr([FIVE_YR_LINES[0], "2013-02-11,10.5,12,10,1O.7,200,AAL"])

    with pytest.raises(DataValidationError, match=r"all_stocks_5yr\.csv: data row 2, field 'close'.*'1O\.7'"):
        read_dataset(path)


def _ragged_file(tmp_path, filler_rows: int):
    """A Kaggle daily file whose last row has one field too many, after `filler_rows` good rows."""
    days = pd.bdate_range("1990-01-01", periods=filler_rows)
    good = [f"{d:%Y-%m-%d},AAA,10,10,10,10,10,100" for d in days]
    path = tmp_path / "sp500_stocks.csv"
    path.write_text("\n".join([DAILY_HEADER, *good, "2030-01-02,AAA,10,10,10,10,10,100,999"]) + "\n")
    return path


@pytest.mark.parametrize("filler_rows", [
    pytest.param(3, id="within-first-64KiB"),
    pytest.param(3000, id="beyond-first-64KiB"),
])
def test_row_with_too_many_fields_is_a_package_error(tmp_path, filler_rows):
    path = _ragged_file(tmp_path, filler_rows)

    with pytest.raises(PortfolioMLOpsError, match=re.escape(str(path))):
        read_dataset(path)

