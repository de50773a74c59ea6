"""MLflow tracking, the model registry and promotion, end to end against MLflow's embedded sqlite store.

The store lives in a tmp folder (MLFLOW_TRACKING_URI = sqlite:///<tmp>/mlflow.db, working directory
<tmp> so `mlruns/` lands there too). Two chains run once for the whole module, each on 30 synthetic
tickers x 1000 business days with ridge and lasso:

- `signal_run`: a planted momentum signal (IC t-stat ~5.7, net excess over equal weight ~+36%/yr),
  so both versions pass the gates and the better one becomes champion;
- `noise_run`: afterwards, another seed with no signal, so both new versions fail the gates and the
  champion, judged on other data, is re-evaluated on this data and kept.

The cost-comparability test and the CLI tests use the same store under their own experiment and
registered model names, so they leave the two chains' champion alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from portfolio_mlops import __version__, promotion, registry, runner, tracking
from portfolio_mlops.cli import main
from portfolio_mlops.config import (BenchmarkConfig, ModelSpec, PortfolioConfig, RunConfig, TrackingConfig,
                                   WalkForwardConfig)
from portfolio_mlops.errors import TrackingError
from synthetic import random_walk_panel, write_kaggle_daily

ALGORITHMS = ("ridge", "lasso")
MODEL_NAME = "test-ranker"
PANEL = {"n_tickers": 30, "n_days": 1000}


def small_config(data: Path) -> RunConfig:
    return RunConfig(
        data=str(data),
        walk_forward=WalkForwardConfig(min_train_days=252),
        benchmarks=BenchmarkConfig(random_seeds=2),
        models=[ModelSpec(algorithm="ridge", params={"alpha": 1.0}), ModelSpec(algorithm="lasso", params={"alpha": 1e-5})],
        tracking=TrackingConfig(experiment="tracking-tests", registered_model=MODEL_NAME),
    )


def canonical_folder(folder: Path, seed: int, signal_strength: float) -> Path:
    """prices.parquet in the canonical layout (the project's own ingest output format)."""
    folder.mkdir(parents=True)
    random_walk_panel(seed=seed, signal_strength=signal_strength, **PANEL).to_parquet(folder / "prices.parquet", index=False)
    return folder


@dataclass
class LoggedChain:
    cfg: RunConfig
    chain: runner.ChainResult
    tracked: tracking.TrackedRun
    decision: promotion.Decision
    output: Path

    def summary_json(self) -> dict:
        return json.loads((self.output / "summary.json").read_text(encoding="utf-8"))


def log_and_promote(root: Path, name: str, seed: int, signal_strength: float) -> LoggedChain:
    cfg = small_config(canonical_folder(root / name, seed, signal_strength))
    output = root / f"{name}-report"
    chain = runner.run_chain(cfg, output)  # tracked, registered and promoted: cfg.tracking is on by default
    return LoggedChain(cfg, chain, chain.tracked, chain.decision, output)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mlflow-store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        patch.chdir(root)
        yield root


@pytest.fixture(scope="module")
def client(store) -> MlflowClient:
    return MlflowClient()


@pytest.fixture(scope="module")
def signal_run(store) -> LoggedChain:
    return log_and_promote(store, "signal", seed=0, signal_strength=0.003)


@pytest.fixture(scope="module")
def noise_run(signal_run, store) -> LoggedChain:
    return log_and_promote(store, "noise", seed=1, signal_strength=0.0)


def version_of(run: LoggedChain, algorithm: str, client: MlflowClient):
    return client.get_model_version(MODEL_NAME, run.tracked.model_versions[algorithm])


def champion_version(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(MODEL_NAME, registry.CHAMPION).version)


# --- runs -----------------------------------------------------------------------------------------------

def test_a_chain_is_one_parent_run_with_one_finished_child_per_algorithm(signal_run, client):
    parent_id = signal_run.tracked.parent_run_id

    children = client.search_runs([signal_run.tracked.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")

    assert sorted(run.data.tags["algorithm"] for run in children) == sorted(ALGORITHMS)
    assert {run.info.run_id for run in children} == set(signal_run.tracked.child_run_ids.values())
    assert all(run.info.status == "FINISHED" for run in children)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in parent.data.tags


def test_the_experiment_opens_as_model_training_not_genai_in_the_mlflow_ui(signal_run, client):
    experiment = client.get_experiment(signal_run.tracked.experiment_id)

    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_parent_run_records_the_full_config_as_params(signal_run, client):
    params = client.get_run(signal_run.tracked.parent_run_id).data.params

    assert params["walk_forward.rebalance_every_days"] == "21"
    assert params["walk_forward.min_train_days"] == "252"
    assert params["models.ridge.params.alpha"] == "1.0"
    assert params["models.lasso.params.alpha"] == "1e-05"
    assert params["benchmarks.random_seeds"] == "2"
    assert params["portfolio.top_n"] == "10"
    assert params["promotion.min_ic_tstat"] == "2.0"
    assert params["data"] == signal_run.cfg.data
    missing = [section for section in RunConfig.model_fields
               if not any(key == section or key.startswith(f"{section}.") for key in params)]
    assert missing == []


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_child_run_metric_equals_the_value_in_summary_json(signal_run, client, algorithm):
    block = signal_run.summary_json()["algorithms"][algorithm]
    expected = {
        **{f"signal.{k}": v for k, v in block["signal"].items()},
        **{f"gross.{k}": v for k, v in block["portfolio"]["gross"].items()},
        **{f"net.{k}": v for k, v in block["portfolio"]["net"].items()},
        **{f"excess.equal_weight.{k}": v for k, v in block["excess"]["equal_weight"].items()},
    }
    expected = {k: v for k, v in expected.items() if isinstance(v, (int, float)) and v is not None}

    logged = client.get_run(signal_run.tracked.child_run_ids[algorithm]).data.metrics

    assert {"signal.ic_tstat", "net.sharpe", "gross.sharpe", "excess.equal_weight.ann_return"} <= expected.keys()
    assert {k: logged.get(k) for k in expected} == expected


def test_the_net_equity_curve_is_logged_as_history_with_one_point_per_return_day(signal_run, client):
    backtest = signal_run.chain.evaluation.backtests["ridge"]
    net = backtest.net(signal_run.cfg.portfolio.cost_bps_per_side)

    history = sorted(client.get_metric_history(signal_run.tracked.child_run_ids["ridge"], "equity_net"),
                     key=lambda m: m.step)

    assert len(history) == signal_run.summary_json()["evaluation"]["return_days"]
    assert [m.timestamp for m in history] == [d.value // 1_000_000 for d in backtest.dates]
    assert [m.step for m in history] == list(range(len(history)))
    assert history[-1].value == pytest.approx(np.prod(1 + net))


def test_the_rank_ic_is_logged_as_history_with_one_point_per_decision_date_with_a_known_label(signal_run, client):
    ic_by_date = signal_run.chain.evaluation.ic_by_date["ridge"]

    history = sorted(client.get_metric_history(signal_run.tracked.child_run_ids["ridge"], "ic"), key=lambda m: m.step)

    assert len(history) == signal_run.summary_json()["algorithms"]["ridge"]["signal"]["rebalance_ic_dates"]
    assert [m.timestamp for m in history] == [pd.Timestamp(d).value // 1_000_000 for d in ic_by_date.index]
    assert [m.value for m in history] == pytest.approx(ic_by_date.to_list())


# --- artifacts ------------------------------------------------------------------------------------------

def test_the_parent_run_keeps_the_report_and_the_ingest_manifest(signal_run, client):
    parent_id = signal_run.tracked.parent_run_id

    top = {a.path for a in client.list_artifacts(parent_id)}
    data = {a.path for a in client.list_artifacts(parent_id, "data")}

    assert {"summary.json", "equity_curves.png", "quality.json"} <= top
    assert "data/manifest.json" in data
    manifest = json.loads(mlflow.artifacts.load_text(f"runs:/{parent_id}/data/manifest.json"))
    assert manifest["content_digest"] == signal_run.chain.summary["data"]["content_digest"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_child_run_keeps_its_holdings_predictions_refits_coefficients_and_config(signal_run, client, algorithm):
    child_id = signal_run.tracked.child_run_ids[algorithm]

    artifacts = {a.path for a in client.list_artifacts(child_id)}

    assert {f"holdings_{algorithm}.csv", f"predictions_{algorithm}.parquet", "refits.json", "coefficients.json",
            "config.json"} <= artifacts


def test_the_child_config_artifact_is_the_run_config_for_that_algorithm_alone(signal_run):
    text = mlflow.artifacts.load_text(f"runs:/{signal_run.tracked.child_run_ids['lasso']}/config.json")

    assert RunConfig.model_validate_json(text) == signal_run.cfg.with_algorithms(["lasso"])


def test_the_child_coefficients_artifact_has_one_weight_per_feature(signal_run):
    text = mlflow.artifacts.load_text(f"runs:/{signal_run.tracked.child_run_ids['ridge']}/coefficients.json")

    assert list(json.loads(text)) == list(signal_run.chain.features.feature_names)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_child_run_logs_a_model(signal_run, client, algorithm):
    child_id = signal_run.tracked.child_run_ids[algorithm]

    model_uri = client.get_run(child_id).data.tags["model_uri"]

    assert mlflow.models.get_model_info(model_uri).run_id == child_id


def test_the_logged_model_takes_raw_price_rows_and_answers_a_portfolio(signal_run):
    info = mlflow.models.get_model_info(f"models:/{MODEL_NAME}/{signal_run.tracked.model_versions['ridge']}")

    assert info.signature.inputs.input_names() == ["date", "ticker", "close", "open", "high", "low", "adj_close", "volume"]
    assert info.signature.outputs.input_names() == ["date", "ticker", "score", "rank", "selected", "weight"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_registered_version_answers_from_the_prices_what_the_trained_model_would_hold_next(signal_run, algorithm):
    version = signal_run.tracked.model_versions[algorithm]
    chain = signal_run.chain

    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}")

    prices = chain.panel.prices.assign(date=chain.panel.prices["date"].dt.strftime("%Y-%m-%d"))
    answer = model.predict(prices)
    expected = runner.latest_portfolio(chain.features, chain.results[algorithm].model, signal_run.cfg.portfolio)
    pd.testing.assert_frame_equal(answer, expected)


# --- lineage --------------------------------------------------------------------------------------------

def test_the_parent_run_input_is_the_ingested_dataset_identified_by_its_content_digest(signal_run, client):
    manifest_digest = signal_run.chain.summary["data"]["content_digest"]

    [dataset_input] = client.get_run(signal_run.tracked.parent_run_id).inputs.dataset_inputs

    dataset = dataset_input.dataset
    assert dataset.digest
    assert manifest_digest.removeprefix("sha256:").startswith(dataset.digest)
    assert {tag.key: tag.value for tag in dataset_input.tags}["content_digest"] == manifest_digest
    assert json.loads(dataset.source)["uri"] == str(Path(signal_run.cfg.data).resolve())


def test_every_run_carries_the_code_version(signal_run, client):
    run_ids = [signal_run.tracked.parent_run_id, *signal_run.tracked.child_run_ids.values()]

    versions = {client.get_run(run_id).data.tags.get("code_version") for run_id in run_ids}

    assert len(versions) == 1
    assert versions.pop().startswith(__version__)


# --- registered versions --------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_registered_version_is_tagged_with_what_promotion_judges_it_by(signal_run, client, algorithm):
    block = signal_run.chain.summary["algorithms"][algorithm]

    tags = version_of(signal_run, algorithm, client).tags

    assert tags["algorithm"] == algorithm
    assert tags["data_digest"] == signal_run.chain.summary["data"]["content_digest"]
    assert float(tags["net_sharpe"]) == block["portfolio"]["net"]["sharpe"]
    assert float(tags["ic_tstat"]) == block["signal"]["ic_tstat"]
    assert float(tags["ic_hac_tstat"]) == block["signal"]["ic_hac_tstat"]  # the statistic promotion gates by default
    assert float(tags["excess_vs_equal_weight"]) == block["excess"]["equal_weight"]["ann_return"]
    assert RunConfig.model_validate_json(tags["config"]) == signal_run.cfg.with_algorithms([algorithm])


# --- promotion ------------------------------------------------------------------------------------------

def test_with_a_planted_signal_every_version_passes_the_gates_and_the_best_becomes_champion(signal_run, client):
    sharpe = {v: float(client.get_model_version(MODEL_NAME, v).tags["net_sharpe"])
              for v in signal_run.tracked.model_versions.values()}

    decision = signal_run.decision

    assert decision.promoted
    assert all(verdict["decision"] != "refused" for verdict in decision.candidates.values())
    assert sharpe[decision.champion_after] == max(sharpe.values())
    assert champion_version(client) == decision.champion_after


def test_the_champion_alias_loads_and_answers_its_input_example_with_a_fully_invested_book(signal_run):
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")

    answer = model.predict(model.input_example)

    assert set(answer["ticker"]) == set(model.input_example["ticker"])
    assert np.isfinite(answer["score"]).all()
    assert answer.loc[answer["selected"], "weight"].sum() == pytest.approx(1.0)


def test_promoting_the_same_parent_run_again_changes_nothing(signal_run, client):
    def registry_state():
        versions = {v.version: dict(v.tags) for v in client.search_model_versions(f"name='{MODEL_NAME}'")}
        return (client.get_registered_model(MODEL_NAME).aliases, versions,
                client.get_run(signal_run.tracked.parent_run_id).data.tags)

    def must_not_reevaluate(champion_json: str, settings_json: str) -> dict[str, float]:
        raise AssertionError("a repeated decision must not re-evaluate anything")

    before = registry_state()
    decision = promotion.promote(MODEL_NAME, signal_run.tracked.parent_run_id, signal_run.cfg.promotion,
                                 must_not_reevaluate, client)

    assert decision.to_dict() == signal_run.decision.to_dict()
    assert registry_state() == before


def test_a_chain_on_new_data_reevaluates_the_champion_there(signal_run, noise_run, client):
    digest = noise_run.chain.summary["data"]["content_digest"]

    tags = client.get_model_version(MODEL_NAME, signal_run.decision.champion_after).tags

    prefix = f"reevaluated.{digest.removeprefix('sha256:')[:12]}."
    assert {k.removeprefix(prefix) for k in tags if k.startswith(prefix)} == {
        "net_sharpe", "icir", "ic_tstat", "ic_hac_tstat", "excess_vs_equal_weight"}
    assert "re-evaluated on the current data" in noise_run.decision.reasons[0]


def test_reevaluation_measures_the_champions_config_on_the_new_data(signal_run, noise_run, client):
    champion = client.get_model_version(MODEL_NAME, signal_run.decision.champion_after)
    same_algorithm_trained_on_new_data = version_of(noise_run, champion.tags["algorithm"], client).tags
    prefix = f"reevaluated.{noise_run.chain.summary['data']['content_digest'][7:19]}."

    for key in ("net_sharpe", "ic_tstat", "ic_hac_tstat", "excess_vs_equal_weight"):
        assert float(champion.tags[prefix + key]) == pytest.approx(float(same_algorithm_trained_on_new_data[key])), key


def test_versions_failing_the_gates_on_new_data_do_not_replace_the_champion(signal_run, noise_run, client):
    decision = noise_run.decision

    assert not decision.promoted
    assert {verdict["decision"] for verdict in decision.candidates.values()} == {"refused"}
    assert decision.champion_before == decision.champion_after == signal_run.decision.champion_after
    assert champion_version(client) == signal_run.decision.champion_after


def test_the_same_model_evaluated_with_lower_assumed_costs_is_not_promoted_over_itself(signal_run, store):
    def ridge_at(cost_bps: float) -> RunConfig:
        return signal_run.cfg.with_algorithms(["ridge"]).model_copy(update={
            "portfolio": PortfolioConfig(cost_bps_per_side=cost_bps),
            "tracking": TrackingConfig(experiment="cost-tests", registered_model="cost-ranker")})

    decisions = []
    for cost_bps in (30.0, 0.0):  # same data, same model; only the assumed cost differs
        cfg, output = ridge_at(cost_bps), store / f"cost-{cost_bps:g}bps"
        decisions.append(runner.run_chain(cfg, output).decision)

    assert decisions[0].promoted  # the 30 bps version became champion
    assert not decisions[1].promoted


def test_summary_json_gains_the_mlflow_record_and_the_promotion_decision(signal_run):
    summary = signal_run.summary_json()

    assert summary["mlflow"]["parent_run_id"] == signal_run.tracked.parent_run_id
    assert summary["mlflow"]["child_run_ids"] == signal_run.tracked.child_run_ids
    assert summary["mlflow"]["model_versions"] == signal_run.tracked.model_versions
    assert summary["mlflow"]["registered_model"] == MODEL_NAME
    assert summary["promotion"] == signal_run.decision.to_dict()
    assert set(summary["algorithms"]) == set(ALGORITHMS)  # the report itself is kept


# --- tracking failure -----------------------------------------------------------------------------------

def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_tracking_server_raises_tracking_error_naming_the_uri_and_registers_nothing(
        signal_run, client, monkeypatch, tmp_path):
    dead_uri = f"http://127.0.0.1:{free_loopback_port()}"
    versions_before = len(client.search_model_versions(f"name='{MODEL_NAME}'"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead_uri)

    with pytest.raises(TrackingError) as failure:
        tracking.log_chain(signal_run.chain, signal_run.chain.features, signal_run.cfg, tmp_path)

    assert dead_uri in str(failure.value)
    assert "/health" in str(failure.value)  # the pre-flight check, not MLflow's retrying client, caught it
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == versions_before


def test_a_failure_while_logging_ends_the_runs_failed_and_registers_no_version(signal_run, client, monkeypatch):
    real_log_model = mlflow.pyfunc.log_model
    calls = []

    def log_model_failing_for_the_second_algorithm(*args, **kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real_log_model(*args, **kwargs)

    monkeypatch.setattr(mlflow.pyfunc, "log_model", log_model_failing_for_the_second_algorithm)
    versions_before = len(client.search_model_versions(f"name='{MODEL_NAME}'"))

    with pytest.raises(TrackingError, match="while logging the lasso child run: OSError: disk full"):
        tracking.log_chain(signal_run.chain, signal_run.chain.features, signal_run.cfg, signal_run.output)

    experiment = [signal_run.tracked.experiment_id]
    [parent] = [run for run in client.search_runs(experiment, "attributes.status = 'FAILED'")
                if "mlflow.parentRunId" not in run.data.tags]
    assert "logging the lasso child run" in parent.data.tags["failure"]
    children = client.search_runs(experiment, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {run.data.tags["algorithm"]: run.info.status for run in children} == {"ridge": "FAILED", "lasso": "FAILED"}
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == versions_before


# --- command line ---------------------------------------------------------------------------------------

CLI_MODEL = "cli-ranker"
CLI_CONFIG = f"""\
walk_forward:
  min_train_days: 252
benchmarks:
  random_seeds: 2
tracking:
  experiment: cli-tests
  registered_model: {CLI_MODEL}
"""


def run_cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@dataclass
class CliSetup:
    data: Path
    config: Path
    root: Path

    def run(self, output: str, *extra: str) -> tuple[int, str]:
        return run_cli(["run", "--data", str(self.data), "--config", str(self.config), "--algorithms", "ridge",
                        "--output", str(self.root / output), "--quiet", *extra])

    def parent_run_id(self, output: str) -> str:
        return json.loads((self.root / output / "summary.json").read_text())["mlflow"]["parent_run_id"]


@pytest.fixture(scope="module")
def cli(store) -> CliSetup:
    root = store / "cli"
    data = write_kaggle_daily(random_walk_panel(seed=0, signal_strength=0.003, **PANEL), root / "kaggle")
    config = root / "small.yaml"
    config.write_text(CLI_CONFIG)
    return CliSetup(data, config, root)


@pytest.fixture(scope="module")
def cli_first_run(cli) -> tuple[int, str]:
    return cli.run("first")


@pytest.fixture(scope="module")
def cli_second_run_not_promoted(cli, cli_first_run) -> tuple[int, str]:
    return cli.run("second", "--no-promote")


def test_cli_run_logs_to_mlflow_and_prints_the_promotion(cli_first_run, store):
    code, out = cli_first_run

    assert code == 0
    assert re.search(rf"^mlflow: sqlite:///{re.escape(str(store))}/mlflow.db  run \w+  registered {CLI_MODEL}: ridge v1$",
                     out, re.MULTILINE)
    assert re.search(r"^promotion: promoted v1 to champion: ", out, re.MULTILINE)


def test_cli_models_lists_the_registered_version_with_its_alias(cli, cli_first_run):
    code, out = run_cli(["models", "--config", str(cli.config)])

    assert code == 0
    assert re.search(r"^\s+1\s+champion\s+ridge\s", out, re.MULTILINE)


def test_cli_run_with_no_promote_registers_a_version_without_judging_it(cli, cli_second_run_not_promoted):
    code, out = cli_second_run_not_promoted

    assert code == 0
    assert f"registered {CLI_MODEL}: ridge v2" in out
    assert "promotion:" not in out
    assert json.loads((cli.root / "second" / "summary.json").read_text())["promotion"] is None


def test_cli_promote_without_a_run_id_judges_the_latest_parent_run(cli, cli_second_run_not_promoted, client):
    latest_parent = cli.parent_run_id("second")

    code, out = run_cli(["promote", "--config", str(cli.config)])

    assert code == 0
    assert out.startswith("promotion: champion unchanged (v1)")
    assert re.search(r"^\s+v2 ridge\s+not promoted\s", out, re.MULTILINE)
    assert client.get_run(latest_parent).data.tags["promotion.decision"] == "not promoted"


def test_an_injected_mlflow_run_id_becomes_the_parent_instead_of_a_second_one(signal_run, client, monkeypatch, tmp_path):
    """KFP's MLflow integration opens a run per pipeline run and passes MLFLOW_RUN_ID to the pods."""
    experiment_id = client.get_experiment_by_name(signal_run.cfg.tracking.experiment).experiment_id
    outer = client.create_run(experiment_id, run_name="kfp pipeline run").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", outer)

    tracked = tracking.log_chain(signal_run.chain, signal_run.chain.features, signal_run.cfg, tmp_path)

    assert tracked.parent_run_id == outer
    for child in tracked.child_run_ids.values():
        assert client.get_run(child).data.tags["mlflow.parentRunId"] == outer
