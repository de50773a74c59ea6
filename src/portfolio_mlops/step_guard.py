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


def _kill_group(signum=None, frame=None):  # noqa: ARG001
    os.killpg(0, signal.SIGKILL)


def main() -> int:
    owner = int(sys.argv[1])
    command = sys.argv[sys.argv.index("--") + 1:]
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _kill_group)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the owner check below still catches a dead CLI at start
        pass
    if os.getppid() != owner:  # the CLI died before the death signal was armed
        _kill_group()
    child = subprocess.Popen(command)
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
