"""Helpers for tests that run the installed `portfolio-mlops` script as a user would, in a folder of
its own (embedded MLflow store, TMPDIR, output), and look at what it leaves behind: the store's
runs and versions (read with sqlite3, so polling never migrates or locks it) and step processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

SCRIPT = Path(sys.executable).with_name("portfolio-mlops")
SMALL_CONFIG = "walk_forward:\n  min_train_days: 150\nbenchmarks:\n  random_seeds: 3\n"


def write_market(root: Path, tickers: int = 24, days: int = 900) -> tuple[Path, Path]:
    """A Kaggle-daily folder of random walks (plus the index) and a fast config: (data, config)."""
    rng = np.random.default_rng(7)
    dates = pd.bdate_range("2015-01-01", periods=days)
    frames = []
    for i in range(tickers):
        close = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, days)))
        frames.append(pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), "Symbol": f"T{i:02d}", "Adj Close": close,
                                    "Close": close, "High": close * 1.005, "Low": close * 0.995, "Open": close,
                                    "Volume": rng.integers(100_000, 1_000_000, days)}))
    data = root / "kaggle"
    data.mkdir(parents=True)
    pd.concat(frames).to_csv(data / "sp500_stocks.csv", index=False)
    index = 2000 * np.exp(np.cumsum(rng.normal(0.0002, 0.01, days)))
    pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), "S&P500": index}).to_csv(data / "sp500_index.csv", index=False)
    config = root / "small.yaml"
    config.write_text(SMALL_CONFIG)
    return data, config


class Workspace:
    """One user's folder: the embedded store (mlflow.db), TMPDIR, outputs."""

    def __init__(self, root: Path, data: Path, config: Path):
        self.root, self.data, self.config = root, data, config
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.db = root / "mlflow.db"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTFOLIO_MLOPS_")}
        env.update({"MLFLOW_TRACKING_URI": f"sqlite:///{self.db}", "TMPDIR": str(self.tmp), "PYTHONUNBUFFERED": "1"})
        return env

    def run_args(self, engine: str = "inprocess", algorithms: str = "ridge", output: str = "out", *extra: str) -> list[str]:
        return [str(SCRIPT), "run", "--engine", engine, "--algorithms", algorithms, "--data", str(self.data),
                "--config", str(self.config), "--output", str(self.root / output), "--top-n", "5", *extra]

    def start(self, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen(args, cwd=self.root, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def run(self, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)

    # --- the store, read-only -------------------------------------------------------------------
    def query(self, sql: str, *params) -> list[tuple]:
        if not self.db.exists():
            return []
        connection = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return connection.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return []
        finally:
            connection.close()

    def runs(self) -> list[tuple[str, str, str | None]]:
        """(run id, status, failure tag) of every run."""
        return self.query("select r.run_uuid, r.status, t.value from runs r left join tags t "
                          "on t.run_uuid = r.run_uuid and t.key = 'failure'")

    def running(self) -> list[str]:
        return [run_id for run_id, status, _ in self.runs() if status == "RUNNING"]

    def versions(self) -> list[tuple[str, int]]:
        return self.query("select name, version from model_versions where current_stage != 'Deleted_Internal'")


STEP_SERVER = [b"-m", b"portfolio_mlops_kfp.pipelines.step_server"]


def _processes() -> Iterator[tuple[int, list[bytes], str]]:
    """(pid, argv, process name) of every process that can be read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield int(entry.name), (entry / "cmdline").read_bytes().split(b"\0"), (entry / "comm").read_text().strip()
        except OSError:
            continue


def _of_step_server(argv: list[bytes], owner: bytes) -> bool:
    """The argv of the step server of the CLI `owner`, which the steps it forks share."""
    return len(argv) > 4 and argv[1:3] == STEP_SERVER and argv[3] == owner


def step_processes(owner_pid: int, function: str | None = None) -> list[int]:
    """Pids of the step processes (one process group per pipeline step) started by the CLI `owner_pid`:
    the children the run's step server forked (named `step-<function>`, pipelines/step_server.py), or
    step guards (any other command, portfolio_mlops/step_guard.py)."""
    owner = str(owner_pid).encode()
    found = []
    for pid, argv, name in _processes():
        if _of_step_server(argv, owner):
            if name.startswith("step-") and (function is None or name == f"step-{function}"[:15]):
                found.append(pid)
        elif len(argv) > 3 and argv[1].endswith(b"step_guard.py") and argv[2] == owner:
            if function is None or b"--function_to_execute " + function.encode() in b" ".join(argv):
                found.append(pid)
    return found


def step_servers(owner_pid: int) -> list[int]:
    """Pids of the step servers (pipelines/step_server.py) of the CLI `owner_pid`."""
    owner = str(owner_pid).encode()
    return [pid for pid, argv, name in _processes() if _of_step_server(argv, owner) and not name.startswith("step-")]


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (a zombie waiting to be reaped does not count)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the run ended (exit {process.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
