"""Kind-less e2e: the in-cluster flow of k8s/overlays/kind, with our pods' exact specs under Docker.

No Kubernetes API server can run here; kube_harness.py plays the kubelet for every container built
from one of our images (see its docstring for exactly what it applies and what it does not stand in
for). The containers that are not ours (postgres, minio, mc, the wait-for-postgres init container)
cannot be pulled: the local stack's Debian PostgreSQL and SeaweedFS play their roles on the Services'
ports (5432, 9000) with the rendered Secrets' credentials, the bucket made with boto3.

The flow, in the order the cluster would go through it:
1. the mlflow pod, created while PostgreSQL is still starting (as `kubectl apply -k` creates everything
   at once): its wait-for-postgres init container (not ours: played by waiting for the stand-in's
   port) must hold db-upgrade back, so db-upgrade completes without a restart; then the server until
   its readiness probe passes;
2. the serving pod, started BEFORE any @champion exists: it must stay alive and not ready;
3. the pipeline steps in their images as the compiled IR (pipelines/training_pipeline.yaml) launches
   them, through kfp.local.DockerRunner with what the cluster gives a step pod: the env of the IR's
   kubernetes platform config (configMapAsEnv/secretAsEnv) resolved against the rendered kind overlay
   in namespace kubeflow, the Service names resolving to loopback as cluster DNS would from that
   namespace, the image's user. DockerRunner's arguments apply to every task, so every step gets the
   promote step's ConfigMap env; per-step resource limits are not applied (they are per task in the IR).
   The promotion policy is made PERMISSIVE through the pipeline's `config_yaml` parameter (any IC
   t-stat, any excess return, margin 0), so that the embedded sample data crowns a champion: this test
   is about the plumbing, not about whether the model deserves it;
4. serving becomes ready on its own (no restart) and answers /invocations with the next portfolio for raw
   OHLCV rows (held weights sum to 1, X-Model-Version names the champion); /version names it too.

This flow catches a Host check that refuses in-cluster clients (issue 9, defect 1): promote reaches
MLflow as mlflow.portfolio-mlops.svc.cluster.local:5000 and serving as mlflow:5000.
"""

from __future__ import annotations

import io
import json
import math
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from portfolio_mlops.data.layouts import read_embedded
from portfolio_mlops.features import LONGEST_LOOKBACK_DAYS
from portfolio_mlops.portfolio_model import input_example

from kube_harness import (KFP_NAMESPACE, REPO, HarnessError, Pod, Standins, busy_ports, container_env, wait_for_port,
                          container_port, docker_spec, engine_problem, expand, format_table, image_config,
                          kfp_executor_images, kfp_step_env, load_ir, local_image, pods_summary, render, service_hosts)

pytestmark = [pytest.mark.integration, pytest.mark.images]

PROBLEM = engine_problem()
if PROBLEM:
    pytestmark.append(pytest.mark.skip(reason=PROBLEM))

IR_PATH = REPO / "pipelines" / "training_pipeline.yaml"
ALGORITHMS = ["ridge", "lasso"]  # the two fastest; enough to exercise ParallelFor and Collected
# Permissive on purpose (see the module docstring): every gate passes, any candidate beats "no champion".
POSTGRES_LATE_SECONDS = 5  # PostgreSQL answers this long after the mlflow pod is created
PERMISSIVE_POLICY = yaml.safe_dump({"promotion": {"min_ic_tstat": -1.0e9, "min_excess_vs_equal_weight": -1.0e9,
                                                  "margin": 0.0}})


