"""Refuse, before any compute, what would give a dishonest or meaningless result.

Two pure checks, called by every engine before the first model is fitted (the CLI for `run`, whatever
the engine; the pipeline's configure and ingest steps on a cluster):

- `check_config(cfg)`: the feature names exist, and every model hyperparameter (and every value of a
  search grid) is one its scikit-learn estimator accepts - `alpha: -1` or `max_iter: "many"` fail
  here, naming the field, not after ingest and features have run.
- `check_panel(prices, cfg, today)`: the validated prices and the configuration together. Rules:

| rule                     | why                                                                   |
|--------------------------|-----------------------------------------------------------------------|
| >= MIN_TICKERS tickers   | rank IC and a top-N pick need a cross-section; one ticker gives IC nan |
| top_n <= 3/4 of tickers  | holding more of the universe, every model's book is nearly the whole  |
|                          | universe: a "model" portfolio is the equal-weight benchmark in disguise |
|                          | (the embedded 19-20 stocks with the default top 10 pass)              |
| no calendar gap longer   | rows far after the rest (5 rows dated 2030 after data ending 2018)     |
| than MAX_GAP_WEEKDAYS    | become a rebalance holding whatever exists then                       |
| no date after today      | prices from the future are a typo or a fabricated file                |
| walk_forward.start/end   | a window outside the data leaves no decision date                     |
| inside the data          |                                                                       |
| enough trading days for  | the default features need 252 past days; walk-forward then needs      |
| the first decision       | min_train_days more (checked exactly in the train step; this is the   |
|                          | necessary condition, so the pipeline does not start only to fail there) |

Every rule refuses (DegenerateInputError, exit status 2) with the reason and the fix: each case has
an honest alternative the user can choose (a smaller --top-n, a cleaner file), and a run that only
warned would still register models that encode the problem.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from portfolio_mlops.config import RunConfig
from portfolio_mlops.errors import ConfigError, DegenerateInputError
from portfolio_mlops.features import FEATURE_NAMES, LONGEST_LOOKBACK_DAYS

MIN_TICKERS = 5
MAX_HELD_FRACTION = 0.75
# Exchanges close for at most a few consecutive weekdays (4 after 2001-09-11, 2 for hurricane Sandy);
# a longer hole in the calendar is missing data or rows that do not belong to this panel.
MAX_GAP_WEEKDAYS = 10


def check_config(cfg: RunConfig) -> None:
    """Every model's hyperparameters (and search-grid values) pass its estimator's own validation."""
    from sklearn.utils._param_validation import InvalidParameterError

    from portfolio_mlops.models import make_estimator

    unknown = [name for name in cfg.features.include or () if name not in FEATURE_NAMES]
    if unknown:
        raise ConfigError(f"features.include: unknown feature(s) {unknown}; known: {list(FEATURE_NAMES)}")
    for spec in cfg.models:
        candidates: list[tuple[str, dict[str, Any]]] = [(f"models[{spec.name}].params", dict(spec.params))]
        for name, values in (spec.search or {}).items():
            candidates += [(f"models[{spec.name}].search.{name}", {**spec.params, name: value}) for value in values]
        for where, params in candidates:
            estimator = make_estimator(spec, params)
            try:
                estimator._validate_params()  # scikit-learn's own constraints: types and ranges
            except InvalidParameterError as exc:
                raise ConfigError(_param_message(where, params, exc)) from exc


def _param_message(where: str, params: dict[str, Any], exc: Exception) -> str:
    text = str(exc)  # "The 'alpha' parameter of Ridge must be a float in the range [0.0, inf) ... Got -1 instead."
    name = text.split("'")[1] if text.count("'") >= 2 else "?"
    field = where if where.split(".")[-1] == name else f"{where}.{name}"
    value = params.get(name)
    expected = text.split(" must be ", 1)[-1].split(". Got ", 1)[0] if " must be " in text else text
    hint = ""
    if isinstance(value, str):
        try:
            float(value)
            hint = f" (YAML read {value!r} as text: write it with a decimal point, e.g. 1.0e-4)"
        except ValueError:
            pass
    return f"invalid configuration: {field}: expected {expected}, got {value!r}{hint}"


def check_panel(prices: pd.DataFrame, cfg: RunConfig, today: date | None = None) -> None:
    """Refuse a validated panel (canonical prices: date, ticker, ...) that cannot give an honest run.

    `today` is the clock's date (default: now). Messages name the dates; the file rows are those dates'.
    """
    today = today or date.today()
    tickers = int(prices["ticker"].nunique())
    top_n = cfg.portfolio.top_n
    if tickers < MIN_TICKERS:
        raise DegenerateInputError(
            f"the data has {tickers} ticker(s) after validation; ranking stocks needs a cross-section of at least "
            f"{MIN_TICKERS} (rank IC is undefined for one); use a file with more tickers")
    if top_n > MAX_HELD_FRACTION * tickers:
        raise DegenerateInputError(
            f"portfolio.top_n {top_n} would hold more than {MAX_HELD_FRACTION:.0%} of the {tickers} tickers: every model "
            f"would be close to the equal-weight universe; use --top-n {int(MAX_HELD_FRACTION * tickers)} or fewer "
            "(or data with more tickers)")
    dates = pd.DatetimeIndex(prices["date"].drop_duplicates().sort_values())
    future = dates[dates > pd.Timestamp(today)]
    if len(future):
        rows = int((prices["date"] > pd.Timestamp(today)).sum())
        raise DegenerateInputError(
            f"{rows} row(s) are dated after today ({today:%Y-%m-%d}), first {future[0]:%Y-%m-%d}"
            f"; prices from the future are a typo or not real data: remove them")
    if len(dates) > 1:
        weekdays = np.busday_count(dates[:-1].values.astype("datetime64[D]"), dates[1:].values.astype("datetime64[D]"))
        gap = int(np.argmax(weekdays))
        if weekdays[gap] > MAX_GAP_WEEKDAYS:
            before, after = dates[gap], dates[gap + 1]
            rows_after = int((prices["date"] >= after).sum())
            raise DegenerateInputError(
                f"the calendar has a gap of {int(weekdays[gap])} weekdays between {before:%Y-%m-%d} and {after:%Y-%m-%d}"
                f" (at most {MAX_GAP_WEEKDAYS} allowed; {rows_after} row(s) from "
                f"{after:%Y-%m-%d} on): rows far from the rest of the data would become rebalances of their own; "
                "remove them or fill the gap")
    start, end = cfg.walk_forward.start, cfg.walk_forward.end
    if start and end and start >= end:
        raise DegenerateInputError(f"walk_forward.start {start} is not before walk_forward.end {end}")
    if start and pd.Timestamp(start) > dates[-1]:
        raise DegenerateInputError(f"walk_forward.start {start} is after the data's last day {dates[-1]:%Y-%m-%d}: "
                                   "no decision could be made; use an earlier start or newer data")
    if end and pd.Timestamp(end) < dates[0]:
        raise DegenerateInputError(f"walk_forward.end {end} is before the data's first day {dates[0]:%Y-%m-%d}: "
                                   "no decision could be made; use a later end or older data")
    if cfg.features.include is None:  # the default feature set includes the 12-month lookbacks
        usable = len(dates) - (LONGEST_LOOKBACK_DAYS - 1)
        if usable <= cfg.walk_forward.min_train_days:
            raise DegenerateInputError(
                f"the data has {len(dates)} trading days ({dates[0]:%Y-%m-%d} .. {dates[-1]:%Y-%m-%d}); features need "
                f"{LONGEST_LOOKBACK_DAYS - 1} of them as lookback and walk-forward needs more than "
                f"walk_forward.min_train_days={cfg.walk_forward.min_train_days} after that: use more data or a smaller "
                f"--min-train-days (below {max(usable, 21)})")

