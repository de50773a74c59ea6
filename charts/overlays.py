"""The overlays: small patches over the base (kind, production) and an object-store swap (seaweedfs).

Each overlay is a function of the chart values returning a dict file name -> content: a
kustomization (dict), patch files (dict or JSON6902 op list) and extra resources (list of
objects). `headers(values)` gives the comment put on top of a file.
"""

from __future__ import annotations

import json
from typing import Any

from portfolio_mlops import names
from portfolio_mlops_kfp.charts import base
from portfolio_mlops_kfp.charts import objects as k
from portfolio_mlops_kfp.charts.objects import cpu_millicores, pod_templates
from portfolio_mlops_kfp.charts.values import ProductionValues, Resources, Values
from portfolio_mlops_kfp.components.images import COMPONENT_TARGETS, SERVICE_TARGETS, image

KUSTOMIZATION = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
# The pipelines' ConfigMap + optional Secret, in Values.pipeline_namespace: the compiled pipeline
# (pipelines/training.py) reads them by this name.
PIPELINE_CONFIG = names.PIPELINE_MLFLOW_CONFIG

# What our kind overlay may request, in millicores, so that everything fits a 2-vCPU runner:
#   2000  the node (GitHub's 2-vCPU runner; kind runs one node)
#  - 950  kind's control plane: kube-apiserver 250, kube-controller-manager 200, kube-scheduler 100,
#         etcd 100, coredns 2 x 100, kindnet 100 (their static manifests' requests)
#  - 674  KFP 2.17.0 env/platform-agnostic (`git show 2.17.0:manifests/kustomize/...`): ml-pipeline
#         250, ml-pipeline-persistenceagent 120, mysql 100, Argo workflow-controller 100 (KFP's
#         patch), seaweedfs 64, ml-pipeline-visualizationserver 30, ml-pipeline-ui 10; cache,
#         metadata, viewer-crd, scheduledworkflow and cache-deployer request none
#  - 250  one pipeline step pod at a time (steps request 100-250m; KFP 2.17's driver pods 100m,
#         which run before their step, not beside it)
#  = 126  for our pods: Postgres, MinIO, MLflow, serving and the bucket Job (init containers count
#         as the scheduler counts them: max(largest init container, sum of the containers))
KIND_NODE_MILLICORES = 2000
KIND_CONTROL_PLANE_MILLICORES = 950
KFP_MILLICORES = 674
PIPELINE_STEP_MILLICORES = 250
KIND_CPU_BUDGET = KIND_NODE_MILLICORES - KIND_CONTROL_PLANE_MILLICORES - KFP_MILLICORES - PIPELINE_STEP_MILLICORES


def pipeline_config_literals(values: Values) -> list[str]:
    """The pipelines' ConfigMap: where MLflow is, and how its clients must download (base.CLIENT_ENV)."""
    return [f"MLFLOW_TRACKING_URI={base.mlflow_tracking_uri(values, qualified=True)}",
            *(f"{key}={value}" for key, value in base.CLIENT_ENV.items())]


def _target(kind: str, name: str) -> dict[str, str]:
    return {"kind": kind, "name": name}


def _storage(size: str) -> list[dict[str, Any]]:
    return [{"op": "replace", "path": "/spec/volumeClaimTemplates/0/spec/resources/requests/storage", "value": size}]


def _node_port(node_port: int) -> list[dict[str, Any]]:
    """Expose a Service's first (only) port on every node, for kind's extraPortMappings."""
    return [{"op": "replace", "path": "/spec/type", "value": "NodePort"},
            {"op": "add", "path": "/spec/ports/0/nodePort", "value": node_port}]


