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
end of the step's output pipe. The server forks; the child, once it is its own process group with its
signal handlers set, writes `pid N` to the step socket and reads the request (JSON, length-prefixed);
the server writes `exit CODE` when it has reaped the child (or `error ERRNO` if it could not fork).
When the CLI's control end closes (the run ended, or the CLI died) the server kills what is left and
exits. A step whose environment differs from the server's in what libraries read when they load
(IMPORT_TIME_PREFIXES: thread pools, allocators) is not forked but run fresh, under step_guard.
"""

from __future__ import annotations

import ast
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

from portfolio_mlops.step_guard import PR_SET_PDEATHSIG, STOP_SIGNALS, guard, prctl

EXECUTOR = "kfp.dsl.executor_main"
PR_SET_NAME = 15
_LENGTH = struct.Struct("!I")
# Environment variables read once, when a library or the interpreter loads: a step whose values differ
# from the server's cannot be forked from it (StepServer.serves).
IMPORT_TIME_PREFIXES = ("OMP_", "GOMP_", "KMP_", "OPENBLAS_", "MKL_", "BLIS_", "VECLIB_", "NUMEXPR_", "MALLOC_",
                        "LD_", "PYTHON", "ARROW_", "JE_", "SKLEARN_", "MPL")


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
        self.env = {**env, "_KFP_RUNTIME": "true"}  # kfp.dsl imported as in a step (its runtime subset)
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(os.getpid()), str(server_end.fileno()), *preload],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env, pass_fds=(server_end.fileno(),),
                start_new_session=True)
        server_end.close()

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a step with this environment can be forked: the server runs, and every variable that
        libraries read once, when they load (thread pools, allocators, the interpreter's own), has the
        value the server loaded them with. Otherwise the step needs a fresh process (step_guard)."""
        def loaded_at_start(values: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in values.items() if k.startswith(IMPORT_TIME_PREFIXES)}
        return self.process.poll() is None and loaded_at_start(env) == loaded_at_start(self.env)

    def start(self, source: str, arguments: list[str], env: dict[str, str], cwd: str) -> "ServedStep":
        """Fork a step; returns once the step has sent its pid (from inside its own process group)."""
        request = json.dumps({"source": source, "arguments": arguments, "env": env, "cwd": cwd}).encode()
        read_end, write_end = os.pipe()
        stdout = os.fdopen(read_end, "r", encoding="utf-8", errors="replace")
        try:
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError:
            stdout.close()
            os.close(write_end)
            raise
        step = ServedStep(mine, stdout, self.log_path)
        try:
            try:
                with self._lock:
                    socket.send_fds(self._control, [b"s"], [theirs.fileno(), write_end])
            finally:
                theirs.close()
                os.close(write_end)
            mine.sendall(_LENGTH.pack(len(request)) + request)
            step.pid = step.read_line("pid")
        except BaseException as exc:
            step.abandon()
            if isinstance(exc, OSError):
                raise StepServerError(f"the step server did not take the step ({exc}); see {self.log_path}") from exc
            raise
        return step

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

    def __init__(self, sock: socket.socket, stdout, log_path: Path):
        self._sock, self.stdout, self.pid, self.log_path = sock, stdout, 0, log_path
        self._buffer = b""
        self.returncode: Optional[int] = None
        self._error: Optional[StepServerError] = None

    def read_line(self, word: str) -> int:
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(64)
            if not chunk:
                raise StepServerError(f"the step server ended without the step's {word}; see {self.log_path}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        key, _, value = line.decode(errors="replace").partition(" ")
        if key != word or not value.isdigit():
            raise StepServerError(f"the step server sent {line!r} for the step's {word}; see {self.log_path}")
        return int(value)

    def wait(self) -> int:
        if self._error is not None:
            raise self._error
        if self.returncode is None:
            try:
                self.returncode = self.read_line("exit")
            except (StepServerError, OSError) as exc:
                self._error = exc if isinstance(exc, StepServerError) else StepServerError(str(exc))
                raise self._error from None
            finally:
                self._sock.close()
        return self.returncode

    def abandon(self) -> None:
        """Give up on a step being started (an error or an interrupt in start()): if it already sent its
        pid it has its request and would run unwatched, so it is killed."""
        if not self.pid:
            words = self._buffer.split(b"\n", 1)[0].split()
            if len(words) == 2 and words[0] == b"pid" and words[1].isdigit():
                self.pid = int(words[1])
        if self.pid:
            _kill(self.pid)
        self.stdout.close()
        self._sock.close()

    def __enter__(self) -> "ServedStep":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and self.returncode is None and self.pid:
            _kill(self.pid)  # leaving on an error while it runs: it must not outlive the wait below
        self.stdout.close()
        try:
            self.wait()
        except StepServerError:
            if exc_type is None:  # otherwise the error being raised already says what went wrong
                raise


# --- the server -----------------------------------------------------------------------------------------

def serve(owner: int, control_fd: int, preload: list[str]) -> int:
    control = socket.socket(fileno=control_fd)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the CLI died (even by SIGKILL): stop, see the handler
    children: dict[int, tuple[int, socket.socket]] = {}  # pid -> (pidfd, step socket)
    started_with = dict(os.environ)

    def stop(signum=None, frame=None) -> None:  # noqa: ARG001
        for pid in children:
            _kill(pid)
        os._exit(0)

    for signum in STOP_SIGNALS:
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
                # what the imports added to the environment (scikit-learn sets KMP_* variables): a step
                # that imports them itself has them too
                added = {k: v for k, v in os.environ.items() if k not in started_with}
                _start_step(control, children, poller, fds, added)
            else:
                pid = next(p for p, (pidfd, _) in children.items() if pidfd == fd)
                pidfd, sock = children.pop(pid)
                poller.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                _send(sock, f"exit {code if code >= 0 else 128 - code}")
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


def _send(sock: socket.socket, line: str) -> None:
    try:
        sock.sendall(f"{line}\n".encode())
    except OSError:  # the CLI stopped listening for this step (it is going away): nothing to tell
        pass


def _start_step(control: socket.socket, children: dict[int, tuple[int, socket.socket]], poller, fds: list[int],
                added: dict[str, str]) -> None:
    """Fork one step. A request that cannot be served is answered with an error line and costs no
    other step anything (the server and the steps it runs carry on)."""
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        print(f"step server: a request came with {len(fds)} descriptors, not 2", file=sys.stderr, flush=True)
        return
    step_fd, output_fd = fds
    sock, pid = None, 0
    try:
        sock = socket.socket(fileno=step_fd)
        pid = _fork_step(control, children, sock, output_fd, added)
        pidfd = os.pidfd_open(pid)
        children[pid] = (pidfd, sock)
        poller.register(pidfd, select.POLLIN)
    except OSError as exc:  # fork or pidfd_open refused (EAGAIN, EMFILE, an old kernel)
        print(f"step server: could not start a step: {exc!r}", file=sys.stderr, flush=True)
        if pid:  # forked, but the server could not watch it: it must not run untracked
            children.pop(pid, None)
            _kill(pid)
            os.waitpid(pid, 0)
        if sock is None:
            os.close(step_fd)
        else:
            _send(sock, f"error {exc.errno or 0}")
            sock.close()
    finally:
        os.close(output_fd)


def _kill(pid: int) -> None:
    for kill in (os.killpg, os.kill):  # its group if it got that far, else the process
        try:
            kill(pid, signal.SIGKILL)
            return
        except ProcessLookupError:
            continue


def _fork_step(control: socket.socket, children: dict[int, tuple[int, socket.socket]], sock: socket.socket,
               output_fd: int, added: dict[str, str]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    server = os.getpid()
    # A stop signal arriving between fork and the child's own handlers would run the server's handler in
    # the child (killing the other steps): blocked across the fork, unblocked by each side once ready.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        pid = os.fork()
    finally:
        if os.getpid() == server:  # the parent (whether or not the fork worked) takes its mask back
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if pid:
        return pid
    code = 1
    try:
        os.setsid()
        guard(server)  # as a guarded step: a stop signal or the server's death kills this group
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        control.close()
        for pidfd, other in children.values():  # the other steps' (their status is the server's to report)
            os.close(pidfd)
            other.close()
        # Only now, a process group of its own that a signal kills whole, is the step's pid given out.
        sock.sendall(f"pid {os.getpid()}\n".encode())
        request = _read_request(sock)
        sock.close()
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(output_fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        code = _run_step(request, added)
    except SystemExit as exc:  # as the interpreter: a number is the status, anything else is printed, 1
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - as an uncaught exception in a fresh interpreter: traceback, 1
        sys.excepthook(*sys.exc_info())
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


def _run_step(request: dict[str, Any], added: dict[str, str]) -> int:
    """What kfp's `sh -ec` program does, in this process (see kfp_launch)."""
    import tempfile

    arguments = request["arguments"]
    function = arguments[arguments.index("--function_to_execute") + 1] if "--function_to_execute" in arguments else ""
    prctl(PR_SET_NAME, f"step-{function}"[:15].encode())
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({**added, **request["env"], "_KFP_RUNTIME": "true"})
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
