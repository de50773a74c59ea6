"""The run configuration: one typed object, validated once at the edge (YAML file or CLI), passed down.

Units: every "*_days" value counts trading days (rows of the trading calendar), costs are basis
points (1 bp = 0.0001) per side of each trade.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from portfolio_mlops import names
from portfolio_mlops.algorithms import ALGORITHMS
from portfolio_mlops.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValidationConfig(_Strict):
    """What ingest drops, keeps or refuses. Every drop is counted in the data-quality report."""

    min_history_days: int = Field(
        253,
        ge=2,
        description="Tickers with fewer rows are dropped: they can never produce one sample with a "
        "full 12-month lookback, so dropping them changes no number.",
    )
    max_abs_log_return: float | None = Field(
        None,
        gt=0,
        description="|log(1+r)| above this on one day is an absurd move (likely a bad split). None = auto: "
        "0.6 (-45%/+82%) when the layout has no adjusted close, so unadjusted splits and spin-offs are "
        "caught; 1.0 (-63%/+172%) for adjusted closes, where real crashes such as AAPL's -52% on "
        "2000-09-29 must survive.",
    )
    extreme_move_policy: Literal["drop_ticker", "keep", "fail"] = "drop_ticker"
    adjust_splits: bool = Field(
        True,
        description="Unadjusted layouts only: a one-day close ratio near a split ratio (split_ratios, within "
        "split_tolerance) that comes with a matching volume jump is a split; earlier prices are divided and "
        "volumes multiplied by the ratio (recorded in quality.json splits_adjusted). Adjusted layouts are left alone.",
    )
    split_ratios: list[str] = Field(
        ["2:1", "3:1", "3:2", "4:1", "5:1", "4:3", "5:4", "10:1", "1:2", "1:3", "2:3", "1:4", "1:5", "1:10"],
        description="Candidate split ratios 'new shares:old shares' (2:1 halves the price; 1:2 is a reverse split).",
    )
    split_tolerance: float = Field(
        0.03,
        gt=0,
        lt=0.2,
        description="Largest |log(observed close ratio / split price ratio)|: room for the day's own market move.",
    )

    @field_validator("split_ratios")
    @classmethod
    def _ratios_parse(cls, value: list[str]) -> list[str]:
        for text in value:
            parts = text.split(":")
            if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts) or parts[0] == parts[1]:
                raise ValueError(f"validation.split_ratios: {text!r} is not 'new:old' with two different positive integers")
        return value


class FeatureConfig(_Strict):
    normalisation: Literal["rank", "zscore"] = Field(
        "rank", description="Cross-sectional, per date: centred ranks in [-0.5, 0.5] or winsorised z-scores."
    )
    winsor_quantile: float = Field(0.01, ge=0, lt=0.5)
    include: list[str] | None = Field(None, description="Feature names to use; None = every feature the data allows.")


class LabelConfig(_Strict):
    horizon_days: int = Field(21, ge=1, description="Forward return horizon in trading days.")
    execution_lag_days: int = Field(
        1,
        ge=0,
        description="Decide at close t, trade at close t+lag. The label is the return from close t+lag "
        "to close t+lag+horizon; 0 means trading at the decision close itself (optimistic).",
    )
    winsor_quantile: float = Field(0.01, ge=0, lt=0.5, description="Per-date clipping of training labels only.")


class WalkForwardConfig(_Strict):
    rebalance_every_days: int = Field(21, ge=1)
    retrain_every_rebalances: int = Field(3, ge=1)
    window: Literal["expanding", "rolling"] = "expanding"
    rolling_window_days: int = Field(756, ge=21)
    min_train_days: int = Field(504, ge=21, description="Dates with known labels needed before the first rebalance.")
    embargo_days: int = Field(0, ge=0, description="Extra gap between a training label's end and the decision date.")
    start: str | None = Field(None, description="First allowed decision date (YYYY-MM-DD).")
    end: str | None = Field(None, description="Last allowed decision date (YYYY-MM-DD).")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        # YAML reads an unquoted 2015-01-02 as a date: accept it, and keep the ISO text everywhere else.
        if isinstance(value, (date, datetime)):
            return value.strftime("%Y-%m-%d")
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip()).isoformat()
            except ValueError:
                raise ValueError(f"expected a date like 2015-01-02, got {value!r}") from None
        return value


def _one_of(choices: list[str]) -> str:
    """`'ridge', 'lasso', 'elasticnet' or 'hgb'`, as pydantic words a Literal's choices."""
    quoted = [repr(choice) for choice in choices]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


