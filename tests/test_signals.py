"""SIGINT and SIGTERM stop a run within 5 s with exit status 130 / 143 and one line, with either
engine: every MLflow run it opened ends FAILED with the reason "interrupted", nothing is registered,
no temp folder, partial output or step process is left, and kfp.local never retries a step. SIGKILL
of the CLI takes its pipeline steps down with it, and the next command cleans what was left.

The runs are real (the installed script, the embedded store, kfp.local with step processes); the
signals are sent at set points found by watching the store (a RUNNING run) or /proc (a step process).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cli_runs import Workspace, group_alive, step_processes, step_servers, wait_for, write_market


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    data, config = write_market(tmp_path / "input")
    return Workspace(tmp_path / "user", data, config)


def _interrupt(process, signum: int) -> tuple[float, str, str]:
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()  # never leave a hung run behind for the rest of the suite
        process.communicate()
        raise
    return time.monotonic() - sent, out, err


def _assert_stopped_cleanly(ws: Workspace, process, signum: int, seconds: float, err: str, out: str) -> None:
    name = signal.Signals(signum).name
    assert process.returncode == 128 + signum, err[-3000:]
    assert seconds < 5.0, f"{name} took {seconds:.1f}s to stop the run"
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"portfolio-mlops run: interrupted by {name}: "), err[-3000:]
    assert "Traceback" not in err + out
    assert "Retrying" not in err + out  # kfp.local's retry path never starts on an interrupt
    assert ws.running() == [], "an MLflow run was left RUNNING"
    assert ws.versions() == [], "an interrupted run registered versions"
    for run_id, status, failure in ws.runs():
        assert status == "FAILED" and failure.startswith("interrupted"), (run_id, status, failure)
    assert list(ws.tmp.iterdir()) == [], "a temp folder was left in TMPDIR"
    assert sorted(p.name for p in ws.root.iterdir() if p.name.startswith("out")) == [], "partial output or lock left"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_inprocess_engine_logs_to_mlflow_ends_its_runs_failed_and_registers_nothing(workspace, signum):
    ws = workspace
    process = ws.start(ws.run_args("inprocess", "ridge,lasso"))
    wait_for(ws.running, 120, "an MLflow run to be open", process)

    seconds, out, err = _interrupt(process, signum)

    _assert_stopped_cleanly(ws, process, signum, seconds, err, out)
    assert ws.runs(), "the set point was inside tracking: at least one run was opened"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_training_with_the_kfp_engine_stops_every_step_without_retry(workspace, signum):
    ws = workspace
    process = ws.start(ws.run_args("kfp", "ridge,lasso"))
    steps = wait_for(lambda: step_processes(process.pid, "train"), 180, "a train step process", process)
    time.sleep(0.5)  # inside the step, not at its very first instruction

    seconds, out, err = _interrupt(process, signum)

    _assert_stopped_cleanly(ws, process, signum, seconds, err, out)
    # SIGKILLed processes take a moment to be torn down by the kernel after the CLI has gone.
    wait_for(lambda: not [pgid for pgid in steps if group_alive(pgid)], 2, "every step process to end")


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:  # it ended in between
        pass


def _promote_frozen_inside_its_mlflow_run(ws: Workspace, process) -> list[int]:
    """SIGSTOP the promote step at a moment its MLflow run is open, so that the kill lands inside it: the
    step keeps the run open for well under a second, and watching the store alone races its end.
    Returns the step's process groups (stopped; SIGKILL still ends them)."""
    def frozen() -> list[int]:
        steps = step_processes(process.pid, "promote")
        for pgid in steps:
            _signal_group(pgid, signal.SIGSTOP)
        if steps and ws.running():  # a run still RUNNING while the step cannot move: it is inside it
            return steps
        for pgid in steps:
            _signal_group(pgid, signal.SIGCONT)
        return []
    return wait_for(frozen, 240, "the promote step inside an open MLflow run", process)


def test_sigkill_of_the_cli_takes_its_steps_down_and_the_next_run_cleans_what_was_left(workspace):
    ws = workspace
    process = ws.start(ws.run_args("kfp", "ridge"))
    steps = _promote_frozen_inside_its_mlflow_run(ws, process)
    assert steps, "the promote step runs as its own process group"
    servers = step_servers(process.pid)
    assert servers, "the run forks its steps from a step server"

    process.kill()
    process.communicate(timeout=30)

    wait_for(lambda: not [pgid for pgid in steps if group_alive(pgid)], 5, "the step processes to die with the CLI")
    wait_for(lambda: not step_servers(process.pid), 5, "the step server to die with the CLI")
    assert ws.running(), "the killed step left its MLflow run RUNNING (the next run must close it)"
    left = [p for p in ws.tmp.iterdir() if p.name.startswith("portfolio-mlops-kfp-")]
    assert left, "the killed CLI could not remove its kfp work folder (the next run must)"

    done = ws.run(ws.run_args("inprocess", "ridge"))

    assert done.returncode == 0, done.stderr[-3000:]
    assert ws.running() == []
    assert [p for p in ws.tmp.iterdir() if p.name.startswith("portfolio-mlops-kfp-")] == []
    assert "took over the lock of the output folder" in done.stderr
    assert re.search(r"closed [12] MLflow run\(s\) FAILED that a killed earlier run left RUNNING", done.stderr)  # parent (+ child)
    assert f"removed {left[0]}, left by an earlier run" in done.stderr
    assert sorted(p.name for p in ws.root.iterdir() if p.name.startswith("out")) == ["out"]


def _python(code: str, timeout: float = 30) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)
    return done, time.monotonic() - started


def test_a_signal_inside_a_deferred_block_waits_for_its_next_checkpoint():
    """Database writes are not cut in the middle: the signal is raised between them, not inside one."""
    done, _ = _python("""
        import os, signal
        from portfolio_mlops import interrupts
        with interrupts.handle_signals():
            try:
                with interrupts.deferred():
                    os.kill(os.getpid(), signal.SIGTERM)
                    print("the write in progress finished")
                    interrupts.raise_if_interrupted()
                    print("never: the checkpoint raises")
            except interrupts.Interrupted as exc:
                print("raised at the checkpoint", exc.signum)
    """)
    assert done.stdout.splitlines() == ["the write in progress finished", f"raised at the checkpoint {signal.SIGTERM}"], done.stderr


def test_a_deferred_block_without_a_checkpoint_raises_when_it_ends():
    done, _ = _python("""
        import os, signal
        from portfolio_mlops import interrupts
        with interrupts.handle_signals():
            try:
                with interrupts.deferred():
                    with interrupts.deferred():
                        os.kill(os.getpid(), signal.SIGINT)
                    print("inner block ended, outer still deferred")
                print("never")
            except interrupts.Interrupted as exc:
                print("raised at the end", exc.signum)
    """)
    assert done.stdout.splitlines() == ["inner block ended, outer still deferred", f"raised at the end {signal.SIGINT}"], done.stderr


def test_a_cleanup_that_hangs_after_a_signal_is_cut_short_by_the_watchdog():
    """The way out is bounded: a cleanup stuck on a lock or a silent server does not keep the user waiting."""
    done, seconds = _python("""
        import os, signal, time
        from portfolio_mlops import interrupts
        interrupts.CLEANUP_BUDGET_S = 0.5
        with interrupts.handle_signals():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)
            except interrupts.Interrupted:
                time.sleep(30)  # a cleanup that never finishes
    """)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert seconds < 10
    assert "interrupted by SIGTERM: the cleanup did not finish within 0.5 s; exiting now" in done.stderr
