"""train: walk-forward training of one algorithm; its predictions, last model and a Metrics artifact."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from portfolio_mlops_kfp.components.images import image


@dsl.component(base_image=image("train"), install_kfp_package=False)
def train(config: Input[Dataset], algorithm: str, panel: Input[Dataset], features: Input[Dataset],
          model: Output[Model], metrics: Output[Metrics]):
    """The Metrics artifact is what the KFP UI shows per algorithm: signal and net portfolio figures."""
    import math

    from pathlib import Path

    from portfolio_mlops.config import BenchmarkConfig, RunConfig
    from portfolio_mlops.data.ingest import load_panel
    from portfolio_mlops.evaluation import evaluate
    from portfolio_mlops.features import to_grid
    from portfolio_mlops.errors import step_errors
    from portfolio_mlops.artifacts import load_features, save_training
    from portfolio_mlops.registry import TRAIN_METRICS, headlines
    from portfolio_mlops.runner import train_all

    cfg = RunConfig.model_validate_json(Path(config.path).read_text()).with_algorithms([algorithm])
    loaded = load_features(features.path)
    with step_errors("train"):  # e.g. too little history for the walk-forward schedule: exit 2, one line
        result = train_all(loaded, cfg)[algorithm]
    save_training(result, model.path)
    model.metadata.update({"algorithm": algorithm, "refits": len(result.refits)})

    # A quick look for the UI (no random benchmarks); the promote step evaluates all algorithms together.
    quick = cfg.model_copy(update={"benchmarks": BenchmarkConfig(random_seeds=0, factors=[])})
    # Metrics only: no report folder is written for this look.
    summary = evaluate(loaded, to_grid(load_panel(panel.path).prices), {algorithm: result}, quick, None).summary
    figures = headlines(summary["algorithms"][algorithm], TRAIN_METRICS)
    for name, value in figures.items():
        if value is not None and math.isfinite(value):
            metrics.log_metric(name, float(value))
    print(f"{algorithm}: {len(result.refits)} refits, " + ", ".join(f"{k} {v:.4f}" for k, v in figures.items() if v is not None))
