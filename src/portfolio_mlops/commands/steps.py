"""`portfolio-mlops ingest | features | train | backtest`: the chain one step at a time, each reading the
folders the previous steps wrote (the same artifacts the pipeline's steps pass)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from portfolio_mlops import cli, options


def add_parser(subcommands: Any) -> None:
    ingest = subcommands.add_parser(
        "ingest", help="read and validate data, write the canonical Parquet panel",
        description="Detect the layout, validate, and write prices.parquet, benchmark.parquet, quality.json and "
                    "manifest.json (atomically).")
    options.add_flags(ingest, "data")
    ingest.add_argument("--output", metavar="DIR", required=True, help="folder for the canonical panel and reports")
    ingest.add_argument("--config", metavar="FILE", help="YAML run configuration (its `validation` section applies)")
    ingest.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    ingest.set_defaults(func=cli.configured(ingest_command))

    features = subcommands.add_parser(
        "features", help="point-in-time features and labels from an ingest folder",
        description="Build point-in-time features and labels from an ingest folder: features.parquet and "
                    "features_meta.json (features skipped for lack of volume or high/low are listed).")
    features.add_argument("--input", metavar="DIR", required=True, help="an ingest output folder")
    features.add_argument("--output", metavar="DIR", required=True)
    cli.add_common(features)
    features.set_defaults(func=cli.configured(features_command))

    train = subcommands.add_parser(
        "train", help="walk-forward training and out-of-sample predictions per algorithm",
        description="Walk-forward training and out-of-sample predictions per algorithm: predictions_<algo>.parquet, "
                    "model_<algo>.pkl (the last refit) and training_<algo>.json (every refit's window, parameters "
                    "and coefficients).")
    train.add_argument("--features", metavar="DIR", required=True, help="a features output folder")
    train.add_argument("--output", metavar="DIR", required=True)
    cli.add_common(train)
    train.set_defaults(func=cli.configured(train_command))

    backtest = subcommands.add_parser(
        "backtest", help="portfolios, benchmarks, metrics, plots and summary.json",
        description="Portfolios, benchmarks, metrics, plots and summary.json from the ingest, features and train "
                    "folders (all algorithms found in --training unless --algorithms says otherwise).")
    backtest.add_argument("--input", metavar="DIR", required=True, help="the ingest output folder")
    backtest.add_argument("--features", metavar="DIR", required=True, help="the features output folder")
    backtest.add_argument("--training", metavar="DIR", required=True, help="the train output folder")
    backtest.add_argument("--output", metavar="DIR", required=True)
    cli.add_common(backtest)
    backtest.set_defaults(func=cli.configured(backtest_command))


def ingest_command(args: argparse.Namespace, cfg, progress) -> int:
    from portfolio_mlops.data.ingest import ingest

    _, report = ingest(cfg.data, args.output, cfg.validation)
    print(report.summary())
    print(f"wrote {args.output}/prices.parquet, quality.json, manifest.json")
    return 0


def features_command(args: argparse.Namespace, cfg, progress) -> int:
    from portfolio_mlops.artifacts import save_features
    from portfolio_mlops.data.ingest import load_panel
    from portfolio_mlops.features import build_features

    panel = load_panel(args.input)
    with progress.phase("features"):
        features = build_features(panel.prices, cfg.features, cfg.labels)
    save_features(features, args.output)
    print(f"{len(features.frame):,} samples x {len(features.feature_names)} features -> {args.output}/features.parquet")
    for name, reason in features.skipped.items():
        print(f"  skipped {name}: {reason}")
    return 0


def train_command(args: argparse.Namespace, cfg, progress) -> int:
    from portfolio_mlops.artifacts import load_features, save_training
    from portfolio_mlops.runner import train_all
    from portfolio_mlops.sanity import check_config

    check_config(cfg)
    features = load_features(args.features)
    for name, result in train_all(features, cfg, progress).items():
        save_training(result, args.output)
        print(f"{name}: {len(result.predictions):,} predictions, {len(result.refits)} refits, {result.seconds:.1f}s")
    return 0


def backtest_command(args: argparse.Namespace, cfg, progress) -> int:
    import yaml

    from portfolio_mlops.artifacts import load_features, load_training
    from portfolio_mlops.data.ingest import load_panel
    from portfolio_mlops.report import summary_table, write_summary
    from portfolio_mlops.runner import evaluate_and_report

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
    write_summary(summary, args.output)  # never tracked: the report is complete without a record
    print(summary_table(summary))
    return 0