def _admit(port: int, sources: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Append an ingress rule to a NetworkPolicy of the base: `sources` (None: any source) may
    reach `port`."""
    rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port}]}
    if sources is not None:
        rule = {"from": sources, **rule}
    return [{"op": "add", "path": "/spec/ingress/-", "value": rule}]


def _workload(kind: str, name: str, resources: Resources, replicas: int | None = None,
              namespace: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"template": {"spec": {"containers": [{"name": name, "resources": resources.manifest()}]}}}
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _kind_workload_patch(workload: k.Manifest, cpu_request: str,
                         containers: dict[str, dict[str, Any]] | None = None) -> k.Manifest:
    """A strategic-merge patch lowering the CPU request of every container (init ones too) of a
    base workload above `cpu_request`; `containers` adds fields per container name."""
    containers = containers or {}
    pod = workload["spec"]["template"]["spec"]
    spec: dict[str, Any] = {}
    for field in ("initContainers", "containers"):
        patched = []
        for container in pod.get(field) or []:
            body: dict[str, Any] = dict(containers.get(container["name"], {}))
            if cpu_millicores(container["resources"]["requests"]["cpu"]) > cpu_millicores(cpu_request):
                body["resources"] = {"requests": {"cpu": cpu_request}}
            patched.append({"name": container["name"], **body})
        # Every container of the list, in the base's order, even those with nothing to change: a
        # strategic merge puts the patch's entries first, and init containers run in list order
        # (db-upgrade must stay behind wait-for-postgres; the harness caught the swap).
        if any(len(entry) > 1 for entry in patched):
            spec[field] = patched
    meta = workload["metadata"]
    return {"apiVersion": workload["apiVersion"], "kind": workload["kind"],
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": {"template": {"spec": spec}}}


def kind(values: Values) -> dict[str, Any]:
    ns, pipeline_ns, kv = values.namespace, values.pipeline_namespace, values.kind
    workloads = [owner for build in (base.postgres, base.minio, base.create_bucket, base.mlflow, base.serving)
                 for owner, _ in pod_templates(build(values))]
    # The NodePort forms of the MLflow host join --allowed-hosts here, where the NodePort exists.
    extra = {"mlflow": {"mlflow": {"args": base.mlflow_server_args(values, node_port=kv.mlflow_node_port)}}}
    patches = {f"patches/{w['metadata']['name']}-kind.yaml":
               _kind_workload_patch(w, kv.cpu_request, extra.get(w["metadata"]["name"])) for w in workloads}
    requests = {path: patch for path, patch in patches.items() if patch["spec"]["template"]["spec"]}
    kustomization = {
        **KUSTOMIZATION,
        "resources": ["../../base"],
        "generatorOptions": {"disableNameSuffixHash": True},
        "secretGenerator": [
            {"name": values.postgres.secret, "namespace": ns,
             "literals": ["POSTGRES_USER=mlflow", "POSTGRES_PASSWORD=mlflow-dev-password", "POSTGRES_DB=mlflow"]},
            {"name": values.minio.secret, "namespace": ns,
             "literals": ["MINIO_ROOT_USER=minio-dev", "MINIO_ROOT_PASSWORD=minio-dev-password"]},
            # Empty on purpose: the kind MLflow server has no auth and proxies artifacts. With auth,
            # add MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD here.
            {"name": PIPELINE_CONFIG, "namespace": pipeline_ns},
        ],
        "configMapGenerator": [
            {"name": PIPELINE_CONFIG, "namespace": pipeline_ns,
             "literals": pipeline_config_literals(values)},
        ],
        "patches": [
            {"path": "patches/mlflow-nodeport.yaml", "target": _target("Service", "mlflow")},
            {"path": "patches/serving-nodeport.yaml", "target": _target("Service", "serving")},
            # A NodePort admits whatever reaches the node: any source, on the container port.
            {"path": "patches/mlflow-network-policy.yaml", "target": _target("NetworkPolicy", "mlflow-ingress")},
            {"path": "patches/serving-network-policy.yaml", "target": _target("NetworkPolicy", "serving-ingress")},
            {"path": "patches/postgres-storage.yaml", "target": _target("StatefulSet", "postgres")},
            {"path": "patches/minio-storage.yaml", "target": _target("StatefulSet", "minio")},
            *({"path": path} for path in requests),
        ],
    }
    return {
        "kustomization.yaml": kustomization,
        "patches/mlflow-nodeport.yaml": _node_port(kv.mlflow_node_port),
        "patches/serving-nodeport.yaml": _node_port(kv.serving_node_port),
        "patches/mlflow-network-policy.yaml": _admit(values.mlflow.port),
        "patches/serving-network-policy.yaml": _admit(values.serving.port),
        "patches/postgres-storage.yaml": _storage("1Gi"),
        "patches/minio-storage.yaml": _storage("2Gi"),
        **requests,
    }


AUTH_CONFIG_DIR = "/etc/mlflow-auth"


def basic_auth_patch(values: Values) -> k.Manifest:
    """MLflow's basic-auth app on the MLflow Deployment: `--app-name basic-auth`, its users and
    permissions in the same Postgres (tables of their own, alembic table `alembic_version_auth`).

    An init container writes the auth ini into a memory-backed emptyDir at start (the database
    URI holds the Postgres password, so it is never in a ConfigMap). The admin user comes from the
    pre-existing Secret as MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD, which MLflow
    reads in preference to the ini (and which keeps a `%` in the password away from configparser);
    it is created on the first start against an empty user table and ignored afterwards.
    MLFLOW_FLASK_SERVER_SECRET_KEY is the CSRF key the auth app refuses to start without.
    """
    ml, pg, secret = values.mlflow, values.postgres, values.production.auth_secret
    ini = f"{AUTH_CONFIG_DIR}/basic_auth.ini"
    uri = base.backend_store_uri(values, shell=True)  # expanded by sh: never in the container's argv
    lines = ["[mlflow]", "default_permission = READ", f"database_uri = {uri}",
             "authorization_function = mlflow.server.auth:authenticate_request_basic_auth"]
    script = "\n".join([
        "umask 077",  # the file holds the Postgres password: readable by the app user only
        "printf '%s\\n' \\",
        *(f'  "{line}" \\' for line in lines),
        f"  > {ini}",
        f"echo 'wrote {ini}'",
        ""])
    writer = k.container("write-auth-config", ml.image, ml.uid, values.minio.client_resources,
                         command=["sh", "-c", script],
                         env=k.secret_env(pg.secret, "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"),
                         volumeMounts=k.mounts(auth_config=AUTH_CONFIG_DIR))
    server = {"name": "mlflow",
              "args": base.mlflow_server_args(values) + ["--app-name", "basic-auth"],
              "env": k.plain_env(MLFLOW_AUTH_CONFIG_PATH=ini)
              + k.secret_env(secret, renamed={"MLFLOW_AUTH_ADMIN_USERNAME": "admin-username",
                                              "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password",
                                              "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-secret-key"}),
              "volumeMounts": [{"name": "auth-config", "mountPath": AUTH_CONFIG_DIR, "readOnly": True}]}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mlflow", "namespace": values.namespace},
            "spec": {"template": {"spec": {
                "initContainers": [writer], "containers": [server],
                "volumes": [{"name": "auth-config", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]}}}}


def serving_credentials_patch(values: Values) -> k.Manifest:
    """Serving reads the registry as a basic-auth client (here the admin of the Secret; for least
    privilege, create a READ user through MLflow's user API and point these two keys at it)."""
    secret = values.production.auth_secret
    env = k.secret_env(secret, renamed={"MLFLOW_TRACKING_USERNAME": "admin-username",
                                        "MLFLOW_TRACKING_PASSWORD": "admin-password"})
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "serving", "namespace": values.namespace},
            "spec": {"template": {"spec": {"containers": [{"name": "serving", "env": env}]}}}}


