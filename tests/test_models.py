"""Linear fits from running moments must equal scikit-learn's own fits on the same samples; the algorithm
registry says truly what each algorithm is."""

import re

import numpy as np
import pytest
from sklearn.linear_model import ElasticNet, Lasso, Ridge

from portfolio_mlops.algorithms import ALGORITHMS
from portfolio_mlops.config import ModelSpec, RunConfig, load_config
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


# --- the algorithm registry (portfolio_mlops/algorithms.py): one entry per algorithm, all else derived ---

@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_each_registered_algorithm_is_a_default_model_whose_defaults_its_estimator_accepts(name):
    algorithm = ALGORITHMS[name]
    spec = next(m for m in RunConfig().models if m.algorithm == name)
    assert (spec.params, spec.train_sample_every_days, spec.refit_stride) == (
        algorithm.params, algorithm.train_sample_every_days, algorithm.refit_stride)
    estimator = make_estimator(spec)
    assert {key: estimator.get_params()[key] for key in spec.params} == spec.params


def test_only_models_that_cost_a_full_fit_skip_refit_dates_by_default():
    # linear refits are free (running moments): they follow every refit date; gradient boosting every 2nd
    assert {name: a.refit_stride for name, a in ALGORITHMS.items()} == {
        "ridge": 1, "lasso": 1, "elasticnet": 1, "hgb": 2}
    assert ModelSpec(algorithm="hgb").refit_stride == 1  # an explicit spec follows the schedule unless told
    with pytest.raises(ConfigError, match=r"models\.0\.refit_stride"):
        load_config(overrides={"models": [{"algorithm": "hgb", "refit_stride": 0}]})


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_an_algorithm_is_registered_as_seeded_exactly_when_the_seed_changes_its_estimator(name):
    spec = ModelSpec(algorithm=name)
    differs = make_estimator(spec, seed=0).get_params() != make_estimator(spec, seed=1).get_params()
    assert differs == ALGORITHMS[name].seeded


@pytest.mark.parametrize("name", [name for name, a in ALGORITHMS.items() if a.moment_refits])
def test_an_algorithm_registered_for_moment_refits_fits_from_moments_as_scikit_learn_does(name):
    x, y = _regression()
    estimator = make_estimator(ModelSpec(algorithm=name, params=ALGORITHMS[name].params))
    if "tol" in estimator.get_params():  # converge fully, so both sides find the same optimum
        estimator.set_params(tol=1e-12, max_iter=100_000)
    fitted = fit_from_moments(estimator, Moments.of(x, y))
    np.testing.assert_allclose(fitted.predict(x), estimator.fit(x, y).predict(x), atol=1e-7)


def test_an_unregistered_algorithm_is_refused_naming_the_registered_ones(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("models:\n  - algorithm: xgb\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(
            "models.0.algorithm: Input should be 'ridge', 'lasso', 'elasticnet' or 'hgb' (got 'xgb')")):
        load_config(path)


def test_the_local_runner_reads_the_train_figure_line_of_every_registered_algorithm():
    from portfolio_mlops_kfp.pipelines.local import FIGURES

    pattern = next(p for step, p, _ in FIGURES if step == "train")
    for name in ALGORITHMS:
        line = f"{name}: 12 refits, ic_mean 0.0222, ic_tstat 1.3480, oos_r2 -0.0045, net_cagr 0.1808, net_sharpe 0.8147,"
        assert pattern.search(line)[1] == name


def _numpy_coordinate_descent(gram, cross, alpha, l1_ratio, tol, max_iter):
    """The coordinate descent written with numpy scalars and vectors (the reference the Python-float
    version in models.py must equal bit for bit: same operations in the same order)."""
    p = len(cross)
    coef = np.zeros(p)
    l1, l2 = alpha * l1_ratio, alpha * (1.0 - l1_ratio)
    diag = np.diag(gram)
    gradient_part = gram @ coef
    for _ in range(max_iter):
        biggest_step = 0.0
        for j in range(p):
            if diag[j] <= 0:
                continue
            rho = cross[j] - gradient_part[j] + diag[j] * coef[j]
            new = np.sign(rho) * max(abs(rho) - l1, 0.0) / (diag[j] + l2)
            step = new - coef[j]
            if step != 0.0:
                gradient_part += gram[:, j] * step
                coef[j] = new
                biggest_step = max(biggest_step, abs(step))
        if biggest_step <= tol * max(1.0, np.abs(coef).max()):
            break
    return coef


@pytest.mark.parametrize("seed", range(40))
def test_elastic_net_coordinate_descent_gives_the_numpy_references_bits(seed):
    from portfolio_mlops.models import _elastic_net_gram

    rng = np.random.default_rng(seed)
    p = int(rng.integers(1, 16))
    x = rng.normal(size=(int(rng.integers(p + 2, 300)), p)) * rng.uniform(0.01, 3.0, p)
    if seed % 5 == 0:
        x[:, 0] = 0.0  # a constant feature: zero diagonal, skipped
    y = x @ rng.normal(size=p) * rng.uniform(0, 1) + rng.normal(size=len(x))
    xc, yc = x - x.mean(axis=0), y - y.mean()
    gram, cross = xc.T @ xc / len(x), xc.T @ yc / len(x)
    alpha, l1_ratio = float(10 ** rng.uniform(-6, 0)), float(rng.choice([1.0, 0.9, 0.5, 0.1]))
    ours = _elastic_net_gram(gram, cross, alpha, l1_ratio, tol=1e-12, max_iter=100_000)
    reference = _numpy_coordinate_descent(gram, cross, alpha, l1_ratio, tol=1e-12, max_iter=100_000)
    assert ours.tobytes() == reference.tobytes()
