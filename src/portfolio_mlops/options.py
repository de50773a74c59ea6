"""The run settings a person sets from outside a config file, in one table: for each RunConfig field, its
`portfolio-mlops` flag and its pipeline parameter (pipelines/training.py, components/configure.py).

A flag or parameter left out (None / its `unset` value) keeps the value from --config / `config_yaml`,
else the package default. The list of algorithms is not here: both edges take a list of names and
apply it with RunConfig.with_algorithms.

Standard library only: it builds the CLI's parser and runs in the configure step.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Option:
    path: str  # dotted RunConfig field, as config.load_config takes overrides
    flag: str | None = None  # the CLI option (None: pipeline only)
    parameter: str | None = None  # the pipeline parameter (None: CLI only)
    type: type = str
    unset: Any = None  # the pipeline parameter's "not given" value (its default in the pipeline signature)
    metavar: str | None = None
    help: str | None = None
    switch: Any = None  # a flag without a value: when given, the field is set to this (--no-tracking: False)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("data", "--data", "data_source", str, "", "PATH",
           "a file or folder in a supported layout (default: embedded data)"),
    Option("labels.horizon_days", "--horizon", "horizon_days", int, 0, "DAYS", "label horizon in trading days (default 21)"),
    Option("portfolio.top_n", "--top-n", "top_n", int, 0, "N", "stocks held per rebalance (default 10)"),
    Option("portfolio.cost_bps_per_side", "--cost-bps", "cost_bps", float, -1.0, "BPS",
           "transaction cost per side in bps (default 10)"),
    Option("walk_forward.rebalance_every_days", "--rebalance-every", None, int, None, "DAYS",
           "trading days between rebalances (default 21)"),
    Option("walk_forward.min_train_days", "--min-train-days", None, int, None, "DAYS",
           "trading days of known labels before the first decision (default 504)"),
    # `run`'s switches travel in the config, to the in-process chain and to the pipeline's steps alike
    Option("tracking.enabled", "--no-tracking", switch=False,
           help="skip MLflow (by default every run is logged to MLFLOW_TRACKING_URI, or to the embedded store "
                "mlflow.db + mlruns/ in the working directory, and promotion runs)"),
    Option("tracking.promote", "--no-promote", switch=False, help="log and register, but do not run promotion"),
    Option("tracking.experiment", None, "experiment", str, ""),
    Option("tracking.registered_model", None, "registered_model", str, ""),
    Option("promotion.rank_by", None, "rank_by", str, ""),
    Option("promotion.min_ic_tstat", None, "min_ic_tstat", float, -1.0),
    Option("promotion.margin", None, "margin", float, -1.0),
)
BY_PATH = {option.path: option for option in OPTIONS}
# The flags every subcommand that takes run settings shares (cli.add_common), in --help order.
COMMON_FLAGS = ("labels.horizon_days", "portfolio.top_n", "portfolio.cost_bps_per_side",
                "walk_forward.rebalance_every_days", "walk_forward.min_train_days")


def add_flags(parser: argparse.ArgumentParser, *paths: str) -> None:
    """Add the flags of these settings to a subcommand's parser, in the order given."""
    for path in paths:
        option = BY_PATH[path]
        if option.switch is not None:
            parser.add_argument(option.flag, action="store_true", help=option.help)
        else:
            parser.add_argument(option.flag, type=option.type, metavar=option.metavar, help=option.help)


def from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The overrides the parsed flags give (a subcommand without a flag, or a flag not given, gives none)."""
    overrides = {}
    for option in OPTIONS:
        if option.flag is None:
            continue
        value = getattr(args, option.dest, None)
        if option.switch is not None:
            value = option.switch if value else None
        if value is not None:
            overrides[option.path] = value
    return overrides


def pipeline_parameters() -> dict[str, Option]:
    """Pipeline parameter name -> its option, in the pipeline signature's order."""
    return {option.parameter: option for option in OPTIONS if option.parameter is not None}


def from_parameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides the pipeline's parameters give; `values` must hold every parameter of the table (a
    parameter the configure step forgot to pass would otherwise be silently ignored)."""
    declared = pipeline_parameters()
    if set(values) != set(declared):
        raise ValueError(f"pipeline parameters {sorted(values)} differ from the table's {sorted(declared)} "
                         "(portfolio_mlops/options.py)")
    return {declared[name].path: value for name, value in values.items() if value != declared[name].unset}
