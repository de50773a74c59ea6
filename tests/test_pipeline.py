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


# --- what `portfolio-mlops run` hands the pipeline (pipelines/cli.py) and how configure reads it ---

def _configure(tmp_path, name: str = "config", **given):
    """configure's body as its process runs it; returns the RunConfig it wrote."""
    import json

    from kfp.dsl import Dataset

    from portfolio_mlops.config import RunConfig
    from portfolio_mlops.options import pipeline_parameters

    output = Dataset(name="config", uri=str(tmp_path / f"{name}.json"))
    output.path  # noqa: B018 - kfp resolves the local path from the uri
    arguments = {"config_yaml": "", "algorithms": [], **{n: o.unset for n, o in pipeline_parameters().items()}, **given}
    configure.python_func(config=output, **arguments)
    return RunConfig.model_validate(json.loads(Path(output.path).read_text()))


def test_the_train_fan_out_starts_with_gradient_boosting_and_the_report_keeps_the_config_order(tmp_path):
    # kfp.local runs the ParallelFor two at a time in the order given: the longest step goes first, so the
    # three quick linear steps share the other slot instead of delaying it; results stay in config order.
    from portfolio_mlops.config import RunConfig
    from portfolio_mlops_kfp.pipelines.cli import pipeline_parameters

    cfg = RunConfig()
    params = pipeline_parameters(cfg)
    assert params["algorithms"] == ["hgb", "ridge", "lasso", "elasticnet"]
    assert [m.name for m in _configure(tmp_path, **params).models] == [m.name for m in cfg.models]
    reordered = cfg.with_algorithms(["lasso", "hgb", "ridge"])  # `run --algorithms lasso,hgb,ridge`
    params = pipeline_parameters(reordered)
    assert params["algorithms"] == ["hgb", "lasso", "ridge"]
    assert [m.name for m in _configure(tmp_path, **params).models] == ["lasso", "hgb", "ridge"]


def test_configure_without_models_in_its_yaml_keeps_the_algorithms_in_the_order_given(tmp_path):
    cfg = _configure(tmp_path, config_yaml="portfolio: {top_n: 5}\n", algorithms=["hgb", "ridge"])
    assert [m.name for m in cfg.models] == ["hgb", "ridge"]


def _bad_ridge_yaml() -> str:
    from portfolio_mlops.config import RunConfig

    payload = RunConfig().with_algorithms(["ridge"]).model_dump(mode="json")
    payload["models"][0]["params"]["alpha"] = -1.0
    return yaml.safe_dump(payload, sort_keys=False)


def test_configure_rechecks_hyperparameters_the_preflight_did_not_record(tmp_path, capsys, monkeypatch):
    # The record of another (valid) config does not let a bad hyperparameter through: scikit-learn's own
    # check runs and the step exits 2 naming the field, as without any record.
    from portfolio_mlops.commands.run import CHECKED_ENV, checked_record
    from portfolio_mlops.config import RunConfig

    monkeypatch.setenv(CHECKED_ENV, checked_record(RunConfig().with_algorithms(["ridge"])))
    with pytest.raises(SystemExit) as failure:
        _configure(tmp_path, config_yaml=_bad_ridge_yaml(), algorithms=["ridge"])
    assert failure.value.code == 2
    [line] = capsys.readouterr().err.splitlines()  # "... expected <scikit-learn's constraint>, got -1.0"
    assert line.startswith("configure: error (exit status 2): invalid configuration: models[ridge].params.alpha: "
                           "expected a float in the range [0.0, inf)") and line.endswith(", got -1.0"), line


def test_configure_does_not_load_scikit_learn_again_for_the_config_the_cli_checked(tmp_path):
    # `run --engine kfp`: the preflight checked this config in this environment and hands its record to the
    # steps (commands/run.py CHECKED_ENV); configure, a fresh process, then skips the ~1 s scikit-learn import.
    import json

    from portfolio_mlops.commands.run import CHECKED_ENV, checked_record
    from portfolio_mlops.config import RunConfig
    from portfolio_mlops_kfp.pipelines.cli import pipeline_parameters

    cfg = RunConfig()
    program = f"""
import json, sys
from kfp.dsl import Dataset
from portfolio_mlops.options import pipeline_parameters as table
from portfolio_mlops_kfp.components.configure import configure
output = Dataset(name="config", uri={str(tmp_path / "config.json")!r})
output.path
configure.python_func(config=output, **{{n: o.unset for n, o in table().items()}}, **json.load(sys.stdin))
print("sklearn" in sys.modules)
"""
    loaded = {}
    for case, record in (("recorded", checked_record(cfg)), ("not recorded", None)):
        env = {k: v for k, v in os.environ.items() if k != CHECKED_ENV} | ({CHECKED_ENV: record} if record else {})
        loaded[case] = subprocess.run([sys.executable, "-c", program], input=json.dumps(pipeline_parameters(cfg)),
                                      capture_output=True, text=True, check=True, cwd=REPO, env=env).stdout.split()
    assert loaded == {"recorded": ["False"], "not recorded": ["True"]}


def test_the_pipeline_sets_resources_with_kfps_own_caller_lookup_replaced_by_an_equivalent_one():
    # pipelines/training.py swaps inspect.stack for a frames-only one while it sets resources: same entries
    import inspect

    from portfolio_mlops_kfp.pipelines.training import _FramesOnly

    def caller():
        return inspect.stack()[:3], _FramesOnly.stack()[:3]

    full, quick = caller()
    assert [(f.frame, f.filename, f.lineno, f.function) for f in full] == [entry[:4] for entry in quick]
