"""The whole Kubeflow pipeline through kfp.local (every step its own process) into the real stack."""

import json

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from portfolio_mlops_kfp.pipelines.cli import main
from synthetic import random_walk_panel, write_kaggle_daily

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline_run(stack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("kaggle")
    write_kaggle_daily(random_walk_panel(n_tickers=30, n_days=1000, seed=5, signal_strength=0.003), folder)
    config = folder.parent / "pipeline.yaml"
    config.write_text(yaml.safe_dump({
        "walk_forward": {"min_train_days": 252},
        "benchmarks": {"random_seeds": 2},
        "tracking": {"experiment": "pipeline-tests", "registered_model": "pipeline-ranker"},
    }))
    output = tmp_path_factory.mktemp("pipeline-report")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", stack.tracking_uri)
        code = main(["run", "--data", str(folder), "--config", str(config), "--algorithms", "ridge,lasso",
                     "--output", str(output), "--quiet"])
    return code, json.loads((output / "summary.json").read_text()), MlflowClient(stack.tracking_uri)


def test_the_pipeline_run_succeeds_and_reports_every_algorithm(pipeline_run):
    code, summary, _ = pipeline_run
    assert code == 0
    assert set(summary["algorithms"]) == {"ridge", "lasso"}
    assert summary["data"]["layout"] == "kaggle_sp500_daily"


def test_one_parent_run_with_one_child_per_algorithm_on_the_server(pipeline_run):
    _, summary, client = pipeline_run
    parent_id = summary["mlflow"]["parent_run_id"]
    experiment = client.get_experiment_by_name("pipeline-tests")
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(r.data.tags["algorithm"] for r in children) == ["lasso", "ridge"]
    assert client.get_run(parent_id).info.status == "FINISHED"


def test_versions_are_registered_and_the_champion_is_set_or_the_refusal_recorded(pipeline_run, stack):
    _, summary, client = pipeline_run
    versions = client.search_model_versions("name='pipeline-ranker'")
    assert len(versions) == 2
    decision = summary["promotion"]
    assert decision["reasons"]
    if decision["promoted"]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_URI", stack.tracking_uri)
            model = mlflow.pyfunc.load_model("models:/pipeline-ranker@champion")
        assert model.metadata.get_input_schema().input_names()
    else:
        parent = client.get_run(summary["mlflow"]["parent_run_id"])
        assert parent.data.tags["promotion.decision"] == "not promoted"
