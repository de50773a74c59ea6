"""The checkov checks our rendered overlays may fail, each with the reason, in ONE place.

tests/test_k8s_policy.py runs checkov (offline) on every overlay: a failure not listed here, or
listed for other workloads, fails the test; so does an entry no overlay needs any more. The same
list holds for kind, seaweedfs and production (kind only differs in what it exposes and requests).
"""

from __future__ import annotations

from dataclasses import dataclass

OURS = frozenset({"mlflow", "serving"})  # workloads running our images (components/images.py)
EVERY_WORKLOAD = frozenset({"postgres", "minio", "seaweedfs", "create-bucket", "mlflow", "serving"})


@dataclass(frozen=True)
class PolicyException:
    why: str
    workloads: frozenset[str]  # metadata.name of the workloads allowed to fail it


CHECKOV_EXCEPTIONS: dict[str, PolicyException] = {
    "CKV_K8S_15": PolicyException(
        "imagePullPolicy Always: kind runs our images loaded into the node by `kind load` from a "
        "registry that does not exist (localhost/portfolio-mlops), so Always would fail every pull. "
        "Upstream images pass: they are pinned by digest (Always buys nothing there either).",
        OURS),
    "CKV_K8S_43": PolicyException(
        "image by digest: every upstream image is (charts/values.py; checks.check_images enforces "
        "it). Our images' digests exist only after a push to the production registry: pin them then "
        "with `kustomize edit set image <name>=<registry>/<name>@sha256:...`.",
        OURS),
    "CKV_K8S_35": PolicyException(
        "secrets as files: the upstream images read their credentials from env (postgres "
        "POSTGRES_PASSWORD, MinIO/SeaweedFS/mc MINIO_ROOT_*), MLflow's --backend-store-uri is "
        "built by the kubelet's $(VAR) expansion, which only env feeds, and MLflow clients read "
        "MLFLOW_TRACKING_PASSWORD from env. The Secrets are never in the manifests.",
        EVERY_WORKLOAD),
    "CKV_K8S_40": PolicyException(
        "UID >= 10000: each container runs as its image's own non-root user (postgres 999, MinIO/"
        "SeaweedFS/mc 1000, our `app` 1001), which owns the files the image ships; root is refused "
        "(runAsNonRoot), all capabilities dropped, no privilege escalation, read-only root "
        "filesystem. Remapping the UID would mean rebuilding the upstream images.",
        EVERY_WORKLOAD),
}
