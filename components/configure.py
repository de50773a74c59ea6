"""configure: merge the pipeline's parameters into one validated RunConfig, a JSON Dataset every step reads.

An artifact, not a string output: kfp.local 2.17 hands a ParallelFor body the loop item in place of
an upstream task's *parameter* output (verified with a two-task pipeline), while artifacts pass intact.

It runs on the train image: it checks every hyperparameter against scikit-learn's own constraints
(sanity.check_config), and the ingest image carries no scikit-learn (tests/step_imports.py). Under
`portfolio-mlops run` (kfp.local) the CLI's preflight has already run that check in the same environment;
the step then sees the preflight's record of exactly what it checked (commands/run.py: CHECKED_ENV) and,
when it matches the merged config, does not import scikit-learn (~1 s) to repeat it.
"""

from kfp import dsl
from kfp.dsl import Dataset, Output

from portfolio_mlops_kfp.components.images import image


@dsl.component(base_image=image("train"), install_kfp_package=False)
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

    `algorithms` picks the models; when config_yaml lists models, their order (the report's and the
    registry's) is the config's, so an `algorithms` list ordered for scheduling (pipelines/cli.py runs the
    longest train step first) does not reorder the results.
    A user error (ConfigError) ends the step with exit status 2 and one line in its log; this step has
    no retries (pipelines/training.py), so it is never repeated."""
    import os
    import tempfile
    from pathlib import Path

    import yaml

    from portfolio_mlops.commands.run import CHECKED_ENV, checked_record
    from portfolio_mlops.config import load_config
    from portfolio_mlops.errors import step_errors
    from portfolio_mlops.options import from_parameters

    with step_errors("configure"):
        config_file = None
        if config_yaml.strip():
            config_file = Path(tempfile.mkdtemp()) / "config.yaml"
            config_file.write_text(config_yaml, encoding="utf-8")
        # The table (portfolio_mlops/options.py) maps each parameter to its config field; one left at its
        # unset value keeps the config file's (or the default) value.
        cfg = load_config(config_file, from_parameters(dict(
            data_source=data_source, horizon_days=horizon_days, top_n=top_n, cost_bps=cost_bps,
            experiment=experiment, registered_model=registered_model, rank_by=rank_by, min_ic_tstat=min_ic_tstat,
            margin=margin)))
        if algorithms:
            chosen = [str(a) for a in algorithms]
            raw = yaml.safe_load(config_yaml) if config_yaml.strip() else None  # valid: load_config read it
            if isinstance(raw, dict) and "models" in raw:  # stable: ones it does not list keep their order, last
                position = {spec.name: i for i, spec in enumerate(cfg.models)}
                chosen.sort(key=lambda name: position.get(name, len(position)))
            cfg = cfg.with_algorithms(chosen)
        if os.environ.get(CHECKED_ENV) != checked_record(cfg):
            from portfolio_mlops.sanity import check_config

            check_config(cfg)  # every hyperparameter against its estimator's constraints
    Path(config.path).write_text(cfg.model_dump_json(indent=1), encoding="utf-8")
    config.metadata.update({"algorithms": [m.name for m in cfg.models], "data": cfg.data or "embedded default"})
