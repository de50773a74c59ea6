"""The step server (pipelines/step_server.py) runs a kfp.local step as kfp's own command would - same
outputs, exit status, output stream, environment and working folder - and keeps a guarded step's
guarantees: its own process group, killed whole by SIGTERM, and gone when the CLI is SIGKILLed.

Each test compares with or drives real processes: kfp's `sh -ec` launch command (from the component
spec kfp.local runs, python3 replaced by this interpreter as kfp.local does) and a real server.
(No `from __future__ import annotations`: kfp reads the component's real annotation objects.)
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kfp import dsl
from kfp.local import subprocess_task_handler

from cli_runs import group_alive, wait_for
from portfolio_mlops_kfp.pipelines import training
from portfolio_mlops_kfp.pipelines.local import run_preload
from portfolio_mlops_kfp.pipelines.step_server import StepServer, StepServerError, kfp_launch, preload_modules


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def probe(mode: str, out: dsl.Output[dsl.Dataset]):
    """Writes what it sees; fails as asked."""
    import json
    import os
    import sys
    import tempfile

    import sklearn  # noqa: F401 - as a train step: it sets KMP_* variables when it loads

    seen = {"cwd": os.getcwd(), "tmp": tempfile.gettempdir(), "marker": os.environ.get("STEP_MARKER"),
            "runtime": os.environ.get("_KFP_RUNTIME"), "argv0": sys.argv[0], "path0": sys.path[0],
            "kmp": os.environ.get("KMP_DUPLICATE_LIB_OK")}
    with open(out.path, "w") as handle:
        json.dump(seen, handle)
    print("probe says hello")
    if mode == "raise":
        raise ValueError("bad input in the probe")
    if mode == "exit2":
        print("probe: error (exit status 2): refused", file=sys.stderr)
        sys.exit(2)
    if mode == "nap":
        import time

        time.sleep(1.5)
    if mode == "sleep":
        import subprocess
        import time

        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(f"grandchild {child.pid}", flush=True)
        time.sleep(60)


def launch(component, tmp_path: Path, **inputs) -> tuple[list[str], Path]:
    """kfp.local's full command for `component` (as SubprocessRunner builds it) and its output file."""
    spec = component.component_spec.implementation.container
    out = tmp_path / "out"
    executor_input = {"inputs": {"parameterValues": inputs},
                      "outputs": {"artifacts": {"out": {"artifacts": [{"name": "out", "type": {"schemaTitle": "system.Dataset"},
                                                                        "uri": str(out), "metadata": {}}]}},
                                  "outputFile": str(tmp_path / "executor_output.json")}}
    args = ["--executor_input", json.dumps(executor_input), "--function_to_execute", component.name]
    command = subprocess_task_handler.replace_python_executable([*spec.command, *args], sys.executable)
    return command, out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Preloads what `portfolio-mlops run` preloads (and the probe's imports): the forks below come from a
    server holding what a real one holds (pandas, pyarrow's allocator thread, scikit-learn and SciPy with
    their OpenBLAS pools, MLflow)."""
    preload = preload_modules([probe.python_func]) + run_preload()
    served = StepServer(preload, tmp_path_factory.mktemp("server") / "server.log", dict(os.environ))
    yield served
    served.close()


def run_served(server: StepServer, command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    with server.start(*kfp_launch(command), env=env, cwd=str(cwd)) as step:
        output = step.stdout.read()
    return step.wait(), output


def run_kfp_command(command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    done = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return done.returncode, done.stdout


def test_kfp_launch_recognises_the_command_kfp_local_runs_for_every_pipeline_step(tmp_path):
    for component in (training.configure, training.ingest, training.features, training.train, training.promote):
        command, _ = launch(component, tmp_path)
        source, arguments = kfp_launch(command)
        assert f"def {component.name}(" in source
        assert arguments[-2:] == ["--function_to_execute", component.name]


def test_anything_else_is_not_a_kfp_launch_and_runs_as_its_own_command(tmp_path):
    command, _ = launch(probe, tmp_path)
    assert kfp_launch(["python3", "-c", "print(1)"]) is None
    assert kfp_launch([command[0], command[1], command[2].replace("executor_main", "other_main"), *command[3:]]) is None
    raw = [*probe.component_spec.implementation.container.command, *command[4:]]  # python3, not this interpreter
    assert kfp_launch(raw) is None
    assert kfp_launch(subprocess_task_handler.replace_python_executable(raw, "/usr/bin/python3.9")) is None


def test_the_preload_list_is_what_the_step_bodies_import():
    modules = preload_modules([training.train.python_func, training.promote.python_func])
    assert modules[0] == "kfp.dsl.executor_main"
    assert {"portfolio_mlops.runner", "portfolio_mlops.evaluation", "portfolio_mlops.report"} <= set(modules)
    assert len(modules) == len(set(modules))


@pytest.mark.parametrize("mode, code", [("ok", 0), ("raise", 1), ("exit2", 2)])
def test_a_served_step_does_what_kfps_own_command_does(server, tmp_path, mode, code):
    env = {**os.environ, "STEP_MARKER": "from-the-request", "TMPDIR": str(tmp_path)}
    work = tmp_path / "cwd"
    work.mkdir()
    results = {}
    for how, runner in (("kfp", run_kfp_command), ("served", lambda c, e, w: run_served(server, c, e, w))):
        folder = tmp_path / how
        folder.mkdir()
        command, out = launch(probe, folder, mode=mode)
        returned, output = runner(command, env, work)
        results[how] = (returned, json.loads(out.read_text()), output)

    (kfp_code, kfp_seen, kfp_output), (code_served, seen, output) = results["kfp"], results["served"]
    assert kfp_code == code_served == code, output
    # sys.path[0]: the folder kfp wrote the component to (`mktemp -d` / tempfile.mkdtemp in TMPDIR)
    assert Path(seen.pop("path0")).parent == Path(kfp_seen.pop("path0")).parent == tmp_path
    assert seen == kfp_seen == {"cwd": str(work), "tmp": str(tmp_path), "marker": "from-the-request",
                                "runtime": "true", "argv0": kfp_seen["argv0"], "kmp": "True"}
    assert kfp_seen["argv0"].endswith("kfp/dsl/executor_main.py")
    assert "probe says hello" in output and "probe says hello" in kfp_output
    if mode == "raise":
        assert "Traceback" in output and "ValueError: bad input in the probe" in output
    if mode == "exit2":
        assert "probe: error (exit status 2): refused" in output
    assert "Wrote executor output file" in output or code != 0  # kfp's executor logs reach the stream


def test_sigterm_to_a_served_step_kills_its_whole_group_and_names_it_by_its_function(server, tmp_path):
    command, _ = launch(probe, tmp_path, mode="sleep")
    with server.start(*kfp_launch(command), env=dict(os.environ), cwd=str(tmp_path)) as step:
        line = ""
        while not line.startswith("grandchild"):
            line = step.stdout.readline()
            assert line, "the step ended before starting its grandchild"
        grandchild = int(line.split()[1])
        assert Path(f"/proc/{step.pid}/comm").read_text().strip() == "step-probe"
        assert os.getpgid(step.pid) == step.pid == os.getpgid(grandchild)  # its own group, the grandchild in it

        os.killpg(step.pid, signal.SIGTERM)  # what interrupts.stop_steps sends

        assert step.wait() == 128 + signal.SIGKILL
    wait_for(lambda: not group_alive(step.pid), 5, "the step's process group to end")


OWNER = """
import os, sys, time
from pathlib import Path
from portfolio_mlops_kfp.pipelines.step_server import StepServer, kfp_launch
command = {command!r}
server = StepServer([], Path({log!r}), dict(os.environ))
step = server.start(*kfp_launch(command), env=dict(os.environ), cwd={cwd!r})
print(server.process.pid, step.pid, flush=True)
for line in step.stdout:
    print(line, end="", flush=True)
"""


def test_sigkill_of_the_owner_takes_the_server_and_its_steps_down(tmp_path):
    command, _ = launch(probe, tmp_path, mode="sleep")
    script = OWNER.format(command=command, log=str(tmp_path / "server.log"), cwd=str(tmp_path))
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True)
    server_pid, step_pid = map(int, owner.stdout.readline().split())
    line = ""
    while not line.startswith("grandchild"):
        line = owner.stdout.readline()
        assert line, "the owner ended before its step started a grandchild"
    assert group_alive(step_pid)

    owner.kill()
    owner.wait()

    wait_for(lambda: not group_alive(step_pid) and not group_alive(server_pid), 5,
             "the step server and the step's group to die with their owner")


def test_closing_the_server_ends_it_and_a_step_still_running(tmp_path):
    command, _ = launch(probe, tmp_path, mode="sleep")
    server = StepServer([], tmp_path / "server.log", dict(os.environ))
    step = server.start(*kfp_launch(command), env=dict(os.environ), cwd=str(tmp_path))
    assert step.stdout.readline()  # running
    started = time.monotonic()

    server.close()

    assert server.process.returncode == 0 and time.monotonic() - started < 5
    wait_for(lambda: not group_alive(step.pid), 5, "the running step to be killed with its server")
    step.stdout.close()


def test_the_run_preloads_what_every_step_imports_later_too():
    """pipelines/local.py preloads the steps' bodies' imports and LATER_IMPORTS: together they must load
    every module the steps import inside the functions they call (tests/step_imports.RUNTIME)."""
    from step_imports import RUNTIME

    preload = run_preload()
    wanted = sorted({module for modules in RUNTIME.values() for module in modules})
    code = (f"import sys\nfor m in {preload!r}: __import__(m)\n"
            f"print([m for m in {wanted!r} if m not in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "_KFP_RUNTIME": "true"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"imported later but not preloaded: {done.stdout}"


def test_two_steps_at_once_each_get_their_own_stream_and_status_and_hold_nothing_of_the_other(server, tmp_path):
    """The first ends while the second still runs: its stream must end then (a pipe end inherited by the
    second would keep it open, and the CLI's reader would wait for the second)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    short, _ = launch(probe, tmp_path / "a", mode="nap")
    long, _ = launch(probe, tmp_path / "b", mode="sleep")
    first = server.start(*kfp_launch(short), env=dict(os.environ), cwd=str(tmp_path))
    second = server.start(*kfp_launch(long), env=dict(os.environ), cwd=str(tmp_path))
    try:
        assert first.pid != second.pid
        output = first.stdout.read()  # returns at the first step's end, not the second's
        assert first.wait() == 0
        assert "probe says hello" in output and "grandchild" not in output
        assert group_alive(second.pid)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.stdout.close()
    assert second.wait() == 128 + signal.SIGKILL


def test_a_step_whose_import_time_environment_differs_is_not_forked(server):
    assert server.serves({**server.env, "STEP_MARKER": "anything", "TMPDIR": "/elsewhere"})
    assert not server.serves({**server.env, "OMP_NUM_THREADS": "7"})
    assert not server.serves({k: v for k, v in server.env.items() if not k.startswith("PYTHON")} | {"PYTHONHASHSEED": "1"})


def test_when_the_server_dies_its_running_step_dies_and_the_cli_gets_an_error_not_a_hang(tmp_path):
    command, _ = launch(probe, tmp_path, mode="sleep")
    server = StepServer([], tmp_path / "server.log", dict(os.environ))
    step = server.start(*kfp_launch(command), env=dict(os.environ), cwd=str(tmp_path))
    assert step.stdout.readline()

    server.process.kill()

    with pytest.raises(StepServerError, match="ended without the step's exit"):
        step.wait()
    wait_for(lambda: not group_alive(step.pid), 5, "the step to die with its server")
    step.stdout.close()
    assert not server.serves(dict(os.environ))  # the next step runs fresh, under step_guard
    server.close()


def test_the_pid_a_step_gives_out_is_already_its_own_process_group(server, tmp_path):
    """What interrupts.stop_steps relies on when a signal came while the step was being started: the
    group it signals exists the moment the pid is known."""
    command, _ = launch(probe, tmp_path, mode="sleep")
    step = server.start(*kfp_launch(command), env=dict(os.environ), cwd=str(tmp_path))

    os.killpg(step.pid, signal.SIGTERM)  # at once: no ProcessLookupError

    step.stdout.close()
    assert step.wait() == 128 + signal.SIGKILL


def test_a_step_the_server_cannot_start_runs_in_a_fresh_process_instead(tmp_path, monkeypatch, capsys):
    """run_step_process (pipelines/local.py): the server refuses (here: it has exited), so the step runs
    under step_guard, with the same result."""
    from portfolio_mlops_kfp.pipelines import local

    command, out = launch(probe, tmp_path, mode="ok")
    server = StepServer([], tmp_path / "server.log", dict(os.environ))
    monkeypatch.setattr(server, "serves", lambda env: True)  # as if it still looked alive
    server.close()
    monkeypatch.setattr(local, "_server", server)

    assert local.run_step_process(command) == 0

    assert json.loads(out.read_text())["runtime"] == "true"
    captured = capsys.readouterr()
    assert "this step runs in a fresh process" in captured.err and "probe says hello" in captured.out


def _children_of(pid: int) -> list[int]:
    """Its child processes, zombies included (a child the server never reaps is one too)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(entry.name))
    return found


def test_a_forked_step_the_server_cannot_watch_is_killed_not_left_running(tmp_path):
    """pidfd_open refused after the fork (EMFILE; a kernel before 5.3): the step must not run untracked."""
    (tmp_path / "no_pidfd.py").write_text(
        "import errno, os\n\ndef refuse(pid):\n    raise OSError(errno.EMFILE, 'Too many open files')\n\n"
        "os.pidfd_open = refuse\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    log = tmp_path / "server.log"
    server = StepServer(["no_pidfd"], log, env)
    wait_for(lambda: log.exists() and "preloaded 1 modules" in log.read_text(), 30, "the server's preload")
    command, _ = launch(probe, tmp_path, mode="sleep")
    try:
        with pytest.raises(StepServerError, match="error 24"):
            step = server.start(*kfp_launch(command), env=dict(os.environ), cwd=str(tmp_path))
            step.stdout.close()
            step.wait()  # the pid may have come before the error line
        assert _children_of(server.process.pid) == []
        assert "could not start a step" in log.read_text()
    finally:
        server.close()
