"""features: point-in-time features and labels from the panel (a folder Dataset)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from portfolio_mlops_kfp.components.images import image


@dsl.component(base_image=image("features"), install_kfp_package=False)
def features(config: Input[Dataset], panel: Input[Dataset], features: Output[Dataset]):
    from pathlib import Path

    from portfolio_mlops.config import RunConfig
    from portfolio_mlops.data.ingest import load_panel
    from portfolio_mlops.errors import step_errors
    from portfolio_mlops.features import build_features
    from portfolio_mlops.artifacts import save_features

    cfg = RunConfig.model_validate_json(Path(config.path).read_text())
    with step_errors("features"):  # e.g. too little history for the labels: exit 2, one line, no retries
        built = build_features(load_panel(panel.path).prices, cfg.features, cfg.labels)
    save_features(built, features.path)
    features.metadata.update({"samples": len(built.frame), "features": list(built.feature_names),
                              "skipped": built.skipped})
    print(f"{len(built.frame):,} samples x {len(built.feature_names)} features; skipped: {built.skipped or 'none'}")
