"""configure: merge the pipeline's parameters into one validated RunConfig, a JSON Dataset every step reads.

An artifact, not a string output: kfp.local 2.17 hands a ParallelFor body the loop item in place of
an upstream task's *parameter* output (verified with a two-task pipeline), while artifacts pass intact.
"""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import image


@dsl.component(base_image=image("ingest"), install_kfp_package=False)
def configure(
    config_yaml: str,
    data_source: str,
    algorithms: list,
    horizon_days: int,
    top_n: int,
    cost_bps: float,
    experiment: str,
    registered_model: str,
    rank_by: str,
    min_ic_tstat: float,
    margin: float,
    config: Output[Dataset],
):
    """Validate once, at the edge: a bad parameter fails here, naming the field, before any work.

    A user error (ConfigError) ends the step with exit status 2 and one line in its log; this step has
    no retries (pipelines/training.py), so it is never repeated."""
    import tempfile
    from pathlib import Path

    from portfolio_mlops.config import load_config
    from portfolio_mlops.errors import step_errors
    from portfolio_mlops.sanity import check_config

    with step_errors("configure"):
        config_file = None
        if config_yaml.strip():
            config_file = Path(tempfile.mkdtemp()) / "config.yaml"
            config_file.write_text(config_yaml, encoding="utf-8")

        def given(value, unset):  # unset parameters keep the config file's (or the default) value
            return None if value == unset else value

        cfg = load_config(config_file, {
            "data": given(data_source, ""),
            "labels.horizon_days": given(horizon_days, 0),
            "portfolio.top_n": given(top_n, 0),
            "portfolio.cost_bps_per_side": given(cost_bps, -1.0),
            "tracking.experiment": given(experiment, ""),
            "tracking.registered_model": given(registered_model, ""),
            "promotion.rank_by": given(rank_by, ""),
            "promotion.min_ic_tstat": given(min_ic_tstat, -1.0),
            "promotion.margin": given(margin, -1.0),
        })
        if algorithms:
            cfg = cfg.with_algorithms([str(a) for a in algorithms])
        check_config(cfg)  # every hyperparameter against its estimator's constraints
    Path(config.path).write_text(cfg.model_dump_json(indent=1), encoding="utf-8")
    config.metadata.update({"algorithms": [m.name for m in cfg.models], "data": cfg.data or "embedded default"})
