"""The base: namespace, PostgreSQL, MinIO + bucket Job, MLflow, serving, NetworkPolicies.

Each function returns the objects of one file of `k8s/base`. Credentials are never here: the
Secrets `postgres-credentials` and `minio-credentials` come from the overlay (generated for kind,
pre-existing in production).
"""

from __future__ import annotations

from portfolio_mlops_kfp.charts import objects as k
from portfolio_mlops_kfp.charts.values import BUCKET, Values

POSTGRES_PORT = 5432
MINIO_API_PORT = 9000
MINIO_CONSOLE_PORT = 9001


def wait_loop(what: str, check: str) -> str:
    """A shell loop retrying `check` with exponential backoff (1 s doubling, capped at 30 s)."""
    return "\n".join([
        "delay=1",
        f"until {check}; do",
        f'  echo "waiting for {what} (next try in ${{delay}}s)"',
        '  sleep "$delay"',
        '  if [ "$delay" -lt 30 ]; then delay=$((delay * 2)); fi',
        "done",
        f"echo '{what} is up'",
    ])


def backend_store_uri(values: Values, shell: bool = False) -> str:
    """The Postgres URI built from the credentials' env (URL-safe values): by Kubernetes' $(VAR)
    expansion in command/args, or, with `shell`, by sh's ${VAR} inside a script."""
    variable = "${%s}" if shell else "$(%s)"
    user, password, db = (variable % name for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"))
    return f"postgresql+psycopg2://{user}:{password}@postgres:{POSTGRES_PORT}/{db}"


def mlflow_service_hosts(values: Values) -> list[str]:
    """Every DNS name a pod resolves to the `mlflow` Service: short (same namespace), namespaced,
    `.svc` and fully qualified."""
    short = "mlflow"
    return [short, f"{short}.{values.namespace}", f"{short}.{values.namespace}.svc",
            f"{short}.{values.namespace}.svc.cluster.local"]


# MLflow 3.17 with proxied S3 artifacts advertises multipart downloads (/server-info), and clients
# then fetch artifacts from PRESIGNED S3 URLs on the server's own endpoint (http://minio:9000): a
# name that does not resolve outside the cluster (port-forward) and a Service our NetworkPolicies
# close to serving. Every client we configure downloads through the tracking server instead.
# (Found by the kind-less harness, tests/integration/test_cluster_harness.py.)
CLIENT_ENV = {"MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false"}


def mlflow_tracking_uri(values: Values, qualified: bool = False) -> str:
    """The MLFLOW_TRACKING_URI of a client: the short name inside the namespace (serving), the
    fully qualified name from other namespaces (the KFP pipeline pods)."""
    hosts = mlflow_service_hosts(values)
    return f"http://{hosts[-1] if qualified else hosts[0]}:{values.mlflow.port}"


def mlflow_allowed_hosts(values: Values, node_port: int | None = None) -> list[str]:
    """The `--allowed-hosts` of the MLflow server: MLflow >= 3.5 answers 403 "Invalid Host
    header" to any other Host, and compares `host:port` EXACTLY (only entries with `*` are
    fnmatch patterns), so each entry carries the port the client dials: every Service name on
    the Service port, port-forward (`kubectl port-forward svc/mlflow <port>`) on loopback, and,
    when given, the NodePort on loopback (kind maps it to 127.0.0.1)."""
    port = values.mlflow.port
    hosts = [f"{host}:{port}" for host in mlflow_service_hosts(values)]
    hosts += [f"localhost:{port}", f"127.0.0.1:{port}"]
    if node_port is not None:
        hosts += [f"localhost:{node_port}", f"127.0.0.1:{node_port}"]
    return hosts + list(values.mlflow.extra_allowed_hosts)


def mlflow_server_args(values: Values, node_port: int | None = None) -> list[str]:
    """The MLflow server container's args (the image's entrypoint is `mlflow server`)."""
    ml = values.mlflow
    return ["--backend-store-uri", backend_store_uri(values),
            # Proxied artifacts: clients need only MLFLOW_TRACKING_URI, no S3 credentials.
            "--serve-artifacts", "--artifacts-destination", f"s3://{BUCKET}/artifacts",
            "--host", "0.0.0.0", "--port", str(ml.port), "--workers", "1",
            "--allowed-hosts", ",".join(mlflow_allowed_hosts(values, node_port))]


def namespace(values: Values) -> list[k.Manifest]:
    return [{"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": values.namespace, "labels": {"app.kubernetes.io/part-of": k.PART_OF}}}]


