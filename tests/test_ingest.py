"""Ingest writes a complete, reproducible canonical panel, atomically; load_panel reads it back."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from portfolio_mlops import atomic
from portfolio_mlops.config import ValidationConfig
from portfolio_mlops.data.ingest import content_digest, ingest, load_panel
from portfolio_mlops.errors import DataLayoutError, DataValidationError

CFG = ValidationConfig(min_history_days=2)
DAYS = ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"]


def stock_lines(bump: float = 0.0) -> list[str]:
    return [f"{d},{t},{p + i + bump},{p + i},{p + i + 1},{p + i - 1},{p + i},1000"
            for t, p in (("AAA", 10.0), ("BBB", 20.0)) for i, d in enumerate(DAYS)]


def index_lines(level: float = 3000.0) -> list[str]:
    return [f"{d},{level + i}" for i, d in enumerate(DAYS)]


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- what ingest writes ---------------------------------------------------------------------------------

def test_ingest_writes_prices_benchmark_quality_and_manifest(write_daily, tmp_path):
    out = tmp_path / "out"

    ingest(write_daily(stock_lines(), index=index_lines()), out, CFG)

    assert sorted(p.name for p in out.iterdir()) == ["benchmark.parquet", "manifest.json", "prices.parquet", "quality.json"]
    assert pd.read_parquet(out / "benchmark.parquet").columns.tolist() == ["date", "value"]
    assert json.loads((out / "quality.json").read_text())["rows_out"] == 8


def test_ingest_without_a_benchmark_writes_no_benchmark_file(write_daily, tmp_path):
    out = tmp_path / "out"

    ingest(write_daily(stock_lines()), out, CFG)

    assert not (out / "benchmark.parquet").exists()
    assert json.loads((out / "manifest.json").read_text())["benchmark"] is None


def test_manifest_records_rows_tickers_date_range_and_content_digest(write_daily, tmp_path):
    out = tmp_path / "out"

    panel, _ = ingest(write_daily(stock_lines(), index=index_lines()), out, CFG)

    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["rows"], manifest["tickers"], manifest["start"], manifest["end"]) == (8, 2, DAYS[0], DAYS[-1])
    assert manifest["layout"] == "kaggle_sp500_daily"
    assert manifest["benchmark"]["rows"] == 4
    assert manifest["content_digest"] == content_digest(panel.prices, panel.benchmark)
    assert manifest["content_digest"].startswith("sha256:") and len(manifest["content_digest"]) == 7 + 64


def test_written_prices_are_the_validated_canonical_table(write_daily, tmp_path):
    out = tmp_path / "out"

    panel, _ = ingest(write_daily([*stock_lines(), "2020-01-08,AAA,,,,,,"]), out, CFG)

    written = pd.read_parquet(out / "prices.parquet")
    assert written.columns.tolist() == ["date", "ticker", "open", "high", "low", "close", "adj_close", "volume"]
    assert len(written) == 8  # the empty row was dropped, not written
    pd.testing.assert_frame_equal(written, panel.prices)


def test_written_prices_split_their_float_columns_and_read_back_as_pandas_own_parquet(write_daily, tmp_path):
    # the prices file is written with byte-stream-split floats (faster to write and read, smaller);
    # any Parquet reader must get the same table as from pandas' default file of the same frame
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    panel, _ = ingest(write_daily(stock_lines(), index=index_lines()), out, CFG)
    panel.prices.to_parquet(tmp_path / "default.parquet", index=False)

    written = pq.ParquetFile(out / "prices.parquet")
    encodings = {written.schema_arrow.names[i]: written.metadata.row_group(0).column(i).encodings
                 for i in range(written.metadata.num_columns)}
    assert all("BYTE_STREAM_SPLIT" in encodings[c] for c in ["open", "high", "low", "close", "adj_close", "volume"])
    assert written.schema_arrow.equals(pq.read_schema(tmp_path / "default.parquet"), check_metadata=True)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "prices.parquet"), pd.read_parquet(tmp_path / "default.parquet"))


# --- reproducibility ------------------------------------------------------------------------------------

def test_reingesting_the_same_input_rewrites_a_byte_identical_manifest_and_report(write_daily, tmp_path):
    source = write_daily(stock_lines(), index=index_lines())
    out = tmp_path / "out"
    ingest(source, out, CFG)
    first = snapshot(out)

    ingest(source, out, CFG)

    second = snapshot(out)
    assert second["manifest.json"] == first["manifest.json"]
    assert second["quality.json"] == first["quality.json"]


def test_same_input_gives_the_same_digest_in_another_output_folder(write_daily, tmp_path):
    source = write_daily(stock_lines(), index=index_lines())

    one, _ = ingest(source, tmp_path / "one", CFG)
    two, _ = ingest(source, tmp_path / "two", CFG)

    assert one.manifest["content_digest"] == two.manifest["content_digest"]


def test_changing_one_price_changes_the_digest(write_daily, tmp_path):
    base, _ = ingest(write_daily(stock_lines(), folder="a"), tmp_path / "a_out", CFG)
    lines = stock_lines()
    assert lines[3] == "2020-01-07,AAA,13.0,13.0,14.0,12.0,13.0,1000"
    lines[3] = "2020-01-07,AAA,13.01,13.0,14.0,12.0,13.0,1000"

    changed, _ = ingest(write_daily(lines, folder="b"), tmp_path / "b_out", CFG)

    assert changed.manifest["content_digest"] != base.manifest["content_digest"]


def test_changing_only_the_benchmark_changes_the_digest(write_daily, tmp_path):
    base, _ = ingest(write_daily(stock_lines(), index=index_lines(3000), folder="a"), tmp_path / "a_out", CFG)
    other, _ = ingest(write_daily(stock_lines(), index=index_lines(3001), folder="b"), tmp_path / "b_out", CFG)

    assert other.manifest["content_digest"] != base.manifest["content_digest"]


def test_ingesting_an_ingest_output_reproduces_its_digest(write_daily, tmp_path):
    first, _ = ingest(write_daily(stock_lines(), index=index_lines()), tmp_path / "first", CFG)

    again, _ = ingest(tmp_path / "first", tmp_path / "again", CFG)

    assert again.manifest["layout"] == "canonical_parquet"
    assert again.manifest["content_digest"] == first.manifest["content_digest"]


# --- atomicity ------------------------------------------------------------------------------------------

def test_stale_benchmark_from_an_earlier_ingest_is_removed(write_daily, write_5yr, tmp_path):
    out = tmp_path / "out"
    ingest(write_daily(stock_lines(), index=index_lines()), out, CFG)
    five_yr = write_5yr([f"{d},10,11,9,{10 + i},1000,AAL" for i, d in enumerate(DAYS)])

    ingest(five_yr, out, CFG)

    assert not (out / "benchmark.parquet").exists()
    assert load_panel(out).benchmark is None


def test_failed_ingest_leaves_an_existing_output_folder_untouched(write_daily, tmp_path):
    out = tmp_path / "out"
    ingest(write_daily(stock_lines(), index=index_lines(), folder="good"), out, CFG)
    before = snapshot(out)
    bad = write_daily([*stock_lines(), "2020-01-08,AAA,abc,1,1,1,1,1"], folder="bad")

    with pytest.raises(DataValidationError):
        ingest(bad, out, CFG)

    assert snapshot(out) == before


def test_failed_ingest_into_a_new_folder_creates_nothing(write_daily, tmp_path):
    bad = write_daily(["2020-01-02,AAA,10,10,10,10,10,1", "2020-01-03,AAA,abc,10,10,10,10,1"])

    with pytest.raises(DataValidationError):
        ingest(bad, tmp_path / "out", CFG)

    assert not (tmp_path / "out").exists()


def test_interrupted_reingest_never_leaves_a_manifest_describing_other_prices(write_daily, tmp_path, monkeypatch):
    out = tmp_path / "out"
    ingest(write_daily(stock_lines(), folder="old"), out, CFG)
    real_write_json = atomic.write_json

    def disk_full_on_quality(target, payload):
        if os.path.basename(target) == "quality.json":
            raise OSError(28, "No space left on device")
        real_write_json(target, payload)

    monkeypatch.setattr(atomic, "write_json", disk_full_on_quality)
    with pytest.raises(OSError):
        ingest(write_daily(stock_lines(bump=0.5), folder="new"), out, CFG)

    try:
        panel = load_panel(out)
    except DataLayoutError:
        return  # refusing an incomplete folder is fine
    assert content_digest(panel.prices, panel.benchmark) == panel.manifest["content_digest"]


def test_write_json_leaves_only_the_target_behind(tmp_path):
    atomic.write_json(tmp_path / "a.json", {"x": 1, "when": pd.Timestamp("2020-01-02")})

    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1, "when": "2020-01-02T00:00:00"}


def test_write_json_keeps_the_old_target_when_the_payload_cannot_be_written(tmp_path):
    target = tmp_path / "a.json"
    target.write_text('{"old": true}\n')

    with pytest.raises(TypeError):
        atomic.write_json(target, {"new": object()})

    assert target.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_path_keeps_the_old_target_and_no_temp_file_when_the_writer_raises(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")

    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half of the new conte")
            raise RuntimeError("writer died")

    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


# --- load_panel -----------------------------------------------------------------------------------------

def test_load_panel_round_trips_prices_benchmark_and_manifest(write_daily, tmp_path):
    out = tmp_path / "out"
    panel, _ = ingest(write_daily(stock_lines(), index=index_lines()), out, CFG)

    loaded = load_panel(out)

    pd.testing.assert_frame_equal(loaded.prices, panel.prices)
    pd.testing.assert_series_equal(loaded.benchmark, panel.benchmark)
    assert loaded.manifest == panel.manifest


def test_loaded_panel_matches_the_digest_in_its_manifest(write_daily, tmp_path):
    out = tmp_path / "out"
    ingest(write_daily(stock_lines(), index=index_lines()), out, CFG)

    loaded = load_panel(out)

    assert content_digest(loaded.prices, loaded.benchmark) == loaded.manifest["content_digest"]


def test_load_panel_on_a_folder_without_manifest_is_a_layout_error(write_daily, tmp_path):
    out = tmp_path / "out"
    ingest(write_daily(stock_lines()), out, CFG)
    (out / "manifest.json").unlink()

    with pytest.raises(DataLayoutError, match="no manifest.json; run `portfolio-mlops ingest"):
        load_panel(out)
