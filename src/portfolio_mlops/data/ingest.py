"""Ingest: read any supported layout, validate it, write the canonical panel atomically.

Outputs in `out_dir` (each written atomically; `manifest.json` last, so its presence means the
rest is complete):
    prices.parquet     canonical long prices (date, ticker, open, high, low, close, adj_close, volume)
    benchmark.parquet  index level per day (date, value), when the layout has one
    quality.json       the data-quality report
    manifest.json      rows, tickers, date range, content digest, sources, available columns
Re-running on the same input rewrites byte-identical content (no timestamps in the outputs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from portfolio_mlops import __version__, atomic
from portfolio_mlops.config import ValidationConfig
from portfolio_mlops.data.layouts import read_dataset
from portfolio_mlops.data.tickers import with_categorical_tickers
from portfolio_mlops.data.validation import QualityReport, validate_prices


@dataclass(frozen=True)
class Panel:
    """A validated panel in memory: what every later step consumes."""

    prices: pd.DataFrame
    benchmark: pd.Series | None
    manifest: dict[str, Any]


def content_digest(prices: pd.DataFrame, benchmark: pd.Series | None) -> str:
    """sha256 over the canonical values (not the file bytes, which depend on the Parquet writer)."""
    digest = hashlib.sha256()
    # Hashing a categorical ticker column gives the same values as hashing the strings, without
    # factorising 1.9M strings first.
    digest.update(pd.util.hash_pandas_object(with_categorical_tickers(prices), index=False).to_numpy().tobytes())
    if benchmark is not None:
        digest.update(pd.util.hash_pandas_object(benchmark, index=True).to_numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def build_panel(source: str | Path | None, cfg: ValidationConfig) -> tuple[Panel, QualityReport]:
    """Read and validate `source` (None = embedded default) without writing anything."""
    raw = read_dataset(source)
    prices, benchmark, report = validate_prices(raw, cfg)
    manifest = {
        "layout": raw.layout,
        "sources": list(raw.sources),
        "rows": int(len(prices)),
        "tickers": report.tickers_out,  # the clean panel's distinct tickers
        "start": report.start,
        "end": report.end,
        "trading_days": int(prices["date"].nunique()),
        "adjusted": raw.adjusted,
        "columns_available": [c for c in prices.columns if prices[c].notna().any()],
        "benchmark": None if benchmark is None else {
            "name": raw.benchmark_name, "rows": int(len(benchmark)),
            "note": "price index: excludes dividends, while adjusted closes include them",
        },
        "content_digest": content_digest(prices, benchmark),
        "dropped_tickers": len(report.dropped_tickers),
        "package_version": __version__,
    }
    return Panel(prices=prices, benchmark=benchmark, manifest=manifest), report


def write_panel(panel: Panel, report: QualityReport, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The manifest marks a complete, consistent folder: withdraw it before touching anything else.
    (out / "manifest.json").unlink(missing_ok=True)
    atomic.write_parquet(out / "prices.parquet", panel.prices, split_floats=True)
    bench_path = out / "benchmark.parquet"
    if panel.benchmark is not None:
        atomic.write_parquet(bench_path, panel.benchmark.rename_axis("date").reset_index())
    elif bench_path.exists():
        bench_path.unlink()  # a stale benchmark from an earlier input must not survive
    atomic.write_json(out / "quality.json", report.to_dict())
    atomic.write_json(out / "manifest.json", panel.manifest)
    return out


def ingest(source: str | Path | None, out_dir: str | Path, cfg: ValidationConfig) -> tuple[Panel, QualityReport]:
    """Read, validate and write; returns what was written."""
    panel, report = build_panel(source, cfg)
    write_panel(panel, report, out_dir)
    return panel, report


def load_panel(ingest_dir: str | Path) -> Panel:
    """Read an ingest output folder back (the manifest must exist: it marks a complete ingest)."""
    folder = Path(ingest_dir)
    manifest = atomic.read_marker(folder / "manifest.json", f"run `portfolio-mlops ingest --output {folder}` first")
    prices = pd.read_parquet(folder / "prices.parquet")
    bench_path = folder / "benchmark.parquet"
    benchmark = None
    if bench_path.is_file():
        benchmark = pd.read_parquet(bench_path).set_index("date")["value"]
    return Panel(prices=prices, benchmark=benchmark, manifest=manifest)