class _Tee(io.TextIOBase):
    """Shows the steps' output live (pytest -s) and keeps it for the failure message."""

    def __init__(self, stream):
        self.stream, self.kept = stream, io.StringIO()

    def write(self, text):
        self.kept.write(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


def _http(url: str, body: bytes | None = None, timeout: float = 30) -> tuple[int, str, dict[str, str]]:
    """(status, body text, headers with lower-case names); status 0 when nothing answered."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read().decode(), {k.lower(): v for k, v in answer.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), {k.lower(): v for k, v in exc.headers.items()}
    except OSError as exc:
        return 0, f"{type(exc).__name__}: {exc}", {}


def _lines_with(text: str, *needles: str, limit: int = 12) -> str:
    found = [line for line in text.splitlines() if any(n in line for n in needles)]
    return "\n".join(found[-limit:]) or "(no such lines)"


# --- the kubelet rules the harness applies, pinned on their own ------------------------------------

def test_dollar_references_expand_as_the_kubelet_expands_them():
    env = {"USER": "mlflow", "EMPTY": ""}.get
    assert expand("postgresql://$(USER)@postgres/$(EMPTY)db", env) == "postgresql://mlflow@postgres/db"
    assert expand("$(MISSING) stays", env) == "$(MISSING) stays"
    assert expand("$$(USER) is escaped, $$ is one", env) == "$(USER) is escaped, $ is one"
    assert expand("$USER and $(unclosed", env) == "$USER and $(unclosed"
    assert expand("trailing $", env) == "trailing $"


def test_the_mlflow_container_runs_with_the_manifests_restrictions_and_service_names(tmp_path):
    manifests = render("kind")
    workload = manifests.workload("Deployment", "mlflow")
    container = next(c for c in workload.pod_spec["containers"] if c["name"] == "mlflow")
    spec = docker_spec(manifests, workload, container, "mlflow-test", "mlflow-test-mlflow", tmp_path)
    options = " ".join(spec.options)
    sc = container["securityContext"]
    assert f"--user {sc['runAsUser']}:{sc['runAsGroup']}" in options
    assert ("--read-only" in spec.options) == bool(sc.get("readOnlyRootFilesystem"))
    assert "--cap-drop ALL" in options and "--security-opt no-new-privileges" in options
    for mount in container["volumeMounts"]:  # each emptyDir: one folder per pod volume, bind-mounted
        assert f"target={mount['mountPath']}" in options, mount
    assert "--add-host mlflow:127.0.0.1" in options
    assert "--add-host postgres.portfolio-mlops.svc.cluster.local:127.0.0.1" in options
    assert "--entrypoint" not in spec.options  # args only: the image's ENTRYPOINT (mlflow server) stays
    assert "$(" not in " ".join(spec.argv)  # $(POSTGRES_*) expanded from the rendered Secret
    assert spec.env["MLFLOW_SERVICE_HOST"] == "127.0.0.1"  # Service links, as the kubelet injects them


def test_a_step_pod_in_kubeflow_resolves_only_the_names_cluster_dns_would_give_it():
    manifests = render("kind")
    names = service_hosts(manifests, KFP_NAMESPACE)
    assert "mlflow.portfolio-mlops.svc.cluster.local" in names and "mlflow.portfolio-mlops" in names
    assert "mlflow" not in names  # a short name resolves only inside its own namespace


# --- the flow -----------------------------------------------------------------------------------

def test_the_kind_overlay_runs_end_to_end_mlflow_then_pipeline_then_serving(postgres_bin_dir, tmp_path_factory,
                                                                             monkeypatch):
    import docker as docker_py  # noqa: F401  (kfp.local.DockerRunner needs it; fail early and clearly)
    import kfp.local
    from kfp import components

    from portfolio_mlops_kfp.pipelines.local import local_session

    manifests = render("kind")
    mlflow_workload = manifests.workload("Deployment", "mlflow")
    serving_workload = manifests.workload("Deployment", "serving")
    mlflow_port = container_port(mlflow_workload, "mlflow", manifests.find("Service", "mlflow"))
    serving_port = container_port(serving_workload, "serving", manifests.find("Service", "serving"))
    needed = {manifests.service_port("postgres"), manifests.service_port("minio", "api"), mlflow_port, serving_port}
    taken = busy_ports(needed)
    assert not taken, (f"127.0.0.1 ports {taken} are in use; the harness needs the Services' own ports "
                       f"{sorted(needed)} (postgres, minio, mlflow, serving): stop what holds them")

    ir = load_ir(IR_PATH)
    step_env = kfp_step_env(ir, manifests)
    environment = {key: value for env in step_env.values() for key, value in env.items()}
    images = kfp_executor_images(ir)
    unknown = {name: ref for name, ref in images.items() if local_image(ref) is None}
    assert not unknown, f"{IR_PATH}: executors with images that are not ours: {unknown}"
    step_user = {image_config(ref).get("User") for ref in images.values()}
    assert len(step_user) == 1, f"the step images run as different users: {step_user}"
    serving_container = serving_workload.pod_spec["containers"][0]
    serving_env = container_env(manifests, serving_workload, serving_container, "serving")
    model_name = serving_env["MODEL_URI"].removeprefix("models:/").split("@")[0]
    print(f"\nstep env from the IR's platform config, resolved in namespace {KFP_NAMESPACE}: {environment}")

    findings: list[str] = []
    timings: dict[str, float] = {}
    pods: list[Pod] = []
    standins = Standins(manifests)
    postgres_up = threading.Thread(target=lambda: (time.sleep(POSTGRES_LATE_SECONDS), standins.__enter__()),
                                   name="standins", daemon=True)
    postgres_up.start()
    try:
        try:
            # 1. MLflow, created before PostgreSQL answers: the wait, the schema upgrade, then the server.
            # The init container in the postgres image (pg_isready in a loop) is played by waiting
            # for the stand-in's port.
            waits = [c["name"] for c in mlflow_workload.pod_spec.get("initContainers") or []
                     if local_image(c["image"]) is None and c["image"].startswith("postgres")]
            postgres_port = manifests.service_port("postgres")
            mlflow_pod = Pod(manifests, mlflow_workload,
                             play={name: (lambda: wait_for_port(postgres_port)) for name in waits})
            pods.append(mlflow_pod)
            mlflow_pod.start(init_timeout=180)
            postgres_up.join(timeout=120)
            print(f"stand-ins: PostgreSQL 127.0.0.1:{standins.roles.postgres_port} (user "
                  f"{standins.roles.postgres_user}, db {standins.roles.postgres_db}), started "
                  f"{POSTGRES_LATE_SECONDS}s after the pod; SeaweedFS S3 127.0.0.1:{standins.roles.s3_port} "
                  f"(bucket {standins.roles.bucket})")
            timings["mlflow pod ready"] = mlflow_pod.wait_ready(timeout=120)
            print(f"mlflow pod ready after {timings['mlflow pod ready']:.1f}s")
            restarted = {s.name: s.restarts for s in mlflow_pod.statuses.values() if s.init and s.restarts}
            if restarted:
                order = [c["name"] for c in mlflow_workload.pod_spec["initContainers"]]
                findings.append(f"mlflow init containers restarted {restarted} although PostgreSQL came up "
                                f"{POSTGRES_LATE_SECONDS}s after the pod; init order in the rendered "
                                f"Deployment: {order} (the wait must come before what needs the database)")

            # 2. Serving before any champion: alive, not ready (once its readiness probe has had its say).
            serving_pod = Pod(manifests, serving_workload)
            pods.append(serving_pod)
            serving_pod.start()
            serving = serving_pod.statuses["serving"]
            probe = serving_container.get("readinessProbe") or {}
            settle = float(probe.get("initialDelaySeconds", 0)) + float(probe.get("periodSeconds", 10)) + 2
            serving_pod.wait_until(lambda pod: (not serving.running) or serving.ready or
                                   time.monotonic() - serving.started_at > settle, timeout=settle + 30,
                                   what="a verdict on serving without a champion")
            if not serving.running or serving.restarts:
                findings.append(f"serving without a champion exited (exit code {serving.exit_code}, restarts "
                                f"{serving.restarts}) instead of staying alive and not ready; its log:\n"
                                f"{serving_pod.logs('serving', tail=25)}")
            elif serving.ready:
                findings.append("serving reported ready before any champion existed")
            else:
                print(f"serving alive and not ready without a champion ({serving.last_probe.get('readiness')})")

            # 3. The pipeline, each step in its image as the IR launches it.
            root = Path(tmp_path_factory.mktemp("harness-pipeline")) / "root"
            root.mkdir()
            root.chmod(0o777)  # the steps run as the image's user and write their artifacts here
            runner = kfp.local.DockerRunner(
                network_mode="host", environment=environment, user=step_user.pop() or None,
                extra_hosts={host: "127.0.0.1" for host in service_hosts(manifests, KFP_NAMESPACE)})
            pipeline = components.load_component_from_file(str(IR_PATH))
            tee = _Tee(sys.stdout)
            started = time.monotonic()
            real_stdout, sys.stdout = sys.stdout, tee
            try:
                with local_session(root, runner):
                    outputs = pipeline(algorithms=ALGORITHMS, config_yaml=PERMISSIVE_POLICY)
                decision = outputs.outputs["decision"]
            except Exception as exc:  # kfp.local raises when a task fails; the steps' logs say why
                decision = None
                findings.append(f"the pipeline failed: {type(exc).__name__}: {str(exc)[:300]}\n"
                                f"MLflow-related lines of the steps' output:\n"
                                + _lines_with(tee.kept.getvalue(), "403", "Invalid Host", "MlflowException",
                                              "Error", "promotion:"))
            finally:
                sys.stdout = real_stdout
            timings["pipeline (5 steps, 2 algorithms)"] = time.monotonic() - started
            print(f"pipeline finished in {timings['pipeline (5 steps, 2 algorithms)']:.1f}s: {decision}")
            if decision is not None and "promoted" not in decision:
                findings.append(f"no champion promoted despite the permissive policy: {decision}")

            # 4. Serving picks the champion up by itself and answers.
            if decision is not None and serving.running:
                waited = time.monotonic()
                try:
                    serving_pod.wait_ready(timeout=180)
                    timings["serving ready after the champion appeared"] = time.monotonic() - waited
                except HarnessError as exc:
                    findings.append(f"serving did not become ready after the champion appeared:\n{exc}")
            if serving.ready:
                import mlflow

                # From outside the cluster, as `kubectl port-forward svc/mlflow` would reach it. MLflow
                # 3.17 with proxied S3 artifacts hands clients presigned URLs on the S3 Service
                # (http://minio:9000/...), which no name outside the cluster resolves: download
                # through the server instead. Fail fast rather than after MLflow's retries.
                monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{mlflow_port}")
                monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
                monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
                client = mlflow.MlflowClient()
                champion = client.get_model_version_by_alias(model_name, "champion")
                # What a client sends the champion: raw long OHLCV rows (the embedded data the pipeline
                # trained on: its last LONGEST_LOOKBACK_DAYS + 7 trading days, every name present on all of them).
                rows = input_example(read_embedded().prices, tickers=100, days=LONGEST_LOOKBACK_DAYS + 7)
                body = json.dumps({"dataframe_split": rows.to_dict(orient="split", index=False)}).encode()
                status, answer, headers = _http(f"http://127.0.0.1:{serving_port}/invocations", body)
                if status != 200:
                    findings.append(f"POST /invocations with {len(rows)} raw rows answered {status}: {answer[:3000]}")
                else:
                    portfolio = json.loads(answer)["predictions"]
                    held = [p for p in portfolio if p.get("selected")]
                    total = sum(float(p["weight"]) for p in held)
                    print(f"/invocations ({len(rows)} rows, {rows['ticker'].nunique()} tickers) -> "
                          f"X-Model-Version {headers.get('x-model-version')}, {len(portfolio)} scored, "
                          f"held {[(p['ticker'], round(float(p['weight']), 3)) for p in held]}")
                    if (len(portfolio) != rows["ticker"].nunique() or not held
                            or not math.isclose(total, 1.0, abs_tol=1e-9)
                            or {str(p["date"])[:10] for p in portfolio} != {rows["date"].max()}
                            or not all(math.isfinite(float(p["score"])) for p in portfolio)):
                        findings.append(f"/invocations did not answer a portfolio for {rows['date'].max()} over "
                                        f"{rows['ticker'].nunique()} tickers whose held weights sum to 1 "
                                        f"(sum {total}): {portfolio[:5]!r}...")
                    if headers.get("x-model-version") != str(champion.version):
                        findings.append(f"/invocations carried X-Model-Version {headers.get('x-model-version')!r}, "
                                        f"not the champion's v{champion.version}")
                status, version_text, _ = _http(f"http://127.0.0.1:{serving_port}/version")
                print(f"/version -> {status} {version_text.strip()[:200]}")
                if status != 200 or str(champion.version) not in version_text:
                    findings.append(f"/version answered {status} {version_text[:200]!r}, which does not name "
                                    f"the champion {model_name} v{champion.version}")
        finally:
            summary = format_table(pods_summary(pods))
            described = "\n".join(pod.describe() for pod in pods)
            for pod in pods:
                pod.stop()
    finally:
        postgres_up.join(timeout=120)
        standins.__exit__(None, None, None)
    print("\ncontainer time to ready (init containers: to completion), from its own start:\n" + summary)
    print("\n".join(f"{what}: {seconds:.1f}s" for what, seconds in timings.items()))
    assert not findings, "the in-cluster flow broke:\n\n" + "\n\n".join(findings) + "\n\n" + described
