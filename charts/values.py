"""The typed values of the charts: everything an environment may change, with the base defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.images import image

NAMESPACE = "portfolio-mlops"
PIPELINE_NAMESPACE = "kubeflow"  # where KFP standalone runs the pipeline pods
BUCKET = "mlflow"


@dataclass(frozen=True)
class Resources:
    """Container requests and limits (CPU in Kubernetes units, memory with Mi/Gi suffix)."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str

    def manifest(self) -> dict:
        return {"requests": {"cpu": self.cpu_request, "memory": self.memory_request},
                "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit}}


@dataclass(frozen=True)
class PostgresValues:
    image: str = "postgres:18.1-bookworm"
    uid: int = 999  # the image's `postgres` user
    storage: str = "10Gi"
    secret: str = "postgres-credentials"  # keys POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB
    resources: Resources = Resources("100m", "256Mi", "1", "1Gi")


@dataclass(frozen=True)
class MinioValues:
    # The last official MinIO image: the community edition has been source-only since 2025-10-15.
    image: str = "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
    client_image: str = "quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z"
    uid: int = 1000
    storage: str = "20Gi"
    secret: str = "minio-credentials"  # keys MINIO_ROOT_USER, MINIO_ROOT_PASSWORD
    resources: Resources = Resources("100m", "256Mi", "1", "1Gi")
    client_resources: Resources = Resources("10m", "32Mi", "200m", "128Mi")


@dataclass(frozen=True)
class SeaweedfsValues:
    image: str = "chrislusf/seaweedfs:3.97"
    uid: int = 1000
    storage: str = "1Gi"
    resources: Resources = Resources("100m", "256Mi", "1", "1Gi")


@dataclass(frozen=True)
class MlflowValues:
    image: str = field(default_factory=lambda: image("mlflow-server"))
    uid: int = 1001  # the Dockerfile's `app` user
    replicas: int = 1
    port: int = 5000
    # MLflow >= 3.5 answers 403 "Invalid Host header" to any Host not listed here.
    allowed_hosts: tuple[str, ...] = (
        "mlflow", f"mlflow.{NAMESPACE}", f"mlflow.{NAMESPACE}.svc", f"mlflow.{NAMESPACE}.svc.cluster.local",
        "localhost", "localhost:5000", "127.0.0.1:5000", "localhost:30500", "127.0.0.1:30500")
    resources: Resources = Resources("100m", "512Mi", "1", "2Gi")


@dataclass(frozen=True)
class ServingValues:
    image: str = field(default_factory=lambda: image("serving"))
    uid: int = 1001
    replicas: int = 1
    port: int = 8080
    model_uri: str = "models:/sp500-stock-ranker@champion"
    resources: Resources = Resources("100m", "512Mi", "1", "2Gi")


@dataclass(frozen=True)
class Values:
    namespace: str = NAMESPACE
    postgres: PostgresValues = field(default_factory=PostgresValues)
    minio: MinioValues = field(default_factory=MinioValues)
    mlflow: MlflowValues = field(default_factory=MlflowValues)
    serving: ServingValues = field(default_factory=ServingValues)
