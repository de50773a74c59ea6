"""The real Kaggle all_stocks_5yr file (../shared/data, beside the repository): skipped when absent.

Pins what ingest finds in it, and that the chain's numbers on real data stay in the range a real
daily-price signal reaches: anything far above is a leak, not a discovery.
"""

from pathlib import Path

import pytest

from portfolio_mlops.config import load_config
from portfolio_mlops.data.ingest import build_panel
from portfolio_mlops.runner import run_chain

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "all_stocks_5yr.csv.gz"
pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not REAL.is_file(), reason=f"{REAL} not present (it lives beside the repository)"),
]


def test_ingest_reads_every_row_back_adjusts_the_split_and_flags_the_other_corporate_actions():
    panel, report = build_panel(REAL, load_config().validation)
    checks = {c.name: c for c in report.checks}
    assert report.rows_in == 619_040 and report.tickers_in == 505
    assert panel.manifest["start"] == "2013-02-08" and panel.manifest["end"] == "2018-02-07"
    assert checks["extreme_moves"].count >= 5  # DISCK, EBAY, LNT, NI ... unadjusted corporate actions
    assert any("DISCK" in e for e in checks["extreme_moves"].examples)
    # Discovery's class C share dividend (a 2:1 in effect, volume stepping up ~1.4x) is back-adjusted,
    # so DISCA stays; the same-size earnings crashes (AMD, BIIB, CHK: 4-11x volume spikes) are not splits
    events = {(e["ticker"], e["date"], e["ratio"]) for e in report.splits_adjusted}
    assert ("DISCA", "2014-08-07", "2:1") in events
    assert not {t for t, _, _ in events} & {"AMD", "BIIB", "CHK", "EBAY", "NI"}
    assert "DISCA" not in report.dropped_tickers and "DISCK" in report.dropped_tickers
    assert panel.manifest["adjusted"] is False and panel.manifest["benchmark"] is None


def test_chain_on_real_data_stays_within_realistic_magnitudes(tmp_path):
    cfg = load_config(None, {"data": str(REAL), "portfolio.top_n": 50, "walk_forward.min_train_days": 252,
                             "benchmarks.random_seeds": 5, "tracking.enabled": False}).with_algorithms(["ridge", "lasso"])
    summary = run_chain(cfg, tmp_path).summary
    assert "index" not in summary["benchmarks"]  # this layout has no index series
    for name, algorithm in summary["algorithms"].items():
        signal = algorithm["signal"]
        assert abs(signal["ic_mean"]) < 0.1, name
        assert signal["oos_r2"] < 0.05, name
        assert abs(algorithm["excess"]["equal_weight"]["information_ratio"]) < 1.5, name
        assert algorithm["portfolio"]["net"]["cagr"] < algorithm["portfolio"]["gross"]["cagr"], name
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "equity_curves.png").is_file()
