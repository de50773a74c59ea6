"""Signal and portfolio metrics. Inputs are daily simple returns (fractions: 0.01 = 1%).

Conventions (stated once, used everywhere):
- 252 trading days a year; risk-free rate 0 (excess returns over cash are not modelled).
- CAGR is compounded: (prod(1 + r))^(252 / days) - 1.
- Sharpe = mean / std * sqrt(252) (std with ddof=1); Sortino = mean * 252 / downside deviation,
  downside deviation = sqrt(mean(min(r, 0)^2)) * sqrt(252) (the empyrical definition).
- Max drawdown is the worst peak-to-trough fall of the compounded equity curve (a negative fraction);
  Calmar = CAGR / |max drawdown|.
- Excess return vs a benchmark: active daily return a = r - r_bench; ann_return = mean(a) * 252,
  information ratio = mean(a) / std(a) * sqrt(252).
- Rank IC: Spearman correlation, per decision date, between predictions and realised forward returns.
  ICIR = mean / std of the per-date ICs (per rebalance, not annualised). The t-stat uses
  non-overlapping dates only (every ceil(horizon / rebalance_every)-th date), because overlapping
  labels inflate it.
- Daily IC (the powered statistic): every trading day of the out-of-sample period is scored with the
  model in force that day (walk_forward.daily_scores), and the per-day Spearman (rank) and Pearson ICs
  are computed on the days whose labels are known. Neighbouring days' labels overlap by horizon - 1
  days, so the mean's t-stat is Newey-West (HAC, Bartlett kernel) with lags >= the horizon:
  t = mean / sqrt(S / n), S = gamma_0 + 2 * sum_{l=1..L} (1 - l / (L + 1)) * gamma_l, gamma_l the
  autocovariance (divided by n, not n - l); this equals statsmodels' OLS on a constant with
  cov_type="HAC", maxlags=L, use_correction=False.
  effective_dates = n * var_iid / S (var_iid = gamma_0): how many independent dates the series is
  worth; min_detectable_ic = 2 * sqrt(S / n), the mean IC that would give t = 2 at this run's
  dispersion and autocorrelation.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

TRADING_DAYS = 252


def _correlation_by_date(dates: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[pd.Series, ...]:
    """Per-date correlation of x and y from their moment sums (one groupby, no per-date loop).

    Returns (correlation, n, var_x, var_y, mean_xx, mean_yy) per date, the sums not yet divided by n - 1,
    so each caller can decide what counts as "no spread" on its own scale.
    """
    # the five columns written straight into one block (no per-column temporaries stacked into a frame
    # afterwards), grouped once for both the sums and the counts
    block = np.empty((5, len(x)))
    block[0], block[1] = x, y
    np.multiply(x, y, out=block[2])
    np.multiply(x, x, out=block[3])
    np.multiply(y, y, out=block[4])
    parts = pd.DataFrame(block.T, columns=["x", "y", "xy", "xx", "yy"], copy=False)
    grouped = parts.groupby(pd.Index(dates, name="date"), sort=True)
    sums = grouped.sum()
    n = grouped.size().astype(float)
    cov = sums["xy"] - sums["x"] * sums["y"] / n
    var_x = sums["xx"] - sums["x"] ** 2 / n
    var_y = sums["yy"] - sums["y"] ** 2 / n
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = cov / np.sqrt(var_x * var_y)
    return correlation, n, var_x, var_y, sums["xx"] / n, sums["yy"] / n


def _finite_rows(dates, prediction, realised) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dates, prediction, realised) of the rows where both values are finite; the arrays themselves
    when every row is (the usual case: no copies)."""
    day, p, y = np.asarray(dates), np.asarray(prediction, float), np.asarray(realised, float)
    finite = np.isfinite(p) & np.isfinite(y)
    if finite.all():
        return day, p, y
    return day[finite], p[finite], y[finite]


