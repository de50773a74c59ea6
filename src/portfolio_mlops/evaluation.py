"""Evaluate walk-forward predictions: portfolios, benchmarks from the same run, and every metric.

Every strategy (each model, each benchmark) uses the same decision dates, the same universe (the
names with all features known at the decision date), the same execution lag and the same costs, so
the comparisons are like for like. The index benchmark is a price index (no dividends) while
adjusted closes include dividends: that flatters every stock strategy against it by roughly the
dividend yield, which is why the equal-weight universe is the primary yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from portfolio_mlops import metrics
from portfolio_mlops.backtest import BacktestResult, equal_weight_book, index_returns, random_book, simulate, top_n_book
from portfolio_mlops.config import RunConfig
from portfolio_mlops.features import FeatureSet, Grid
from portfolio_mlops.walk_forward import WalkForwardResult

PRIMARY_BENCHMARK = "equal_weight"


@dataclass
class Evaluation:
    summary: dict[str, Any]
    backtests: dict[str, BacktestResult]  # algorithms and benchmarks (random: the per-day mean of seeds)
    net_returns: dict[str, np.ndarray]
    ic_by_date: dict[str, pd.Series] = field(default_factory=dict)
    holdings: dict[str, pd.DataFrame] = field(default_factory=dict)


def _portfolio_block(result: BacktestResult, bps: float) -> dict[str, Any]:
    gross = metrics.portfolio_metrics(result.gross)
    net = metrics.portfolio_metrics(result.net(bps))
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

    backtests[PRIMARY_BENCHMARK] = run(PRIMARY_BENCHMARK, equal_weight_book(universe, grid.tickers))
    factor_scores = {"momentum_12_1": ("raw_mom_12_1", True), "reversal_21": ("raw_ret_21", False)}
    for factor in cfg.benchmarks.factors:
        column, descending = factor_scores[factor]
        backtests[factor] = run(factor, top_n_book(universe, column, grid.tickers, cfg.portfolio, descending))
    for name, result in backtests.items():
        block = _portfolio_block(result, bps)
        benchmarks[name] = {**block["net"], "gross": block["gross"]}
        net_returns[name] = result.net(bps)
    return_days = backtests[PRIMARY_BENCHMARK].dates

    random_sharpes: list[float] = []
    if cfg.benchmarks.random_seeds:
        seeds = [run(f"random_{s}", random_book(universe, grid.tickers, cfg.portfolio, seed=cfg.seed * 10_000 + s))
                 for s in range(cfg.benchmarks.random_seeds)]
        seed_net = [r.net(bps) for r in seeds]
        per_seed = [metrics.portfolio_metrics(net) for net in seed_net]
        per_seed_gross = [metrics.portfolio_metrics(r.gross) for r in seeds]
        random_sharpes = [m["sharpe"] for m in per_seed]

        def median(rows: list[dict[str, float]]) -> dict[str, float]:
            return {key: float(np.median([m[key] for m in rows])) for key in rows[0]}

        benchmarks["random_top_n"] = {
            **median(per_seed),
            "gross": median(per_seed_gross),
            "turnover": float(np.median([r.one_way_turnover for r in seeds])),
            "seeds": len(seeds),
            "sharpe_p05": float(np.percentile(random_sharpes, 5)),
            "sharpe_p95": float(np.percentile(random_sharpes, 95)),
            "cagr_p05": float(np.percentile([m["cagr"] for m in per_seed], 5)),
            "cagr_p95": float(np.percentile([m["cagr"] for m in per_seed], 95)),
            "note": "median over seeds of each metric; excess is measured against the seeds' mean daily return",
        }
        net_returns["random_top_n"] = np.mean(seed_net, axis=0)

    if benchmark_series is not None:
        index_daily = index_returns(benchmark_series, return_days)
        benchmarks["index"] = {**metrics.portfolio_metrics(index_daily), "name": benchmark_name or "index",
                               "note": "price index: no dividends and no costs"}
        net_returns["index"] = index_daily

    algorithms: dict[str, Any] = {}
    ic_by_date: dict[str, pd.Series] = {}
    holdings: dict[str, pd.DataFrame] = {}
    vol = frame[["date_pos", "ticker", "raw_vol_63"]]
    for name, result in results.items():
        predictions = result.predictions.merge(vol, on=["date_pos", "ticker"], how="left")
        book = top_n_book(predictions, "prediction", grid.tickers, cfg.portfolio)
        backtest = run(name, book)
        backtests[name] = backtest
        net = backtest.net(bps)
        net_returns[name] = net
        known = predictions[np.isfinite(predictions["label"])]
        ic_by_date[name] = metrics.rank_ic_by_date(known["date"].to_numpy(), known["prediction"].to_numpy(), known["label"].to_numpy())
        holdings[name] = _holdings_table(book, grid, predictions, lag)
        sensitivity = {
            f"{b:g}": {k: v for k, v in metrics.portfolio_metrics(backtest.net(b)).items() if k in ("cagr", "sharpe", "ann_return")}
            for b in cfg.portfolio.cost_sensitivity_bps
        }
        net_sharpe = metrics.sharpe_ratio(net)
        algorithms[name] = {
            "signal": metrics.signal_metrics(predictions, cfg.labels.horizon_days, every, cfg.portfolio.top_n),
            "portfolio": _portfolio_block(backtest, bps),
            "excess": {bench: metrics.excess_metrics(net, series) for bench, series in net_returns.items()
                       if bench not in results},
            "cost_sensitivity": sensitivity,
            "random_percentile": float(np.mean(np.asarray(random_sharpes) < net_sharpe)) if random_sharpes else None,
            "refits": len(result.refits),
            "configurations_tried": result.configurations_tried,
            "seconds": round(result.seconds, 3),
            "missing_held_returns": backtest.missing_held_returns,
        }

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
            "caveats": [
                "survivorship bias: the universe is a list of today's index members, which flatters every long-only "
                "strategy, benchmarks included; prefer relative comparisons",
                "the index benchmark is a price index without dividends; adjusted closes include dividends",
                "metrics use 252 trading days a year and a zero risk-free rate",
            ],
        },
    }
    return Evaluation(summary, backtests, net_returns, ic_by_date, holdings)


def _holdings_table(book, grid: Grid, predictions: pd.DataFrame, lag: int) -> pd.DataFrame:
    rows = []
    for pos, (tickers, weights) in zip(book.decision_pos, book.holdings):
        trade = min(pos + lag, len(grid.dates) - 1)
        rows.append(pd.DataFrame({
            "decision_date": grid.dates[pos], "trade_date": grid.dates[trade],
            "ticker": grid.tickers[tickers], "weight": weights,
        }))
    table = pd.concat(rows, ignore_index=True)
    scores = predictions[["date", "ticker", "prediction"]].rename(columns={"date": "decision_date"})
    return table.merge(scores, on=["decision_date", "ticker"], how="left")
