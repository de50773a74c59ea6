"""The algorithms a run can train: one entry each, and the only place to add one.

Everything else derives from `ALGORITHMS`: the names config.py accepts (ModelSpec.algorithm,
RunConfig.with_algorithms) and its default models, models.make_estimator, which algorithms are
refitted from running moments (models.LINEAR_ALGORITHMS) and which depend on the seed
(models.uses_seed), the pipeline's default `algorithms` parameter (pipelines/training.py), the
figure line the local runner reads from a train step (pipelines/local.py) and the CLI's help.

Standard library only: config.py imports it, and the ingest and features steps (whose images carry
no scikit-learn, tests/step_imports.py) import config.py. The estimator factories import
scikit-learn when they are called, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Algorithm:
    name: str
    # seed -> a fresh, unfitted scikit-learn estimator without the configured params (make_estimator sets them)
    estimator: Callable[[int], Any]
    # the default ModelSpec: hyperparameters and the training-date sampling (ModelSpec.train_sample_every_days)
    params: dict[str, Any] = field(default_factory=dict)
    train_sample_every_days: int = 1
    # the default ModelSpec.refit_stride: refit on every k-th of the walk-forward's refit dates
    refit_stride: int = 1
    # refitted exactly from running moments (models.fit_from_moments, which knows Ridge, Lasso and ElasticNet)
    moment_refits: bool = False
    # the fit depends on the seed (sampled training dates, random_state): evaluated over EvaluationConfig.seeds
    seeded: bool = False


def _ridge(seed: int) -> Any:
    from sklearn.linear_model import Ridge

    return Ridge()


def _lasso(seed: int) -> Any:
    from sklearn.linear_model import Lasso

    return Lasso(max_iter=10_000)


def _elasticnet(seed: int) -> Any:
    from sklearn.linear_model import ElasticNet

    return ElasticNet(max_iter=10_000)


def _hgb(seed: int) -> Any:
    # the seed is random_state: which rows its bin thresholds come from above 200,000 rows
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(random_state=seed, early_stopping=False)


# In this order: the default models, the pipeline's default fan-out and every listing of them.
ALGORITHMS: dict[str, Algorithm] = {algorithm.name: algorithm for algorithm in (
    Algorithm("ridge", _ridge, {"alpha": 1.0}, moment_refits=True),
    Algorithm("lasso", _lasso, {"alpha": 2e-5}, moment_refits=True),
    Algorithm("elasticnet", _elasticnet, {"alpha": 1e-4, "l1_ratio": 0.5}, moment_refits=True),
    # 20 trees at 0.15 on one seeded-random date per 10, refitted on every 2nd refit date (semi-annually
    # by default): each fit re-bins and regrows the whole expanding window and every out-of-sample day is
    # scored by every tree, so this is ~2x faster than 30 trees at 0.1 refitted quarterly (itself ~3x
    # faster than 60 at 0.05 on every 5th date), with the out-of-sample IC unchanged within its standard
    # error (README, "Features and models").
    Algorithm("hgb", _hgb,
              {"max_iter": 20, "learning_rate": 0.15, "max_leaf_nodes": 15, "min_samples_leaf": 500,
               "l2_regularization": 1.0},
              train_sample_every_days=10, refit_stride=2, seeded=True),
)}


def names() -> list[str]:
    """Every algorithm, in registry order."""
    return list(ALGORITHMS)


def listing() -> str:
    """`ridge,lasso,elasticnet,hgb`: the names as the CLI's --algorithms takes them."""
    return ",".join(ALGORITHMS)
