"""The stack's configuration, its saved state (state.json) and its folder: layout, lock and service logs."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

from portfolio_mlops.atomic import write_json
from portfolio_mlops.errors import ConfigError, PortfolioMLOpsError

HOST = "127.0.0.1"
SERVICES = ("postgres", "s3", "mlflow")  # start order; `down` stops them in reverse
DEFAULT_PORTS = {"postgres": 15432, "s3": 18333, "mlflow": 15000}

# SeaweedFS runs five HTTP listeners; we give them the S3 port and the next four. Each also listens
# for gRPC on its HTTP port + 10000 (SeaweedFS's convention, passed explicitly anyway).
SEAWEEDFS_COMPONENTS = ("s3", "master", "volume", "filer", "admin")
GRPC_OFFSET = 10_000

STOP_TIMEOUT_SECONDS = 20.0
LOG_TAIL_LINES = 25
_UNIX_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the trailing NUL


class StackError(PortfolioMLOpsError):
    """A local-stack service could not be found, started, reached or stopped.

    Messages start with the service name (postgres, s3, mlflow) and end with the tail of its log.
    """


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
        return {name: Layout(self.base_dir).log(name) for name in SERVICES}

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
class Layout:
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
    path = Layout(Path(base_dir).expanduser().absolute()).state
    if not path.is_file():
        return None
    try:
        state = StackState.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise StackError(f"{path} is not a stack state file ({exc}); remove it or use another --dir") from exc
    state.base_dir = path.parent  # the folder may have been moved since it was written
    return state


def save_state(state: StackState) -> None:
    write_json(Layout(state.base_dir).state, state.to_json())
    os.chmod(Layout(state.base_dir).state, 0o600)  # holds the S3 secret


def create_base(layout: Layout) -> None:
    if not layout.base.is_dir():
        layout.base.mkdir(parents=True)
        if os.geteuid() == 0:
            layout.base.chmod(0o755)  # the postgres user must traverse it whatever root's umask is
    ignore = layout.base / ".gitignore"
    if not ignore.exists():  # the folder holds data and a secret: keep it out of any repository
        ignore.write_text("# created by `portfolio-mlops stack`\n*\n", encoding="utf-8")
    layout.logs.mkdir(exist_ok=True)


@contextmanager
def locked(base_dir: Path) -> Iterator[None]:
    """One `up`/`down`/start/stop at a time per folder (a second caller waits)."""
    layout = Layout(base_dir)
    create_base(layout)
    with open(layout.lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def service_error(state: StackState, name: str, problem: str) -> StackError:
    """A StackError naming the service, with the tail of its log; the problem is also logged."""
    log = Layout(state.base_dir).log(name)
    tail = _tail(log)
    log_event(log, f"stack: {problem}")
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


def log_event(log: Path, text: str) -> None:
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
    except OSError:
        pass  # the log is a courtesy; never let it hide the real error
