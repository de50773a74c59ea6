"""`pipeline submit`: experiment, pipeline version (content-addressed), run, schedule, following the run.

No Kubeflow Pipelines API server can run on this machine, so every test talks through the real
kfp.Client to tests/kfp_standin.py, a stand-in for the KFP v2beta1 REST API on 127.0.0.1 that
keeps state in memory and records each request. The pipeline is a trivial one compiled here with
kfp.compiler, not the project's training pipeline.
"""

# No `from __future__ import annotations`: kfp reads the component signatures as real types.

import argparse
import socket
from pathlib import Path

import kfp
import pytest
from kfp import compiler, dsl

from kfp_standin import API, KfpStandIn
from portfolio_mlops_kfp.pipelines.submit import (
    SubmitError,
    add_submit_arguments,
    parse_params,
    run_submit,
    submit,
    validate_cron,
)
from portfolio_mlops.errors import ConfigError, PortfolioMLOpsError

PARAMS = {"top_n": 20, "algorithms": ["ridge", "lasso"]}


def compile_tiny_pipeline(path: Path, default_top_n: int) -> Path:
    """A one-step pipeline with an integer, a list and a string parameter; the default changes the file."""

    @dsl.component(base_image="python:3.11-slim")
    def describe(top_n: int, algorithms: list, label: str) -> str:
        return f"{label}: top {top_n} by {algorithms}"

    @dsl.pipeline(name="tiny-ranking")
    def tiny_pipeline(top_n: int = default_top_n, algorithms: list = ["ridge"], label: str = "nightly"):
        describe(top_n=top_n, algorithms=algorithms, label=label)

    compiler.Compiler().compile(tiny_pipeline, str(path))
    return path


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> tuple[Path, Path]:
    """Two compiled packages of the same pipeline that differ only in a default (so in their bytes)."""
    folder = tmp_path_factory.mktemp("packages")
    return (compile_tiny_pipeline(folder / "tiny.yaml", 10),
            compile_tiny_pipeline(folder / "tiny_changed.yaml", 5))


@pytest.fixture
def package(packages) -> Path:
    return packages[0]


@pytest.fixture(autouse=True)
def no_local_kfp_context(tmp_path, monkeypatch):
    """kfp.Client reads ~/.config/kfp/context.json (namespace, cookies); the tests must not."""
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    monkeypatch.delenv("KF_PIPELINES_UI_ENDPOINT", raising=False)


@pytest.fixture
def server():
    with KfpStandIn() as standin:
        yield standin


def submit_to(server: KfpStandIn, package: Path, **options):
    """submit() with the test defaults; returns (result, progress messages)."""
    messages: list[str] = []
    options.setdefault("params", PARAMS)
    result = submit(server.url, package, "tiny-ranking", "tiny-experiment", progress=messages.append, **options)
    return result, messages


def uploads(server: KfpStandIn) -> list:
    return (server.requests_to("POST", f"{API}/pipelines/upload")
            + server.requests_to("POST", f"{API}/pipelines/upload_version"))


def test_first_submit_creates_experiment_pipeline_and_a_run_of_its_version_with_the_parameters(server, package):
    """Against the KFP stand-in (no real KFP API server can run here): everything is created once."""
    result, _ = submit_to(server, package)

    assert [e["display_name"] for e in server.experiments.values()] == ["tiny-experiment"]
    assert [p["display_name"] for p in server.pipelines.values()] == ["tiny-ranking"]
    [version] = server.versions.values()
    assert version["package_sha256"] == server.requests_to("POST", f"{API}/pipelines/upload")[0].body["uploadfile"]["sha256"]
    [run_request] = server.requests_to("POST", f"{API}/runs")
    assert run_request.body["runtime_config"]["parameters"] == PARAMS
    assert run_request.body["pipeline_version_reference"] == {
        "pipeline_id": version["pipeline_id"], "pipeline_version_id": version["pipeline_version_id"]}
    assert run_request.body["experiment_id"] == result.experiment_id
    assert (result.pipeline_id, result.version_id) == (version["pipeline_id"], version["pipeline_version_id"])
    assert result.run_url == f"{server.url}/#/runs/details/{result.run_id}"
    assert (result.recurring_run_id, result.final_state, result.exit_code) == (None, None, 0)


def test_resubmitting_the_same_file_reuses_experiment_pipeline_and_version(server, package):
    """Against the KFP stand-in (no real KFP API server can run here): no second upload, a second run."""
    first, _ = submit_to(server, package)
    second, messages = submit_to(server, package)

    assert len(server.requests_to("POST", f"{API}/experiments")) == 1
    assert len(uploads(server)) == 1
    assert (second.experiment_id, second.pipeline_id, second.version_id) == (
        first.experiment_id, first.pipeline_id, first.version_id)
    assert second.run_id != first.run_id and len(server.runs) == 2
    assert any("reusing it" in message for message in messages)


