"""Estimators, and exact linear fits from sufficient statistics.

Expanding-window walk-forward refits the same linear model on ever longer histories. Ridge, Lasso and
ElasticNet depend on the data only through the moments (n, sum x, sum y, X'X, X'y), and moments of a
window are a difference of running sums, so each refit costs O(p^2) instead of O(n p^2).
`fit_from_moments` returns a genuine fitted scikit-learn estimator whose coefficients equal what
`estimator.fit(X, y)` finds (same objective; tests pin this against scikit-learn itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import ElasticNet, Lasso, Ridge

from portfolio_mlops.algorithms import ALGORITHMS
from portfolio_mlops.config import ModelSpec
from portfolio_mlops.errors import ConfigError

# Both from the registry (portfolio_mlops/algorithms.py): the algorithms refitted from running moments,
# and those whose fit depends on the seed (gradient boosting: its sampled training dates and
# random_state), which evaluation reports as mean +- std over EvaluationConfig.seeds seeds.
LINEAR_ALGORITHMS = tuple(name for name, algorithm in ALGORITHMS.items() if algorithm.moment_refits)
SEEDED_ALGORITHMS = tuple(name for name, algorithm in ALGORITHMS.items() if algorithm.seeded)


def uses_seed(spec) -> bool:
    """Whether another seed gives this model spec other predictions: a seeded algorithm that samples its
    training dates (ModelSpec.train_sample_every_days > 1). On every date HGB is deterministic below
    its 200k-row bin subsample, so K seeds would be K identical fits."""
    return spec.algorithm in SEEDED_ALGORITHMS and spec.train_sample_every_days > 1


def make_estimator(spec: ModelSpec, params: dict[str, Any] | None = None, seed: int = 0) -> BaseEstimator:
    """A fresh, unfitted estimator for `spec` with `params` (defaults: spec.params).

    `seed` is gradient boosting's random_state (which rows its bin thresholds are computed from when a
    training set exceeds 200,000 rows). The walk-forward draws HGB's training dates with the same seed
    (walk_forward.sampled_training_dates), so different seeds give different models; the linear fits
    are deterministic.
    """
    base: BaseEstimator = ALGORITHMS[spec.algorithm].estimator(seed)
    chosen = spec.params if params is None else params
    try:
        return base.set_params(**chosen)
    except ValueError as exc:
        valid = sorted(base.get_params())
        raise ConfigError(f"models[{spec.algorithm}].params: {exc}; valid names: {valid}") from exc


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of a regression sample: count, sums, and uncentred cross-products."""

    n: float
    sum_x: np.ndarray
    sum_y: float
    sum_xx: np.ndarray
    sum_xy: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> "Moments":
        return cls(float(len(y)), x.sum(axis=0), float(y.sum()), x.T @ x, x.T @ y)

    def __sub__(self, other: "Moments") -> "Moments":
        return Moments(self.n - other.n, self.sum_x - other.sum_x, self.sum_y - other.sum_y,
                       self.sum_xx - other.sum_xx, self.sum_xy - other.sum_xy)

    def centred(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(X'X, X'y) after removing the means, plus the means themselves."""
        mean_x = self.sum_x / self.n
        mean_y = self.sum_y / self.n
        gram = self.sum_xx - self.n * np.outer(mean_x, mean_x)
        cross = self.sum_xy - self.n * mean_x * mean_y
        return gram, cross, mean_x, mean_y


class RunningMoments:
    """Prefix sums of per-date moments, so any window of whole dates is two look-ups away.

    `x` rows must be sorted by `date_pos`; dates are calendar positions 0..n_dates-1.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, date_pos: np.ndarray, n_dates: int):
        p = x.shape[1]
        self.n = np.zeros(n_dates + 1)
        self.sum_x = np.zeros((n_dates + 1, p))
        self.sum_y = np.zeros(n_dates + 1)
        self.sum_xx = np.zeros((n_dates + 1, p, p))
        self.sum_xy = np.zeros((n_dates + 1, p))
        bounds = np.searchsorted(date_pos, np.arange(n_dates + 1))
        # One small (rows x p) product per date: a loop over dates, not over tickers or samples.
        for day in np.flatnonzero(bounds[1:] > bounds[:-1]):
            xs, ys = x[bounds[day]:bounds[day + 1]], y[bounds[day]:bounds[day + 1]]
            self.n[day + 1] = len(ys)
            self.sum_x[day + 1] = xs.sum(axis=0)
            self.sum_y[day + 1] = ys.sum()
            self.sum_xx[day + 1] = xs.T @ xs
            self.sum_xy[day + 1] = xs.T @ ys
        for array in (self.n, self.sum_x, self.sum_y, self.sum_xx, self.sum_xy):
            np.cumsum(array, axis=0, out=array)

    def window(self, first_date: int, last_date: int) -> Moments:
        """Moments of all samples dated first_date..last_date (inclusive)."""
        lo, hi = max(first_date, 0), last_date + 1
        return Moments(
            float(self.n[hi] - self.n[lo]), self.sum_x[hi] - self.sum_x[lo], float(self.sum_y[hi] - self.sum_y[lo]),
            self.sum_xx[hi] - self.sum_xx[lo], self.sum_xy[hi] - self.sum_xy[lo],
        )


