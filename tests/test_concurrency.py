"""One run at a time per tracking store and per output folder (locks.py, session.py).

A second run exits 2 naming the holder (pid, host, start time, lock file), or waits with
--wait-lock; a lock left by a killed process is taken over with a line saying so; and two first
runs started together in a fresh folder create the embedded store once: both succeed in turn and
mlflow.db is whole afterwards (MLflow's schema migration never runs twice at once).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from cli_runs import Workspace, write_market
from portfolio_mlops import locks
from portfolio_mlops.errors import ConfigError


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    data, config = write_market(tmp_path / "input")
    return Workspace(tmp_path / "user", data, config)


def test_a_held_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    path = tmp_path / "out.lock"
    with locks.hold(path, "the output folder out", command="first"):
        holder = json.loads(path.read_text())
        with pytest.raises(ConfigError) as refused:
            with locks.hold(path, "the output folder out"):
                pass
    message = str(refused.value)
    assert f"the output folder out is in use by pid {os.getpid()} on {socket.gethostname()}" in message
    assert holder["started"] in message and str(path) in message and "--wait-lock" in message
    assert not path.exists(), "a lock released normally leaves no file"


def test_a_waiting_run_gets_the_lock_when_the_holder_releases_it(tmp_path):
    path = tmp_path / "out.lock"
    released = threading.Event()
    ready = threading.Event()

    def hold_briefly():
        with locks.hold(path, "out"):
            ready.set()
            released.wait(5)

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    ready.wait(5)
    threading.Timer(0.5, released.set).start()
    with locks.hold(path, "out", wait=10) as mine:  # flock is per open file: a thread contends like a process
        assert mine["pid"] == os.getpid()
    holder.join()


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_line_saying_so(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    path = tmp_path / "mlflow.db.lock"
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00",
                                "command": "portfolio-mlops run"}))
    said = []
    with locks.hold(path, "the MLflow store", say=said.append) as holder:
        assert holder["pid"] == os.getpid()
    assert said == [f"took over the lock of the MLflow store left by pid {pid} on {socket.gethostname()} since "
                    f"2026-01-01T00:00:00+00:00 (portfolio-mlops run), which is no longer running ({path})"]


def test_a_run_into_an_output_folder_another_run_holds_exits_2_naming_the_holder(workspace):
    ws = workspace
    with locks.hold(locks.output_lock_path(ws.root / "out"), "the output folder", command="the test"):
        done = ws.run(ws.run_args("inprocess", "ridge", "out", "--no-tracking"))
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"portfolio-mlops run: error: the output folder {ws.root / 'out'} is in use by pid "
                           f"{os.getpid()} on {socket.gethostname()}"), line
    assert "Traceback" not in done.stderr
    assert not (ws.root / "out").exists()


def test_two_first_runs_at_once_in_a_fresh_folder_create_the_store_once_and_both_succeed(workspace):
    ws = workspace
    first = ws.start(ws.run_args("inprocess", "ridge", "out-a", "--wait-lock", "240"))
    second = ws.start(ws.run_args("inprocess", "ridge", "out-b", "--wait-lock", "240"))
    results = [(p, *p.communicate(timeout=300)) for p in (first, second)]

    for process, out, err in results:
        assert process.returncode == 0, err[-3000:]
    # The store is whole: one schema version, both parent runs finished, and a later command reads it.
    assert len(ws.query("select version_num from alembic_version")) == 1
    assert sorted(status for _, status, _ in ws.runs()) == ["FINISHED"] * 4  # 2 parents + 2 ridge children
    assert len(ws.versions()) == 2
    models = ws.run([str(ws.run_args()[0]), "models"])
    assert models.returncode == 0, models.stderr
