"""The names the parts of the platform find each other by, each defined here once.

The run configuration's defaults (config.py), the pipeline and its submission (pipelines/), the
Kubernetes charts (charts/), the image names (components/images.py) and the image build (the
Dockerfile's build args, filled in by scripts/build-images.sh from this module) all read them here, so
renaming one is one edit here (then `portfolio-mlops pipeline compile` and `portfolio-mlops k8s render`:
the compiled IR and the k8s/ tree carry the names, and their drift tests say when they are stale).

Standard library only: every step and the model server import it.
"""

from __future__ import annotations

from portfolio_mlops import __version__
from portfolio_mlops.registry import alias_uri

# --- MLflow -------------------------------------------------------------------------------------------
EXPERIMENT = "sp500-stock-ranking"  # the MLflow experiment (TrackingConfig.experiment) and the KFP experiment
REGISTERED_MODEL = "sp500-stock-ranker"  # TrackingConfig.registered_model
# what serving follows by default: the alias promotion moves (the tag and alias names are registry.py's)
CHAMPION_MODEL_URI = alias_uri(REGISTERED_MODEL)

# --- Kubeflow Pipelines ---------------------------------------------------------------------------------
PIPELINE = "sp500-stock-ranking"  # the pipeline's name in its IR, and the KFP pipeline `pipeline submit` uploads
COMPILED_PIPELINE = "training_pipeline.yaml"  # the compiled IR, committed next to pipelines/training.py
# The ConfigMap (MLFLOW_TRACKING_URI, MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD) and the optional Secret
# (MLflow basic-auth) the promote step reads, in the namespace the pipeline pods run in.
PIPELINE_MLFLOW_CONFIG = "portfolio-mlops-mlflow"

# --- Kubernetes -----------------------------------------------------------------------------------------
NAMESPACE = "portfolio-mlops"  # our workloads (charts/values.py: Values.namespace)
PIPELINE_NAMESPACE = "kubeflow"  # where KFP standalone runs the pipeline pods (Values.pipeline_namespace)
POSTGRES_SECRET = "postgres-credentials"  # keys POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB
MINIO_SECRET = "minio-credentials"  # keys MINIO_ROOT_USER, MINIO_ROOT_PASSWORD
MLFLOW_AUTH_SECRET = "mlflow-auth"  # production: admin-username, admin-password, flask-secret-key

# --- Container images -----------------------------------------------------------------------------------
# <registry>/<IMAGE_PREFIX><target>:<tag>, e.g. localhost/portfolio-mlops/python-train:0.1.0. The names
# contain "python" so that kfp knows a Python interpreter is inside (it warns otherwise).
IMAGE_REGISTRY = "localhost/portfolio-mlops"  # the default; environment variable IMAGE_REGISTRY_ENV overrides
IMAGE_REGISTRY_ENV = "PORTFOLIO_MLOPS_REGISTRY"
IMAGE_TAG = __version__  # the default; environment variable IMAGE_TAG_ENV overrides
IMAGE_TAG_ENV = "PORTFOLIO_MLOPS_IMAGE_TAG"
IMAGE_PREFIX = "python-"
COMPONENT_TARGETS = ("ingest", "features", "train", "promote")  # the Dockerfile's targets, one per step
SERVICE_TARGETS = ("mlflow-server", "serving")


def image_repository(target: str, registry: str = IMAGE_REGISTRY) -> str:
    """`<registry>/python-<target>`: an image's name without its tag."""
    if target not in COMPONENT_TARGETS + SERVICE_TARGETS:
        raise ValueError(f"unknown image target {target!r}; known: {COMPONENT_TARGETS + SERVICE_TARGETS}")
    return f"{registry}/{IMAGE_PREFIX}{target}"


def build_args() -> dict[str, str]:
    """The Dockerfile's build args that carry a name of this module (scripts/build-images.sh passes them)."""
    return {"MODEL_URI": CHAMPION_MODEL_URI, "VERSION": __version__}


if __name__ == "__main__":  # `python -m portfolio_mlops.names`: KEY=value lines, for shell scripts
    for key, value in build_args().items():
        print(f"{key}={value}")
