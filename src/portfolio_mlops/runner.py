"""The in-process chain: ingest -> features -> walk-forward per algorithm -> evaluation -> report.

Each step also exists on its own (the CLI's ingest/features/train/backtest commands), exchanging
files in a work folder; `run_chain` calls the same functions in memory.
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from portfolio_mlops import atomic
from portfolio_mlops.backtest import decision_portfolio
from portfolio_mlops.config import PortfolioConfig, RunConfig
from portfolio_mlops.data.ingest import Panel, build_panel, load_panel, write_panel
from portfolio_mlops.evaluation import Evaluation, evaluate
from portfolio_mlops.features import FeatureSet, build_features, to_grid
from portfolio_mlops.outputs import current_run_id, new_run_id
from portfolio_mlops.progress import Progress, null_progress
from portfolio_mlops.report import summary_table, write_outputs
from portfolio_mlops.walk_forward import WalkForwardResult, walk_forward_predictions


@dataclass
class ChainResult:
    summary: dict[str, Any]
    evaluation: Evaluation
    results: dict[str, WalkForwardResult]
    outputs: dict[str, Path]
    timings: dict[str, float]
    panel: Panel
    features: FeatureSet


def train_all(features: FeatureSet, cfg: RunConfig, progress: Progress = null_progress) -> dict[str, WalkForwardResult]:
    return {
        spec.name: walk_forward_predictions(features, spec, cfg.walk_forward, cfg.labels, seed=cfg.seed,
                                            progress=progress.step(spec.name), threads=cfg.threads)
        for spec in cfg.models
    }


def evaluate_and_report(panel: Panel, features: FeatureSet, results: dict[str, WalkForwardResult], cfg: RunConfig,
                        output_dir: str | Path, quality: dict[str, Any] | None = None) -> tuple[dict[str, Any], Evaluation, dict[str, Path]]:
    grid = to_grid(panel.prices)
    evaluation = evaluate(features, grid, results, cfg, panel.benchmark,
                          (panel.manifest.get("benchmark") or {}).get("name"))
    summary = {
        # The run these files belong to: the report folder is swapped in whole (outputs.py), and the
        # MLflow runs carry the same id in their portfolio_mlops.invocation tag.
        "run_id": current_run_id() or new_run_id(),
        **evaluation.summary,
        "data": panel.manifest,
        "config": cfg.model_dump(mode="json"),
    }
    if quality is not None:
        summary["data_quality"] = {c["name"]: c["count"] for c in quality["checks"] if c["count"]}
    outputs = write_outputs(
        evaluation,
        {name: r.predictions for name, r in results.items()},
        {name: r.refits for name, r in results.items()},
        summary,
        output_dir,
        {name: latest_portfolio(features, r.model, cfg.portfolio) for name, r in results.items() if r.model is not None},
    )
    if quality is not None:
        outputs["quality"] = Path(output_dir) / "quality.json"
        atomic.write_json(outputs["quality"], quality)
    return summary, evaluation, outputs


def latest_portfolio(features: FeatureSet, model, portfolio: PortfolioConfig) -> pd.DataFrame:
    """What the final model would hold next: its book for the decision at the data's last date.

    The registered pyfunc (portfolio_model) gives the same table from the raw rows up to that date.
    """
    frame = features.frame
    last = frame[frame["date_pos"] == frame["date_pos"].max()]
    return decision_portfolio(last, model.predict(last[list(features.feature_names)]), portfolio)


def run_chain(cfg: RunConfig, output_dir: str | Path, progress: Progress = null_progress) -> ChainResult:
    """The whole chain in memory; writes the report to `output_dir` (ingest output in output_dir/data)."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with progress.phase("ingest"):
        panel, report = build_panel(cfg.data, cfg.validation)
        write_panel(panel, report, Path(output_dir) / "data")
    progress.message(report.summary())
    timings["ingest"] = time.perf_counter() - started

    started = time.perf_counter()
    with progress.phase("features"):
        features = build_features(panel.prices, cfg.features, cfg.labels)
    timings["features"] = time.perf_counter() - started
    if features.skipped:
        progress.message("features skipped: " + "; ".join(f"{k} ({v})" for k, v in features.skipped.items()))

    started = time.perf_counter()
    results = train_all(features, cfg, progress)
    timings["train"] = time.perf_counter() - started

    started = time.perf_counter()
    with progress.phase("evaluate + report"):
        chain = assemble_chain(panel, features, results, cfg, output_dir, report.to_dict())
    timings["evaluate"] = time.perf_counter() - started
    chain.timings.update(timings)
    return chain


def assemble_chain(panel: Panel, features: FeatureSet, results: dict[str, WalkForwardResult], cfg: RunConfig,
                   output_dir: str | Path, quality: dict[str, Any] | None = None) -> ChainResult:
    """Evaluate trained results and write the report: what `run_chain` ends with, for callers that
    produced the pieces separately (the pipeline's promote step)."""
    summary, evaluation, outputs = evaluate_and_report(panel, features, results, cfg, output_dir, quality)
    return ChainResult(summary, evaluation, results, outputs, {}, panel, features)


