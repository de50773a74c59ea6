"""The `portfolio-mlops` command line: help, exit status and messages, config, and the run/step-wise chain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from portfolio_mlops import metrics
from portfolio_mlops.cli import main
from portfolio_mlops.config import RunConfig, load_config
from portfolio_mlops.data.ingest import build_panel
from portfolio_mlops.progress import Progress

DAILY_HEADER = "Date,Symbol,Adj Close,Close,High,Low,Open,Volume"
SMALL_RUN_CONFIG = "walk_forward:\n  min_train_days: 150\nbenchmarks:\n  random_seeds: 3\n"


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> tuple[Path, Path]:
    """A Kaggle-daily folder (20 tickers x 900 business days of random walks, plus the index) and a config.

    20 tickers: the default top 10 must hold at most half of the universe (sanity.check_panel)."""
    root = tmp_path_factory.mktemp("market")
    rng = np.random.default_rng(7)
    days = pd.bdate_range("2015-01-01", periods=900)
    frames = []
    for i in range(20):
        close = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, len(days))))
        frames.append(pd.DataFrame({
            "Date": days.strftime("%Y-%m-%d"), "Symbol": f"T{i:02d}", "Adj Close": close, "Close": close,
            "High": close * (1 + rng.uniform(0, 0.01, len(days))), "Low": close * (1 - rng.uniform(0, 0.01, len(days))),
            "Open": close * (1 + rng.normal(0, 0.003, len(days))), "Volume": rng.integers(100_000, 1_000_000, len(days)),
        }))
    data = root / "kaggle"
    data.mkdir()
    pd.concat(frames).to_csv(data / "sp500_stocks.csv", index=False)
    index = 2000 * np.exp(np.cumsum(rng.normal(0.0002, 0.01, len(days))))
    pd.DataFrame({"Date": days.strftime("%Y-%m-%d"), "S&P500": index}).to_csv(data / "sp500_index.csv", index=False)
    config = root / "small.yaml"
    config.write_text(SMALL_RUN_CONFIG)
    return data, config


@pytest.fixture(scope="module")
def run_output(market, tmp_path_factory) -> Path:
    data, config = market
    out = tmp_path_factory.mktemp("run") / "report"
    code = main(["run", "--engine", "inprocess", "--algorithms", "ridge", "--data", str(data), "--config", str(config),
                 "--output", str(out), "--quiet"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def run_summary(run_output) -> dict:
    return json.loads((run_output / "summary.json").read_text())


@pytest.fixture(scope="module")
def stepwise_summary(market, tmp_path_factory) -> dict:
    data, config = market
    work = tmp_path_factory.mktemp("steps")
    common = ["--config", str(config), "--quiet"]
    steps = [
        ["ingest", "--data", str(data), "--output", str(work / "data"), *common],
        ["features", "--input", str(work / "data"), "--output", str(work / "features"), *common],
        ["train", "--features", str(work / "features"), "--output", str(work / "train"), "--algorithms", "ridge", *common],
        ["backtest", "--input", str(work / "data"), "--features", str(work / "features"), "--training",
         str(work / "train"), "--output", str(work / "report"), "--algorithms", "ridge", *common],
    ]
    for argv in steps:
        assert main(argv) == 0, argv[0]
    return json.loads((work / "report" / "summary.json").read_text())


def _flat(text: str) -> str:
    return " ".join(text.split())  # argparse wraps to the terminal width


# --- help -----------------------------------------------------------------------------------------------

def test_installed_script_help_lists_every_command_and_the_exit_status():
    script = Path(sys.executable).with_name("portfolio-mlops")

    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: portfolio-mlops")
    for command in ("run", "ingest", "features", "train", "backtest", "config"):
        assert f"\n    {command} " in done.stdout
    assert "exit status: 0 on success, 2 on bad input or configuration" in _flat(done.stdout)


def test_top_level_help_in_process_exits_0_and_explains_the_default_data(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])

    assert exit_info.value.code == 0
    assert "With no --data, the embedded default" in _flat(capsys.readouterr().out)


@pytest.mark.parametrize("command, purpose", [
    ("run", "Run the whole chain and write the report"),
    ("ingest", "Detect the layout, validate, and write prices.parquet"),
    ("features", "point-in-time features and labels"),
    ("train", "walk-forward training and out-of-sample predictions"),
    ("backtest", "portfolios, benchmarks, metrics"),
    ("config", "print the effective configuration as YAML"),
])
def test_subcommand_help_exits_0_and_says_what_the_command_does(capsys, command, purpose):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])

    out = _flat(capsys.readouterr().out)
    assert exit_info.value.code == 0
    assert out.startswith(f"usage: portfolio-mlops {command}")
    assert purpose.lower() in out.lower()


def test_progress_writes_to_the_stderr_current_when_it_is_created(capsys):
    Progress().message("features: 10 skipped")

    assert "features: 10 skipped" in capsys.readouterr().err


# --- errors: exit status 2 and a message naming the file, no traceback ----------------------------------

def test_ingest_of_a_bad_file_exits_2_with_one_line_naming_file_row_and_field(tmp_path, capsys):
    bad = tmp_path / "sp500_stocks.csv"
    bad.write_text(f"{DAILY_HEADER}\n2020-01-02,AAA,10,10,10,10,10,100\n2020-01-03,AAA,abc,10,10,10,10,100\n")

    code = main(["ingest", "--data", str(bad), "--output", str(tmp_path / "out"), "--quiet"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        f"portfolio-mlops ingest: error: {bad}: data row 2, field 'Adj Close': expected a number, got 'abc'"]
    assert not (tmp_path / "out").exists()


def test_ingest_of_a_missing_path_exits_2_and_the_first_line_names_it(tmp_path, capsys):
    missing = tmp_path / "no_such_folder"

    code = main(["ingest", "--data", str(missing), "--output", str(tmp_path / "out")])

    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines()[0] == f"portfolio-mlops ingest: error: {missing}: no such file or folder."
    assert "Traceback" not in err


def test_ingest_of_a_csv_in_no_known_layout_exits_2_and_lists_the_layouts(tmp_path, capsys):
    bad = tmp_path / "prices.csv"
    bad.write_text("day,ticker,price\n2020-01-02,AAA,10\n")

    code = main(["ingest", "--data", str(bad), "--output", str(tmp_path / "out")])

    err = capsys.readouterr().err
    assert code == 2
    assert str(bad) in err.splitlines()[0]
    assert "Supported layouts" in err


def test_ingest_of_a_file_with_a_ragged_row_deep_inside_exits_2(tmp_path, capsys):
    days = pd.bdate_range("1990-01-01", periods=3000)
    bad = tmp_path / "sp500_stocks.csv"
    bad.write_text("\n".join([DAILY_HEADER, *(f"{d:%Y-%m-%d},AAA,10,10,10,10,10,100" for d in days),
                              "2030-01-02,AAA,10,10,10,10,10,100,999"]) + "\n")

    code = main(["ingest", "--data", str(bad), "--output", str(tmp_path / "out"), "--quiet"])

    assert code == 2
    assert str(bad) in capsys.readouterr().err


def test_invalid_config_value_exits_2_naming_the_file_and_the_option(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("walk_forward:\n  min_train_days: 5\n")

    code = main(["config", "--config", str(config)])

    err = capsys.readouterr().err
    assert code == 2
    assert str(config) in err and "walk_forward.min_train_days" in err
    assert "Traceback" not in err


def test_unknown_config_key_exits_2(tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text("portfolio:\n  topn: 5\n")

    assert main(["config", "--config", str(config)]) == 2
    assert "portfolio.topn" in capsys.readouterr().err


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["config", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_unknown_algorithm_exits_2_and_lists_the_known_ones(tmp_path, capsys):
    code = main(["run", "--algorithms", "ridge,xgb", "--output", str(tmp_path / "out"), "--quiet"])

    err = capsys.readouterr().err
    assert code == 2
    assert "unknown algorithm(s) ['xgb']" in err and "ridge" in err
    assert not (tmp_path / "out").exists()


def test_missing_required_option_is_a_usage_error_with_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest"])

    assert exit_info.value.code == 2
    assert "--output" in capsys.readouterr().err


# --- config ---------------------------------------------------------------------------------------------

def test_config_prints_yaml_that_load_config_reads_back_to_the_defaults(tmp_path, capsys):
    assert main(["config"]) == 0
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)

    assert load_config(printed) == RunConfig()


def test_weekly_preset_sets_a_five_day_label_and_weekly_rebalance_and_explicit_flags_win(capsys):
    from portfolio_mlops.cli import build_parser, config_from_args

    assert main(["config", "--preset", "weekly"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["labels"]["horizon_days"] == 5
    assert printed["walk_forward"]["rebalance_every_days"] == 5
    assert printed["walk_forward"]["retrain_every_rebalances"] == 12
    assert printed["portfolio"] == RunConfig().portfolio.model_dump(mode="json")  # costs are not hidden by it

    args = build_parser().parse_args(["train", "--features", "f", "--output", "o", "--preset", "weekly", "--horizon", "10"])
    cfg = config_from_args(args)
    assert (cfg.labels.horizon_days, cfg.walk_forward.rebalance_every_days) == (10, 5)


def test_each_settings_flag_sets_the_config_field_the_options_table_names():
    from portfolio_mlops.cli import build_parser, config_from_args
    from portfolio_mlops.options import OPTIONS

    given = {int: "30", float: "12.5", str: "/data/prices.csv"}
    flags = [option for option in OPTIONS if option.flag is not None]
    assert {o.flag for o in flags} >= {"--data", "--horizon", "--top-n", "--cost-bps", "--no-tracking"}
    for option in flags:
        words = [option.flag] if option.switch is not None else [option.flag, given[option.type]]
        cfg = config_from_args(build_parser().parse_args(["run", *words]))
        value = cfg
        for part in option.path.split("."):
            value = getattr(value, part)
        assert value == (option.switch if option.switch is not None else option.type(given[option.type])), option.flag
        default = RunConfig()
        for part in option.path.split("."):
            default = getattr(default, part)
        assert value != default, f"{option.flag} must change {option.path}"


def test_config_prints_the_effective_configuration_of_a_given_file(market, tmp_path, capsys):
    _, small = market

    assert main(["config", "--config", str(small)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)

    assert printed["walk_forward"]["min_train_days"] == 150
    assert printed["benchmarks"]["random_seeds"] == 3
    assert printed["portfolio"]["top_n"] == 10  # defaults are filled in
    assert RunConfig.model_validate(printed) == load_config(small)


# --- run and the step-wise chain ------------------------------------------------------------------------

def test_run_writes_the_report_files_and_its_ingest_folder(run_output):
    for name in ("summary.json", "equity_curves.png", "drawdowns.png", "rolling_ic.png", "predictions_ridge.parquet",
                 "holdings_ridge.csv", "data/manifest.json", "data/prices.parquet", "data/benchmark.parquet"):
        assert (run_output / name).is_file(), name


def test_run_summary_has_signal_portfolio_and_excess_metrics_per_algorithm(run_summary):
    ridge = run_summary["algorithms"]["ridge"]

    assert {"ic_mean", "ic_tstat", "icir", "hit_rate", "oos_r2"} <= set(ridge["signal"])
    assert {"cagr", "ann_vol", "sharpe", "sortino", "max_drawdown", "calmar", "turnover"} <= set(ridge["portfolio"]["net"])
    assert {"ann_return", "information_ratio"} <= set(ridge["excess"]["equal_weight"])
    assert list(run_summary["algorithms"]) == ["ridge"]


def test_run_summary_has_benchmarks_data_digest_and_config(run_summary, market):
    data, config = market

    assert {"cagr", "sharpe", "max_drawdown"} <= set(run_summary["benchmarks"]["equal_weight"])
    assert run_summary["benchmarks"]["random_top_n"]["seeds"] == 3
    assert "index" in run_summary["benchmarks"]
    panel, _ = build_panel(data, load_config(config).validation)
    assert run_summary["data"]["content_digest"] == panel.manifest["content_digest"]
    assert run_summary["config"]["walk_forward"]["min_train_days"] == 150
    assert [m["algorithm"] for m in run_summary["config"]["models"]] == ["ridge"]


def test_random_benchmark_is_one_seed_everywhere_summary_daily_returns_and_excess(run_summary, run_output):
    random = run_summary["benchmarks"]["random_top_n"]
    daily = pd.read_csv(run_output / "daily_returns_net.csv")

    # the daily series written (and plotted) is the reported portfolio: same Sharpe, same CAGR (to the
    # CSV's printed precision)
    assert metrics.sharpe_ratio(daily["random_top_n"].to_numpy()) == pytest.approx(random["sharpe"], rel=1e-6)
    assert metrics.cagr(daily["random_top_n"].to_numpy()) == pytest.approx(random["cagr"], rel=1e-6)
    # ... it is the median seed of the distribution (3 seeds: the middle one exactly)
    spread = random["distribution"]["sharpe"]
    assert random["sharpe"] == pytest.approx(spread["p50"], rel=1e-12)
    assert spread["p05"] <= spread["p50"] <= spread["p95"]
    assert f"seed {random['median_seed']} of 3" in random["note"]
    # ... and every excess vs random is measured against it
    excess = run_summary["algorithms"]["ridge"]["excess"]["random_top_n"]
    active = daily["ridge"].to_numpy() - daily["random_top_n"].to_numpy()
    assert excess["ann_return"] == pytest.approx(active.mean() * 252, rel=1e-6)
    assert run_summary["evaluation"]["risk_free"]["label"] == "rf = 0"


def test_run_metrics_are_fractions_not_percentages(run_summary):
    ridge = run_summary["algorithms"]["ridge"]
    net, signal, excess = ridge["portfolio"]["net"], ridge["signal"], ridge["excess"]["equal_weight"]

    assert abs(net["cagr"]) < 5 and 0 < net["ann_vol"] < 5
    assert -1 <= net["max_drawdown"] <= 0
    assert 0 <= net["turnover"] < 5
    assert -1 <= signal["ic_mean"] <= 1 and 0 <= signal["hit_rate"] <= 1 and signal["oos_r2"] < 1
    assert abs(excess["ann_return"]) < 5
    assert abs(run_summary["benchmarks"]["equal_weight"]["cagr"]) < 5


def test_stepwise_commands_reproduce_the_run_numbers(run_summary, stepwise_summary):
    run, steps = run_summary["algorithms"]["ridge"], stepwise_summary["algorithms"]["ridge"]

    assert steps["signal"]["ic_mean"] == pytest.approx(run["signal"]["ic_mean"], abs=1e-12)
    assert steps["portfolio"]["net"]["cagr"] == pytest.approx(run["portfolio"]["net"]["cagr"], abs=1e-12)
    assert stepwise_summary["data"]["content_digest"] == run_summary["data"]["content_digest"]


def test_stepwise_backtest_reports_the_same_benchmarks_as_run(run_summary, stepwise_summary):
    for name in ("equal_weight", "random_top_n", "index"):
        assert stepwise_summary["benchmarks"][name]["cagr"] == pytest.approx(
            run_summary["benchmarks"][name]["cagr"], abs=1e-12), name


def test_an_inprocess_run_reads_and_validates_the_data_once(market, tmp_path, monkeypatch):
    """The preflight reads and validates the data before any work; the chain goes on from that panel."""
    from portfolio_mlops import runner
    from portfolio_mlops.data import ingest

    calls = []
    real = ingest.build_panel

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "build_panel", counting)
    monkeypatch.setattr(runner, "build_panel", counting)
    data, config = market
    code = main(["run", "--engine", "inprocess", "--algorithms", "ridge", "--data", str(data), "--config", str(config),
                 "--output", str(tmp_path / "report"), "--quiet", "--no-tracking"])
    assert code == 0
    assert len(calls) == 1