class ModelSpec(_Strict):
    algorithm: str = Field(description="A name of portfolio_mlops/algorithms.py's ALGORITHMS.")
    params: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, list[Any]] | None = Field(
        None, description="Inner time-series search grid, evaluated on a purged validation tail of each training window."
    )
    validation_fraction: float = Field(0.2, gt=0, lt=0.9)
    train_sample_every_days: int = Field(
        1, ge=1, description="Train on one date's cross-section per block of k trading days, at an offset drawn "
        "with the run's seed (linear models use all dates for free).",
    )
    refit_stride: int = Field(
        1, ge=1, description="Refit on every k-th of the walk-forward's refit dates only (walk_forward."
        "retrain_every_rebalances x k rebalances apart); between refits the last model keeps scoring. 1 = every "
        "refit date. Gradient boosting uses 2 by default: each refit is a full fit on the whole window.",
    )

    @field_validator("algorithm", mode="before")
    @classmethod
    def _registered(cls, value: Any) -> Any:
        # the registry, not a Literal, so adding an algorithm is one entry there (same message as a Literal's)
        if not isinstance(value, str) or value not in ALGORITHMS:
            raise ValueError(f"Input should be {_one_of(list(ALGORITHMS))}")
        return value

    @property
    def name(self) -> str:
        return self.algorithm


def default_models() -> list[ModelSpec]:
    """One model per registered algorithm, with its registered defaults (portfolio_mlops/algorithms.py)."""
    return [ModelSpec(algorithm=a.name, params=dict(a.params), train_sample_every_days=a.train_sample_every_days,
                      refit_stride=a.refit_stride)
            for a in ALGORITHMS.values()]


class PortfolioConfig(_Strict):
    top_n: int = Field(10, ge=1, description="Stocks held, picked by highest prediction.")
    weighting: Literal["equal", "inverse_vol"] = "equal"
    # 1000 bps (10% per side) is far beyond any real cost; above it the backtest loses more than the
    # whole book on a rebalance (a drawdown of -16,919,433% at 1e9 bps), which is a typo, not a scenario.
    cost_bps_per_side: float = Field(10.0, ge=0, le=1000,
                                     description="Charged on every buy and every sell, in bps of traded value (0..1000).")
    cost_sensitivity_bps: list[Annotated[float, Field(ge=0, le=1000)]] = Field(default_factory=lambda: [0.0, 5.0, 10.0, 20.0])


class BenchmarkConfig(_Strict):
    random_seeds: int = Field(20, ge=0, description="Random top-N portfolios, one per seed.")
    factors: list[Literal["momentum_12_1", "reversal_21"]] = Field(
        default_factory=lambda: ["momentum_12_1", "reversal_21"]
    )


class TrackingConfig(_Strict):
    """Whether and where runs go. The tracking server itself comes from MLFLOW_TRACKING_URI (unset: MLflow's
    own embedded default, a sqlite store `mlflow.db` and `mlruns/` in the working directory)."""

    enabled: bool = Field(
        True, description="Log the run to MLflow and register one model version per algorithm "
        "(`run --no-tracking` sets False; then promotion is skipped too).",
    )
    promote: bool = Field(
        True, description="After registering, judge the versions and move the champion alias on evidence "
        "(`run --no-promote` sets False: log and register only).",
    )
    experiment: str = names.EXPERIMENT
    registered_model: str = names.REGISTERED_MODEL
    equity_curve_every_days: int = Field(
        1, ge=1, description="Log every k-th day of each equity curve as metric history (1 = every day)."
    )


class PromotionPolicy(_Strict):
    """When a candidate becomes `champion`. Every gate must pass; every decision is recorded with reasons."""

    rank_by: Literal["net_sharpe", "icir"] = Field("net_sharpe", description="How candidates are ordered.")
    statistic: Literal["ic_hac_tstat", "ic_tstat"] = Field(
        "ic_hac_tstat",
        description="The signal statistic gated by min_ic_tstat: ic_hac_tstat = Newey-West t of the daily rank IC "
        "(every out-of-sample day, lags = horizon); ic_tstat = t of the rank IC on non-overlapping rebalance dates.",
    )
    min_ic_tstat: float = Field(2.0, description="Threshold a candidate's `statistic` must reach (before deflation).")
    deflation: Literal["bonferroni", "none"] = Field(
        "bonferroni",
        description="Correction for picking the best of K candidates: bonferroni raises a positive threshold z "
        "(one-sided level alpha = 1 - Phi(z)) to the z of alpha / K; none keeps it.",
    )
    min_excess_vs_equal_weight: float = Field(
        0.0, description="Annualised net excess return over the equal-weight universe a candidate must exceed."
    )
    margin: float = Field(
        0.05, ge=0, description="How much the candidate must beat the champion by, in `rank_by` units, on the same data."
    )


