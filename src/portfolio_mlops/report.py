"""Outputs people read: summary.json, plots (PNG), holdings and predictions, and a printed table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI, containers and pipeline pods have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from portfolio_mlops import atomic, metrics  # noqa: E402
from portfolio_mlops.evaluation import Evaluation  # noqa: E402
from portfolio_mlops.registry import headline  # noqa: E402
from portfolio_mlops.summary_table import summary_table  # noqa: E402,F401 - the report's text, re-exported


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null instead, recursively."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_outputs(evaluation: Evaluation, predictions: dict[str, pd.DataFrame], refits: dict[str, list],
                  output_dir: str | Path, portfolios: dict[str, pd.DataFrame] | None = None) -> dict[str, Path]:
    """Write every artefact but summary.json atomically (write_summary comes last); returns name -> path.

    `portfolios`: per algorithm, the book for the decision after the data's last date
    (backtest.decision_portfolio columns), written as portfolio_<algo>.csv.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, frame in (portfolios or {}).items():
        written[f"portfolio_{name}"] = out / f"portfolio_{name}.csv"
        with atomic.atomic_path(written[f"portfolio_{name}"]) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    for name, frame in predictions.items():
        written[f"predictions_{name}"] = out / f"predictions_{name}.parquet"
        atomic.write_parquet(written[f"predictions_{name}"], frame)
    for name, frame in evaluation.holdings.items():
        written[f"holdings_{name}"] = out / f"holdings_{name}.csv"
        with atomic.atomic_path(written[f"holdings_{name}"]) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    written["refits"] = out / "refits.json"
    atomic.write_json(written["refits"], _clean(refits))
    daily = pd.DataFrame({"date": evaluation.backtests["equal_weight"].dates, **evaluation.net_returns})
    written["daily_returns"] = out / "daily_returns_net.csv"
    with atomic.atomic_path(written["daily_returns"]) as tmp:
        daily.to_csv(tmp, index=False, float_format="%.8g")
    written.update(plot_all(evaluation, out))
    return written


def write_summary(summary: dict[str, Any], output_dir: str | Path) -> Path:
    """summary.json, written once at the end of a run: its presence marks a complete report."""
    path = Path(output_dir) / "summary.json"
    atomic.write_text(path, summary_json(summary))
    return path


def summary_json(summary: dict[str, Any]) -> str:
    """The text of summary.json (also logged to MLflow as the parent run's artifact)."""
    return atomic.json_text(_clean(summary))


