"""Start kfp.local's Python steps as forks of one process that has imported their libraries once.

kfp.local starts every step of a lightweight Python component as a fresh interpreter (`sh -ec 'python3
-m kfp.dsl.executor_main ...'`), which spends 0.4-1.6 s importing kfp, pandas, pyarrow, scikit-learn
(SciPy) and MLflow before its work - 8 times per run, most of the gap between the kfp engine and the
in-process one (issue 14). The step server is started once per run by the CLI (pipelines/local.py),
imports what the steps import (`preload_modules`, read from the components' bodies) and forks one child
per step, which then does exactly what kfp's command would: write the component's source to
`$(mktemp -d)/ephemeral_component.py` and run `kfp.dsl.executor_main` with the same arguments, in the
step's environment and working directory, with stdout and stderr on the CLI's pipe.

A step started this way keeps the guarantees of a guarded step (portfolio_mlops/step_guard.py, which
still runs any other command): it is its own session and process group (the CLI signals the group,
interrupts.stop_steps); SIGTERM, SIGINT or SIGHUP kill its whole group; a parent-death signal ties it
to the server, and the server's to the CLI, so SIGKILL of the CLI takes every step down. Its process
name (/proc/PID/comm, `ps`) is `step-<function>`.

Why forking is safe here: the server does no work of its own - it only imports (no BLAS call or OpenMP
region has run, no file, connection or MLflow store is open) and runs no Python thread. The native
threads some imports start (an idle OpenBLAS pool each in numpy and SciPy, pyarrow's jemalloc
background thread) belong to libraries that re-create them after a fork (their pthread_atfork
handlers), as with multiprocessing's fork start method; the server logs its thread count after the
imports. Each child is a step from there on, and exits as an interpreter would (threads joined,
atexit handlers run) without returning into the server's loop.

Protocol (one socket pair per run, created by the CLI; the server inherits its end):
the CLI sends one byte with two descriptors per step - its end of a per-step socket pair and the write
end of the step's output pipe. The server forks; the child reads the request (JSON, length-prefixed)
from the step socket; the server writes `pid N` to it at once and `exit CODE` when it has reaped the
child. When the CLI's control end closes (the run ended, or the CLI died) the server kills what is
left and exits.
"""

from __future__ import annotations

import ast
import ctypes
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

EXECUTOR = "kfp.dsl.executor_main"
PR_SET_PDEATHSIG, PR_SET_NAME = 1, 15
_LENGTH = struct.Struct("!I")


# --- what kfp.local runs, and what the steps import ---------------------------------------------------

def kfp_launch(full_command: list[str]) -> Optional[tuple[str, list[str]]]:
    """(component source, executor arguments) if `full_command` is kfp's launch of a lightweight Python
    component with this interpreter (kfp.dsl.component_factory's `sh -ec` program, python3 replaced by
    sys.executable); None for anything else (which then runs as the command itself, under step_guard)."""
    if len(full_command) < 4 or full_command[:2] != ["sh", "-ec"]:
        return None
    expected = ('program_path=$(mktemp -d) printf "%s" "$0" > "$program_path/ephemeral_component.py" '
                f'_KFP_RUNTIME=true {sys.executable} -m {EXECUTOR} --component_module_path '
                '"$program_path/ephemeral_component.py" "$@"')
    script = " ".join(full_command[2].replace("\\\n", " ").split())
    return (full_command[3], full_command[4:]) if script == expected else None


def preload_modules(functions) -> list[str]:
    """The modules the given component functions import in their bodies, in first-use order, after the
    executor's own. Read from their source, so a step that starts importing something new is preloaded
    without a list to keep in step."""
    import inspect
    import textwrap

    modules = [EXECUTOR]
    for function in functions:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            modules += [name for name in names if name not in modules]
    return modules


# --- the CLI's side -------------------------------------------------------------------------------------

