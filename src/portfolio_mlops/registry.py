"""The registry contract: what tracking writes into MLflow and what promotion, `models`, `predict`,
serving and the pipeline's steps read back - tag names, aliases, model URIs, the evaluation digest
and the headline metrics. One home, so a writer and its readers cannot drift apart.

Standard library only: every pipeline step (even configure and ingest, whose images carry neither
MLflow nor scikit-learn) and the model server may import it.

Where each name lives in MLflow:
    parent run      HOST_TAG, PID_TAG, INVOCATION_TAG (the janitor's), CODE_VERSION, DATA_DIGEST,
                    DATA_SOURCE, then REGISTERED_TAG and REGISTRATION_TAG (the completion mark), and
                    the PROMOTION_* decision tags
    child run       ALGORITHM, PARENT_TAG, MODEL_URI (the logged prices-to-portfolio model)
    model version   ALGORITHM, DATA_DIGEST, RUN_ID, PARENT_TAG, EVALUATION_DIGEST, the PROMOTION_METRICS,
                    CONFIG, CODE_VERSION; after promotion PROMOTION_DECISION / PROMOTION_REASONS and,
                    on a re-evaluated champion, reevaluated_tag(...)
    aliases         CHAMPION, CHALLENGER
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portfolio_mlops.config import RunConfig

# --- run tags -------------------------------------------------------------------------------------
PARENT_TAG = "portfolio_mlops.parent_run_id"  # child runs and model versions -> their parent run
HOST_TAG = "portfolio_mlops.host"
PID_TAG = "portfolio_mlops.pid"
INVOCATION_TAG = "portfolio_mlops.invocation"  # the CLI run id (outputs.RUN_ID_ENV) that summary.json names
# Written on the parent run after its last model version is registered: only then are its versions
# candidates for promotion (a run killed mid-registration has some versions and no mark).
REGISTRATION_TAG = "portfolio_mlops.registration"
REGISTRATION_COMPLETE = "complete"
REGISTERED_TAG = "portfolio_mlops.registered_versions"  # JSON {algorithm: version}

# --- tags shared by runs and model versions -------------------------------------------------------
ALGORITHM = "algorithm"
DATA_DIGEST = "data_digest"  # the ingest manifest's content digest: the data a version was judged on
DATA_LAYOUT = "data_layout"
DATA_SOURCE = "data_source"  # resolved path, or DEFAULT_DATA_SOURCE
DEFAULT_DATA_SOURCE = "embedded default"
CODE_VERSION = "code_version"
MODEL_URI = "model_uri"
RUN_ID = "run_id"
EVALUATION_DIGEST = "evaluation_digest"  # evaluation_digest(cfg): the settings a version was judged with
CONFIG = "config"  # the version's RunConfig JSON (one algorithm): what re-evaluation walks forward

# --- promotion's record ----------------------------------------------------------------------------
PROMOTION_DECISION = "promotion.decision"  # version: its verdict; parent run: "promoted" / "not promoted"
PROMOTION_REASONS = "promotion.reasons"
PROMOTION_CHAMPION = "promotion.champion"  # parent run: the champion after the decision, or "none"
PROMOTION_RESULT = "promotion.result"  # parent run: the whole Decision as JSON (re-runs compare it)

CHAMPION = "champion"
CHALLENGER = "challenger"

# models:/<name>@<alias> (what serving follows) and models:/<name>/<version> (a pinned version).
ALIAS_URI = re.compile(r"models:/(?P<name>[^/@]+)@(?P<alias>[A-Za-z0-9_-]+)")
VERSION_URI = re.compile(r"models:/(?P<name>[^/@]+)/(?P<version>\d+)")


def alias_uri(registered_model: str, alias: str = CHAMPION) -> str:
    return f"models:/{registered_model}@{alias}"


def reevaluated_tag(data_digest: str, metric: str) -> str:
    """The version tag holding a champion's `metric` re-measured on other data (12 hex digits of its digest)."""
    return f"reevaluated.{data_digest.removeprefix('sha256:')[:12]}.{metric}"


def evaluation_digest(cfg: RunConfig) -> str:
    """Fingerprint of the settings that decide how a model is judged (not what the model is)."""
    settings = cfg.model_dump(mode="json", include={"validation", "walk_forward", "portfolio", "seed"})
    return "sha256:" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


# --- headline metrics ------------------------------------------------------------------------------
# name -> where it sits in one algorithm's block of summary.json (report.py writes it).
HEADLINE: dict[str, tuple[str, ...]] = {
    "ic_mean": ("signal", "ic_mean"),
    "ic_tstat": ("signal", "ic_tstat"),
    "ic_hac_tstat": ("signal", "ic_hac_tstat"),
    "icir": ("signal", "icir"),
    "oos_r2": ("signal", "oos_r2"),
    "net_cagr": ("portfolio", "net", "cagr"),
    "net_sharpe": ("portfolio", "net", "sharpe"),
    "max_drawdown": ("portfolio", "net", "max_drawdown"),
    "excess_vs_equal_weight": ("excess", "equal_weight", "ann_return"),
}
# What promotion judges a version by (promotion.Evidence): tagged on every model version.
PROMOTION_METRICS = ("net_sharpe", "icir", "ic_tstat", "ic_hac_tstat", "excess_vs_equal_weight")
# What the train step shows per algorithm in the KFP UI (pipelines/local.py reads this order from its log).
TRAIN_METRICS = ("ic_mean", "ic_tstat", "oos_r2", "net_cagr", "net_sharpe", "max_drawdown", "excess_vs_equal_weight")
# What the promote step shows per algorithm in the KFP UI.
PROMOTE_METRICS = ("net_sharpe", "ic_tstat")


def headline(algorithm_block: dict[str, Any], name: str) -> Any:
    """One headline metric of an algorithm's summary block; None when the block does not have it (e.g. the
    HAC t-statistic of an old summary, or the excess return when equal weight was not computed)."""
    value: Any = algorithm_block
    for key in HEADLINE[name]:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def headlines(algorithm_block: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: headline(algorithm_block, name) for name in names}


def key_metrics(algorithm_block: dict[str, Any]) -> dict[str, float]:
    """The numbers promotion judges a version by (see promotion.Evidence); NaN when missing."""
    return {name: float(value) if isinstance(value, (int, float)) else float("nan")
            for name, value in headlines(algorithm_block, PROMOTION_METRICS).items()}


def metric_tag(value: Any) -> str:
    """A metric as a version tag: repr of the float (round-trips exactly), "nan" when not finite."""
    return repr(float(value)) if isinstance(value, (int, float)) and math.isfinite(value) else "nan"


def tag_number(tags: dict[str, str], name: str) -> float:
    """A metric tag back as a float; NaN when absent or unreadable."""
    try:
        return float(tags.get(name, "nan"))
    except ValueError:
        return float("nan")


def registration_complete(run) -> bool:
    """Whether a parent run (an MLflow Run) carries the completion mark: every version it registered is there."""
    return run.data.tags.get(REGISTRATION_TAG) == REGISTRATION_COMPLETE
