"""ingest: read and validate the data into the canonical panel (a folder Dataset)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.images import image


@dsl.component(base_image=image("ingest"), install_kfp_package=False)
def ingest(config: Input[Dataset], panel: Output[Dataset]):
    """Writes prices.parquet, benchmark.parquet, quality.json and manifest.json into the artifact folder."""
    from pathlib import Path

    from portfolio_mlops.config import RunConfig
    from portfolio_mlops.data.ingest import ingest as ingest_data

    cfg = RunConfig.model_validate_json(Path(config.path).read_text())
    written, report = ingest_data(cfg.data, panel.path, cfg.validation)
    print(report.summary())
    panel.metadata.update({key: written.manifest[key] for key in ("layout", "rows", "tickers", "start", "end", "content_digest")})
