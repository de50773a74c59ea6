"""Walk-forward training and prediction with purged, time-ordered training windows.

Timeline per rebalance (all positions are rows of the trading calendar):
  T            decision date: features of T are known, predictions are made for T's cross-section
  T - gap      last sample date allowed in training, gap = lag + horizon + embargo, so every
               training label has ended (label_end_pos <= T - embargo): the purge
The model is refitted every `retrain_every_rebalances` rebalances on the expanding (or rolling) set
of allowed samples (a model with ModelSpec.refit_stride k only on every k-th of those dates); between
refits the last model is reused. No shuffling, no random splits; models that
sample training dates (gradient boosting) take one seeded-random date per block of the calendar
(`sampled_training_dates`), a choice that never looks at the data.

Daily scores (for the daily-sampled IC only; the backtest uses the rebalance predictions): every
trading day d from the first decision to the end of the out-of-sample period is scored by the model
in force on d, the one fitted at the latest refit on or before d. That model's training labels ended
at or before refit - embargo <= d, so a daily score uses nothing after its day.
"""

from __future__ import annotations

import dataclasses
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
TRAINING_GRID_LEVELS = 64  # steps per feature in gradient boosting's training data (_Trainer.fix_training_grid)
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


def model_schedule(schedule: Schedule, spec: ModelSpec) -> Schedule:
    """The run's schedule as one model follows it: refits on every `spec.refit_stride`-th refit date."""
    if spec.refit_stride == 1:
        return schedule
    return dataclasses.replace(schedule, refit_pos=schedule.refit_pos[:: spec.refit_stride])


@dataclass
class WalkForwardResult:
    algorithm: str
    predictions: pd.DataFrame  # date, ticker, date_pos, prediction, label, label_raw, refit_date
    refits: list[dict[str, Any]] = field(default_factory=list)
    model: BaseEstimator | None = None  # the last fitted model (what would trade next)
    configurations_tried: int = 1
    seconds: float = 0.0
    daily: pd.DataFrame | None = None  # date, ticker, date_pos, label, prediction: every OOS day (module doc)
    # The same algorithm trained with other seeds (seeded algorithms only; their `model` is not kept):
    # evaluation reports the spread over seeds, the model above is the one registered.
    other_seeds: dict[int, WalkForwardResult] = field(default_factory=dict)


