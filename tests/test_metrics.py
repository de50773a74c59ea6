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


def test_average_ranks_by_date_are_pandas_groupby_ranks_bit_for_bit():
    # the vectorised ranks must not move any IC: same floats as pandas for ties, unsorted dates,
    # one-name dates and dates of different sizes
    rng = np.random.default_rng(5)
    dates = rng.integers(0, 30, 2000)
    dates[:3] = 99  # a small date
    values = np.round(rng.normal(size=2000), 1)  # many ties
    values[10], values[11] = -0.0, 0.0
    dates[-1] = 1000  # a date with one name
    expected = pd.Series(values).groupby(dates).rank().to_numpy()
    np.testing.assert_array_equal(metrics.average_ranks_by_date(dates, values), expected)
    timestamps = pd.Timestamp("2020-01-01") + pd.to_timedelta(dates, "D")
    np.testing.assert_array_equal(metrics.average_ranks_by_date(timestamps.to_numpy(), values), expected)


@pytest.mark.parametrize("ties", [True, False])
def test_average_ranks_of_dates_already_in_order_are_pandas_groupby_ranks_bit_for_bit(ties):
    # the chain's frames come grouped by date in date order (no factorise, no regrouping) and model
    # scores are mostly tie-free (positions + 1): both shortcuts must give pandas' floats exactly
    rng = np.random.default_rng(7)
    dates = np.sort(rng.integers(0, 40, 3000))
    values = np.round(rng.normal(size=3000), 1) if ties else rng.normal(size=3000)
    values[5] = -np.inf
    expected = pd.Series(values).groupby(dates).rank().to_numpy()
    np.testing.assert_array_equal(metrics.average_ranks_by_date(dates, values), expected)
    days = (pd.Timestamp("2020-01-01") + pd.to_timedelta(dates, "D")).to_numpy()
    np.testing.assert_array_equal(metrics.average_ranks_by_date(days, values), expected)
    tied_infinities = values.copy()
    tied_infinities[dates == dates[5]] = -np.inf  # ties among non-finite values take the tie arithmetic too
    np.testing.assert_array_equal(metrics.average_ranks_by_date(dates, tied_infinities),
                                  pd.Series(tied_infinities).groupby(dates).rank().to_numpy())


def test_label_ranks_are_computed_once_per_equal_labels_and_equal_fresh_ranks():
    rng = np.random.default_rng(8)
    dates = np.repeat(np.arange(30), 50)
    labels = np.round(rng.normal(size=1500), 2)
    label_ranks = metrics.LabelRanks()

    first = label_ranks(dates, labels)
    again = label_ranks(dates.copy(), labels.copy())  # another frame's copy of the same labels
    other = label_ranks(dates, labels[::-1].copy())

    assert again is first
    np.testing.assert_array_equal(first, metrics.average_ranks_by_date(dates, labels))
    np.testing.assert_array_equal(other, metrics.average_ranks_by_date(dates, labels[::-1]))
    labels[:] = 0.0  # the caller's array changing later does not change what was cached
    np.testing.assert_array_equal(label_ranks(dates, labels), metrics.average_ranks_by_date(dates, labels))


def test_signal_metrics_are_the_same_with_labels_ranked_once_for_several_algorithms():
    label_ranks = metrics.LabelRanks()
    for seed in range(3):
        frame = _predictions(0.3, seed=seed).assign(label=_predictions(0.3, seed=0)["label"])
        alone = metrics.daily_signal_metrics(frame[["date", "label", "prediction"]], 5)
        shared = metrics.daily_signal_metrics(frame[["date", "label", "prediction"]], 5, label_ranks)
        assert shared == alone
        assert metrics.signal_metrics(frame, 21, 21, 5, label_ranks) == metrics.signal_metrics(frame, 21, 21, 5)


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


# --- daily IC: Pearson, and the Newey-West (HAC) t of its mean ----------------------------------------

