"""SIGINT / SIGTERM: stop the run promptly and cleanly, with one line and exit status 130 / 143.

The handler runs in the main thread. The first signal stops every step process this run started
(kfp engine: each step is its own process group, see pipelines/local.py) and raises `Interrupted`
there, so `finally` blocks, MLflow's run context managers and runner.run_session's cleanup run on
the way out. Work threads see `interrupted()` and raise too (so kfp.local's retry loop, which only
retries a step that *returned* a failure, never starts another attempt). A second signal while
cleaning up exits at once.

Database work is not interruptible: a signal raised in the middle of an SQLAlchemy write (the embedded
MLflow store is sqlite) can leave that connection holding the database lock, and the cleanup's own
MLflow calls then wait on it. Inside `deferred()` the handler only records the signal and stops the
step processes; the block raises at its next `raise_if_interrupted()` checkpoint or at its end. A
watchdog bounds the whole way out (CLEANUP_BUDGET_S): if the process has not exited by then, it exits
with the signal's status and a line (the next run's janitor closes what is left).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by a signal. `details` collects what the cleanup did, for the one line."""

    def __init__(self, signum: int, where: str = ""):
        super().__init__(signum)
        self.signum = signum
        self.where = where
        self.details: list[str] = []

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def line(self) -> str:
        name = NAMES.get(self.signum, f"signal {self.signum}")
        parts = ([f"stopped {self.where}"] if self.where else []) + self.details
        return f"interrupted by {name}: " + ("; ".join(parts) if parts else "stopped")


_state = threading.Lock()
_signum: int | None = None
_steps: dict[int, str] = {}  # process group id -> step name, of running step processes
_deferred = 0  # depth of deferred() blocks in the main thread
CLEANUP_BUDGET_S = 20.0
_timer: threading.Timer | None = None


def interrupted() -> int | None:
    """The signal that interrupted this process, if any."""
    return _signum


def raise_if_interrupted(where: str = "") -> None:
    if _signum is not None:
        raise Interrupted(_signum, where)


def register_step(pgid: int, name: str = "") -> None:
    with _state:
        _steps[pgid] = name
    if _signum is not None:  # started in the instant the signal came: stop it too
        stop_steps()


def unregister_step(pgid: int) -> None:
    with _state:
        _steps.pop(pgid, None)


def running_steps() -> list[int]:
    with _state:
        return sorted(_steps)


def stop_steps(sig: int = signal.SIGTERM) -> list[int]:
    """Signal every registered step process group (the step guard turns SIGTERM into SIGKILL of its group)."""
    stopped = []
    for pgid in running_steps():
        try:
            os.killpg(pgid, sig)
            stopped.append(pgid)
        except (ProcessLookupError, PermissionError):
            pass
    return stopped


@contextmanager
def deferred() -> Iterator[None]:
    """A block a signal must not cut in the middle of (database writes): the signal is raised at the
    block's next `raise_if_interrupted()` checkpoint, or when the block ends without an error."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
    if _deferred == 0:
        raise_if_interrupted()


def _watchdog(signum: int) -> None:
    """Last resort: the way out after a signal must not hang (a lock, a server that stopped answering)."""
    def give_up() -> None:
        name = NAMES.get(signum, f"signal {signum}")
        print(f"portfolio-mlops: interrupted by {name}: the cleanup did not finish within {CLEANUP_BUDGET_S:g} s; "
              "exiting now (the next run closes the MLflow runs left open)", file=sys.stderr, flush=True)
        stop_steps(signal.SIGKILL)
        os._exit(128 + signum)

    global _timer
    _timer = threading.Timer(CLEANUP_BUDGET_S, give_up)
    _timer.daemon = True
    _timer.start()


def _handler(signum, frame) -> None:  # noqa: ARG001 - the signal module's signature
    global _signum
    if _signum is not None:  # a second signal during cleanup: give up on it
        stop_steps(signal.SIGKILL)
        os._exit(128 + _signum)
    _signum = signum
    _watchdog(signum)
    with _state:
        names = sorted({name for name in _steps.values() if name})
    stop_steps()
    if _deferred:
        return  # raised at the deferred block's next checkpoint (see deferred())
    raise Interrupted(signum, f"during pipeline step {', '.join(names)}" if names else "")


def exit_now(code: int) -> None:
    """Leave at once after an interrupt, once the cleanup is done and the line is printed.

    The interpreter's own teardown (module finalisation and its garbage collection over pandas,
    scikit-learn, MLflow and SQLAlchemy objects) takes 1-5 s on a busy machine, which a user who
    pressed Ctrl-C reads as a hang. atexit handlers (weakref finalizers: temp folders) still run.
    """
    import atexit
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


@contextmanager
def handle_signals() -> Iterator[None]:
    """Install the SIGINT/SIGTERM handlers for the block (main thread only; elsewhere a no-op)."""
    global _signum, _deferred
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in NAMES}
    _signum, _deferred = None, 0
    for s in NAMES:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if _timer is not None:  # the cleanup finished inside the block: the way out did not hang
            _timer.cancel()


__all__ = ["Interrupted", "deferred", "exit_now", "handle_signals", "interrupted", "raise_if_interrupted", "register_step", "unregister_step",
           "stop_steps", "running_steps"]
