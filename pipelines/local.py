"""Run the training pipeline on this machine with kfp.local (every step a process, or a container)."""

import builtins
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, TextIO

from portfolio_mlops.algorithms import ALGORITHMS
from portfolio_mlops_kfp.pipelines.step_server import StepServer, StepServerError, kfp_launch, preload_modules
# pid and host of the CLI that owns a work folder in its OWNER_MARKER; the next run removes it if dead
from portfolio_mlops.session import KFP_WORK_PREFIX as WORK_PREFIX, OWNER_MARKER  # noqa: E402


_server: Optional[StepServer] = None  # the run's step server (run_local), if it has one


def run_step_process(full_command: List[str], env_vars: Optional[Dict[str, str]] = None) -> int:
    """Stands in for kfp.local.subprocess_task_handler.run_local_subprocess (same output, same result).

    A step of our lightweight Python components is forked by the run's step server (step_server.py:
    its libraries are imported once per run, not once per step); any other command runs under
    portfolio_mlops/step_guard.py. Either way each step is its own process group that dies with this
    process even on SIGKILL (parent-death signals), and a SIGINT or SIGTERM here stops every step
    group at once (interrupts.stop_steps). After an interrupt this raises `Interrupted` instead of
    returning a failure, so kfp.local's retry loop (which retries only a step that returned a failure,
    after a sleep) never starts another attempt.
    """
    from portfolio_mlops import interrupts, step_guard

    interrupts.raise_if_interrupted("before a pipeline step")
    env = {**os.environ, **(env_vars or {})}
    launch = kfp_launch(full_command) if _server is not None and _server.serves(env) else None
    process: Any = None
    if launch:
        try:
            process = _server.start(*launch, env=env, cwd=os.getcwd())
        except StepServerError as exc:  # the step never ran (no pid came): run it in a fresh process
            print(f"step server: {exc}; this step runs in a fresh process", file=sys.stderr)
    if process is None:
        guarded = [sys.executable, step_guard.__file__, str(os.getpid()), "--", *full_command]
        process = subprocess.Popen(guarded, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                   env=env, start_new_session=True)
    with process:
        flag = "--function_to_execute"  # the component's name, for the interrupt line
        step = full_command[full_command.index(flag) + 1] if flag in full_command else ""
        interrupts.register_step(process.pid, step)  # its session id is its pid: the group to signal
        try:
            if process.stdout:
                for line in iter(process.stdout.readline, ""):
                    print(line, end="")
                print("\n")
            code = process.wait()
        finally:
            interrupts.unregister_step(process.pid)
    interrupts.raise_if_interrupted("during a pipeline step")
    return code


@contextmanager
def guarded_steps() -> Iterator[None]:
    """Run kfp.local's subprocess steps through run_step_process for the block."""
    from kfp.local import subprocess_task_handler

    original = subprocess_task_handler.run_local_subprocess
    subprocess_task_handler.run_local_subprocess = run_step_process
    try:
        yield
    finally:
        subprocess_task_handler.run_local_subprocess = original


ANSI = re.compile(r"\x1b\[[0-9;]*m")
# kfp.local's own log lines, and the one-line summary each of our components prints last.
TASK_STARTED = re.compile(r"Executing task '([^']+)'")
TASK_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
TASK_RETRY = re.compile(r"Task '?([^' ]+)'? failed \(attempt (\d+)/(\d+)\)\. Retrying in ([\d.]+)s")
STEP_ERROR = re.compile(r"^\s*(configure|ingest|features|train|promote): error \(exit status (\d)\): (.*)$")
FIGURES = [  # (step, pattern, how to show it)
    ("ingest", re.compile(r"data quality \((\S+)\): [\d,]+ rows in, ([\d,]+) kept; \d+ tickers in, (\d+) kept; (\S+ \.\. \S+)"),
     lambda m: f"{m[3]} tickers, {m[2]} rows, {m[4]}"),
    ("features", re.compile(r"([\d,]+) samples x (\d+) features"), lambda m: f"{m[1]} samples x {m[2]} features"),
    ("train", re.compile(rf"^\s*({'|'.join(map(re.escape, ALGORITHMS))}): (\d+) refits, .*?ic_mean (\S+?),.*?net_sharpe (\S+?),"),
     lambda m: f"{m[1]}: {m[2]} refits, IC {float(m[3]):.4f}, net Sharpe {float(m[4]):.2f}"),
    ("promote", re.compile(r"^\s*(promotion: .*)$"), lambda m: m[1]),
]


