"""`portfolio-mlops`: one entry point, one subcommand per job. Run with --help for the details.

Each subcommand registers its own parser and handler (portfolio_mlops/commands/, devstack/cli.py):
`add_parser(subcommands)` adds it and `set_defaults(func=handler)`; COMMANDS lists them in --help order.
Adding a subcommand is one module and one line in COMMANDS. Shells around the core (pipelines/cli.py) add
theirs, and engines for `run`, through build_parser's `extend` and `engines`."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable, Sequence

from portfolio_mlops import __version__, algorithms, options
from portfolio_mlops.errors import ConfigError, PortfolioMLOpsError

DESCRIPTION = """\
Walk-forward S&P 500 stock ranking with honest evaluation.

Models (Ridge, Lasso, ElasticNet, HistGradientBoosting) rank stocks by their forward return from
point-in-time features; a top-N portfolio is traded with costs and compared, in the same run, with
the index, the equal-weight universe, random top-N picks and single-factor momentum/reversal.

With no --data, the embedded default (20 S&P 500 stocks, 1990-2022, adjusted closes, and the S&P 500
index) is used, so everything works offline."""

EPILOG = """\
examples:
  portfolio-mlops run                                   # whole chain on the embedded data
  portfolio-mlops run --data ~/kaggle/sp500 --top-n 50 --output outputs/kaggle
  portfolio-mlops ingest --data all_stocks_5yr.csv.gz --output work/data
  portfolio-mlops features --input work/data --output work/features
  portfolio-mlops train --features work/features --output work/train --algorithms ridge,lasso
  portfolio-mlops backtest --input work/data --features work/features --training work/train --output work/report
  portfolio-mlops predict --data all_stocks_5yr.csv.gz  # what the champion would hold next
  portfolio-mlops config > my.yaml                      # every option, with defaults

exit status: 0 on success, 2 on bad input or configuration (the message names the file, row or field),
3 when the tracking server or store is unusable; both print one line on stderr, checked before any compute."""


# The subcommands after `run`, in --help order: modules with add_parser(subcommands).
COMMANDS = ("portfolio_mlops.commands.steps", "portfolio_mlops.commands.models", "portfolio_mlops.devstack.cli",
            "portfolio_mlops.commands.serve", "portfolio_mlops.commands.predict", "portfolio_mlops.commands.config")


def add_common(parser: argparse.ArgumentParser) -> None:
    """The run settings every subcommand that runs (part of) the chain takes."""
    parser.add_argument("--config", metavar="FILE", help="YAML run configuration (see `portfolio-mlops config`)")
    add_preset(parser)
    options.add_flags(parser, *options.COMMON_FLAGS)
    parser.add_argument("--algorithms", metavar="LIST", help=f"comma-separated subset of {algorithms.listing()}")
    parser.add_argument("--quiet", action="store_true", help="no progress output on stderr")


def add_preset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["weekly"],
                        help="weekly: 5-day label horizon, rebalance every 5 trading days, refit every 12 rebalances "
                             "(more IC dates, ~4x the trading; see cost_drag); applied over --config, explicit "
                             "flags win")


def build_parser(engines: dict[str, Any] | None = None, default_engine: str = "inprocess",
                 extend: Callable[[Any], None] | None = None) -> argparse.ArgumentParser:
    """The CLI. Shells around the core (the KFP pipelines) add engines (name -> commands.run.Engine) and
    subcommands through `engines` and `extend(subparsers)`, so this package never imports them."""
    parser = argparse.ArgumentParser(prog="portfolio-mlops", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from portfolio_mlops.commands import run

    run.add_parser(sub, engines or run.ENGINES, default_engine)  # first in --help; the one that takes engines
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub)
    if extend is not None:
        extend(sub)
    return parser


def configured(handler: Callable[[argparse.Namespace, Any, Any], int]) -> Callable[[argparse.Namespace], int]:
    """A subcommand that takes the run configuration: handler(args, cfg, progress), with cfg from
    --config and the flags (config_from_args) and a Progress on stderr unless --quiet."""
    def command(args: argparse.Namespace) -> int:
        import logging

        from portfolio_mlops.progress import Progress

        # MLflow announces the embedded store's creation and migration on stderr at INFO: not ours to show.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        progress = Progress(enabled=not getattr(args, "quiet", False))
        return handler(args, config_from_args(args), progress)

    return command


def config_from_args(args: argparse.Namespace):
    """The RunConfig a subcommand's arguments ask for: --config, then --preset, then the flags
    (options.OPTIONS), then --algorithms. Validated once, here."""
    from portfolio_mlops.config import load_config, preset_overrides

    overrides: dict[str, Any] = preset_overrides(getattr(args, "preset", None))
    overrides.update(options.from_flags(args))
    cfg = load_config(getattr(args, "config", None), overrides)
    if getattr(args, "algorithms", None) is not None:
        chosen = [a.strip().lower() for a in args.algorithms.split(",") if a.strip()]
        if not chosen:  # `--algorithms ''` (an unset shell variable) must not silently mean "all"
            raise ConfigError(f"--algorithms {args.algorithms!r} names no algorithm; give a comma-separated subset "
                              f"of {algorithms.listing()}, or leave the option out for all of them")
        cfg = cfg.with_algorithms(chosen)
    return cfg


def main(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Parse and run the subcommand's handler (args.func)."""
    args = (parser or build_parser()).parse_args(argv)
    try:
        return args.func(args)
    except PortfolioMLOpsError as exc:
        # The contract: one line, no traceback; the exit status says whose problem it is (errors.py).
        message = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
        print(f"portfolio-mlops {args.command}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM during a run (interrupts.py): one line, 130 / 143
        from portfolio_mlops.interrupts import Interrupted, exit_now

        line = exc.line() if isinstance(exc, Interrupted) else "interrupted by SIGINT"
        print(f"portfolio-mlops {args.command}: {line}", file=sys.stderr)
        if isinstance(exc, Interrupted):  # a real signal (handlers installed): the cleanup is done, go now
            exit_now(exc.exit_code)
        return exc.exit_code if isinstance(exc, Interrupted) else 130


if __name__ == "__main__":
    sys.exit(main())
