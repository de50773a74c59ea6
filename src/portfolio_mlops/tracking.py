"""Record a chain run in MLflow: one parent run, one child run per algorithm, then model versions.

Order matters for faults: everything is logged first (params, metrics, metric history, artifacts,
models); model versions are registered only after every child run has finished successfully. A
failure (or an interrupt: SIGINT/SIGTERM) at any stage ends the open runs FAILED (when the server can still be told) and raises TrackingError
naming the stage and the tracking URI, so no model version ever points at a half-written run.

Registration is all or nothing even when the process is killed: versions are registered while the
parent run is still open, and the parent gets the completion mark (REGISTRATION_TAG) only after the
last one. Promotion ignores versions whose parent has no mark; the janitor (fail_abandoned_runs, run
by the next run) closes such a parent FAILED and deletes its versions.

Tracking URI: MLFLOW_TRACKING_URI, or MLflow's embedded default (sqlite `mlflow.db` and `mlruns/` in
the working directory). HTTP calls are retried by MLflow's client with exponential backoff; we cap
the retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES=4, backoff factor 1: about 15 s) unless set, so a dead
server fails in seconds instead of minutes.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from portfolio_mlops import __version__, metrics, registry
from portfolio_mlops.config import RunConfig
from portfolio_mlops.errors import TrackingError
from portfolio_mlops.features import FeatureSet
from portfolio_mlops.locks import pid_alive
from portfolio_mlops.models import feature_weights
from portfolio_mlops.outputs import RUN_ID_ENV

from portfolio_mlops.registry import (HOST_TAG, INVOCATION_TAG, PARENT_TAG, PID_TAG, REGISTERED_TAG,
                                     REGISTRATION_COMPLETE, REGISTRATION_TAG, registration_complete)

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
# MLflow 3's UI picks its view from this experiment tag; without it an experiment may open in the GenAI
# (traces) view. Values in mlflow 3.x's UI: "custom_model_development" (runs, metrics, models) or
# "genai_development".
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


@dataclass
class TrackedRun:
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    child_run_ids: dict[str, str] = field(default_factory=dict)
    model_versions: dict[str, str] = field(default_factory=dict)


def _configure_retries() -> None:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def default_tracking_uri() -> str:
    """What mlflow.get_tracking_uri() answers, without importing mlflow: the env var, else the embedded store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def check_store(tracking_uri: str) -> None:
    """Fail fast when an embedded sqlite store exists but is not an SQLite database (a junk or foreign
    file): MLflow would otherwise answer with a long SQLAlchemy traceback on its first query."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
    if not path.is_absolute():  # sqlite:///mlflow.db is relative to the working directory
        path = Path.cwd() / path
    if not path.exists():
        return  # MLflow creates it on first use
    try:
        with open(path, "rb") as stream:
            magic = stream.read(16)
    except OSError as exc:
        raise TrackingError(f"MLflow store {path} cannot be read ({exc}); fix its permissions or set MLFLOW_TRACKING_URI") from exc
    if path.is_dir() or (magic and magic != b"SQLite format 3\x00"):
        raise TrackingError(f"MLflow store {path} is not an SQLite database; move it away (a new one is created) "
                            "or point MLFLOW_TRACKING_URI at a tracking server")


def check_server(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast, with a clear message, when an HTTP tracking server does not answer /health (or the
    embedded store is not a database)."""
    if not tracking_uri.startswith(("http://", "https://")):
        check_store(tracking_uri)
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (the user's own server)
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        problem = str(getattr(exc, "reason", exc))
    raise TrackingError(f"MLflow server {tracking_uri} is not answering {url} ({problem}); start it "
                        "(`portfolio-mlops stack up`) or unset MLFLOW_TRACKING_URI to use the embedded store")


def code_version() -> str:
    """Package version plus the git commit of the working tree when there is one (-dirty if modified)."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{__version__}+g{sha}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"walk_forward.rebalance_every_days": "21", ...}; model lists keyed by algorithm."""
    out: dict[str, str] = {}
    if isinstance(value, dict) and value:
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
    elif isinstance(value, list) and value and all(isinstance(v, dict) and "algorithm" in v for v in value):
        for item in value:
            out.update(flatten({k: v for k, v in item.items() if k != "algorithm"}, f"{prefix}{item['algorithm']}."))
    else:
        out[prefix.rstrip(".")] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return out


def _finite_metrics(values: dict[str, Any], prefix: str) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_finite_metrics(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


def algorithm_metrics(summary: dict[str, Any], algorithm: str) -> dict[str, float]:
    """The flat metric set of one algorithm as logged to its child run."""
    block = summary["algorithms"][algorithm]
    flat = {}
    flat.update(_finite_metrics(block["signal"], "signal."))
    flat.update(_finite_metrics(block["portfolio"]["gross"], "gross."))
    flat.update(_finite_metrics(block["portfolio"]["net"], "net."))
    flat.update(_finite_metrics(block["excess"], "excess."))
    flat.update(_finite_metrics({f"{k}bps": v for k, v in block["cost_sensitivity"].items()}, "cost."))
    if block.get("random_percentile") is not None:
        flat["random_percentile"] = float(block["random_percentile"])
    if block.get("seeds"):  # mean +- std over seeds (evaluation._seed_spread)
        flat.update(_finite_metrics({"mean": block["seeds"]["mean"], "std": block["seeds"]["std"]}, "seeds."))
    return flat


def _history(client, run_id: str, key: str, dates: pd.DatetimeIndex, values: np.ndarray, every: int = 1) -> None:
    from mlflow.entities import Metric

    _log_metric_points(client, run_id, [
        Metric(key, float(v), int(d.value // 1_000_000), step)
        for step, (d, v) in enumerate(zip(dates, values)) if step % every == 0 and math.isfinite(v)
    ])


def _log_metric_points(client, run_id: str, points: list) -> None:
    for start in range(0, len(points), MAX_BATCH):
        client.log_batch(run_id, metrics=points[start:start + MAX_BATCH])


def _log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k[:250], v[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow's limit of params per batch
        client.log_batch(run_id, params=items[start:start + 100])


def _log_metrics(client, run_id: str, values: dict[str, float]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    _log_metric_points(client, run_id, [Metric(k, v, now, 0) for k, v in values.items()])


def log_chain(chain, features: FeatureSet, cfg: RunConfig, output_dir: str | Path, data_source: str | None = None) -> TrackedRun:
    """Log a finished chain (runner.ChainResult) and register one model version per algorithm.

    With MLFLOW_RUN_ID set (KFP's MLflow integration), that run is the parent.
    """
    from portfolio_mlops import interrupts

    outer = os.environ.pop("MLFLOW_RUN_ID", None)  # else MLflow would resume it for every child too
    try:
        # A signal is acted on between MLflow calls, never inside one (interrupts.deferred): an
        # interrupted sqlite write can keep the store locked against the cleanup's own calls.
        with interrupts.deferred():
            return _log_chain(chain, features, cfg, output_dir, data_source, outer)
    finally:
        if outer is not None:
            os.environ["MLFLOW_RUN_ID"] = outer


def _log_chain(chain, features: FeatureSet, cfg: RunConfig, output_dir: str | Path, data_source: str | None,
               outer: str | None) -> TrackedRun:
    import mlflow
    from mlflow import MlflowClient

    from portfolio_mlops import interrupts
    from portfolio_mlops.report import summary_json

    _configure_retries()
    uri = mlflow.get_tracking_uri()
    check_server(uri)
    client = MlflowClient()
    out = Path(output_dir)
    summary = chain.summary
    manifest = summary["data"]
    digest = manifest["content_digest"]
    stage = "creating the experiment"
    interrupts.raise_if_interrupted()
    tracked: TrackedRun | None = None
    try:
        experiment = (mlflow.set_experiment(experiment_id=client.get_run(outer).info.experiment_id) if outer
                      else mlflow.set_experiment(cfg.tracking.experiment))
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        stage = "closing runs abandoned by earlier processes"
        interrupts.raise_if_interrupted()
        fail_abandoned_runs(client, experiment.experiment_id, cfg.tracking.registered_model)
        stage = "opening the parent run"
        interrupts.raise_if_interrupted()
        tags = {
            HOST_TAG: socket.gethostname(),
            PID_TAG: str(os.getpid()),
            **({INVOCATION_TAG: os.environ[RUN_ID_ENV]} if os.environ.get(RUN_ID_ENV) else {}),
            registry.CODE_VERSION: code_version(),
            registry.DATA_DIGEST: digest,
            registry.DATA_LAYOUT: manifest["layout"],
            registry.DATA_SOURCE: str(Path(data_source).resolve()) if data_source else registry.DEFAULT_DATA_SOURCE,
        }
        # KFP's MLflow integration opens a run per pipeline run and passes it as MLFLOW_RUN_ID: nest
        # under it instead of opening a second parent.
        opened = (mlflow.start_run(run_id=outer, tags=tags) if outer else
                  mlflow.start_run(experiment_id=experiment.experiment_id, run_name=f"chain {manifest['layout']}", tags=tags))
        with opened as parent:
            tracked = TrackedRun(uri, experiment.experiment_id, parent.info.run_id)
            stage = "logging the parent run's params, metrics and lineage"
            interrupts.raise_if_interrupted()
            _log_params(client, parent.info.run_id, flatten(cfg.model_dump(mode="json")))
            bench_metrics = {}
            for name, values in summary["benchmarks"].items():
                bench_metrics.update(_finite_metrics({k: v for k, v in values.items() if not isinstance(v, dict)},
                                                     f"benchmark.{name}."))
            _log_metrics(client, parent.info.run_id, bench_metrics)
            _log_dataset(mlflow, features, manifest, data_source)
            stage = "logging the parent run's artifacts"
            interrupts.raise_if_interrupted()
            # The summary is a value until the run ends (runner.py writes summary.json last, with this
            # run's record in it); the artifact is the summary as it stood before tracking, as before.
            client.log_text(parent.info.run_id, summary_json(summary), "summary.json")
            for name in ("quality.json", "equity_curves.png", "drawdowns.png", "rolling_ic.png",
                         "daily_returns_net.csv"):
                if (out / name).is_file():
                    client.log_artifact(parent.info.run_id, str(out / name))
            for name in ("manifest.json", "quality.json"):
                if (out / "data" / name).is_file():
                    client.log_artifact(parent.info.run_id, str(out / "data" / name), artifact_path="data")
            for algorithm, result in chain.results.items():
                stage = f"logging the {algorithm} child run"
                interrupts.raise_if_interrupted()
                tracked.child_run_ids[algorithm] = _log_child(mlflow, client, chain, features, cfg, algorithm, result,
                                                               out, tags, parent.info.run_id)
            # Registered while the parent is still open, then marked complete: a kill in between
            # leaves a RUNNING parent without the mark, which promotion ignores and the janitor closes.
            stage = "registering model versions"
            interrupts.raise_if_interrupted()
            tracked.model_versions = _register(client, chain, cfg, tracked, digest)
            client.set_tag(parent.info.run_id, REGISTERED_TAG, json.dumps(tracked.model_versions))
            client.set_tag(parent.info.run_id, REGISTRATION_TAG, REGISTRATION_COMPLETE)
        return tracked
    except TrackingError:
        raise
    except KeyboardInterrupt as exc:  # SIGINT / SIGTERM (interrupts.Interrupted): close what we opened
        _mark_failed(client, uri, tracked, f"interrupted while {stage}")
        raise exc
    except Exception as exc:  # anything from the server, the store or the network
        _mark_failed(client, uri, tracked, f"{stage}: {exc}")
        raise TrackingError(f"MLflow tracking at {uri} failed while {stage}: {type(exc).__name__}: "
                            f"{_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def fail_abandoned_runs(client, experiment_id: str, registered_model: str | None = None) -> list[str]:
    """End FAILED the RUNNING runs that a process on this host started and can no longer finish.

    When the tracking server itself goes away mid-run, or the process is killed (SIGKILL, a crash),
    nobody can mark the run FAILED at that moment; the next tracked run on the same host does it,
    with the reason in the `failure` tag. With `registered_model`, the versions a closed parent had
    registered without the completion mark are deleted (half a registration is no registration).
    """
    host = socket.gethostname()
    runs = client.search_runs([experiment_id], f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
                              max_results=500)
    closed = []
    for run in runs:
        pid = int(run.data.tags.get(PID_TAG, "0") or 0)
        if pid and _process_alive(pid):
            continue
        client.set_tag(run.info.run_id, "failure", f"abandoned: process {pid} on {host} ended before finishing this "
                                                   "run (killed, or the tracking server or the artifact store went away)")
        client.set_terminated(run.info.run_id, "FAILED")
        closed.append(run.info.run_id)
    if registered_model:
        delete_incomplete_versions(client, registered_model, closed)
    return closed


def delete_incomplete_versions(client, registered_model: str, parent_run_ids: list[str]) -> list[str]:
    """Delete the versions registered by these parent runs unless the run carries the completion mark."""
    if not parent_run_ids:
        return []
    incomplete = {run_id for run_id in parent_run_ids if not registration_complete(client.get_run(run_id))}
    deleted = []
    try:
        versions = client.search_model_versions(f"name='{registered_model}'")
    except Exception:  # noqa: BLE001 - no such model yet
        return []
    for version in versions:
        if version.tags.get(PARENT_TAG) in incomplete:
            client.delete_model_version(registered_model, version.version)
            deleted.append(str(version.version))
    return deleted


def close_invocation(invocation: str, reason: str,
                     registered_model: str | None = None) -> tuple[list[str], list[str], list[str]]:
    """After an interrupt: end FAILED (tag `failure` = reason) every RUNNING run of this CLI run id, and
    delete the versions its parent runs registered without the completion mark. A registration that
    was complete before the signal is a committed fact (promotion may already point an alias at it)
    and is kept. Returns (closed runs, deleted versions, kept versions)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments(max_results=1000)]
    if not experiments:
        return [], [], []
    runs = client.search_runs(experiments, f"tags.`{INVOCATION_TAG}` = '{invocation}'", max_results=1000)
    closed = []
    for run in runs:
        if run.info.status == "RUNNING" or (run.info.status == "FAILED" and "failure" not in run.data.tags):
            client.set_tag(run.info.run_id, "failure", reason[:5000])  # MLflow's context exit gave no reason
            client.set_terminated(run.info.run_id, "FAILED")
            closed.append(run.info.run_id)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    deleted = (delete_incomplete_versions(client, registered_model, [r.info.run_id for r in parents])
               if registered_model else [])
    kept = [str(v) for r in parents if registration_complete(r)
            for v in json.loads(r.data.tags.get(REGISTERED_TAG) or "{}").values()]
    return closed, deleted, kept


def ensure_store() -> None:
    """Create the embedded store's schema now (MLflow migrates a new sqlite database on first use).

    Called under the store lock (locks.py), so two first runs in a fresh folder never migrate at once.
    """
    from mlflow import MlflowClient

    MlflowClient().search_experiments(max_results=1)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has no run open yet, so a RUNNING run with its pid is left over
    return pid_alive(pid)


def _mark_failed(client, uri: str, tracked: TrackedRun | None, reason: str) -> None:
    """Best effort: the server may be the thing that is down (then the next run's janitor does it)."""
    if tracked is None:
        return
    try:
        check_server(uri, timeout=2.0)
    except TrackingError:
        return
    for run_id in [tracked.parent_run_id, *tracked.child_run_ids.values()]:
        try:
            client.set_tag(run_id, "failure", reason[:5000])
            client.set_terminated(run_id, "FAILED")
        except Exception:  # noqa: BLE001 - nothing more can be done; the raised error says what happened
            pass


def _log_dataset(mlflow, features: FeatureSet, manifest: dict[str, Any], data_source: str | None) -> None:
    """Dataset lineage: the ingest manifest's digest and source, with the feature schema."""
    sample = features.frame[["date", "ticker", *features.feature_names, "label"]].head(1000)
    source = str(Path(data_source).resolve()) if data_source else str(Path(manifest["sources"][0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's registry lists the local source type twice
        dataset = mlflow.data.from_pandas(
            sample, source=source, targets="label",
            name=f"{manifest['layout']} ({manifest['tickers']} tickers, {manifest['start']}..{manifest['end']})"[:500],
            digest=manifest["content_digest"].removeprefix("sha256:")[:36],
        )
    mlflow.log_input(dataset, context="training", tags={"content_digest": manifest["content_digest"],
                                                       "rows": str(manifest["rows"])})


def _log_child(mlflow, client, chain, features: FeatureSet, cfg: RunConfig, algorithm: str, result, out: Path,
               parent_tags: dict[str, str], parent_run_id: str) -> str:
    from portfolio_mlops import interrupts

    spec = next(m for m in cfg.models if m.name == algorithm)
    with mlflow.start_run(run_name=algorithm, nested=True,
                          tags={**parent_tags, registry.ALGORITHM: algorithm, PARENT_TAG: parent_run_id}) as child:
        run_id = child.info.run_id
        _log_params(client, run_id, {"algorithm": algorithm, **flatten(spec.model_dump(mode="json"), "model."),
                                     **flatten(cfg.model_dump(mode="json", exclude={"models"}))})
        interrupts.raise_if_interrupted()  # between MLflow calls (see log_chain)
        _log_metrics(client, run_id, algorithm_metrics(chain.summary, algorithm))
        interrupts.raise_if_interrupted()  # between MLflow calls (see log_chain)
        backtest = chain.evaluation.backtests[algorithm]
        _history(client, run_id, "equity_net", backtest.dates, metrics.equity_curve(backtest.net(cfg.portfolio.cost_bps_per_side)),
                 cfg.tracking.equity_curve_every_days)
        interrupts.raise_if_interrupted()  # between MLflow calls (see log_chain)
        ic = chain.evaluation.ic_by_date[algorithm]
        _history(client, run_id, "ic", pd.DatetimeIndex(ic.index), ic.to_numpy())
        _history(client, run_id, "rolling_ic_12", pd.DatetimeIndex(ic.index), metrics.rolling_ic(ic).to_numpy())
        interrupts.raise_if_interrupted()  # between MLflow calls (see log_chain)
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            (folder / "refits.json").write_text(json.dumps(result.refits, indent=1, default=str))
            weights = feature_weights(result.model, features.feature_names)
            (folder / "coefficients.json").write_text(json.dumps(weights or _importances(result.model, features), indent=1))
            (folder / "config.json").write_text(cfg.with_algorithms([algorithm]).model_dump_json(indent=1))
            for name in (f"holdings_{algorithm}.csv", f"predictions_{algorithm}.parquet"):
                if (out / name).is_file():
                    client.log_artifact(run_id, str(out / name))
            client.log_artifacts(run_id, str(folder))
        interrupts.raise_if_interrupted()  # between MLflow calls (see log_chain)
        info = _log_portfolio_model(mlflow, chain, features, cfg.with_algorithms([algorithm]), result.model)
        client.set_tag(run_id, registry.MODEL_URI, info.model_uri)
    return run_id


def _log_portfolio_model(mlflow, chain, features: FeatureSet, cfg: RunConfig, estimator):
    """Log the prices-to-portfolio pyfunc (portfolio_model.PortfolioModel) as the run's `model`.

    The fitted estimator rides inside it as an MLflow sklearn model (artifacts/estimator), so its
    coefficients stay one `mlflow.sklearn.load_model` away. Requirements pin this package (its code
    is the model's code) and the numeric stack the estimator was fitted with.
    """
    import sklearn

    from portfolio_mlops import portfolio_model

    numeric = [f"scikit-learn=={sklearn.__version__}",
               *(f"{k}=={__import__(k).__version__}" for k in ("numpy", "pandas", "scipy"))]
    adjusted = bool(chain.summary["data"].get("adjusted", True))
    with tempfile.TemporaryDirectory() as scratch:
        artifacts = portfolio_model.save_artifacts(Path(scratch), estimator, cfg, features.feature_names, adjusted,
                                                   _skops_types(estimator), numeric)
        return mlflow.pyfunc.log_model(
            # Models from code: loading runs portfolio_model_code.py (no pickled object to trust).
            name="model", python_model=str(Path(portfolio_model.__file__).with_name("portfolio_model_code.py")),
            artifacts=artifacts,
            signature=portfolio_model.signature(),
            input_example=portfolio_model.input_example(chain.panel.prices),
            pip_requirements=[f"portfolio-mlops=={__version__}", f"mlflow=={mlflow.__version__}", *numeric],
        )


def _skops_types(model) -> list[str]:
    """The scikit-learn internals our own, just-trained model contains (skops refuses unknown types on load)."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))


def _importances(model, features: FeatureSet) -> dict[str, str]:
    return {"note": f"{type(model).__name__} has no coefficients; see refits.json for its training windows"}


def _register(client, chain, cfg: RunConfig, tracked: TrackedRun, digest: str) -> dict[str, str]:
    """One model version per algorithm, tagged with what promotion needs to judge it."""
    from portfolio_mlops import interrupts

    versions: dict[str, str] = {}
    try:
        for algorithm, run_id in tracked.child_run_ids.items():
            interrupts.raise_if_interrupted()  # between versions, never inside one (see log_chain)
            versions[algorithm] = _register_one(client, chain, cfg, tracked, digest, algorithm, run_id)
    except BaseException:  # errors and interrupts alike
        for version in versions.values():  # all or nothing: no version may outlive a failed registration
            try:
                client.delete_model_version(cfg.tracking.registered_model, version)
            except Exception:  # noqa: BLE001 - the original error is what the caller needs to see
                pass
        raise
    return versions


def _register_one(client, chain, cfg: RunConfig, tracked: TrackedRun, digest: str, algorithm: str, run_id: str) -> str:
    import mlflow

    tags = {
        registry.ALGORITHM: algorithm,
        registry.DATA_DIGEST: digest,
        registry.RUN_ID: run_id,
        PARENT_TAG: tracked.parent_run_id,
        registry.EVALUATION_DIGEST: registry.evaluation_digest(cfg),
        **{key: registry.metric_tag(value)
           for key, value in registry.key_metrics(chain.summary["algorithms"][algorithm]).items()},
        registry.CONFIG: cfg.with_algorithms([algorithm]).model_dump_json(),
        registry.CODE_VERSION: code_version(),
    }
    model_uri = client.get_run(run_id).data.tags[registry.MODEL_URI]
    return str(mlflow.register_model(model_uri, cfg.tracking.registered_model, tags=tags).version)
