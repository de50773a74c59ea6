"""`portfolio-mlops run`: the whole chain through one of the engines, with every refusal checked first.

An engine is a function(args, cfg, progress) -> exit status. This package has `inprocess`; shells around
it add theirs (pipelines/cli.py: `kfp`) through cli.build_parser's `engines`, so it never imports them.
Whatever the engine, the run goes through preflight_run (silent until it passes) and session.run_session
(locks, janitor, signals, a partial report folder swapped in on success).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

from portfolio_mlops import cli, options
from portfolio_mlops.errors import ConfigError


class Engine(NamedTuple):
    description: str  # for `run --help`
    run: Callable[[argparse.Namespace, Any, Any], int]  # (args, cfg, progress); args.output is the partial folder


def add_parser(subcommands: Any, engines: dict[str, Engine], default_engine: str) -> None:
    run = subcommands.add_parser(
        "run", help="the whole chain: ingest, features, walk-forward training, backtest, report",
        description="Run the whole chain and write the report (summary.json, plots, holdings, predictions).")
    run.add_argument("--engine", choices=list(engines), default=default_engine,
                     help="; ".join(f"{name}: {engine.description}" for name, engine in engines.items())
                          + f" (default: {default_engine})")
    options.add_flags(run, "data")
    run.add_argument("--output", metavar="DIR", default="outputs/run", help="report folder (default: outputs/run)")
    options.add_flags(run, "tracking.enabled", "tracking.promote")
    run.add_argument("--verbose", action="store_true",
                     help="kfp engine: show kfp.local's own logs and the steps' output on the console (by default "
                          "they go to pipeline.log in the report folder and the console gets one line per step)")
    run.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                     help="when another run holds the output folder or the embedded MLflow store, wait up to "
                          "SECONDS for it (default 0: exit 2 at once, naming the holder)")
    cli.add_common(run)

    def run_command(args: argparse.Namespace, cfg, progress) -> int:
        started = time.perf_counter()
        panel = preflight_run(args, cfg)  # silent until it passes: a refusal is one line on stderr
        progress.message(f"[check inputs] done in {time.perf_counter() - started:.1f}s: {panel.manifest['tickers']} "
                         f"tickers, {panel.manifest['start']} .. {panel.manifest['end']}, top {cfg.portfolio.top_n}")
        return in_session(args, cfg, lambda: engines[args.engine].run(args, cfg, progress))

    run.set_defaults(func=cli.configured(run_command))


def check_output_folder(output: str | Path) -> None:
    """--output must be a folder we can create and write, checked before any work (nothing is written here:
    a probe file in the nearest existing parent is created and removed)."""
    import tempfile

    path = Path(output)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--output {output}: is a file, not a folder; give a folder (it is created if missing)")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--output {output}: {existing} is a file, so the folder cannot be created; give another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".portfolio-mlops-probe-", dir=existing)
    except OSError as exc:
        raise ConfigError(f"--output {output}: cannot write in {existing} ({exc.strerror or exc}); "
                          "choose a folder you can write") from exc
    os.close(fd)
    os.unlink(probe)


# The preflight's record of what check_config accepted, for the pipeline's configure step (see checked_record).
CHECKED_ENV = "PORTFOLIO_MLOPS_CHECKED_CONFIG"


def checked_record(cfg) -> str:
    """Everything sanity.check_config looks at - features.include and every model spec (params, search grid) - as
    canonical JSON. The kfp engine passes the preflight's record to its steps in CHECKED_ENV; the configure
    step re-checks (importing scikit-learn) only a config whose record differs, so a step started with any
    other config, or outside this CLI (a cluster), is checked in full."""
    import json

    return json.dumps({"features.include": cfg.features.include,
                       "models": [spec.model_dump(mode="json") for spec in cfg.models]}, sort_keys=True)


def preflight_run(args: argparse.Namespace, cfg):
    """Everything a `run` can be refused for, before any compute and whatever the engine: the models'
    hyperparameters, the output folder, the tracking store, the data (read and validated) and the
    degenerate cases of sanity.check_panel. Returns the validated panel; raises the PortfolioMLOpsError the
    CLI turns into one line."""
    from portfolio_mlops.data.ingest import build_panel
    from portfolio_mlops.sanity import check_config, check_panel

    check_config(cfg)
    args.checked_record = checked_record(cfg)  # what passed, for the kfp engine's configure step
    check_output_folder(args.output)
    if cfg.tracking.enabled:
        from portfolio_mlops.tracking import check_server, default_tracking_uri

        check_server(default_tracking_uri())
    panel, report = build_panel(cfg.data, cfg.validation)
    check_panel(panel.prices, cfg)
    args.checked_input = (panel, report)  # the in-process engine goes on from here instead of reading again
    return panel


def in_session(args: argparse.Namespace, cfg, body: Callable[[], int]) -> int:
    """Run an engine inside session.run_session: locks, janitor, signals, and the report written into
    a partial folder (args.output while the engine runs; args.report_dir is the destination) that is
    swapped in only when the run succeeds."""
    from portfolio_mlops.session import run_session

    with run_session(args.output, cfg.tracking.enabled, cfg.tracking.registered_model, cfg.tracking.experiment,
                     args.wait_lock) as session:
        args.report_dir, args.output = str(session.final), str(session.partial)
        code = body()
        session.failed = code != 0
        return code


def run_inprocess(args: argparse.Namespace, cfg, progress) -> int:
    """`run --engine inprocess`; args.output is the run's partial folder (see in_session)."""
    from portfolio_mlops.runner import run_chain, summary_table

    started = time.perf_counter()
    # Tracks and promotes as cfg.tracking says; starts from the data the preflight read and validated.
    result = run_chain(cfg, args.output, progress, checked_input=getattr(args, "checked_input", None))
    print(summary_table(result.summary))
    if result.tracked is not None:
        tracked = result.tracked
        versions = ", ".join(f"{a} v{v}" for a, v in tracked.model_versions.items())
        print(f"\nmlflow: {tracked.tracking_uri}  run {tracked.parent_run_id}  registered {cfg.tracking.registered_model}: {versions}")
        if result.decision is not None:
            print(result.decision.summary_line())
    print(f"\nreport: {getattr(args, 'report_dir', Path(args.output).resolve())}/summary.json (+ equity_curves.png, drawdowns.png, rolling_ic.png)"
          f"  [{time.perf_counter() - started:.1f}s]")
    return 0


ENGINES = {"inprocess": Engine("everything in this Python process", run_inprocess)}
