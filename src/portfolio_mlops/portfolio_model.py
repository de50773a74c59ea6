"""The registered model: long OHLCV rows in, next portfolio out (an MLflow pyfunc).

What a caller sends: one row per (date, ticker) with date (ISO, 2018-02-07), ticker, close, and
optionally open, high, low, adj_close (absent = close, as in the layouts without adjusted closes) and
volume. The rows must cover at least `features.LONGEST_LOOKBACK_DAYS` (253) trading days up to the
decision date: the 12-month features need 252 past closes plus the day itself, and a ticker without
that full lookback is not scored. Optional param `as_of` (ISO date, one of the input's dates) answers
for that earlier decision date, using the rows up to it only.

What it answers, for every scored ticker of the decision date (the latest date, or `as_of`):
date, ticker, score (the model's prediction of the forward excess return's rank), rank (1 = best),
selected (held) and weight (target weight; the selected weights sum to 1), computed exactly as the
walk-forward backtest does: the same cleaning rules as ingest (`data.validation`), the same feature
code (`features.build_features`, restricted to the features the model was trained on), the fitted
estimator, and the run's portfolio rule (`backtest.decision_portfolio`, i.e. `top_n_book`).

Bad input raises MlflowException with INVALID_PARAMETER_VALUE, naming the problem, so MLflow's
scoring server answers 400 and keeps serving, and the CLI exits 2.

Types: the signature declares every price and volume column as double. Over HTTP (JSON or CSV) MLflow
parses each column with that type, so integer share counts are fine. A Python caller of the loaded
pyfunc who passes an int64 column (volume read from all_stocks_5yr.csv, say) gets MLflow's schema
error "Can not safely convert int64 to float64" before this code runs: cast first,
`rows.astype({"volume": "float64"})`. Declaring volume as long would refuse the NaN volumes of real
files, and as Any would break MLflow's CSV parsing (it reads CSV with the signature's pandas types).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from portfolio_mlops.backtest import decision_portfolio
from portfolio_mlops.config import RunConfig
from portfolio_mlops.data.layouts import PRICE_COLUMNS, RawDataset, canonical_rows
from portfolio_mlops.data.validation import validate_prices
from portfolio_mlops.errors import ModelInputError
from portfolio_mlops.errors import PortfolioMLOpsError
from portfolio_mlops.features import LONGEST_LOOKBACK_DAYS, FeatureSet, build_features

REQUIRED_COLUMNS = ("date", "ticker", "close")
OPTIONAL_COLUMNS = ("open", "high", "low", "adj_close", "volume")
SOURCE = "request rows"  # how errors name the caller's input (there is no file)


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def clean_rows(rows: pd.DataFrame, cfg: RunConfig, adjusted: bool = True) -> pd.DataFrame:
    """The caller's rows -> a validated canonical panel, or ModelInputError naming what is wrong.

    Stricter than ingest where a silent drop would change the answer without the caller knowing
    (duplicates, missing or non-positive prices are refused); then ingest's own rules run
    (`validate_prices` with the run's validation settings: inverted high/low, extreme moves, short
    histories), so the model sees the panel the backtest would have seen.
    """
    names = {str(c).strip().lower() for c in rows.columns}
    missing = [c for c in REQUIRED_COLUMNS if c not in names and not (c == "close" and "adj_close" in names)]
    if missing:
        raise ModelInputError(f"missing column(s) {missing}; the model needs {list(REQUIRED_COLUMNS)} and takes "
                            f"{list(OPTIONAL_COLUMNS)} when available; got {list(rows.columns)}")
    if rows.empty:
        raise ModelInputError(f"no rows; send at least {LONGEST_LOOKBACK_DAYS} trading days of prices per ticker")
    try:
        prices = canonical_rows(rows, Path(SOURCE))
    except PortfolioMLOpsError as exc:
        raise ModelInputError(f"{exc} (dates must all be ISO, like 2018-02-07)"
                            if "field 'date'" in str(exc) else str(exc)) from exc
    _refuse(prices, prices[["close", "adj_close"]].isna().any(axis=1), "have no close price (NaN)")
    _require_history(prices, prices["date"].max())
    _refuse(prices, (prices[list(PRICE_COLUMNS)] <= 0).any(axis=1), "have a price <= 0")
    _refuse(prices, prices["volume"] < 0, "have a negative volume")
    duplicated = prices.duplicated(["date", "ticker"], keep=False)
    if duplicated.any():
        first = prices[duplicated].iloc[0]
        rows_text = ", ".join(str(r) for r in prices.loc[duplicated & (prices["date"] == first["date"])
                                                         & (prices["ticker"] == first["ticker"]), "source_row"])
        raise ModelInputError(f"duplicate rows: {first['ticker']} on {first['date']:%Y-%m-%d} appears at rows {rows_text} "
                            f"({int(duplicated.sum())} rows share a (date, ticker)); send one row per (date, ticker)")
    try:
        clean, _, _ = validate_prices(RawDataset(layout="request", prices=prices, sources=(SOURCE,), adjusted=adjusted),
                                      cfg.validation)
    except PortfolioMLOpsError as exc:
        raise ModelInputError(str(exc)) from exc
    return clean


def _refuse(prices: pd.DataFrame, bad: pd.Series, problem: str) -> None:
    if bad.any():
        first = prices[bad].iloc[0]
        raise ModelInputError(f"{int(bad.sum())} row(s) {problem}, e.g. row {first['source_row']}: "
                            f"{first['ticker']} on {first['date']:%Y-%m-%d}")


def _require_history(prices: pd.DataFrame, when: pd.Timestamp) -> None:
    history = prices.loc[prices["date"] <= when, "date"]
    days = history.nunique()
    if days < LONGEST_LOOKBACK_DAYS:
        raise ModelInputError(
            f"too little history: the features need {LONGEST_LOOKBACK_DAYS} trading days of rows up to and including "
            f"{when:%Y-%m-%d} (12-month momentum and the 52-week high look back 252 days); got {days} "
            f"({history.min():%Y-%m-%d}..{when:%Y-%m-%d})")


def decision_date(prices: pd.DataFrame, as_of: str | None) -> pd.Timestamp:
    """The latest date of the rows, or `as_of`, which must be one of them (a trading day we have)."""
    dates = prices["date"]
    if not as_of:
        return dates.max()
    parsed = pd.to_datetime(str(as_of).strip()[:10], format="%Y-%m-%d", errors="coerce")
    if pd.isna(parsed):
        raise ModelInputError(f"as_of: expected a date like 2018-02-07, got {as_of!r}")
    if not (dates == parsed).any():
        raise ModelInputError(f"as_of {parsed:%Y-%m-%d} is not a date in the rows "
                            f"({dates.min():%Y-%m-%d}..{dates.max():%Y-%m-%d}, {dates.nunique()} trading days)")
    return parsed


def features_at(prices: pd.DataFrame, when: pd.Timestamp, cfg: RunConfig,
                feature_names: tuple[str, ...]) -> tuple[FeatureSet, pd.DataFrame]:
    """Point-in-time features of `when` from the rows dated <= `when` only: (feature set, that date's rows)."""
    _require_history(prices, when)
    history = prices[prices["date"] <= when]
    settings = cfg.features.model_copy(update={"include": list(feature_names)})
    features = build_features(history, settings, cfg.labels)
    if features.skipped:
        raise ModelInputError("the model uses " + "; ".join(f"{name}, which {reason.replace('absent in this data', 'absent in the rows')}"
                                                          for name, reason in features.skipped.items()))
    frame = features.frame
    rows = frame[frame["date"] == when]
    if rows.empty:
        raise ModelInputError(f"no ticker has a full lookback at {when:%Y-%m-%d}: each needs prices on the "
                            f"{LONGEST_LOOKBACK_DAYS} trading days up to that date, without gaps")
    return features, rows


def portfolio_from_rows(rows: pd.DataFrame, cfg: RunConfig, estimator, feature_names: tuple[str, ...],
                        as_of: str | None = None, adjusted: bool = True) -> pd.DataFrame:
    """The whole answer (see the module docstring), raising ModelInputError on bad rows."""
    prices = clean_rows(rows, cfg, adjusted)
    when = decision_date(prices, as_of)
    _, block = features_at(prices, when, cfg, feature_names)
    return decision_portfolio(block, estimator.predict(block[list(feature_names)]), cfg.portfolio)


class PortfolioModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc around `portfolio_from_rows`; its state comes from the model's artifacts only.

    Artifacts: `estimator` (the fitted scikit-learn model, an MLflow sklearn model folder, loadable on
    its own for coefficients) and `spec` (spec.json: the run config for this algorithm, the trained
    feature names, and whether the training prices were adjusted closes).
    """

    def load_context(self, context) -> None:
        import mlflow.sklearn

        self.estimator = mlflow.sklearn.load_model(context.artifacts["estimator"])
        spec = json.loads(Path(context.artifacts["spec"]).read_text(encoding="utf-8"))
        self.config = RunConfig.model_validate(spec["config"])
        self.feature_names = tuple(spec["feature_names"])
        self.adjusted = bool(spec.get("adjusted", True))

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        as_of = (params or {}).get("as_of") or None
        try:
            return portfolio_from_rows(pd.DataFrame(model_input), self.config, self.estimator, self.feature_names,
                                       as_of, self.adjusted)
        except ModelInputError as exc:
            raise _invalid(str(exc)) from exc


def signature():
    """Inputs (raw rows; optional columns marked so), outputs (the portfolio) and the `as_of` param."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([
        ColSpec("string", "date"), ColSpec("string", "ticker"), ColSpec("double", "close"),
        *(ColSpec("double", name, required=False) for name in ("open", "high", "low", "adj_close", "volume")),
    ])
    outputs = Schema([ColSpec("string", "date"), ColSpec("string", "ticker"), ColSpec("double", "score"),
                      ColSpec("long", "rank"), ColSpec("boolean", "selected"), ColSpec("double", "weight")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=ParamSchema([ParamSpec("as_of", "string", "")]))


def input_example(prices: pd.DataFrame, tickers: int = 4, days: int = LONGEST_LOOKBACK_DAYS + 7) -> pd.DataFrame:
    """A small, valid request: the last `days` trading days of the `tickers` names present on all of them."""
    dates = np.sort(prices["date"].unique())[-days:]
    recent = prices[prices["date"].isin(dates)]
    complete = recent.groupby("ticker")["date"].nunique()
    chosen = sorted(complete[complete == len(dates)].index)[:tickers]
    example = recent[recent["ticker"].isin(chosen)].sort_values(["date", "ticker"])
    columns = [c for c in ("date", "ticker", "open", "high", "low", "close", "adj_close", "volume")
               if c in example and example[c].notna().all()]
    example = example[columns].reset_index(drop=True)
    example["date"] = pd.DatetimeIndex(example["date"]).strftime("%Y-%m-%d")
    return example


def save_artifacts(folder: Path, estimator, cfg: RunConfig, feature_names: tuple[str, ...], adjusted: bool,
                   skops_trusted_types: list[str], pip_requirements: list[str]) -> dict[str, str]:
    """Write the estimator (MLflow sklearn folder) and spec.json into `folder`; returns pyfunc artifacts."""
    import mlflow.sklearn

    mlflow.sklearn.save_model(estimator, folder / "estimator", skops_trusted_types=skops_trusted_types,
                              pip_requirements=pip_requirements)
    (folder / "spec.json").write_text(json.dumps({"config": cfg.model_dump(mode="json"),
                                                  "feature_names": list(feature_names), "adjusted": adjusted}, indent=1))
    return {"estimator": str(folder / "estimator"), "spec": str(folder / "spec.json")}
