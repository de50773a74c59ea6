"""ingest: read and validate the data into the canonical panel (a folder Dataset)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from portfolio_mlops_kfp.components.images import image


@dsl.component(base_image=image("ingest"), install_kfp_package=False)
def ingest(config: Input[Dataset], panel: Output[Dataset]):
    """Writes prices.parquet, benchmark.parquet, quality.json and manifest.json into the artifact folder.

    Refuses (exit status 2, one line; no retries) data in no supported layout, data that fails validation,
    and degenerate input for this configuration (sanity.check_panel), before anything is written."""
    from datetime import date
    from pathlib import Path

    from portfolio_mlops.config import RunConfig
    from portfolio_mlops.data.ingest import build_panel, write_panel
    from portfolio_mlops.errors import step_errors
    from portfolio_mlops.sanity import check_panel

    cfg = RunConfig.model_validate_json(Path(config.path).read_text())
    with step_errors("ingest"):
        built, report = build_panel(cfg.data, cfg.validation)
        check_panel(built.prices, cfg, date.today())
    write_panel(built, report, panel.path)
    print(report.summary())
    panel.metadata.update({key: built.manifest[key] for key in ("layout", "rows", "tickers", "start", "end", "content_digest")})