def test_a_changed_file_uploads_a_new_version_of_the_existing_pipeline(server, packages):
    """Against the KFP stand-in (no real KFP API server can run here): same pipeline, new version."""
    original, changed = packages
    first, _ = submit_to(server, original)
    second, _ = submit_to(server, changed)

    [version_upload] = server.requests_to("POST", f"{API}/pipelines/upload_version")
    assert version_upload.query["pipelineid"] == first.pipeline_id
    assert version_upload.query["name"].startswith("sha256-")
    assert second.pipeline_id == first.pipeline_id and second.version_id != first.version_id
    assert len(server.pipelines) == 1 and len(server.versions) == 2
    assert server.runs[second.run_id]["pipeline_version_reference"]["pipeline_version_id"] == second.version_id


def test_resubmitting_a_changed_file_reuses_the_version_named_after_its_digest(server, packages):
    """Against the KFP stand-in (no real KFP API server can run here): found by its sha256 name."""
    original, changed = packages
    submit_to(server, original)
    second, _ = submit_to(server, changed)
    third, _ = submit_to(server, changed)

    assert len(uploads(server)) == 2
    assert third.version_id == second.version_id


def test_an_explicit_version_name_already_holding_another_file_is_refused(server, packages):
    """Against the KFP stand-in (no real KFP API server can run here): --version never runs stale code."""
    original, changed = packages
    submit_to(server, original)
    submit_to(server, original, version_name="v1")

    with pytest.raises(SubmitError, match=r"already has a version 'v1' built from a different file"):
        submit_to(server, changed, version_name="v1")
    assert len(server.runs) == 2


def test_cron_creates_a_recurring_run_of_the_same_version_with_that_schedule(server, package):
    """Against the KFP stand-in (no real KFP API server can run here): the schedule reaches the API."""
    result, _ = submit_to(server, package, cron="0 0 6 * * 1-5")

    [request] = server.requests_to("POST", f"{API}/recurringruns")
    assert request.body["trigger"]["cron_schedule"]["cron"] == "0 0 6 * * 1-5"
    assert request.body["pipeline_version_reference"]["pipeline_version_id"] == result.version_id
    assert request.body["runtime_config"]["parameters"] == PARAMS
    assert request.body["mode"] == "ENABLE" and request.body["no_catchup"] is True
    assert result.recurring_run_id in server.recurring_runs


@pytest.mark.parametrize("cron, complaint", [
    ("0 6 * * 1-5", r"has 5 field\(s\).*prefix the seconds: '0 0 6 \* \* 1-5'"),
    ("0 0 25 * * *", r"hour field '25': 25 is outside 0-23"),
    ("0 0 6 * * MON-XYZ", r"day-of-week field 'MON-XYZ': 'XYZ' is not a number"),
    ("0 0 6 ? * 5-1", r"range '5-1' runs backwards"),
    ("@daily", r"has 1 field\(s\)"),
])
def test_an_invalid_cron_is_rejected_before_any_request(server, package, cron, complaint):
    """Against the KFP stand-in (no real KFP API server can run here): it sees no request at all."""
    with pytest.raises(ConfigError, match=complaint) as raised:
        submit_to(server, package, cron=cron)
    assert "6 fields with seconds first" in str(raised.value)
    assert server.requests == []


@pytest.mark.parametrize("cron", ["0 0 6 * * 1-5", "*/30 * * ? * MON-FRI", "0 15 9 1,15 JAN-JUN/2 *"])
def test_six_field_crons_with_ranges_lists_steps_and_names_are_accepted(cron):
    """Pure validation; no KFP API server (real or stand-in) is involved."""
    assert validate_cron(f"  {cron} ") == cron


def test_wait_follows_running_to_succeeded_and_exits_0(server, package):
    """Against the KFP stand-in (no real KFP API server can run here), scripted RUNNING, RUNNING, SUCCEEDED."""
    server.run_states = ["RUNNING", "RUNNING", "SUCCEEDED"]
    result, messages = submit_to(server, package, wait=True, poll_seconds=0.01, timeout_seconds=10)

    assert (result.final_state, result.exit_code) == ("SUCCEEDED", 0)
    assert len(server.requests_to("GET", f"{API}/runs/{result.run_id}")) == 3
    state_lines = [m for m in messages if m.startswith(f"Run {result.run_id}: ")]
    assert [line.split(": ")[1].split()[0] for line in state_lines] == ["RUNNING", "SUCCEEDED"]
    assert "SUCCEEDED" in result.message and result.run_url in result.message


