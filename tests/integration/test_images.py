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
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.images import COMPONENT_TARGETS, image

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


def test_the_serving_image_answers_a_prediction_for_the_champion(stack, monkeypatch):
    import mlflow
    from sklearn.linear_model import Ridge

    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.tracking_uri)
    features = pd.DataFrame(np.random.default_rng(0).uniform(-0.5, 0.5, (200, 3)), columns=["ret_21", "mom_12_1", "vol_63"])
    model = Ridge().fit(features, features["mom_12_1"] * 0.02)
    mlflow.set_experiment("serving-smoke")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", input_example=features.head(3),
                                        pip_requirements=["scikit-learn"])
    version = mlflow.register_model(info.model_uri, "serving-ranker").version
    mlflow.MlflowClient().set_registered_model_alias("serving-ranker", "champion", version)

    port = _free_port()
    name = f"serving-smoke-{port}"
    _docker("run", "-d", "--rm", "--name", name, "--network", "host", "-e", f"MLFLOW_TRACKING_URI={stack.tracking_uri}",
            "-e", "MODEL_URI=models:/serving-ranker@champion", "-e", f"PORT={port}", "-e", "HOST=127.0.0.1",
            image("serving"))
    try:
        _wait_http(f"http://127.0.0.1:{port}/ping", timeout=90)
        body = json.dumps({"dataframe_split": {"columns": list(features.columns), "data": features.head(4).values.tolist()}})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    finally:
        _docker("stop", "-t", "5", name, check=False)
    np.testing.assert_allclose(answer["predictions"], model.predict(features.head(4)), rtol=1e-6)


def test_the_whole_pipeline_runs_each_step_in_its_own_image_with_docker_runner(stack, tmp_path_factory):
    """kfp.local.DockerRunner with the real images and host networking, tracked in the stack's server."""
    import kfp.local

    from pipelines.local import local_session
    from pipelines.training import training_pipeline

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