def production_images(values: Values) -> list[dict[str, str]]:
    """kustomize `images:` moving every image of ours (components/images.py) to the production
    registry; the pipeline step images are listed too, though only the compiled IR names them."""
    prod = values.production
    return [{"name": image(target).rsplit(":", 1)[0], "newName": names.image_repository(target, prod.registry),
             "newTag": prod.image_tag} for target in SERVICE_TARGETS + COMPONENT_TARGETS]


def production(values: Values) -> dict[str, Any]:
    ns = values.namespace
    ingress = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": values.production.ingress_namespace}}}]
    kustomization = {
        **KUSTOMIZATION,
        "resources": ["../../base"],
        "images": production_images(values),
        "generatorOptions": {"disableNameSuffixHash": True},
        "configMapGenerator": [
            {"name": PIPELINE_CONFIG, "namespace": values.pipeline_namespace,
             "literals": pipeline_config_literals(values)},
        ],
        "patches": [
            {"path": "patches/mlflow-resources.yaml"},
            {"path": "patches/serving-resources.yaml"},
            {"path": "patches/postgres-resources.yaml"},
            {"path": "patches/minio-resources.yaml"},
            {"path": "patches/mlflow-basic-auth.yaml"},
            {"path": "patches/serving-credentials.yaml"},
            {"path": "patches/mlflow-network-policy.yaml", "target": _target("NetworkPolicy", "mlflow-ingress")},
            {"path": "patches/serving-network-policy.yaml", "target": _target("NetworkPolicy", "serving-ingress")},
            {"path": "patches/postgres-storage.yaml", "target": _target("StatefulSet", "postgres")},
            {"path": "patches/minio-storage.yaml", "target": _target("StatefulSet", "minio")},
        ],
    }
    return {
        "kustomization.yaml": kustomization,
        # One MLflow replica: its init container migrates the schema, which must not run twice at once.
        "patches/mlflow-resources.yaml": _workload("Deployment", "mlflow", Resources("500m", "1Gi", "2", "4Gi"), None, ns),
        "patches/serving-resources.yaml": _workload("Deployment", "serving", Resources("500m", "1Gi", "2", "4Gi"), 3, ns),
        "patches/postgres-resources.yaml": _workload("StatefulSet", "postgres", Resources("500m", "1Gi", "2", "4Gi"), None, ns),
        "patches/minio-resources.yaml": _workload("StatefulSet", "minio", Resources("500m", "1Gi", "2", "4Gi"), None, ns),
        "patches/mlflow-basic-auth.yaml": basic_auth_patch(values),
        "patches/serving-credentials.yaml": serving_credentials_patch(values),
        "patches/mlflow-network-policy.yaml": _admit(values.mlflow.port, ingress),
        "patches/serving-network-policy.yaml": _admit(values.serving.port, ingress),
        "patches/postgres-storage.yaml": _storage("50Gi"),
        "patches/minio-storage.yaml": _storage("200Gi"),
    }