class StepConsole(io.TextIOBase):
    """Stands in for sys.stdout and sys.stderr during a kfp.local run.

    Every line (kfp.local's logs, its warnings, the steps' output) goes to the log file; the console
    gets one line per finished step - name, status, seconds, one key figure - and a line per retry or
    failure. With verbose, the log lines are also echoed to the console (colour codes removed).
    """

    def __init__(self, log: TextIO, console: TextIO | None, verbose: bool = False):
        self.log, self.console, self.verbose = log, console, verbose
        self.pending = ""
        self.lock = threading.RLock()  # two steps run in parallel threads
        self.started: dict[str, list[float]] = {}
        self.figures: dict[str, list[str]] = {}
        self.failures: list[tuple[str, int, str]] = []  # (step, exit status, message) of failed steps

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            self.pending += text
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                self._line(ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def _say(self, text: str) -> None:
        if self.console is not None:  # not print(): kfp.local's indenting print writes its indent to sys.stdout (us)
            self.console.write(text + "\n")
            self.console.flush()

    def _progress(self, text: str) -> None:
        if not self.verbose:  # verbose echoes every line already
            self._say(text)

    def _line(self, line: str) -> None:
        self.log.write(line + "\n")
        if self.verbose:
            self._say(line)
        if match := TASK_STARTED.search(line):
            self.started.setdefault(match[1], []).append(time.perf_counter())
        elif (match := TASK_FINISHED.search(line)) and match[1] != "train":
            step, status = match[1], match[2]
            began = (self.started.get(step) or [time.perf_counter()]).pop(0)
            figure = (self.figures.get(step) or [""]).pop(0)
            self._progress(f"[{step}] {'done' if status == 'SUCCESS' else status} in {time.perf_counter() - began:.1f}s"
                           + (f"  {figure}" if figure and status == "SUCCESS" else ""))
        elif match := TASK_RETRY.search(line):
            self._progress(f"[{match[1]}] failed (attempt {match[2]} of {match[3]}); retrying in {float(match[4]):.0f}s")
        elif match := STEP_ERROR.search(line):
            self.failures.append((match[1], int(match[2]), match[3]))
        else:
            for step, pattern, show in FIGURES:
                if found := pattern.search(line):
                    if step == "train":
                        # The train tasks run in parallel threads, and kfp.local's "finished" line of one of
                        # them can be lost (each task swaps the root log handlers); the figure line is the
                        # step's last output, so it marks the end (start times are taken in order).
                        began = (self.started.get("train") or [time.perf_counter()]).pop(0)
                        self._progress(f"[train] done in {time.perf_counter() - began:.1f}s  {show(found)}")
                    else:
                        self.figures.setdefault(step, []).append(show(found))
                    break


@contextmanager
def console_to_log(log_path: Path, verbose: bool = False, progress: bool = True) -> Iterator[StepConsole]:
    """Route this process's stdout and stderr (kfp.local, warnings, the steps) through a StepConsole."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        console = StepConsole(log, sys.stderr if progress or verbose else None, verbose)
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = console
        try:
            yield console
        finally:
            sys.stdout, sys.stderr = saved
            if console.pending:
                console._line(ANSI.sub("", console.pending))


# What the steps import later, inside the functions they call (tests/step_imports.RUNTIME): walk-forward
# training (scikit-learn), tracking and registration (MLflow, skops).
LATER_IMPORTS = ["portfolio_mlops.walk_forward", "sklearn.ensemble", "portfolio_mlops.tracking",
                 "portfolio_mlops.promotion", "mlflow", "skops.io"]


def run_preload() -> list[str]:
    """What the run's step server imports: what the pipeline's step bodies import, then LATER_IMPORTS."""
    from portfolio_mlops_kfp.pipelines import training

    steps = [training.configure, training.ingest, training.features, training.train, training.promote]
    return preload_modules([step.python_func for step in steps]) + LATER_IMPORTS


@contextmanager
def step_server(log_path: Path) -> Iterator[None]:
    """A step server (step_server.py) for the block's steps, preloading run_preload()."""
    global _server
    _server = StepServer(run_preload(), log_path, dict(os.environ))
    try:
        yield
    finally:
        server, _server = _server, None
        server.close()
        if log_path.exists():  # its own lines ("preloaded ..."; a module it could not import) go to the run's log
            print(log_path.read_text(encoding="utf-8", errors="replace").rstrip(), file=sys.stderr)


@contextmanager
def local_session(pipeline_root: str | Path, runner: Any = None) -> Iterator[None]:
    """kfp.local.init with a clean exit.

    kfp.local indents print() while a task runs by swapping builtins.print; with two tasks in parallel
    threads the swaps interleave and an indenting print can outlive the run, so it is restored here.
    """
    import kfp.local

    original_print = builtins.print
    kfp.local.init(runner=runner or kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    try:
        yield
    finally:
        builtins.print = original_print


def run_local(params: dict[str, Any], output_dir: str | Path, work_dir: str | Path | None = None,
              keep_work_dir: bool = False, runner: Any = None, verbose: bool = False,
              progress: bool = True, step_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the pipeline; copy the report folder to `output_dir`. Returns {decision, seconds, work_dir, log}.

    kfp.local leaves per-task scratch files in TMPDIR, so TMPDIR points into the work folder for the
    run and everything is removed afterwards (unless keep_work_dir).
    kfp.local's logs and warnings and the steps' output go to `output_dir`/pipeline.log (also when a
    step fails); the console (stderr) gets one line per step (StepConsole) unless not `progress`, or
    everything with `verbose`.
    A failed step raises StepFailedError with the step's own error line and its exit status.
    `step_env`: variables the step processes get (set in this process's environment for the run).
    """
    from portfolio_mlops.session import clean_stale_folders, owner_marker
    from portfolio_mlops_kfp.pipelines.training import training_pipeline

    clean_stale_folders(tempfile.gettempdir(), WORK_PREFIX, OWNER_MARKER)  # what a killed run left
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix=WORK_PREFIX))
    (work / OWNER_MARKER).write_text(json.dumps(owner_marker()), encoding="utf-8")
    scratch = work / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    saved_env = {name: os.environ.get(name) for name in ["TMPDIR", *(step_env or {})]}
    os.environ.update({**(step_env or {}), "TMPDIR": str(scratch)})
    tempfile.tempdir = None  # re-read TMPDIR
    started = time.perf_counter()
    log_path = work / "pipeline.log"
    destination = Path(output_dir)
    try:
        try:
            # Containers (a DockerRunner) start from their images: a step server only forks processes here.
            served = step_server(work / "step-server.log") if runner is None else nullcontext()
            with console_to_log(log_path, verbose, progress) as console, local_session(work / "pipeline_root", runner), \
                    guarded_steps(), served:
                outputs = training_pipeline(**params)
        except RuntimeError as exc:  # kfp.local: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
            if "finished with status FAILURE" not in ANSI.sub("", str(exc)):
                raise
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copy2(log_path, destination / "pipeline.log")
            raise _step_failure(console, str(exc), destination / "pipeline.log") from None
        seconds = time.perf_counter() - started
        if destination.exists():
            shutil.rmtree(destination)
        shutil.copytree(outputs.outputs["report"].path, destination)
        shutil.copy2(log_path, destination / "pipeline.log")
        return {"decision": outputs.outputs["decision"], "seconds": seconds, "work_dir": str(work),
                "log": str(destination / "pipeline.log")}
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        tempfile.tempdir = None
        if not keep_work_dir:
            shutil.rmtree(work, ignore_errors=True)


def _step_failure(console: StepConsole, kfp_message: str, log: Path):
    """The failed step's own error line (errors.step_errors) and exit status, else kfp.local's message."""
    from portfolio_mlops.errors import StepFailedError

    if console.failures:
        step, code, message = console.failures[0]
        return StepFailedError(f"step {step}: {message} (log: {log})", code)
    failed = re.findall(r"'([^']+)'", ANSI.sub("", kfp_message))
    return StepFailedError(f"step {failed[-1] if failed else '?'} failed; see {log}", 1)
