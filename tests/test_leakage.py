"""Leakage tests: nothing found where there is nothing, a planted signal found, shuffled labels ~ 0.

Thresholds are |t| < 3: deterministic seeds make the tests repeatable, and a leak (a label reaching
the features or the training window) drives these statistics far past 3, as the control test shows.
"""

import math

import numpy as np
import pytest

from portfolio_mlops.config import BenchmarkConfig, LabelConfig, ModelSpec, PortfolioConfig, RunConfig, WalkForwardConfig
from portfolio_mlops.data.layouts import read_embedded
from portfolio_mlops.data.validation import validate_prices
from portfolio_mlops.evaluation import evaluate
from portfolio_mlops.features import FeatureSet, build_features, to_grid
from portfolio_mlops.walk_forward import walk_forward_predictions
from synthetic import random_walk_panel

CFG = RunConfig(
    labels=LabelConfig(horizon_days=21),
    walk_forward=WalkForwardConfig(min_train_days=252),
    portfolio=PortfolioConfig(top_n=10),
    benchmarks=BenchmarkConfig(random_seeds=0, factors=[]),
    models=[ModelSpec(algorithm="ridge"), ModelSpec(algorithm="lasso", params={"alpha": 1e-5})],
)


def _run(prices, features: FeatureSet | None = None, cfg: RunConfig = CFG):
    features = features or build_features(prices, cfg.features, cfg.labels)
    results = {s.name: walk_forward_predictions(features, s, cfg.walk_forward, cfg.labels) for s in cfg.models}
    return evaluate(features, to_grid(prices), results, cfg, None).summary


def _excess_tstat(algorithm_summary, years):
    return algorithm_summary["excess"]["equal_weight"]["information_ratio"] * math.sqrt(years)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_signal_panel_shows_no_significant_ic_or_excess_return(seed):
    prices = random_walk_panel(n_tickers=80, n_days=1300, seed=seed)
    summary = _run(prices)
    years = summary["evaluation"]["return_days"] / 252
    for name, algorithm in summary["algorithms"].items():
        assert abs(algorithm["signal"]["ic_tstat"]) < 3, name
        assert abs(algorithm["signal"]["ic_hac_tstat"]) < 3, name  # the daily IC's power finds nothing either
        assert algorithm["signal"]["ic_dates"] > 500, name
        assert abs(algorithm["signal"]["ic_mean"]) < 0.03, name
        assert abs(_excess_tstat(algorithm, years)) < 3, name


def test_planted_signal_is_found_by_the_linear_models():
    prices = random_walk_panel(n_tickers=80, n_days=1300, seed=4, signal_strength=0.002)
    summary = _run(prices)
    for name, algorithm in summary["algorithms"].items():
        assert algorithm["signal"]["ic_mean"] > 0.1, name
        assert algorithm["signal"]["ic_tstat"] > 4, name
        # every day instead of one date a month: the same signal, a larger t
        assert algorithm["signal"]["ic_hac_tstat"] > algorithm["signal"]["ic_tstat"], name
        assert algorithm["excess"]["equal_weight"]["ann_return"] > 0.05, name


def test_control_a_label_leaked_into_the_features_is_caught_by_these_thresholds():
    prices = random_walk_panel(n_tickers=80, n_days=1300, seed=0)
    features = build_features(prices, CFG.features, CFG.labels)
    leaked = features.frame.copy()
    leaked["ret_1"] = leaked["label"].rank(pct=True).fillna(0.5)  # tomorrow's news in today's row
    summary = _run(prices, FeatureSet(leaked, features.feature_names, features.skipped, features.dates))
    assert summary["algorithms"]["ridge"]["signal"]["ic_tstat"] > 3


def test_shuffled_labels_on_real_data_give_ic_near_zero():
    raw = read_embedded()
    prices, _, _ = validate_prices(raw, CFG.validation)
    features = build_features(prices, CFG.features, CFG.labels)
    frame = features.frame.copy()
    rng = np.random.default_rng(0)
    frame["label_train"] = rng.permutation(frame["label_train"].to_numpy())  # what the model learns from
    shuffled = FeatureSet(frame, features.feature_names, features.skipped, features.dates)
    summary = _run(prices, shuffled, CFG.model_copy(update={"models": [ModelSpec(algorithm="ridge")]}))
    signal = summary["algorithms"]["ridge"]["signal"]
    assert abs(signal["ic_tstat"]) < 3
    assert abs(signal["ic_hac_tstat"]) < 3
    assert abs(signal["ic_mean"]) < 0.05
