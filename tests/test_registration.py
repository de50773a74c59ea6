"""Registration is all or nothing even under SIGKILL: a version is a promotion candidate only when its
parent run carries the completion mark, written after the last version was registered. `promote`
ignores and reports versions without it, and the next run's janitor deletes those of a killed run."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from cli_runs import SCRIPT, Workspace, write_market
from portfolio_mlops import registry, tracking


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    data, config = write_market(tmp_path / "input")
    return Workspace(tmp_path / "user", data, config)


def _client(ws: Workspace):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{ws.db}", registry_uri=f"sqlite:///{ws.db}")


def test_promote_ignores_and_reports_versions_whose_run_has_no_completion_mark(workspace):
    ws = workspace
    for _ in range(2):
        done = ws.run(ws.run_args("inprocess", "ridge,lasso", "out", "--no-promote"))
        assert done.returncode == 0, done.stderr[-3000:]
    client = _client(ws)
    experiment = client.get_experiment_by_name("sp500-stock-ranking").experiment_id
    newest, older = [r for r in client.search_runs([experiment], order_by=["attributes.start_time DESC"])
                     if "mlflow.parentRunId" not in r.data.tags]
    assert newest.data.tags[registry.REGISTRATION_TAG] == "complete"
    # What a kill between the last registration and the mark leaves: the versions, no mark.
    client.delete_tag(newest.info.run_id, registry.REGISTRATION_TAG)

    named = ws.run([str(SCRIPT), "promote", "--run-id", newest.info.run_id])
    latest = ws.run([str(SCRIPT), "promote"])

    assert named.returncode == 2, named.stderr
    assert (f"ignored 2 versions of run {newest.info.run_id}: registration incomplete (no completion mark"
            in named.stderr.strip().splitlines()[-1])
    assert latest.returncode == 0, latest.stderr[-3000:]
    assert f"ignored 2 versions of run {newest.info.run_id}: registration incomplete" in latest.stdout
    assert "(v3, v4)" in latest.stdout
    judged = {str(v.version) for v in client.search_model_versions("name='sp500-stock-ranker'")
              if v.tags.get("promotion.decision")}
    assert judged == {"1", "2"}, "only the complete run's versions were judged"


def test_the_janitor_closes_a_killed_runs_parent_and_deletes_its_unmarked_versions(workspace):
    ws = workspace
    client = _client(ws)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    experiment = client.create_experiment("janitor")
    tags = {registry.HOST_TAG: socket.gethostname(), registry.PID_TAG: str(dead)}
    killed = client.create_run(experiment, tags=tags)  # RUNNING, its process gone, no completion mark
    finished = client.create_run(experiment, tags={**tags, registry.REGISTRATION_TAG: "complete"})
    client.set_terminated(finished.info.run_id, "FINISHED")
    client.create_registered_model("m")
    for parent in (killed, killed, finished):
        client.create_model_version("m", "file:///nowhere", run_id=parent.info.run_id,
                                    tags={registry.PARENT_TAG: parent.info.run_id})

    closed = tracking.fail_abandoned_runs(client, experiment, "m")

    assert closed == [killed.info.run_id]
    run = client.get_run(killed.info.run_id)
    assert run.info.status == "FAILED" and run.data.tags["failure"].startswith("abandoned: process")
    left = [(str(v.version), v.tags[registry.PARENT_TAG]) for v in client.search_model_versions("name='m'")]
    assert left == [("3", finished.info.run_id)]
