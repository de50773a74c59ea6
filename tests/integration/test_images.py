"""The built images, exercised with a real Docker engine (`scripts/build-images.sh --local-base`).

Skipped, with the reason, when no engine answers or the images were not built; `scripts/test.sh`
builds them whenever it can start an engine and says so when it cannot. Containers use the host
network and bind 127.0.0.1 only.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from portfolio_mlops_kfp.components.images import COMPONENT_TARGETS, image

pytestmark = [pytest.mark.integration, pytest.mark.images]


def _docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def _engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI"
    try:
        if _docker("info", check=False, timeout=20).returncode != 0:
            return "no Docker engine answers (`docker info` failed)"
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer"
    missing = [t for t in (*COMPONENT_TARGETS, "mlflow-server", "serving")
               if _docker("image", "inspect", image(t), check=False).returncode != 0]
    return f"images not built: {', '.join(missing)} (run scripts/build-images.sh --local-base)" if missing else None


PROBLEM = _engine_problem()
if PROBLEM:
    pytestmark.append(pytest.mark.skip(reason=PROBLEM))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_http(url: str, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer 200 within {timeout:.0f}s")


@pytest.mark.parametrize("target", COMPONENT_TARGETS)
def test_each_component_image_runs_its_entry_point_as_the_non_root_user(target):
    help_text = _docker("run", "--rm", "--network", "host", image(target)).stdout
    uid = _docker("run", "--rm", "--network", "host", image(target), "id", "-u").stdout.strip()
    assert "usage: portfolio-mlops" in help_text
    assert uid == "1001"


# Every ELF file (programs, Python's extension modules, the wheels' libraries), resolved by the image's own
# loader. Libraries auditwheel grafted into a wheel's *.libs/ find their siblings through the module that
# loads them, so their own folder is on the search path, as it is at run time.
_MISSING_LIBRARIES = r"""
find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune -o -type f \( -perm /111 -o -name '*.so*' \) -print 2>/dev/null |
while read -r f; do
    [ "$(head -c 4 "$f" 2>/dev/null | tail -c 3)" = ELF ] || continue
    LD_LIBRARY_PATH=$(dirname "$f") ldd "$f" 2>/dev/null | grep 'not found' | sed "s|^|$f: |"
