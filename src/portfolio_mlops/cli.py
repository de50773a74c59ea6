"""`portfolio-mlops`: one entry point, one subcommand per job. Run with --help for the details."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from portfolio_mlops import __version__
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


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML run configuration (see `portfolio-mlops config`)")
    _add_preset(parser)
    parser.add_argument("--horizon", type=int, metavar="DAYS", help="label horizon in trading days (default 21)")
    parser.add_argument("--top-n", type=int, metavar="N", help="stocks held per rebalance (default 10)")
    parser.add_argument("--cost-bps", type=float, metavar="BPS", help="transaction cost per side in bps (default 10)")
    parser.add_argument("--rebalance-every", type=int, metavar="DAYS", help="trading days between rebalances (default 21)")
    parser.add_argument("--min-train-days", type=int, metavar="DAYS",
                        help="trading days of known labels before the first decision (default 504)")
    parser.add_argument("--algorithms", metavar="LIST", help="comma-separated subset of ridge,lasso,elasticnet,hgb")
    parser.add_argument("--quiet", action="store_true", help="no progress output on stderr")


def _add_preset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["weekly"],
                        help="weekly: 5-day label horizon, rebalance every 5 trading days, refit every 12 rebalances "
                             "(more IC dates, ~4x the trading; see cost_drag); applied over --config, explicit "
                             "flags win")


ENGINES = {"inprocess": "everything in this Python process"}
Handler = Callable[[argparse.Namespace, Any], int]


def build_parser(engines: dict[str, str] | None = None, default_engine: str = "inprocess",
                 extend: Callable[[Any], None] | None = None) -> argparse.ArgumentParser:
    """The CLI. Shells around the core (the KFP pipelines) add engines and subcommands through
    `engines` and `extend(subparsers)`, so this package never imports them."""
    engines = engines or ENGINES
    parser = argparse.ArgumentParser(prog="portfolio-mlops", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="the whole chain: ingest, features, walk-forward training, backtest, report",
                         description="Run the whole chain and write the report (summary.json, plots, holdings, predictions).")
    run.add_argument("--engine", choices=list(engines), default=default_engine,
                     help="; ".join(f"{name}: {text}" for name, text in engines.items()) + f" (default: {default_engine})")
    run.add_argument("--data", metavar="PATH", help="a file or folder in a supported layout (default: embedded data)")
    run.add_argument("--output", metavar="DIR", default="outputs/run", help="report folder (default: outputs/run)")
    run.add_argument("--no-tracking", action="store_true",
                     help="skip MLflow (by default every run is logged to MLFLOW_TRACKING_URI, or to the embedded "
                          "store mlflow.db + mlruns/ in the working directory, and promotion runs)")
    run.add_argument("--no-promote", action="store_true", help="log and register, but do not run promotion")
    run.add_argument("--verbose", action="store_true",
                     help="kfp engine: show kfp.local's own logs and the steps' output on the console (by default "
                          "they go to pipeline.log in the report folder and the console gets one line per step)")
    run.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                     help="when another run holds the output folder or the embedded MLflow store, wait up to "
                          "SECONDS for it (default 0: exit 2 at once, naming the holder)")
    _add_common(run)

    ingest = sub.add_parser("ingest", help="read and validate data, write the canonical Parquet panel",
                            description="Detect the layout, validate, and write prices.parquet, benchmark.parquet, "
                                        "quality.json and manifest.json (atomically).")
    ingest.add_argument("--data", metavar="PATH", help="a file or folder in a supported layout (default: embedded data)")
    ingest.add_argument("--output", metavar="DIR", required=True, help="folder for the canonical panel and reports")
    ingest.add_argument("--config", metavar="FILE", help="YAML run configuration (its `validation` section applies)")
    ingest.add_argument("--quiet", action="store_true", help="no progress output on stderr")

    features = sub.add_parser("features", help="point-in-time features and labels from an ingest folder",
                              description="Build point-in-time features and labels from an ingest folder: "
                                          "features.parquet and features_meta.json (features skipped for lack of "
                                          "volume or high/low are listed).")
    features.add_argument("--input", metavar="DIR", required=True, help="an ingest output folder")
    features.add_argument("--output", metavar="DIR", required=True)
    _add_common(features)

    train = sub.add_parser("train", help="walk-forward training and out-of-sample predictions per algorithm",
                           description="Walk-forward training and out-of-sample predictions per algorithm: "
                                       "predictions_<algo>.parquet, model_<algo>.pkl (the last refit) and "
                                       "training_<algo>.json (every refit's window, parameters and coefficients).")
    train.add_argument("--features", metavar="DIR", required=True, help="a features output folder")
    train.add_argument("--output", metavar="DIR", required=True)
    _add_common(train)

    backtest = sub.add_parser("backtest", help="portfolios, benchmarks, metrics, plots and summary.json",
                              description="Portfolios, benchmarks, metrics, plots and summary.json from the ingest, "
                                          "features and train folders (all algorithms found in --training unless "
                                          "--algorithms says otherwise).")
    backtest.add_argument("--input", metavar="DIR", required=True, help="the ingest output folder")
    backtest.add_argument("--features", metavar="DIR", required=True, help="the features output folder")
    backtest.add_argument("--training", metavar="DIR", required=True, help="the train output folder")
    backtest.add_argument("--output", metavar="DIR", required=True)
    _add_common(backtest)

    promote = sub.add_parser(
        "promote", help="judge a run's registered versions and move the champion alias only on evidence",
        description="Judge the model versions a pipeline run registered against the current champion, with the "
                    "configured policy (gates: IC t-stat, net excess over equal weight; margin over the champion on "
                    "the same data, re-evaluating the champion when it was judged on other data). Records the "
                    "decision and its reasons as tags; re-running on the same inputs changes nothing.")
    promote.add_argument("--run-id", metavar="ID", help="the parent run (default: the experiment's latest)")
    promote.add_argument("--config", metavar="FILE", help="YAML run configuration (its `promotion` and `tracking` sections)")
    promote.add_argument("--data", metavar="PATH", help="data for re-evaluating the champion (default: the run's data source)")

    models = sub.add_parser("models", help="list registered versions with aliases, metrics and decisions",
                            description="List every version of the registered model: aliases (champion, "
                                        "challenger), algorithm, key metrics, data digest and the recorded promotion "
                                        "decision.")
    models.add_argument("--config", metavar="FILE", help="YAML run configuration (its `tracking` section)")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")

    stack = sub.add_parser(
        "stack", help="run PostgreSQL, an S3 server and the MLflow tracking server locally (127.0.0.1)",
        description="The local MLflow stack: the three services the Kubernetes deployment runs - PostgreSQL (backend\n"
                    "store), an S3 server (SeaweedFS; artifact store) and the MLflow tracking server (proxied artifacts,\n"
                    "so clients need only MLFLOW_TRACKING_URI) - as processes on 127.0.0.1 under one folder (data, logs,\n"
                    "state.json). They keep running after the command returns; `stack down` stops them.",
        epilog="examples:\n"
               "  portfolio-mlops stack up                       # standard ports 15432, 18333, 15000\n"
               "  export MLFLOW_TRACKING_URI=http://127.0.0.1:15000\n"
               "  portfolio-mlops run                            # tracked on the local server\n"
               "  portfolio-mlops stack status                   # exit status 0 only if all are healthy\n"
               "  portfolio-mlops stack down --purge             # stop and delete the data",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    stack_actions = stack.add_subparsers(dest="stack_command", required=True, metavar="ACTION")
    stack_dir_help = "folder for data, logs and state.json (default: ./.stack)"
    stack_up = stack_actions.add_parser(
        "up", help="start whatever is not running (idempotent)",
        description="Start PostgreSQL, the S3 server and the MLflow server, each waiting until it answers; "
                    "services already running and healthy are left alone. Prints each service's URL and the "
                    "MLFLOW_TRACKING_URI to export. A port left out keeps the one this folder used before "
                    "(else the standard one); 0 picks a free one. The S3 port P also uses P+1..P+4 and "
                    "P+10000..P+10004 (SeaweedFS's internal servers).")
    stack_up.add_argument("--dir", metavar="DIR", help=stack_dir_help)
    stack_up.add_argument("--postgres-port", type=int, metavar="P", help="PostgreSQL port (standard 15432)")
    stack_up.add_argument("--s3-port", type=int, metavar="P", help="S3 endpoint port (standard 18333)")
    stack_up.add_argument("--mlflow-port", type=int, metavar="P", help="MLflow tracking server port (standard 15000)")
    stack_down = stack_actions.add_parser(
        "down", help="stop every service (data is kept unless --purge)",
        description="Stop the MLflow server, the S3 server and PostgreSQL, in that order (SIGTERM - for "
                    "PostgreSQL its fast shutdown - then SIGKILL after 20 s). Safe to repeat. Data stays for the next `stack up` unless --purge.")
    stack_down.add_argument("--dir", metavar="DIR", help=stack_dir_help)
    stack_down.add_argument("--purge", action="store_true", help="also delete the data, logs and state")
    stack_status = stack_actions.add_parser(
        "status", help="table of pid, port and health per service; exit status 0 only if all are healthy",
        description="For each service: whether its process is alive, whether its port answers, and whether it "
                    "is healthy (PostgreSQL runs a query, S3 answers for the bucket, MLflow answers /health), "
                    "with memory use and URL. Exit status 0 if all are healthy, else 1.")
    stack_status.add_argument("--dir", metavar="DIR", help=stack_dir_help)

    serve = sub.add_parser(
        "serve", help="serve models:/<name>@<alias> over HTTP, following the alias without restarts",
        description="Serve the registry's models:/<name>@<alias> with MLflow's scoring protocol (/invocations). HTTP\n"
                    "starts at once; a poller resolves the alias every --poll-seconds and loads the version it\n"
                    "points to, swapping it in without a restart (a version that fails to load leaves the\n"
                    "previous one serving). /health: alive; /ping: 200 once a model is loaded, else 503 with\n"
                    "the reason; /version: the served version. Flags override the environment variables named.",
        epilog="examples:\n"
               "  portfolio-mlops serve                          # models:/sp500-stock-ranker@champion on 127.0.0.1:8080\n"
               "  MLFLOW_TRACKING_URI=http://127.0.0.1:15000 portfolio-mlops serve --port 8081 --poll-seconds 5\n"
               "  curl -s localhost:8081/version",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--model-uri", metavar="URI",
                       help="models:/<registered model>@<alias> (env MODEL_URI; default models:/sp500-stock-ranker@champion)")
    serve.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking server (env MLFLOW_TRACKING_URI)")
    serve.add_argument("--host", metavar="ADDRESS", help="address to bind (env HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, metavar="PORT", help="port to bind (env PORT; default 8080)")
    serve.add_argument("--poll-seconds", type=float, metavar="S",
                       help="seconds between two resolutions of the alias (env POLL_SECONDS; default 10)")
    serve.add_argument("--download-dir", metavar="DIR",
                       help="writable folder for downloaded versions (default: $TMPDIR/portfolio-mlops-serving)")
    serve.set_defaults(func=_serve)

    predict = sub.add_parser(
        "predict", help="what the champion would hold next: its portfolio from the prices in --data",
        description="Read --data like `ingest` (any supported layout; the embedded data without --data), send the\n"
                    "rows to the registered prices-to-portfolio model and print its portfolio for the day after\n"
                    "the data's last date (or --as-of): ticker, score, rank and target weight of the names held,\n"
                    "with the model version. The data needs at least 253 trading days up to that date.\n"
                    "Tracking server: MLFLOW_TRACKING_URI, else the embedded store in the working directory.",
        epilog="examples:\n"
               "  portfolio-mlops predict                                    # the champion on the embedded data\n"
               "  portfolio-mlops predict --data all_stocks_5yr.csv.gz --output portfolio.csv\n"
               "  portfolio-mlops predict --model-uri models:/sp500-stock-ranker/3 --as-of 2017-06-30 --output p.json\n"
               "exit status 2 when there is no champion (the message lists the versions) or the data is unusable.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    predict.add_argument("--data", metavar="PATH", help="a file or folder in a supported layout (default: embedded data)")
    predict.add_argument("--model-uri", metavar="URI",
                         help="models:/<name>@<alias> or models:/<name>/<version> (default models:/sp500-stock-ranker@champion)")
    predict.add_argument("--as-of", metavar="DATE", help="decide at this trading day of the data, using rows up to it only")
    predict.add_argument("--output", metavar="FILE", help="also write every scored ticker to FILE (.csv or .json)")
    predict.set_defaults(func=_predict)

    config = sub.add_parser("config", help="print the effective configuration as YAML",
                            description="Print the effective configuration as YAML: every option with its default "
                                        "(or the value from --config), ready to edit and pass back with --config.")
    config.add_argument("--config", metavar="FILE", help="YAML file to merge over the defaults")
    _add_preset(config)
    if extend is not None:
        extend(sub)
    return parser


def _load_config(args: argparse.Namespace):
    from portfolio_mlops.config import load_config, preset_overrides

    overrides: dict[str, Any] = preset_overrides(getattr(args, "preset", None))
    flags: dict[str, Any] = {
        "data": getattr(args, "data", None),
        "labels.horizon_days": getattr(args, "horizon", None),
        "portfolio.top_n": getattr(args, "top_n", None),
        "portfolio.cost_bps_per_side": getattr(args, "cost_bps", None),
        "walk_forward.rebalance_every_days": getattr(args, "rebalance_every", None),
        "walk_forward.min_train_days": getattr(args, "min_train_days", None),
    }
    overrides.update({key: value for key, value in flags.items() if value is not None})
    cfg = load_config(getattr(args, "config", None), overrides)
    if getattr(args, "algorithms", None) is not None:
        chosen = [a.strip().lower() for a in args.algorithms.split(",") if a.strip()]
        if not chosen:  # `--algorithms ''` (an unset shell variable) must not silently mean "all"
            raise ConfigError(f"--algorithms {args.algorithms!r} names no algorithm; give a comma-separated subset "
                              "of ridge,lasso,elasticnet,hgb, or leave the option out for all of them")
        cfg = cfg.with_algorithms(chosen)
    return cfg


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


def preflight_run(args: argparse.Namespace, cfg):
    """Everything a `run` can be refused for, before any compute and whatever the engine: the models'
    hyperparameters, the output folder, the tracking store, the data (read and validated) and the
    degenerate cases of sanity.check_panel. Returns the validated panel; raises the PortfolioMLOpsError the
    CLI turns into one line."""
    from portfolio_mlops.data.ingest import build_panel
    from portfolio_mlops.sanity import check_config, check_panel

    check_config(cfg)
    check_output_folder(args.output)
    if not args.no_tracking:
        from portfolio_mlops.tracking import check_server, default_tracking_uri

        check_server(default_tracking_uri())
    panel, _ = build_panel(cfg.data, cfg.validation)
    check_panel(panel.prices, cfg)
    return panel


def main(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None,
         handlers: dict[str, Handler] | None = None) -> int:
    """Parse and run. `handlers` maps a subcommand (or "run:<engine>") to a function(args, config)."""
    args = (parser or build_parser()).parse_args(argv)
    try:
        return _dispatch(args, handlers or {})
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


def _serve(args: argparse.Namespace) -> int:
    from portfolio_mlops.serving import run_command

    return run_command(args)


def _predict(args: argparse.Namespace) -> int:
    from portfolio_mlops.predict import run_command

    return run_command(args)


def _dispatch(args: argparse.Namespace, handlers: dict[str, Handler]) -> int:
    if getattr(args, "func", None) is not None:  # subcommands that register themselves need no run configuration
        return args.func(args)
    if args.command == "stack":  # needs no run configuration
        from portfolio_mlops.stack import run_command

        return run_command(args)

    import logging

    from portfolio_mlops.progress import Progress

    # MLflow announces the embedded store's creation and migration on stderr at INFO: not ours to show.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    progress = Progress(enabled=not getattr(args, "quiet", False))
    key = f"run:{args.engine}" if args.command == "run" else args.command
    cfg = None if args.command in ("pipeline", "k8s") else _load_config(args)
    if args.command == "run":
        started = time.perf_counter()
        panel = preflight_run(args, cfg)  # silent until it passes: a refusal is one line on stderr
        progress.message(f"[check inputs] done in {time.perf_counter() - started:.1f}s: {panel.manifest['tickers']} "
                         f"tickers, {panel.manifest['start']} .. {panel.manifest['end']}, top {cfg.portfolio.top_n}")
    elif args.command in ("promote", "models"):
        from portfolio_mlops.errors import PromotionError
        from portfolio_mlops.tracking import check_server, default_tracking_uri

        uri = default_tracking_uri()
        check_server(uri)
        if args.command == "promote" and uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
            raise PromotionError(f"no MLflow store at {uri.removeprefix('sqlite:///')}: nothing has been tracked from this "
                                 "folder; run `portfolio-mlops run` first, or set MLFLOW_TRACKING_URI to your server")
    if key in handlers:
        if args.command == "run":
            return _in_session(args, cfg, lambda: handlers[key](args, cfg))
        return handlers[key](args, cfg)
    if args.command == "config":
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    if args.command == "run":
        return _in_session(args, cfg, lambda: _run_inprocess(args, cfg, progress))
    if args.command == "promote":
        return _promote(args, cfg)
    if args.command == "models":
        return _models(args, cfg)
    if args.command == "ingest":
        from portfolio_mlops.data.ingest import ingest

        _, report = ingest(cfg.data, args.output, cfg.validation)
        print(report.summary())
        print(f"wrote {args.output}/prices.parquet, quality.json, manifest.json")
        return 0
    if args.command == "features":
        from portfolio_mlops.data.ingest import load_panel
        from portfolio_mlops.features import build_features
        from portfolio_mlops.runner import save_features

        panel = load_panel(args.input)
        with progress.phase("features"):
            features = build_features(panel.prices, cfg.features, cfg.labels)
        save_features(features, args.output)
        print(f"{len(features.frame):,} samples x {len(features.feature_names)} features -> {args.output}/features.parquet")
        for name, reason in features.skipped.items():
            print(f"  skipped {name}: {reason}")
        return 0
    if args.command == "train":
        from portfolio_mlops.runner import load_features, save_training, train_all
        from portfolio_mlops.sanity import check_config

        check_config(cfg)
        features = load_features(args.features)
        for name, result in train_all(features, cfg, progress).items():
            save_training(result, args.output)
            print(f"{name}: {len(result.predictions):,} predictions, {len(result.refits)} refits, {result.seconds:.1f}s")
        return 0
    if args.command == "backtest":
        from portfolio_mlops.data.ingest import load_panel
        from portfolio_mlops.runner import evaluate_and_report, load_features, load_training, summary_table

        panel = load_panel(args.input)
        features = load_features(args.features)
        if not args.algorithms:  # evaluate whatever `train` wrote
            trained = sorted(p.stem.removeprefix("training_") for p in Path(args.training).glob("training_*.json"))
            if trained:
                cfg = cfg.with_algorithms(trained)
        results = {spec.name: load_training(args.training, spec.name) for spec in cfg.models}
        quality_path = Path(args.input) / "quality.json"
        quality = yaml.safe_load(quality_path.read_text()) if quality_path.is_file() else None
        summary, _, _ = evaluate_and_report(panel, features, results, cfg, args.output, quality)
        print(summary_table(summary))
        return 0
    raise AssertionError(args.command)


def _run_inprocess(args: argparse.Namespace, cfg, progress) -> int:
    """`run --engine inprocess`; args.output is the run's partial folder (see _in_session)."""
    from portfolio_mlops.runner import run_chain, summary_table

    started = time.perf_counter()
    result = run_chain(cfg, args.output, progress)
    print(summary_table(result.summary))
    if not args.no_tracking:
        from portfolio_mlops.runner import track_and_promote

        tracked, decision = track_and_promote(result, cfg, args.output, not args.no_promote, progress)
        versions = ", ".join(f"{a} v{v}" for a, v in tracked.model_versions.items())
        print(f"\nmlflow: {tracked.tracking_uri}  run {tracked.parent_run_id}  registered {cfg.tracking.registered_model}: {versions}")
        if decision is not None:
            print(decision.summary_line())
    print(f"\nreport: {getattr(args, 'report_dir', Path(args.output).resolve())}/summary.json (+ equity_curves.png, drawdowns.png, rolling_ic.png)"
          f"  [{time.perf_counter() - started:.1f}s]")
    return 0


