"""The local stack, end to end: real PostgreSQL, SeaweedFS and MLflow server processes on 127.0.0.1.

One session-wide stack (conftest.py) serves the tests that use it; tests about starting and stopping
a whole stack, or about failures, use a stack of their own in a fresh folder.
"""

from __future__ import annotations

import socket
import uuid
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from portfolio_mlops.devstack import (HOST, SERVICES, StackConfig, StackError, StackState, down, load_state, s3_client,
                                      start_service, status, stop_service, up)

pytestmark = pytest.mark.integration


@pytest.fixture
def client(stack: StackState, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    # A failed request fails at once instead of after MLflow's default retries with backoff (minutes).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return MlflowClient(stack.tracking_uri)


def _new_run(client: MlflowClient) -> tuple[str, str]:
    experiment_id = client.create_experiment(f"stack-test-{uuid.uuid4().hex[:8]}")
    return experiment_id, client.create_run(experiment_id).info.run_id


def _log_text(client: MlflowClient, run_id: str, folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    client.log_artifact(run_id, str(path))


def _artifact_key(experiment_id: str, run_id: str, name: str) -> str:
    # The server stores proxied artifacts under --artifacts-destination s3://<bucket>/artifacts.
    return f"artifacts/{experiment_id}/{run_id}/artifacts/{name}"


def _bucket_keys(state: StackState) -> set[str]:
    listing = s3_client(state).list_objects_v2(Bucket=state.bucket)
    return {item["Key"] for item in listing.get("Contents", [])}


def _rows_for_run(state: StackState, run_id: str) -> int:
    with closing(psycopg2.connect(state.postgres_uri)) as connection, connection.cursor() as cursor:
        cursor.execute("select count(*) from runs where run_uuid = %s", (run_id,))
        return cursor.fetchone()[0]


def _live_processes_in_groups(process_groups: set[int]) -> list[str]:
    """Non-zombie processes whose process group is one of `process_groups`, read straight from /proc."""
    live = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        state, _, process_group = raw[raw.rindex(")") + 2:].split()[:3]
        if int(process_group) in process_groups and state != "Z":
            live.append(f"{entry.name} {raw[raw.index('(') + 1:raw.rindex(')')]}")
    return live


# --- the session stack ----------------------------------------------------------------------------

def test_every_service_is_alive_answering_and_healthy_after_up(stack, stack_config):
    report = status(stack_config)

    assert list(report) == list(SERVICES)
    for name, service in report.items():
        assert (service["alive"], service["answering"], service["healthy"]) == (True, True, True), name
        assert service["port"] == stack.ports[name]


def test_up_again_is_a_no_op_returning_the_same_pids_and_ports(stack, stack_config):
    before = load_state(stack_config.base_dir)

    again = up(stack_config)

    assert again.pids == before.pids
    assert again.ports == before.ports


def test_up_on_a_partly_running_stack_starts_only_what_is_missing(stack, stack_config):
    stop_service(stack, "s3")
    before = load_state(stack_config.base_dir).pids

    after = up(stack_config).pids

    assert "s3" not in before and "s3" in after
    assert {name: after[name] for name in before} == before


def test_a_logged_run_is_a_postgres_row_and_its_artifact_an_object_in_the_bucket(stack, client, tmp_path):
    experiment_id, run_id = _new_run(client)

    client.log_metric(run_id, "rank_ic", 0.05)
    _log_text(client, run_id, tmp_path, "notes.txt", "top-10 portfolio")

    assert _rows_for_run(stack, run_id) == 1
    key = _artifact_key(experiment_id, run_id, "notes.txt")
    assert key in _bucket_keys(stack)
    assert s3_client(stack).get_object(Bucket=stack.bucket, Key=key)["Body"].read() == b"top-10 portfolio"


def test_while_s3_is_down_artifact_logging_fails_but_metrics_are_still_recorded(stack, stack_config, client, tmp_path):
    _, run_id = _new_run(client)

    stop_service(stack, "s3")
    try:
        client.log_metric(run_id, "sharpe", 1.2)
        with pytest.raises(MlflowException):
            _log_text(client, run_id, tmp_path, "lost.txt", "no S3")
    finally:
        start_service(stack_config, "s3")

    assert [metric.value for metric in client.get_metric_history(run_id, "sharpe")] == [1.2]


def test_a_restarted_s3_keeps_the_objects_written_before_and_accepts_new_ones(stack, stack_config, client, tmp_path):
    experiment_id, run_id = _new_run(client)
    _log_text(client, run_id, tmp_path, "before.txt", "written before the restart")
    old_pid = load_state(stack_config.base_dir).pids["s3"]

    stop_service(stack, "s3")
    restarted = start_service(stack_config, "s3")

    assert restarted.pids["s3"] != old_pid
    assert restarted.ports == stack.ports
    _log_text(client, run_id, tmp_path, "after.txt", "written after the restart")
    assert {_artifact_key(experiment_id, run_id, name) for name in ("before.txt", "after.txt")} <= _bucket_keys(stack)


def test_a_restarted_mlflow_server_still_has_the_earlier_runs(stack, stack_config, client):
    experiment_id, run_id = _new_run(client)
    client.log_param(run_id, "top_n", "10")

    stop_service(stack, "mlflow")
    start_service(stack_config, "mlflow")

    fresh_client = MlflowClient(stack.tracking_uri)
    assert fresh_client.get_run(run_id).data.params == {"top_n": "10"}
    assert [run.info.run_id for run in fresh_client.search_runs([experiment_id])] == [run_id]


# --- stacks of their own --------------------------------------------------------------------------

def test_down_stops_every_process_and_a_second_down_is_harmless(isolated_root, postgres_bin_dir):
    cfg = StackConfig(base_dir=isolated_root, postgres_port=0, s3_port=0, mlflow_port=0,
                      postgres_bin_dir=postgres_bin_dir)
    pids = set(up(cfg).pids.values())
    assert len(pids) == len(SERVICES)

    stopped = down(cfg)

    assert {pid for _, pid in stopped} == pids
    assert _live_processes_in_groups(pids) == []
    assert load_state(isolated_root).pids == {}
    assert (isolated_root / "postgres" / "PG_VERSION").is_file()  # data is kept without purge
    assert down(cfg) == []


def test_a_port_in_use_is_reported_naming_the_service_and_the_port(isolated_root):
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        port = squatter.getsockname()[1]

        with pytest.raises(StackError) as error:
            up(StackConfig(base_dir=isolated_root, postgres_port=port, s3_port=0, mlflow_port=0))

    message = str(error.value)
    assert message.startswith("postgres: ")
    assert f"{HOST}:{port}" in message and "already in use" in message


@pytest.mark.parametrize("service, missing", [
    ("postgres", {"postgres_bin_dir": Path("/nonexistent/postgresql/bin")}),
    ("s3", {"weed_binary": Path("/nonexistent/weed")}),
])
def test_a_missing_binary_is_reported_naming_the_service_and_the_path(isolated_root, service, missing):
    cfg = StackConfig(base_dir=isolated_root, postgres_port=0, s3_port=0, mlflow_port=0, **missing)

    with pytest.raises(StackError) as error:
        start_service(cfg, service)

    assert str(error.value).startswith(f"{service}: ")
    assert "/nonexistent/" in str(error.value)


def test_a_service_that_exits_at_start_is_reported_with_the_tail_of_its_log(isolated_root, tmp_path):
    fake_weed = tmp_path / "weed"
    fake_weed.write_text("#!/bin/sh\necho 'fake weed: refusing to start' >&2\nexit 3\n")
    fake_weed.chmod(0o755)
    cfg = StackConfig(base_dir=isolated_root, s3_port=0, weed_binary=fake_weed)

    with pytest.raises(StackError) as error:
        start_service(cfg, "s3")

    message = str(error.value)
    assert message.startswith("s3: exited during start-up with exit status 3")
    assert "fake weed: refusing to start" in message
    assert str(isolated_root / "logs" / "s3.log") in message
