"""Read the S&P 500 data layouts users already have into one canonical long table.

Canonical prices: one row per (date, ticker) with columns
    date (datetime64, trading day), ticker (str), open, high, low, close, adj_close, volume
plus `source` (file name) and `source_row` (1-based data row in that file, header excluded) so that
validation can point at the offending line. Prices are in the file's currency; `adj_close` includes
dividends and splits when the layout has it, otherwise it equals `close` and a note says so.

Nothing here fixes or drops data: that is `validation`'s job, where every action is counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from portfolio_mlops.errors import DataLayoutError, DataValidationError

PRICE_COLUMNS = ("open", "high", "low", "close", "adj_close")
CANONICAL_COLUMNS = ("date", "ticker", *PRICE_COLUMNS, "volume")

SUPPORTED_LAYOUTS = """Supported layouts:
  1. Kaggle "S&P 500 stocks (daily updated)": a folder with sp500_stocks.csv
     (Date,Symbol,Adj Close,Close,High,Low,Open,Volume), optionally sp500_index.csv (Date,S&P500)
     and sp500_companies.csv (Symbol,Sector,...); or the sp500_stocks.csv file itself.
  2. Kaggle "S&P 500 stock data": all_stocks_5yr.csv (date,open,high,low,close,volume,Name), or the
     folder individual_stocks_5yr/ of <TICKER>_data.csv files with the same columns.
  3. Canonical Parquet (this project's ingest output): prices.parquet with
     date,ticker,close or adj_close [,open,high,low,volume], optionally benchmark.parquet (date,value).
Any CSV may be gzipped (.csv.gz); extra columns are ignored; column names are matched case-insensitively."""

# The same, on one line: what error messages end with (the CLI prints one line per error).
SUPPORTED_LAYOUTS_LINE = (
    "Supported layouts: sp500_stocks.csv (Date,Symbol,Adj Close,Close,High,Low,Open,Volume; optional sp500_index.csv); "
    "all_stocks_5yr.csv or individual_stocks_5yr/<TICKER>_data.csv (date,open,high,low,close,volume,Name); "
    "prices.parquet (date,ticker,close or adj_close); any CSV may be .csv.gz."
)

# Header signatures (lower-cased) -> layout name. Extra columns are tolerated.
_KAGGLE_DAILY = {"date", "symbol", "adj close", "close", "high", "low", "open", "volume"}
_KAGGLE_5YR = {"date", "open", "high", "low", "close", "volume", "name"}


@dataclass(frozen=True)
class RawDataset:
    """What a layout reader returns: canonical long prices plus optional benchmark and sectors."""

    layout: str
    prices: pd.DataFrame
    sources: tuple[str, ...]
    benchmark: pd.Series | None = None  # index level per trading day (price index, no dividends)
    benchmark_name: str | None = None
    sectors: pd.Series | None = None  # ticker -> sector, metadata for reports only
    notes: tuple[str, ...] = field(default_factory=tuple)
    adjusted: bool = True  # adj_close really adjusts for splits and dividends

    @property
    def available_columns(self) -> list[str]:
        return [c for c in CANONICAL_COLUMNS if c in self.prices and self.prices[c].notna().any()]


def read_dataset(path: str | Path | None) -> RawDataset:
    """Auto-detect the layout of `path` (file or folder) and read it; None reads the embedded default."""
    if path is None:
        return read_embedded()
    path = Path(path)
    if not path.exists():
        raise DataLayoutError(f"{path}: no such file or folder.")
    if path.is_dir():
        return _read_folder(path)
    return _read_file(path)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.csv", folder / f"{stem}.csv.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_folder(folder: Path) -> RawDataset:
    if stocks := _find(folder, "sp500_stocks"):
        return _read_kaggle_daily(stocks)
    if five_year := _find(folder, "all_stocks_5yr"):
        return _read_kaggle_5yr([five_year])
    if (folder / "prices.parquet").is_file():
        return _read_canonical(folder / "prices.parquet")
    individual = folder / "individual_stocks_5yr"
    per_ticker = sorted(individual.glob("*_data.csv*")) if individual.is_dir() else sorted(folder.glob("*_data.csv*"))
    if per_ticker:
        return _read_kaggle_5yr(per_ticker)
    listing = ", ".join(sorted(p.name for p in folder.iterdir())[:12]) or "(empty)"
    raise DataLayoutError(f"{folder}: no supported layout found (folder holds: {listing}). {SUPPORTED_LAYOUTS_LINE}")


def _read_file(path: Path) -> RawDataset:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return _read_canonical(path)
    if not (name.endswith(".csv") or name.endswith(".csv.gz")):
        raise DataLayoutError(f"{path}: expected a .csv, .csv.gz or .parquet file. {SUPPORTED_LAYOUTS_LINE}")
    header = {c.strip().lower() for c in _read_header(path)}
    if _KAGGLE_DAILY <= header:
        return _read_kaggle_daily(path)
    if _KAGGLE_5YR <= header:
        return _read_kaggle_5yr([path])
    closest = min((_KAGGLE_DAILY, _KAGGLE_5YR), key=lambda sig: len(sig - header))
    layout = "sp500_stocks.csv (layout 1)" if closest is _KAGGLE_DAILY else "all_stocks_5yr.csv (layout 2)"
    raise DataLayoutError(
        f"{path}: header {sorted(header)} matches no supported layout; closest is missing "
        f"{sorted(closest - header)} ({layout}){_column_hints(header, closest - header)}. {SUPPORTED_LAYOUTS_LINE}"
    )


# Names people give the ticker and price columns, -> what each layout calls them.
_SYNONYMS = {
    "ticker": ("name", "symbol"), "symbol": ("name", "symbol"), "name": ("name", "symbol"),
    "stock": ("name", "symbol"), "adjclose": ("adj close",), "adj_close": ("adj close",), "adjusted close": ("adj close",),
    "day": ("date",), "timestamp": ("date",), "time": ("date",), "price": ("close",),
}


def _column_hints(header: set[str], missing: set[str]) -> str:
    """` - did you mean ...?` for header names that are another layout's (or a common) name of a missing column."""
    hints = []
    for column in sorted(header):
        for wanted in _SYNONYMS.get(column, ()):
            if wanted in missing:
                hints.append(f"did you mean {wanted!r} for column {column!r}? rename it")
                break
    return " - " + "; ".join(hints) if hints else ""


def _read_header(path: Path) -> list[str]:
    import pyarrow as pa  # imported where CSVs are read: the served model parses rows, not files (no pyarrow)
    import pyarrow.csv as pacsv

    _check_text(path)
    try:
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16))
    except (pa.ArrowInvalid, OSError) as exc:
        raise _unreadable(path, exc) from exc
    names = list(reader.schema.names)
    if len(names) == 1:
        for delimiter, label, tr in ((";", "semicolons", "';'"), ("\t", "tabs", "'\\t'"), ("|", "pipes", "'|'")):
            if delimiter in names[0]:
                raise DataLayoutError(
                    f"{path}: the header {names[0]!r} is separated by {label}, not commas; save the file as "
                    f"comma-separated CSV (e.g. `tr {tr} ','` when no value contains a comma)")
    return names


