"""The in-process chain: ingest -> features -> walk-forward per algorithm -> evaluation -> report
-> (tracking -> promotion, as RunConfig.tracking says) -> summary.json.

Each step also exists on its own (the CLI's ingest/features/train/backtest commands, the pipeline's
components), exchanging files in a work folder (artifacts.py); `run_chain` calls the same functions
in memory. Tracking and promotion return their record; summary.json is written once, last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from portfolio_mlops import atomic
from portfolio_mlops.backtest import decision_portfolio
from portfolio_mlops.config import PortfolioConfig, RunConfig
from portfolio_mlops.data.ingest import Panel, build_panel, load_panel, write_panel
from portfolio_mlops.features import FeatureSet, build_features, to_grid
from portfolio_mlops.outputs import current_run_id, new_run_id
from portfolio_mlops.progress import Progress, null_progress
from portfolio_mlops.summary_table import summary_table

# evaluation and walk_forward load scikit-learn, report loads matplotlib: imported where used, so a
# pipeline step that only saves or loads artifacts (features) loads neither (issue 13).
if TYPE_CHECKING:
    from portfolio_mlops.evaluation import Evaluation
    from portfolio_mlops.promotion import Decision
    from portfolio_mlops.tracking import TrackedRun
    from portfolio_mlops.walk_forward import WalkForwardResult


@dataclass
class ChainResult:
    summary: dict[str, Any]
    evaluation: Evaluation
    results: dict[str, WalkForwardResult]
    outputs: dict[str, Path]
    timings: dict[str, float]
    panel: Panel
    features: FeatureSet
    # Set when the run was tracked (cfg.tracking.enabled); `summary` then holds their record too.
    tracked: TrackedRun | None = None
    decision: Decision | None = None


def train_all(features: FeatureSet, cfg: RunConfig, progress: Progress = null_progress) -> dict[str, WalkForwardResult]:
    """Walk-forward per model; a seeded model (models.uses_seed) also with the run's other
    seeds (cfg.evaluation.seeds), kept in `other_seeds` for the mean +- std (its model is not kept)."""
    from portfolio_mlops.models import uses_seed
    from portfolio_mlops.walk_forward import SharedSums, walk_forward_predictions

    shared = SharedSums(features)  # the linear models' running moments: computed once, for all of them

    def fit(spec, seed: int, label: str):
        return walk_forward_predictions(features, spec, cfg.walk_forward, cfg.labels, seed=seed,
                                        progress=progress.step(label), threads=cfg.threads, shared=shared)

    results = {}
    for spec in cfg.models:
        result = results[spec.name] = fit(spec, cfg.seed, spec.name)
        others = range(cfg.seed + 1, cfg.seed + cfg.evaluation.seeds) if uses_seed(spec) else ()
        for seed in others:
            other = result.other_seeds[seed] = fit(spec, seed, f"{spec.name} seed {seed}")
            other.model = None
    return results


def evaluate_and_report(panel: Panel, features: FeatureSet, results: dict[str, WalkForwardResult], cfg: RunConfig,
                        output_dir: str | Path, quality: dict[str, Any] | None = None) -> tuple[dict[str, Any], Evaluation, dict[str, Path]]:
    """Evaluate and write every report file but summary.json; returns the summary as a value, for the
    caller to complete (tracking's record) and write last (report.write_summary)."""
    from portfolio_mlops.evaluation import evaluate
    from portfolio_mlops.report import write_outputs

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


def run_chain(cfg: RunConfig, output_dir: str | Path, progress: Progress = null_progress,
              checked_input: tuple[Panel, Any] | None = None) -> ChainResult:
    """The whole chain in memory; writes the report to `output_dir` (ingest output in output_dir/data).

    `checked_input`: the (panel, quality report) of build_panel(cfg.data, cfg.validation) when the
    caller has already read and validated the data (the CLI's preflight), so it is not read twice."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with progress.phase("ingest"):
        panel, report = checked_input or build_panel(cfg.data, cfg.validation)
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
        summary, evaluation, outputs = evaluate_and_report(panel, features, results, cfg, output_dir, report.to_dict())
    timings["evaluate"] = time.perf_counter() - started
    chain = ChainResult(summary, evaluation, results, outputs, timings, panel, features)
    return _track_and_finish(chain, cfg, output_dir, progress)


def assemble_chain(panel: Panel, features: FeatureSet, results: dict[str, WalkForwardResult], cfg: RunConfig,
                   output_dir: str | Path, quality: dict[str, Any] | None = None,
                   progress: Progress = null_progress) -> ChainResult:
    """What `run_chain` ends with, for callers that produced the pieces separately (the pipeline's
    promote step): evaluate and report, track and promote as `cfg.tracking` says, write summary.json."""
    summary, evaluation, outputs = evaluate_and_report(panel, features, results, cfg, output_dir, quality)
    chain = ChainResult(summary, evaluation, results, outputs, {}, panel, features)
    return _track_and_finish(chain, cfg, output_dir, progress)


def _track_and_finish(chain: ChainResult, cfg: RunConfig, output_dir: str | Path, progress: Progress) -> ChainResult:
    """Tracking and promotion (when enabled) add their record to the summary; then summary.json is
    written, once and last: its presence marks a complete report (session.py removes it from a failed
    run's partial folder)."""
    from portfolio_mlops.report import write_summary

    if cfg.tracking.enabled:
        chain.tracked, chain.decision = track_and_promote(chain, cfg, output_dir, progress)
        chain.summary = {**chain.summary, **tracking_record(chain.tracked, chain.decision, cfg)}
    chain.outputs["summary"] = write_summary(chain.summary, output_dir)
    return chain


def reevaluate_config(panel: Panel, config_json: str, settings_json: str | None = None) -> dict[str, float]:
    """A registered version's logged config, walked forward on `panel`: its promotion numbers there.

    The model (features, labels, algorithm and hyperparameters) comes from `config_json`; with
    `settings_json`, the evaluation settings (validation, walk-forward schedule, portfolio and costs,
    seed) come from there, so the champion is judged exactly as the candidates were.
    """
    from portfolio_mlops.config import BenchmarkConfig
    from portfolio_mlops.evaluation import evaluate
    from portfolio_mlops.registry import key_metrics

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


def track_and_promote(chain: ChainResult, cfg: RunConfig, output_dir: str | Path,
                      progress: Progress = null_progress) -> tuple[TrackedRun, Decision | None]:
    """Log the chain to MLflow and register its versions, then run promotion unless `cfg.tracking.promote`
    is off. Returns both; writes nothing to `output_dir` (its report files are logged as artifacts)."""
    from portfolio_mlops import promotion, tracking

    with progress.phase("mlflow: log + register"):
        tracked = tracking.log_chain(chain, chain.features, cfg, output_dir, cfg.data)
    decision = None
    if cfg.tracking.promote:
        with progress.phase("promotion"):
            decision = promotion.promote(cfg.tracking.registered_model, tracked.parent_run_id, cfg.promotion,
                                         lambda champion, settings: reevaluate_config(chain.panel, champion, settings))
    return tracked, decision


def tracking_record(tracked: TrackedRun, decision: Decision | None, cfg: RunConfig) -> dict[str, Any]:
    """What summary.json says about the run's MLflow record and its promotion (None: not run)."""
    return {
        "mlflow": {"tracking_uri": tracked.tracking_uri, "experiment_id": tracked.experiment_id,
                   "parent_run_id": tracked.parent_run_id, "child_run_ids": tracked.child_run_ids,
                   "registered_model": cfg.tracking.registered_model, "model_versions": tracked.model_versions},
        "promotion": decision.to_dict() if decision else None,
    }


__all__ = ["run_chain", "assemble_chain", "train_all", "evaluate_and_report", "track_and_promote", "load_panel",
           "summary_table"]
