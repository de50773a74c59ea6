"""Linear fits from running moments must equal scikit-learn's own fits on the same samples."""

import numpy as np
import pytest
from sklearn.linear_model import ElasticNet, Lasso, Ridge

from portfolio_mlops.config import ModelSpec
from portfolio_mlops.errors import ConfigError
from portfolio_mlops.models import Moments, RunningMoments, fit_from_moments, make_estimator


def _regression(n=4000, p=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, 0.5, size=(n, p))
    coef = np.zeros(p)
    coef[:3] = [0.02, -0.01, 0.003][:p]
    y = x @ coef + 0.001 + rng.normal(0, 0.05, n)
    return x, y


@pytest.mark.parametrize(
    "estimator",
    [Ridge(alpha=1.0), Ridge(alpha=500.0), Lasso(alpha=2e-4, tol=1e-12, max_iter=100_000),
     ElasticNet(alpha=3e-4, l1_ratio=0.3, tol=1e-12, max_iter=100_000)],
    ids=["ridge", "ridge-strong", "lasso", "elasticnet"],
)
def test_fit_from_moments_matches_scikit_learn(estimator):
    x, y = _regression()
    reference = estimator.fit(x, y)
    fitted = fit_from_moments(estimator, Moments.of(x, y))
    np.testing.assert_allclose(fitted.coef_, reference.coef_, atol=1e-7)
    assert fitted.intercept_ == pytest.approx(reference.intercept_, abs=1e-7)
    np.testing.assert_allclose(fitted.predict(x), reference.predict(x), atol=1e-7)


def test_lasso_from_moments_zeroes_weak_coefficients_like_scikit_learn():
    x, y = _regression()
    strong = Lasso(alpha=4e-4)
    fitted = fit_from_moments(strong, Moments.of(x, y))
    assert set(np.flatnonzero(fitted.coef_)) == set(np.flatnonzero(strong.fit(x, y).coef_))
    assert fitted.coef_[0] != 0 and fitted.coef_[5] == 0


def test_running_moments_window_equals_moments_of_that_slice():
    x, y = _regression(n=300, p=3)
    date_pos = np.repeat(np.arange(30), 10)
    running = RunningMoments(x, y, date_pos, n_dates=32)
    window = running.window(5, 19)
    rows = (date_pos >= 5) & (date_pos <= 19)
    direct = Moments.of(x[rows], y[rows])
    assert window.n == direct.n == 150
    np.testing.assert_allclose(window.sum_xx, direct.sum_xx)
    np.testing.assert_allclose(window.sum_xy, direct.sum_xy)
    assert window.sum_y == pytest.approx(direct.sum_y)


def test_running_moments_skip_dates_without_samples():
    x, y = _regression(n=20, p=2)
    date_pos = np.array([0] * 10 + [3] * 10)
    running = RunningMoments(x, y, date_pos, n_dates=5)
    assert running.window(1, 2).n == 0
    assert running.window(0, 4).n == 20


def test_unknown_hyperparameter_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="alpah"):
        make_estimator(ModelSpec(algorithm="ridge", params={"alpah": 1.0}))


def test_hgb_gets_the_seed():
    model = make_estimator(ModelSpec(algorithm="hgb"), seed=7)
    assert model.get_params()["random_state"] == 7