def postgres(values: Values) -> list[k.Manifest]:
    pg = values.postgres
    ready = ["sh", "-c", 'pg_isready -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -q']
    server = k.container(
        "postgres", pg.image, pg.uid, pg.resources,
        ports=[{"name": "postgres", "containerPort": POSTGRES_PORT}],
        # PostgreSQL 18 keeps its data in a versioned folder under the mount (no lost+found clash).
        env=k.secret_env(pg.secret, "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
        + k.plain_env(PGDATA="/var/lib/postgresql/18/docker"),
        readinessProbe=k.exec_probe(ready, initial_delay=5, period=5),
        livenessProbe=k.exec_probe(ready, initial_delay=30, period=15, failures=6),
        volumeMounts=k.mounts(data="/var/lib/postgresql", run="/var/run/postgresql", tmp="/tmp"))
    pod = {"securityContext": k.pod_security(pg.uid), "automountServiceAccountToken": False,
           "containers": [server], "volumes": k.empty_dirs("run", "tmp")}
    return [k.service("postgres", values.namespace, "database", {"postgres": POSTGRES_PORT}),
            k.stateful_set("postgres", values.namespace, "database", pod, k.volume_claim("data", pg.storage))]


def minio(values: Values) -> list[k.Manifest]:
    mo = values.minio
    server = k.container(
        "minio", mo.image, mo.uid, mo.resources,
        args=["server", "/data", "--address", f":{MINIO_API_PORT}", "--console-address", f":{MINIO_CONSOLE_PORT}"],
        ports=[{"name": "api", "containerPort": MINIO_API_PORT}, {"name": "console", "containerPort": MINIO_CONSOLE_PORT}],
        env=k.secret_env(mo.secret, "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
        readinessProbe=k.http_probe("/minio/health/ready", "api", initial_delay=5),
        livenessProbe=k.http_probe("/minio/health/live", "api", initial_delay=15, period=15, failures=6),
        volumeMounts=k.mounts(data="/data", tmp="/tmp"))
    pod = {"securityContext": k.pod_security(mo.uid), "automountServiceAccountToken": False,
           "containers": [server], "volumes": k.empty_dirs("tmp")}
    return [k.service("minio", values.namespace, "object-store", {"api": MINIO_API_PORT, "console": MINIO_CONSOLE_PORT}),
            k.stateful_set("minio", values.namespace, "object-store", pod, k.volume_claim("data", mo.storage))]


def create_bucket(values: Values) -> list[k.Manifest]:
    """The Job that creates the artifact bucket; safe to re-run (`mc mb --ignore-existing`)."""
    mo = values.minio
    mc = "mc --config-dir /tmp/mc"
    alias = f'{mc} alias set store http://minio:{MINIO_API_PORT} "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null'
    script = f"{wait_loop('the object store', alias)}\n{mc} mb --ignore-existing store/{BUCKET}\n"
    job = k.container("create-bucket", mo.client_image, mo.uid, mo.client_resources,
                      command=["sh", "-c", script],
                      env=k.secret_env(mo.secret, "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
                      volumeMounts=k.mounts(tmp="/tmp"))
    pod = {"securityContext": k.pod_security(mo.uid), "automountServiceAccountToken": False,
           "restartPolicy": "OnFailure", "containers": [job], "volumes": k.empty_dirs("tmp")}
    return [{"apiVersion": "batch/v1", "kind": "Job",
             "metadata": k.metadata("create-bucket", values.namespace, "object-store"),
             "spec": {"backoffLimit": 6,
                      "template": {"metadata": {"labels": k.labels("create-bucket", "object-store")}, "spec": pod}}}]


def mlflow(values: Values) -> list[k.Manifest]:
    ml, pg = values.mlflow, values.postgres
    credentials = k.secret_env(pg.secret, "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
    wait = k.container(
        "wait-for-postgres", pg.image, pg.uid, values.minio.client_resources,
        command=["sh", "-c", wait_loop("postgres", f'pg_isready -h postgres -p {POSTGRES_PORT} -U "$POSTGRES_USER" '
                                                   '-d "$POSTGRES_DB" -q') + "\n"],
        env=credentials, volumeMounts=k.mounts(tmp="/tmp"))
    # Idempotent: creates the tables on an empty database, else migrates to this MLflow's schema.
    upgrade = k.container("db-upgrade", ml.image, ml.uid, ml.resources,
                          command=["mlflow", "db", "upgrade", backend_store_uri(values)],
                          env=credentials, volumeMounts=k.mounts(home="/home/app", tmp="/tmp"))
    server = k.container(
        "mlflow", ml.image, ml.uid, ml.resources,
        args=mlflow_server_args(values),
        ports=[{"name": "http", "containerPort": ml.port}],
        env=credentials
        + k.plain_env(MLFLOW_S3_ENDPOINT_URL=f"http://minio:{MINIO_API_PORT}", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        + k.secret_env(values.minio.secret, renamed={"AWS_ACCESS_KEY_ID": "MINIO_ROOT_USER",
                                                     "AWS_SECRET_ACCESS_KEY": "MINIO_ROOT_PASSWORD"}),
        readinessProbe=k.http_probe("/health", "http", initial_delay=10),
        livenessProbe=k.http_probe("/health", "http", initial_delay=30, period=20, failures=6),
        volumeMounts=k.mounts(home="/home/app", tmp="/tmp"))
    pod = {"securityContext": k.pod_security(ml.uid), "automountServiceAccountToken": False,
           "initContainers": [wait, upgrade], "containers": [server], "volumes": k.empty_dirs("home", "tmp")}
    return [k.service("mlflow", values.namespace, "tracking", {"http": ml.port}),
            k.deployment("mlflow", values.namespace, "tracking", ml.replicas, pod)]


def serving(values: Values) -> list[k.Manifest]:
    sv = values.serving
    server = k.container(
        "serving", sv.image, sv.uid, sv.resources,
        ports=[{"name": "http", "containerPort": sv.port}],
        env=k.plain_env(MLFLOW_TRACKING_URI=mlflow_tracking_uri(values), MODEL_URI=sv.model_uri,
                        PORT=str(sv.port), POLL_SECONDS=str(sv.poll_seconds), **CLIENT_ENV),
        # HTTP is up within seconds and the model loads in the background: /health says the process
        # lives, /ping that a version is loaded (503 until the registry has a champion, for as long as
        # that takes - not a reason to restart).
        readinessProbe=k.http_probe("/ping", "http", initial_delay=5, period=5),
        livenessProbe=k.http_probe("/health", "http", initial_delay=15, period=10, failures=6),
        volumeMounts=k.mounts(home="/home/app", tmp="/tmp"))
    pod = {"securityContext": k.pod_security(sv.uid), "automountServiceAccountToken": False,
           "containers": [server], "volumes": k.empty_dirs("home", "tmp")}
    return [k.service("serving", values.namespace, "serving", {"http": sv.port}),
            k.deployment("serving", values.namespace, "serving", sv.replicas, pod)]


def pipeline_pods(values: Values) -> k.Manifest:
    """KFP's pipeline step pods (both selectors in one peer: pods with that label IN that namespace)."""
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": values.pipeline_namespace}},
            "podSelector": {"matchLabels": {"pipelines.kubeflow.org/v2_component": "true"}}}


def network_policy(values: Values, name: str, port: int | None, sources: list[k.Manifest] | None) -> k.Manifest:
    """An ingress policy for the pods of app `name`: `sources` may reach `port` (TCP); with
    `sources=None` it admits nothing yet (an overlay appends the rule that exposes the app)."""
    rules = [] if sources is None else [{"from": sources, "ports": [{"protocol": "TCP", "port": port}]}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": k.metadata(f"{name}-ingress", values.namespace, "network-policy"),
            "spec": {"podSelector": {"matchLabels": k.selector(name)}, "policyTypes": ["Ingress"],
                     "ingress": rules}}


def network_policies(values: Values) -> list[k.Manifest]:
    """Ingress is denied to every pod of the namespace, then allowed per app from its clients only:
    Postgres from MLflow; the object store from MLflow, the bucket Job and KFP's pipeline pods;
    MLflow from serving and the pipeline pods. Who reaches MLflow and serving from outside (kind's
    NodePorts, production's Ingress controller) is the overlays' rule. (Traffic from the node
    itself, e.g. the kubelet's probes, is always allowed by NetworkPolicy semantics.)"""
    def from_app(name: str) -> k.Manifest:
        return {"podSelector": {"matchLabels": k.selector(name)}}

    deny_all = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": k.metadata("default-deny-ingress", values.namespace, "network-policy"),
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    return [deny_all,
            network_policy(values, "postgres", POSTGRES_PORT, [from_app("mlflow")]),
            network_policy(values, "minio", MINIO_API_PORT,
                           [from_app("mlflow"), from_app("create-bucket"), pipeline_pods(values)]),
            network_policy(values, "mlflow", values.mlflow.port, [from_app("serving"), pipeline_pods(values)]),
            network_policy(values, "serving", values.serving.port, None)]


FILES = {"namespace.yaml": namespace, "postgres.yaml": postgres, "minio.yaml": minio,
         "create-bucket.yaml": create_bucket, "mlflow.yaml": mlflow, "serving.yaml": serving,
         "network-policies.yaml": network_policies}
