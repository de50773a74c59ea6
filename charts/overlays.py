"""The overlays: small patches over the base (kind, production) and an object-store swap (seaweedfs).

Each overlay is a dict file name -> content: a kustomization (dict), patch files (dict or JSON6902
op list) and extra resources (list of objects). `HEADERS` holds the comment put on top of a file.
"""

from __future__ import annotations

import json
from typing import Any

from charts import objects as k
from charts.base import MINIO_API_PORT
from charts.values import (
    NAMESPACE,
    PIPELINE_NAMESPACE,
    MinioValues,
    Resources,
    SeaweedfsValues,
)

KUSTOMIZATION = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
MLFLOW_IN_CLUSTER = f"http://mlflow.{NAMESPACE}.svc.cluster.local:5000"
PIPELINE_CONFIG = "portfolio-mlops-mlflow"  # read by pipelines/training.py (ConfigMap + optional Secret)


def _target(kind: str, name: str) -> dict[str, str]:
    return {"kind": kind, "name": name}


def _storage(size: str) -> list[dict[str, Any]]:
    return [{"op": "replace", "path": "/spec/volumeClaimTemplates/0/spec/resources/requests/storage", "value": size}]


def _node_port(node_port: int) -> list[dict[str, Any]]:
    """Expose a Service's first (only) port on every node, for kind's extraPortMappings."""
    return [{"op": "replace", "path": "/spec/type", "value": "NodePort"},
            {"op": "add", "path": "/spec/ports/0/nodePort", "value": node_port}]


def _workload(kind: str, name: str, resources: Resources, replicas: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"template": {"spec": {"containers": [{"name": name, "resources": resources.manifest()}]}}}
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def kind() -> dict[str, Any]:
    kustomization = {
        **KUSTOMIZATION,
        # The pipelines' namespace too, so this overlay applies before Kubeflow Pipelines is installed
        # (KFP's own manifests create the same namespace; applying both is idempotent).
        "resources": ["../../base", "kubeflow-namespace.yaml"],
        "generatorOptions": {"disableNameSuffixHash": True},
        "secretGenerator": [
            {"name": "postgres-credentials", "namespace": NAMESPACE,
             "literals": ["POSTGRES_USER=mlflow", "POSTGRES_PASSWORD=mlflow-dev-password", "POSTGRES_DB=mlflow"]},
            {"name": "minio-credentials", "namespace": NAMESPACE,
             "literals": ["MINIO_ROOT_USER=minio-dev", "MINIO_ROOT_PASSWORD=minio-dev-password"]},
            # Empty on purpose: the kind MLflow server has no auth and proxies artifacts. With auth,
            # add MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD here.
            {"name": PIPELINE_CONFIG, "namespace": PIPELINE_NAMESPACE},
        ],
        "configMapGenerator": [
            {"name": PIPELINE_CONFIG, "namespace": PIPELINE_NAMESPACE,
             "literals": [f"MLFLOW_TRACKING_URI={MLFLOW_IN_CLUSTER}"]},
        ],
        "patches": [
            {"path": "patches/mlflow-nodeport.yaml", "target": _target("Service", "mlflow")},
            {"path": "patches/serving-nodeport.yaml", "target": _target("Service", "serving")},
            {"path": "patches/postgres-storage.yaml", "target": _target("StatefulSet", "postgres")},
            {"path": "patches/minio-storage.yaml", "target": _target("StatefulSet", "minio")},
        ],
    }
    return {
        "kustomization.yaml": kustomization,
        "kubeflow-namespace.yaml": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PIPELINE_NAMESPACE}},
        "patches/mlflow-nodeport.yaml": _node_port(30500),
        "patches/serving-nodeport.yaml": _node_port(30080),
        "patches/postgres-storage.yaml": _storage("1Gi"),
        "patches/minio-storage.yaml": _storage("2Gi"),
    }


def production() -> dict[str, Any]:
    kustomization = {
        **KUSTOMIZATION,
        "resources": ["../../base"],
        "patches": [
            {"path": "patches/mlflow-resources.yaml"},
            {"path": "patches/serving-resources.yaml"},
            {"path": "patches/postgres-resources.yaml"},
            {"path": "patches/minio-resources.yaml"},
            {"path": "patches/postgres-storage.yaml", "target": _target("StatefulSet", "postgres")},
            {"path": "patches/minio-storage.yaml", "target": _target("StatefulSet", "minio")},
        ],
    }
    return {
        "kustomization.yaml": kustomization,
        # One MLflow replica: its init container migrates the schema, which must not run twice at once.
        "patches/mlflow-resources.yaml": _workload("Deployment", "mlflow", Resources("500m", "1Gi", "2", "4Gi")),
        "patches/serving-resources.yaml": _workload("Deployment", "serving", Resources("500m", "1Gi", "2", "4Gi"), 3),
        "patches/postgres-resources.yaml": _workload("StatefulSet", "postgres", Resources("500m", "1Gi", "2", "4Gi")),
        "patches/minio-resources.yaml": _workload("StatefulSet", "minio", Resources("500m", "1Gi", "2", "4Gi")),
        "patches/postgres-storage.yaml": _storage("50Gi"),
        "patches/minio-storage.yaml": _storage("200Gi"),
    }


