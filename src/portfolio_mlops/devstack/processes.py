"""Processes, ports and sockets: the services' process groups read from /proc, the children this
process started, TCP ports (free, answering) and SeaweedFS's Unix sockets."""

from __future__ import annotations

import os
import random
import shlex
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from portfolio_mlops.devstack.state import (GRPC_OFFSET, HOST, SEAWEEDFS_COMPONENTS, Layout, StackError, StackState,
                                            log_event, service_error)

# Free S3 ports are drawn below Linux's ephemeral range (32768+), gRPC ports included, so an
# outgoing connection cannot grab one between the check and the start.
_S3_FREE_PORT_RANGE = (20_000, 32_768 - GRPC_OFFSET - len(SEAWEEDFS_COMPONENTS))


@dataclass(frozen=True)
class _Proc:
    pid: int
    state: str  # R, S, Z, ...
    ppid: int
    pgrp: int
    start_ticks: int


def _read_proc(pid: int) -> _Proc | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ... starttime(22nd)"; comm may itself hold spaces or ")".
    fields = raw[raw.rindex(")") + 2:].split()
    return _Proc(pid, fields[0], int(fields[1]), int(fields[2]), int(fields[19]))


def _process_table() -> list[_Proc]:
    table = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            proc = _read_proc(int(entry.name))
            if proc is not None:
                table.append(proc)
    return table


def process_start_ticks(pid: int) -> int | None:
    proc = _read_proc(pid)
    return proc.start_ticks if proc else None


# Popen objects of the services this process started, so their exit status is collected (no zombies
# while e.g. a test session stops and restarts them).
_CHILDREN: dict[int, subprocess.Popen] = {}


def spawn(state: StackState, name: str, command: list[str], cwd: Path,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    log = Layout(state.base_dir).log(name)
    log_event(log, f"stack: starting {shlex.join(command)}")
    try:
        with open(log, "ab") as sink:
            child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=cwd, env=env, start_new_session=True)
    except OSError as exc:
        raise service_error(state, name, f"cannot run {command[0]}: {exc}") from None
    _CHILDREN[child.pid] = child
    return child


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        child.poll()


def exit_status(pid: int | None) -> str:
    """' with exit status N' for a child of this process that has exited, else ''."""
    child = _CHILDREN.get(pid) if pid is not None else None
    if child is None:
        return ""
    try:
        child.wait(timeout=2)  # it may be a zombie not yet reaped: /proc said it is gone
    except subprocess.TimeoutExpired:
        return ""
    return f" with exit status {child.returncode}"


def is_running(state: StackState, name: str) -> bool:
    """Whether the process group we started for `name` still has a live (non-zombie) member."""
    pid = state.pids.get(name)
    if pid is None:
        return False
    _reap(pid)
    if not Path("/proc/self/stat").exists():  # not Linux: no identity check, trust the pid
        try:
            os.killpg(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    leader = _read_proc(pid)
    expected = state.process_start_ticks.get(name)
    if leader is not None and expected is not None and leader.start_ticks != expected:
        return False  # the pid now belongs to an unrelated process
    # The leader may be gone while its group lives on (e.g. mlflow's uvicorn worker): that still runs.
    return any(proc.pgrp == pid and proc.state != "Z" for proc in _process_table())


def signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def tree_rss_kb(pid: int) -> int:
    """Resident memory (kB) of the group led by `pid` and of all descendants (postgres backends)."""
    table = _process_table()
    members = {proc.pid for proc in table if proc.pgrp == pid} | {pid}
    grew = True
    while grew:
        more = {proc.pid for proc in table if proc.ppid in members} - members
        members |= more
        grew = bool(more)
    total = 0
    for member in members:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def service_ports(name: str, port: int) -> dict[str, int]:
    """Every TCP port a service listens on, labelled."""
    if name != "s3":
        return {name: port}
    http = {component: port + offset for offset, component in enumerate(SEAWEEDFS_COMPONENTS)}
    return {**http, **{f"{component} grpc": value + GRPC_OFFSET for component, value in http.items()}}


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers do: a port whose old connections linger in TIME_WAIT is still usable.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def port_answering(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def free_port(name: str, taken: set[int]) -> int:
    if name == "s3":
        for _ in range(500):
            port = random.randrange(*_S3_FREE_PORT_RANGE)
            ports = set(service_ports("s3", port).values())
            if not ports & taken and all(_port_free(p) for p in ports):
                return port
    else:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((HOST, 0))
                port = probe.getsockname()[1]
            if port not in taken:
                return port
    raise StackError(f"{name}: found no free port on {HOST}")


def require_free_ports(state: StackState, name: str) -> None:
    for label, port in service_ports(name, state.ports[name]).items():
        if not _port_free(port):
            what = "" if label == name else f" (SeaweedFS {label})"
            raise service_error(state, name, f"port {HOST}:{port}{what} is already in use by another process; "
                                 f"choose another with --{name}-port (0 = a free one) or stop that process")


def seaweedfs_local_sockets(state: StackState) -> dict[str, Path]:
    sockets = Layout(state.base_dir).sockets
    port = state.ports["s3"]
    return {"s3": sockets / f"seaweedfs-s3-{port}.sock", "filer": sockets / f"seaweedfs-filer-{port + 3}.sock"}


def remove_stale_seaweedfs_sockets(state: StackState) -> None:
    """SeaweedFS leaves its S3 socket on every exit and all of them after SIGKILL: remove ours if dead.

    The gRPC sockets are always /tmp/seaweedfs-<component>-grpc-<port>.sock; ours are those on our
    ports, and one that still accepts connections belongs to a live server and is kept.
    """
    grpc = {f"seaweedfs-{component.split()[0]}-grpc-{port}.sock"
            for component, port in service_ports("s3", state.ports["s3"]).items() if component.endswith("grpc")}
    candidates = list(seaweedfs_local_sockets(state).values())
    for folder in {Path("/tmp"), Path(tempfile.gettempdir())}:
        candidates += [folder / name for name in grpc]
    for path in candidates:
        if path.is_socket() and not _unix_socket_answers(path):
            path.unlink(missing_ok=True)


def _unix_socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