done
echo checked
"""


@pytest.mark.parametrize("target", (*COMPONENT_TARGETS, "mlflow-server", "serving"))
def test_every_program_and_library_in_each_image_finds_the_libraries_it_links(target):
    """The base is trimmed with dpkg --purge --force-depends (Dockerfile runtime-rootfs): this is what
    says no program or module left behind lost a library it needs."""
    result = _docker("run", "--rm", "--network", "host", "--user", "0", "--entrypoint", "sh", image(target),
                     "-c", _MISSING_LIBRARIES, timeout=300)
    assert result.stdout.strip().endswith("checked"), result.stderr[-2000:]
    missing = [line for line in result.stdout.splitlines() if "not found" in line]
    assert not missing, f"{target}: libraries not found:\n" + "\n".join(missing[:30])


def test_the_mlflow_server_image_serves_health_against_the_stacks_postgres_and_s3(stack):
    port = _free_port()
    name = f"mlflow-smoke-{port}"
    _docker("run", "-d", "--rm", "--name", name, "--network", "host",
            "-e", f"MLFLOW_S3_ENDPOINT_URL={stack.s3_endpoint}", "-e", f"AWS_ACCESS_KEY_ID={stack.access_key}",
            "-e", f"AWS_SECRET_ACCESS_KEY={stack.secret_key}", image("mlflow-server"),
            "--backend-store-uri", stack.backend_store_uri, "--artifacts-destination", f"s3://{stack.bucket}/artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
    try:
        seconds = _wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        uid = _docker("exec", name, "id", "-u").stdout.strip()
    finally:
        _docker("stop", "-t", "5", name, check=False)
    print(f"mlflow-server container healthy after {seconds:.1f}s")
    assert uid == "1001"


def _get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait_for_version(url: str, version: str, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            if _get_json(url)[1].get("version") == version:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not report version {version} within {timeout:.0f}s")


def test_the_serving_image_waits_for_a_champion_then_follows_the_alias_under_the_pods_constraints(stack, monkeypatch):
    """Started before any champion exists, as on a fresh cluster: alive and not ready (no crash loop);
    ready once promoted; a moved alias is served without a restart. Run as the pod runs it: read-only
    root filesystem, tmpfs /tmp and /home/app, UID 1001, no capabilities, no privilege escalation."""
    import mlflow
    from sklearn.linear_model import Ridge

    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.tracking_uri)
    features = pd.DataFrame(np.random.default_rng(0).uniform(-0.5, 0.5, (200, 3)), columns=["ret_21", "mom_12_1", "vol_63"])
    client = mlflow.MlflowClient()
    port = _free_port()
    name = f"serving-smoke-{port}"
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    _docker("run", "-d", "--rm", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
            "--tmpfs", "/home/app", "--user", "1001:1001", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "-e", f"MLFLOW_TRACKING_URI={stack.tracking_uri}", "-e", "MODEL_URI=models:/serving-ranker@champion",
            "-e", f"PORT={port}", "-e", "HOST=127.0.0.1", "-e", "POLL_SECONDS=1", image("serving"))
    try:
        alive = _wait_http(f"{base}/health", timeout=60)
        time.sleep(3)  # several polls without a champion
        ping_status, ping = _get_json(f"{base}/ping")
        running = _docker("inspect", "-f", "{{.State.Running}} {{.RestartCount}}", name).stdout.split()

        def register(slope: float) -> tuple[str, Ridge]:
            model = Ridge().fit(features, features["mom_12_1"] * slope)
            mlflow.set_experiment("serving-smoke")
            with mlflow.start_run():
                info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
            return str(mlflow.register_model(info.model_uri, "serving-ranker").version), model

        v1, model_1 = register(0.02)
        promoted = time.perf_counter()
        client.set_registered_model_alias("serving-ranker", "champion", v1)
        _wait_http(f"{base}/ping", timeout=60)
        first_ready = time.perf_counter() - promoted
        body = json.dumps({"dataframe_split": {"columns": list(features.columns), "data": features.head(4).values.tolist()}})
        request = urllib.request.Request(f"{base}/invocations", data=body.encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer, header = json.loads(response.read()), response.headers["X-Model-Version"]

        v2, model_2 = register(-0.05)
        client.set_registered_model_alias("serving-ranker", "champion", v2)
        moved = _wait_for_version(f"{base}/version", v2, timeout=60)
        with urllib.request.urlopen(request, timeout=30) as response:
            answer_2 = json.loads(response.read())
        logs = _docker("logs", name).stderr
        restarts_after = _docker("inspect", "-f", "{{.RestartCount}}", name).stdout.strip()
    finally:
        _docker("stop", "-t", "5", name, check=False)
    print(f"\nserving container: /health after {alive:.1f}s from docker run; ready {first_ready:.1f}s after the first "
          f"promotion; alias move v{v1} -> v{v2} served after {moved:.1f}s (POLL_SECONDS=1); "
          f"total {time.perf_counter() - started:.1f}s")
    assert ping_status == 503 and ping["state"] == "no-alias", ping
    assert running == ["true", "0"]
    assert "no version of serving-ranker has alias champion yet" in logs
    assert header == v1
    np.testing.assert_allclose(answer["predictions"], model_1.predict(features.head(4)), rtol=1e-6)
    np.testing.assert_allclose(answer_2["predictions"], model_2.predict(features.head(4)), rtol=1e-6)
    assert restarts_after == "0"


def test_the_whole_pipeline_runs_each_step_in_its_own_image_with_docker_runner(stack, tmp_path_factory):
    """kfp.local.DockerRunner with the real images and host networking, tracked in the stack's server."""
    import kfp.local

    from portfolio_mlops_kfp.pipelines.local import local_session
    from portfolio_mlops_kfp.pipelines.training import training_pipeline

    root = Path(tmp_path_factory.mktemp("docker-pipeline")) / "root"
    root.mkdir()
    root.chmod(0o777)  # the steps run as UID 1001 and write their artifacts here
    runner = kfp.local.DockerRunner(network_mode="host", environment={"MLFLOW_TRACKING_URI": stack.tracking_uri})
    with local_session(root, runner):
        outputs = training_pipeline(algorithms=["ridge", "lasso"], experiment="docker-pipeline",
                                    registered_model="docker-ranker")
    summary = json.loads((Path(outputs.outputs["report"].path) / "summary.json").read_text())
    assert set(summary["algorithms"]) == {"ridge", "lasso"}
    assert summary["mlflow"]["tracking_uri"] == stack.tracking_uri
    assert summary["promotion"]["reasons"]
