"""The tracking chain through the real stack: MLflow server on PostgreSQL with proxied S3 artifacts.

Faults are real: the S3 server or the MLflow server is stopped while a run is being logged (the
stop is triggered from inside the client call that would next reach it), then restarted.
"""

from __future__ import annotations

import mlflow
import numpy as np
import psycopg2
import pytest
from mlflow import MlflowClient

from portfolio_mlops import runner, tracking
from portfolio_mlops.config import BenchmarkConfig, ModelSpec, RunConfig, TrackingConfig, WalkForwardConfig
from portfolio_mlops.errors import TrackingError
from portfolio_mlops.devstack import s3_client, start_service, stop_service
from synthetic import random_walk_panel

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(stack):
    """Point MLflow at the stack; fail fast (one retry) so fault tests take seconds, not minutes."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", stack.tracking_uri)
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        patch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
        patch.delenv("AWS_ACCESS_KEY_ID", raising=False)  # proxied artifacts: the client needs no S3 keys
        patch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
        yield MlflowClient(stack.tracking_uri)


@pytest.fixture(scope="module")
def chain(server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("signal-data")
    random_walk_panel(n_tickers=30, n_days=1000, seed=3, signal_strength=0.003).to_parquet(folder / "prices.parquet")
    cfg = RunConfig(
        data=str(folder),
        walk_forward=WalkForwardConfig(min_train_days=252),
        benchmarks=BenchmarkConfig(random_seeds=2),
        models=[ModelSpec(algorithm="ridge"), ModelSpec(algorithm="lasso", params={"alpha": 1e-5})],
        tracking=TrackingConfig(experiment="server-tests", registered_model="server-ranker"),
    )
    output = tmp_path_factory.mktemp("signal-report")
    return cfg, runner.run_chain(cfg, output), output  # logged, registered and promoted on the stack's server


@pytest.fixture(scope="module")
def tracked(chain):
    _, result, _ = chain
    return result.tracked, result.decision


def _versions(client: MlflowClient, name: str) -> list:
    return client.search_model_versions(f"name='{name}'")


def _latest_parent(client: MlflowClient, experiment: str):
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=20)
    return next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)


def test_the_runs_are_rows_in_postgres(stack, tracked):
    run, _ = tracked
    ids = [run.parent_run_id, *run.child_run_ids.values()]
    with psycopg2.connect(stack.postgres_uri) as connection, connection.cursor() as cursor:
        cursor.execute("select run_uuid, status from runs where run_uuid = any(%s)", (ids,))
        rows = dict(cursor.fetchall())
        cursor.execute("select count(*) from model_versions where name = 'server-ranker'")
        versions = cursor.fetchone()[0]
    assert rows == {run_id: "FINISHED" for run_id in ids}
    assert versions >= 2


def test_the_artifacts_and_models_are_objects_in_the_bucket(stack, tracked):
    run, _ = tracked
    s3 = s3_client(stack)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket)
            for o in page.get("Contents", [])]
    assert any(k.endswith(f"{run.parent_run_id}/artifacts/summary.json") for k in keys)
    assert any(k.endswith(f"{run.parent_run_id}/artifacts/equity_curves.png") for k in keys)
    for child in run.child_run_ids.values():
        assert any(k.endswith(f"{child}/artifacts/refits.json") for k in keys)
    assert sum(k.endswith("/MLmodel") for k in keys) >= 2


def test_promotion_sets_the_champion_and_it_loads_and_predicts_through_the_server(server, tracked, chain):
    _, decision = tracked
    cfg, result, _ = chain
    assert decision.promoted
    model = mlflow.pyfunc.load_model("models:/server-ranker@champion")
    prices = result.panel.prices.assign(date=result.panel.prices["date"].dt.strftime("%Y-%m-%d"))
    answer = model.predict(prices)  # raw rows in, the champion's next portfolio out
    assert set(answer["ticker"]) <= set(prices["ticker"]) and np.isfinite(answer["score"]).all()
    assert answer.loc[answer["selected"], "weight"].sum() == pytest.approx(1.0)


def test_with_s3_down_mid_run_the_run_ends_failed_registers_nothing_and_a_rerun_succeeds(
        stack, stack_config, server, chain, tracked, monkeypatch):
    cfg, result, output = chain
    before = len(_versions(server, "server-ranker"))
    real_log_artifact = MlflowClient.log_artifact
    uploads = []

    def s3_dies_on_first_upload(self, *args, **kwargs):
        uploads.append(args)
        if len(uploads) == 1:
            stop_service(stack, "s3")
        return real_log_artifact(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_artifact", s3_dies_on_first_upload)
    try:
        with pytest.raises(TrackingError, match=f"{stack.tracking_uri} failed while logging the parent run's artifacts"):
            tracking.log_chain(result, result.features, cfg, output, cfg.data)
    finally:
        start_service(stack_config, "s3")
    failed = _latest_parent(server, "server-tests")
    assert failed.info.status == "FAILED"
    assert "artifacts" in failed.data.tags["failure"]
    assert len(_versions(server, "server-ranker")) == before

    monkeypatch.setattr(MlflowClient, "log_artifact", real_log_artifact)
    rerun = tracking.log_chain(result, result.features, cfg, output, cfg.data)
    assert server.get_run(rerun.parent_run_id).info.status == "FINISHED"
    assert len(_versions(server, "server-ranker")) == before + len(rerun.model_versions)


def test_with_mlflow_down_mid_run_it_fails_loudly_and_the_next_run_closes_the_orphan_failed(
        stack, stack_config, server, chain, tracked, monkeypatch):
    cfg, result, output = chain
    before = len(_versions(server, "server-ranker"))
    real_log_batch = MlflowClient.log_batch
    runs_seen = []

    def server_dies_during_the_first_child(self, run_id, *args, **kwargs):
        if run_id not in runs_seen:
            runs_seen.append(run_id)
            if len(runs_seen) == 2:  # the parent's batches come first; this is the first child's
                stop_service(stack, "mlflow")
        return real_log_batch(self, run_id, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", server_dies_during_the_first_child)
    try:
        with pytest.raises(TrackingError, match="failed while logging the ridge child run"):
            tracking.log_chain(result, result.features, cfg, output, cfg.data)
    finally:
        start_service(stack_config, "mlflow")
    monkeypatch.setattr(MlflowClient, "log_batch", real_log_batch)
    orphan = _latest_parent(server, "server-tests")
    assert orphan.info.status == "RUNNING"  # nobody could tell the server while it was down
    assert len(_versions(server, "server-ranker")) == before

    rerun = tracking.log_chain(result, result.features, cfg, output, cfg.data)
    closed = server.get_run(orphan.info.run_id)
    assert closed.info.status == "FAILED"
    assert closed.data.tags["failure"].startswith("abandoned")
    assert server.get_run(rerun.parent_run_id).info.status == "FINISHED"
    assert len(_versions(server, "server-ranker")) == before + len(rerun.model_versions)
