"""SIGINT / SIGTERM: stop the run promptly and cleanly, with one line and exit status 130 / 143.

The handler runs in the main thread. The first signal stops every step process this run started
(kfp engine: each step is its own process group, see pipelines/local.py) and raises `Interrupted`
there, so `finally` blocks, MLflow's run context managers and runner.run_session's cleanup run on
the way out. Work threads see `interrupted()` and raise too (so kfp.local's retry loop, which only
retries a step that *returned* a failure, never starts another attempt). A second signal while
cleaning up exits at once.
"""

from __future__ import annotations

import os
import signal
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


def _handler(signum, frame) -> None:  # noqa: ARG001 - the signal module's signature
    global _signum
    if _signum is not None:  # a second signal during cleanup: give up on it
        stop_steps(signal.SIGKILL)
        os._exit(128 + _signum)
    _signum = signum
    with _state:
        names = sorted({name for name in _steps.values() if name})
    stop_steps()
    raise Interrupted(signum, f"during pipeline step {', '.join(names)}" if names else "")


@contextmanager
def handle_signals() -> Iterator[None]:
    """Install the SIGINT/SIGTERM handlers for the block (main thread only; elsewhere a no-op)."""
    global _signum
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in NAMES}
    _signum = None
    for s in NAMES:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


__all__ = ["Interrupted", "handle_signals", "interrupted", "raise_if_interrupted", "register_step", "unregister_step",
           "stop_steps", "running_steps"]
