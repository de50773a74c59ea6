"""The training pipeline, as one would draw it (no `from __future__ import annotations`: kfp reads the
real annotation objects):

    configure -> ingest -> features -> train (one per algorithm, in parallel) -> promote

Parameters left at their "unset" value (0, -1, "" or []) take the value from `config_yaml` or the
package defaults; anything set here overrides them. MLflow settings reach the promote step from the
ConfigMap and Secret named below (created by the Kubernetes manifests), never from the code.
"""


import inspect
import sys
from contextlib import contextmanager
from typing import Iterator, NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import Dataset, pipeline_task

from portfolio_mlops import names
from portfolio_mlops.algorithms import ALGORITHMS
from portfolio_mlops_kfp.components.configure import configure
from portfolio_mlops_kfp.components.features import features
from portfolio_mlops_kfp.components.ingest import ingest
from portfolio_mlops_kfp.components.promote import promote
from portfolio_mlops_kfp.components.train import train

MLFLOW_CONFIGMAP = names.PIPELINE_MLFLOW_CONFIG  # keys: MLFLOW_TRACKING_URI, MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD
MLFLOW_SECRET = names.PIPELINE_MLFLOW_CONFIG  # optional keys: tracking basic-auth, S3 credentials for direct artifact access
DEFAULT_ALGORITHMS = list(ALGORITHMS)  # the fan-out: every registered algorithm

# (cpu request, cpu limit, memory request, memory limit) per step.
# Limits are sized for a full S&P 500 panel. Requests are what the scheduler must find free, and the
# same IR runs on the smallest target: a 2-vCPU kind node (GitHub runner) where the control plane
# (~0.95 CPU), KFP 2.17 (~0.67 CPU, ~3 GiB) and our services (~0.4 CPU) already request nearly all of
# it, plus 0.1 CPU per KFP driver/launcher; of its ~7 GB, about 2 GiB are left. With a 1-CPU or 2G
# request a step would stay Pending forever; with 100m / 1G it schedules and bursts up to its limit
# while the node is idle. The train steps run in parallel (one per algorithm): on a full node they
# queue rather than fail.
RESOURCES = {
    "configure": ("100m", "500m", "256M", "1G"),
    "ingest": ("100m", "2", "1G", "4G"),
    "features": ("100m", "2", "1G", "4G"),
    "train": ("100m", "1", "1G", "4G"),
    "promote": ("100m", "2", "1G", "6G"),
}


# Retries per step: only for failures that can be transient. KFP (kfp.local's task executor as well as
# the cluster's Argo retryStrategy) retries any failed attempt, whatever the cause - it cannot tell a
# data error from a lost node - so the classification is made here, per step, by what can fail in it:
#   configure, ingest, features: pure functions of the config and the data. What fails there is the
#     user's input (ConfigError, DataLayoutError, DataValidationError, DegenerateInputError: the step
#     exits 2 with one line, errors.step_errors) or a bug; repeating cannot change either: no retries.
#     (`portfolio-mlops run` also checks all of it in the CLI before the pipeline starts.)
#   train: deterministic too, but long and memory-hungry: on a cluster a pod evicted or OOM-killed on a
#     busy node is the platform's transient fault: 1 retry.
#   promote: talks to the tracking server and the registry (TrackingError, exit 3: a server blip or a
#     restart, 30 s later often gone): 1 retry. A failed attempt ends its MLflow runs FAILED (tracking.py),
#     so promotion never judges a half-logged attempt.
RETRIES = {"configure": 0, "ingest": 0, "features": 0, "train": 1, "promote": 1}


class _FramesOnly:
    """Stands in for `inspect` in kfp.dsl.pipeline_task while _shape sets resources. kfp 2.17's resource
    setters call `inspect.stack()` only to name their caller in an error message (`inspect.stack()[1][3]`);
    inspect.stack reads the source of every frame and scans all of sys.modules for each, ~25 ms per call in
    the CLI (~4,000 modules loaded by then), ~0.6 s of CPU for this pipeline's 20 calls before its first step.
    `stack()` here gives the same (frame, file, line, function) entries without the source lookups."""

    def __getattr__(self, name: str):
        return getattr(inspect, name)

    @staticmethod
    def stack(context: int = 1) -> list:
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            frames.append((frame, frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, None, None))
            frame = frame.f_back
        return frames


@contextmanager
def _frames_only() -> Iterator[None]:
    original = pipeline_task.inspect
    pipeline_task.inspect = _FramesOnly()
    try:
        yield
    finally:
        pipeline_task.inspect = original


def _shape(task: dsl.PipelineTask, step: str) -> dsl.PipelineTask:
    cpu_request, cpu_limit, memory_request, memory_limit = RESOURCES[step]
    with _frames_only():
        task.set_cpu_request(cpu_request).set_cpu_limit(cpu_limit)
        task.set_memory_request(memory_request).set_memory_limit(memory_limit)
    if RETRIES[step]:
        # every step is idempotent: it rewrites its own outputs from its inputs
        task.set_retry(num_retries=RETRIES[step], backoff_duration="30s", backoff_factor=2.0)
    return task


@dsl.pipeline(name=names.PIPELINE, description="Walk-forward S&P 500 stock ranking with honest evaluation, "
                                              "tracked in MLflow, promoted only on evidence.")
def training_pipeline(
    data_source: str = "",
    config_yaml: str = "",
    algorithms: list = DEFAULT_ALGORITHMS,
    horizon_days: int = 0,
    top_n: int = 0,
    cost_bps: float = -1.0,
    experiment: str = "",
    registered_model: str = "",
    rank_by: str = "",
    min_ic_tstat: float = -1.0,
    margin: float = -1.0,
) -> NamedTuple("Outputs", decision=str, report=Dataset):
    settings = configure(
        config_yaml=config_yaml, data_source=data_source, algorithms=algorithms, horizon_days=horizon_days,
        top_n=top_n, cost_bps=cost_bps, experiment=experiment, registered_model=registered_model,
        rank_by=rank_by, min_ic_tstat=min_ic_tstat, margin=margin,
    )
    _shape(settings, "configure").set_caching_options(False)
    config = settings.outputs["config"]

    panel = _shape(ingest(config=config), "ingest")
    panel.set_caching_options(False)  # the data behind a path can change; the digest says whether it did

    built = _shape(features(config=config, panel=panel.outputs["panel"]), "features")

    with dsl.ParallelFor(algorithms, name="per-algorithm") as algorithm:
        trained = _shape(train(config=config, algorithm=algorithm, panel=panel.outputs["panel"],
                               features=built.outputs["features"]), "train")

    judged = promote(config=config, panel=panel.outputs["panel"], features=built.outputs["features"],
                     models=dsl.Collected(trained.outputs["model"]))
    _shape(judged, "promote").set_caching_options(False)  # registry state changes between runs
    kubernetes.use_config_map_as_env(judged, MLFLOW_CONFIGMAP, {
        "MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI",
        # download artifacts through the tracking server, not from presigned S3 URLs (charts/base.py)
        "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD",
    })
    kubernetes.use_secret_as_env(judged, MLFLOW_SECRET, {
        "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
    }, optional=True)
    Outputs = NamedTuple("Outputs", decision=str, report=Dataset)
    return Outputs(decision=judged.outputs["Output"], report=judged.outputs["outputs"])
