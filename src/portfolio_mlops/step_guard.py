"""Runs one pipeline step so that it cannot outlive the CLI that started it (kfp engine).

    python step_guard.py OWNER_PID -- COMMAND...

Started by pipelines/local.py in a new session (its own process group, which the step's shell and
Python join). PR_SET_PDEATHSIG sends this guard SIGTERM when the CLI dies, even by SIGKILL; on
SIGTERM, SIGINT or SIGHUP the guard kills its whole process group, so no step process survives.
Runs as a plain script (no package import): it starts once per step.
"""

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def prctl(option: int, value) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the owner check in guard() still catches a dead owner at start
        pass


def kill_group(signum=None, frame=None):  # noqa: ARG001
    os.killpg(0, signal.SIGKILL)


def guard(owner: int) -> None:
    """Tie this process's group to `owner`: SIGTERM, SIGINT or SIGHUP kill the whole group, and so does
    the owner's death (a parent-death SIGTERM; if the owner is gone already, at once). Also used by
    each step the step server forks (pipelines/step_server.py), in its own new session."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, kill_group)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != owner:  # the owner died before the death signal was armed
        kill_group()


def main() -> int:
    owner = int(sys.argv[1])
    command = sys.argv[sys.argv.index("--") + 1:]
    guard(owner)
    child = subprocess.Popen(command)
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
