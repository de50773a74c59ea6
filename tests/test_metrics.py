"""Metric functions agree with an established library (empyrical) and with direct definitions."""

import empyrical
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from portfolio_mlops import metrics


@pytest.fixture(params=[0, 1, 2])
def returns(request):
    rng = np.random.default_rng(request.param)
    return pd.Series(rng.normal(0.0004, 0.012, 1500), index=pd.bdate_range("2015-01-01", periods=1500))


def test_cagr_matches_empyrical_annual_return(returns):
    assert metrics.cagr(returns.to_numpy()) == pytest.approx(empyrical.annual_return(returns), rel=1e-10)


def test_annual_volatility_matches_empyrical(returns):
    assert metrics.annual_volatility(returns.to_numpy()) == pytest.approx(empyrical.annual_volatility(returns), rel=1e-10)


def test_sharpe_matches_empyrical(returns):
    assert metrics.sharpe_ratio(returns.to_numpy()) == pytest.approx(empyrical.sharpe_ratio(returns), rel=1e-10)


def test_sortino_matches_empyrical(returns):
    assert metrics.sortino_ratio(returns.to_numpy()) == pytest.approx(empyrical.sortino_ratio(returns), rel=1e-10)


def test_max_drawdown_matches_empyrical(returns):
    assert metrics.max_drawdown(returns.to_numpy()) == pytest.approx(empyrical.max_drawdown(returns), rel=1e-10)


def test_calmar_matches_empyrical(returns):
    assert metrics.calmar_ratio(returns.to_numpy()) == pytest.approx(empyrical.calmar_ratio(returns), rel=1e-10)


def test_drawdown_counts_a_fall_from_the_starting_value():
    assert metrics.max_drawdown(np.array([-0.1, 0.05])) == pytest.approx(-0.1)


def test_information_ratio_of_a_series_against_itself_is_undefined_and_excess_zero(returns):
    excess = metrics.excess_metrics(returns.to_numpy(), returns.to_numpy())
    assert excess["ann_return"] == 0.0 and np.isnan(excess["information_ratio"])


def test_rank_ic_by_date_matches_scipy_spearman():
    rng = np.random.default_rng(3)
    dates = np.repeat(np.arange(5), 40)
    prediction = rng.normal(size=200)
    realised = 0.3 * prediction + rng.normal(size=200)
    prediction[::7] = np.round(prediction[::7])  # some ties
    ic = metrics.rank_ic_by_date(dates, prediction, realised)
    for day in range(5):
        rows = dates == day
        assert ic[day] == pytest.approx(spearmanr(prediction[rows], realised[rows]).statistic, abs=1e-12)


def test_rank_ic_is_undefined_for_constant_predictions():
    ic = metrics.rank_ic_by_date(np.zeros(10), np.ones(10), np.arange(10.0))
    assert np.isnan(ic.iloc[0])


def _predictions(ic_per_date, n_dates=40, n_names=50, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for day in range(n_dates):
        label = rng.normal(0, 0.05, n_names)
        prediction = ic_per_date * (label - label.mean()) / 0.05 + rng.normal(0, 1, n_names)
        frames.append(pd.DataFrame({"date": day, "prediction": prediction, "label": label - label.mean(), "label_raw": label}))
    return pd.concat(frames, ignore_index=True)


def test_ic_tstat_uses_only_non_overlapping_dates():
    frame = _predictions(0.3)
    overlapping = metrics.signal_metrics(frame, horizon_days=21, rebalance_every_days=7, top_n=5)
    independent = metrics.signal_metrics(frame, horizon_days=21, rebalance_every_days=21, top_n=5)
    assert overlapping["ic_independent_dates"] == 14  # every third of 40 dates
    assert independent["ic_independent_dates"] == 40
    assert overlapping["ic_dates"] == 40


def test_signal_metrics_see_a_real_signal_and_no_signal():
    strong = metrics.signal_metrics(_predictions(0.5), 21, 21, 5)
    none = metrics.signal_metrics(_predictions(0.0), 21, 21, 5)
    assert strong["ic_mean"] > 0.2 and strong["ic_tstat"] > 5 and strong["hit_rate"] > 0.55
    assert strong["long_short_period_mean"] > 0
    assert abs(none["ic_tstat"]) < 3 and abs(none["ic_mean"]) < 0.05


def test_oos_r2_is_zero_for_a_zero_forecast_and_negative_for_noise():
    frame = _predictions(0.0)
    zero = metrics.signal_metrics(frame.assign(prediction=0.0), 21, 21, 5)
    assert zero["oos_r2"] == pytest.approx(0.0)
    assert metrics.signal_metrics(frame, 21, 21, 5)["oos_r2"] < 0