@pytest.mark.parametrize("state", ["FAILED", "CANCELED"])
def test_wait_on_a_run_that_fails_or_is_canceled_exits_1_with_a_message(server, package, state):
    """Against the KFP stand-in (no real KFP API server can run here); a failure carries the server's reason."""
    server.run_states = ["RUNNING", state]
    server.run_error = "task 'train' failed: exit code 1"
    result, _ = submit_to(server, package, wait=True, poll_seconds=0.01, timeout_seconds=10)

    assert (result.final_state, result.exit_code) == (state, 1)
    assert f"ended {state}" in result.message and result.run_url in result.message
    if state == "FAILED":
        assert "task 'train' failed: exit code 1" in result.message


def test_wait_gives_up_at_the_timeout_with_exit_2(server, package):
    """Against the KFP stand-in (no real KFP API server can run here), a run scripted to stay RUNNING."""
    server.run_states = ["RUNNING"]
    result, _ = submit_to(server, package, wait=True, poll_seconds=0.02, timeout_seconds=0.2)

    assert (result.final_state, result.exit_code) == ("RUNNING", 2)
    assert "still RUNNING after the 0.2s timeout" in result.message
    assert 2 <= len(server.requests_to("GET", f"{API}/runs/{result.run_id}")) <= 15


def test_an_unreachable_host_raises_submit_error_naming_the_host(package):
    """No KFP API server at all (not even the stand-in): a closed port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host = f"http://127.0.0.1:{port}"

    with pytest.raises(SubmitError, match=rf"cannot reach the KFP API at {host} \(GET /apis/v2beta1/healthz\)") as raised:
        submit(host, package, "tiny-ranking", "tiny-experiment", PARAMS, progress=lambda _: None)
    assert isinstance(raised.value, PortfolioMLOpsError)


def test_an_http_error_names_the_host_the_endpoint_and_the_server_reason(server, package):
    """Against the KFP stand-in (no real KFP API server can run here), told to fail the run creation."""
    server.fail("POST", f"{API}/runs", status=500, message="database is locked")

    with pytest.raises(SubmitError) as raised:
        submit_to(server, package)
    assert str(raised.value) == (f"KFP API at {server.url}: POST /apis/v2beta1/runs failed: "
                                 f"HTTP 500 Internal Server Error: database is locked")


@pytest.mark.parametrize("params, complaint", [
    ({"topn": 20}, r"parameter\(s\) topn not declared .* \(it accepts: algorithms, label, top_n\)"),
    ({"top_n": "twenty"}, r"parameter 'top_n' is declared NUMBER_INTEGER .* got 'twenty' \(str\)"),
    ({"top_n": True}, r"parameter 'top_n' is declared NUMBER_INTEGER .* got True \(bool\)"),
])
def test_parameters_the_package_does_not_declare_or_type_are_rejected_before_any_request(server, package, params,
                                                                                          complaint):
    """Against the KFP stand-in (no real KFP API server can run here): it sees no request at all."""
    with pytest.raises(ConfigError, match=complaint):
        submit_to(server, package, params=params)
    assert server.requests == []


def test_run_submit_parses_params_into_typed_values(server, package, capsys):
    """Against the KFP stand-in (no real KFP API server can run here): the CLI path end to end."""
    parser = argparse.ArgumentParser()
    add_submit_arguments(parser)
    args = parser.parse_args(["--host", server.url, "--package", str(package), "--experiment", "tiny-experiment",
                              "--pipeline-name", "tiny-ranking", "--param", "top_n=20",
                              "--param", 'algorithms=["ridge"]', "--param", "label=2024"])

    assert run_submit(args) == 0
    [run_request] = server.requests_to("POST", f"{API}/runs")
    assert run_request.body["runtime_config"]["parameters"] == {"top_n": 20, "algorithms": ["ridge"], "label": "2024"}
    assert "submitted" in capsys.readouterr().out


def test_param_values_are_json_when_they_parse_and_text_otherwise():
    """Pure parsing; no KFP API server (real or stand-in) is involved."""
    assert parse_params(["top_n=20", "ratio=0.5", "flag=true", "name=ridge", "expr=a=b"]) == {
        "top_n": 20, "ratio": 0.5, "flag": True, "name": "ridge", "expr": "a=b"}
    with pytest.raises(ConfigError, match=r"--param 'top_n': expected KEY=VALUE"):
        parse_params(["top_n"])
