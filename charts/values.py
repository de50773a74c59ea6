"""The typed values of the charts: everything an environment may change, with the base defaults.

Names other parts of the platform also use (namespaces, Secrets, the bucket, the model) default to
portfolio_mlops/names.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from portfolio_mlops import names
from portfolio_mlops_kfp.components.images import image, tag

BUCKET = "mlflow"  # MLflow's artifact bucket in the object store


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
    # Docker Hub's multi-platform index digest of the tag, as pinned identically by several
    # independent public repositories (code search, Nov 2026); no registry is reachable from
    # the machine that wrote this, so re-check with `docker buildx imagetools inspect` on a bump.
    image: str = "postgres:18.1-bookworm@sha256:cc9f4143a8d2fa8cf3749d0cb4d26ecf2d53a77a2ac807e9ebd67ae22426221a"
    uid: int = 999  # the image's `postgres` user
    storage: str = "10Gi"
    secret: str = names.POSTGRES_SECRET  # keys POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB
    resources: Resources = Resources("100m", "256Mi", "1", "1Gi")


@dataclass(frozen=True)
class MinioValues:
    # The last official MinIO image: the community edition has been source-only since 2025-10-15.
    # Both digests: quay.io's multi-platform index digests of the tags, as pinned identically by
    # several independent public repositories (code search, Nov 2026); no registry reachable here.
    image: str = ("quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
                  "@sha256:14cea493d9a34af32f524e538b8346cf79f3321eff8e708c1e2960462bd8936e")
    client_image: str = ("quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z"
                         "@sha256:a7fe349ef4bd8521fb8497f55c6042871b2ae640607cf99d9bede5e9bdf11727")
    uid: int = 1000
    storage: str = "20Gi"
    secret: str = names.MINIO_SECRET  # keys MINIO_ROOT_USER, MINIO_ROOT_PASSWORD
    resources: Resources = Resources("100m", "256Mi", "1", "1Gi")
    client_resources: Resources = Resources("10m", "32Mi", "200m", "128Mi")


@dataclass(frozen=True)
class SeaweedfsValues:
    # Docker Hub digest of the tag, as pinned identically by several independent public
    # repositories (code search, Nov 2026); no registry reachable here.
    image: str = "chrislusf/seaweedfs:3.97@sha256:bb05d66d2963b1cc48073190781c3dd29e2c4c88a2ae2986bf58e38c86d89c6e"
    uid: int = 1000
    storage: str = "1Gi"
    # Only the seaweedfs overlay (kind with SeaweedFS) runs it: kind's CPU request (KindValues).
    resources: Resources = Resources("25m", "256Mi", "1", "1Gi")


@dataclass(frozen=True)
class MlflowValues:
    image: str = field(default_factory=lambda: image("mlflow-server"))
    uid: int = 1001  # the Dockerfile's `app` user
    replicas: int = 1
    port: int = 5000
    # Host headers MLflow must accept besides the in-cluster Service names and port-forward forms,
    # which base.mlflow_allowed_hosts (charts/base.py) derives (e.g. an Ingress host, with its port if not 80).
    extra_allowed_hosts: tuple[str, ...] = ()
    resources: Resources = Resources("100m", "512Mi", "1", "2Gi")


@dataclass(frozen=True)
class ServingValues:
    image: str = field(default_factory=lambda: image("serving"))
    uid: int = 1001
    replicas: int = 1
    port: int = 8080
    model_uri: str = names.CHAMPION_MODEL_URI
    poll_seconds: int = 10  # how soon a moved alias is served (portfolio_mlops.serving)
    resources: Resources = Resources("100m", "512Mi", "1", "2Gi")


@dataclass(frozen=True)
class KindValues:
    """The local kind cluster: fixed NodePorts (k8s/kind/cluster.yaml maps them to 127.0.0.1) and
    requests small enough to share a 2-vCPU runner with kind's control plane and KFP (see
    overlays.KIND_CPU_BUDGET in charts/overlays.py for the arithmetic)."""

    mlflow_node_port: int = 30500
    serving_node_port: int = 30080
    # CPU request of every container of ours whose base request is higher (limits stay: a pod may
    # still burst to its limit when the node has idle CPU).
    cpu_request: str = "25m"


@dataclass(frozen=True)
class ProductionValues:
    # A placeholder (example.com is reserved): set your registry here and re-render, or run
    # `kustomize edit set image <name>=<your-registry>/<name>:<tag>` in k8s/overlays/production.
    registry: str = "registry.example.com/portfolio-mlops"
    image_tag: str = field(default_factory=tag)
    # Namespace of the Ingress controller allowed to reach MLflow and serving (selected by its
    # `kubernetes.io/metadata.name` label, which Kubernetes sets on every namespace).
    ingress_namespace: str = "ingress-nginx"
    # Pre-existing Secret (namespace portfolio-mlops) of MLflow basic-auth: keys admin-username,
    # admin-password, flask-secret-key (the CSRF key MLflow's auth app requires).
    auth_secret: str = names.MLFLOW_AUTH_SECRET


@dataclass(frozen=True)
class Values:
    namespace: str = names.NAMESPACE
    # where KFP standalone runs the pipeline pods: the pipelines' ConfigMap/Secret go there, and the
    # NetworkPolicies admit its step pods
    pipeline_namespace: str = names.PIPELINE_NAMESPACE
    postgres: PostgresValues = field(default_factory=PostgresValues)
    minio: MinioValues = field(default_factory=MinioValues)
    seaweedfs: SeaweedfsValues = field(default_factory=SeaweedfsValues)
    mlflow: MlflowValues = field(default_factory=MlflowValues)
    serving: ServingValues = field(default_factory=ServingValues)
    kind: KindValues = field(default_factory=KindValues)
    production: ProductionValues = field(default_factory=ProductionValues)