def seaweedfs_server(values: Values) -> k.Manifest:
    """SeaweedFS (`weed server -s3`) answering S3 on the MinIO port, with one admin identity built
    at start from the same `minio-credentials` Secret (so MLflow and the bucket Job change nothing)."""
    sw, minio = values.seaweedfs, values.minio
    identity = {"identities": [{"name": "admin", "credentials": [{"accessKey": "%s", "secretKey": "%s"}],
                                "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
    script = "\n".join([
        f"printf '{json.dumps(identity, separators=(',', ':'))}' \"$MINIO_ROOT_USER\" \"$MINIO_ROOT_PASSWORD\" > /tmp/s3.json",
        "exec weed server -dir=/data -ip.bind=0.0.0.0 -master.volumeSizeLimitMB=1024 \\",
        f"  -s3 -s3.port={base.MINIO_API_PORT} -s3.config=/tmp/s3.json",
        ""])
    server = k.container(
        "seaweedfs", sw.image, sw.uid, sw.resources,
        command=["sh", "-c", script],
        ports=[{"name": "api", "containerPort": base.MINIO_API_PORT}],
        env=k.secret_env(minio.secret, "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
        readinessProbe={"tcpSocket": {"port": "api"}, "initialDelaySeconds": 5, "periodSeconds": 10},
        livenessProbe={"tcpSocket": {"port": "api"}, "initialDelaySeconds": 30, "periodSeconds": 20,
                       "failureThreshold": 6},
        volumeMounts=k.mounts(data="/data", tmp="/tmp"))
    pod = {"securityContext": k.pod_security(sw.uid), "automountServiceAccountToken": False,
           "containers": [server], "volumes": k.empty_dirs("tmp")}
    workload = k.stateful_set("seaweedfs", values.namespace, "object-store", pod, k.volume_claim("data", sw.storage))
    workload["spec"]["serviceName"] = "minio"
    return workload


def seaweedfs(values: Values) -> dict[str, Any]:
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
        "seaweedfs.yaml": [seaweedfs_server(values)],
        "patches/delete-minio.yaml": {"$patch": "delete", "apiVersion": "apps/v1", "kind": "StatefulSet",
                                      "metadata": {"name": "minio", "namespace": values.namespace}},
        "patches/minio-service.yaml": swap_selector,
        "patches/minio-network-policy.yaml": [
            {"op": "replace", "path": "/spec/podSelector", "value": {"matchLabels": k.selector("seaweedfs")}}],
    }


def headers(values: Values) -> dict[str, str]:
    """The comment on top of each overlay file that has one (overlay/file -> text), naming what the
    values name."""
    ns, pipeline_ns, prod = values.namespace, values.pipeline_namespace, values.production
    pg_secret, minio_secret, auth_secret = values.postgres.secret, values.minio.secret, prod.auth_secret
    registry_host = prod.registry.split("/", 1)[0]
    placeholder = " (a placeholder)" if prod.registry == ProductionValues().registry else ""
    serving_image = names.image_repository("serving")
    return {
        "kind/kustomization.yaml":
            "Local kind cluster. DEVELOPMENT CREDENTIALS ONLY: the generated Secrets hold throwaway values.\n"
            f"Images: components/images.py's default registry ({names.IMAGE_REGISTRY}) is what\n"
            "scripts/build-images.sh loads into kind, so no `images:` override is needed.\n"
            "Kubeflow Pipelines (standalone) is installed separately by its own script, not vendored here;\n"
            f"this overlay only adds the ConfigMap/Secret its pipeline pods read in namespace {pipeline_ns}.\n"
            f"Namespace {pipeline_ns} is NOT part of this overlay (so `kubectl delete -k` never deletes KFP's\n"
            f"namespace): applying by hand, run `kubectl create namespace {pipeline_ns}` first\n"
            "(scripts/kind.sh up does it for you).\n"
            "That Secret is empty on purpose (no auth on this MLflow, artifacts proxied); with auth, add\n"
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to it.\n"
            "NetworkPolicies: ingress is denied by default; MLflow and serving admit any source on their\n"
            "port (the NodePorts). kindnet enforces NetworkPolicy since kind v0.24.\n"
            "CPU requests are lowered to fit a 2-vCPU runner next to kind and KFP (charts/overlays.py).",
        "production/kustomization.yaml":
            f"Production. No Secrets are rendered: create in namespace {ns} beforehand (e.g. from a\n"
            f"secret manager) `{pg_secret}` (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB),\n"
            f"`{minio_secret}` (MINIO_ROOT_USER, MINIO_ROOT_PASSWORD) and `{auth_secret}` (admin-username,\n"
            "admin-password of at least 12 characters - MLflow refuses to start otherwise -, flask-secret-key:\n"
            "MLflow basic-auth is ON; /health stays open for the probes); Postgres values must be URL-safe\n"
            "and free of `%` (they are part of the backend-store and auth database URIs). In namespace\n"
            f"{pipeline_ns}, create Secret `{PIPELINE_CONFIG}` (MLFLOW_TRACKING_USERNAME,\n"
            "MLFLOW_TRACKING_PASSWORD: an MLflow user that may write) for the pipeline pods; the\n"
            "ConfigMap next to it (MLFLOW_TRACKING_URI) is rendered here.\n"
            f"Images: `images:` below moves ours to {registry_host}{placeholder}: set\n"
            "ProductionValues.registry in charts/values.py and run `portfolio-mlops k8s render`, or here run\n"
            f"`kustomize edit set image {serving_image}=<registry>/{names.IMAGE_PREFIX}serving:<tag>`\n"
            f"(same for {names.IMAGE_PREFIX}mlflow-server and the step images). Services stay ClusterIP: expose through\n"
            f"an Ingress; its controller's namespace ({prod.ingress_namespace}) is the only outside source the\n"
            "NetworkPolicies admit to MLflow and serving. Add the Ingress host to\n"
            "MlflowValues.extra_allowed_hosts (MLflow answers 403 to any Host it does not list).",
        "seaweedfs/kustomization.yaml":
            "kind, with SeaweedFS instead of MinIO as the S3 store, behind the same Service `minio:9000`\n"
            f"and the same `{minio_secret}`, so MLflow and the bucket Job are unchanged.",
    }


OVERLAYS = {"kind": kind, "production": production, "seaweedfs": seaweedfs}
