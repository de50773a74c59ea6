"""`portfolio-mlops predict`: what the champion would hold next (portfolio_mlops/predict.py)."""

from __future__ import annotations

import argparse
from typing import Any

from portfolio_mlops.names import CHAMPION_MODEL_URI, REGISTERED_MODEL


def add_parser(subcommands: Any) -> None:
    predict = subcommands.add_parser(
        "predict", help="what the champion would hold next: its portfolio from the prices in --data",
        description="Read --data like `ingest` (any supported layout; the embedded data without --data), send the\n"
                    "rows to the registered prices-to-portfolio model and print its portfolio for the day after\n"
                    "the data's last date (or --as-of): ticker, score, rank and target weight of the names held,\n"
                    "with the model version. The data needs at least 253 trading days up to that date.\n"
                    "Tracking server: MLFLOW_TRACKING_URI, else the embedded store in the working directory.",
        epilog="examples:\n"
               "  portfolio-mlops predict                                    # the champion on the embedded data\n"
               "  portfolio-mlops predict --data all_stocks_5yr.csv.gz --output portfolio.csv\n"
               f"  portfolio-mlops predict --model-uri models:/{REGISTERED_MODEL}/3 --as-of 2017-06-30 --output p.json\n"
               "exit status 2 when there is no champion (the message lists the versions) or the data is unusable.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    predict.add_argument("--data", metavar="PATH", help="a file or folder in a supported layout (default: embedded data)")
    predict.add_argument("--model-uri", metavar="URI",
                         help=f"models:/<name>@<alias> or models:/<name>/<version> (default {CHAMPION_MODEL_URI})")
    predict.add_argument("--as-of", metavar="DATE", help="decide at this trading day of the data, using rows up to it only")
    predict.add_argument("--output", metavar="FILE", help="also write every scored ticker to FILE (.csv or .json)")
    predict.set_defaults(func=predict_command)


def predict_command(args: argparse.Namespace) -> int:
    from portfolio_mlops.predict import run_command

    return run_command(args)
