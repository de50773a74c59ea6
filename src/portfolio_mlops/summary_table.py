"""The run's headline numbers as the fixed-width table the CLI and the benchmarks print.

Plain text from summary.json's dict: no pandas, no scikit-learn, no matplotlib, so whoever prints it (the
kfp engine after its last step, `runner.summary_table`) loads nothing heavy for it. report.py re-exports it.
"""

from __future__ import annotations

import math
from typing import Any


def _pct(value: Any) -> str:
    return f"{value * 100:+7.2f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "    n/a"


def _num(value: Any, width: int = 6, digits: int = 2) -> str:
    return f"{value:{width}.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else " " * (width - 3) + "n/a"


def _seed_line(name: str, spread: dict[str, Any]) -> str:
    """`hgb over seeds 0,1,2 (row above = seed 0): rank IC 0.026 +- 0.003, ...`: how much is the seed's luck."""
    mean, std = spread["mean"], spread["std"]

    def pm(key: str, pct: bool = False) -> str:
        scale, digits, unit = (100, 1, "%") if pct else (1, 3, "")
        m, sd = mean[key], std[key]
        if not (isinstance(m, float) and math.isfinite(m)):
            return "n/a"
        return f"{m * scale:.{digits}f}{unit} +- " + (f"{sd * scale:.{digits}f}{unit}" if math.isfinite(sd) else "n/a")

    return (f"{name} over seeds {','.join(map(str, spread['seeds']))} (row above = seed {spread['registered_seed']}, "
            f"the one registered): rank IC {pm('rank_ic_mean')}, HAC t {pm('ic_hac_tstat')}, "
            f"net Sharpe {pm('net_sharpe')}, CAGR {pm('net_cagr', True)}.")


def summary_table(summary: dict[str, Any]) -> str:
    """A fixed-width table of the headline numbers (net of costs unless marked gross)."""
    ev = summary["evaluation"]
    lines = [
        f"Out-of-sample {ev['first_return_day']} .. {ev['last_return_day']} ({ev['return_days']} days, "
        f"{ev['decision_dates']} rebalances, ~{ev['universe_mean_size']:.0f} names, {ev['costs_bps_per_side']:g} bps/side)",
        f"{'strategy':<16}{'CAGR':>9}{'gross':>9}{'vol':>9}{'Sharpe':>8}{'MDD':>9}{'turn':>7}"
        f"{'IC':>8}{'IC t':>7}{'HAC t':>7}{'OOS R2':>9}{'xs vs EW':>10}{'IR EW':>7}",
    ]
    for name, a in summary["algorithms"].items():
        net, gross, sig = a["portfolio"]["net"], a["portfolio"]["gross"], a["signal"]
        ew = a["excess"].get("equal_weight", {})
        lines.append(
            f"{name:<16}{_pct(net['cagr']):>9}{_pct(gross['cagr']):>9}{_pct(net['ann_vol']):>9}{_num(net['sharpe']):>8}"
            f"{_pct(net['max_drawdown']):>9}{_pct(net['turnover']):>7}{_num(sig['ic_mean'], 7, 3):>8}"
            f"{_num(sig['ic_tstat'], 6, 2):>7}{_num(sig.get('ic_hac_tstat'), 6, 2):>7}"
            f"{_pct(sig['oos_r2']):>9}{_pct(ew.get('ann_return')):>10}"
            f"{_num(ew.get('information_ratio')):>7}"
        )
    for name, b in summary["benchmarks"].items():
        gross = b.get("gross", b)
        lines.append(
            f"{name:<16}{_pct(b['cagr']):>9}{_pct(gross['cagr']):>9}{_pct(b['ann_vol']):>9}{_num(b['sharpe']):>8}"
            f"{_pct(b['max_drawdown']):>9}{_pct(b.get('turnover', float('nan'))):>7}"
        )
    lines.append("CAGR compounded, net of costs; 'xs vs EW' = annualised mean daily excess over the equal-weight universe.")
    for name, a in summary["algorithms"].items():
        if a.get("seeds"):
            lines.append(_seed_line(name, a["seeds"]))
    lines.append(f"Sharpe and Sortino over {ev.get('risk_free', {}).get('label', 'rf = 0')}.")
    random = summary["benchmarks"].get("random_top_n")
    if random and "median_seed" in random:
        spread = random["distribution"]["sharpe"]
        lines.append(f"random_top_n = the median seed by net Sharpe (seed {random['median_seed']} of {random['seeds']}; "
                     f"Sharpe p05/p50/p95 {spread['p05']:.2f}/{spread['p50']:.2f}/{spread['p95']:.2f}); excess vs random uses it.")
    lines.append("IC = mean rank IC on rebalance dates, 'IC t' on non-overlapping ones; 'HAC t' = Newey-West t of the "
                 "daily rank IC (every out-of-sample day, lags = label horizon).")
    if isinstance(ev.get("min_detectable_ic"), float) and math.isfinite(ev["min_detectable_ic"]):
        lines.append(f"With {ev['effective_dates']:.0f} effective dates ({ev['ic_dates']} daily IC dates) this run can "
                     f"only see IC >= {ev['min_detectable_ic']:.3f} (t = 2).")
    lines.append("Realistic daily-OHLCV signals reach IC 0.01-0.03 and IR 0.2-0.5; far above that, suspect leakage.")
    return "\n".join(lines)