def plot_all(evaluation: Evaluation, out: Path) -> dict[str, Path]:
    dates = evaluation.backtests["equal_weight"].dates
    algorithms = list(evaluation.summary["algorithms"])
    benchmarks = [b for b in ("index", "equal_weight", "random_top_n", "momentum_12_1", "reversal_21")
                  if b in evaluation.net_returns]
    paths = {}

    fig, ax = plt.subplots(figsize=(11, 6))
    for name in algorithms:
        ax.plot(dates, metrics.equity_curve(evaluation.net_returns[name]), lw=1.6, label=f"{name} (net)")
    for name in benchmarks:
        ax.plot(dates, metrics.equity_curve(evaluation.net_returns[name]), lw=1.0, ls="--", label=name)
    ax.set_yscale("log")
    ax.set_title("Growth of 1 after costs: models vs benchmarks (log scale)")
    ax.set_ylabel("equity (start = 1)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    paths["plot_equity"] = _save(fig, out / "equity_curves.png")

    fig, ax = plt.subplots(figsize=(11, 4))
    for name in [*algorithms, "equal_weight"]:
        ax.plot(dates, metrics.drawdown_series(evaluation.net_returns[name]) * 100, lw=1.0, label=name)
    ax.set_title("Drawdown from running peak, after costs (%)")
    ax.set_ylabel("%")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths["plot_drawdowns"] = _save(fig, out / "drawdowns.png")

    fig, ax = plt.subplots(figsize=(11, 4))
    for name, ic in evaluation.ic_by_date.items():
        ax.plot(ic.index, metrics.rolling_ic(ic), lw=1.2, label=f"{name} (mean {ic.mean():+.3f})")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_title("Rank IC per decision date, rolling mean of 12")
    ax.set_ylabel("Spearman IC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths["plot_rolling_ic"] = _save(fig, out / "rolling_ic.png")
    return paths


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.autofmt_xdate()
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def html_report(summary: dict[str, Any], output_dir: str | Path) -> str:
    """One self-contained HTML page (plots inlined) for viewers such as the Kubeflow Pipelines UI."""
    import base64
    import html

    out = Path(output_dir)
    promotion = summary.get("promotion") or {}
    if promotion:
        verdict = (f"promoted v{promotion['champion_after']} to champion" if promotion["promoted"]
                   else f"champion unchanged ({'v' + promotion['champion_before'] if promotion['champion_before'] else 'none'})")
        decision = f"<h2>Promotion: {html.escape(verdict)}</h2><ul>" + "".join(
            f"<li>{html.escape(reason)}</li>" for reason in promotion["reasons"]) + "</ul>"
    else:
        decision = "<h2>Promotion: not run</h2>"
    picks = _picks_html(summary, promotion, out)
    images = []
    for name, title in (("equity_curves.png", "Equity curves after costs"), ("drawdowns.png", "Drawdowns"),
                        ("rolling_ic.png", "Rolling rank IC")):
        path = out / name
        if path.is_file():
            encoded = base64.b64encode(path.read_bytes()).decode("ascii")
            images.append(f'<h3>{title}</h3><img alt="{title}" style="max-width:100%" src="data:image/png;base64,{encoded}">')
    caveats = "".join(f"<li>{html.escape(c)}</li>" for c in summary["evaluation"].get("caveats", []))
    data = summary.get("data", {})
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>sp500 stock ranking</title></head>"
        "<body style='font-family:sans-serif;max-width:1100px;margin:auto'>"
        f"<h1>S&amp;P 500 stock ranking: {html.escape(str(data.get('layout', '')))} "
        f"{html.escape(str(data.get('start', '')))}..{html.escape(str(data.get('end', '')))}</h1>"
        f"{decision}{picks}<h2>Results (net of costs)</h2><pre>{html.escape(summary_table(summary))}</pre>"
        f"{''.join(images)}<h2>Caveats</h2><ul>{caveats}</ul>"
        f"<p>data digest {html.escape(str(data.get('content_digest', '')))}</p></body></html>"
    )


def _picks_html(summary: dict[str, Any], promotion: dict[str, Any], out: Path) -> str:
    """The holdings for the next decision of the champion when this run made it (else the best candidate)."""
    import html

    candidates = promotion.get("candidates") or {}
    champion = promotion.get("champion_after")
    if champion in candidates:
        version, whose = champion, "champion"
    elif promotion.get("best_candidate") in candidates:
        version = promotion["best_candidate"]
        whose = (f"best candidate (not promoted; champion is {'v' + champion + ' from an earlier run' if champion else 'none'})")
    else:
        version = None
        ranked = sorted(summary.get("algorithms", {}).items(),
                        key=lambda item: -(headline(item[1], "net_sharpe") or -math.inf))
        whose = "best candidate by net Sharpe (promotion not run)"
    algorithm = candidates[version]["algorithm"] if version else (ranked[0][0] if ranked else None)
    path = out / f"portfolio_{algorithm}.csv"
    if algorithm is None or not path.is_file():
        return ""
    book = pd.read_csv(path)
    held = book[book["selected"]]
    label = f"v{version} ({algorithm})" if version else algorithm
    rows = "".join(f"<tr><td>{int(r.rank)}</td><td>{html.escape(str(r.ticker))}</td><td>{r.score:+.4f}</td>"
                   f"<td>{r.weight:.2%}</td></tr>" for r in held.itertuples())
    return (f"<h2>Next portfolio: {html.escape(whose)} {html.escape(label)}, decision at "
            f"{html.escape(str(book['date'].iloc[0]) if len(book) else '?')}</h2>"
            "<table><tr><th>rank</th><th>ticker</th><th>score</th><th>weight</th></tr>" + rows + "</table>")
