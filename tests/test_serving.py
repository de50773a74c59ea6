"""`portfolio-mlops serve`: alive without a champion, ready once one exists, following the alias.

Real MLflow throughout: the session's embedded sqlite store (tests/conftest.py) as registry, real
sklearn/pyfunc models logged and registered, and the server itself running in-process under uvicorn
on a free 127.0.0.1 port, called over HTTP. Each test uses its own registered model name, so they
share the store without seeing each other's aliases. Poll intervals are 0.2 s to keep this fast; the
behaviour does not depend on the interval.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
import pandas as pd
import pytest
import uvicorn
from mlflow import MlflowClient
from sklearn.linear_model import Ridge

from portfolio_mlops.errors import ConfigError
from portfolio_mlops.serving import AliasFollower, ServeSettings, ServingApp, load_settings

POLL = 0.2
FEATURES = pd.DataFrame(np.random.default_rng(0).uniform(-0.5, 0.5, (40, 3)), columns=["ret_21", "mom_12_1", "vol_63"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of a GET or of an HTTP error answer alike."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def _predict(base: str, frame: pd.DataFrame) -> tuple[list[float], str]:
    """MLflow's dataframe_split protocol; returns the predictions and the X-Model-Version header."""
    body = json.dumps({"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}).encode()
    request = urllib.request.Request(f"{base}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["predictions"], response.headers["X-Model-Version"]


def _wait_for(condition, timeout: float, what: str):
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def _register(name: str, slope: float) -> tuple[str, Ridge]:
    """Log and register a Ridge fitted to slope * mom_12_1; returns (version, the fitted model)."""
    model = Ridge(alpha=1e-6).fit(FEATURES, FEATURES["mom_12_1"] * slope)
    mlflow.set_experiment("serving-tests")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    return str(mlflow.register_model(info.model_uri, name).version), model


class _BrokenOnLoad(mlflow.pyfunc.PythonModel):
    """A pyfunc whose loading fails, as a version with a missing dependency would."""

    def load_context(self, context):
        raise RuntimeError("this version cannot load (on purpose)")

    def predict(self, context, model_input: list[str]) -> list[str]:
        return model_input


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """serve(model_name, tracking_uri=None) -> base URL of a running server (stopped after the test)."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(model_name: str, tracking_uri: str | None = None) -> str:
        settings = ServeSettings(model_uri=f"models:/{model_name}@champion", port=_free_port(), poll_seconds=POLL,
                                 tracking_uri=tracking_uri or os.environ["MLFLOW_TRACKING_URI"],
                                 download_dir=tmp_path / "downloads")
        server = uvicorn.Server(uvicorn.Config(ServingApp(AliasFollower(settings)), host=settings.host,
                                               port=settings.port, lifespan="on", log_config=None))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        base = f"http://127.0.0.1:{settings.port}"
        _wait_for(lambda: server.started, 20, "uvicorn start")
        return base

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=15)


def _log_lines(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "portfolio_mlops.serving" and text in r.getMessage()]


def test_without_a_champion_the_server_stays_alive_not_ready_and_says_why_once(serve, caplog):
    caplog.set_level(logging.INFO, logger="portfolio_mlops.serving")
    _register("no-champion-ranker", 1.0)  # a version exists, but nothing has the alias
    base = serve("no-champion-ranker")
    time.sleep(POLL * 8)  # several polls

    health, _, _ = _get(f"{base}/health")
    ping, ping_body, _ = _get(f"{base}/ping")
    version, version_body, _ = _get(f"{base}/version")
    assert health == 200
    assert ping == 503
    assert ping_body["reason"] == "no version of no-champion-ranker has alias champion yet (versions: 1)"
    assert version == 503 and version_body["version"] is None
    with pytest.raises(urllib.error.HTTPError) as refused:
        _predict(base, FEATURES.head(2))
    assert refused.value.code == 503
    assert _log_lines(caplog, "has alias champion yet") == [
        "no version of no-champion-ranker has alias champion yet (versions: 1); not ready, polling every 0.2s"]


def test_a_champion_becomes_ready_and_an_alias_move_is_served_without_a_restart(serve, caplog):
    caplog.set_level(logging.INFO, logger="portfolio_mlops.serving")
    client = MlflowClient()
    base = serve("moving-ranker")
    assert _get(f"{base}/ping")[0] == 503

    v1, model_1 = _register("moving-ranker", 1.0)
    client.set_registered_model_alias("moving-ranker", "champion", v1)
    started = time.perf_counter()
    _wait_for(lambda: _get(f"{base}/ping")[0] == 200, POLL * 5 + 10, "ready after the first champion")
    first_ready = time.perf_counter() - started
    status, described, _ = _get(f"{base}/version")
    predictions, header = _predict(base, FEATURES.head(4))
    assert status == 200
    assert (described["registered_model"], described["alias"], described["version"]) == ("moving-ranker", "champion", v1)
    assert described["run_id"] == client.get_model_version("moving-ranker", v1).run_id
    assert header == v1
    np.testing.assert_allclose(predictions, model_1.predict(FEATURES.head(4)), rtol=1e-9)

    v2, model_2 = _register("moving-ranker", -3.0)
    client.set_registered_model_alias("moving-ranker", "champion", v2)
    started = time.perf_counter()
    _wait_for(lambda: _get(f"{base}/version")[1]["version"] == v2, POLL * 5 + 10, "the alias move to be served")
    moved = time.perf_counter() - started
    predictions, header = _predict(base, FEATURES.head(4))
    print(f"\nserving: first champion ready {first_ready:.2f}s after the alias was set; "
          f"alias move v{v1} -> v{v2} served after {moved:.2f}s (poll every {POLL}s)")
    assert header == v2
    np.testing.assert_allclose(predictions, model_2.predict(FEATURES.head(4)), rtol=1e-9)
    assert [line.split(",")[0] for line in _log_lines(caplog, "serving moving-ranker")] == [
        f"serving moving-ranker v{v1} (alias champion", f"serving moving-ranker v{v2} (alias champion"]


def test_a_version_that_fails_to_load_leaves_the_previous_one_serving(serve, caplog):
    caplog.set_level(logging.INFO, logger="portfolio_mlops.serving")
    client = MlflowClient()
    good, model = _register("half-broken-ranker", 2.0)
    client.set_registered_model_alias("half-broken-ranker", "champion", good)
    base = serve("half-broken-ranker")
    _wait_for(lambda: _get(f"{base}/ping")[0] == 200, 10, "ready")

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=_BrokenOnLoad(), pip_requirements=["mlflow"])
    broken = str(mlflow.register_model(info.model_uri, "half-broken-ranker").version)
    client.set_registered_model_alias("half-broken-ranker", "champion", broken)
    failures = _wait_for(lambda: _log_lines(caplog, f"could not load half-broken-ranker v{broken}"), 10, "the load failure")
    time.sleep(POLL * 5)  # it retries on later polls: still one line

    assert _get(f"{base}/version")[1]["version"] == good
    assert _predict(base, FEATURES.head(2))[1] == good
    assert len(_log_lines(caplog, f"could not load half-broken-ranker v{broken}")) == 1
    assert "this version cannot load (on purpose)" in failures[0] and f"still serving v{good}" in failures[0]


def test_an_unreachable_mlflow_keeps_the_server_alive_and_not_ready(serve, caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as `serve` sets it: the poll loop retries
    caplog.set_level(logging.INFO, logger="portfolio_mlops.serving")
    nobody = f"http://127.0.0.1:{_free_port()}"  # nothing listens here
    base = serve("any-ranker", tracking_uri=nobody)
    _wait_for(lambda: _log_lines(caplog, "cannot resolve"), 10, "the unreachable log line")
    time.sleep(POLL * 5)

    ping, body, _ = _get(f"{base}/ping")
    assert _get(f"{base}/health")[0] == 200
    assert ping == 503 and body["reason"].startswith(f"cannot resolve models:/any-ranker@champion at MLflow {nobody}")
    assert len(_log_lines(caplog, "cannot resolve")) == 1


def test_flags_override_environment_variables_which_override_defaults():
    environ = {"MODEL_URI": "models:/env-ranker@staging", "PORT": "9000", "POLL_SECONDS": "3"}
    settings = load_settings({"port": 9100, "host": None}, environ)
    assert (settings.registered_model, settings.alias) == ("env-ranker", "staging")
    assert (settings.port, settings.poll_seconds, settings.host) == (9100, 3.0, "127.0.0.1")
    assert load_settings({}, {}).model_uri == "models:/sp500-stock-ranker@champion"


@pytest.mark.parametrize(("environ", "flags", "named"), [
    ({"MODEL_URI": "models:/ranker/3"}, {}, "$MODEL_URI: expected models:/<registered model>@<alias>"),
    ({"POLL_SECONDS": "0"}, {}, "$POLL_SECONDS: Input should be greater than 0 (got '0')"),
    ({}, {"port": 70000}, "--port: Input should be less than or equal to 65535 (got 70000)"),
])
def test_a_bad_setting_is_refused_naming_the_variable_or_flag(environ, flags, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        load_settings(flags, environ)


def test_the_served_model_answers_without_pyarrow_as_it_does_with_it():
    """The serving image (and a user's environment built from the model's requirements) has no pyarrow:
    from raw rows to the portfolio, nothing on the served model's path may need it, and the answer is
    the one the training environment gives."""
    import subprocess
    import sys
    import textwrap

    program = textwrap.dedent("""
        import sys
        if sys.argv[1] == "blocked":  # as if pyarrow were not installed
            import importlib.abc

            class NoPyarrow(importlib.abc.MetaPathFinder):
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] == "pyarrow":
                        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

            sys.meta_path.insert(0, NoPyarrow())
        import portfolio_mlops.serving  # noqa: F401 - the server's own imports, too
        from sklearn.linear_model import Ridge
        from portfolio_mlops.config import RunConfig
        from portfolio_mlops.features import build_features
        from portfolio_mlops.portfolio_model import portfolio_from_rows
        sys.path.insert(0, sys.argv[2])
        from synthetic import random_walk_panel
        prices = random_walk_panel(n_tickers=12, n_days=400, seed=2)
        cfg = RunConfig()
        names = ["ret_21", "ret_5", "vol_21"]
        fitted = build_features(prices, cfg.features, cfg.labels).frame.dropna(subset=names + ["label"])
        model = Ridge().fit(fitted[names], fitted["label"])
        rows = prices.assign(date=prices["date"].dt.strftime("%Y-%m-%d"), ticker=prices["ticker"].astype(object))
        print(portfolio_from_rows(rows, cfg.with_algorithms(["ridge"]), model, tuple(names)).to_json())
    """)
    answers = {}
    for mode in ("blocked", "installed"):
        done = subprocess.run([sys.executable, "-c", program, mode, str(Path(__file__).parent)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        answers[mode] = done.stdout
    assert answers["blocked"] == answers["installed"]