class StepServer:
    """The CLI's handle on a running step server: `start` a step, `close` the server."""

    def __init__(self, preload: list[str], log_path: Path, env: dict[str, str]):
        self._control, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._lock = threading.Lock()
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(os.getpid()), str(server_end.fileno()), *preload],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={**env, "_KFP_RUNTIME": "true"}, pass_fds=(server_end.fileno(),),
                start_new_session=True)
        server_end.close()

    def start(self, source: str, arguments: list[str], env: dict[str, str], cwd: str) -> "ServedStep":
        """Fork a step; returns once the server has sent the child's pid."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        read_end, write_end = os.pipe()
        try:
            with self._lock:
                socket.send_fds(self._control, [b"s"], [theirs.fileno(), write_end])
            request = json.dumps({"source": source, "arguments": arguments, "env": env, "cwd": cwd}).encode()
            mine.sendall(_LENGTH.pack(len(request)) + request)
        except OSError as exc:
            for fd in (read_end,):
                os.close(fd)
            mine.close()
            raise StepServerError(f"the step server did not take the step ({exc}); see {self.log_path}") from exc
        finally:
            theirs.close()
            os.close(write_end)
        step = ServedStep(mine, os.fdopen(read_end, "r", encoding="utf-8", errors="replace"))
        step.pid = step._read_number("pid", self.log_path)
        return step

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """End the server (it kills any step still running when its control socket closes)."""
        self._control.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class StepServerError(RuntimeError):
    pass


class ServedStep:
    """A forked step, like a subprocess.Popen: `pid` (also its process group), `stdout` (text, stdout and
    stderr merged), `wait()` -> exit status (128 + N if killed by signal N)."""

    def __init__(self, sock: socket.socket, stdout):
        self._sock, self.stdout, self.pid = sock, stdout, 0
        self._buffer = b""
        self.returncode: Optional[int] = None

    def _read_number(self, word: str, log_path: Path) -> int:
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(64)
            if not chunk:
                raise StepServerError(f"the step server ended without the step's {word}; see {log_path}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        key, _, value = line.decode().partition(" ")
        if key != word:
            raise StepServerError(f"the step server sent {line!r}, expected the step's {word}; see {log_path}")
        return int(value)

    def wait(self) -> int:
        if self.returncode is None:
            try:
                self.returncode = self._read_number("exit", Path("the step server's log"))
            finally:
                self._sock.close()
        return self.returncode

    def __enter__(self) -> "ServedStep":
        return self

    def __exit__(self, *exc) -> None:
        self.stdout.close()
        self.wait()


# --- the server -----------------------------------------------------------------------------------------

def _prctl(option: int, value) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        pass


def _kill_group(signum=None, frame=None) -> None:  # noqa: ARG001
    os.killpg(0, signal.SIGKILL)


def serve(owner: int, control_fd: int, preload: list[str]) -> int:
    control = socket.socket(fileno=control_fd)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the CLI died (even by SIGKILL): stop, see the handler
    children: dict[int, tuple[int, socket.socket]] = {}  # pid -> (pidfd, step socket)

    def stop(signum=None, frame=None) -> None:  # noqa: ARG001
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os._exit(0)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    if os.getppid() != owner:  # the CLI died before the death signal was armed
        return 0
    poller = select.poll()
    poller.register(control, select.POLLIN)
    pending = list(preload)
    started = time.perf_counter()
    while True:
        # Serve what is asked, then import the next module while nothing is (a step asked for early
        # forks from a server that has imported less: the child imports the rest itself).
        for fd, _ in poller.poll(0 if pending else None):
            if fd == control.fileno():
                message, fds, _, _ = socket.recv_fds(control, 1, 2)
                if not message:  # the CLI closed its end: the run is over
                    stop()
                pid = _fork_step(control, children, *fds)
                os.close(fds[1])
                pidfd = os.pidfd_open(pid)
                children[pid] = (pidfd, socket.socket(fileno=fds[0]))
                children[pid][1].sendall(f"pid {pid}\n".encode())
                poller.register(pidfd, select.POLLIN)
            else:
                pid = next(p for p, (pidfd, _) in children.items() if pidfd == fd)
                pidfd, sock = children.pop(pid)
                poller.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                try:
                    sock.sendall(f"exit {code if code >= 0 else 128 - code}\n".encode())
                except OSError:  # the CLI stopped listening (it is going away)
                    pass
                sock.close()
        if pending:
            module = pending.pop(0)
            try:
                __import__(module)
            except Exception as exc:  # noqa: BLE001 - the step imports it itself and reports properly
                print(f"step server: could not preload {module}: {exc!r}", file=sys.stderr, flush=True)
            if not pending:
                threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
                print(f"step server: preloaded {len(preload)} modules in {time.perf_counter() - started:.2f} s "
                      f"({len(sys.modules)} loaded, {threads} thread(s))", file=sys.stderr, flush=True)


def _fork_step(control: socket.socket, children: dict[int, tuple[int, socket.socket]], step_fd: int,
               output_fd: int) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    server = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, _kill_group)
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != server:
            _kill_group()
        control.close()
        for pidfd, sock in children.values():  # the other steps' (their status is the server's to report)
            os.close(pidfd)
            sock.close()
        with socket.socket(fileno=step_fd) as sock:
            request = _read_request(sock)
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(output_fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        code = _run_step(request)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - as an uncaught exception in a fresh interpreter: traceback, 1
        import traceback

        traceback.print_exc()
    finally:
        _finish(code)
    return 0  # not reached


def _read_request(sock: socket.socket) -> dict[str, Any]:
    data = b""
    while len(data) < _LENGTH.size or len(data) < _LENGTH.size + _LENGTH.unpack_from(data)[0]:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise EOFError("the CLI closed the step socket before sending the request")
        data += chunk
    return json.loads(data[_LENGTH.size:])


def _run_step(request: dict[str, Any]) -> int:
    """What kfp's `sh -ec` program does, in this process (see kfp_launch)."""
    import tempfile

    arguments = request["arguments"]
    function = arguments[arguments.index("--function_to_execute") + 1] if "--function_to_execute" in arguments else ""
    _prctl(PR_SET_NAME, f"step-{function}"[:15].encode())
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({**request["env"], "_KFP_RUNTIME": "true"})
    tempfile.tempdir = None  # re-read TMPDIR from the step's environment
    module = Path(tempfile.mkdtemp()) / "ephemeral_component.py"
    module.write_text(request["source"], encoding="utf-8")
    import importlib.util

    # as `python -m` sets them: argv[0] the module's file, path[0] the working folder
    sys.argv = [importlib.util.find_spec(EXECUTOR).origin, "--component_module_path", str(module), *arguments]
    sys.path[0] = os.getcwd()
    from kfp.dsl.executor_main import executor_main

    executor_main()
    return 0


def _finish(code: int) -> None:
    """Exit the child as an interpreter would (threads joined, atexit handlers, streams flushed), but
    without unwinding into the server's loop."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx does first
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]))
