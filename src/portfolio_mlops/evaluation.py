"""Evaluate walk-forward predictions: portfolios, benchmarks from the same run, and every metric.

Every strategy (each model, each benchmark) uses the same decision dates, the same universe (the
names with all features known at the decision date), the same execution lag and the same costs, so
the comparisons are like for like. The index benchmark is a price index (no dividends) while
adjusted closes include dividends: that flatters every stock strategy against it by roughly the
dividend yield, which is why the equal-weight universe is the primary yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from portfolio_mlops import metrics
from portfolio_mlops.backtest import BacktestResult, equal_weight_book, index_returns, random_book, simulate, top_n_book
from portfolio_mlops.config import RunConfig
from portfolio_mlops.errors import ConfigError
from portfolio_mlops.features import FeatureSet, Grid
from portfolio_mlops.walk_forward import WalkForwardResult

PRIMARY_BENCHMARK = "equal_weight"


@dataclass
class Evaluation:
    summary: dict[str, Any]
    backtests: dict[str, BacktestResult]  # algorithms and benchmarks (random: the median seed by net Sharpe)
    net_returns: dict[str, np.ndarray]
    ic_by_date: dict[str, pd.Series] = field(default_factory=dict)
    holdings: dict[str, pd.DataFrame] = field(default_factory=dict)


def _portfolio_block(result: BacktestResult, bps: float, rf: float | np.ndarray = 0.0) -> dict[str, Any]:
    gross = metrics.portfolio_metrics(result.gross, rf)
    net = metrics.portfolio_metrics(result.net(bps), rf)
    net["turnover"] = result.one_way_turnover
    net["cost_drag"] = gross["cagr"] - net["cagr"]
    gross["turnover"] = result.one_way_turnover
    return {"gross": gross, "net": net}


def evaluate(features: FeatureSet, grid: Grid, results: dict[str, WalkForwardResult], cfg: RunConfig,
             benchmark_series: pd.Series | None, benchmark_name: str | None = None) -> Evaluation:
    first = next(iter(results.values()))
    decision_pos = np.unique(first.predictions["date_pos"].to_numpy())
    frame = features.frame
    universe = frame[frame["date_pos"].isin(decision_pos)]
    daily = grid.daily_returns()
    lag = cfg.labels.execution_lag_days
    every = cfg.walk_forward.rebalance_every_days
    bps = cfg.portfolio.cost_bps_per_side

    def run(name: str, book) -> BacktestResult:
        return simulate(name, book, daily, grid.dates, lag, every)

    backtests: dict[str, BacktestResult] = {}
    benchmarks: dict[str, Any] = {}
    net_returns: dict[str, np.ndarray] = {}

    # the universe's tickers as grid columns, looked up once for the ~22 benchmark books drawn from it
    codes = grid.tickers.get_indexer(universe["ticker"])
    backtests[PRIMARY_BENCHMARK] = run(PRIMARY_BENCHMARK, equal_weight_book(universe, grid.tickers, codes))
    return_days = backtests[PRIMARY_BENCHMARK].dates
    rf, rf_info = _risk_free(cfg, return_days)
    factor_scores = {"momentum_12_1": ("raw_mom_12_1", True), "reversal_21": ("raw_ret_21", False)}
    for factor in cfg.benchmarks.factors:
        column, descending = factor_scores[factor]
        backtests[factor] = run(factor, top_n_book(universe, column, grid.tickers, cfg.portfolio, descending, codes))
    for name, result in backtests.items():
        block = _portfolio_block(result, bps, rf)
        benchmarks[name] = {**block["net"], "gross": block["gross"]}
        net_returns[name] = result.net(bps)

    random_sharpes: list[float] = []
    if cfg.benchmarks.random_seeds:
        seed_values = [cfg.seed * 10_000 + s for s in range(cfg.benchmarks.random_seeds)]
        seeds = [run(f"random_{v}", random_book(universe, grid.tickers, cfg.portfolio, seed=v, ticker_codes=codes))
                 for v in seed_values]
        seed_net = [r.net(bps) for r in seeds]
        per_seed = [metrics.portfolio_metrics(net, rf) for net in seed_net]
        random_sharpes = [m["sharpe"] for m in per_seed]
        # One definition everywhere: the random benchmark IS one top-N portfolio, the median seed (the
        # seed whose net Sharpe is the median; the lower middle for an even count). Its metrics, its
        # daily returns, the plot and every "excess vs random" use that same seed; the spread over
        # seeds is reported beside it. (Averaging the seeds' daily returns would describe a
        # ~seeds x top_n stock portfolio, far more diversified than anything a model holds.)
        order = np.argsort(np.nan_to_num(random_sharpes, nan=-np.inf), kind="stable")
        middle = int(order[(len(seeds) - 1) // 2])
        chosen = _portfolio_block(seeds[middle], bps, rf)

        def spread(key: str) -> dict[str, float]:
            values = [m[key] for m in per_seed]
            return {q: float(np.percentile(values, p)) for q, p in (("p05", 5), ("p50", 50), ("p95", 95))}

        benchmarks["random_top_n"] = {
            **chosen["net"],
            "gross": chosen["gross"],
            "seeds": len(seeds),
            "median_seed": seed_values[middle],
            "distribution": {"sharpe": spread("sharpe"), "cagr": spread("cagr")},
            "sharpe_p05": float(np.percentile(random_sharpes, 5)),
            "sharpe_p95": float(np.percentile(random_sharpes, 95)),
            "cagr_p05": float(np.percentile([m["cagr"] for m in per_seed], 5)),
            "cagr_p95": float(np.percentile([m["cagr"] for m in per_seed], 95)),
            "note": f"one top-N portfolio: the median seed by net Sharpe (seed {seed_values[middle]} of {len(seeds)}); "
                    "its metrics, daily returns, plot and every excess vs random; distribution = p05/p50/p95 over seeds",
        }
        backtests["random_top_n"] = seeds[middle]
        net_returns["random_top_n"] = seed_net[middle]

    if benchmark_series is not None:
        index_daily = index_returns(benchmark_series, return_days)
        benchmarks["index"] = {**metrics.portfolio_metrics(index_daily, rf), "name": benchmark_name or "index",
                               "note": "price index: no dividends and no costs"}
        net_returns["index"] = index_daily

    algorithms: dict[str, Any] = {}
    ic_by_date: dict[str, pd.Series] = {}
    holdings: dict[str, pd.DataFrame] = {}
    # predictions exist on decision dates only: the volatility they are joined with comes from those
    # rows (the universe), not the whole panel, so each join factorises ~1/20 of the keys
    vol = universe[["date_pos", "ticker", "raw_vol_63"]]
    # every algorithm and seed is scored against the same realised labels: ranked once per evaluation
    label_ranks = metrics.LabelRanks()
    for name, result in results.items():
        predictions, book, backtest, signal = _judge(name, result, vol, run, grid, cfg, label_ranks)
        backtests[name] = backtest
        net = backtest.net(bps)
        net_returns[name] = net
        known = predictions[np.isfinite(predictions["label"])]
        ic_by_date[name] = metrics.rank_ic_by_date(known["date"].to_numpy(), known["prediction"].to_numpy(),
                                                   known["label"].to_numpy(), label_ranks)
        holdings[name] = _holdings_table(book, grid, predictions, lag)
        sensitivity = {
            f"{b:g}": {k: v for k, v in metrics.portfolio_metrics(backtest.net(b), rf).items() if k in ("cagr", "sharpe", "ann_return")}
            for b in cfg.portfolio.cost_sensitivity_bps
        }
        net_sharpe = metrics.sharpe_ratio(net, rf)
        algorithms[name] = {
            "signal": signal,
            "portfolio": _portfolio_block(backtest, bps, rf),
            "excess": {bench: metrics.excess_metrics(net, series) for bench, series in net_returns.items()
                       if bench not in results},
            "cost_sensitivity": sensitivity,
            "random_percentile": float(np.mean(np.asarray(random_sharpes) < net_sharpe)) if random_sharpes else None,
            "refits": len(result.refits),
            "configurations_tried": result.configurations_tried,
            "seconds": round(result.seconds, 3),
            "missing_held_returns": backtest.missing_held_returns,
        }
        if result.other_seeds:
            others = {seed: _seed_figures(other, vol, run, grid, cfg, rf, label_ranks)
                      for seed, other in result.other_seeds.items()}
            algorithms[name]["seeds"] = _seed_spread(cfg.seed, _headline(algorithms[name]), others)

    summary = {
        "algorithms": algorithms,
        "benchmarks": benchmarks,
        "evaluation": {
            "decision_dates": int(len(decision_pos)),
            "first_decision": grid.dates[decision_pos[0]].strftime("%Y-%m-%d"),
            "last_decision": grid.dates[decision_pos[-1]].strftime("%Y-%m-%d"),
            "return_days": int(len(return_days)),
            "first_return_day": return_days[0].strftime("%Y-%m-%d"),
            "last_return_day": return_days[-1].strftime("%Y-%m-%d"),
            "universe_mean_size": float(universe.groupby("date_pos").size().mean()),
            "execution": f"decide at close t, trade at close t+{lag}, hold {every} trading days; "
                         f"label = return from close t+{lag} to close t+{lag + cfg.labels.horizon_days}",
            "costs_bps_per_side": bps,
            "configurations_tried": int(sum(r.configurations_tried for r in results.values())),
            "features": list(features.feature_names),
            "features_skipped": features.skipped,
            "primary_benchmark": PRIMARY_BENCHMARK,
            "risk_free": rf_info,
            **_power(algorithms),
            "caveats": [
                "survivorship bias: the universe is a list of today's index members, which flatters every long-only "
                "strategy, benchmarks included; prefer relative comparisons",
                "the index benchmark is a price index without dividends; adjusted closes include dividends",
                f"metrics use 252 trading days a year; Sharpe and Sortino are of the excess over {rf_info['label']}",
            ],
        },
    }
    return Evaluation(summary, backtests, net_returns, ic_by_date, holdings)


SEED_FIGURES = ("rank_ic_mean", "ic_hac_tstat", "ic_mean", "net_sharpe", "net_cagr", "net_max_drawdown")


def _headline(block: dict[str, Any]) -> dict[str, float]:
    """The figures reported as mean +- std over seeds, from one algorithm's summary block."""
    signal, net = block["signal"], block["portfolio"]["net"]
    return {"rank_ic_mean": signal.get("rank_ic_mean"), "ic_hac_tstat": signal.get("ic_hac_tstat"),
            "ic_mean": signal["ic_mean"], "net_sharpe": net["sharpe"], "net_cagr": net["cagr"],
            "net_max_drawdown": net["max_drawdown"]}