def seaweedfs_server(values: SeaweedfsValues | None = None, minio: MinioValues | None = None) -> k.Manifest:
    """SeaweedFS (`weed server -s3`) answering S3 on the MinIO port, with one admin identity built
    at start from the same `minio-credentials` Secret (so MLflow and the bucket Job change nothing)."""
    values, minio = values or SeaweedfsValues(), minio or MinioValues()
    identity = {"identities": [{"name": "admin", "credentials": [{"accessKey": "%s", "secretKey": "%s"}],
                                "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
    script = "\n".join([
        f"printf '{json.dumps(identity, separators=(',', ':'))}' \"$MINIO_ROOT_USER\" \"$MINIO_ROOT_PASSWORD\" > /tmp/s3.json",
        "exec weed server -dir=/data -ip.bind=0.0.0.0 -master.volumeSizeLimitMB=1024 \\",
        f"  -s3 -s3.port={MINIO_API_PORT} -s3.config=/tmp/s3.json",
        ""])
    server = k.container(
        "seaweedfs", values.image, values.uid, values.resources,
        command=["sh", "-c", script],
        ports=[{"name": "api", "containerPort": MINIO_API_PORT}],
        env=k.secret_env(minio.secret, "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
        readinessProbe={"tcpSocket": {"port": "api"}, "initialDelaySeconds": 5, "periodSeconds": 10},
        livenessProbe={"tcpSocket": {"port": "api"}, "initialDelaySeconds": 30, "periodSeconds": 20,
                       "failureThreshold": 6},
        volumeMounts=k.mounts(data="/data", tmp="/tmp"))
    pod = {"securityContext": k.pod_security(values.uid), "automountServiceAccountToken": False,
           "containers": [server], "volumes": k.empty_dirs("tmp")}
    workload = k.stateful_set("seaweedfs", NAMESPACE, "object-store", pod, k.volume_claim("data", values.storage))
    workload["spec"]["serviceName"] = "minio"
    return workload


def seaweedfs() -> dict[str, Any]:
    swap_selector = [{"op": "replace", "path": "/spec/selector", "value": k.selector("seaweedfs")},
                     {"op": "remove", "path": "/spec/ports/1"}]  # the MinIO console has no SeaweedFS twin
    kustomization = {
        **KUSTOMIZATION,
        "resources": ["../kind", "seaweedfs.yaml"],
        "patches": [
            {"path": "patches/delete-minio.yaml"},
            {"path": "patches/minio-service.yaml", "target": _target("Service", "minio")},
            {"path": "patches/minio-network-policy.yaml", "target": _target("NetworkPolicy", "minio-ingress")},
        ],
    }
    return {
        "kustomization.yaml": kustomization,
        "seaweedfs.yaml": [seaweedfs_server()],
        "patches/delete-minio.yaml": {"$patch": "delete", "apiVersion": "apps/v1", "kind": "StatefulSet",
                                      "metadata": {"name": "minio", "namespace": NAMESPACE}},
        "patches/minio-service.yaml": swap_selector,
        "patches/minio-network-policy.yaml": [
            {"op": "replace", "path": "/spec/podSelector", "value": {"matchLabels": k.selector("seaweedfs")}}],
    }


HEADERS = {
    "kind/kustomization.yaml":
        "Local kind cluster. DEVELOPMENT CREDENTIALS ONLY: the generated Secrets hold throwaway values.\n"
        "Images: components/images.py's default registry (localhost/portfolio-mlops) is what\n"
        "scripts/build-images.sh loads into kind, so no `images:` override is needed.\n"
        "Kubeflow Pipelines (standalone) is installed separately by its own script, not vendored here;\n"
        "this overlay only adds the ConfigMap/Secret its pipeline pods read in namespace kubeflow.\n"
        "That Secret is empty on purpose (no auth on this MLflow, artifacts proxied); with auth, add\n"
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to it.",
    "production/kustomization.yaml":
        "Production. No Secrets are rendered: create `postgres-credentials` (POSTGRES_USER,\n"
        "POSTGRES_PASSWORD, POSTGRES_DB) and `minio-credentials` (MINIO_ROOT_USER, MINIO_ROOT_PASSWORD)\n"
        "in namespace portfolio-mlops beforehand (e.g. from a secret manager); values must be URL-safe\n"
        "(they are part of the backend-store URI). Services stay ClusterIP: expose through an Ingress.",
    "seaweedfs/kustomization.yaml":
        "kind, with SeaweedFS instead of MinIO as the S3 store, behind the same Service `minio:9000`\n"
        "and the same `minio-credentials`, so MLflow and the bucket Job are unchanged.",
}

OVERLAYS = {"kind": kind, "production": production, "seaweedfs": seaweedfs}
