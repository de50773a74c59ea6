"""One run at a time per tracking store and per output folder: lock files with a named holder.

A lock is an flock(2) on a small JSON file (holder pid, host, start time, command). The kernel drops
an flock when its process dies, however it dies, so a lock left by a killed run never blocks the
next one; the JSON left behind only lets the next holder say whose lock it took over. A second
process waits up to `wait` seconds, then fails with ConfigError naming the holder (exit status 2).

Which store is locked: the embedded sqlite store (`sqlite:///.../mlflow.db`) gets `mlflow.db.lock`
beside the database. A tracking *server* serialises its own database and may serve many clients at
once, so no client-side lock is taken for http(s) URIs (two runs against one server are allowed).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from portfolio_mlops.errors import ConfigError


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of an embedded sqlite tracking URI, else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///"):].split("?", 1)[0] or "mlflow.db")


def store_lock_path(tracking_uri: str) -> Path | None:
    db = sqlite_path(tracking_uri)
    return None if db is None else db.with_name(db.name + ".lock")


def output_lock_path(output: str | os.PathLike[str]) -> Path:
    final = Path(output).absolute()
    return final.with_name(final.name + ".lock")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')}"
            f" ({holder.get('command', '?')})")


def _read_holder(handle) -> dict:
    try:
        handle.seek(0)
        return json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        return {}


@contextmanager
def hold(path: str | os.PathLike[str], what: str, wait: float = 0.0, command: str = "portfolio-mlops run",
         say: Callable[[str], None] = print) -> Iterator[dict]:
    """Hold the lock at `path` for the block (`what` names the locked thing in messages)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path.parent}: cannot create the folder for the lock of {what}: {exc.strerror}") from exc
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        try:
            handle = open(path, "a+", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot open the lock file of {what}: {exc.strerror}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            handle.close()
            if time.monotonic() >= deadline:
                raise ConfigError(f"{what} is in use by {describe(holder)}; lock file {path}. Wait for that run to end "
                                  "or pass --wait-lock SECONDS to wait for it") from None
            time.sleep(0.2)
            continue
        # The previous holder may have removed the file after we opened it: then we locked an orphan inode.
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            handle.close()
            continue
        break
    previous = _read_holder(handle)
    if previous.get("pid") and previous.get("pid") != os.getpid():
        # A holder that ended normally removes the file; one that was killed leaves its record.
        say(f"took over the lock of {what} left by {describe(previous)}, which is no longer running ({path})")
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command}
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(holder) + "\n")
    handle.flush()
    try:
        yield holder
    finally:
        try:
            path.unlink()  # before unlocking: a waiter that opened the old file re-checks the inode
        except OSError:
            pass
        handle.close()


__all__ = ["hold", "store_lock_path", "output_lock_path", "sqlite_path", "pid_alive", "describe"]