def _judge(name: str, result: WalkForwardResult, vol: pd.DataFrame, run, grid: Grid, cfg: RunConfig,
           label_ranks: metrics.LabelRanks | None = None):
    """One model's predictions -> (predictions with volatility, top-N book, backtest, signal metrics)."""
    predictions = result.predictions.merge(vol, on=["date_pos", "ticker"], how="left")
    book = top_n_book(predictions, "prediction", grid.tickers, cfg.portfolio)
    signal = metrics.signal_metrics(predictions, cfg.labels.horizon_days, cfg.walk_forward.rebalance_every_days,
                                    cfg.portfolio.top_n, label_ranks)
    # ic_mean / icir / ic_tstat stay on the rebalance dates (what the portfolio trades on); the
    # daily-sampled figures (rank_*, pearson_*, ic_hac_tstat, ic_dates, effective_dates) add power.
    signal["rebalance_ic_dates"] = signal.pop("ic_dates")
    daily_scores = result.daily if result.daily is not None else predictions.iloc[:0]
    # only the columns the IC reads: filtering every out-of-sample row then leaves the tickers alone
    signal.update(metrics.daily_signal_metrics(daily_scores[["date", "label", "prediction"]], cfg.labels.horizon_days,
                                               label_ranks))
    return predictions, book, run(name, book), signal