def fit_from_moments(estimator: BaseEstimator, moments: Moments,
                     feature_names: tuple[str, ...] | list[str] | None = None) -> BaseEstimator:
    """Fit a Ridge / Lasso / ElasticNet (fit_intercept=True) from moments; returns a fitted clone."""
    if moments.n < 2:
        raise ValueError("need at least two samples to fit")
    gram, cross, mean_x, mean_y = moments.centred()
    params = estimator.get_params()
    if isinstance(estimator, Ridge):
        # scikit-learn's Ridge: min ||y - Xw - b||^2 + alpha ||w||^2 (alpha not scaled by n).
        coef = np.linalg.solve(gram + params["alpha"] * np.eye(len(cross)), cross)
    elif isinstance(estimator, (Lasso, ElasticNet)):
        l1_ratio = 1.0 if isinstance(estimator, Lasso) else params["l1_ratio"]
        coef = _elastic_net_gram(gram / moments.n, cross / moments.n, params["alpha"], l1_ratio,
                                 tol=1e-12, max_iter=100_000)
    else:
        raise TypeError(f"{type(estimator).__name__} cannot be fitted from moments")
    fitted = clone(estimator)
    fitted.coef_ = coef
    fitted.intercept_ = float(mean_y - mean_x @ coef)
    fitted.n_features_in_ = len(coef)
    if feature_names is not None:  # as if fitted on a DataFrame with these columns
        fitted.feature_names_in_ = np.asarray(list(feature_names), dtype=object)
    if not isinstance(estimator, Ridge):
        fitted.n_iter_ = 0
        fitted.dual_gap_ = 0.0
    return fitted


def _elastic_net_gram(gram: np.ndarray, cross: np.ndarray, alpha: float, l1_ratio: float,
                      tol: float, max_iter: int) -> np.ndarray:
    """Coordinate descent for 0.5 w'Gw - c'w + alpha*l1*|w|_1 + 0.5*alpha*(1-l1)*|w|^2.

    With G = X'X/n and c = X'y/n (centred) this is scikit-learn's ElasticNet / Lasso objective.
    """
    # Python floats, not numpy scalars: the same IEEE operations in the same order (so the same bits as
    # the numpy version this replaces, pinned by tests/test_models.py), 2-3x faster for p ~ 14.
    p = len(cross)
    coef = [0.0] * p
    l1 = alpha * l1_ratio
    l2 = alpha * (1.0 - l1_ratio)
    diag = np.diag(gram).tolist()
    columns = np.ascontiguousarray(gram.T).tolist()  # columns[j] = G[:, j]
    cross = np.asarray(cross, dtype=float).tolist()
    gradient_part = (gram @ np.zeros(p)).tolist()  # G w, kept up to date incrementally
    for _ in range(max_iter):
        biggest_step = 0.0
        for j in range(p):
            if diag[j] <= 0:
                continue
            rho = cross[j] - gradient_part[j] + diag[j] * coef[j]
            sign = 1.0 if rho > 0 else -1.0 if rho < 0 else 0.0 if rho == 0 else rho  # np.sign (of -0.0: 0.0; NaN)
            new = sign * max(abs(rho) - l1, 0.0) / (diag[j] + l2)
            step = new - coef[j]
            if step != 0.0:
                column = columns[j]
                for k in range(p):
                    gradient_part[k] += column[k] * step
                coef[j] = new
                biggest_step = max(biggest_step, abs(step))
        if biggest_step <= tol * max(1.0, max(abs(c) for c in coef)):
            break
    return np.array(coef, dtype=float)


def feature_weights(estimator: BaseEstimator, feature_names: tuple[str, ...]) -> dict[str, float]:
    """Coefficients of a linear model; empty for models without them."""
    coef = getattr(estimator, "coef_", None)
    if coef is None:
        return {}
    return {name: float(c) for name, c in zip(feature_names, np.ravel(coef))}
