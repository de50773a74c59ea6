"""`portfolio-mlops cluster status | wait` against a stand-in Kubernetes API server.

No Kubernetes API server can run on these machines (tests/k8s_standin.py says why), so the
workloads and pods come from that stand-in, talking JSON shaped like the real API to the real
`kubernetes` client through a real kubeconfig. Everything else is real: MLflow's own server
application answers /health (in-process, over HTTP), and `portfolio-mlops serve` answers /version
with no champion in the session's sqlite registry, as serving does before the first promotion.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import uvicorn

from k8s_standin import KubernetesStandIn, deployment, job, pod, statefulset
from portfolio_mlops.serving import AliasFollower, ServeSettings, ServingApp
from portfolio_mlops_kfp.pipelines.cli import main


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_url() -> Iterator[str]:
    """MLflow's tracking server application (its /health handler) on a free loopback port."""
    from mlflow.server import app
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def serving_url(tmp_path_factory) -> Iterator[str]:
    """`portfolio-mlops serve` for a registered model that has no champion (nothing registered at all)."""
    settings = ServeSettings(model_uri="models:/cluster-cli-ranker@champion", port=_free_port(), poll_seconds=0.2,
                             tracking_uri=os.environ["MLFLOW_TRACKING_URI"],
                             download_dir=tmp_path_factory.mktemp("serving"))
    server = uvicorn.Server(uvicorn.Config(ServingApp(AliasFollower(settings)), host=settings.host,
                                           port=settings.port, lifespan="on", log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # the first poll: "no version has alias champion yet"
    yield f"http://127.0.0.1:{settings.port}"
    server.should_exit = True
    thread.join(timeout=15)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[KubernetesStandIn, Path]]:
    with KubernetesStandIn() as standin:
        yield standin, standin.kubeconfig(tmp_path / "kubeconfig")


def _healthy(standin: KubernetesStandIn) -> None:
    """What `kubectl apply -k k8s/overlays/kind` leaves once everything is up, before any promotion."""
    postgres, minio = statefulset("postgres", "database", ready=1), statefulset("minio", "object-store", ready=1)
    mlflow, serving = deployment("mlflow", "tracking", ready=1), deployment("serving", "serving", ready=0)
    bucket = job("create-bucket", "object-store", "complete")
    standin.put(postgres, minio, mlflow, serving, bucket,
                pod("postgres-0", postgres, ready=True), pod("minio-0", minio, ready=True),
                pod("mlflow-6f7c9d-x2k4q", mlflow, ready=True), pod("serving-5b8d7c-q9z7w", serving, ready=False),
                pod("create-bucket-h7x2p", bucket, ready=False, phase="Succeeded"))


def _crash_looping_mlflow(standin: KubernetesStandIn) -> None:
    mlflow = deployment("mlflow", "tracking", ready=0)
    standin.put(mlflow, pod("mlflow-6f7c9d-x2k4q", mlflow, ready=False, restarts=4, waiting="CrashLoopBackOff",
                            waiting_message="back-off 1m20s restarting failed container=mlflow", last_exit_code=1))


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_status_is_0_when_all_is_ready_and_serving_waits_for_its_first_champion(api, mlflow_url, serving_url, capsys):
    standin, kubeconfig = api
    _healthy(standin)
    code, out, _ = _run(capsys, "cluster", "status", "--kubeconfig", str(kubeconfig),
                        "--mlflow-url", mlflow_url, "--serving-url", serving_url)
    print(out)
    assert code == 0
    assert "statefulset/postgres" in out and "deployment/mlflow" in out and "job/create-bucket" in out
    assert "no champion yet (normal before the first promotion)" in out
    assert f"{mlflow_url}/health" in out and "healthy" in out
    assert "no version of cluster-cli-ranker has alias champion yet" in out
    assert out.rstrip().endswith("all ready (serving waits for the first champion)")


def test_status_is_1_and_names_a_crash_looping_pod_with_its_last_exit(api, mlflow_url, capsys):
    standin, kubeconfig = api
    _healthy(standin)
    _crash_looping_mlflow(standin)
    code, out, _ = _run(capsys, "cluster", "status", "--kubeconfig", str(kubeconfig),
                        "--mlflow-url", mlflow_url, "--serving-url", "")
    assert code == 1
    assert ("deployment/mlflow 0/1: pod mlflow-6f7c9d-x2k4q CrashLoopBackOff (last exit: Error, exit code 1, 21:04:05): "
            "back-off 1m20s restarting failed container=mlflow, 4 restarts") in out


def test_status_is_1_when_mlflow_does_not_answer_through_its_url(api, capsys):
    standin, kubeconfig = api
    _healthy(standin)
    nobody = f"http://127.0.0.1:{_free_port()}"
    code, out, _ = _run(capsys, "cluster", "status", "--kubeconfig", str(kubeconfig), "--mlflow-url", nobody,
                        "--serving-url", "")
    assert code == 1
    assert f"mlflow {nobody}/health: no answer" in out


def test_wait_returns_0_once_the_workloads_become_ready(api, capsys):
    standin, kubeconfig = api
    _healthy(standin)
    starting_mlflow, running_bucket = deployment("mlflow", "tracking", ready=0), job("create-bucket", "object-store", "running")
    standin.put(starting_mlflow, pod("mlflow-6f7c9d-x2k4q", starting_mlflow, ready=False), running_bucket,
                pod("create-bucket-h7x2p", running_bucket, ready=True))
    flip = threading.Timer(0.8, _healthy, args=(standin,))  # the rollout finishes while we wait
    flip.start()
    try:
        code, out, _ = _run(capsys, "cluster", "wait", "--kubeconfig", str(kubeconfig), "--interval", "0.1",
                            "--timeout", "20")
    finally:
        flip.cancel()
    print(out)
    lines = out.splitlines()
    assert code == 0
    assert any("waiting for" in line and "deployment/mlflow 0/1: pod mlflow-6f7c9d-x2k4q Running, not ready" in line
               and "job/create-bucket 0/1: running (pod create-bucket-h7x2p)" in line for line in lines)
    assert "ready: statefulset/postgres 1/1, statefulset/minio 1/1, deployment/mlflow 1/1, job/create-bucket 1/1" in lines[-1]
    assert sum("waiting for" in line for line in lines) <= 3  # one line per change, not one per poll


def test_wait_does_not_wait_for_serving_by_default(api, capsys):
    standin, kubeconfig = api
    _healthy(standin)  # serving 0/1: no champion
    code, out, _ = _run(capsys, "cluster", "wait", "--kubeconfig", str(kubeconfig), "--timeout", "5")
    assert code == 0
    assert "serving" not in out.splitlines()[-1]


def test_wait_times_out_with_1_naming_what_is_not_ready_and_why(api, capsys):
    standin, kubeconfig = api
    _healthy(standin)
    _crash_looping_mlflow(standin)
    started = time.monotonic()
    code, out, _ = _run(capsys, "cluster", "wait", "--kubeconfig", str(kubeconfig), "--interval", "0.2",
                        "--timeout", "1")
    assert code == 1
    assert time.monotonic() - started < 10
    assert "timed out after 1s; not ready:" in out
    assert "deployment/mlflow 0/1: pod mlflow-6f7c9d-x2k4q CrashLoopBackOff" in out.split("timed out")[1]


def test_wait_fails_at_once_when_the_bucket_job_has_failed(api, capsys):
    standin, kubeconfig = api
    _healthy(standin)
    standin.put(job("create-bucket", "object-store", "failed"))
    started = time.monotonic()
    code, out, _ = _run(capsys, "cluster", "wait", "--kubeconfig", str(kubeconfig), "--timeout", "60")
    assert code == 1
    assert time.monotonic() - started < 10
    assert "failed: job/create-bucket failed (BackoffLimitExceeded: Job has reached the specified backoff limit)" in out


def test_wait_for_minio_accepts_the_seaweedfs_object_store(api, capsys):
    standin, kubeconfig = api
    _healthy(standin)
    del standin.objects[("StatefulSet", "portfolio-mlops", "minio")]
    standin.put(statefulset("seaweedfs", "object-store", ready=1))
    code, out, _ = _run(capsys, "cluster", "wait", "--kubeconfig", str(kubeconfig), "--for", "minio,create-bucket",
                        "--timeout", "5")
    assert code == 0
    assert "statefulset/seaweedfs 1/1" in out


def test_an_unreachable_api_server_is_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    import io
    import logging

    # A root handler whose stream has gone away (as an earlier in-process command can leave one):
    # urllib3's per-retry warnings must not reach it and print "--- Logging error ---" tracebacks.
    gone = io.StringIO()
    gone.close()
    monkeypatch.setattr(logging.getLogger(), "handlers", [logging.StreamHandler(gone)])
    with KubernetesStandIn() as standin:
        kubeconfig = standin.kubeconfig(tmp_path / "kubeconfig")
    # The stand-in has stopped: nothing listens on its port any more.
    code, out, err = _run(capsys, "cluster", "wait", "--kubeconfig", str(kubeconfig), "--timeout", "30")
    assert code == 2
    assert err.count("\n") == 1 and "the Kubernetes API (standin) is unreachable" in err


@pytest.mark.parametrize(("extra", "message"), [
    (["--context", "no-such-context"], "no-such-context"),
    (["--kubeconfig", "/nonexistent/kubeconfig"], "/nonexistent/kubeconfig"),
])
def test_an_unusable_kubeconfig_is_exit_2_naming_it(api, capsys, extra, message):
    standin, kubeconfig = api
    argv = ["cluster", "status", "--kubeconfig", str(kubeconfig), *extra]
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert message in err and err.startswith("portfolio-mlops cluster: error:")


def test_a_rejected_token_is_exit_2_with_the_api_servers_message(api, capsys, tmp_path):
    standin, kubeconfig = api
    kubeconfig.write_text(kubeconfig.read_text().replace("standin-token", "wrong-token"))
    code, _, err = _run(capsys, "cluster", "status", "--kubeconfig", str(kubeconfig), "--serving-url", "")
    assert code == 2
    assert "answered 401" in err and "Unauthorized" in err