def _open_bytes(path: Path):
    import gzip

    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _check_text(path: Path) -> None:
    """Refuse binary content before a parser prints it: a CSV is text (NULs or many control bytes are not)."""
    import gzip

    try:
        with _open_bytes(path) as stream:
            head = stream.read(1 << 16)
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        raise DataLayoutError(f"{path}: not a readable gzip file ({exc}); expected a .csv.gz made by gzip") from exc
    if not head:
        raise DataLayoutError(f"{path}: the file is empty; expected a header line and data rows")
    control = sum(1 for byte in head if byte < 32 and byte not in (9, 10, 13))
    if b"\0" in head or control > len(head) // 100:
        raise DataLayoutError(f"{path}: not a text CSV file (binary content in its first {len(head):,} bytes); "
                              "expected comma-separated text with a header line")


def _unreadable(path: Path, exc: Exception) -> DataValidationError:
    """Name the first line that breaks the CSV (wrong field count, not UTF-8) instead of quoting raw bytes."""
    import csv
    import io

    with _open_bytes(path) as stream:
        raw_lines = stream.read().split(b"\n")
    ends_with_newline = raw_lines[-1] == b""
    if ends_with_newline:
        raw_lines = raw_lines[:-1]
    header = next(csv.reader([raw_lines[0].decode("latin-1").rstrip("\r")])) if raw_lines else []
    for number, raw in enumerate(raw_lines[1:], start=1):
        fields = next(csv.reader(io.StringIO(raw.decode("latin-1").rstrip("\r"))), [])
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            column = next((header[i] for i, f in enumerate(fields) if i < len(header)
                           and not _is_utf8(f.encode("latin-1"))), "?")
            return DataValidationError(
                f"{path}: data row {number}, field {column!r}: not UTF-8 text (byte 0x{raw[bad.start]:02x}; the file "
                "looks Latin-1/Windows-1252 encoded); re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8`")
        if raw.strip() and len(fields) != len(header):
            cut = number == len(raw_lines) - 1 and not ends_with_newline
            why = "; the file looks cut off mid-line (its last line has no line end)" if cut else ""
            return DataValidationError(
                f"{path}: data row {number}: expected {len(header)} fields ({','.join(header)}), got {len(fields)}{why}")
    first = str(exc).splitlines()[0][:120].encode("ascii", "replace").decode()
    return DataValidationError(f"{path}: cannot parse as CSV: {first}")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _read_csv(path: Path, columns: dict[str, str], numeric: tuple[str, ...],
              categorical: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read the wanted columns (file name -> canonical name) with strings for dates and tickers.

    Numbers are parsed by pyarrow; if a value is not a number, re-read that column as text to name the
    exact row and value in the error. `categorical` text columns (dates and tickers of a price file:
    a few thousand distinct values in millions of rows) come dictionary-encoded from the reader, so
    each distinct value is parsed and checked once.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header = _read_header(path)
    by_lower = {h.strip().lower(): h for h in header}
    missing = [wanted for wanted in columns if wanted not in by_lower]
    if missing:
        hints = _column_hints(set(by_lower), set(missing))
        raise DataLayoutError(f"{path}: missing column(s) {missing}; found {header}{hints}. {SUPPORTED_LAYOUTS_LINE}")
    actual = {by_lower[wanted]: canonical for wanted, canonical in columns.items()}
    types = {col: (pa.float64() if canonical in numeric else
                   pa.dictionary(pa.int32(), pa.string()) if canonical in categorical else pa.string())
             for col, canonical in actual.items()}
    convert = pacsv.ConvertOptions(
        include_columns=list(actual),
        column_types=types,
        null_values=["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"],
        strings_can_be_null=True,
    )
    try:
        table = pacsv.read_csv(path, convert_options=convert)
    except pa.ArrowInvalid as exc:
        _raise_bad_number(path, actual, numeric, exc)
    frame = table.to_pandas()
    frame.columns = [actual[c] for c in frame.columns]
    return frame


def _raise_bad_number(path: Path, actual: dict[str, str], numeric: tuple[str, ...], exc: Exception) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        as_text = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                include_columns=list(actual), column_types={c: pa.string() for c in actual}, strings_can_be_null=True
            ),
        ).to_pandas()
    except (pa.ArrowInvalid, UnicodeDecodeError):  # ragged rows, bad encoding: not a number problem
        raise _unreadable(path, exc) from exc
    for col, canonical in actual.items():
        if canonical not in numeric:
            continue
        values = as_text[col]
        parsed = pd.to_numeric(values, errors="coerce")
        bad = values.notna() & parsed.isna() & ~values.str.strip().isin(["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataValidationError(
                f"{path}: data row {row + 1}, field {col!r}: expected a number, got {values.iloc[row]!r}"
            ) from exc
    raise _unreadable(path, exc) from exc


def _codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """(codes, distinct values) of a column; code -1 is a missing value."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype("category")
    return values.cat.codes.to_numpy(), values.cat.categories


def _parse_dates(frame: pd.DataFrame, path: Path, column: str = "date") -> pd.Series:
    text = frame[column]
    codes, distinct = _codes(text)
    missing = codes < 0
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataValidationError(f"{path}: data row {row + 1}, field {column!r}: the date is empty")
    distinct = pd.Series(distinct.astype(str) if len(distinct) else distinct, dtype=object)
    parsed = pd.to_datetime(distinct.str.strip().str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    bad = parsed.isna().to_numpy()[codes]
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataValidationError(
            f"{path}: data row {row + 1}, field {column!r}: expected a date like 2018-02-07, got {text.iloc[row]!r}"
        )
    return pd.Series(parsed.astype("datetime64[ns]").to_numpy()[codes], index=frame.index, name=column)


def _finish(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Add lineage columns and every canonical column (missing ones as NaN).

    Tickers come out categorical, their categories sorted (the order validation sorts the panel in);
    `source` is categorical too.
    """
    frame["date"] = _parse_dates(frame, path)
    codes, distinct = _codes(frame["ticker"])
    symbols = pd.Series(distinct, dtype=object).astype("string").str.strip().str.upper()
    empty = (symbols.isna() | (symbols == "")).to_numpy()
    bad = (codes < 0) | empty[np.maximum(codes, 0)]
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataValidationError(f"{path}: data row {row + 1}, field 'ticker': the symbol is empty")
    tickers, merged = np.unique(symbols.to_numpy(dtype=object, na_value=""), return_inverse=True)
    frame["ticker"] = pd.Categorical.from_codes(merged[codes], categories=pd.Index(tickers, dtype="str"))
    for column in (*PRICE_COLUMNS, "volume"):
        if column not in frame:
            frame[column] = np.nan
    frame["source"] = pd.Categorical.from_codes(np.zeros(len(frame), dtype=np.int8), categories=pd.Index([path.name], dtype="str"))
    frame["source_row"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame[[*CANONICAL_COLUMNS, "source", "source_row"]]


def _read_kaggle_daily(stocks: Path) -> RawDataset:
    columns = {
        "date": "date", "symbol": "ticker", "adj close": "adj_close", "close": "close",
        "high": "high", "low": "low", "open": "open", "volume": "volume",
    }
    prices = _finish(_read_csv(stocks, columns, numeric=(*PRICE_COLUMNS, "volume"), categorical=("date", "ticker")), stocks)
    sources = [str(stocks)]
    benchmark = sectors = None
    notes: list[str] = []
    folder = stocks.parent
    if index_path := _find(folder, "sp500_index"):
        header = {h.strip().lower(): h for h in _read_header(index_path)}
        value_col = next((h for lower, h in header.items() if lower != "date"), None)
        if "date" not in header or value_col is None:
            raise DataLayoutError(f"{index_path}: expected columns Date,S&P500; found {list(header.values())}")
        frame = _read_csv(index_path, {"date": "date", value_col.strip().lower(): "value"}, numeric=("value",))
        frame["date"] = _parse_dates(frame, index_path)
        benchmark = frame.set_index("date")["value"]
        sources.append(str(index_path))
    else:
        notes.append("no sp500_index.csv beside sp500_stocks.csv: the index benchmark is skipped")
    if companies := _find(folder, "sp500_companies"):
        frame = _read_csv(companies, {"symbol": "ticker", "sector": "sector"}, numeric=())
        sectors = frame.dropna().assign(ticker=lambda f: f["ticker"].str.upper()).set_index("ticker")["sector"]
        sources.append(str(companies))
    return RawDataset(
        layout="kaggle_sp500_daily",
        prices=prices,
        sources=tuple(sources),
        benchmark=benchmark,
        benchmark_name="sp500_index" if benchmark is not None else None,
        sectors=sectors,
        notes=tuple(notes),
    )


def _read_kaggle_5yr(paths: list[Path]) -> RawDataset:
    columns = {"date": "date", "open": "open", "high": "high", "low": "low", "close": "close", "volume": "volume", "name": "ticker"}
    frames = [_finish(_read_csv(p, columns, numeric=("open", "high", "low", "close", "volume"),
                                categorical=("date", "ticker")), p) for p in paths]
    prices = _concat(frames) if len(frames) > 1 else frames[0]
    prices["adj_close"] = prices["close"]
    return RawDataset(
        layout="kaggle_all_stocks_5yr" if len(paths) == 1 else "kaggle_individual_stocks_5yr",
        prices=prices,
        sources=tuple(str(p) for p in paths),
        adjusted=False,
        notes=(
            "this layout has no adjusted close: adj_close = close (splits and dividends are NOT adjusted; "
            "validation flags the resulting jumps)",
            "no index series in this layout: the index benchmark is skipped",
        ),
    )


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Stack per-file frames, keeping ticker and source categorical (over the union of categories)."""
    combined = pd.concat(frames, ignore_index=True)
    for column in ("ticker", "source"):
        union = pd.Index(sorted(set().union(*(f[column].cat.categories for f in frames))), dtype="str")
        combined[column] = pd.Categorical.from_codes(
            np.concatenate([union.get_indexer(f[column].cat.categories)[f[column].cat.codes.to_numpy()] for f in frames]),
            categories=union)
    return combined


def _read_canonical(path: Path) -> RawDataset:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataLayoutError(f"{path}: cannot read as Parquet: {exc}") from exc
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    if "date" not in frame or "ticker" not in frame or not ({"close", "adj_close"} & set(frame.columns)):
        raise DataLayoutError(f"{path}: canonical Parquet needs date, ticker and close or adj_close; found {list(frame.columns)}. {SUPPORTED_LAYOUTS_LINE}")
    adjusted = "adj_close" in frame
    manifest_path = path.parent / "manifest.json"
    if path.name == "prices.parquet" and manifest_path.is_file():  # our own ingest output knows its origin
        adjusted = bool(json.loads(manifest_path.read_text(encoding="utf-8")).get("adjusted", adjusted))
    prices = canonical_rows(frame, path)
    benchmark = None
    sources = [str(path)]
    bench_path = path.parent / "benchmark.parquet"
    if bench_path.is_file():
        bench = pd.read_parquet(bench_path)
        if not {"date", "value"} <= set(bench.columns):
            raise DataLayoutError(f"{bench_path}: expected columns date,value; found {list(bench.columns)}")
        bench["date"] = bench["date"].astype(str)
        benchmark = bench.assign(date=_parse_dates(bench, bench_path)).set_index("date")["value"].astype(float)
        sources.append(str(bench_path))
    return RawDataset(layout="canonical_parquet", prices=prices, sources=tuple(sources), benchmark=benchmark,
                      benchmark_name="benchmark" if benchmark is not None else None, adjusted=adjusted)


def canonical_rows(frame: pd.DataFrame, source: Path) -> pd.DataFrame:
    """Long rows already named like the canonical layout (any case) -> canonical columns plus lineage.

    Needs date, ticker and close or adj_close; a missing adj_close is the close (and vice versa), other
    missing columns are NaN. Dates must be ISO (2018-02-07); `source` names the rows in errors.
    """
    frame = frame.copy()
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in ("date", "ticker") if c not in frame]
    if missing or not ({"close", "adj_close"} & set(frame.columns)):
        missing += [] if {"close", "adj_close"} & set(frame.columns) else ["close (or adj_close)"]
        raise DataLayoutError(f"{source}: missing column(s) {missing}; found {list(frame.columns)}")
    if "adj_close" not in frame:
        frame["adj_close"] = frame["close"]
    if "close" not in frame:
        frame["close"] = frame["adj_close"]
    if pd.api.types.is_datetime64_any_dtype(frame["date"]):
        frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
    frame["date"] = frame["date"].astype(str)
    return _finish(frame, source)


def read_embedded() -> RawDataset:
    """The embedded default: 20 S&P 500 stocks' adjusted closes 1990-2022 and the S&P 500 index.

    Real market data shipped with the package (taken from skfolio's datasets, BSD-3-Clause; see
    data/embedded/LICENSE-skfolio). Adjusted closes only: features needing volume or high/low are
    skipped and reported.
    """
    base = resources.files("portfolio_mlops.data") / "embedded"
    with resources.as_file(base / "sp500_dataset.csv.gz") as stocks_path:
        wide = pd.read_csv(stocks_path, parse_dates=["Date"]).set_index("Date")
        source = stocks_path
    with resources.as_file(base / "sp500_index.csv.gz") as index_path:
        index = pd.read_csv(index_path, parse_dates=["Date"]).set_index("Date")["SP500"]
    long = wide.rename_axis(index="date", columns="ticker").stack().rename("adj_close").reset_index()
    long["close"] = long["adj_close"]
    long["date"] = long["date"].dt.strftime("%Y-%m-%d")
    prices = _finish(long, Path(source))
    index.index = index.index.astype("datetime64[ns]")
    return RawDataset(
        layout="embedded_sp500_20",
        prices=prices,
        sources=("portfolio_mlops/data/embedded/sp500_dataset.csv.gz", "portfolio_mlops/data/embedded/sp500_index.csv.gz"),
        benchmark=index.rename("value"),
        benchmark_name="sp500_index",
        notes=("embedded default: 20 large S&P 500 stocks, adjusted closes only (no open/high/low/volume)",),
    )
