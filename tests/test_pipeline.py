"""The Kubeflow pipeline: compiled IR matches the code, the graph is the one drawn, steps are shaped."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from portfolio_mlops_kfp.components import images
from portfolio_mlops_kfp.components.configure import configure
from portfolio_mlops_kfp.components.features import features
from portfolio_mlops_kfp.components.ingest import ingest
from portfolio_mlops_kfp.components.promote import promote
from portfolio_mlops_kfp.components.train import train
from portfolio_mlops_kfp.pipelines.compile import COMPILED

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compiled in a fresh interpreter with the default image registry and tag, as committed."""
    path = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTFOLIO_MLOPS_")}
    subprocess.run([sys.executable, "-c", "from portfolio_mlops_kfp.pipelines.compile import compile_pipeline; "
                    f"compile_pipeline({str(path)!r})"], check=True, env=env, cwd=REPO)
    return path


@pytest.fixture(scope="module")
def spec(compiled):
    documents = list(yaml.safe_load_all(compiled.read_text()))
    return documents[0], (documents[1] if len(documents) > 1 else {})


def test_the_committed_compiled_pipeline_matches_the_code(compiled):
    assert COMPILED.read_text() == compiled.read_text(), (
        "pipelines/training_pipeline.yaml is stale: run `portfolio-mlops pipeline compile` and commit it")


def test_the_graph_is_configure_ingest_features_parallel_train_then_promote(spec):
    pipeline, _ = spec
    tasks = pipeline["root"]["dag"]["tasks"]
    assert set(tasks) == {"configure", "ingest", "features", "for-loop-1", "promote"}
    loop = tasks["for-loop-1"]
    assert loop["taskInfo"]["name"] == "per-algorithm"
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("algorithms")
    inner = pipeline["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"train"}
    assert tasks["promote"]["inputs"]["artifacts"]["models"]["taskOutputArtifact"]["producerTask"] == "for-loop-1"
    assert set(tasks["features"]["dependentTasks"]) >= {"ingest", "configure"}


def test_every_step_runs_in_its_own_image_named_in_one_place(spec):
    pipeline, _ = spec
    executors = pipeline["deploymentSpec"]["executors"]
    by_step = {name.removeprefix("exec-"): e["container"]["image"] for name, e in executors.items()}
    for step in ("ingest", "features", "train", "promote"):
        assert by_step[step] == images.image(step)
    assert len({by_step[s] for s in ("ingest", "features", "train", "promote")}) == 4


def test_steps_have_resources_retries_and_caching_set_deliberately(spec):
    pipeline, _ = spec
    tasks = pipeline["root"]["dag"]["tasks"]
    inner = pipeline["components"]["comp-for-loop-1"]["dag"]["tasks"]
    # retries only where a failure can be transient (pipelines/training.py): none for the data steps
    assert inner["train"]["retryPolicy"]["maxRetryCount"] == 1
    assert tasks["promote"]["retryPolicy"]["maxRetryCount"] == 1
    assert all("retryPolicy" not in tasks[step] for step in ("configure", "ingest", "features"))
    assert tasks["ingest"]["cachingOptions"] == {} and tasks["promote"]["cachingOptions"] == {}
    assert tasks["features"]["cachingOptions"] == {"enableCache": True}
    resources = pipeline["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert resources["resourceCpuLimit"] == "1" and resources["resourceMemoryLimit"] == "4G"


def test_mlflow_settings_reach_promote_from_a_configmap_and_a_secret(spec):
    _, platform = spec
    promote_config = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-promote"]
    assert promote_config["configMapAsEnv"][0]["configMapName"] == "portfolio-mlops-mlflow"
    assert promote_config["configMapAsEnv"][0]["keyToEnv"][0]["envVar"] == "MLFLOW_TRACKING_URI"
    assert promote_config["secretAsEnv"][0]["secretName"] == "portfolio-mlops-mlflow"
    assert promote_config["secretAsEnv"][0]["optional"] is True


def test_components_import_the_core_inside_their_body():
    for component in (configure, ingest, features, train, promote):
        source = component.component_spec.implementation.container.command[-1]
        assert "from portfolio_mlops" in source
        assert component.component_spec.implementation.container.image.startswith(images.registry())


# A value that is valid for each setting and differs from its default (and from its unset value).
GIVEN = {"data": "/data/prices.csv", "labels.horizon_days": 7, "portfolio.top_n": 7, "portfolio.cost_bps_per_side": 12.5,
         "tracking.experiment": "other-experiment", "tracking.registered_model": "other-model",
         "promotion.rank_by": "icir", "promotion.min_ic_tstat": 1.5, "promotion.margin": 0.25}


def _field(cfg, path):
    value = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return value


def test_the_pipeline_parameters_are_the_options_table_with_its_unset_values_plus_config_and_algorithms(spec):
    from portfolio_mlops.options import pipeline_parameters

    declared = spec[0]["root"]["inputDefinitions"]["parameters"]
    table = pipeline_parameters()
    assert set(declared) == {"config_yaml", "algorithms", *table}
    assert {name: declared[name]["defaultValue"] for name in table} == {name: o.unset for name, o in table.items()}
    assert set(configure.component_spec.inputs) == set(declared), "configure takes every pipeline parameter"


def test_configure_sets_each_given_parameter_on_its_config_field_and_keeps_the_yaml_for_unset_ones(tmp_path):
    import json

    from kfp.dsl import Dataset

    from portfolio_mlops.config import RunConfig
    from portfolio_mlops.options import pipeline_parameters

    table = pipeline_parameters()
    unset = {name: option.unset for name, option in table.items()}
    yaml_text = yaml.safe_dump({"portfolio": {"top_n": 11}, "promotion": {"margin": 0.5}})
    for name, option in table.items():
        output = Dataset(name="config", uri=str(tmp_path / f"{name}.json"))
        configure.python_func(config_yaml=yaml_text, algorithms=[], config=output,
                              **{**unset, name: GIVEN[option.path]})
        cfg = RunConfig.model_validate(json.loads(Path(output.path).read_text()))
        assert _field(cfg, option.path) == GIVEN[option.path], name
        assert cfg.portfolio.top_n == (7 if name == "top_n" else 11)  # the others keep config_yaml's value
        assert cfg.promotion.margin == (0.25 if name == "margin" else 0.5)


def test_configure_rejects_a_bad_parameter_naming_the_field(tmp_path, capsys):
    from kfp.dsl import Dataset

    output = Dataset(name="config", uri=str(tmp_path / "config.json"))
    output.path  # noqa: B018 - kfp resolves the local path from the uri
    with pytest.raises(SystemExit) as failure:  # the step's process exits 2 with one line, no traceback
        configure.python_func(config_yaml="", data_source="", algorithms=[], horizon_days=0, top_n=-3, cost_bps=-1.0,
                              experiment="", registered_model="", rank_by="", min_ic_tstat=-1.0, margin=-1.0,
                              config=output)

    assert failure.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "configure: error (exit status 2): invalid configuration: portfolio.top_n: Input should be greater than or equal to 1 (got -3)"]
    assert not (tmp_path / "config.json").exists()


def test_images_follow_the_registry_and_tag_overrides(monkeypatch):
    monkeypatch.setenv("PORTFOLIO_MLOPS_REGISTRY", "registry.example/team")
    monkeypatch.setenv("PORTFOLIO_MLOPS_IMAGE_TAG", "1.2.3")
    assert images.image("train") == "registry.example/team/python-train:1.2.3"
    with pytest.raises(ValueError, match="unknown image target"):
        images.image("nope")