def _in_session(args: argparse.Namespace, cfg, body: Callable[[], int]) -> int:
    """Run an engine inside session.run_session: locks, janitor, signals, and the report written into
    a partial folder (args.output while the engine runs; args.report_dir is the destination) that is
    swapped in only when the run succeeds."""
    from portfolio_mlops.session import run_session

    with run_session(args.output, not args.no_tracking, cfg.tracking.registered_model, cfg.tracking.experiment,
                     args.wait_lock) as session:
        args.report_dir, args.output = str(session.final), str(session.partial)
        code = body()
        session.failed = code != 0
        return code


def _promote(args: argparse.Namespace, cfg) -> int:
    import mlflow

    from portfolio_mlops import promotion
    from portfolio_mlops.data.ingest import build_panel
    from portfolio_mlops.errors import PromotionError
    from portfolio_mlops.runner import reevaluate_config
    from portfolio_mlops.tracking import check_server, registration_complete

    check_server(mlflow.get_tracking_uri())
    client = mlflow.MlflowClient()
    run_id = args.run_id
    if run_id is not None:
        try:
            client.get_run(run_id)
        except mlflow.exceptions.MlflowException as exc:
            raise PromotionError(f"--run-id {run_id!r}: no such run at {mlflow.get_tracking_uri()} "
                                 f"({str(exc).splitlines()[0]}); `portfolio-mlops models` lists the versions and their "
                                 "runs, or leave --run-id out for the latest finished run") from exc
    if run_id is None:
        experiment = client.get_experiment_by_name(cfg.tracking.experiment)
        runs = client.search_runs([experiment.experiment_id], "tags.data_digest != ''", order_by=["attributes.start_time DESC"],
                                  max_results=50) if experiment else []
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        # A run stopped while registering has some versions and no completion mark: never a candidate.
        incomplete = promotion.incomplete_registrations(cfg.tracking.registered_model, client)
        for run in parents:
            if run.info.status == "FINISHED" and registration_complete(run):
                break
            if run.info.run_id in incomplete:
                print(promotion.incomplete_note(run.info.run_id, len(incomplete[run.info.run_id])) +
                      f" (v{', v'.join(incomplete[run.info.run_id])})")
        parents = [r for r in parents if r.info.status == "FINISHED" and registration_complete(r)]
        if not parents:
            raise PromotionError(f"no finished pipeline run with a complete registration in experiment "
                                 f"{cfg.tracking.experiment!r}; run `portfolio-mlops run` first")
        run_id = parents[0].info.run_id
    source = args.data or client.get_run(run_id).data.tags.get("data_source")
    data = None if source in (None, "embedded default") else source

    def reevaluate(champion_json: str, settings_json: str) -> dict[str, float]:
        from portfolio_mlops.config import RunConfig

        panel, _ = build_panel(data, RunConfig.model_validate_json(settings_json).validation)
        return reevaluate_config(panel, champion_json, settings_json)

    from contextlib import nullcontext

    from portfolio_mlops import locks

    store_lock = locks.store_lock_path(mlflow.get_tracking_uri())  # moving aliases while a run registers: no
    with (locks.hold(store_lock, f"the MLflow store {locks.sqlite_path(mlflow.get_tracking_uri())}",
                     command="portfolio-mlops promote", say=lambda text: print(text, file=sys.stderr))
          if store_lock else nullcontext()):
        decision = promotion.promote(cfg.tracking.registered_model, run_id, cfg.promotion, reevaluate, client)
    print(decision.summary_line())
    for version, verdict in decision.candidates.items():
        print(f"  v{version} {verdict['algorithm']:<11} {verdict['decision']:<13} {'; '.join(verdict['reasons'])}")
    return 0


def _models(args: argparse.Namespace, cfg) -> int:
    import json

    from portfolio_mlops.promotion import list_versions

    rows = list_versions(cfg.tracking.registered_model)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no versions of {cfg.tracking.registered_model!r} yet (run `portfolio-mlops run`)")
        return 0

    def fmt(value: str | None, spec: str) -> str:
        try:
            return format(float(value), spec)
        except (TypeError, ValueError):
            return "n/a"

    print(f"{'ver':>4}  {'aliases':<20} {'algorithm':<11} {'Sharpe':>7} {'IC t':>6} {'HAC t':>6} {'xs EW':>8}  "
          f"{'data':<14} decision")
    for r in rows:
        print(f"{r['version']:>4}  {','.join(r['aliases']) or '-':<20} {r['algorithm']:<11} {fmt(r['net_sharpe'], '7.2f')} "
              f"{fmt(r['ic_tstat'], '6.2f')} {fmt(r.get('ic_hac_tstat'), '6.2f')} {fmt(r['excess_vs_equal_weight'], '+8.2%')}  "
              f"{r['data_digest'][7:19]:<14} {r['decision']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