class EvaluationConfig(_Strict):
    """How returns are judged. The risk-free rate enters Sharpe and Sortino only (excess over rf per day)."""

    risk_free_annual: float = Field(
        0.0, ge=-0.05, le=0.5,
        description="Constant annual risk-free rate as a decimal (0.02 = 2%), compounded to a daily rate; 0 = none.",
    )
    risk_free_csv: str | None = Field(
        None,
        description="CSV with columns date, rate (annualised decimal, 0.02 = 2%): each day uses the last rate dated "
        "on or before it. Replaces risk_free_annual when set.",
    )
    seeds: int = Field(
        3, ge=1, le=20,
        description="Models whose fit depends on the seed (hgb) are trained with seeds seed .. seed+K-1 and "
        "reported as mean +- std over them; the model of `seed` is the one registered and judged. "
        "Deterministic models (ridge, lasso, elasticnet) are trained once. 1 = no spread.",
    )


class RunConfig(_Strict):
    data: str | None = Field(None, description="Path to user data (file or folder); None = embedded default.")
    validation: ValidationConfig = ValidationConfig()
    features: FeatureConfig = FeatureConfig()
    labels: LabelConfig = LabelConfig()
    walk_forward: WalkForwardConfig = WalkForwardConfig()
    models: list[ModelSpec] = Field(default_factory=default_models)
    portfolio: PortfolioConfig = PortfolioConfig()
    benchmarks: BenchmarkConfig = BenchmarkConfig()
    tracking: TrackingConfig = TrackingConfig()
    promotion: PromotionPolicy = PromotionPolicy()
    evaluation: EvaluationConfig = EvaluationConfig()
    seed: int = 0
    threads: int = Field(
        1,
        ge=1,
        description="OpenMP/BLAS threads per model fit. 1 by default: per-algorithm steps run side by side "
        "(pipeline fan-out), and OpenMP's spin-waiting threads on a busy core slow a fit down many times over.",
    )

    @field_validator("models")
    @classmethod
    def _unique_algorithms(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"each algorithm may appear once, got {names}")
        if not models:
            raise ValueError("at least one model is needed")
        return models

    @model_validator(mode="after")
    def _rebalance_vs_horizon(self) -> "RunConfig":
        if self.walk_forward.min_train_days < self.labels.horizon_days:
            raise ValueError("walk_forward.min_train_days must be >= labels.horizon_days")
        return self

    def with_algorithms(self, algorithms: list[str]) -> "RunConfig":
        """Keep only the named algorithms, in the order given (defaults for any not configured)."""
        known = {m.name: m for m in self.models}
        defaults = {m.name: m for m in default_models()}
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if unknown:
            raise ConfigError(f"unknown algorithm(s) {unknown}; choose from {list(ALGORITHMS)}")
        return self.model_copy(update={"models": [known.get(a, defaults[a]) for a in algorithms]})


# Documented presets: dotted-key overrides applied over the config file; explicit CLI flags win over them.
PRESETS: dict[str, dict[str, Any]] = {
    # Shorter horizon for statistical power: a 5-day label and a weekly rebalance give ~4x the
    # non-overlapping IC dates of the monthly default, at ~4x the trading (the table's gross vs net
    # columns and `cost_drag` show what that costs). Refits stay ~quarterly (12 weekly rebalances).
    "weekly": {
        "labels.horizon_days": 5,
        "walk_forward.rebalance_every_days": 5,
        "walk_forward.retrain_every_rebalances": 12,
    },
}


def preset_overrides(name: str | None) -> dict[str, Any]:
    if name is None:
        return {}
    if name not in PRESETS:
        raise ConfigError(f"--preset {name!r}: unknown preset; choose from {sorted(PRESETS)}")
    return dict(PRESETS[name])


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (or defaults), apply dotted-key overrides, validate once."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
        raw = loaded or {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        problems = "; ".join(_describe_error(err) for err in exc.errors())
        raise ConfigError(f"{where}invalid configuration: {problems}") from exc


def _describe_error(err: dict[str, Any]) -> str:
    """One pydantic error as `field: what was expected (got value)`."""
    field = ".".join(str(p) for p in err["loc"]) or "<root>"
    message = err["msg"].removeprefix("Value error, ")
    if "got" not in message and err.get("type") not in ("missing", "extra_forbidden") and not isinstance(err.get("input"), dict):
        message += f" (got {err.get('input')!r})"
    return f"{field}: {message}"
