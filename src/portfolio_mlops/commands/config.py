"""`portfolio-mlops config`: the effective configuration as YAML."""

from __future__ import annotations

import argparse
from typing import Any

from portfolio_mlops import cli


def add_parser(subcommands: Any) -> None:
    config = subcommands.add_parser(
        "config", help="print the effective configuration as YAML",
        description="Print the effective configuration as YAML: every option with its default "
                    "(or the value from --config), ready to edit and pass back with --config.")
    config.add_argument("--config", metavar="FILE", help="YAML file to merge over the defaults")
    cli.add_preset(config)
    config.set_defaults(func=cli.configured(print_config))


def print_config(args: argparse.Namespace, cfg, progress) -> int:
    import yaml

    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0
