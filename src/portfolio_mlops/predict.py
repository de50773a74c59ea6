"""`portfolio-mlops predict`: what the registered model (by default the champion) would hold next.

The data is read and validated exactly as `ingest` does (any supported layout; the embedded default
without --data), then sent as raw rows to the registered prices-to-portfolio model
(portfolio_model.PortfolioModel), the same call `/invocations` serves.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from portfolio_mlops import atomic
from portfolio_mlops.errors import ConfigError, ModelInputError, ModelResolutionError
from portfolio_mlops.registry import ALGORITHM, ALIAS_URI, VERSION_URI


def resolve(client, model_uri: str) -> tuple[str, str, str]:
    """models:/<name>@<alias> or models:/<name>/<version> -> (name, version, pinned URI of that version)."""
    from mlflow.exceptions import MlflowException

    alias_match, version_match = ALIAS_URI.fullmatch(model_uri), VERSION_URI.fullmatch(model_uri)
    if not (alias_match or version_match):
        raise ConfigError(f"--model-uri: expected models:/<name>@<alias> or models:/<name>/<version>, got {model_uri!r}")
    name = (alias_match or version_match)["name"]
    try:
        if alias_match:
            version = str(client.get_model_version_by_alias(name, alias_match["alias"]).version)
        else:
            version = str(client.get_model_version(name, version_match["version"]).version)
    except MlflowException as exc:
        try:
            existing = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        except MlflowException:
            existing = []
        if not existing:
            raise ModelResolutionError(f"{model_uri}: no versions of {name!r} are registered "
                                       "(run `portfolio-mlops run` first)") from exc
        wanted = f"has alias {alias_match['alias']!r}" if alias_match else f"is version {version_match['version']}"
        raise ModelResolutionError(
            f"{model_uri}: no version of {name!r} {wanted}; versions that exist: "
            f"{', '.join(str(v) for v in existing)} (promote one with `portfolio-mlops promote`, "
            f"or pass --model-uri models:/{name}/<version>)") from exc
    return name, version, f"models:/{name}/{version}"


def request_rows(prices: pd.DataFrame) -> pd.DataFrame:
    """A validated panel as the model's input: ISO date strings, only the columns that have values."""
    columns = [c for c in ("date", "ticker", "open", "high", "low", "close", "adj_close", "volume")
               if c in prices and prices[c].notna().any()]
    rows = prices[columns].copy()
    rows["date"] = pd.DatetimeIndex(rows["date"]).strftime("%Y-%m-%d")
    return rows


def predict_portfolio(model, rows: pd.DataFrame, as_of: str | None = None) -> pd.DataFrame:
    """model.predict with the model's own errors turned into ModelInputError (exit 2 at the CLI)."""
    from mlflow.exceptions import MlflowException

    try:
        return pd.DataFrame(model.predict(rows, params={"as_of": as_of} if as_of else None))
    except MlflowException as exc:
        # One line: the CLI prints errors as one line, and schema errors from MLflow span several.
        raise ModelInputError(" ".join(line.strip() for line in str(exc.message or exc).splitlines() if line.strip())) from exc


def run_command(args: argparse.Namespace) -> int:
    import mlflow

    from portfolio_mlops.data.layouts import read_dataset
    from portfolio_mlops.data.validation import validate_prices
    from portfolio_mlops.features import LONGEST_LOOKBACK_DAYS
    from portfolio_mlops.portfolio_model import PortfolioModel
    from portfolio_mlops.serving import DEFAULT_MODEL_URI
    from portfolio_mlops.tracking import check_server

    output = Path(args.output) if args.output else None
    if output is not None and output.suffix.lower() not in (".csv", ".json"):
        raise ConfigError(f"--output {output}: expected a .csv or .json file name")
    model_uri = args.model_uri or DEFAULT_MODEL_URI
    check_server(mlflow.get_tracking_uri())
    client = mlflow.MlflowClient()
    name, version, pinned = resolve(client, model_uri)
    model = mlflow.pyfunc.load_model(pinned)
    python_model = model.unwrap_python_model() if hasattr(model, "unwrap_python_model") else None
    if not isinstance(python_model, PortfolioModel):
        raise ModelResolutionError(f"{model_uri} (v{version}) is not a prices-to-portfolio model (it takes "
                                   f"{model.metadata.get_input_schema().input_names()}); register one with "
                                   "`portfolio-mlops run`")
    raw = read_dataset(args.data)
    days = raw.prices["date"].nunique()
    if days < LONGEST_LOOKBACK_DAYS:  # before ingest's rules, whose short-history drop would hide the cause
        raise ModelInputError(f"{args.data or 'embedded data'}: too little history: the features need "
                              f"{LONGEST_LOOKBACK_DAYS} trading days of rows; the file has {days}")
    prices, _, report = validate_prices(raw, python_model.config.validation)
    portfolio = predict_portfolio(model, request_rows(prices), args.as_of)
    algorithm = client.get_model_version(name, version).tags.get(ALGORITHM, "?")
    held = portfolio[portfolio["selected"]]
    cfg = python_model.config.portfolio
    print(f"model {model_uri} -> v{version} ({algorithm}); data {raw.layout} {report.start}..{report.end} "
          f"(last date {report.end})")
    print(f"portfolio for the decision at {portfolio['date'].iloc[0]}: top {cfg.top_n}, {cfg.weighting} weights, "
          f"{len(held)} held of {len(portfolio)} scored")
    print(f"{'ticker':<8}{'score':>10}{'rank':>6}{'weight':>9}")
    for row in held.itertuples():
        print(f"{row.ticker:<8}{row.score:>+10.4f}{row.rank:>6}{row.weight:>9.2%}")
    if output is not None:
        _write(output, portfolio, {"model_uri": model_uri, "version": version, "algorithm": algorithm,
                                   "data_last_date": report.end, "decision_date": portfolio["date"].iloc[0]})
        print(f"wrote {output} ({len(portfolio)} tickers)")
    return 0


def _write(path: Path, portfolio: pd.DataFrame, about: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        atomic.write_json(path, {**about, "portfolio": portfolio.to_dict(orient="records")})
    else:
        with atomic.atomic_path(path) as tmp:
            portfolio.to_csv(tmp, index=False)