def _seed_figures(result: WalkForwardResult, vol: pd.DataFrame, run, grid: Grid, cfg: RunConfig,
                  rf: float | np.ndarray, label_ranks: metrics.LabelRanks | None = None) -> dict[str, float]:
    """The headline figures of one other seed's predictions, judged exactly as the registered seed's."""
    _, _, backtest, signal = _judge(f"{result.algorithm}_seed", result, vol, run, grid, cfg, label_ranks)
    return _headline({"signal": signal, "portfolio": _portfolio_block(backtest, cfg.portfolio.cost_bps_per_side, rf)})


def _seed_spread(seed: int, registered: dict[str, float], others: dict[int, dict[str, float]]) -> dict[str, Any]:
    """Mean +- sample std over seeds (the registered seed included), and every seed's value."""
    by_seed = {seed: registered, **others}
    seeds = sorted(by_seed)
    values = {key: [by_seed[s][key] for s in seeds] for key in SEED_FIGURES}

    def finite(xs: list[Any]) -> np.ndarray:
        arr = np.asarray([x if isinstance(x, (int, float)) and x is not None else np.nan for x in xs], dtype=float)
        return arr[np.isfinite(arr)]

    return {
        "seeds": seeds,
        "registered_seed": seed,
        "mean": {k: float(np.mean(finite(v))) if finite(v).size else float("nan") for k, v in values.items()},
        "std": {k: float(np.std(finite(v), ddof=1)) if finite(v).size > 1 else float("nan") for k, v in values.items()},
        "values": values,
        "note": "the registered model is the one of registered_seed; std is the sample std over seeds",
    }


