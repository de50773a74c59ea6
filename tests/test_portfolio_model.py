"""The registered prices-to-portfolio model: raw OHLCV rows in, the next portfolio out.

Real MLflow throughout (the session's embedded sqlite store, tests/conftest.py): one tracked chain on
25 synthetic tickers x 700 business days with a planted signal (ridge, top 5, inverse-volatility
weights) is logged, registered and promoted under a permissive policy, once for the module. The model
is then called as users call it: `mlflow.pyfunc.load_model` from the registry, `mlflow.models.predict`
with the local environment, `portfolio-mlops predict`, and `/invocations` of `portfolio-mlops serve`
running in-process under uvicorn on a free 127.0.0.1 port.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import uvicorn
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from portfolio_mlops import runner
from portfolio_mlops.cli import main
from portfolio_mlops.config import (BenchmarkConfig, ModelSpec, PortfolioConfig, PromotionPolicy, RunConfig,
                                   TrackingConfig, WalkForwardConfig)
from portfolio_mlops.features import LONGEST_LOOKBACK_DAYS
from portfolio_mlops.predict import request_rows
from portfolio_mlops.report import html_report
from portfolio_mlops.serving import AliasFollower, ServeSettings, ServingApp
from synthetic import random_walk_panel

MODEL_NAME = "portfolio-ranker"
TOP_N = 5


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("portfolio")
    (root / "data").mkdir()
    random_walk_panel(n_tickers=25, n_days=700, seed=3, signal_strength=0.002).to_parquet(
        root / "data" / "prices.parquet", index=False)
    cfg = RunConfig(
        data=str(root / "data"),
        walk_forward=WalkForwardConfig(min_train_days=252),
        benchmarks=BenchmarkConfig(random_seeds=1, factors=[]),
        models=[ModelSpec(algorithm="ridge", params={"alpha": 1.0})],
        portfolio=PortfolioConfig(top_n=TOP_N, weighting="inverse_vol"),
        tracking=TrackingConfig(experiment="portfolio-model-tests", registered_model=MODEL_NAME),
        # Permissive: the test is about what the champion answers, not whether it deserves the title.
        promotion=PromotionPolicy(min_ic_tstat=-1e9, min_excess_vs_equal_weight=-1e9),
    )
    chain = runner.run_chain(cfg, root / "report")  # tracked and promoted: cfg.tracking is on by default
    assert chain.decision.promoted
    return cfg, chain, chain.tracked, root


@pytest.fixture(scope="module")
def model(tracked):
    _, _, run, _ = tracked
    return mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{run.model_versions['ridge']}")


def _rows(chain, up_to: pd.Timestamp | None = None, last_days: int | None = None) -> pd.DataFrame:
    """The validated panel as a client would send it (ISO date strings), optionally cut."""
    prices = chain.panel.prices
    if up_to is not None:
        prices = prices[prices["date"] <= up_to]
    if last_days is not None:
        prices = prices[prices["date"].isin(np.sort(prices["date"].unique())[-last_days:])]
    return request_rows(prices).reset_index(drop=True)


# --- point in time --------------------------------------------------------------------------------------

def test_the_answer_for_date_t_from_rows_up_to_t_is_the_backtests_prediction_and_book_for_t(tracked, model):
    _, chain, _, _ = tracked
    result = chain.results["ridge"]
    holdings = chain.evaluation.holdings["ridge"]
    final_refit = pd.Timestamp(result.refits[-1]["decision_date"])
    # A decision the final model made (so the registered estimator is the one that made it) and traded.
    t = max(d for d in holdings["decision_date"].unique() if d >= final_refit)

    answer = model.predict(_rows(chain, up_to=t))

    made = result.predictions[result.predictions["date"] == t].set_index("ticker")["prediction"]
    assert (answer["date"] == t.strftime("%Y-%m-%d")).all()
    np.testing.assert_allclose(answer.set_index("ticker")["score"].reindex(made.index), made, rtol=1e-12, atol=1e-15)
    booked = holdings[holdings["decision_date"] == t].set_index("ticker")["weight"]
    held = answer[answer["selected"]].set_index("ticker")["weight"]
    assert sorted(held.index) == sorted(booked.index)
    np.testing.assert_allclose(held.reindex(booked.index), booked, rtol=1e-12)


def test_as_of_answers_for_an_earlier_date_from_the_rows_up_to_it_only(tracked, model):
    _, chain, _, _ = tracked
    t = chain.results["ridge"].predictions["date"].max() - pd.Timedelta(days=60)
    t = chain.panel.prices.loc[chain.panel.prices["date"] <= t, "date"].max()

    with_later_rows = model.predict(_rows(chain), params={"as_of": t.strftime("%Y-%m-%d")})

    pd.testing.assert_frame_equal(with_later_rows, model.predict(_rows(chain, up_to=t)))


def test_every_run_writes_the_latest_portfolio_which_the_registered_model_gives_from_the_raw_rows(tracked, model):
    _, chain, _, root = tracked
    written = pd.read_csv(root / "report" / "portfolio_ridge.csv")

    answer = model.predict(_rows(chain))

    assert written["date"].iloc[0] == chain.panel.manifest["end"]
    assert list(written["ticker"]) == list(answer["ticker"])
    np.testing.assert_allclose(written["weight"], answer["weight"], rtol=1e-5)
    assert written["selected"].sum() == TOP_N
    assert answer.loc[answer["selected"], "weight"].sum() == pytest.approx(1.0)
    assert list(answer["rank"]) == list(range(1, len(answer) + 1))


def test_a_short_request_of_just_the_lookback_is_answered(tracked, model):
    _, chain, _, _ = tracked

    answer = model.predict(_rows(chain, last_days=LONGEST_LOOKBACK_DAYS))

    assert answer["selected"].sum() == TOP_N and answer["date"].iloc[0] == chain.panel.manifest["end"]


def test_the_estimator_inside_the_model_loads_on_its_own_for_its_coefficients(tracked):
    _, chain, run, _ = tracked
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/{run.model_versions['ridge']}"))

    estimator = mlflow.sklearn.load_model(str(local / "artifacts" / "estimator"))

    np.testing.assert_allclose(estimator.coef_, chain.results["ridge"].model.coef_)


# --- how users call it ----------------------------------------------------------------------------------

def test_mlflow_models_predict_with_the_local_environment_returns_the_portfolio(tracked, model, tmp_path):
    _, chain, _, _ = tracked
    rows = _rows(chain, last_days=300)

    mlflow.models.predict(f"models:/{MODEL_NAME}@champion", rows, env_manager="local",
                          output_path=str(tmp_path / "answer.json"))

    answer = pd.DataFrame(json.loads((tmp_path / "answer.json").read_text())["predictions"])
    expected = model.predict(rows)
    assert list(answer["ticker"]) == list(expected["ticker"])
    np.testing.assert_allclose(answer["weight"], expected["weight"])


def test_the_logged_model_declares_raw_rows_in_the_portfolio_out_and_pins_this_package(tracked, model):
    _, _, run, _ = tracked
    signature = model.metadata.signature
    requirements = Path(mlflow.artifacts.download_artifacts(
        f"models:/{MODEL_NAME}/{run.model_versions['ridge']}/requirements.txt")).read_text()

    assert signature.inputs.required_input_names() == ["date", "ticker", "close"]
    assert signature.outputs.input_names() == ["date", "ticker", "score", "rank", "selected", "weight"]
    assert [p.name for p in signature.params] == ["as_of"]
    assert model.input_example["date"].nunique() >= LONGEST_LOOKBACK_DAYS
    assert "portfolio-mlops==" in requirements


# --- bad input ------------------------------------------------------------------------------------------

def _with(rows: pd.DataFrame, **changes) -> pd.DataFrame:
    rows = rows.copy()
    for column, (position, value) in changes.items():
        rows.loc[position, column] = value
    return rows


BAD_REQUESTS = {
    "missing column": (lambda r: r.drop(columns=["ticker"]), None, "ticker"),
    "too little history": (lambda r: r[r["date"] >= sorted(r["date"].unique())[-100]], None,
                           f"too little history: the features need {LONGEST_LOOKBACK_DAYS} trading days"),
    "unknown date format": (lambda r: _with(r, date=(7, "03/15/2007")), None, "expected a date like 2018-02-07, got '03/15/2007'"),
    "mixed date formats": (lambda r: r.assign(date=np.where(r.index % 2 == 0, r["date"], r["date"].str.replace("-", ""))),
                           None, "dates must all be ISO"),
    "duplicate rows": (lambda r: pd.concat([r, r.iloc[[5]]], ignore_index=True), None, "duplicate rows: "),
    "NaN price": (lambda r: _with(r, close=(3, np.nan)), None, "1 row(s) have no close price (NaN)"),
    "non-positive price": (lambda r: _with(r, close=(3, 0.0)), None, "1 row(s) have a price <= 0"),
    "unknown as_of": (lambda r: r, {"as_of": "1999-01-04"}, "as_of 1999-01-04 is not a date in the rows"),
    "malformed as_of": (lambda r: r, {"as_of": "last friday"}, "as_of: expected a date like 2018-02-07"),
    "a column the model needs is absent": (lambda r: r.drop(columns=["volume"]), None, "needs volume, absent in the rows"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_is_refused_as_an_invalid_parameter_naming_the_problem(tracked, model, case):
    _, chain, _, _ = tracked
    change, params, message = BAD_REQUESTS[case]

    with pytest.raises(MlflowException) as refused:
        model.predict(change(_rows(chain, last_days=300)), params=params)

    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
    assert message in refused.value.message


# --- portfolio-mlops predict ----------------------------------------------------------------------------

def _five_year_csv(prices: pd.DataFrame, path: Path) -> Path:
    """Kaggle 'all_stocks_5yr' layout: date,open,high,low,close,volume,Name."""
    frame = pd.DataFrame({"date": pd.DatetimeIndex(prices["date"]).strftime("%Y-%m-%d"), "open": prices["open"],
                          "high": prices["high"], "low": prices["low"], "close": prices["close"],
                          "volume": prices["volume"], "Name": prices["ticker"]})
    frame.to_csv(path, index=False)
    return path


def test_predict_prints_the_champions_portfolio_with_its_version_and_writes_it(tracked, model, tmp_path, capsys):
    _, chain, run, root = tracked

    code = main(["predict", "--data", str(root / "data"), "--model-uri", f"models:/{MODEL_NAME}@champion",
                 "--output", str(tmp_path / "portfolio.csv")])

    printed = capsys.readouterr().out
    written = pd.read_csv(tmp_path / "portfolio.csv")
    expected = model.predict(_rows(chain))
    assert code == 0
    assert f"-> v{run.model_versions['ridge']} (ridge)" in printed
    assert f"last date {chain.panel.manifest['end']}" in printed
    for ticker in expected.loc[expected["selected"], "ticker"]:
        assert f"\n{ticker} " in printed
    assert list(written["ticker"]) == list(expected["ticker"])
    np.testing.assert_allclose(written["score"], expected["score"])


def test_predict_writes_json_with_the_version_and_the_dates(tracked, tmp_path):
    _, chain, run, root = tracked

    assert main(["predict", "--data", str(root / "data"), "--model-uri", f"models:/{MODEL_NAME}/{run.model_versions['ridge']}",
                 "--output", str(tmp_path / "p.json")]) == 0

    written = json.loads((tmp_path / "p.json").read_text())
    assert written["version"] == run.model_versions["ridge"]
    assert written["data_last_date"] == written["decision_date"] == chain.panel.manifest["end"]
    assert sum(row["selected"] for row in written["portfolio"]) == TOP_N


BAD_PREDICTS = {
    "too little history": (lambda p: p[p["date"] >= sorted(p["date"].unique())[-100]], [], "too little history"),
    "unknown as_of": (lambda p: p, ["--as-of", "1999-01-04"], "as_of 1999-01-04 is not a date in the rows"),
    "conflicting duplicate rows": (lambda p: pd.concat([p, p.iloc[[5]].assign(close=p["close"].iloc[5] * 2)]), [],
                                   "conflicting duplicates"),
    "output neither csv nor json": (lambda p: p, ["--output", "portfolio.txt"], "expected a .csv or .json file name"),
}


@pytest.mark.parametrize("case", BAD_PREDICTS)
def test_predict_on_bad_input_exits_2_with_one_line_naming_the_problem(tracked, tmp_path, capsys, case):
    _, chain, _, _ = tracked
    change, extra, message = BAD_PREDICTS[case]
    data = _five_year_csv(change(chain.panel.prices), tmp_path / "all_stocks_5yr.csv")

    code = main(["predict", "--data", str(data), "--model-uri", f"models:/{MODEL_NAME}@champion", *extra])

    error = capsys.readouterr().err.strip()
    assert code == 2
    assert message in error
    assert len(error.splitlines()) == 1


def test_predict_on_a_file_with_a_bad_date_exits_2_naming_the_row(tracked, tmp_path, capsys):
    _, chain, _, _ = tracked
    data = _five_year_csv(chain.panel.prices, tmp_path / "all_stocks_5yr.csv")
    lines = data.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[0], "03/15/2007")
    data.write_text("\n".join(lines) + "\n")

    assert main(["predict", "--data", str(data), "--model-uri", f"models:/{MODEL_NAME}@champion"]) == 2

    assert "data row 3, field 'date': expected a date like 2018-02-07, got '03/15/2007'" in capsys.readouterr().err


def test_predict_without_a_champion_says_so_lists_the_versions_and_exits_2(tracked, capsys):
    _, _, run, _ = tracked
    source = MlflowClient().get_run(run.child_run_ids["ridge"]).data.tags["model_uri"]
    version = mlflow.register_model(source, "portfolio-ranker-without-champion").version

    code = main(["predict", "--model-uri", "models:/portfolio-ranker-without-champion@champion"])

    error = capsys.readouterr().err
    assert code == 2
    assert f"no version of 'portfolio-ranker-without-champion' has alias 'champion'; versions that exist: {version}" in error


# --- serving --------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(base: str, rows: pd.DataFrame, params: dict | None = None) -> tuple[int, dict, dict]:
    payload = {"dataframe_split": rows.to_dict(orient="split", index=False)}
    if params:
        payload["params"] = params
    request = urllib.request.Request(f"{base}/invocations", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), {k.lower(): v for k, v in error.headers.items()}


@pytest.fixture
def served(tracked, tmp_path):
    """`portfolio-mlops serve` on the champion, in-process under uvicorn on a free loopback port."""
    settings = ServeSettings(model_uri=f"models:/{MODEL_NAME}@champion", port=_free_port(), poll_seconds=0.2,
                             tracking_uri=mlflow.get_tracking_uri(), download_dir=tmp_path / "downloads")
    server = uvicorn.Server(uvicorn.Config(ServingApp(AliasFollower(settings)), host=settings.host, port=settings.port,
                                           lifespan="on", log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{settings.port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=5) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    else:
        raise AssertionError("the server did not load the champion within 60 s")
    yield base
    server.should_exit = True
    thread.join(timeout=15)


def test_invocations_with_raw_rows_return_the_portfolio_and_the_served_version(tracked, model, served):
    _, chain, run, _ = tracked
    rows = _rows(chain, last_days=300)

    status, body, headers = _post(served, rows)

    assert status == 200
    assert headers["x-model-version"] == run.model_versions["ridge"]
    answer = pd.DataFrame(body["predictions"])
    expected = model.predict(rows)
    assert list(answer["ticker"]) == list(expected["ticker"])
    np.testing.assert_allclose(answer["weight"], expected["weight"])
    assert answer.loc[answer["selected"], "weight"].sum() == pytest.approx(1.0)


def test_a_bad_request_gets_400_naming_the_problem_and_the_server_keeps_serving(tracked, served):
    _, chain, _, _ = tracked
    rows = _rows(chain, last_days=300)

    status, body, _ = _post(served, rows[rows["date"] >= sorted(rows["date"].unique())[-100]])
    as_of_status, as_of_body, _ = _post(served, rows, {"as_of": "1999-01-04"})
    after_status, after, _ = _post(served, rows)

    assert status == 400 and body["message"].startswith("too little history")
    assert as_of_status == 400 and as_of_body["message"].startswith("as_of 1999-01-04 is not a date in the rows")
    assert after_status == 200 and len(after["predictions"]) == rows["ticker"].nunique()
    # the reason alone: MLflow's wrapper echoes the whole request frame before it
    assert "Failed to predict data" not in body["message"] and len(body["message"]) < 400



def test_integer_volumes_as_json_and_csv_clients_send_them_are_answered_like_float_ones(tracked, model, served):
    # Share counts are integers in most files (all_stocks_5yr.csv): over HTTP MLflow parses each
    # column with the signature's type (double), so integer volumes must not be refused there.
    # (In-process pyfunc callers are different: MLflow refuses an int64 column for a double
    # field, see the module docstring of portfolio_model.)
    _, chain, _, _ = tracked
    rows = _rows(chain, last_days=300)
    integer_rows = rows.astype({"volume": "int64"})
    expected = model.predict(rows)

    json_status, json_body, _ = _post(served, integer_rows)
    csv_request = urllib.request.Request(f"{served}/invocations", data=integer_rows.to_csv(index=False).encode(),
                                         headers={"Content-Type": "text/csv"})
    with urllib.request.urlopen(csv_request, timeout=60) as response:
        csv_status, csv_body = response.status, json.loads(response.read())

    sent = integer_rows.to_dict(orient="split", index=False)["data"][0]
    assert isinstance(sent[list(integer_rows.columns).index("volume")], int)  # the JSON really carries integers
    for status, body in ((json_status, json_body), (csv_status, csv_body)):
        assert status == 200, body
        answer = pd.DataFrame(body["predictions"])
        assert list(answer["ticker"]) == list(expected["ticker"])
        np.testing.assert_allclose(answer["score"], expected["score"])
        np.testing.assert_allclose(answer["weight"], expected["weight"])


# --- the pipeline's HTML report -------------------------------------------------------------------------

def _report_summary(root: Path, **promotion_changes) -> dict:
    summary = json.loads((root / "report" / "summary.json").read_text())
    if promotion_changes.get("promotion", True) is None:
        summary["promotion"] = None
    else:
        summary["promotion"] = {**summary["promotion"], **promotion_changes}
    return summary


def test_the_html_report_shows_the_champions_next_picks(tracked):
    _, _, run, root = tracked
    book = pd.read_csv(root / "report" / "portfolio_ridge.csv")

    page = html_report(_report_summary(root), root / "report")

    assert f"Next portfolio: champion v{run.model_versions['ridge']} (ridge), decision at {book['date'].iloc[0]}" in page
    for ticker in book.loc[book["selected"], "ticker"]:
        assert f"<td>{ticker}</td>" in page
    assert f"<td>{book.loc[~book['selected'], 'ticker'].iloc[0]}</td>" not in page


def test_without_a_promotion_from_this_run_the_html_report_says_whose_picks_it_shows(tracked):
    _, _, run, root = tracked
    version = run.model_versions["ridge"]

    kept_older = html_report(_report_summary(root, promoted=False, champion_after="99", best_candidate=version),
                             root / "report")
    not_run = html_report(_report_summary(root, promotion=None), root / "report")

    assert f"Next portfolio: best candidate (not promoted; champion is v99 from an earlier run) v{version} (ridge)" in kept_older
    assert "Next portfolio: best candidate by net Sharpe (promotion not run) ridge" in not_run