def _autocorrelated_series(n=600, seed=3):
    """An AR(1)-like series with a mean, like overlapping-label daily ICs (fixed seed: a fixed series)."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0, 0.1, n)
    x = np.empty(n)
    x[0] = shocks[0]
    for i in range(1, n):
        x[i] = 0.9 * x[i - 1] + shocks[i]
    return 0.02 + x


@pytest.mark.parametrize("lags", [1, 5, 21])
def test_hac_tstat_equals_statsmodels_newey_west_on_a_fixed_series(lags):
    sm = pytest.importorskip("statsmodels.api", reason="statsmodels is in the dev extra")
    series = _autocorrelated_series()
    ours = metrics.hac_mean_stats(series, lags)

    fit = sm.OLS(series, np.ones((len(series), 1))).fit(cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": False})

    assert ours["tstat"] == pytest.approx(float(fit.tvalues[0]), rel=0, abs=1e-10)
    assert ours["se"] == pytest.approx(float(fit.bse[0]), rel=0, abs=1e-10)
    assert ours["min_detectable"] == pytest.approx(2 * float(fit.bse[0]), rel=0, abs=1e-10)


def test_hac_sees_the_autocorrelation_the_iid_t_ignores():
    series = _autocorrelated_series()
    iid_t = series.mean() / (series.std(ddof=0) / np.sqrt(len(series)))
    stats = metrics.hac_mean_stats(series, 21)
    assert abs(stats["tstat"]) < abs(iid_t) / 2  # positive autocorrelation: far fewer independent dates
    assert stats["effective_dates"] < len(series) / 4
    assert metrics.hac_mean_stats(np.random.default_rng(0).normal(size=2000), 21)["effective_dates"] == pytest.approx(2000, rel=0.2)


def test_pearson_ic_per_date_matches_numpy():
    rng = np.random.default_rng(5)
    dates = np.repeat(np.arange(4), 30)
    prediction, realised = rng.normal(size=120), rng.normal(size=120)
    ic = metrics.pearson_ic_by_date(dates, prediction, realised)
    for day in range(4):
        rows = dates == day
        assert ic[day] == pytest.approx(np.corrcoef(prediction[rows], realised[rows])[0, 1], abs=1e-12)


def test_daily_signal_metrics_report_power_figures_and_ignore_unknown_labels():
    frame = _predictions(0.3, n_dates=200).assign(date_pos=lambda f: f["date"])
    frame.loc[frame["date"] >= 190, "label"] = np.nan  # the latest days: labels not known yet
    out = metrics.daily_signal_metrics(frame, horizon_days=5)
    assert out["ic_dates"] == 190
    assert out["ic_hac_lags"] == 5
    assert out["rank_ic_mean"] > 0.2 and out["pearson_ic_mean"] > 0.2 and out["ic_hac_tstat"] > 10
    assert out["min_detectable_ic"] < out["rank_ic_mean"]
    assert 0 < out["effective_dates"] < 400


# --- risk-free rate -------------------------------------------------------------------------------------

def test_sharpe_over_a_risk_free_rate_equals_the_hand_computation():
    returns = np.array([0.01, -0.005, 0.002, 0.004])
    # excess over rf = 0.001/day: [0.009, -0.006, 0.001, 0.003], mean 0.00175,
    # sample variance (0.00725^2 + 0.00775^2 + 0.00075^2 + 0.00125^2) / 3 = 3.825e-5
    by_hand = 0.00175 / np.sqrt(3.825e-5) * np.sqrt(252)

    assert metrics.sharpe_ratio(returns, 0.001) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(4.4918, abs=1e-4)
    assert metrics.sharpe_ratio(returns, 0.001) < metrics.sharpe_ratio(returns)


def test_sharpe_and_sortino_over_a_constant_rate_match_empyrical(returns):
    rf = metrics.daily_risk_free(returns.index, annual=0.03)[0]

    assert rf == pytest.approx(1.03 ** (1 / 252) - 1, rel=1e-12)
    assert metrics.sharpe_ratio(returns.to_numpy(), rf) == pytest.approx(empyrical.sharpe_ratio(returns, risk_free=rf), rel=1e-10)
    assert metrics.sortino_ratio(returns.to_numpy(), rf) == pytest.approx(
        empyrical.sortino_ratio(returns, required_return=rf), rel=1e-10)
    # the other figures are of the raw returns, whatever the rate
    assert metrics.portfolio_metrics(returns.to_numpy(), rf)["cagr"] == metrics.portfolio_metrics(returns.to_numpy())["cagr"]


def test_daily_risk_free_series_uses_the_last_rate_known_on_each_day():
    days = pd.bdate_range("2020-01-01", periods=5)  # Wed 1 .. Tue 7 January
    rates = pd.Series([0.02, 0.05], index=pd.to_datetime(["2019-12-31", "2020-01-06"]))

    daily = metrics.daily_risk_free(days, rates=rates)

    low, high = 1.02 ** (1 / 252) - 1, 1.05 ** (1 / 252) - 1
    assert daily == pytest.approx([low, low, low, high, high], rel=1e-12)  # Monday 6th is the first day at 5%
    with pytest.raises(ValueError, match="no rate dated on or before 2020-01-01"):
        metrics.daily_risk_free(days, rates=rates[1:], source="rf.csv")


def test_run_config_risk_free_rate_constant_or_csv_and_errors_name_the_file(tmp_path):
    from portfolio_mlops.config import load_config
    from portfolio_mlops.errors import ConfigError
    from portfolio_mlops.evaluation import _risk_free

    days = pd.bdate_range("2020-01-01", periods=4)
    daily, info = _risk_free(load_config(overrides={"evaluation.risk_free_annual": 0.02}), days)
    assert daily == pytest.approx([1.02 ** (1 / 252) - 1] * 4, rel=1e-12)
    assert info["label"] == "rf = 2.00%/yr (constant)"
    assert _risk_free(load_config(), days)[1]["label"] == "rf = 0"

    good = tmp_path / "rf.csv"
    good.write_text("date,rate\n2019-12-31,0.01\n2020-01-03,0.03\n", encoding="utf-8")
    daily, info = _risk_free(load_config(overrides={"evaluation.risk_free_csv": str(good)}), days)
    assert daily == pytest.approx([1.01 ** (1 / 252) - 1] * 2 + [1.03 ** (1 / 252) - 1] * 2, rel=1e-12)
    assert "rf.csv" in info["label"]

    percent = tmp_path / "percent.csv"
    percent.write_text("date,rate\n2019-12-31,2.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"evaluation.risk_free_csv .*percent.csv: data row 1 .*0.02 = 2%"):
        _risk_free(load_config(overrides={"evaluation.risk_free_csv": str(percent)}), days)
    columns = tmp_path / "columns.csv"
    columns.write_text("day,yield\n2019-12-31,0.02\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"columns.csv: needs columns date, rate"):
        _risk_free(load_config(overrides={"evaluation.risk_free_csv": str(columns)}), days)


def test_without_daily_scores_the_daily_figures_are_missing_not_zero():
    """A training folder written before daily scores existed: the report shows n/a, not a fake 0."""
    empty = pd.DataFrame({"date": [], "prediction": [], "label": []})
    out = metrics.daily_signal_metrics(empty, horizon_days=21)
    assert out["ic_dates"] == 0
    assert all(np.isnan(out[key]) for key in ("rank_ic_mean", "ic_hac_tstat", "effective_dates", "min_detectable_ic"))
