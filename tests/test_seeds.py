"""Models with randomness are trained with K seeds and reported as mean +- std over them; the model of
the run's own seed is the one registered and judged. Deterministic models are trained once."""

import math

import numpy as np
import pytest

from portfolio_mlops.artifacts import load_training, save_training
from portfolio_mlops.config import (BenchmarkConfig, EvaluationConfig, LabelConfig, ModelSpec, RunConfig,
                                    WalkForwardConfig)
from portfolio_mlops.evaluation import evaluate
from portfolio_mlops.features import build_features, to_grid
from portfolio_mlops.report import summary_table
from portfolio_mlops.runner import train_all
from synthetic import random_walk_panel

LABELS = LabelConfig(horizon_days=10, execution_lag_days=1)


def _config(seeds: int, seed: int = 0) -> RunConfig:
    return RunConfig(
        labels=LABELS,
        walk_forward=WalkForwardConfig(rebalance_every_days=10, retrain_every_rebalances=3, min_train_days=150),
        models=[ModelSpec(algorithm="ridge"), ModelSpec(algorithm="hgb", params={"max_iter": 10}, train_sample_every_days=5)],
        benchmarks=BenchmarkConfig(random_seeds=2, factors=[]),
        evaluation=EvaluationConfig(seeds=seeds),
        seed=seed,
    )


@pytest.fixture(scope="module")
def market():
    prices = random_walk_panel(n_tickers=25, n_days=600, seed=5, signal_strength=0.002)
    return prices, build_features(prices, _config(3).features, LABELS)


@pytest.fixture(scope="module")
def trained(market):
    _, features = market
    cfg = _config(3, seed=7)
    return cfg, train_all(features, cfg)


def test_a_seeded_model_is_trained_once_per_other_seed_and_a_deterministic_one_once(trained):
    _, results = trained
    assert results["ridge"].other_seeds == {}
    assert sorted(results["hgb"].other_seeds) == [8, 9]  # seed .. seed + K - 1, the run's own first
    assert all(other.model is None for other in results["hgb"].other_seeds.values())  # only the registered one is kept
    assert results["hgb"].model is not None


def test_other_seeds_give_other_predictions_on_the_same_dates(trained):
    _, results = trained
    main = results["hgb"].predictions
    for other in results["hgb"].other_seeds.values():
        assert other.predictions[["date_pos", "ticker"]].equals(main[["date_pos", "ticker"]])
        assert not np.allclose(other.predictions["prediction"], main["prediction"])


def test_the_spread_is_mean_and_sample_std_over_seeds_with_the_registered_seed_as_its_row(market, trained):
    prices, features = market
    cfg, results = trained
    summary = evaluate(features, to_grid(prices), results, cfg, None).summary
    block = summary["algorithms"]["hgb"]
    spread = block["seeds"]
    assert spread["seeds"] == [7, 8, 9] and spread["registered_seed"] == 7
    assert spread["values"]["net_sharpe"][0] == block["portfolio"]["net"]["sharpe"]
    assert spread["values"]["rank_ic_mean"][0] == block["signal"]["rank_ic_mean"]
    for key, values in spread["values"].items():
        assert len(values) == 3
        assert spread["mean"][key] == pytest.approx(np.mean(values))
        assert spread["std"][key] == pytest.approx(np.std(values, ddof=1))
    assert spread["std"]["rank_ic_mean"] > 0  # the seeds really differ
    assert "seeds" not in summary["algorithms"]["ridge"]

    line = next(line for line in summary_table(summary).splitlines() if line.startswith("hgb over seeds"))
    assert line.startswith("hgb over seeds 7,8,9 (row above = seed 7, the one registered): rank IC ")
    assert f"{spread['mean']['rank_ic_mean']:.3f} +- {spread['std']['rank_ic_mean']:.3f}" in line


def test_a_seeded_algorithm_on_every_date_is_deterministic_and_trained_once(market):
    _, features = market
    cfg = _config(3)
    cfg = cfg.model_copy(update={"models": [ModelSpec(algorithm="hgb", params={"max_iter": 10})]})
    assert train_all(features, cfg)["hgb"].other_seeds == {}


def test_one_seed_means_no_spread(market):
    prices, features = market
    cfg = _config(1)
    results = train_all(features, cfg.with_algorithms(["hgb"]))
    assert results["hgb"].other_seeds == {}
    summary = evaluate(features, to_grid(prices), results, cfg.with_algorithms(["hgb"]), None).summary
    assert "seeds" not in summary["algorithms"]["hgb"]
    assert not any(line.startswith("hgb over seeds") for line in summary_table(summary).splitlines())


def test_the_other_seeds_travel_between_pipeline_steps(trained, tmp_path):
    _, results = trained
    save_training(results["hgb"], tmp_path)
    loaded = load_training(tmp_path, "hgb")
    assert sorted(loaded.other_seeds) == [8, 9]
    for seed, other in results["hgb"].other_seeds.items():
        assert loaded.other_seeds[seed].predictions.equals(other.predictions)
        assert loaded.other_seeds[seed].daily.equals(other.daily)
        assert loaded.other_seeds[seed].model is None


def test_seeds_are_validated_in_the_config():
    with pytest.raises(ValueError, match="seeds"):
        EvaluationConfig(seeds=0)
    assert not math.isnan(EvaluationConfig().seeds) and EvaluationConfig().seeds == 3