def _risk_free(cfg: RunConfig, days: pd.DatetimeIndex) -> tuple[np.ndarray, dict[str, Any]]:
    """The daily risk-free rate of each return day (constant or from evaluation.risk_free_csv) and how
    it is described in summary.json and the table footnote."""
    ev = cfg.evaluation
    if ev.risk_free_csv is None:
        daily = metrics.daily_risk_free(days, annual=ev.risk_free_annual)
        label = "rf = 0" if ev.risk_free_annual == 0 else f"rf = {ev.risk_free_annual:.2%}/yr (constant)"
        return daily, {"annual": ev.risk_free_annual, "source": "constant", "label": label}
    where = f"evaluation.risk_free_csv {ev.risk_free_csv}"
    try:
        table = pd.read_csv(ev.risk_free_csv)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read: {exc}") from exc
    if not {"date", "rate"} <= set(table.columns):
        raise ConfigError(f"{where}: needs columns date, rate (annualised decimal); found {list(table.columns)}")
    dates = pd.to_datetime(table["date"], errors="coerce")
    rates = pd.to_numeric(table["rate"], errors="coerce")
    bad = dates.isna() | rates.isna() | (rates.abs() > 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"{where}: data row {row + 1} has an unreadable date or a rate outside [-1, 1] "
                          f"({table.iloc[row].to_dict()}); rates are annual decimals, 0.02 = 2%")
    try:
        daily = metrics.daily_risk_free(days, rates=pd.Series(rates.to_numpy(), index=dates), source=where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    mean_annual = float((1 + np.mean(daily)) ** metrics.TRADING_DAYS - 1)
    return daily, {"annual": mean_annual, "source": str(ev.risk_free_csv),
                   "label": f"rf = daily series from {Path(ev.risk_free_csv).name} (mean {mean_annual:.2%}/yr)"}


def _power(algorithms: dict[str, Any]) -> dict[str, Any]:
    """The smallest daily rank IC mean this run can call significant (t = 2, HAC), taken from the
    algorithm with the most power (smallest value), with that algorithm's effective dates."""
    by_algorithm = {n: a["signal"]["min_detectable_ic"] for n, a in algorithms.items()}
    finite = {n: v for n, v in by_algorithm.items() if isinstance(v, float) and np.isfinite(v)}
    best = min(finite, key=finite.get) if finite else None
    return {
        "min_detectable_ic": finite[best] if best else float("nan"),
        "effective_dates": algorithms[best]["signal"]["effective_dates"] if best else float("nan"),
        "ic_dates": algorithms[best]["signal"]["ic_dates"] if best else 0,
        "min_detectable_ic_by_algorithm": by_algorithm,
        "power_note": "min_detectable_ic = 2 x HAC standard error of the daily rank IC mean (lags = horizon): "
                      "the mean IC that would give t = 2; effective_dates = ic_dates x iid variance / HAC variance",
    }


def _holdings_table(book, grid: Grid, predictions: pd.DataFrame, lag: int) -> pd.DataFrame:
    # one row per (decision, holding), built as whole columns rather than a frame per decision
    pos = np.repeat(book.decision_pos, [len(tickers) for tickers, _ in book.holdings])
    table = pd.DataFrame({
        "decision_date": grid.dates[pos], "trade_date": grid.dates[np.minimum(pos + lag, len(grid.dates) - 1)],
        "ticker": grid.tickers[np.concatenate([tickers for tickers, _ in book.holdings])],
        "weight": np.concatenate([weights for _, weights in book.holdings]),
    })
    scores = predictions[["date", "ticker", "prediction"]].rename(columns={"date": "decision_date"})
    return table.merge(scores, on=["decision_date", "ticker"], how="left")
