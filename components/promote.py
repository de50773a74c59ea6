"""promote: evaluate every algorithm together, record the run in MLflow, register, promote, report."""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from portfolio_mlops_kfp.components.images import image


@dsl.component(base_image=image("promote"), install_kfp_package=False)
def promote(config: Input[Dataset], panel: Input[Dataset], features: Input[Dataset], models: Input[List[Model]],
            report: Output[HTML], summary: Output[Metrics], outputs: Output[Dataset]) -> str:
    """Returns the promotion decision line. `outputs` holds the whole report folder (summary.json, plots,
    holdings, predictions); `report` is the same as one HTML page for the KFP UI. Tracking and promotion
    run as the config's `tracking` section says (`run --no-tracking` / `--no-promote` set it)."""
    import json
    import math
    import os
    from pathlib import Path

    from portfolio_mlops.artifacts import load_features, load_training
    from portfolio_mlops.config import RunConfig
    from portfolio_mlops.data.ingest import load_panel
    from portfolio_mlops.errors import step_errors
    from portfolio_mlops.registry import PROMOTE_METRICS, headlines
    from portfolio_mlops.report import html_report, summary_json
    from portfolio_mlops.runner import assemble_chain

    cfg = RunConfig.model_validate_json(Path(config.path).read_text())
    results = {}
    for model in models:
        algorithm = model.metadata.get("algorithm") or next(Path(model.path).glob("training_*.json")).stem[9:]
        results[algorithm] = load_training(model.path, algorithm)
    order = [spec.name for spec in cfg.models if spec.name in results]
    results = {name: results[name] for name in order}
    cfg = cfg.with_algorithms(order)
    loaded_panel = load_panel(panel.path)
    quality_path = Path(panel.path) / "quality.json"
    quality = json.loads(quality_path.read_text()) if quality_path.is_file() else None
    os.makedirs(outputs.path, exist_ok=True)
    loaded_features = load_features(features.path)
    # A tracking failure: exit status 3, one line; the step's retries cover it. summary.json is written
    # last, with the tracking record in it, so a failed attempt leaves none.
    with step_errors("promote"):
        chain = assemble_chain(loaded_panel, loaded_features, results, cfg, outputs.path, quality)
    line = "promotion: skipped (tracking disabled)"
    if chain.tracked is not None:
        line = chain.decision.summary_line() if chain.decision else "promotion: skipped (--no-promote)"
        summary.metadata["mlflow_parent_run_id"] = chain.tracked.parent_run_id
    final = json.loads(summary_json(chain.summary))  # as summary.json says it: NaN as null, plain numbers
    page = html_report(final, outputs.path)
    Path(report.path).write_text(page, encoding="utf-8")
    Path(outputs.path, "report.html").write_text(page, encoding="utf-8")  # the KFP UI's page, also in --output
    for name, block in final["algorithms"].items():
        for key, value in headlines(block, PROMOTE_METRICS).items():
            if value is not None and math.isfinite(value):
                summary.log_metric(f"{name}_{key}", float(value))
    summary.log_metric("promoted", 1.0 if (final.get("promotion") or {}).get("promoted") else 0.0)
    print(line)
    return line
