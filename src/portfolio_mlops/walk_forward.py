"""Walk-forward training and prediction with purged, time-ordered training windows.

Timeline per rebalance (all positions are rows of the trading calendar):
  T            decision date: features of T are known, predictions are made for T's cross-section
  T - gap      last sample date allowed in training, gap = lag + horizon + embargo, so every
               training label has ended (label_end_pos <= T - embargo): the purge
The model is refitted every `retrain_every_rebalances` rebalances on the expanding (or rolling) set
of allowed samples; between refits the last model is reused. No shuffling, no random splits.

Daily scores (for the daily-sampled IC only; the backtest uses the rebalance predictions): every
trading day d from the first decision to the end of the out-of-sample period is scored by the model
in force on d, the one fitted at the latest refit on or before d. That model's training labels ended
at or before refit - embargo <= d, so a daily score uses nothing after its day.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from threadpoolctl import threadpool_limits

from portfolio_mlops.config import LabelConfig, ModelSpec, WalkForwardConfig
from portfolio_mlops.errors import InsufficientDataError
from portfolio_mlops.features import FeatureSet
from portfolio_mlops.metrics import rank_ic_by_date
from portfolio_mlops.models import LINEAR_ALGORITHMS, RunningMoments, feature_weights, fit_from_moments, make_estimator

Progress = Callable[[int, int, str], None]
DAILY_COLUMNS = ("date", "ticker", "date_pos", "label", "prediction")


def _silent(done: int, total: int, message: str) -> None:
    return None


@dataclass(frozen=True)
class Schedule:
    rebalance_pos: np.ndarray  # calendar positions of decision dates
    refit_pos: np.ndarray  # the subset where the model is refitted
    purge_gap: int  # trading days between the last training sample date and the decision date
    last_pos: int = -1  # last calendar position of the out-of-sample period (daily scores end here)


def rebalance_schedule(features: FeatureSet, walk_forward: WalkForwardConfig, labels: LabelConfig) -> Schedule:
    """Decision dates: every k trading days from the first date with `min_train_days` of known labels."""
    gap = labels.execution_lag_days + labels.horizon_days + walk_forward.embargo_days
    sample_dates = np.unique(features.frame["date_pos"].to_numpy())
    if len(sample_dates) <= walk_forward.min_train_days:
        raise InsufficientDataError(
            f"only {len(sample_dates)} trading days have features; walk-forward needs more than "
            f"min_train_days={walk_forward.min_train_days} (plus the {gap}-day purge) before its first decision"
        )
    first = int(sample_dates[walk_forward.min_train_days - 1]) + gap
    last = int(sample_dates[-1])
    dates = features.dates
    if walk_forward.start:
        first = max(first, int(dates.searchsorted(pd.Timestamp(walk_forward.start))))
    if walk_forward.end:
        last = min(last, int(dates.searchsorted(pd.Timestamp(walk_forward.end), side="right")) - 1)
    positions = np.arange(first, last + 1, walk_forward.rebalance_every_days)
    positions = positions[np.isin(positions, sample_dates)]
    if len(positions) < 2:
        raise InsufficientDataError(
            f"walk-forward leaves {len(positions)} decision date(s) between {dates[min(first, len(dates) - 1)]:%Y-%m-%d} "
            f"and {dates[last]:%Y-%m-%d}; need at least 2 (use more data or a smaller min_train_days)"
        )
    return Schedule(positions, positions[:: walk_forward.retrain_every_rebalances], gap, int(last))


@dataclass
class WalkForwardResult:
    algorithm: str
    predictions: pd.DataFrame  # date, ticker, date_pos, prediction, label, label_raw, refit_date
    refits: list[dict[str, Any]] = field(default_factory=list)
    model: BaseEstimator | None = None  # the last fitted model (what would trade next)
    configurations_tried: int = 1
    seconds: float = 0.0
    daily: pd.DataFrame | None = None  # date, ticker, date_pos, label, prediction: every OOS day (module doc)


class _Trainer:
    """Fits one algorithm on a window of sample dates; linear models via running moments."""

    def __init__(self, features: FeatureSet, spec: ModelSpec, seed: int):
        frame = features.frame
        self.spec, self.seed, self.names = spec, seed, features.feature_names
        known = np.isfinite(frame["label_train"].to_numpy())
        self.x = frame.loc[known, list(self.names)].to_numpy(dtype=float)
        self.y = frame.loc[known, "label_train"].to_numpy(dtype=float)
        self.pos = frame.loc[known, "date_pos"].to_numpy()
        self.linear = spec.algorithm in LINEAR_ALGORITHMS
        self.moments = RunningMoments(self.x, self.y, self.pos, len(features.dates)) if self.linear else None

    def frame(self, x: np.ndarray) -> pd.DataFrame:
        """Named columns: fitted models then carry feature_names_in_, and so do the logged models."""
        return pd.DataFrame(x, columns=list(self.names))

    def fit(self, first_date: int, last_date: int, params: dict[str, Any]) -> tuple[BaseEstimator, int]:
        estimator = make_estimator(self.spec, params, self.seed)
        if self.linear:
            window = self.moments.window(first_date, last_date)
            return fit_from_moments(estimator, window, self.names), int(window.n)
        lo, hi = np.searchsorted(self.pos, [first_date, last_date + 1])
        rows = np.arange(lo, hi)
        stride = self.spec.train_sample_every_days
        if stride > 1:
            rows = rows[self.pos[rows] % stride == 0]
        return estimator.fit(self.frame(self.x[rows]), self.y[rows]), len(rows)

    def search(self, first_date: int, last_date: int, gap: int) -> tuple[dict[str, Any], dict[str, float]]:
        """Pick params on a purged validation tail of the training window by mean rank IC."""
        grid = self.spec.search or {}
        keys = list(grid)
        candidates = [dict(self.spec.params, **dict(zip(keys, values))) for values in itertools.product(*grid.values())]
        span = last_date - first_date + 1
        validation_first = last_date - int(span * self.spec.validation_fraction) + 1
        inner_last = validation_first - gap
        if inner_last - first_date < 21:
            return dict(self.spec.params), {}
        lo, hi = np.searchsorted(self.pos, [validation_first, last_date + 1])
        scores: dict[str, float] = {}
        best, best_score = candidates[0], -np.inf
        for params in candidates:
            model, _ = self.fit(first_date, inner_last, params)
            ic = rank_ic_by_date(self.pos[lo:hi], model.predict(self.frame(self.x[lo:hi])), self.y[lo:hi]).mean()
            scores[str({k: params[k] for k in keys})] = float(ic)
            if np.isfinite(ic) and ic > best_score:
                best, best_score = params, ic
        return best, scores


def walk_forward_predictions(
    features: FeatureSet,
    spec: ModelSpec,
    walk_forward: WalkForwardConfig,
    labels: LabelConfig,
    seed: int = 0,
    progress: Progress = _silent,
    threads: int = 1,
) -> WalkForwardResult:
    """Out-of-sample predictions for every rebalance date (see the module docstring for timing)."""
    with threadpool_limits(limits=threads):
        return _walk_forward(features, spec, walk_forward, labels, seed, progress)


def _walk_forward(features: FeatureSet, spec: ModelSpec, walk_forward: WalkForwardConfig, labels: LabelConfig,
                  seed: int, progress: Progress) -> WalkForwardResult:
    started = time.perf_counter()
    schedule = rebalance_schedule(features, walk_forward, labels)
    trainer = _Trainer(features, spec, seed)
    frame = features.frame
    frame_pos = frame["date_pos"].to_numpy()
    x_all = frame[list(features.feature_names)]
    refit_set = set(schedule.refit_pos.tolist())
    outputs, refits = [], []
    model = None
    n_refits = len(schedule.refit_pos)
    # Daily scoring segments: refit k's model scores days [refit_k, refit_{k+1}) (the last up to last_pos).
    segment_end = dict(zip(schedule.refit_pos.tolist(), schedule.refit_pos[1:].tolist() + [schedule.last_pos + 1]))
    daily_blocks = []
    for decision in schedule.rebalance_pos:
        if decision in refit_set:
            last_train = decision - schedule.purge_gap
            first_train = 0 if walk_forward.window == "expanding" else last_train - walk_forward.rolling_window_days + 1
            fit_started = time.perf_counter()
            params, scores = (trainer.search(first_train, last_train, schedule.purge_gap)
                              if spec.search else (dict(spec.params), {}))
            model, n_train = trainer.fit(first_train, last_train, params)
            refits.append({
                "decision_date": features.dates[decision].strftime("%Y-%m-%d"),
                "train_first_date": features.dates[max(first_train, 0)].strftime("%Y-%m-%d"),
                "train_last_date": features.dates[last_train].strftime("%Y-%m-%d"),
                "train_samples": n_train,
                "params": params,
                "search_scores": scores,
                "coefficients": feature_weights(model, features.feature_names),
                "seconds": round(time.perf_counter() - fit_started, 4),
            })
            progress(len(refits), n_refits, f"{spec.algorithm}: refit {len(refits)}/{n_refits}")
            d_lo, d_hi = np.searchsorted(frame_pos, [decision, segment_end[int(decision)]])
            if d_hi > d_lo:
                segment = frame.iloc[d_lo:d_hi][list(DAILY_COLUMNS[:-1])].copy()
                segment["prediction"] = model.predict(x_all.iloc[d_lo:d_hi])
                daily_blocks.append(segment[list(DAILY_COLUMNS)])
        lo, hi = np.searchsorted(frame_pos, [decision, decision + 1])
        block = frame.iloc[lo:hi][["date", "ticker", "date_pos", "label", "label_raw"]].copy()
        block["prediction"] = model.predict(x_all.iloc[lo:hi])
        block["refit_date"] = refits[-1]["decision_date"]
        outputs.append(block)
    predictions = pd.concat(outputs, ignore_index=True)
    tried = int(np.prod([len(v) for v in spec.search.values()])) if spec.search else 1
    daily = pd.concat(daily_blocks, ignore_index=True) if daily_blocks else predictions.iloc[:0][list(DAILY_COLUMNS)]
    return WalkForwardResult(spec.algorithm, predictions, refits, model, tried, time.perf_counter() - started, daily)