def reevaluate_config(panel: Panel, config_json: str, settings_json: str | None = None) -> dict[str, float]:
    """A registered version's logged config, walked forward on `panel`: its promotion numbers there.

    The model (features, labels, algorithm and hyperparameters) comes from `config_json`; with
    `settings_json`, the evaluation settings (validation, walk-forward schedule, portfolio and costs,
    seed) come from there, so the champion is judged exactly as the candidates were.
    """
    from portfolio_mlops.config import BenchmarkConfig
    from portfolio_mlops.tracking import key_metrics

    cfg = RunConfig.model_validate_json(config_json)
    if settings_json is not None:
        settings = RunConfig.model_validate_json(settings_json)
        cfg = cfg.model_copy(update={"validation": settings.validation, "walk_forward": settings.walk_forward,
                                     "portfolio": settings.portfolio, "seed": settings.seed})
    cfg = cfg.model_copy(update={"benchmarks": BenchmarkConfig(random_seeds=0, factors=[])})
    features = build_features(panel.prices, cfg.features, cfg.labels)
    results = train_all(features, cfg)
    evaluation = evaluate(features, to_grid(panel.prices), results, cfg, None)
    return key_metrics(evaluation.summary["algorithms"][cfg.models[0].name])


def track_and_promote(chain: ChainResult, cfg: RunConfig, output_dir: str | Path, promote_models: bool = True,
                      progress: Progress = null_progress):
    """Log the chain to MLflow, register its versions and run promotion; record both in the output folder.

    `output_dir` is the run's partial folder (session.py): the record joins summary.json before the
    folder is swapped in, never after."""
    from portfolio_mlops import promotion, tracking

    with progress.phase("mlflow: log + register"):
        tracked = tracking.log_chain(chain, chain.features, cfg, output_dir, cfg.data)
    decision = None
    if promote_models:
        with progress.phase("promotion"):
            decision = promotion.promote(cfg.tracking.registered_model, tracked.parent_run_id, cfg.promotion,
                                         lambda champion, settings: reevaluate_config(chain.panel, champion, settings))
    record = {
        "mlflow": {"tracking_uri": tracked.tracking_uri, "experiment_id": tracked.experiment_id,
                   "parent_run_id": tracked.parent_run_id, "child_run_ids": tracked.child_run_ids,
                   "registered_model": cfg.tracking.registered_model, "model_versions": tracked.model_versions},
        "promotion": decision.to_dict() if decision else None,
    }
    summary_path = Path(output_dir) / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    summary.update(record)
    atomic.write_json(summary_path, summary)
    return tracked, decision


# File-based steps, for running one stage at a time (and, later, one pipeline component per step).

def save_features(features: FeatureSet, folder: str | Path) -> None:
    folder = Path(folder)
    atomic.write_parquet(folder / "features.parquet", features.frame)
    atomic.write_json(folder / "features_meta.json", {
        "feature_names": list(features.feature_names),
        "skipped": features.skipped,
        "calendar": [d.strftime("%Y-%m-%d") for d in features.dates],
    })


def load_features(folder: str | Path) -> FeatureSet:
    folder = Path(folder)
    meta = atomic.read_marker(folder / "features_meta.json", "run `portfolio-mlops features` first")
    return FeatureSet(
        frame=pd.read_parquet(folder / "features.parquet"),
        feature_names=tuple(meta["feature_names"]),
        skipped=meta["skipped"],
        dates=pd.DatetimeIndex(pd.to_datetime(meta["calendar"])),
    )


def save_training(result: WalkForwardResult, folder: str | Path) -> None:
    folder = Path(folder)
    atomic.write_parquet(folder / f"predictions_{result.algorithm}.parquet", result.predictions)
    if result.daily is not None:
        atomic.write_parquet(folder / f"daily_scores_{result.algorithm}.parquet", result.daily)
    with atomic.atomic_path(folder / f"model_{result.algorithm}.pkl") as tmp:
        tmp.write_bytes(pickle.dumps(result.model))
    atomic.write_json(folder / f"training_{result.algorithm}.json", {
        "algorithm": result.algorithm, "refits": result.refits,
        "configurations_tried": result.configurations_tried, "seconds": result.seconds,
    })


def load_training(folder: str | Path, algorithm: str) -> WalkForwardResult:
    folder = Path(folder)
    meta = atomic.read_marker(folder / f"training_{algorithm}.json",
                              f"run `portfolio-mlops train --algorithms {algorithm}` first")
    model = pickle.loads((folder / f"model_{algorithm}.pkl").read_bytes())
    daily_path = folder / f"daily_scores_{algorithm}.parquet"
    daily = pd.read_parquet(daily_path) if daily_path.is_file() else None  # absent in older training folders
    return WalkForwardResult(algorithm, pd.read_parquet(folder / f"predictions_{algorithm}.parquet"), meta["refits"],
                             model, meta["configurations_tried"], meta["seconds"], daily)


__all__ = ["run_chain", "train_all", "evaluate_and_report", "save_features", "load_features", "save_training",
           "load_training", "load_panel", "summary_table"]