def sampled_training_dates(n_dates: int, every: int, seed: int) -> np.ndarray:
    """Which calendar positions 0..n_dates-1 train a model that samples dates: one per block of `every`.

    Stratified, not every k-th: block b = positions [b*every, (b+1)*every) contributes the one date at a
    seeded random offset, so coverage stays even (one date a week at every=5) while different seeds train
    on different dates - the model's randomness, like bagging over days. The choice depends only on the
    calendar position and the seed, never on the data, and a date is in or out at every refit alike.
    Returns a boolean mask over positions.
    """
    offsets = np.random.default_rng(seed).integers(every, size=-(-n_dates // every))
    positions = np.arange(n_dates)
    return positions % every == offsets[positions // every]


class SharedSums:
    """The running moments of one FeatureSet's training samples, for every linear model walked forward on
    it: ridge, lasso and elasticnet of one run read the same samples, so the second and third reuse the
    first's sums (the same arrays, so the same fits bit for bit). runner.train_all makes one per run and
    passes it to each walk-forward; without one, each walk-forward computes its own."""

    def __init__(self, features: FeatureSet):
        self.features = features
        self.moments: RunningMoments | None = None

    def moments_for(self, features: FeatureSet) -> RunningMoments | None:
        return self.moments if features is self.features else None


def _running_moments(features: FeatureSet, x: np.ndarray | None, y: np.ndarray | None,
                     pos: np.ndarray | None, shared: SharedSums | None) -> RunningMoments:
    if shared is not None and (moments := shared.moments_for(features)) is not None:
        return moments
    if x is None:
        x, y, pos = _training_rows(features, None)
    moments = RunningMoments(x, y, pos, len(features.dates))
    if shared is not None and shared.features is features:
        shared.moments = moments
    return moments


def _training_rows(features: FeatureSet, sampled: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, date_pos) of the rows with a known training label, on the `sampled` dates only if given."""
    frame = features.frame
    pos = frame["date_pos"].to_numpy()
    known = np.isfinite(frame["label_train"].to_numpy())
    if sampled is not None:
        known &= sampled[pos]
    x = frame.loc[known, list(features.feature_names)].to_numpy(dtype=float)
    # int64 positions: searchsorted with int64 dates would copy an int32 array at every look-up
    return x, frame.loc[known, "label_train"].to_numpy(dtype=float), pos[known].astype(np.int64)


class _Trainer:
    """Fits one algorithm on a window of sample dates; linear models via running moments."""

    def __init__(self, features: FeatureSet, spec: ModelSpec, seed: int, shared: SharedSums | None = None):
        self.features = features
        self.spec, self.seed, self.names = spec, seed, features.feature_names
        self.linear = spec.algorithm in LINEAR_ALGORITHMS
        # Linear fits read every date for free (running moments); the others train on sampled dates.
        self.sampled = (None if self.linear or spec.train_sample_every_days == 1
                        else sampled_training_dates(len(features.dates), spec.train_sample_every_days, seed))
        # A model that samples dates only ever reads those rows (a tenth of the panel at every=10), unless an
        # inner search scores its validation tail on every date; a linear model without a search only
        # its running moments. self.x holds the rows fit() and search() read, in date order.
        self.x = self.y = self.pos = None
        self.rows_sampled = self.sampled is not None and not spec.search
        if not (self.linear and not spec.search):
            self.x, self.y, self.pos = _training_rows(features, self.sampled if self.rows_sampled else None)
        self.moments = _running_moments(features, self.x, self.y, self.pos, shared) if self.linear else None
        self.grid: tuple[np.ndarray, np.ndarray] | None = None  # (lo, step) per feature: fix_training_grid

    def fix_training_grid(self, last_date: int, levels: int = TRAINING_GRID_LEVELS) -> None:
        """Gradient boosting only: train on features snapped to `levels` equal steps of their range up to `last_date`.

        HGB re-sorts every feature to find its 255 quantile bins at every refit, about half its fit time on
        a full panel; on a feature that takes a few dozen values that sort is far cheaper (and binning.py
        finds those values by hashing, without the sort). Each value goes
        to the centre of its step (lo + k*step, lo + (k+1)*step], so HGB's thresholds, midway between
        centres, fall on the step edges and send an edge value left as the snapping does: the fitted
        model scores raw features exactly as snapped ones, and predictions use the raw values. Ranks are
        uniform on [-0.5, 0.5], so equal steps are equal-count bins. lo and the step come from dates up to
        the first training window's end (no look-ahead); later values outside that range get steps of
        their own.
        """
        if self.linear:
            return
        # every labelled row up to last_date, sampled date or not (self.x may hold the sampled ones only)
        frame = self.features.frame
        upto = (frame["date_pos"].to_numpy() <= last_date) & np.isfinite(frame["label_train"].to_numpy())
        if not upto.any():
            return
        columns = [frame[name].to_numpy(dtype=float)[upto] for name in self.names]
        lo = np.array([np.nanmin(column) for column in columns])
        span = np.array([np.nanmax(column) for column in columns]) - lo
        self.grid = lo, np.where(span > 0, span / levels, 1.0)

    def snapped(self, x: np.ndarray) -> np.ndarray:
        """`x` (a copy the caller owns) moved in place to its grid steps' centres; unchanged without a grid."""
        if self.grid is None:
            return x
        lo, step = self.grid
        # in place: the training rows are snapped per fit, never a second full-panel matrix (peak RSS)
        np.subtract(x, lo, out=x)
        np.divide(x, step, out=x)
        np.ceil(x, out=x)
        np.subtract(x, 0.5, out=x)
        np.multiply(x, step, out=x)
        np.add(x, lo, out=x)
        return x

    def frame(self, x: np.ndarray) -> pd.DataFrame:
        """Named columns: fitted models then carry feature_names_in_, and so do the logged models."""
        return pd.DataFrame(x, columns=list(self.names))

    def fit(self, first_date: int, last_date: int, params: dict[str, Any]) -> tuple[BaseEstimator, int]:
        estimator = make_estimator(self.spec, params, self.seed)
        if self.linear:
            window = self.moments.window(first_date, last_date)
            return fit_from_moments(estimator, window, self.names), int(window.n)
        from portfolio_mlops.binning import fast_binning

        lo, hi = np.searchsorted(self.pos, [first_date, last_date + 1])
        if self.sampled is not None and not self.rows_sampled:
            rows = np.arange(lo, hi)
            rows = rows[self.sampled[self.pos[rows]]]
            x, y = self.snapped(self.x[rows]), self.y[rows]
        else:
            x, y = self.snapped(self.x[lo:hi].copy()), self.y[lo:hi]
        with fast_binning():  # the same fit, bit for bit, without sorting every column (binning.py)
            return estimator.fit(self.frame(x), y), len(y)

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
    shared: SharedSums | None = None,
) -> WalkForwardResult:
    """Out-of-sample predictions for every rebalance date (see the module docstring for timing).
    `shared`: the linear models' sums of this feature set, if another walk-forward may reuse them."""
    with threadpool_limits(limits=threads):
        return _walk_forward(features, spec, walk_forward, labels, seed, progress, shared)


def _walk_forward(features: FeatureSet, spec: ModelSpec, walk_forward: WalkForwardConfig, labels: LabelConfig,
                  seed: int, progress: Progress, shared: SharedSums | None) -> WalkForwardResult:
    started = time.perf_counter()
    schedule = model_schedule(rebalance_schedule(features, walk_forward, labels), spec)
    trainer = _Trainer(features, spec, seed, shared)
    trainer.fix_training_grid(int(schedule.refit_pos[0]) - schedule.purge_gap)
    frame = features.frame
    # int64, as the positions looked up: searchsorted casts an int32 haystack to the needle's type, a copy
    # of the whole column at every call
    frame_pos = frame["date_pos"].to_numpy().astype(np.int64)
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
            segment_scores = model.predict(x_all.iloc[d_lo:d_hi]) if d_hi > d_lo else np.empty(0)
            if d_hi > d_lo:
                segment = frame.iloc[d_lo:d_hi][list(DAILY_COLUMNS[:-1])].copy()
                segment["prediction"] = segment_scores
                daily_blocks.append(segment[list(DAILY_COLUMNS)])
        lo, hi = np.searchsorted(frame_pos, [decision, decision + 1])
        block = frame.iloc[lo:hi][["date", "ticker", "date_pos", "label", "label_raw"]].copy()
        if trainer.linear:
            block["prediction"] = model.predict(x_all.iloc[lo:hi])
        else:
            # Every rebalance lies in its refit's daily segment, and a tree ensemble scores each row on its
            # own (no BLAS batching), so those scores are this block's, bit for bit: no second predict.
            block["prediction"] = segment_scores[lo - d_lo:hi - d_lo]
        block["refit_date"] = refits[-1]["decision_date"]
        outputs.append(block)
    predictions = pd.concat(outputs, ignore_index=True)
    tried = int(np.prod([len(v) for v in spec.search.values()])) if spec.search else 1
    daily = pd.concat(daily_blocks, ignore_index=True) if daily_blocks else predictions.iloc[:0][list(DAILY_COLUMNS)]
    return WalkForwardResult(spec.algorithm, predictions, refits, model, tried, time.perf_counter() - started, daily)