def average_ranks_by_date(dates: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Ranks of finite `values` within each date, 1 = smallest, ties sharing their mean rank.

    Exactly pandas' groupby(dates).rank() (the same x.0 / x.5 floats), but as one sort of a
    dates x names grid padded with +inf instead of a sort per date: ~6x faster on a daily panel.
    """
    dates = np.asarray(dates)
    if not len(dates):
        return np.empty(0)
    if _nondecreasing(dates):
        # Already grouped and in date order (every frame the chain ranks): the groups are the runs of
        # equal dates, so neither pandas' factorize nor a sort by group is needed.
        by_date = None
        starts = np.flatnonzero(np.r_[True, dates[1:] != dates[:-1]])
    else:
        codes = pd.factorize(dates)[0]
        by_date = np.argsort(codes, kind="stable")
        grouped = codes[by_date]
        starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    n = len(dates)
    sizes = np.diff(np.r_[starts, n])
    row = np.repeat(np.arange(len(starts)), sizes)
    col = np.arange(n) - starts[row]
    grid = np.full((len(starts), int(sizes.max())), np.inf)  # padding sorts after every finite value
    values = np.asarray(values, float)
    grid[row, col] = values if by_date is None else values[by_date]
    order = np.argsort(grid, axis=1)
    ordered = np.take_along_axis(grid, order, axis=1)
    width = grid.shape[1]
    tie_starts = np.ones(grid.shape, bool)
    tie_starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    if not np.isposinf(values).any() and (tie_starts | (ordered == np.inf)).all():
        # No two values of a date are equal (continuous scores; only the +inf padding ties): each
        # rank is its sorted position + 1, what the tie arithmetic below gives when first == last.
        by_position = np.broadcast_to(np.arange(1.0, width + 1.0), grid.shape)
    else:
        position = np.broadcast_to(np.arange(width), grid.shape)
        tie_ends = np.ones(grid.shape, bool)
        tie_ends[:, :-1] = tie_starts[:, 1:]
        first = np.maximum.accumulate(np.where(tie_starts, position, 0), axis=1)
        last = np.minimum.accumulate(np.where(tie_ends, position, width)[:, ::-1], axis=1)[:, ::-1]
        by_position = (first + last) / 2.0 + 1.0
    ranks = np.empty(grid.shape)
    np.put_along_axis(ranks, order, by_position, axis=1)
    if by_date is None:
        return ranks[row, col]
    out = np.empty(n)
    out[by_date] = ranks[row, col]
    return out


def _nondecreasing(values: np.ndarray) -> bool:
    """True when `values` (dates or any ordered keys) never decrease; NaT/NaN make it False."""
    if values.dtype.kind in "mM":
        if np.isnat(values).any():
            return False
    elif values.dtype.kind == "f":
        if np.isnan(values).any():
            return False
    elif values.dtype.kind not in "iub":
        return False  # objects, strings: left to pandas' factorize
    return bool((values[1:] >= values[:-1]).all())


class LabelRanks:
    """Per-date ranks of realised labels, computed once and found again by value.

    Every algorithm (and every seed) of one evaluation is scored against the same labels on the same
    days, so their ranks are the same: an entry is reused when its dates and labels equal the asked
    ones element for element (equal values rank equally, so the ranks are the ones
    average_ranks_by_date would return). Lives as long as one evaluation (evaluation.evaluate).
    """

    def __init__(self) -> None:
        self._entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def __call__(self, dates: np.ndarray, labels: np.ndarray) -> np.ndarray:
        dates, labels = np.asarray(dates), np.asarray(labels, float)
        for known_dates, known_labels, ranks in self._entries:
            if (len(known_dates) == len(dates) and known_dates.dtype == dates.dtype
                    and np.array_equal(known_labels, labels) and np.array_equal(known_dates, dates)):
                return ranks
        ranks = average_ranks_by_date(dates, labels)
        # copies: the caller's arrays may be views of frames that would otherwise stay alive
        self._entries.append((dates.copy(), labels.copy(), ranks))
        return ranks


def rank_ic_by_date(dates: np.ndarray | pd.Series, prediction: np.ndarray, realised: np.ndarray,
                    label_ranks: LabelRanks | None = None) -> pd.Series:
    """Spearman IC per date (average ranks for ties); NaN where a date has < 3 names or no spread.

    `label_ranks`: a LabelRanks shared by the calls that score the same realised values."""
    day, p, y = _finite_rows(dates, prediction, realised)
    realised_ranks = (label_ranks or average_ranks_by_date)(day, y)
    ic, n, var_x, var_y, _, _ = _correlation_by_date(day, average_ranks_by_date(day, p), realised_ranks)
    ic[(n < 3) | (var_x <= 1e-12) | (var_y <= 1e-12)] = np.nan
    return ic.rename("rank_ic")


def pearson_ic_by_date(dates: np.ndarray | pd.Series, prediction: np.ndarray, realised: np.ndarray) -> pd.Series:
    """Pearson IC per date; NaN where a date has < 3 names or no spread (relative to the values' scale)."""
    ic, n, var_x, var_y, mean_xx, mean_yy = _correlation_by_date(*_finite_rows(dates, prediction, realised))
    scale_x = mean_xx.clip(lower=1e-300)
    scale_y = mean_yy.clip(lower=1e-300)
    ic[(n < 3) | (var_x <= 1e-12 * scale_x * n) | (var_y <= 1e-12 * scale_y * n)] = np.nan
    return ic.rename("pearson_ic")


def hac_long_run_variance(values: np.ndarray, lags: int) -> float:
    """Newey-West long-run variance of a series (Bartlett weights, autocovariances divided by n)."""
    x = np.asarray(values, float)
    n = len(x)
    if n < 2:
        return float("nan")
    e = x - x.mean()
    s = float(e @ e) / n
    for lag in range(1, min(lags, n - 1) + 1):
        s += 2.0 * (1.0 - lag / (lags + 1.0)) * float(e[lag:] @ e[:-lag]) / n
    return s


def hac_mean_stats(values: np.ndarray, lags: int) -> dict[str, float]:
    """Mean, HAC t-stat, effective sample size and the mean detectable at t = 2 (see module docstring)."""
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    n = len(x)
    nan = float("nan")
    if n < 3:
        return {"mean": nan, "tstat": nan, "se": nan, "dates": n, "effective_dates": nan, "min_detectable": nan}
    long_run = hac_long_run_variance(x, lags)
    gamma0 = float(np.mean((x - x.mean()) ** 2))
    if not long_run > 0:
        return {"mean": float(x.mean()), "tstat": nan, "se": nan, "dates": n, "effective_dates": nan, "min_detectable": nan}
    se = math.sqrt(long_run / n)
    return {"mean": float(x.mean()), "tstat": float(x.mean() / se), "se": se, "dates": n,
            "effective_dates": float(n * gamma0 / long_run), "min_detectable": 2.0 * se}


def daily_signal_metrics(daily: pd.DataFrame, horizon_days: int, label_ranks: LabelRanks | None = None) -> dict[str, float]:
    """Daily-sampled IC statistics (Qlib's IC / ICIR / Rank IC / Rank ICIR, plus the HAC t of rank IC).

    `daily` has date, prediction and label for every out-of-sample trading day; rows with unknown labels
    are ignored. HAC lags = horizon_days (the label overlap of neighbouring days is horizon - 1).
    `label_ranks`: shared by the algorithms/seeds scored on the same labels (ranked once).
    """
    nan = float("nan")
    known = daily[np.isfinite(daily["label"])] if len(daily) else daily
    if not len(known):
        return {"rank_ic_mean": nan, "rank_icir": nan, "pearson_ic_mean": nan, "pearson_icir": nan,
                "ic_hac_tstat": nan, "ic_hac_lags": int(horizon_days), "ic_dates": 0, "effective_dates": nan,
                "min_detectable_ic": nan}
    rank = rank_ic_by_date(known["date"].to_numpy(), known["prediction"].to_numpy(), known["label"].to_numpy(),
                           label_ranks).dropna()
    pearson = pearson_ic_by_date(known["date"].to_numpy(), known["prediction"].to_numpy(), known["label"].to_numpy()).dropna()

    def ir(series: pd.Series) -> float:
        std = float(series.std(ddof=1)) if len(series) > 1 else nan
        return float(series.mean() / std) if std and np.isfinite(std) and std > 0 else nan

    hac = hac_mean_stats(rank.to_numpy(), max(1, int(horizon_days)))
    return {
        "rank_ic_mean": float(rank.mean()) if len(rank) else nan,
        "rank_icir": ir(rank),
        "pearson_ic_mean": float(pearson.mean()) if len(pearson) else nan,
        "pearson_icir": ir(pearson),
        "ic_hac_tstat": hac["tstat"],
        "ic_hac_lags": max(1, int(horizon_days)),
        "ic_dates": int(hac["dates"]),
        "effective_dates": hac["effective_dates"],
        "min_detectable_ic": hac["min_detectable"],
    }


def signal_metrics(predictions: pd.DataFrame, horizon_days: int, rebalance_every_days: int, top_n: int,
                   label_ranks: LabelRanks | None = None) -> dict[str, float]:
    """IC statistics, hit rate, out-of-sample R^2 and the top-minus-bottom spread.

    `predictions` has date, prediction, label (forward return minus the date's universe mean) and
    label_raw. Rows with unknown labels (the latest dates) are ignored.
    - hit_rate: share of (date, ticker) where the prediction's sign, after removing the date's mean
      prediction, matches the sign of the demeaned realised return.
    - oos_r2: 1 - sum((y - yhat)^2) / sum(y^2) on demeaned labels, yhat = prediction minus its date
      mean (zero forecast as the baseline, as in Gu, Kelly & Xiu 2020).
    - long_short: mean realised label of the top-N minus the bottom-N per date (gross, per period),
      annualised by the number of periods a year.
    """
    known = predictions[np.isfinite(predictions["label"])]
    ic = rank_ic_by_date(known["date"].to_numpy(), known["prediction"].to_numpy(), known["label"].to_numpy(), label_ranks)
    step = max(1, math.ceil(horizon_days / rebalance_every_days))
    independent = ic.iloc[::step].dropna()
    valid = ic.dropna()
    std = float(valid.std(ddof=1)) if len(valid) > 1 else float("nan")
    ind_std = float(independent.std(ddof=1)) if len(independent) > 1 else float("nan")
    demeaned_prediction = known["prediction"] - known.groupby("date")["prediction"].transform("mean")
    y = known["label"].to_numpy()
    yhat = demeaned_prediction.to_numpy()
    hits = np.sign(yhat) == np.sign(y)
    oos_r2 = 1.0 - float(np.sum((y - yhat) ** 2) / np.sum(y**2)) if len(y) else float("nan")
    spread = _top_bottom_spread(known, top_n)
    periods_per_year = TRADING_DAYS / rebalance_every_days
    return {
        "ic_mean": float(valid.mean()) if len(valid) else float("nan"),
        "ic_std": std,
        "icir": float(valid.mean() / std) if std and np.isfinite(std) and std > 0 else float("nan"),
        "ic_tstat": float(independent.mean() / ind_std * math.sqrt(len(independent)))
        if ind_std and np.isfinite(ind_std) and ind_std > 0 else float("nan"),
        "ic_dates": int(len(valid)),
        "ic_independent_dates": int(len(independent)),
        "ic_positive_share": float((valid > 0).mean()) if len(valid) else float("nan"),
        "hit_rate": float(hits[yhat != 0].mean()) if (yhat != 0).any() else float("nan"),
        "oos_r2": oos_r2,
        "long_short_period_mean": float(spread.mean()) if len(spread) else float("nan"),
        "long_short_ann": float(spread.mean() * periods_per_year) if len(spread) else float("nan"),
    }


def _top_bottom_spread(known: pd.DataFrame, top_n: int) -> pd.Series:
    ranks = known.groupby("date")["prediction"].rank(method="first", ascending=False)
    counts = known.groupby("date")["prediction"].transform("size")
    n = np.minimum(top_n, counts // 2)
    top = known["label"].where(ranks <= n)
    bottom = known["label"].where(ranks > counts - n)
    by_date = pd.DataFrame({"date": known["date"], "top": top, "bottom": bottom}).groupby("date")
    return (by_date["top"].mean() - by_date["bottom"].mean()).dropna()


def rolling_ic(ic: pd.Series, window: int = 12) -> pd.Series:
    return ic.rolling(window, min_periods=max(2, window // 2)).mean()


def cagr(returns: np.ndarray) -> float:
    r = np.asarray(returns, float)
    if len(r) == 0:
        return float("nan")
    growth = float(np.prod(1.0 + r))
    if growth <= 0:
        return -1.0
    return growth ** (TRADING_DAYS / len(r)) - 1.0


def annual_volatility(returns: np.ndarray) -> float:
    r = np.asarray(returns, float)
    return float(np.std(r, ddof=1) * math.sqrt(TRADING_DAYS)) if len(r) > 1 else float("nan")


def sharpe_ratio(returns: np.ndarray, risk_free: float | np.ndarray = 0.0) -> float:
    """Annualised Sharpe of the daily excess over the risk-free rate (risk_free: a daily rate, scalar
    or one per day)."""
    r = np.asarray(returns, float) - np.asarray(risk_free, float)
    std = np.std(r, ddof=1) if len(r) > 1 else float("nan")
    return float(np.mean(r) / std * math.sqrt(TRADING_DAYS)) if std and np.isfinite(std) and std > 0 else float("nan")


def sortino_ratio(returns: np.ndarray, risk_free: float | np.ndarray = 0.0) -> float:
    """Annualised Sortino of the daily excess over the risk-free rate (downside = days below rf)."""
    r = np.asarray(returns, float) - np.asarray(risk_free, float)
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) * math.sqrt(TRADING_DAYS) if len(r) else float("nan")
    return float(np.mean(r) * TRADING_DAYS / downside) if downside and downside > 0 else float("nan")


def equity_curve(returns: np.ndarray) -> np.ndarray:
    return np.cumprod(1.0 + np.asarray(returns, float))


def drawdown_series(returns: np.ndarray) -> np.ndarray:
    """Fall from the running peak of the equity curve (starting value 1 counts as a peak)."""
    equity = equity_curve(returns)
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    return equity / peak - 1.0


def max_drawdown(returns: np.ndarray) -> float:
    r = np.asarray(returns, float)
    return float(drawdown_series(r).min()) if len(r) else float("nan")


def calmar_ratio(returns: np.ndarray) -> float:
    mdd = max_drawdown(returns)
    return float(cagr(returns) / abs(mdd)) if mdd < 0 else float("nan")


def portfolio_metrics(returns: np.ndarray, risk_free: float | np.ndarray = 0.0) -> dict[str, float]:
    """The portfolio metric set for one daily return series (gross or net); Sharpe and Sortino are of
    the excess over `risk_free` (a daily rate, scalar or one per day), the rest of the raw returns."""
    r = np.asarray(returns, float)
    return {
        "cagr": cagr(r),
        "ann_return": float(np.mean(r) * TRADING_DAYS),
        "ann_vol": annual_volatility(r),
        "sharpe": sharpe_ratio(r, risk_free),
        "sortino": sortino_ratio(r, risk_free),
        "max_drawdown": max_drawdown(r),
        "calmar": calmar_ratio(r),
        "days": int(len(r)),
    }


def excess_metrics(returns: np.ndarray, benchmark_returns: np.ndarray) -> dict[str, float]:
    """Active-return statistics; max_drawdown is that of the compounded active-return curve (Qlib's
    excess-return drawdown)."""
    active = np.asarray(returns, float) - np.asarray(benchmark_returns, float)
    std = np.std(active, ddof=1) if len(active) > 1 else float("nan")
    return {
        "max_drawdown": max_drawdown(active),
        "ann_return": float(np.mean(active) * TRADING_DAYS),
        "information_ratio": float(np.mean(active) / std * math.sqrt(TRADING_DAYS)) if std and std > 0 else float("nan"),
        "tracking_error": float(std * math.sqrt(TRADING_DAYS)) if np.isfinite(std) else float("nan"),
        "cagr_difference": cagr(returns) - cagr(benchmark_returns),
    }


def daily_risk_free(days: pd.DatetimeIndex, annual: float = 0.0, rates: pd.Series | None = None,
                    source: str = "risk-free rates") -> np.ndarray:
    """The daily risk-free rate for each return day: a constant annual rate, or a series of annualised
    rates (indexed by date) taken as of each day (the last rate dated on or before it; no lookahead).
    Annual rates convert to daily by compounding: (1 + a) ** (1 / 252) - 1."""
    if rates is None:
        return np.full(len(days), (1.0 + annual) ** (1.0 / TRADING_DAYS) - 1.0)
    rates = rates.sort_index()
    known = rates.reindex(pd.DatetimeIndex(days), method="ffill")
    if known.isna().any():
        first = pd.DatetimeIndex(days)[np.asarray(known.isna())][0]
        raise ValueError(f"{source}: no rate dated on or before {first:%Y-%m-%d} (first rate {rates.index[0]:%Y-%m-%d})")
    return (1.0 + known.to_numpy(float)) ** (1.0 / TRADING_DAYS) - 1.0
