"""MLflow admits every client the rendered manifests configure, and refuses a foreign Host.

MLflow >= 3.5 answers 403 "Invalid Host header" unless the request's Host (host:port as the client
sends it) matches `--allowed-hosts` exactly (or an fnmatch pattern); /health is exempt, so probes stay
green while every real client fails. This test takes nothing from the flag: it runs the mlflow pod of
each rendered overlay with the kube harness (its exact command/args with $(VAR) expanded from the
rendered Secrets, the db-upgrade init container first, in the mlflow-server image, the Service names
resolving to loopback) and sends an API request with the Host header of:
- every MLflow client URI the overlay configures (container env, ConfigMaps; kube_harness.iter_tracking_uris),
- `kubectl port-forward svc/mlflow` (localhost / 127.0.0.1 on the Service port),
- the NodePort, where the overlay has one, as k8s/kind/cluster.yaml maps it to the host.
Each must pass the Host check (200; 401 where the manifests turn basic-auth on: authentication comes
after the Host check). A foreign Host must get 403.

Stand-ins (nothing can be pulled here): PostgreSQL and S3 are the local stack's Debian PostgreSQL and
SeaweedFS on the Services' ports with the manifests' credentials. The production overlay renders no
Secrets (an operator creates them): the test supplies `standin_<key>` values for the keys its pods
reference, and says so. Traffic goes only to 127.0.0.1, with a custom Host header.
"""

from __future__ import annotations

import base64
import http.client
import time

import pytest

from kube_harness import (REPO, Pod, Standins, busy_ports, container_env, container_port, engine_problem,
                          fabricate_missing_secrets, k8s_root, mlflow_client_hosts, render)

pytestmark = [pytest.mark.integration, pytest.mark.images]

PROBLEM = engine_problem(("mlflow-server",))
if PROBLEM:
    pytestmark.append(pytest.mark.skip(reason=PROBLEM))

OVERLAYS = ("kind", "seaweedfs", "production")
FOREIGN_HOST = "evil.example:5000"
API_PATH = "/api/2.0/mlflow/experiments/search?max_results=1"


def _status_with_host(port: int, host: str, credentials: tuple[str, str] | None = None) -> tuple[int, str]:
    headers = {"Host": host}
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request("GET", API_PATH, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read(200).decode(errors="replace").strip()
    finally:
        connection.close()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_admits_every_configured_client_host_and_refuses_a_foreign_one(overlay, postgres_bin_dir):
    manifests = render(overlay)
    standin_secrets = fabricate_missing_secrets(manifests)
    if standin_secrets:
        print(f"\n[{overlay}] Secrets not rendered (an operator creates them); stand-in values used for "
              f"{', '.join(f'{ns}/{name} {sorted(keys)}' for (ns, name), keys in standin_secrets.items())}")
    workload = manifests.workload("Deployment", "mlflow")
    service = manifests.find("Service", "mlflow")
    port = container_port(workload, "mlflow", service)
    taken = busy_ports({manifests.service_port("postgres"), manifests.service_port("minio", "api"), port})
    assert not taken, (f"127.0.0.1 ports {taken} are in use; the harness needs the Services' own ports "
                       "(postgres, minio, mlflow): stop what holds them")
    hosts = mlflow_client_hosts(manifests, k8s_root() / "kind" / "cluster.yaml")
    server = next(c for c in workload.pod_spec["containers"] if c["name"] == "mlflow")
    expected = 401 if "basic-auth" in (server.get("args") or []) else 200  # Host check first, then auth
    env = container_env(manifests, workload, server, "mlflow")
    admin = (env["MLFLOW_AUTH_ADMIN_USERNAME"], env["MLFLOW_AUTH_ADMIN_PASSWORD"]) if expected == 401 else None

    with Standins(manifests):
        pod = Pod(manifests, workload)
        try:
            pod.start(init_timeout=120)
            seconds = pod.wait_ready(timeout=120)
            print(f"[{overlay}] mlflow pod ready after {seconds:.1f}s (db-upgrade "
                  f"{pod.statuses['db-upgrade'].seconds_to_ready:.1f}s)")
            answers = {host: _status_with_host(port, host) for host in [*hosts, FOREIGN_HOST]}
            # With basic-auth on, the admin from the Secret gets in through an in-cluster Host.
            as_admin = _status_with_host(port, next(iter(hosts)), admin) if admin else None
        finally:
            logs = pod.describe()
            pod.stop()

    started = time.strftime("%H:%M:%S")
    print(f"[{overlay}] {started} GET {API_PATH} on 127.0.0.1:{port} with each Host:")
    for host, (status, body) in answers.items():
        print(f"  {status}  {host:<52} {hosts.get(host, 'foreign')}")
    refused = {host: f"{status} {body[:80]}" for host, (status, body) in answers.items()
               if host != FOREIGN_HOST and status != expected}
    assert not refused, (f"overlay {overlay}: MLflow did not answer {expected} to these client Hosts "
                         f"(403 = refused by --allowed-hosts):\n"
                         + "\n".join(f"  {h}: {r}  <- {hosts[h]}" for h, r in refused.items())
                         + f"\n{logs}")
    assert answers[FOREIGN_HOST][0] == 403, f"overlay {overlay}: a foreign Host got {answers[FOREIGN_HOST]}"
    if admin:
        print(f"  {as_admin[0]}  {next(iter(hosts)):<52} with the admin credentials of Secret-fed "
              "MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD")
        assert as_admin[0] == 200, f"overlay {overlay}: the admin from the Secret was refused: {as_admin}"


def test_the_harness_finds_the_clients_of_every_overlay():
    """Guards the test above against passing vacuously: each overlay configures in-cluster clients."""
    for overlay in OVERLAYS:
        hosts = mlflow_client_hosts(render(overlay), REPO / "k8s" / "kind" / "cluster.yaml")
        assert any(host.startswith("mlflow") for host in hosts), f"{overlay}: no in-cluster MLflow client found: {hosts}"
